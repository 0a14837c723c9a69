package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-edge/tether/cloudcore/certs"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

// testCA issues the certificates of every hub test.
var testCA = sync.OnceValue(func() *pki.CA {
	ca, err := pki.NewCA("hub-test-ca")
	if err != nil {
		panic(err)
	}
	return ca
})

// testAuth is an Authenticator over testCA: node N's valid identity is
// "id-N" unless set otherwise; deleted nodes have none.
type testAuth struct {
	mu      sync.Mutex
	ids     map[string]string // guarded by mu
	deleted map[string]bool   // guarded by mu
}

func newTestAuth(*testing.T) *testAuth {
	return &testAuth{ids: map[string]string{}, deleted: map[string]bool{}}
}

func (a *testAuth) revoke(node string) {
	a.mu.Lock()
	a.deleted[node] = true
	a.mu.Unlock()
}

func (a *testAuth) Authenticate(ctx context.Context, certs []*x509.Certificate) (string, string, time.Time, error) {
	if len(certs) == 0 {
		return "", "", time.Time{}, errors.New("no client certificate")
	}
	node, id, err := testCA().VerifyNode(certs[0], time.Now())
	if err != nil {
		return "", "", time.Time{}, err
	}
	if err := a.Check(ctx, node, id, false); err != nil {
		return "", "", time.Time{}, err
	}
	return node, id, certs[0].NotAfter, nil
}

func (a *testAuth) Check(_ context.Context, node, id string, _ bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	want, ok := a.ids[node]
	if !ok {
		want = "id-" + node
	}
	if a.deleted[node] || id != want {
		return fmt.Errorf("node %s was revoked", node)
	}
	return nil
}

func (a *testAuth) Renew(ctx context.Context, node, id string, csr []byte) ([]byte, error) {
	if err := a.Check(ctx, node, id, true); err != nil {
		return nil, err
	}
	pub, err := pki.ParseNodeCSR(csr)
	if err != nil {
		return nil, err
	}
	return testCA().IssueNode(pub, node, id, time.Hour)
}

// issueCert makes a key and a certificate for node with identity id.
func issueCert(t *testing.T, node, id string) *tls.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := testCA().IssueNode(&key.PublicKey, node, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := pki.TLSPair(certPEM, key)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// An edge without a certificate, or with one of another CA, gets no
// session.
func TestNoCertificateNoSession(t *testing.T) {
	_, url := startHub(t, Config{})
	if _, err := dialAs(t, url, nil, "n1", nil); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("no certificate: want 401, got %v", err)
	}
	other, err := pki.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.NewKey()
	certPEM, _ := other.IssueNode(&key.PublicKey, "n1", "id-n1", time.Hour)
	pair, err := pki.TLSPair(certPEM, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dialAs(t, url, pair, "n1", nil); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("certificate of another CA: want 401, got %v", err)
	}
}

// A node holding a certificate for A that says Hello as B is refused and
// counted; the sessions of A and B are undisturbed.
func TestHelloAsAnotherNodeRefused(t *testing.T) {
	src, url := startHub(t, Config{})
	a, err := dialAs(t, url, issueCert(t, "n1", "id-n1"), "n1", nil)
	if err != nil {
		t.Fatal(err)
	}
	a.recv() // ResyncDone
	b, err := dialAs(t, url, issueCert(t, "n2", "id-n2"), "n2", nil)
	if err != nil {
		t.Fatal(err)
	}
	b.recv() // ResyncDone
	_, err = dialAs(t, url, issueCert(t, "n1", "id-n1"), "n2", nil)
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.ErrorUnauthorized || !strings.Contains(pe.Message, "node n1") {
		t.Fatalf("Hello as n2 with n1's certificate: want Unauthorized naming n1, got %v", err)
	}
	// The hub counts after it answered: give it a moment.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st := src.hub.Stats()
		if st.IdentityRefused == 1 && st.Refused == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats: %+v, want 1 identity refusal", st)
		}
	}
	if !a.quiet(300*time.Millisecond) || !b.quiet(10*time.Millisecond) {
		t.Fatal("a live session heard something after the forged Hello")
	}
	if got := len(src.hub.Connected()); got != 2 {
		t.Fatalf("%d sessions after the forged Hello, want 2", got)
	}
}

