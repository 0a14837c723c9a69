package credentials

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/pki/pkitest"
)

func writeCreds(t *testing.T, ca *pki.CA, node string, validity time.Duration) string {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueNode(&key.PublicKey, node, "id-1", validity)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Encode(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "node.pem")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestRenewalCycle(t *testing.T) {
	ca, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	f := writeCreds(t, ca, "edge-1", 100*time.Minute)
	c, err := Load(f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.Leaf()
	if c.Node() != "edge-1" {
		t.Fatalf("node %q", c.Node())
	}
	// The renewal point is within 70-90% of the life.
	used := pki.LifetimeUsed(leaf, c.RenewAt())
	if used < 0.69 || used > 0.91 {
		t.Fatalf("renewal at %.2f of the life", used)
	}
	if csr, next, err := c.RenewalRequest(time.Now()); csr != nil || err != nil || !next.Equal(c.RenewAt()) {
		t.Fatalf("not due: %v %v %v", csr != nil, next, err)
	}
	csr1, _, err := c.RenewalRequest(c.RenewAt())
	if err != nil || csr1 == nil {
		t.Fatalf("due: %v", err)
	}
	csr2, _, _ := c.RenewalRequest(c.RenewAt().Add(time.Second))
	pub1, _ := pki.ParseNodeCSR(csr1)
	pub2, _ := pki.ParseNodeCSR(csr2)
	if !pub1.Equal(pub2) {
		t.Fatal("a repeated request must be for the same pending key")
	}
	// A certificate for another key, or another node, is refused.
	other, _ := pki.NewKey()
	wrongKey, _ := ca.IssueNode(&other.PublicKey, "edge-1", "id-1", time.Hour)
	if err := c.Issued(wrongKey); err == nil {
		t.Error("a certificate for another key was installed")
	}
	wrongNode, _ := ca.IssueNode(pub1, "edge-2", "id-1", time.Hour)
	if err := c.Issued(wrongNode); err == nil {
		t.Error("a certificate for another node was installed")
	}
	good, _ := ca.IssueNode(pub1, "edge-1", "id-1", time.Hour)
	if err := c.Issued(good); err != nil {
		t.Fatal(err)
	}
	if c.Leaf().Equal(leaf) {
		t.Fatal("the new certificate is not in use")
	}
	// The file holds the new pair, mode 0600, and loads.
	fi, err := os.Stat(f)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file: %v %v", err, fi.Mode())
	}
	again, err := Load(f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil || !again.Leaf().Equal(c.Leaf()) {
		t.Fatalf("reload: %v", err)
	}
	if err := c.Issued(good); err == nil {
		t.Error("a certificate with no request pending was installed")
	}
}

func TestLoadRefusesGarbage(t *testing.T) {
	f := filepath.Join(t.TempDir(), "node.pem")
	os.WriteFile(f, []byte("not pem"), 0o600)
	if _, err := Load(f, slog.Default()); err == nil {
		t.Fatal("garbage loaded")
	}
	if _, err := Load(f+".missing", slog.Default()); err == nil {
		t.Fatal("a missing file loaded")
	}
}

// The hub's session is resumed while the certificate it was made with is
// in use; after a renewal the next handshake is a full one, presenting the
// new certificate (a ticket carries the old one).
func TestSessionResumedUntilRenewal(t *testing.T) {
	ca, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load(writeCreds(t, ca, "edge-1", 100*time.Minute), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	serving := pkitest.ServingCert(t, ca)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	// Go's own ticket keys: what is checked is the edge's cache.
	server := &tls.Config{Certificates: []tls.Certificate{serving}, ClientAuth: tls.RequireAnyClientCert}
	client := c.ClientTLS(roots)
	client.ServerName = "localhost"
	dial := func() (resumed bool, presented *x509.Certificate) {
		t.Helper()
		_, st := pkitest.Handshake(t, client, server)
		return st.DidResume, st.PeerCertificates[0]
	}
	first := c.Leaf()
	for i, want := range []bool{false, true, true} {
		if resumed, cert := dial(); resumed != want || !cert.Equal(first) {
			t.Fatalf("connection %d: resumed %v, want %v; certificate the first: %v", i, resumed, want, cert.Equal(first))
		}
	}
	csr, _, err := c.RenewalRequest(c.RenewAt())
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := pki.ParseNodeCSR(csr)
	renewed, _ := ca.IssueNode(pub, "edge-1", "id-1", time.Hour)
	if err := c.Issued(renewed); err != nil {
		t.Fatal(err)
	}
	if resumed, cert := dial(); resumed || !cert.Equal(c.Leaf()) {
		t.Fatalf("after renewal: resumed %v, the new certificate presented %v", resumed, cert.Equal(c.Leaf()))
	}
	if resumed, cert := dial(); !resumed || !cert.Equal(c.Leaf()) {
		t.Fatalf("after renewal, again: resumed %v, the new certificate %v", resumed, cert.Equal(c.Leaf()))
	}
}
