// Package satoken gives the node's pods their service-account credentials
// for the in-cluster API at the edge: a token per pod, minted and verified
// by the node itself, and the certificate authority that the pods' ca.crt
// names and that signs the metaserver's in-cluster listener.
//
// # Why tokens minted by the node (and not the cluster's bound tokens)
//
// Two designs were weighed. (a) cloudcore asks the API server for bound
// service-account tokens (TokenRequest) for the pods bound to the node and
// sends them down; the edge verifies them against the cluster issuer's keys
// (/openid/v1/jwks synced down). (b) The node mints the tokens itself, with a
// key that never leaves it, and only its own metaserver accepts them. This
// package is (b):
//
//   - Offline duration: unlimited. A pod started, restarted or created (a
//     static pod) with the cloud gone gets a token at once; with (a) a pod
//     whose token had not been fetched before the cut has none, and every
//     token dies at its expiry (hours) however long the outage.
//   - Blast radius: a token only opens the metaserver of the node that
//     minted it, which serves what that node holds anyway; a stolen token
//     is worth nothing at the API server or on another node (its signature
//     does not verify there). With (a) a token leaked from an edge box is a
//     credential of the real cluster until it expires.
//   - Lifetime and refresh: Issuer.Lifetime (default 1h); the runtime
//     rewrites the projected file at 80% of it, as the kubelet does.
//   - Revocation: a token names its pod by UID and the metaserver accepts it
//     only while that pod is held by the node with the same service account
//     (deleting the pod revokes it at once, offline too); deleting the key
//     file (dataDir/credentials/satoken.key) revokes every token of the node.
//     With (a) the edge cannot check the API server's revocation offline.
//   - Cost: the token is not the cluster's, so a write relayed to the
//     cloud cannot carry it: cloudcore asks a token of the pod's service
//     account, bound to the pod, for it (package apirelay); and a pod that
//     talks to the real API server directly needs a cluster token. The
//     in-cluster config at the edge points at the edge only.
//
// # Token format
//
// A JWT (RFC 7519) signed ES256 with the node's P-256 key, claims as the API
// server's bound tokens (iss, sub, aud, exp, iat, nbf, and the kubernetes.io
// claim naming namespace, pod, service account and node), issuer
// "tether-edge:<node>", audience Audience. Verify takes tokens of at most
// MaxTokenSize bytes, alg ES256 only, and checks signature, issuer,
// audience, node, expiry and not-before (with Leeway).
package satoken

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

// Audience is the audience of the tokens: the edge's in-cluster API.
const Audience = "tether-edge-metaserver"

// MaxTokenSize is the largest token Verify parses, in bytes. A token of this
// package is about 700 bytes; the API server's own are about 1 KB.
const MaxTokenSize = 4096

// Leeway is the clock skew tolerated on exp and nbf.
const Leeway = 30 * time.Second

// DefaultLifetime is a token's lifetime unless told otherwise.
const DefaultLifetime = time.Hour

// Pod names the pod a token is minted for.
type Pod struct {
	Namespace, Name, UID, ServiceAccount string
}

// Claims are what a verified token says.
type Claims struct {
	Pod
	Node      string
	Expiry    time.Time
	IssuedAt  time.Time
	NotBefore time.Time
}

// User is the Kubernetes user name of the token's service account.
func (c *Claims) User() string {
	return "system:serviceaccount:" + c.Namespace + ":" + c.ServiceAccount
}

// Issuer mints and verifies the tokens of one node.
type Issuer struct {
	node     string
	issuer   string
	key      *ecdsa.PrivateKey
	kid      string
	lifetime time.Duration
}

// NewIssuer is the issuer of node with key; lifetime 0 is DefaultLifetime.
func NewIssuer(node string, key *ecdsa.PrivateKey, lifetime time.Duration) (*Issuer, error) {
	if err := protocol.ValidateNodeName(node); err != nil {
		return nil, fmt.Errorf("satoken: %w", err)
	}
	if lifetime == 0 {
		lifetime = DefaultLifetime
	}
	if lifetime < time.Minute || lifetime > 7*24*time.Hour {
		return nil, fmt.Errorf("satoken: lifetime %s is not between 1m and 168h", lifetime)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("satoken: %w", err)
	}
	sum := sha256.Sum256(der)
	return &Issuer{node: node, issuer: "tether-edge:" + node, key: key, lifetime: lifetime,
		kid: base64.RawURLEncoding.EncodeToString(sum[:12])}, nil
}

