package enroll

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/pki"
)

// A node certificate verified once is taken again without verifying its
// signature, but only the very same bytes, only while it and the CA are
// valid, and the node's identity is checked each time; a certificate of
// another CA, or one altered, is verified and refused.
func TestAuthenticateRemembersVerifiedCertificates(t *testing.T) {
	r := newRig(t)
	c, k := csr(t, "scoped")
	status, cert := r.post(t, PathJoin, JoinRequest{Token: "cccccc.dddddddddddddddd", NodeName: "scoped", CSR: c}, nil)
	if status != 200 {
		t.Fatal(cert)
	}
	leaf := pair(t, cert, k).Leaf
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
