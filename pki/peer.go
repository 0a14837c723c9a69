package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Cloudcore replicas' identity to each other. A replica's peer
// certificate, issued by the CA every replica shares, has the common name
// PeerCommonName, the organization PeerOrganization and no node identity;
// it serves and authenticates (server and client auth), so two replicas
// check each other alike. The CA gives edge nodes client certificates of
// NodeOrganization only, so a node cannot pass for a replica.
const (
	PeerCommonName   = "tether-cloudcore"
	PeerOrganization = "tether:cloudcores"
)

// IssuePeer issues a replica's peer certificate and key (PEM), valid for
// validity from now (at most as long as the CA).
func (ca *CA) IssuePeer(validity time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: PeerCommonName, Organization: []string{PeerOrganization}},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue peer certificate: %w", err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}

// VerifyPeer checks that chain (leaf first) is a replica's peer
// certificate issued by ca, valid at at for usage (server or client auth).
func (ca *CA) VerifyPeer(chain []*x509.Certificate, at time.Time, usage x509.ExtKeyUsage) error {
	if len(chain) == 0 {
		return errors.New("no peer certificate")
	}
	c := chain[0]
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return fmt.Errorf("peer certificate: %w", err)
	}
	if c.Subject.CommonName != PeerCommonName || !slices.Equal(c.Subject.Organization, []string{PeerOrganization}) {
		return fmt.Errorf("certificate %q (organization %q) is not a cloudcore replica's", c.Subject.CommonName, c.Subject.Organization)
	}
	if _, _, err := NodeIdentity(c); err == nil {
		return errors.New("a node's certificate is not a cloudcore replica's")
	}
	return nil
}
