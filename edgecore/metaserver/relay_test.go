package metaserver

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/edgecore/apirelay"
	"github.com/tether-edge/tether/protocol"
)

// fakeHub answers the relay's requests as an API server that creates
// whatever it is sent (201, the body back), and records them; with hold
// set it answers nothing.
type fakeHub struct {
	relay *apirelay.Relay
	mu    sync.Mutex
	seen  []protocol.APIRequest
	hold  bool
}

func (h *fakeHub) run(t *testing.T) {
	go func() {
		for {
			select {
			case <-h.relay.Wanted():
			case <-t.Context().Done():
				return
			}
			for _, r := range h.relay.Next() {
				h.mu.Lock()
				h.seen = append(h.seen, *r)
				hold := h.hold
				h.mu.Unlock()
				if !hold {
					h.relay.Answered(&protocol.APIResponse{ID: r.ID, Status: http.StatusCreated, ContentType: "application/json",
						Warnings: []string{`299 - "relayed"`}, Body: r.Body})
				}
			}
		}
	}()
}

func (h *fakeHub) last() protocol.APIRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seen[len(h.seen)-1]
}

func TestInClusterRelaysWrites(t *testing.T) {
	ic := newInCluster(t)
	relay, err := apirelay.New(apirelay.Config{MaxInFlight: 2})
	if err != nil {
		t.Fatal(err)
	}
	ic.f.s.cfg.InCluster.Writes = relay
	hub := &fakeHub{relay: relay}
	hub.run(t)
	addr := ic.start(t)
	tok, _, err := ic.creds.Issuer.Mint(readerPod, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cs := ic.client(t, addr, tok)
	ctx := t.Context()

	// No session: 503 at once.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c1"}, Data: map[string]string{"k": "v"}}
	if _, err := cs.CoreV1().ConfigMaps("store").Create(ctx, cm, metav1.CreateOptions{}); !apierrors.IsServiceUnavailable(err) ||
		!strings.Contains(err.Error(), "the cloud is unreachable") {
		t.Errorf("create offline: %v, want 503 the cloud is unreachable", err)
	}
	// A hub of version 6: 503 naming it.
	relay.Session(true, protocol.APIRelaySince-1)
	if _, err := cs.CoreV1().ConfigMaps("store").Create(ctx, cm, metav1.CreateOptions{}); !apierrors.IsServiceUnavailable(err) ||
		!strings.Contains(err.Error(), "protocol version 6") {
		t.Errorf("create through a version 6 hub: %v, want 503 naming the version", err)
	}

	relay.Session(true, protocol.Version)
	got, err := cs.CoreV1().ConfigMaps("store").Create(ctx, cm, metav1.CreateOptions{FieldManager: "pos"})
	if err != nil || got.Name != "c1" || got.Data["k"] != "v" {
		t.Fatalf("create online: %+v %v", got, err)
	}
	r := hub.last()
	if r.Namespace != "store" || r.Pod != "pos" || r.PodUID != readerPod.UID || r.ServiceAccount != "reader" ||
		r.Method != "POST" || r.Path != "/api/v1/namespaces/store/configmaps" || r.Query != "fieldManager=pos" ||
		!strings.HasPrefix(r.ContentType, "application/json") {
		t.Errorf("relayed %+v", r)
	}
	// Update, patch, delete, a status and a resource the metaserver does
	// not serve (a Lease).
	if _, err := cs.CoreV1().ConfigMaps("store").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Errorf("update: %v", err)
	}
	if _, err := cs.CoreV1().Pods("store").Patch(ctx, "pos", "application/merge-patch+json", []byte(`{"status":{}}`),
		metav1.PatchOptions{}, "status"); err != nil {
		t.Errorf("patch status: %v", err)
	}
	if hub.last().Method != "PATCH" || hub.last().Path != "/api/v1/namespaces/store/pods/pos/status" {
		t.Errorf("patch relayed as %+v", hub.last())
	}
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "leader"}}
	if _, err := cs.CoordinationV1().Leases("store").Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		t.Errorf("create a lease: %v", err)
	}
	if hub.last().Path != "/apis/coordination.k8s.io/v1/namespaces/store/leases" {
		t.Errorf("lease relayed as %+v", hub.last())
	}
	relayed := len(hub.seen)

	// Discovery says so to the pod: the writes as well as the reads.
	rl, err := cs.Discovery().ServerResourcesForGroupVersion("v1")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rl.APIResources {
		want := "create,delete,get,list,patch,update,watch"
		if strings.HasSuffix(r.Name, "/status") {
			want = "get,patch,update"
		}
		if got := strings.Join(r.Verbs, ","); got != want {
			t.Errorf("discovery of %s for a pod whose writes are relayed: %s, want %s", r.Name, got, want)
		}
	}

	// Attacker's cases: nothing reaches the hub.
	h := ic.f.s.handler(ic.f.s.podGuard)
	do := func(method, path, tok string, body []byte) int {
		r := httptest.NewRequest(method, path, bytes.NewReader(body))
		r.RemoteAddr = "127.0.0.1:4000"
		r.Header.Set("Authorization", "Bearer "+tok)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec.Code
	}
	for name, c := range map[string]struct {
		method, path, tok string
		body              []byte
		want              int
	}{
		"exec":   {"POST", "/api/v1/namespaces/store/pods/pos/exec", tok, nil, http.StatusMethodNotAllowed},
		"attach": {"POST", "/api/v1/namespaces/store/pods/pos/attach", tok, nil, http.StatusMethodNotAllowed},
		"proxy":  {"PUT", "/api/v1/namespaces/store/services/s/proxy", tok, nil, http.StatusMethodNotAllowed},
		"watch":  {"POST", "/api/v1/watch/namespaces/store/configmaps", tok, nil, http.StatusMethodNotAllowed},
		// Cleaned by a redirect and served locally: not relayed.
		"dot segments":   {"PUT", "/api/v1/namespaces/store/configmaps/../../../nodes/n", tok, nil, http.StatusTemporaryRedirect},
		"not the API":    {"POST", "/healthz", tok, nil, http.StatusOK},
		"oversized body": {"POST", "/api/v1/namespaces/store/configmaps", tok, make([]byte, protocol.MaxAPIBody+1), http.StatusRequestEntityTooLarge},
		"no token":       {"POST", "/api/v1/namespaces/store/configmaps", "", []byte("{}"), http.StatusUnauthorized},
		"forged token":   {"POST", "/api/v1/namespaces/store/configmaps", tok[:len(tok)-4] + "AAAA", []byte("{}"), http.StatusUnauthorized},
	} {
		if got := do(c.method, c.path, c.tok, c.body); got != c.want {
			t.Errorf("%s: %d, want %d", name, got, c.want)
		}
	}
	if len(hub.seen) != relayed {
		t.Errorf("a refused write reached the hub: %+v", hub.last())
	}

	// Flood: with two writes waiting for the cloud, a third gets 429.
	hub.mu.Lock()
	hub.hold = true
	hub.mu.Unlock()
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			do("POST", "/api/v1/namespaces/store/configmaps", tok, []byte("{}"))
		}()
	}
	for relay.InFlight() < 2 {
		runtime.Gosched()
	}
	if got := do("POST", "/api/v1/namespaces/store/configmaps", tok, []byte("{}")); got != http.StatusTooManyRequests {
		t.Errorf("third write in flight: %d, want 429", got)
	}
	// The cloud goes: the writes waiting get 503.
	relay.Session(false, 0)
	wg.Wait()
	if relay.InFlight() != 0 {
		t.Error("writes still waiting after the session ended")
	}
	if ic.f.s.WritesRelayed() < 4 || ic.f.s.WritesRefused() < 4 {
		t.Errorf("relayed %d refused %d", ic.f.s.WritesRelayed(), ic.f.s.WritesRefused())
	}
}
