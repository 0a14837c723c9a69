package enroll

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/cloudcore/status"
	"github.com/tether-edge/tether/pki"
)

// fuzzRig is a Service over nodes and tokens in memory, made anew for each
// input (the CA is made once), logging into log.
type fuzzRig struct {
	svc   *Service
	nodes *memNodes
	log   *bytes.Buffer
}

func newFuzzRig(tb testing.TB, ca *pki.CA) *fuzzRig {
	r := &fuzzRig{log: new(bytes.Buffer), nodes: &memNodes{nodes: map[string]*corev1.Node{
		"kubelet-1": {ObjectMeta: metav1.ObjectMeta{Name: "kubelet-1"}},
		"scoped": {ObjectMeta: metav1.ObjectMeta{Name: "scoped", Labels: map[string]string{status.EdgeRoleLabel: ""},
			Annotations: map[string]string{AnnotationIdentity: "0123456789abcdef"}}},
	}}}
	var err error
	r.svc, err = New(Config{CA: ca, Bundle: ca.CertPEM(), ClientValidity: time.Hour, Tokens: &memTokens{},
		Nodes: r.nodes, Log: slog.New(slog.NewTextHandler(r.log, nil))})
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// checkIssued checks a 200 answer: a certificate for node, with the identity
// its Node holds, for the key of the request's csr.
func (r *fuzzRig) checkIssued(t *testing.T, ca *pki.CA, body []byte, node, csr string) {
	t.Helper()
	var is Issued
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&is); err != nil {
		t.Fatalf("answer %q: %v", body, err)
	}
	certs, err := pki.ParseCertsPEM([]byte(is.Certificate))
	if err != nil {
		t.Fatalf("issued certificate: %v", err)
	}
	n, id, err := ca.VerifyNode(certs[0], time.Now())
	if err != nil || n != node {
		t.Fatalf("issued certificate names %q (%v), want %q", n, err, node)
	}
	got, _ := r.nodes.Get(t.Context(), node, true)
	if got == nil || got.Annotations[AnnotationIdentity] != id {
		t.Fatalf("issued identity %q is not the Node's", id)
	}
	pub, err := pki.ParseNodeCSR([]byte(csr))
	if err != nil || !pub.Equal(certs[0].PublicKey.(*ecdsa.PublicKey)) {
		t.Fatalf("issued certificate is not for the key of the request (%v)", err)
	}
}

