package accessreview

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/edgecore/satoken"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

var served = []Resource{{Resource: "pods", Namespaced: true}, {Resource: "secrets", Namespaced: true},
	{Resource: "nodes"}}

func podStore(t *testing.T, pods ...*corev1.Pod) *store.DB {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	err = db.Update(func(tx *store.Tx) error {
		for _, p := range pods {
			b, err := protocol.EncodePod(p)
			if err != nil {
				return err
			}
			if err := tx.PutObject(&protocol.Object{Kind: protocol.KindPod, UID: string(p.UID), Namespace: p.Namespace,
				Name: p.Name, ResourceVersion: "1", Data: b}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func pod(ns, name, uid, sa string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + uid)},
		Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: "edge-1"}}
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// rbac answers as a cluster where sa "reader" may get/list/watch pods in
// its namespace, and nothing else.
func rbac(r *protocol.AccessReview) *protocol.AccessReviewResult {
	res := &protocol.AccessReviewResult{ID: r.ID}
	for _, c := range r.Checks {
		res.Allowed = append(res.Allowed, r.ServiceAccount == "reader" && c.Resource == "pods" && c.Namespace == r.Namespace)
	}
	return res
}

func TestAskAheadServeOffline(t *testing.T) {
	db := podStore(t, pod("store", "pos", "1", "reader"), pod("store", "nosy", "2", "default"))
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	state := filepath.Join(t.TempDir(), "answers.json")
	c, err := New(Config{StateFile: state, Resources: served, Now: clk.now, AskTimeout: time.Millisecond}, db)
	if err != nil {
		t.Fatal(err)
	}
	reader := satoken.Pod{Namespace: "store", Name: "pos", UID: "uid-1", ServiceAccount: "reader"}
	nosy := satoken.Pod{Namespace: "store", Name: "nosy", UID: "uid-2", ServiceAccount: "default"}
	listPods := protocol.AccessCheck{Verb: "list", Resource: "pods", Namespace: "store"}
	listSecrets := protocol.AccessCheck{Verb: "list", Resource: "secrets", Namespace: "store"}

	// Before any answer, offline: refused.
	if d := c.Authorize(t.Context(), reader, listPods); d.Allowed {
		t.Fatal("allowed before any answer")
	}
	// Online: both service accounts are asked ahead, one review each.
	c.Session(true)
	asked := map[string]int{}
	for r := c.Next(); r != nil; r = c.Next() {
		if len(r.Checks) != len(Checks(served, "store")) {
			t.Errorf("review of %d checks", len(r.Checks))
		}
		asked[r.ServiceAccount]++
		c.Answered(rbac(r))
	}
	if asked["reader"] != 1 || asked["default"] != 1 {
		t.Fatalf("asked %v", asked)
	}
	c.Session(false)

	for _, tc := range []struct {
		pod   satoken.Pod
		check protocol.AccessCheck
		want  bool
	}{
		{reader, listPods, true},
		{reader, protocol.AccessCheck{Verb: "get", Resource: "pods", Namespace: "store", Name: "any"}, true},
		{reader, protocol.AccessCheck{Verb: "watch", Resource: "pods", Namespace: "store"}, true},
		{reader, listSecrets, false},
		{reader, protocol.AccessCheck{Verb: "list", Resource: "pods"}, false},
		{reader, protocol.AccessCheck{Verb: "list", Resource: "pods", Namespace: "kube-system"}, false},
		{reader, protocol.AccessCheck{Verb: "get", Resource: "secrets", Namespace: "store", Name: "db"}, false},
		{nosy, listPods, false},
	} {
		if d := c.Authorize(t.Context(), tc.pod, tc.check); d.Allowed != tc.want {
			t.Errorf("%s %+v: %+v, want %v", tc.pod.ServiceAccount, tc.check, d, tc.want)
		}
	}

	// A restart during the outage keeps the answers.
	c2, err := New(Config{StateFile: state, Resources: served, Now: clk.now, AskTimeout: time.Millisecond}, db)
	if err != nil {
		t.Fatal(err)
	}
	if d := c2.Authorize(t.Context(), reader, listPods); !d.Allowed {
		t.Errorf("after a restart: %+v", d)
	}
	// Past MaxAge the answers are not used.
	clk.add(72*time.Hour + time.Second)
	if d := c2.Authorize(t.Context(), reader, listPods); d.Allowed {
		t.Error("allowed past MaxAge")
	} else {
		t.Logf("past MaxAge: %s", d.Reason)
	}
}

// A question about one named object is asked on demand while online: the
// request waits for the answer.
func TestAskOnDemand(t *testing.T) {
	db := podStore(t, pod("store", "pos", "1", "reader"))
	c, err := New(Config{StateFile: filepath.Join(t.TempDir(), "a.json"), Resources: served, AskTimeout: 10 * time.Second}, db)
	if err != nil {
		t.Fatal(err)
	}
	c.Session(true)
	for r := c.Next(); r != nil; r = c.Next() {
		c.Answered(rbac(r))
	}
	reader := satoken.Pod{Namespace: "store", Name: "pos", UID: "uid-1", ServiceAccount: "reader"}
	one := protocol.AccessCheck{Verb: "get", Resource: "secrets", Namespace: "store", Name: "db"}
	done := make(chan Decision)
	go func() { done <- c.Authorize(t.Context(), reader, one) }()
	var r *protocol.AccessReview
	for r == nil {
		<-c.Wanted()
		r = c.Next()
	}
	if len(r.Checks) != 1 || r.Checks[0] != one || r.PodUID != "uid-1" {
		t.Fatalf("asked %+v", r)
	}
	c.Answered(&protocol.AccessReviewResult{ID: r.ID, Allowed: []bool{true}})
	if d := <-done; !d.Allowed {
		t.Errorf("%+v", d)
	}
	// A hub's refusal (say, the pod is not bound to the node) refuses.
	two := protocol.AccessCheck{Verb: "get", Resource: "secrets", Namespace: "store", Name: "other"}
	go func() { done <- c.Authorize(t.Context(), reader, two) }()
	r = nil
	for r == nil {
		<-c.Wanted()
		r = c.Next()
	}
	c.Answered(&protocol.AccessReviewResult{ID: r.ID, Error: "pod store/pos is not bound to node edge-1"})
	if d := <-done; d.Allowed {
		t.Errorf("%+v", d)
	}
	// A stale answer (wrong ID) is ignored.
	c.Answered(&protocol.AccessReviewResult{ID: 999, Allowed: []bool{true}})
}
