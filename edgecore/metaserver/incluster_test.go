package metaserver

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tether-edge/tether/edgecore/accessreview"
	"github.com/tether-edge/tether/edgecore/satoken"
	"github.com/tether-edge/tether/protocol"
)

// inCluster is a metaserver with its in-cluster listener on loopback (the
// test's pod network), the node's credentials and an access cache fed as a
// cluster where service account "reader" may read pods of its namespace
// and nothing else.
type inCluster struct {
	f      *fixture
	creds  *satoken.Credentials
	access *accessreview.Cache
	ca     []byte
}

func newInCluster(t *testing.T) *inCluster {
	f := newFixture(t, Config{})
	reader := testPod("store", "pos", nil, corev1.PodRunning)
	reader.Spec.ServiceAccountName = "reader"
	f.put(reader, testPod("store", "web", nil, corev1.PodRunning), testPod("other", "x", nil, corev1.PodRunning),
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "store", Name: "db", UID: "s1"}})
	creds, err := satoken.Load(filepath.Join(t.TempDir(), "credentials"), node, 0)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := creds.ServingCert(net.ParseIP("127.0.0.1"), "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	access, err := accessreview.New(accessreview.Config{StateFile: filepath.Join(t.TempDir(), "answers.json"),
		Resources: ServedResources(), AskTimeout: time.Millisecond}, f.db)
	if err != nil {
		t.Fatal(err)
	}
	access.Session(true)
	for r := access.Next(); r != nil; r = access.Next() {
		res := &protocol.AccessReviewResult{ID: r.ID}
		for _, c := range r.Checks {
			res.Allowed = append(res.Allowed, r.ServiceAccount == "reader" && c.Resource == "pods" && c.Namespace == r.Namespace)
		}
		access.Answered(res)
	}
	f.s = f.newServer(Config{InCluster: &InClusterConfig{Addr: "127.0.0.1:0", Certificate: cert,
		Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Tokens: creds.Issuer, Authorizer: access}})
	return &inCluster{f: f, creds: creds, access: access, ca: creds.CA.CertPEM()}
}

func (ic *inCluster) start(t *testing.T) string {
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	ic.f.start(ctx)
	for ic.f.s.InClusterAddr() == "" {
		time.Sleep(5 * time.Millisecond)
	}
	return ic.f.s.InClusterAddr()
}

func (ic *inCluster) client(t *testing.T, addr, token string) kubernetes.Interface {
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "https://" + addr, BearerToken: token,
		TLSClientConfig: rest.TLSClientConfig{CAData: ic.ca, ServerName: "kubernetes.default.svc"}})
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

var readerPod = satoken.Pod{Namespace: "store", Name: "pos", UID: "uid-store-pos", ServiceAccount: "reader"}

func TestInClusterReadsAsTheCluster(t *testing.T) {
	ic := newInCluster(t)
	addr := ic.start(t)
	tok, _, err := ic.creds.Issuer.Mint(readerPod, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cs := ic.client(t, addr, tok)
	ctx := t.Context()
	pods, err := cs.CoreV1().Pods("store").List(ctx, metav1.ListOptions{})
	if err != nil || names(pods) != "store/pos store/web" {
		t.Fatalf("list pods of its namespace: %v %v", names(pods), err)
	}
	if _, err := cs.CoreV1().Pods("store").Get(ctx, "web", metav1.GetOptions{}); err != nil {
		t.Errorf("get: %v", err)
	}
	w, err := cs.CoreV1().Pods("store").Watch(ctx, metav1.ListOptions{ResourceVersion: pods.ResourceVersion})
	if err != nil {
		t.Errorf("watch: %v", err)
	} else {
		w.Stop()
	}
	// What its service account may not read: 403.
	for name, call := range map[string]func() error{
		"secrets":          func() error { _, err := cs.CoreV1().Secrets("store").List(ctx, metav1.ListOptions{}); return err },
		"a secret":         func() error { _, err := cs.CoreV1().Secrets("store").Get(ctx, "db", metav1.GetOptions{}); return err },
		"other namespace":  func() error { _, err := cs.CoreV1().Pods("other").List(ctx, metav1.ListOptions{}); return err },
		"all namespaces":   func() error { _, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); return err },
		"nodes":            func() error { _, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); return err },
		"configmaps watch": func() error { _, err := cs.CoreV1().ConfigMaps("store").Watch(ctx, metav1.ListOptions{}); return err },
	} {
		if err := call(); !apierrors.IsForbidden(err) {
			t.Errorf("%s: %v, want 403", name, err)
		}
	}
	// Metrics are not for pods.
	if err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").Do(ctx).Error(); !apierrors.IsForbidden(err) && !apierrors.IsNotFound(err) {
		t.Errorf("/metrics: %v", err)
	}

	// Writes: 405 while the cloud is reachable, 503 while it is not.
	newPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "new"}}
	if _, err := cs.CoreV1().Pods("store").Create(ctx, newPod, metav1.CreateOptions{}); !apierrors.IsMethodNotSupported(err) {
		t.Errorf("create online: %v, want 405", err)
	}
	ic.access.Session(false)
	_, err = cs.CoreV1().Pods("store").Create(ctx, newPod, metav1.CreateOptions{})
	if !apierrors.IsServiceUnavailable(err) || !strings.Contains(err.Error(), "the cloud is unreachable") {
		t.Errorf("create offline: %v, want 503 the cloud is unreachable", err)
	}
	// Reads go on offline.
	if _, err := cs.CoreV1().Pods("store").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("list offline: %v", err)
	}
}

