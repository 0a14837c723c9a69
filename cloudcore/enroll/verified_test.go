package enroll

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/cloudcore/certs"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/pki/pkitest"
)

// A node certificate verified once is taken again without verifying its
// signature, but only the very same bytes, only while it and the CA are
// valid, and the node's identity is checked each time; a certificate of
// another CA, or one altered, is verified and refused.
func TestAuthenticateRemembersVerifiedCertificates(t *testing.T) {
	r := newRig(t)
	leaf := joinScoped(t, r).Leaf
	auth := func(c *x509.Certificate) error {
		_, _, _, err := r.svc.Authenticate(t.Context(), []*x509.Certificate{c})
		return err
	}
	for i := range 3 {
		if err := auth(leaf); err != nil {
			t.Fatalf("authentication %d: %v", i, err)
		}
	}
	if n := len(r.svc.verified.m); n != 1 {
		t.Fatalf("%d certificates remembered, want 1", n)
	}

	// Remembered, yet refused once expired or before its validity.
	r.now = leaf.NotAfter.Add(time.Second)
	if err := auth(leaf); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired certificate: %v", err)
	}
	r.now = leaf.NotBefore.Add(-time.Second)
	if err := auth(leaf); err == nil {
		t.Error("certificate not yet valid taken")
	}
	r.now = time.Now()

	// The same node and identity from another CA: verified, refused.
	other, _ := pki.NewCA("other")
	key, _ := pki.NewKey()
	foreignPEM, _ := other.IssueNode(&key.PublicKey, "scoped", r.svc.verified.m[sumOf(leaf)].id, time.Hour)
	foreign, err := pki.ParseCertsPEM(foreignPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := auth(foreign[0]); err == nil {
		t.Error("a certificate of another CA naming the same identity was taken")
	}
	// The remembered certificate with its signature altered: other bytes,
	// verified, refused.
	altered := *leaf
	altered.Raw = append([]byte(nil), leaf.Raw...)
	altered.Raw[len(altered.Raw)-1] ^= 1
	altered.Signature = append([]byte(nil), leaf.Signature...)
	altered.Signature[len(altered.Signature)-1] ^= 1
	if err := auth(&altered); err == nil {
		t.Error("a certificate with an altered signature was taken")
	}

	// Remembered, but the node joined again since: revoked all the same.
	c2, _ := csr(t, "scoped")
	if status, says := r.post(t, PathJoin, JoinRequest{Token: "cccccc.dddddddddddddddd", NodeName: "scoped", CSR: c2}, nil); status != 200 {
		t.Fatal(says)
	}
	var rv *Revoked
	if err := auth(leaf); !errors.As(err, &rv) {
		t.Errorf("remembered certificate of a re-joined node: %v, want Revoked", err)
	}
}

func sumOf(c *x509.Certificate) [32]byte { return sha256.Sum256(c.Raw) }