// Lifetime is how long a minted token is valid.
func (i *Issuer) Lifetime() time.Duration { return i.lifetime }

type header struct {
	Alg string `json:"alg"`
	Typ string `json:"typ,omitempty"`
	Kid string `json:"kid,omitempty"`
}

type kubeClaim struct {
	Namespace      string `json:"namespace"`
	Pod            ref    `json:"pod"`
	ServiceAccount ref    `json:"serviceaccount"`
	Node           ref    `json:"node"`
}

type ref struct {
	Name string `json:"name"`
	UID  string `json:"uid,omitempty"`
}

type claims struct {
	Iss  string    `json:"iss"`
	Sub  string    `json:"sub"`
	Aud  []string  `json:"aud"`
	Exp  int64     `json:"exp"`
	Iat  int64     `json:"iat"`
	Nbf  int64     `json:"nbf"`
	Kube kubeClaim `json:"kubernetes.io"`
}

// Mint returns a token for p valid from now for the issuer's lifetime, and
// its expiry.
func (i *Issuer) Mint(p Pod, now time.Time) (string, time.Time, error) {
	if p.Namespace == "" || p.Name == "" || p.UID == "" || p.ServiceAccount == "" {
		return "", time.Time{}, fmt.Errorf("satoken: pod %+v: namespace, name, uid and service account are required", p)
	}
	exp := now.Add(i.lifetime)
	c := claims{Iss: i.issuer, Sub: "system:serviceaccount:" + p.Namespace + ":" + p.ServiceAccount,
		Aud: []string{Audience}, Exp: exp.Unix(), Iat: now.Unix(), Nbf: now.Unix(),
		Kube: kubeClaim{Namespace: p.Namespace, Pod: ref{Name: p.Name, UID: p.UID},
			ServiceAccount: ref{Name: p.ServiceAccount}, Node: ref{Name: i.node}}}
	hb, _ := json.Marshal(header{Alg: "ES256", Typ: "JWT", Kid: i.kid})
	cb, err := json.Marshal(c)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("satoken: %w", err)
	}
	signing := b64(hb) + "." + b64(cb)
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, i.key, sum[:])
	if err != nil {
		return "", time.Time{}, fmt.Errorf("satoken: sign: %w", err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + b64(sig), time.Unix(exp.Unix(), 0), nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// Errors of Verify. Every refusal wraps ErrInvalid.
var (
	ErrInvalid  = errors.New("invalid service-account token")
	ErrTooLarge = fmt.Errorf("%w: larger than %d bytes", ErrInvalid, MaxTokenSize)
	ErrExpired  = fmt.Errorf("%w: expired", ErrInvalid)
)

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// Verify checks tok at now: its size, form, algorithm, signature (the
// issuer's key), issuer, audience, node, expiry and not-before. It says
// nothing of whether the pod still exists: the caller checks that.
func (i *Issuer) Verify(tok string, now time.Time) (*Claims, error) {
	if len(tok) > MaxTokenSize {
		return nil, ErrTooLarge
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, invalid("not a JWS compact serialization")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, invalid("header: %v", err)
	}
	var h header
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, invalid("header: %v", err)
	}
	if h.Alg != "ES256" {
		return nil, invalid("algorithm %q, want ES256", h.Alg)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return nil, invalid("signature is not 64 bytes of base64url")
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(&i.key.PublicKey, sum[:], r, s) {
		return nil, invalid("signature does not verify with node %s's key", i.node)
	}
	cb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, invalid("claims: %v", err)
	}
	var c claims
	if err := json.Unmarshal(cb, &c); err != nil {
		return nil, invalid("claims: %v", err)
	}
	switch {
	case c.Iss != i.issuer:
		return nil, invalid("issuer %q, want %q", c.Iss, i.issuer)
	case len(c.Aud) != 1 || c.Aud[0] != Audience:
		return nil, invalid("audience %q, want [%s]", c.Aud, Audience)
	case c.Kube.Node.Name != i.node:
		return nil, invalid("token of node %q, this is %q", c.Kube.Node.Name, i.node)
	case c.Kube.Namespace == "" || c.Kube.Pod.Name == "" || c.Kube.Pod.UID == "" || c.Kube.ServiceAccount.Name == "":
		return nil, invalid("no pod or service account")
	case c.Sub != "system:serviceaccount:"+c.Kube.Namespace+":"+c.Kube.ServiceAccount.Name:
		return nil, invalid("subject %q does not match its service account", c.Sub)
	}
	exp, nbf := time.Unix(c.Exp, 0), time.Unix(c.Nbf, 0)
	if !now.Before(exp.Add(Leeway)) {
		return nil, fmt.Errorf("%w at %s", ErrExpired, exp.UTC().Format(time.RFC3339))
	}
	if now.Add(Leeway).Before(nbf) {
		return nil, invalid("not valid before %s", nbf.UTC().Format(time.RFC3339))
	}
	return &Claims{Pod: Pod{Namespace: c.Kube.Namespace, Name: c.Kube.Pod.Name, UID: c.Kube.Pod.UID,
		ServiceAccount: c.Kube.ServiceAccount.Name}, Node: c.Kube.Node.Name, Expiry: exp,
		IssuedAt: time.Unix(c.Iat, 0), NotBefore: nbf}, nil
}

// Files names the files of the node's pod credentials in a directory.
const (
	// KeyFile is the token signing key.
	KeyFile = "satoken.key"
	// CACertFile and CAKeyFile are the CA the pods trust (their ca.crt).
	CACertFile = "pod-ca.crt"
	CAKeyFile  = "pod-ca.key"
)

// Credentials are the node's pod credentials: the token issuer and the CA
// the pods trust.
type Credentials struct {
	Issuer *Issuer
	CA     *pki.CA
}

// Load reads the node's token key and pod CA from dir (mode 0700, files
// 0600), making what is missing. They stay across restarts, so that the
// tokens and ca.crt written into running pods stay valid.
func Load(dir, node string, lifetime time.Duration) (*Credentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("satoken: %w", err)
	}
	keyPath := filepath.Join(dir, KeyFile)
	var key *ecdsa.PrivateKey
	if b, err := os.ReadFile(keyPath); err == nil {
		if key, err = pki.ParseKeyPEM(b); err != nil {
			return nil, fmt.Errorf("satoken: %s: %w", keyPath, err)
		}
	} else if errors.Is(err, os.ErrNotExist) {
		if key, err = pki.NewKey(); err != nil {
			return nil, fmt.Errorf("satoken: %w", err)
		}
		kp, err := pki.KeyPEM(key)
		if err != nil {
			return nil, fmt.Errorf("satoken: %w", err)
		}
		if err := pki.WriteFileSync(keyPath, kp, 0o600); err != nil {
			return nil, fmt.Errorf("satoken: %w", err)
		}
	} else {
		return nil, fmt.Errorf("satoken: %w", err)
	}
	iss, err := NewIssuer(node, key, lifetime)
	if err != nil {
		return nil, err
	}
	caCert, caKey := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	ca, err := pki.LoadCA(caCert, caKey)
	if err != nil {
		if _, serr := os.Stat(caCert); serr == nil {
			return nil, fmt.Errorf("satoken: pod CA: %w", err)
		}
		if ca, err = pki.NewCA("tether-edge-pods:" + node); err != nil {
			return nil, fmt.Errorf("satoken: %w", err)
		}
		kp, err := ca.KeyPEM()
		if err != nil {
			return nil, fmt.Errorf("satoken: %w", err)
		}
		if err := pki.WriteFileSync(caKey, kp, 0o600); err != nil {
			return nil, fmt.Errorf("satoken: %w", err)
		}
		if err := pki.WriteFileSync(caCert, ca.CertPEM(), 0o600); err != nil {
			return nil, fmt.Errorf("satoken: %w", err)
		}
	}
	return &Credentials{Issuer: iss, CA: ca}, nil
}

// ServingNames are the DNS names of the in-cluster API a pod may use, with
// the cluster domain.
func ServingNames(domain string) []string {
	return []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc." + domain}
}

// ServingCert issues the in-cluster listener's certificate for ip, more
// (the kubernetes Service's ClusterIP, when it is routed to the listener)
// and the kubernetes.default.svc names (ServingNames), valid a year;
// edgecore issues a new one at every start.
func (c *Credentials) ServingCert(ip net.IP, domain string, more ...net.IP) (certPEM, keyPEM []byte, err error) {
	return c.CA.IssueServer("tether-edge-metaserver", ServingNames(domain), append([]net.IP{ip}, more...), 365*24*time.Hour)
}
