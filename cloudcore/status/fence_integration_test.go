//go:build integration

package status

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tether-edge/tether/controlplane"
	"github.com/tether-edge/tether/protocol"
)

// frozenLister is a clientLister whose pods and nodes can be frozen at a
// version: the cache of a replica that lags behind the API server.
type frozenLister struct {
	clientLister
	mu     sync.Mutex
	frozen map[string]any // "pod/<ns>/<name>" or "node/<name>"; guarded by mu
}

func (l *frozenLister) freeze(key string, o any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if o == nil {
		delete(l.frozen, key)
		return
	}
	l.frozen[key] = o
}

func (l *frozenLister) Pod(namespace, name string) (*corev1.Pod, error) {
	l.mu.Lock()
	p, ok := l.frozen["pod/"+namespace+"/"+name].(*corev1.Pod)
	l.mu.Unlock()
	if ok {
		return p.DeepCopy(), nil
	}
	return l.clientLister.Pod(namespace, name)
}

func (l *frozenLister) Node(name string) (*corev1.Node, error) {
	l.mu.Lock()
	n, ok := l.frozen["node/"+name].(*corev1.Node)
	l.mu.Unlock()
	if ok {
		return n.DeepCopy(), nil
	}
	return l.clientLister.Node(name)
}

// requestCounter counts the API requests of a client by verb and resource
// ("PATCH pods/status", "GET pods").
type requestCounter struct {
	mu sync.Mutex
	n  map[string]int // guarded by mu
}

func (c *requestCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
		// /api/v1/namespaces/<ns>/pods/<name>[/status], /api/v1/nodes/<name>[/status]
		res := ""
		for i, p := range parts {
			if (p == "pods" || p == "nodes") && i+1 < len(parts) {
				res = p
				if i+2 < len(parts) {
					res += "/" + parts[i+2]
				}
			}
		}
		if res != "" {
			c.mu.Lock()
			c.n[r.Method+" "+res]++
			c.mu.Unlock()
		}
		return rt.RoundTrip(r)
	})
}

func (c *requestCounter) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = map[string]int{}
	return n
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// fenceRig is two replicas' status writers, A and B, against one real API
// server, the Nodes of edge-1 and edge-2 registered, and the namespace of
// the pods.
type fenceRig struct {
	client  kubernetes.Interface
	cfg     *rest.Config
	a, b    *Writer
	la, lb  *frozenLister
	counter *requestCounter
}

