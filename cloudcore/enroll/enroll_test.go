package enroll

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tether-edge/tether/cloudcore/status"
	"github.com/tether-edge/tether/pki"
)

// memNodes is Nodes in memory.
type memNodes struct {
	mu    sync.Mutex
	nodes map[string]*corev1.Node // guarded by mu
}

func (m *memNodes) Get(_ context.Context, name string, _ bool) (*corev1.Node, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.nodes[name]
	if !ok {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "nodes"}, name)
	}
	return n.DeepCopy(), nil
}

func (m *memNodes) Register(_ context.Context, name, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.nodes[name]
	if !ok {
		n = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{status.EdgeRoleLabel: ""}}}
		m.nodes[name] = n
	}
	if _, edge := n.Labels[status.EdgeRoleLabel]; !edge {
		return errors.New("not an edge node")
	}
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	n.Annotations[AnnotationIdentity] = id
	return nil
}

// memTokens takes "aaaaaa.bbbbbbbbbbbbbbbb" for any node, once,
// "eeeeee.ffffffffffffffff" for any node, any number of times, and
// "cccccc.dddddddddddddddd" for node "scoped" only.
type memTokens struct {
	mu   sync.Mutex
	used bool
}

func (m *memTokens) Check(_ context.Context, bootstrap, node string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case bootstrap == "cccccc.dddddddddddddddd" && node == "scoped":
		return "scoped", nil
	case bootstrap == "eeeeee.ffffffffffffffff":
		return "", nil
	case bootstrap == "aaaaaa.bbbbbbbbbbbbbbbb":
		if m.used {
			return "", errors.New("join token used up")
		}
		return "", nil
	}
	return "", errors.New("unknown join token")
}

func (m *memTokens) Consume(ctx context.Context, bootstrap, node string) error {
	if _, err := m.Check(ctx, bootstrap, node); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if bootstrap == "aaaaaa.bbbbbbbbbbbbbbbb" {
		m.used = true
	}
	return nil
}

type rig struct {
	svc   *Service
	nodes *memNodes
	srv   *httptest.Server
	now   time.Time
}

func newRig(t *testing.T) *rig {
	t.Helper()
	ca, err := pki.NewCA("enroll-test")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{nodes: &memNodes{nodes: map[string]*corev1.Node{
		"kubelet-1": {ObjectMeta: metav1.ObjectMeta{Name: "kubelet-1"}},
	}}, now: time.Now()}
	r.svc, err = New(Config{CA: ca, Bundle: ca.CertPEM(), ClientValidity: time.Hour, RenewGrace: 24 * time.Hour,
		Tokens: &memTokens{}, Nodes: r.nodes, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { return r.now }})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for p, h := range r.svc.Handlers() {
		mux.Handle(p, h)
	}
	r.srv = httptest.NewUnstartedServer(mux)
	r.srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	r.srv.StartTLS()
	t.Cleanup(r.srv.Close)
	return r
}

// post sends body to path, presenting cert if not nil; it returns the
// status and the certificate issued or the error said.
func (r *rig) post(t *testing.T, path string, body any, cert *tls.Certificate) (int, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	tc := r.srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	resp, err := hc.Post(r.srv.URL+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Certificate, Error string }
	rb, _ := io.ReadAll(resp.Body)
	json.Unmarshal(rb, &out)
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, out.Certificate
	}
	return resp.StatusCode, out.Error
}

func csr(t *testing.T, node string) (string, *tls.Certificate) {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.NodeCSR(key, node)
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := pki.KeyPEM(key)
	// The key, for a pair made once the certificate is known.
	return string(c), &tls.Certificate{PrivateKey: key, Certificate: [][]byte{kp}}
}

