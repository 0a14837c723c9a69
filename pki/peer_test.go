package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"
)

func parse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A peer certificate passes VerifyPeer for both usages; a node's
// certificate of the same CA, a client certificate that claims the peer
// organization among others, and a peer certificate of another CA do not.
func TestVerifyPeer(t *testing.T) {
	ca, err := NewCA("shared")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	peerPEM, _, err := ca.IssuePeer(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	peer := parse(t, peerPEM)
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if err := ca.VerifyPeer([]*x509.Certificate{peer}, now, u); err != nil {
			t.Fatalf("peer certificate, usage %v: %v", u, err)
		}
	}
	if err := ca.VerifyPeer([]*x509.Certificate{peer}, now.Add(2*time.Hour), x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("an expired peer certificate passed")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	nodePEM, err := ca.IssueNode(&key.PublicKey, "edge-1", "id-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	claim, _, err := ca.IssueClient(PeerCommonName, []string{PeerOrganization, "more"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherPEM, _, err := other.IssuePeer(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string][]byte{"node": nodePEM, "claiming client": claim, "other CA's peer": otherPEM} {
		if err := ca.VerifyPeer([]*x509.Certificate{parse(t, c)}, now, x509.ExtKeyUsageClientAuth); err == nil {
			t.Errorf("%s certificate passed VerifyPeer", name)
		}
	}
	if err := ca.VerifyPeer(nil, now, x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("no certificate passed VerifyPeer")
	}
}