func newFenceRig(t *testing.T) *fenceRig {
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	cp := startControlPlane(t, controlplane.Options{Logger: log})
	r := &fenceRig{cfg: cp.RESTConfig(), counter: &requestCounter{n: map[string]int{}}}
	r.cfg.WrapTransport = r.counter.wrap
	var err error
	if r.client, err = kubernetes.NewForConfig(r.cfg); err != nil {
		t.Fatal(err)
	}
	newW := func(name string) (*Writer, *frozenLister) {
		devs := newFakeDevices()
		l := &frozenLister{clientLister: clientLister{ctx: ctx, client: r.client, fakeDevices: devs}, frozen: map[string]any{}}
		w, err := New(r.client, devs, l, Config{}, log.With(slog.String("replica", name)))
		if err != nil {
			t.Fatal(err)
		}
		start(t, w)
		return w, l
	}
	r.a, r.la = newW("A")
	r.b, r.lb = newW("B")
	for _, n := range []string{edge1, edge2} {
		if _, err := RegisterNode(ctx, r.client, n, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: podNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The service account admission wants the pods' account; no
	// controller manager makes it here.
	if _, err := r.client.CoreV1().ServiceAccounts(podNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return r
}

// newPod creates a pod bound to node.
func (r *fenceRig) newPod(t *testing.T, name, node string) *corev1.Pod {
	t.Helper()
	no := false
	p, err := r.client.CoreV1().Pods(podNS).Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{NodeName: node, AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "c", Image: "nginx"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (r *fenceRig) pod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	p, err := r.client.CoreV1().Pods(podNS).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// send hands w a pod status report of p from node with order o and waits
// for its result.
func (r *fenceRig) send(t *testing.T, w *Writer, node string, o protocol.StatusOrder, p *corev1.Pod, s corev1.PodStatus) error {
	t.Helper()
	return r.sendPrev(t, w, node, o, 0, p, s)
}

// sendPrev is send for a report that names prev as the previous one of the
// pod (PodStatus.Prev).
func (r *fenceRig) sendPrev(t *testing.T, w *Writer, node string, o protocol.StatusOrder, prev uint64, p *corev1.Pod, s corev1.PodStatus) error {
	t.Helper()
	res := newResult(t)
	m := podStatusMsg(t, p, s)
	m.Prev = prev
	w.PodStatus(node, o, m, res.done)
	return res.wait()
}

// restarted is a running status whose container restarted n times.
func restarted(n int32) corev1.PodStatus {
	s := running(fmt.Sprintf("restarts %d", n))
	s.PodIPs = []corev1.PodIP{{IP: s.PodIP}} // as the API server defaults it, and as the edge reports it
	s.ContainerStatuses = []corev1.ContainerStatus{{Name: "c", Image: "nginx", ImageID: "sha256:1", Ready: true,
		RestartCount: n, ContainerID: fmt.Sprintf("containerd://%d", n),
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(time.Unix(1700000000+int64(n), 0))}}}}
	return s
}

// wantPod fails unless the pod's container reports restarts and its fence
// annotation is fence.
func (r *fenceRig) wantPod(t *testing.T, name string, restarts int32, fence string) *corev1.Pod {
	t.Helper()
	p := r.pod(t, name)
	got := int32(-1)
	if len(p.Status.ContainerStatuses) == 1 {
		got = p.Status.ContainerStatuses[0].RestartCount
	}
	if got != restarts || p.Annotations[FenceAnnotation] != fence {
		t.Fatalf("pod %s: restarts %d, %s=%q; want %d, %q", name, got, FenceAnnotation, p.Annotations[FenceAnnotation], restarts, fence)
	}
	return p
}

// TestFenceAgainstAPIServer: two replicas write one node's reports to a
// real API server; a late report of the replica the edge left (A) never
// takes a status back, whether its cache shows the newer write or lags
// behind it.
func TestFenceAgainstAPIServer(t *testing.T) {
	r := newFenceRig(t)
	ctx := t.Context()
	const epoch = 1_700_000_000_000_000_000
	at := func(seq uint64) protocol.StatusOrder { return protocol.StatusOrder{Epoch: epoch, Seq: seq} }

	t.Run("late retry of the replica left is dropped", func(t *testing.T) {
		// A wrote seq 4 (S0); its write of seq 5 (S1) failed and waits for
		// a retry; the edge, gone to B, reported S2 with seq 6.
		p := r.newPod(t, "web", edge1)
		if err := r.send(t, r.a, edge1, at(4), p, restarted(0)); err != nil {
			t.Fatal(err)
		}
		// A's cache stays here: it has not seen B's write.
		lagging := r.wantPod(t, "web", 0, fmt.Sprintf("%d:4", uint64(epoch)))
		r.la.freeze("pod/"+podNS+"/web", lagging)
		defer r.la.freeze("pod/"+podNS+"/web", nil)
		if err := r.send(t, r.b, edge1, at(6), p, restarted(2)); err != nil {
			t.Fatal(err)
		}
		before := r.a.Stats()
		// A's retry of S1: its cache says seq 4 is recorded, the patch's
		// resourceVersion precondition fails, A reads the pod again and
		// drops its report.
		if err := r.send(t, r.a, edge1, at(5), p, restarted(1)); err != nil {
			t.Fatalf("stale report: %v, want it acknowledged (dropped as stale)", err)
		}
		after := r.a.Stats()
		if after.Stale-before.Stale != 1 || after.FenceConflicts-before.FenceConflicts != 1 || after.PodStatuses != before.PodStatuses {
			t.Fatalf("A's stats %+v after %+v: want one stale report, one conflict and no write", after, before)
		}
		r.wantPod(t, "web", 2, fmt.Sprintf("%d:6", uint64(epoch)))
		// With its cache caught up, A drops it without a request.
		r.la.freeze("pod/"+podNS+"/web", nil)
		r.counter.take()
		if err := r.send(t, r.a, edge1, at(4), p, restarted(0)); err != nil {
			t.Fatal(err)
		}
		if n := r.counter.take(); n["PATCH pods/status"] != 0 {
			t.Fatalf("requests %v: want no patch for a report the cache shows stale", n)
		}
		if s := r.a.Stats(); s.Stale-after.Stale != 1 {
			t.Fatalf("stats %+v: want one more stale", s)
		}
		// A resend of the report written last needs nothing either.
		u := r.b.Stats().Unchanged
		if err := r.send(t, r.b, edge1, at(6), p, restarted(2)); err != nil {
			t.Fatal(err)
		}
		if s := r.b.Stats(); s.Unchanged != u+1 {
			t.Fatalf("stats %+v: the resend of seq 6 should need no write", s)
		}
	})

	t.Run("conflict with an unrelated write is retried and lands", func(t *testing.T) {
		p := r.newPod(t, "labelled", edge1)
		if err := r.send(t, r.b, edge1, at(10), p, restarted(1)); err != nil {
			t.Fatal(err)
		}
		r.lb.freeze("pod/"+podNS+"/labelled", r.pod(t, "labelled"))
		defer r.lb.freeze("pod/"+podNS+"/labelled", nil)
		// A user labels the pod and another controller adds its condition:
		// the resourceVersion moves.
		if _, err := r.client.CoreV1().Pods(podNS).Patch(ctx, "labelled", types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"team":"shop"}}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.client.CoreV1().Pods(podNS).Patch(ctx, "labelled", types.StrategicMergePatchType,
			[]byte(`{"status":{"conditions":[{"type":"example.com/gate","status":"True"}]}}`), metav1.PatchOptions{}, "status"); err != nil {
			t.Fatal(err)
		}
		before := r.b.Stats()
		if err := r.send(t, r.b, edge1, at(11), p, restarted(2)); err != nil {
			t.Fatal(err)
		}
		s := r.b.Stats()
		if s.FenceConflicts-before.FenceConflicts != 1 || s.PodStatuses-before.PodStatuses != 1 || s.Stale != before.Stale {
			t.Fatalf("stats %+v after %+v: want one conflict, then the write", s, before)
		}
		got := r.wantPod(t, "labelled", 2, fmt.Sprintf("%d:11", uint64(epoch)))
		gate := false
		for _, c := range got.Status.Conditions {
			gate = gate || c.Type == "example.com/gate"
		}
		if got.Labels["team"] != "shop" || !gate {
			t.Fatalf("pod %v %v: the label and the other writer's condition must stay", got.Labels, got.Status.Conditions)
		}
	})

	t.Run("epochs", func(t *testing.T) {
		p := r.newPod(t, "reset", edge1)
		if err := r.send(t, r.a, edge1, at(7), p, restarted(3)); err != nil {
			t.Fatal(err)
		}
		// The old store's report with a large seq, late: stale against the
		// new store's seq 1 once that is written, whatever the seqs.
		if err := r.send(t, r.b, edge1, protocol.StatusOrder{Epoch: epoch + 1, Seq: 1}, p, restarted(4)); err != nil {
			t.Fatal(err)
		}
		stale := r.a.Stats().Stale
		if err := r.send(t, r.a, edge1, at(1_000_000), p, restarted(3)); err != nil {
			t.Fatal(err)
		}
		if r.a.Stats().Stale != stale+1 {
			t.Fatalf("stats %+v: the old epoch's report should be stale", r.a.Stats())
		}
		r.wantPod(t, "reset", 4, fmt.Sprintf("%d:1", uint64(epoch+1)))
		// An older epoch than recorded, any seq: stale too.
		if err := r.send(t, r.b, edge1, protocol.StatusOrder{Epoch: epoch - 1, Seq: math.MaxUint64}, p, restarted(0)); err != nil {
			t.Fatal(err)
		}
		r.wantPod(t, "reset", 4, fmt.Sprintf("%d:1", uint64(epoch+1)))
	})

	t.Run("same status, newer order: the fence moves", func(t *testing.T) {
		// S1 at 20; S2 at 21 is with A, late; the edge reports S1 again at
		// 22 (the outbox replaced S2). B must record 22, or A's S2 would land.
		p := r.newPod(t, "flap", edge1)
		if err := r.send(t, r.b, edge1, at(20), p, restarted(1)); err != nil {
			t.Fatal(err)
		}
		only := r.b.Stats().FenceOnly
		if err := r.send(t, r.b, edge1, at(22), p, restarted(1)); err != nil {
			t.Fatal(err)
		}
		if r.b.Stats().FenceOnly != only+1 {
			t.Fatalf("stats %+v: want a write of the fence alone", r.b.Stats())
		}
		if err := r.send(t, r.a, edge1, at(21), p, restarted(2)); err != nil {
			t.Fatal(err)
		}
		r.wantPod(t, "flap", 1, fmt.Sprintf("%d:22", uint64(epoch)))
	})

	t.Run("a repeat of the recorded report needs no write", func(t *testing.T) {
		// After a reconnect the edge reports every pod again: the same
		// status, a new Seq, the recorded one as its previous.
		p := r.newPod(t, "repeat", edge1)
		if err := r.send(t, r.b, edge1, at(30), p, restarted(5)); err != nil {
			t.Fatal(err)
		}
		before := r.b.Stats()
		r.counter.take()
		if err := r.sendPrev(t, r.b, edge1, at(31), 30, p, restarted(5)); err != nil {
			t.Fatal(err)
		}
		if n := r.counter.take(); n["PATCH pods/status"] != 0 {
			t.Fatalf("requests %v: want no patch", n)
		}
		if s := r.b.Stats(); s.Unchanged != before.Unchanged+1 || s.FenceOnly != before.FenceOnly {
			t.Fatalf("stats %+v", s)
		}
		r.wantPod(t, "repeat", 5, fmt.Sprintf("%d:30", uint64(epoch)))
		// Its previous one is not the recorded one (32 is with a replica
		// left behind, say): the fence moves.
		if err := r.sendPrev(t, r.b, edge1, at(33), 32, p, restarted(5)); err != nil {
			t.Fatal(err)
		}
		if s := r.b.Stats(); s.FenceOnly != before.FenceOnly+1 {
			t.Fatalf("stats %+v: want a write of the fence alone", s)
		}
		if err := r.send(t, r.a, edge1, at(32), p, restarted(6)); err != nil {
			t.Fatal(err)
		}
		r.wantPod(t, "repeat", 5, fmt.Sprintf("%d:33", uint64(epoch)))
	})

	t.Run("bad annotation set by a user is taken as none", func(t *testing.T) {
		for i, v := range []string{"garbage", "12:", ":5", "-1:3", strings.Repeat("9", 300) + ":1", "1:2:3"} {
			name := fmt.Sprintf("bad-%d", i)
			p := r.newPod(t, name, edge1)
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, FenceAnnotation, v)
			if _, err := r.client.CoreV1().Pods(podNS).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := r.send(t, r.a, edge1, at(3), p, restarted(1)); err != nil {
				t.Fatalf("annotation %.20q: %v", v, err)
			}
			r.wantPod(t, name, 1, fmt.Sprintf("%d:3", uint64(epoch)))
		}
	})

	t.Run("a huge seq touches only the sender's own pods", func(t *testing.T) {
		mine := r.newPod(t, "mine", edge2)
		theirs := r.newPod(t, "theirs", edge1)
		if err := r.send(t, r.a, edge1, at(1), theirs, restarted(1)); err != nil {
			t.Fatal(err)
		}
		huge := protocol.StatusOrder{Epoch: math.MaxUint64, Seq: math.MaxUint64}
		err := r.send(t, r.a, edge2, huge, theirs, restarted(9))
		if !errors.Is(err, ErrRejected) || refusalOf(err) != RefusedNotOwnPod {
			t.Fatalf("edge-2's report on edge-1's pod: %v, want a refusal", err)
		}
		r.wantPod(t, "theirs", 1, fmt.Sprintf("%d:1", uint64(epoch)))
		// On its own pod it is written, and blocks the edge's own later
		// reports of it (that is the edge's business).
		if err := r.send(t, r.a, edge2, huge, mine, restarted(9)); err != nil {
			t.Fatal(err)
		}
		if err := r.send(t, r.a, edge2, at(2), mine, restarted(10)); err != nil {
			t.Fatal(err)
		}
		r.wantPod(t, "mine", 9, formatFence(huge))
		// The edge's next report on edge-1's pod is still written.
		if err := r.send(t, r.a, edge1, at(2), theirs, restarted(2)); err != nil {
			t.Fatal(err)
		}
		r.wantPod(t, "theirs", 2, fmt.Sprintf("%d:2", uint64(epoch)))
	})

	t.Run("unordered reports are not fenced", func(t *testing.T) {
		// An edge of protocol 7: no order, no annotation, no precondition.
		p := r.newPod(t, "old-edge", edge1)
		if err := r.send(t, r.a, edge1, protocol.StatusOrder{}, p, restarted(2)); err != nil {
			t.Fatal(err)
		}
		if err := r.send(t, r.a, edge1, protocol.StatusOrder{}, p, restarted(1)); err != nil {
			t.Fatal(err)
		}
		r.wantPod(t, "old-edge", 1, "")
	})

	t.Run("node status", func(t *testing.T) {
		sendNode := func(w *Writer, o protocol.StatusOrder, ip string) {
			t.Helper()
			res := newResult(t)
			w.NodeStatus(edge1, o, nodeStatusMsg(t, nil, nodeStatus(ip, corev1.ConditionTrue)), res.done)
			if err := res.wait(); err != nil {
				t.Fatal(err)
			}
		}
		wantNode := func(ip, fence string) *corev1.Node {
			t.Helper()
			n, err := r.client.CoreV1().Nodes().Get(ctx, edge1, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(n.Status.Addresses) == 0 || n.Status.Addresses[0].Address != ip || n.Annotations[FenceAnnotation] != fence {
				t.Fatalf("node addresses %v, %s=%q; want %s, %q", n.Status.Addresses, FenceAnnotation, n.Annotations[FenceAnnotation], ip, fence)
			}
			return n
		}
		sendNode(r.a, at(4), "10.0.0.4")
		r.la.freeze("node/"+edge1, wantNode("10.0.0.4", fmt.Sprintf("%d:4", uint64(epoch))))
		defer r.la.freeze("node/"+edge1, nil)
		sendNode(r.b, at(6), "10.0.0.6")
		before := r.a.Stats()
		sendNode(r.a, at(5), "10.0.0.5")
		if s := r.a.Stats(); s.Stale != before.Stale+1 || s.FenceConflicts != before.FenceConflicts+1 || s.NodeStatuses != before.NodeStatuses {
			t.Fatalf("stats %+v: A's late node status should be stale, after a conflict", s)
		}
		wantNode("10.0.0.6", fmt.Sprintf("%d:6", uint64(epoch)))
	})

	t.Run("many writes", func(t *testing.T) {
		p := r.newPod(t, "many", edge1)
		var seq uint64 = 100
		for i := range 40 {
			w := r.a
			if i%3 == 1 {
				w = r.b
			}
			seq++
			if err := r.send(t, w, edge1, at(seq), p, restarted(int32(i))); err != nil {
				t.Fatal(err)
			}
			// Every other round, a late report of the other replica.
			if i%2 == 0 && i > 0 {
				other := r.b
				if w == r.b {
					other = r.a
				}
				if err := r.send(t, other, edge1, at(seq-1), p, restarted(int32(i-1))); err != nil {
					t.Fatal(err)
				}
			}
			r.wantPod(t, "many", int32(i), fmt.Sprintf("%d:%d", uint64(epoch), seq))
		}
	})
}

// TestFenceCost counts the API requests of pod status writes through an
// informer cache, as cloudcore runs them, fenced and not: a normal run, one
// replica, pods whose statuses change in quick succession (each write lands
// before the cache has it, the worst case for the resourceVersion
// precondition).
func TestFenceCost(t *testing.T) {
	r := newFenceRig(t)
	ctx := t.Context()
	factory := informers.NewSharedInformerFactory(r.client, 0)
	pods, nodes := factory.Core().V1().Pods(), factory.Core().V1().Nodes()
	lister := InformerLister(pods.Lister(), nodes.Lister(), newFakeDevices())
	factory.Start(ctx.Done())
	t.Cleanup(factory.Shutdown)
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("cache of %v not synced", typ)
		}
	}
	w, err := New(r.client, newFakeDevices(), lister, Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	start(t, w)
	const nPods, nStatuses = 10, 6
	run := func(prefix string, fenced bool) (map[string]int, Stats) {
		t.Helper()
		var ps []*corev1.Pod
		for i := range nPods {
			ps = append(ps, r.newPod(t, fmt.Sprintf("%s-%d", prefix, i), edge1))
		}
		// Wait for the cache to hold them all.
		for _, p := range ps {
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if _, err := lister.Pod(podNS, p.Name); err == nil {
					break
				} else if time.Now().After(deadline) {
					t.Fatal(err)
				}
			}
		}
		before := w.Stats()
		r.counter.take()
		var seq uint64
		for s := range nStatuses {
			var wg sync.WaitGroup
			for _, p := range ps {
				seq++
				o := protocol.StatusOrder{}
				if fenced {
					o = protocol.StatusOrder{Epoch: 1, Seq: seq}
				}
				res := newResult(t)
				w.PodStatus(edge1, o, podStatusMsg(t, p, restarted(int32(s))), res.done)
				wg.Go(func() {
					if err := res.wait(); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
		}
		after := w.Stats()
		for _, p := range ps {
			if got := r.pod(t, p.Name); !equality.Semantic.DeepEqual(got.Status.ContainerStatuses[0].RestartCount, int32(nStatuses-1)) {
				t.Fatalf("pod %s: %+v", p.Name, got.Status.ContainerStatuses)
			}
		}
		d := Stats{PodStatuses: after.PodStatuses - before.PodStatuses, FenceConflicts: after.FenceConflicts - before.FenceConflicts,
			Retries: after.Retries - before.Retries, Stale: after.Stale - before.Stale, Unchanged: after.Unchanged - before.Unchanged}
		return r.counter.take(), d
	}
	plainReq, plain := run("plain", false)
	fencedReq, fenced := run("fenced", true)
	writes := nPods * nStatuses
	total := func(m map[string]int) int {
		n := 0
		for _, v := range m {
			n += v
		}
		return n
	}
	t.Logf("%d status writes (%d pods, %d statuses each, back to back): unfenced %d requests %v (%+v); fenced %d requests %v "+
		"(written %d, conflicts %d, retries %d, stale %d): %.2f extra requests per status write",
		writes, nPods, nStatuses, total(plainReq), plainReq, plain, total(fencedReq), fencedReq,
		fenced.PodStatuses, fenced.FenceConflicts, fenced.Retries, fenced.Stale,
		float64(total(fencedReq)-total(plainReq))/float64(writes))
	if fenced.PodStatuses != int64(writes) || fenced.Stale != 0 {
		t.Fatalf("fenced run: %+v, want every report written", fenced)
	}
	// Each conflict costs a failed patch and a get; a bound on them.
	if fenced.FenceConflicts > int64(writes) {
		t.Fatalf("fenced run: %d conflicts for %d writes", fenced.FenceConflicts, writes)
	}
	_ = ctx
}