func pair(t *testing.T, certPEM string, half *tls.Certificate) *tls.Certificate {
	t.Helper()
	p, err := tls.X509KeyPair([]byte(certPEM), half.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return &p
}

func TestJoin(t *testing.T) {
	r := newRig(t)
	c, _ := csr(t, "edge-1")
	cases := []struct {
		name   string
		req    JoinRequest
		status int
		says   string
	}{
		{"bad node name", JoinRequest{Token: "aaaaaa.bbbbbbbbbbbbbbbb", NodeName: "Edge_1", CSR: c}, 400, "node name"},
		{"no csr", JoinRequest{Token: "aaaaaa.bbbbbbbbbbbbbbbb", NodeName: "edge-1"}, 400, "certificate request"},
		{"garbage csr", JoinRequest{Token: "aaaaaa.bbbbbbbbbbbbbbbb", NodeName: "edge-1",
			CSR: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}, 400, "certificate request"},
		{"no token", JoinRequest{NodeName: "edge-1", CSR: c}, 401, "no join token"},
		{"unknown token", JoinRequest{Token: "zzzzzz.bbbbbbbbbbbbbbbb", NodeName: "edge-1", CSR: c}, 403, "unknown"},
		// A bad token learns nothing of the nodes: not that kubelet-1 exists.
		{"unknown token, kubelet node", JoinRequest{Token: "zzzzzz.bbbbbbbbbbbbbbbb", NodeName: "kubelet-1", CSR: c}, 403,
			"unknown join token"},
		{"kubelet node", JoinRequest{Token: "aaaaaa.bbbbbbbbbbbbbbbb", NodeName: "kubelet-1", CSR: c}, 403, "not an edge node"},
		{"good", JoinRequest{Token: "aaaaaa.bbbbbbbbbbbbbbbb", NodeName: "edge-1", CSR: c}, 200, "BEGIN CERTIFICATE"},
		{"used up", JoinRequest{Token: "aaaaaa.bbbbbbbbbbbbbbbb", NodeName: "edge-2", CSR: c}, 403, "used up"},
		{"existing node, unscoped token", JoinRequest{Token: "eeeeee.ffffffffffffffff", NodeName: "edge-1", CSR: c}, 403,
			"cloudcore token create --node edge-1"},
	}
	for _, tc := range cases {
		status, says := r.post(t, PathJoin, tc.req, nil)
		if status != tc.status || !strings.Contains(says, tc.says) {
			t.Errorf("%s: %d %q, want %d and %q", tc.name, status, says, tc.status, tc.says)
		}
	}
	// Oversized and unknown fields.
	if status, _ := r.post(t, PathJoin, map[string]string{"csr": strings.Repeat("x", MaxRequestSize)}, nil); status != 400 {
		t.Errorf("oversized body: %d, want 400", status)
	}
	if status, says := r.post(t, PathJoin, map[string]string{"color": "x"}, nil); status != 400 || !strings.Contains(says, "unknown field") {
		t.Errorf("unknown field: %d %q", status, says)
	}
	if st := r.svc.Stats(); st.Joined != 1 || st.JoinRefused != 11 {
		t.Errorf("stats %+v: want 1 joined, 11 refused", st)
	}
}

// A re-join gives a new identity, which revokes the older certificates.
func TestRejoinRevokesOlderCertificates(t *testing.T) {
	r := newRig(t)
	c1, k1 := csr(t, "scoped")
	status, cert1 := r.post(t, PathJoin, JoinRequest{Token: "cccccc.dddddddddddddddd", NodeName: "scoped", CSR: c1}, nil)
	if status != 200 {
		t.Fatal(cert1)
	}
	p1 := pair(t, cert1, k1)
	if _, _, _, err := r.svc.Authenticate(t.Context(), []*x509.Certificate{p1.Leaf}); err != nil {
		t.Fatalf("first certificate: %v", err)
	}
	c2, _ := csr(t, "scoped")
	if status, says := r.post(t, PathJoin, JoinRequest{Token: "cccccc.dddddddddddddddd", NodeName: "scoped", CSR: c2}, nil); status != 200 {
		t.Fatal(says)
	}
	_, _, _, err := r.svc.Authenticate(t.Context(), []*x509.Certificate{p1.Leaf})
	var rv *Revoked
	if !errors.As(err, &rv) {
		t.Fatalf("certificate of before the re-join: %v, want Revoked", err)
	}
}

// An expired certificate renews within the grace period, not after it,
// and not for a deleted node.
func TestRenewExpired(t *testing.T) {
	r := newRig(t)
	c, k := csr(t, "scoped")
	status, cert := r.post(t, PathJoin, JoinRequest{Token: "cccccc.dddddddddddddddd", NodeName: "scoped", CSR: c}, nil)
	if status != 200 {
		t.Fatal(cert)
	}
	p := pair(t, cert, k)
	renew := func() (int, string) {
		c, _ := csr(t, "whatever")
		return r.post(t, PathRenew, RenewRequest{CSR: c}, p)
	}
	if status, says := r.post(t, PathRenew, RenewRequest{CSR: c}, nil); status != 401 {
		t.Errorf("renew without a certificate: %d %q", status, says)
	}
	r.now = p.Leaf.NotAfter.Add(23 * time.Hour) // expired, within the grace
	if status, says := renew(); status != 200 {
		t.Fatalf("within the grace period: %d %q", status, says)
	}
	r.now = p.Leaf.NotAfter.Add(25 * time.Hour)
	if status, says := renew(); status != 403 || !strings.Contains(says, "grace period") {
		t.Errorf("past the grace period: %d %q", status, says)
	}
	r.now = p.Leaf.NotAfter.Add(time.Hour)
	r.nodes.mu.Lock()
	delete(r.nodes.nodes, "scoped")
	r.nodes.mu.Unlock()
	if status, says := renew(); status != 403 || !strings.Contains(says, "revoked") {
		t.Errorf("deleted node: %d %q", status, says)
	}
	// A certificate of another CA is not taken.
	other, _ := pki.NewCA("other")
	key, _ := pki.NewKey()
	foreign, _ := other.IssueNode(&key.PublicKey, "scoped", "x", time.Hour)
	kp, _ := pki.KeyPEM(key)
	fp, _ := tls.X509KeyPair(foreign, kp)
	c2, _ := csr(t, "scoped")
	if status, _ := r.post(t, PathRenew, RenewRequest{CSR: c2}, &fp); status != 401 {
		t.Errorf("certificate of another CA: %d, want 401", status)
	}
}

func TestCAEndpoint(t *testing.T) {
	r := newRig(t)
	resp, err := r.srv.Client().Get(r.srv.URL + PathCA)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	certs, err := pki.ParseCertsPEM(b)
	if err != nil || !certs[0].Equal(r.svc.cfg.CA.Cert) {
		t.Fatalf("GET %s: %v", PathCA, err)
	}
}

// Each endpoint takes its one method: any other is refused with 405 and
// an Allow header, and /v1/ca serves nothing to it.
func TestEndpointMethods(t *testing.T) {
	r := newRig(t)
	for path, allowed := range map[string]string{PathCA: http.MethodGet, PathJoin: http.MethodPost, PathRenew: http.MethodPost} {
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
			if m == allowed {
				continue
			}
			req, err := http.NewRequestWithContext(t.Context(), m, r.srv.URL+path, strings.NewReader("-----BEGIN"))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := r.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != allowed {
				t.Errorf("%s %s: %s, Allow %q; want 405, Allow %s", m, path, resp.Status, resp.Header.Get("Allow"), allowed)
			}
			if strings.Contains(string(b), "BEGIN CERTIFICATE") {
				t.Errorf("%s %s served a certificate", m, path)
			}
		}
	}
}
