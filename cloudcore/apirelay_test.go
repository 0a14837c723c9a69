package cloudcore

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/tether-edge/tether/protocol"
)

// fakeTokens issues "tok-<n>" tokens and records what was asked.
type fakeTokens struct {
	mu    sync.Mutex
	asked []string
}

func (f *fakeTokens) Token(_ context.Context, ns, sa, pod, uid string, life time.Duration) (string, time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, ns+"/"+sa+" for "+pod+"/"+uid)
	return "tok-" + string(rune('0'+len(f.asked))), time.Now().Add(life), nil
}

func (f *fakeTokens) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.asked)
}

func podLister(t *testing.T, pods ...*corev1.Pod) corelisters.PodLister {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, p := range pods {
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	return corelisters.NewPodLister(idx)
}

func relayPod(name, node, sa, uid string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "store", Name: name, UID: types.UID(uid)},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa}}
}

func TestAPIRelay(t *testing.T) {
	type seen struct{ method, path, query, auth, ctype, body string }
	var mu sync.Mutex
	var got []seen
	big := false
	apiserver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(b)})
		mu.Unlock()
		switch {
		case big:
			w.Write(make([]byte, protocol.MaxAPIResponseBody+1))
		case strings.Contains(r.URL.Path, "secrets"):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"kind":"Status","code":401}`))
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Header().Add("Warning", `299 - "deprecated"`)
			w.WriteHeader(http.StatusCreated)
			w.Write([]byte(`{"kind":"ConfigMap"}`))
		}
	}))
	defer apiserver.Close()
	toks := &fakeTokens{}
	a, err := newAPIRelay(&rest.Config{Host: apiserver.URL, BearerToken: "cloudcore-own-token"},
		podLister(t, relayPod("pos", "n1", "writer", "u1"), relayPod("other", "n2", "writer", "u2"), relayPod("dflt", "n1", "", "u3")),
		toks, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	req := func(pod, uid, sa, path string) *protocol.APIRequest {
		return &protocol.APIRequest{ID: 1, Namespace: "store", Pod: pod, PodUID: uid, ServiceAccount: sa, Method: "POST",
			Path: path, Query: "fieldManager=pos&dryRun=All", ContentType: "application/json", Body: []byte(`{"metadata":{"name":"x"}}`)}
	}
	cms := "/api/v1/namespaces/store/configmaps"
	ctx := t.Context()

	res := a.Relay(ctx, "n1", req("pos", "u1", "writer", cms))
	if res.Status != http.StatusCreated || string(res.Body) != `{"kind":"ConfigMap"}` || res.ContentType != "application/json" ||
		len(res.Warnings) != 1 {
		t.Fatalf("own pod: %+v", res)
	}
	mu.Lock()
	want := seen{"POST", cms, "fieldManager=pos&dryRun=All", "Bearer tok-1", "application/json", `{"metadata":{"name":"x"}}`}
	if len(got) != 1 || got[0] != want {
		t.Errorf("the API server saw %+v, want %+v (the pod's token, never cloudcore's)", got, want)
	}
	mu.Unlock()
	// The token is cached.
	a.Relay(ctx, "n1", req("pos", "u1", "writer", cms))
	if n := toks.count(); n != 1 {
		t.Errorf("%d tokens asked for two writes of one pod", n)
	}
	// The default service account.
	if res := a.Relay(ctx, "n1", req("dflt", "u3", "default", cms)); res.Status != http.StatusCreated {
		t.Errorf("pod with the default service account: %+v", res)
	}

	// Attackers: no token asked, nothing reaches the API server, 403.
	before, asked := len(got), toks.count()
	for name, r := range map[string]*protocol.APIRequest{
		"another node's pod":      req("other", "u2", "writer", cms),
		"a pod that is not there": req("ghost", "u9", "writer", cms),
		"a forged UID":            req("pos", "u-forged", "writer", cms),
		"another service account": req("pos", "u1", "admin", cms),
	} {
		res := a.Relay(ctx, "n1", r)
		if res.Status != http.StatusForbidden || !strings.Contains(string(res.Body), "own pods") {
			t.Errorf("%s: %d %s, want 403", name, res.Status, res.Body)
		}
	}
	if len(got) != before || toks.count() != asked {
		t.Error("a refused write reached the API server or asked a token")
	}

	// A 401 of the API server drops the cached token: the next write
	// asks a new one.
	asked = toks.count()
	if res := a.Relay(ctx, "n1", req("pos", "u1", "writer", "/api/v1/namespaces/store/secrets")); res.Status != http.StatusUnauthorized {
		t.Errorf("401 passed on: %+v", res)
	}
	a.Relay(ctx, "n1", req("pos", "u1", "writer", cms))
	if toks.count() != asked+1 {
		t.Error("no new token after a 401")
	}

	// An answer larger than a frame carries: 502.
	big = true
	if res := a.Relay(ctx, "n1", req("pos", "u1", "writer", cms)); res.Status != http.StatusBadGateway {
		t.Errorf("oversized answer: %d", res.Status)
	}
	big = false

	// The API server gone: 503.
	apiserver.Close()
	if res := a.Relay(ctx, "n1", req("pos", "u1", "writer", cms)); res.Status != http.StatusServiceUnavailable {
		t.Errorf("API server down: %+v", res)
	}
}