// A revoked node loses its session within RevokeCheck and cannot connect
// again; a certificate of an older identity is refused.
func TestRevokedNodeCutOff(t *testing.T) {
	auth := newTestAuth(t)
	src, url := startHub(t, Config{Auth: auth, RevokeCheck: 50 * time.Millisecond})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go src.hub.Serve(ctx, ln) // runs the revocation sweep; sessions come by url
	e := connect(t, url, nil)
	e.recv() // ResyncDone
	auth.revoke("n1")
	deadline := time.After(2 * time.Second)
	for {
		select {
		case f, ok := <-e.frames:
			if !ok {
				t.Fatal("closed without an Error")
			}
			if f.Error == nil {
				continue
			}
			if f.Error.Code != protocol.ErrorRevoked {
				t.Fatalf("want Revoked, got %v", f.Error)
			}
		case <-deadline:
			t.Fatal("revoked session still open after 2s")
		}
		break
	}
	if _, err := dialAs(t, url, issueCert(t, "n1", "id-n1"), "n1", nil); err == nil {
		t.Fatal("revoked node connected again")
	}
	if src.hub.Stats().Revoked != 1 {
		t.Errorf("revoked counter %d, want 1", src.hub.Stats().Revoked)
	}
	auth.mu.Lock()
	delete(auth.deleted, "n1")
	auth.ids["n1"] = "id-n1-rejoined"
	auth.mu.Unlock()
	if _, err := dialAs(t, url, issueCert(t, "n1", "id-n1"), "n1", nil); err == nil {
		t.Fatal("a certificate of the identity before a re-join connected")
	}
	if _, err := dialAs(t, url, issueCert(t, "n1", "id-n1-rejoined"), "n1", nil); err != nil {
		t.Fatalf("the new identity: %v", err)
	}
}

// CertRequest in a version 2 session gets a certificate for the session's
// node and the request's key, whatever name the request says.
func TestCertRequest(t *testing.T) {
	src, url := startHub(t, Config{})
	e := connect(t, url, nil)
	e.recv() // ResyncDone
	key, _ := pki.NewKey()
	csr, err := pki.NodeCSR(key, "someone-else")
	if err != nil {
		t.Fatal(err)
	}
	e.send(&protocol.Frame{CertRequest: &protocol.CertRequest{CSR: csr}})
	f := e.recv()
	if f.CertIssued == nil {
		t.Fatalf("want CertIssued, got %s %v", f.Type(), f.Error)
	}
	certs, err := pki.ParseCertsPEM(f.CertIssued.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	node, id, err := testCA().VerifyNode(certs[0], time.Now())
	if err != nil || node != "n1" || id != "id-n1" {
		t.Fatalf("issued for %q %q (%v), want n1 id-n1", node, id, err)
	}
	e.send(&protocol.Frame{CertRequest: &protocol.CertRequest{CSR: []byte("-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n")}})
	if f := e.recv(); f.Error == nil || f.Error.Code != protocol.ErrorCertificate {
		t.Fatalf("malformed request: want Error Certificate, got %s", f.Type())
	}
	if st := src.hub.Stats(); st.CertsIssued != 1 || st.CertsRefused != 1 {
		t.Errorf("stats %+v: want 1 issued, 1 refused", st)
	}
}

// A flood of CertRequests in one session: they are answered one at a time
// (one that comes while another is being answered is refused at once), and
// each waits for the node's upstream rate like a status. They were exempt
// from it: all 50 were read and answered at once, each answer a signature
// or an Error, each signature a read of the Node.
func TestCertRequestFlood(t *testing.T) {
	src, url := startHub(t, Config{UpstreamRate: 0.001, UpstreamBurst: 5})
	e := connect(t, url, nil)
	e.recv() // ResyncDone
	key, _ := pki.NewKey()
	csr, err := pki.NodeCSR(key, "n1")
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		e.send(&protocol.Frame{CertRequest: &protocol.CertRequest{CSR: csr}})
	}
	issued := 0
	for range 5 { // the burst
		switch f := e.recv(); {
		case f.CertIssued != nil:
			issued++
		case f.Error != nil && f.Error.Code == protocol.ErrorCertificate:
		default:
			t.Fatalf("want CertIssued or Error Certificate, got %s", f.Type())
		}
	}
	if issued == 0 {
		t.Fatal("no certificate issued")
	}
	// The sixth waits for a token (one in 1,000 s): nothing more is read.
	if !e.quiet(time.Second) {
		t.Fatal("more than the burst of certificate requests answered")
	}
	waitFor(t, "the sixth request throttled", func() bool { return src.hub.Stats().UpstreamThrottled == 1 })
	if st := src.hub.Stats(); st.CertsIssued+st.CertsRefused != 5 || st.CertsIssued != int64(issued) {
		t.Fatalf("stats %+v: want 5 answered, %d issued", st, issued)
	}
}