// checkRefused checks a refusal: a JSON ErrorBody and a status of the list.
func checkRefused(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	switch w.Code {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusMethodNotAllowed,
		http.StatusServiceUnavailable:
	default:
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var eb ErrorBody
	if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error == "" {
		t.Fatalf("refusal %q: %v", w.Body, err)
	}
}

func fuzzCSR(f *testing.F, node string) string {
	key, err := pki.NewKey()
	if err != nil {
		f.Fatal(err)
	}
	c, err := pki.NodeCSR(key, node)
	if err != nil {
		f.Fatal(err)
	}
	return string(c)
}

// FuzzJoin sends hostile bodies to POST /v1/join. A certificate is issued
// only for a body within MaxRequestSize, with a token the Tokens accept, to
// the node named, for the key of the request; a refusal is a JSON error;
// neither the answer nor the log ever holds the token's secret.
func FuzzJoin(f *testing.F) {
	ca, err := pki.NewCA("enroll-fuzz")
	if err != nil {
		f.Fatal(err)
	}
	c := fuzzCSR(f, "edge-7")
	for _, req := range []any{
		JoinRequest{Token: "eeeeee.ffffffffffffffff", NodeName: "edge-7", CSR: c},
		JoinRequest{Token: "cccccc.dddddddddddddddd", NodeName: "scoped", CSR: c},
		JoinRequest{Token: "aaaaaa.bbbbbbbbbbbbbbbb", NodeName: "kubelet-1", CSR: c},
		JoinRequest{Token: "zzzzzz.yyyyyyyyyyyyyyyy", NodeName: "edge-7", CSR: c},
		JoinRequest{Token: "eeeeee.ffffffffffffffff", NodeName: "Edge_7", CSR: c},
		map[string]any{"token": "eeeeee.ffffffffffffffff", "nodeName": "edge-7", "csr": c, "extra": 1},
	} {
		b, _ := json.Marshal(req)
		f.Add(b)
	}
	f.Add([]byte(`{"token":"eeeeee.ffffffffffffffff","nodeName":"edge-7","csr":"` + strings.Repeat("A", MaxRequestSize) + `"}`))
	f.Add([]byte(`{"token":`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r := newFuzzRig(t, ca)
		req := httptest.NewRequest(http.MethodPost, PathJoin, bytes.NewReader(body))
		w := httptest.NewRecorder()
		r.svc.Handlers()[PathJoin].ServeHTTP(w, req)

		var jr JoinRequest
		json.Unmarshal(body, &jr)
		if w.Code == http.StatusOK {
			if len(body) > MaxRequestSize {
				t.Fatalf("accepted a body of %d bytes", len(body))
			}
			if jr.Token != "eeeeee.ffffffffffffffff" && jr.Token != "aaaaaa.bbbbbbbbbbbbbbbb" &&
				!(jr.Token == "cccccc.dddddddddddddddd" && jr.NodeName == "scoped") {
				t.Fatalf("joined %q with token %q", jr.NodeName, jr.Token)
			}
			r.checkIssued(t, ca, w.Body.Bytes(), jr.NodeName, jr.CSR)
		} else {
			checkRefused(t, w)
		}
		// The secret of the token, if the body has one where only the
		// token field holds it (a caller may well put it elsewhere too).
		_, secret, ok := strings.Cut(jr.Token, ".")
		if !ok || len(secret) < 8 || strings.Contains(jr.NodeName+jr.CSR, secret) {
			return
		}
		var fields map[string]json.RawMessage
		json.Unmarshal(body, &fields)
		for k := range fields {
			if strings.Contains(k, secret) {
				return
			}
		}
		if strings.Contains(w.Body.String(), secret) || strings.Contains(r.log.String(), secret) {
			t.Fatalf("the token's secret %q is in the answer %q or the log %q", secret, w.Body, r.log)
		}
	})
}

// FuzzRenew sends hostile bodies to POST /v1/renew with a valid client
// certificate: a certificate is issued only for a body within
// MaxRequestSize, to the same node with the same identity, for the key of
// the request.
func FuzzRenew(f *testing.F) {
	ca, err := pki.NewCA("enroll-fuzz")
	if err != nil {
		f.Fatal(err)
	}
	key, _ := pki.NewKey()
	certPEM, err := ca.IssueNode(&key.PublicKey, "scoped", "0123456789abcdef", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	peer, _ := pki.ParseCertsPEM(certPEM)
	c := fuzzCSR(f, "scoped")
	for _, req := range []any{RenewRequest{CSR: c}, RenewRequest{CSR: strings.Replace(c, "REQUEST", "REQUESX", 1)},
		map[string]any{"csr": c, "nodeName": "other"}} {
		b, _ := json.Marshal(req)
		f.Add(b)
	}
	f.Add([]byte(`{"csr":"` + strings.Repeat("A", MaxRequestSize) + `"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r := newFuzzRig(t, ca)
		req := httptest.NewRequest(http.MethodPost, PathRenew, bytes.NewReader(body))
		req.TLS = &tls.ConnectionState{PeerCertificates: peer}
		w := httptest.NewRecorder()
		r.svc.Handlers()[PathRenew].ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			checkRefused(t, w)
			return
		}
		if len(body) > MaxRequestSize {
			t.Fatalf("accepted a body of %d bytes", len(body))
		}
		var rr RenewRequest
		if err := json.NewDecoder(io.LimitReader(bytes.NewReader(body), MaxRequestSize)).Decode(&rr); err != nil {
			t.Fatalf("accepted a body that does not decode: %v", err)
		}
		r.checkIssued(t, ca, w.Body.Bytes(), "scoped", rr.CSR)
	})
}
