package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Node identities. A node's client certificate has the common name
// NodeCNPrefix+name, the organization NodeOrganization, and one URI SAN,
// NodeIDScheme+":"+id, naming the identity the node was given when it joined
// (cloudcore records it on the Node object). A join gives a new identity, and
// a deleted Node has none, so the certificates of a node that joined again or
// was deleted are refused from then on without any list of revoked serials.
const (
	NodeCNPrefix     = "system:node:"
	NodeOrganization = "tether:edge-nodes"
	NodeIDScheme     = "urn:tether:node-identity"
)

// NewKey makes an ECDSA P-256 key.
func NewKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

// KeyPEM encodes key as an "EC PRIVATE KEY" PEM block.
func KeyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	b, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b}), nil
}

// ParseKeyPEM decodes the first ECDSA key (written by KeyPEM, or PKCS#8)
// in b, skipping certificates.
func ParseKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	var blk *pem.Block
	for {
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no PEM private key")
		}
		if strings.HasSuffix(blk.Type, "PRIVATE KEY") {
			break
		}
	}
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want ECDSA", k)
	}
	return ek, nil
}

// NodeCSR makes a PEM certificate request for node, signed by key.
func NodeCSR(key *ecdsa.PrivateKey, node string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: NodeCNPrefix + node, Organization: []string{NodeOrganization}},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create csr: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// MaxCSRSize bounds a PEM certificate request taken from the network.
const MaxCSRSize = 8 << 10

// ParseNodeCSR decodes a PEM certificate request, checks its signature (the
// sender holds the key) and that the key is ECDSA P-256, and returns its
// public key. The subject is not trusted: the issuer names the node.
func ParseNodeCSR(b []byte) (*ecdsa.PublicKey, error) {
	if len(b) > MaxCSRSize {
		return nil, fmt.Errorf("certificate request of %d bytes: the limit is %d", len(b), MaxCSRSize)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("certificate request: no CERTIFICATE REQUEST PEM block")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: signature: %w", err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, errors.New("certificate request: the key must be ECDSA P-256")
	}
	return pub, nil
}

// IssueNode issues a client certificate for node (with the identity id it
// was given at join) to pub, valid for validity from now (at most as long as
// the CA). It returns the certificate as PEM.
func (ca *CA) IssueNode(pub crypto.PublicKey, node, id string, validity time.Duration) ([]byte, error) {
	if node == "" || id == "" {
		return nil, errors.New("issue node certificate: node name and identity are required")
	}
	u, err := url.Parse(NodeIDScheme + ":" + id)
	if err != nil {
		return nil, fmt.Errorf("issue node certificate: identity %q: %w", id, err)
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: NodeCNPrefix + node, Organization: []string{NodeOrganization}},
		// A little back-dated for clocks a bit behind; not more, so that
		// the lifetime (and so the renewal point) is what was asked.
		NotBefore:   now.Add(-time.Minute),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue node certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// NodeIdentity returns the node name and identity a certificate issued by
// IssueNode names. It does not verify the certificate.
func NodeIdentity(c *x509.Certificate) (node, id string, err error) {
	node, ok := strings.CutPrefix(c.Subject.CommonName, NodeCNPrefix)
	if !ok || node == "" {
		return "", "", fmt.Errorf("certificate %q does not name a node", c.Subject.CommonName)
	}
	for _, u := range c.URIs {
		if v, ok := strings.CutPrefix(u.String(), NodeIDScheme+":"); ok && v != "" {
			return node, v, nil
		}
	}
	return "", "", fmt.Errorf("certificate of node %s carries no node identity", node)
}

// VerifyNode checks that c was issued by ca for client authentication and is
// valid at time at, and returns the identity it names.
func (ca *CA) VerifyNode(c *x509.Certificate, at time.Time) (node, id string, err error) {
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", "", err
	}
	return NodeIdentity(c)
}

// Hash is the pin of a set of CA certificates: "sha256:" and the hex SHA-256
// of their DER SubjectPublicKeyInfo, concatenated in order. For one CA it is
// the value kubeadm calls the CA cert hash.
func Hash(certs ...*x509.Certificate) string {
	h := sha256.New()
	for _, c := range certs {
		h.Write(c.RawSubjectPublicKeyInfo)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// ParseCertsPEM decodes every CERTIFICATE block of b.
func ParseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate in PEM data")
	}
	return certs, nil
}

// ParseCA decodes a CA from PEM certificate and key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := ParseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	c := certs[0]
	if !c.IsCA {
		return nil, errors.New("ca: the certificate is not a CA")
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, errors.New("ca: the key does not match the certificate")
	}
	return &CA{Cert: c, Key: key}, nil
}

// LifetimeUsed is the fraction of c's validity that has passed at now.
func LifetimeUsed(c *x509.Certificate, now time.Time) float64 {
	total := c.NotAfter.Sub(c.NotBefore)
	if total <= 0 {
		return 1
	}
	return float64(now.Sub(c.NotBefore)) / float64(total)
}

// TLSPair makes the tls.Certificate of a PEM certificate (chain) and its
// key, for a client or a server to present.
func TLSPair(certPEM []byte, key *ecdsa.PrivateKey) (*tls.Certificate, error) {
	keyPEM, err := KeyPEM(key)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key pair: %w", err)
	}
	return &pair, nil
}