// An edge of protocol version 1 is welcomed with version 1, and a
// CertRequest in such a session is not taken.
func TestVersionOneEdge(t *testing.T) {
	_, url := startHub(t, Config{})
	tc := &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{*issueCert(t, "n1", "id-n1")}}
	ws, _, err := (&websocket.Dialer{TLSClientConfig: tc}).Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	e := &fakeEdge{t: t, ws: ws, frames: make(chan *protocol.Frame, 100)}
	go func() {
		defer close(e.frames)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if f, err := protocol.Decode(b); err == nil {
				e.frames <- f
			}
		}
	}()
	e.send(&protocol.Frame{Hello: &protocol.Hello{ProtocolVersion: 1, MinVersion: 1, NodeName: "n1"}})
	if f := e.recv(); f.Welcome == nil || f.Welcome.ProtocolVersion != 1 {
		t.Fatalf("want Welcome version 1, got %+v", f)
	}
	e.recv() // ResyncDone
	key, _ := pki.NewKey()
	csr, _ := pki.NodeCSR(key, "n1")
	e.send(&protocol.Frame{CertRequest: &protocol.CertRequest{CSR: csr}})
	if f := e.recv(); f.Error == nil || f.Error.Code != protocol.ErrorUnexpected {
		t.Fatalf("CertRequest in a version 1 session: want Error Unexpected, got %s", f.Type())
	}
}

// A session ends when its certificate expires, unless the node renewed it
// in the session.
func TestSessionEndsWithItsCertificate(t *testing.T) {
	src, url := startHub(t, Config{RevokeCheck: 50 * time.Millisecond})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go src.hub.Serve(t.Context(), ln) // runs the sweep
	short := func(node string) *tls.Certificate {
		key, _ := pki.NewKey()
		certPEM, _ := testCA().IssueNode(&key.PublicKey, node, "id-"+node, 1500*time.Millisecond)
		pair, err := pki.TLSPair(certPEM, key)
		if err != nil {
			t.Fatal(err)
		}
		return pair
	}
	stale, err := dialAs(t, url, short("n1"), "n1", nil)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := dialAs(t, url, short("n2"), "n2", nil)
	if err != nil {
		t.Fatal(err)
	}
	renewed.recv() // ResyncDone
	key, _ := pki.NewKey()
	csr, _ := pki.NodeCSR(key, "n2")
	renewed.send(&protocol.Frame{CertRequest: &protocol.CertRequest{CSR: csr}})
	if f := renewed.recv(); f.CertIssued == nil {
		t.Fatalf("want CertIssued, got %s", f.Type())
	}
	deadline := time.After(3 * time.Second)
	for ended := false; !ended; {
		select {
		case f, ok := <-stale.frames:
			if !ok {
				t.Fatal("closed without an Error")
			}
			if f.Error != nil {
				if f.Error.Code != protocol.ErrorUnauthorized || !strings.Contains(f.Error.Message, "expired") {
					t.Fatalf("want Unauthorized: expired, got %v", f.Error)
				}
				ended = true
			}
		case <-deadline:
			t.Fatal("the session outlived its certificate")
		}
	}
	if !renewed.quiet(500 * time.Millisecond) {
		t.Fatal("the session that renewed its certificate heard something")
	}
	if got := src.hub.Connected(); len(got) != 1 || got[0] != "n2" {
		t.Fatalf("connected %v, want [n2]", got)
	}
}

// A session resumed with a ticket (no certificate signatures) is
// authenticated as a new one: the node of the ticket's certificate gets its
// session; once revoked, its resumed connection is refused all the same.
func TestResumedSessionAuthenticated(t *testing.T) {
	keys, err := certs.NewTicketKeys(testCA(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	auth := newTestAuth(t)
	src, url := startHub(t, Config{Auth: auth, TLS: &tls.Config{ClientAuth: tls.RequestClientCert,
		WrapSession: keys.Wrap, UnwrapSession: keys.Unwrap}})
	tc := &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{*issueCert(t, "n1", "id-n1")},
		ClientSessionCache: tls.NewLRUClientSessionCache(1)}
	for i := range 2 {
		e, err := dialWith(t, url, tc, "n1", nil, protocol.Version)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		e.recv() // ResyncDone
		if got := src.hub.Stats().TLSResumed; got != int64(i) {
			t.Fatalf("connection %d: %d resumed, want %d", i, got, i)
		}
		e.ws.Close()
	}
	auth.revoke("n1")
	if _, err := dialWith(t, url, tc, "n1", nil, protocol.Version); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("revoked node, resumed: want 401, got %v", err)
	}
	if st := src.hub.Stats(); st.TLSResumed != 2 || st.Refused != 1 {
		t.Fatalf("after the revoked node's attempt: %d resumed, %d refused; want 2 and 1", st.TLSResumed, st.Refused)
	}
}