// The attacker's tests: tokens that must not open the in-cluster API.
func TestInClusterRefusesTokens(t *testing.T) {
	ic := newInCluster(t)
	addr := ic.start(t)
	now := time.Now()
	other, err := satoken.Load(filepath.Join(t.TempDir(), "other"), "edge-2", 0)
	if err != nil {
		t.Fatal(err)
	}
	otherTok, _, _ := other.Issuer.Mint(readerPod, now)
	expired, _, _ := ic.creds.Issuer.Mint(readerPod, now.Add(-2*time.Hour))
	gone, _, _ := ic.creds.Issuer.Mint(satoken.Pod{Namespace: "store", Name: "deleted", UID: "uid-gone", ServiceAccount: "reader"}, now)
	// A pod of the node claiming another service account.
	wrongSA, _, _ := ic.creds.Issuer.Mint(satoken.Pod{Namespace: "store", Name: "web", UID: "uid-store-web", ServiceAccount: "reader"}, now)
	good, _, _ := ic.creds.Issuer.Mint(readerPod, now)
	parts := strings.Split(good, ".")
	forged := parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2]))
	for name, tok := range map[string]string{"other node": otherTok, "expired": expired, "deleted pod": gone,
		"other service account": wrongSA, "forged signature": forged, "none": ""} {
		_, err := ic.client(t, addr, tok).CoreV1().Pods("store").List(t.Context(), metav1.ListOptions{})
		if !apierrors.IsUnauthorized(err) {
			t.Errorf("%s: %v, want 401", name, err)
		}
	}
	// The loopback clients' tokens are not taken here.
	if _, err := ic.client(t, addr, nodeToken).CoreV1().Pods("store").List(t.Context(), metav1.ListOptions{}); !apierrors.IsUnauthorized(err) {
		t.Errorf("node client token: %v, want 401", err)
	}
	// Oversized headers: 431 (MaxHeaderBytes).
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/api/v1/namespaces/store/pods", nil)
	req.Header.Set("Authorization", "Bearer "+strings.Repeat("a", 2*MaxHeaderBytes))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("oversized header: %d, want 431", resp.StatusCode)
	}
	// A token over satoken.MaxTokenSize within the header limit: 401.
	req.Header.Set("Authorization", "Bearer "+strings.Repeat("a", satoken.MaxTokenSize+1))
	if resp, err = hc.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("oversized token: %d, want 401", resp.StatusCode)
	}
	// From outside the pod network: 403, whatever the token.
	r := httptest.NewRequest(http.MethodGet, "/api/v1/namespaces/store/pods", nil)
	r.RemoteAddr = "192.0.2.7:4000"
	r.Header.Set("Authorization", "Bearer "+good)
	rec := httptest.NewRecorder()
	ic.f.s.handler(ic.f.s.podGuard).ServeHTTP(rec, r)
	if rec.Code != http.StatusForbidden {
		t.Errorf("from outside the pod network: %d, want 403", rec.Code)
	}
}

// A pod flooding the in-cluster API gets 429 past its burst; another pod is
// served meanwhile.
func TestInClusterFlood(t *testing.T) {
	ic := newInCluster(t)
	ic.f.s.cfg.InCluster.Rate, ic.f.s.cfg.InCluster.Burst = 1, 20
	now := time.Now()
	flooder, _, _ := ic.creds.Issuer.Mint(readerPod, now)
	other, _, _ := ic.creds.Issuer.Mint(satoken.Pod{Namespace: "store", Name: "web", UID: "uid-store-web", ServiceAccount: "default"}, now)
	h := ic.f.s.handler(ic.f.s.podGuard)
	do := func(tok string) int {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/namespaces/store/pods", nil)
		r.RemoteAddr = "127.0.0.1:4000"
		r.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	codes := map[int]int{}
	for range 200 {
		codes[do(flooder)]++
	}
	if codes[http.StatusOK] < 20 || codes[http.StatusOK] > 25 || codes[http.StatusTooManyRequests] < 175 {
		t.Errorf("200 requests at rate 1/s burst 20: %v", codes)
	}
	// The other pod is not held up by the flooder (its service account may
	// not list pods: 403, not 429).
	if c := do(other); c != http.StatusForbidden {
		t.Errorf("another pod during the flood: %d", c)
	}
	if ic.f.s.Throttled() < 175 {
		t.Errorf("throttled %d", ic.f.s.Throttled())
	}
}
