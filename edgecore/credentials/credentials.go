// Package credentials holds an edge node's identity: its private key and its
// client certificate, kept together in one PEM file (mode 0600) that is
// replaced atomically and durably, so that a power cut never leaves a key
// without its certificate.
//
// The certificate is renewed in the session with the hub (protocol
// CertRequest / CertIssued) once 70-90% of its life has passed, the point
// drawn at random per certificate so that a fleet joined the same day does
// not renew in the same minute. Every renewal makes a new key; the key never
// leaves the machine. A certificate that expired while the node was offline
// is renewed before the next dial through the hub's renewal endpoint, with
// the expired certificate as proof (the hub accepts it within its grace
// period, 90 days by default).
package credentials

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/tether-edge/tether/edgecore/link"
	"github.com/tether-edge/tether/pki"
)

// Credentials is a node's key and certificate.
type Credentials struct {
	file string
	log  *slog.Logger

	mu sync.Mutex
	// cur is the key pair in use; guarded by mu.
	cur *tls.Certificate
	// renewAt is when to ask for the next certificate; guarded by mu.
	renewAt time.Time
	// pending is the key of the request in flight, if any; guarded by mu.
	pending *ecdsa.PrivateKey
	// sessions holds the hub's TLS session tickets, to resume (sessionCache).
	sessions *link.SessionCache
}

// Load reads the key and certificate from file (written by edgecore join).
func Load(file string, log *slog.Logger) (*Credentials, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("node credentials: %w (has this node joined? run edgecore join)", err)
	}
	pair, err := tls.X509KeyPair(b, b)
	if err != nil {
		return nil, fmt.Errorf("node credentials %s: %w", file, err)
	}
	if _, _, err := pki.NodeIdentity(pair.Leaf); err != nil {
		return nil, fmt.Errorf("node credentials %s: %w", file, err)
	}
	c := &Credentials{file: file, log: log, sessions: link.NewSessionCache(8)}
	c.install(&pair)
	return c, nil
}

// Encode is the content of a credentials file: the certificate, then the key.
func Encode(certPEM []byte, key *ecdsa.PrivateKey) ([]byte, error) {
	kp, err := pki.KeyPEM(key)
	if err != nil {
		return nil, err
	}
	return append(append([]byte(nil), certPEM...), kp...), nil
}

// install makes pair the one in use and draws its renewal point.
func (c *Credentials) install(pair *tls.Certificate) {
	leaf := pair.Leaf
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	at := leaf.NotBefore.Add(time.Duration(float64(life) * (0.7 + 0.2*rand.Float64())))
	c.mu.Lock()
	c.cur, c.renewAt, c.pending = pair, at, nil
	c.mu.Unlock()
}

// Node is the node name the certificate is for.
func (c *Credentials) Node() string {
	n, _, _ := pki.NodeIdentity(c.Leaf())
	return n
}

// Leaf is the certificate in use.
func (c *Credentials) Leaf() *x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur.Leaf
}

// RenewAt is when the certificate in use is due for renewal.
func (c *Credentials) RenewAt() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.renewAt
}

// ClientTLS returns a TLS configuration that trusts roots only and presents
// the certificate in use (the one of the moment of each handshake).
func (c *Credentials) ClientTLS(roots *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.cur, nil
		},
		ClientSessionCache: sessionCache{c},
	}
}

// sessionCache keeps the hub's session tickets (link.SessionCache), so
// that a reconnect resumes the TLS session (no certificate sent, no
// signature made or verified on either end: the CPU of a fleet reconnecting
// after an outage, and bytes on a slow link). It is keyed by the
// certificate in use as well: a ticket holds the certificate of the
// handshake that made it, and once the certificate is renewed the next
// handshake is a full one, presenting the new one.
type sessionCache struct{ c *Credentials }

func (s sessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	return s.c.sessions.Get(s.key(key))
}

func (s sessionCache) Put(key string, cs *tls.ClientSessionState) {
	s.c.sessions.Put(s.key(key), cs)
}

func (s sessionCache) key(k string) string {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return k + " " + s.c.cur.Leaf.SerialNumber.String()
}

// RenewalRequest returns a certificate request (PEM) for a new key if the
// certificate is due for renewal at now, and when to ask again: the renewal
// point if it is not due, or a while later if no certificate comes.
func (c *Credentials) RenewalRequest(now time.Time) (csr []byte, next time.Time, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Before(c.renewAt) {
		return nil, c.renewAt, nil
	}
	if c.pending == nil {
		if c.pending, err = pki.NewKey(); err != nil {
			return nil, now.Add(time.Minute), err
		}
	}
	node, _, _ := pki.NodeIdentity(c.cur.Leaf)
	csr, err = pki.NodeCSR(c.pending, node)
	left := c.cur.Leaf.NotAfter.Sub(now)
	retry := min(time.Minute, max(left/8, time.Second))
	return csr, now.Add(retry), err
}

// Issued installs a certificate the hub issued for the pending request: it
// must be for this node and the pending key. The file is replaced before the
// new certificate is used.
func (c *Credentials) Issued(certPEM []byte) error {
	certs, err := pki.ParseCertsPEM(certPEM)
	if err != nil {
		return fmt.Errorf("issued certificate: %w", err)
	}
	c.mu.Lock()
	key, cur := c.pending, c.cur.Leaf
	c.mu.Unlock()
	if key == nil {
		return errors.New("issued certificate: no request pending")
	}
	leaf := certs[0]
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return errors.New("issued certificate: not for the key of the pending request")
	}
	oldNode, _, _ := pki.NodeIdentity(cur)
	if node, _, err := pki.NodeIdentity(leaf); err != nil || node != oldNode {
		return fmt.Errorf("issued certificate: for node %q, not %q (%v)", node, oldNode, err)
	}
	b, err := Encode(certPEM, key)
	if err != nil {
		return err
	}
	pair, err := tls.X509KeyPair(b, b)
	if err != nil {
		return fmt.Errorf("issued certificate: %w", err)
	}
	if err := pki.WriteFileSync(c.file, b, 0o600); err != nil {
		return err
	}
	c.install(&pair)
	c.log.Info("client certificate renewed", slog.Time("notAfter", leaf.NotAfter),
		slog.Time("renewAt", c.RenewAt()))
	return nil
}

// Expired reports whether the certificate in use has expired at now.
func (c *Credentials) Expired(now time.Time) bool { return now.After(c.Leaf().NotAfter) }

// RenewExpired renews an expired certificate through the hub's renewal
// endpoint (hub is the hub's https://host:port), presenting the expired
// certificate, which proves the node holds its key.
func (c *Credentials) RenewExpired(ctx context.Context, hub string, roots *x509.CertPool) error {
	csr, _, err := c.RenewalRequest(time.Now())
	if err != nil {
		return err
	}
	if csr == nil {
		return nil
	}
	body, err := json.Marshal(map[string]string{"csr": string(csr)})
	if err != nil {
		return err
	}
	u, err := url.JoinPath(hub, "/v1/renew")
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c.ClientTLS(roots)}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("renew expired certificate: %w", err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("renew expired certificate: %w", err)
	}
	var out struct {
		Certificate string `json:"certificate"`
		Error       string `json:"error"`
	}
	if err := json.Unmarshal(rb, &out); err != nil {
		return fmt.Errorf("renew expired certificate: %s: %w", resp.Status, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("renew expired certificate: %s: %s", resp.Status, out.Error)
	}
	return c.Issued([]byte(out.Certificate))
}