// A session ticket carries the fact that its client certificate verified:
// a replica restarted with nothing remembered authenticates the resumed
// session without verifying the chain again, and still checks the rest. A
// certificate that did not verify is carried as nothing.
func TestTicketCarriesVerifiedCertificate(t *testing.T) {
	r := newRig(t)
	node := joinScoped(t, r)
	ca := r.svc.cfg.CA
	keys, err := certs.NewTicketKeys(ca, r.svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	server := &tls.Config{Certificates: []tls.Certificate{pkitest.ServingCert(t, ca)}, ClientAuth: tls.RequestClientCert,
		WrapSession: keys.Wrap, UnwrapSession: keys.Unwrap}
	client := func(cert tls.Certificate, cache tls.ClientSessionCache) *tls.Config {
		return &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{cert}, ClientSessionCache: cache}
	}
	restart := func() {
		restartCache(r)
		r.svc.verified.chains.Store(0)
	}
	auth := func(cs tls.ConnectionState) error {
		_, _, _, err := r.svc.Authenticate(t.Context(), cs.PeerCertificates)
		return err
	}

	cache := tls.NewLRUClientSessionCache(1)
	_, s := pkitest.Handshake(t, client(*node, cache), server)
	if s.DidResume {
		t.Fatal("first handshake resumed")
	}
	if err := auth(s); err != nil {
		t.Fatal(err)
	}
	restart()
	_, s = pkitest.Handshake(t, client(*node, cache), server)
	if !s.DidResume {
		t.Fatal("second handshake not resumed")
	}
	if err := auth(s); err != nil {
		t.Fatalf("resumed session after a restart: %v", err)
	}
	if n := r.svc.verified.chains.Load(); n != 0 {
		t.Errorf("%d chain verifications for a resumed session after a restart, want 0", n)
	}
	// What does not depend on the chain is still checked: expiry and the
	// node's identity (joined again since: revoked).
	r.now = node.Leaf.NotAfter.Add(time.Second)
	if err := auth(s); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired certificate from a ticket: %v", err)
	}
	r.now = time.Now()
	c2, _ := csr(t, "scoped")
	if status, says := r.post(t, PathJoin, JoinRequest{Token: "cccccc.dddddddddddddddd", NodeName: "scoped", CSR: c2}, nil); status != 200 {
		t.Fatal(says)
	}
	var rv *Revoked
	if err := auth(s); !errors.As(err, &rv) {
		t.Errorf("certificate of a node joined again, from a ticket: %v, want Revoked", err)
	}

	// Another CA's certificate naming the same node: its ticket carries
	// nothing, the restarted replica verifies it, and refuses it.
	other, _ := pki.NewCA("other")
	key, _ := pki.NewKey()
	foreignPEM, _ := other.IssueNode(&key.PublicKey, "scoped", "any", time.Hour)
	keyPEM, _ := pki.KeyPEM(key)
	foreign, err := tls.X509KeyPair(foreignPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cache = tls.NewLRUClientSessionCache(1)
	pkitest.Handshake(t, client(foreign, cache), server)
	restart()
	if _, s = pkitest.Handshake(t, client(foreign, cache), server); !s.DidResume {
		t.Fatal("foreign certificate's second handshake not resumed")
	}
	if err := auth(s); err == nil {
		t.Error("another CA's certificate taken from a ticket")
	}
	// Verified for the resumed session's new ticket and at its
	// authentication: a certificate that fails is not remembered.
	if n := r.svc.verified.chains.Load(); n != 2 {
		t.Errorf("%d chain verifications of another CA's certificate from a ticket, want 2", n)
	}
}

// An entry that does not parse is remembered as nothing.
func TestFromTicketRefusesMalformed(t *testing.T) {
	r := newRig(t)
	e := r.svc.TicketEntry(joinScoped(t, r).Leaf)
	if e == nil {
		t.Fatal("no entry for a certificate that verifies")
	}
	cases := map[string][]byte{
		"empty":          nil,
		"prefix only":    []byte(certs.TicketEntryPrefix),
		"longer":         append(bytes.Clone(e), 0),
		"another prefix": append([]byte("x"), e[1:]...),
		"no node":        append(append([]byte(certs.TicketEntryPrefix), make([]byte, 32)...), 0, 0, 0, 1, 'i'),
	}
	for n := range len(e) {
		cases["truncated to "+strconv.Itoa(n)] = e[:n]
	}
	for name, b := range cases {
		restartCache(r)
		r.svc.FromTicket(b)
		if n := len(r.svc.verified.m); n != 0 {
			t.Errorf("%s: %d certificates remembered", name, n)
		}
	}
	restartCache(r)
	r.svc.FromTicket(e)
	if n := len(r.svc.verified.m); n != 1 {
		t.Errorf("the entry made: %d certificates remembered, want 1", n)
	}
}

// joinScoped joins node "scoped" with the rig's token and returns its
// certificate and key.
func joinScoped(t *testing.T, r *rig) *tls.Certificate {
	t.Helper()
	c, k := csr(t, "scoped")
	status, cert := r.post(t, PathJoin, JoinRequest{Token: "cccccc.dddddddddddddddd", NodeName: "scoped", CSR: c}, nil)
	if status != 200 {
		t.Fatal(cert)
	}
	return pair(t, cert, k)
}

func restartCache(r *rig) {
	r.svc.verified.mu.Lock()
	clear(r.svc.verified.m)
	r.svc.verified.mu.Unlock()
}
