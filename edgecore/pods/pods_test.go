package pods

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/edgecore/runtime/fake"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// call is one SyncPod or KillPod the test runtime saw.
type call struct {
	op    string // "sync" or "kill"
	uid   types.UID
	pod   *corev1.Pod // the spec synced
	grace time.Duration
}

// testRuntime is the fake runtime with holds: a call for a held pod blocks
// until the test releases it. It records every call, how many ran at once
// and whether one pod ever had two calls at once.
type testRuntime struct {
	fake *fake.Runtime
	// entered gets every call as it starts.
	entered chan call

	mu sync.Mutex
	// Guarded by mu:
	holds     map[types.UID]chan struct{}
	calls     []call
	inFlight  map[types.UID]int
	active    int
	maxActive int
	overlaps  []types.UID
}

func newTestRuntime() *testRuntime {
	return &testRuntime{fake: fake.New("192.0.2.1"), entered: make(chan call, 1000),
		holds: map[types.UID]chan struct{}{}, inFlight: map[types.UID]int{}}
}

// hold makes the pod's next calls block until release.
func (r *testRuntime) hold(uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holds[uid] = make(chan struct{})
}

func (r *testRuntime) release(uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.holds[uid])
	delete(r.holds, uid)
}

func (r *testRuntime) enter(ctx context.Context, c call) {
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.inFlight[c.uid]++
	if r.inFlight[c.uid] > 1 {
		r.overlaps = append(r.overlaps, c.uid)
	}
	r.active++
	r.maxActive = max(r.maxActive, r.active)
	hold := r.holds[c.uid]
	r.mu.Unlock()
	r.entered <- c
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
		}
	}
}

func (r *testRuntime) leave(uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight[uid]--
	r.active--
}

func (r *testRuntime) SyncPod(ctx context.Context, p *corev1.Pod) (*corev1.PodStatus, error) {
	r.enter(ctx, call{op: "sync", uid: p.UID, pod: p})
	defer r.leave(p.UID)
	return r.fake.SyncPod(ctx, p)
}

func (r *testRuntime) KillPod(ctx context.Context, uid types.UID, grace time.Duration) error {
	r.enter(ctx, call{op: "kill", uid: uid, grace: grace})
	defer r.leave(uid)
	return r.fake.KillPod(ctx, uid, grace)
}

func (r *testRuntime) Pods(ctx context.Context) ([]types.UID, error) {
	return r.fake.Pods(ctx)
}

// callsOf lists the calls for uid.
func (r *testRuntime) callsOf(uid types.UID) []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []call
	for _, c := range r.calls {
		if c.uid == uid {
			out = append(out, c)
		}
	}
	return out
}

func (r *testRuntime) checkNoOverlap(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.overlaps) > 0 {
		t.Errorf("pods with two calls at once: %v", r.overlaps)
	}
}

// waitEntered waits for a call for uid with op.
func (r *testRuntime) waitEntered(t *testing.T, op string, uid types.UID) call {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case c := <-r.entered:
			if c.op == op && c.uid == uid {
				return c
			}
		case <-deadline:
			t.Fatalf("no %s of %s", op, uid)
		}
	}
}

// staticPods are the node's static pods, and tell the test of every pass,
// light or full: each asks for the static pods after it read the store.
type staticPods struct {
	pods   []*corev1.Pod
	passes chan struct{}
}

func (s *staticPods) Pods() []*corev1.Pod {
	s.passes <- struct{}{}
	return s.pods
}

// kick calls Changed and waits until the pass it causes has read the
// store. The tests kick only when no pass is under way.
func (e *testEnv) kick(t *testing.T) {
	t.Helper()
	for len(e.static.passes) > 0 {
		<-e.static.passes
	}
	e.m.Changed()
	select {
	case <-e.static.passes:
	case <-time.After(10 * time.Second):
		t.Fatal("no pass")
	}
}

type testEnv struct {
	m      *Manager
	db     *store.DB
	rt     *testRuntime
	static *staticPods
	// idle gets a value each time the manager's last work is done.
	idle chan struct{}
}

// forgetIdle drops the idle signals so far.
func (e *testEnv) forgetIdle() {
	for len(e.idle) > 0 {
		<-e.idle
	}
}

// waitIdle waits for the manager to have no work left after forgetIdle.
func (e *testEnv) waitIdle(t *testing.T) {
	t.Helper()
	select {
	case <-e.idle:
	case <-time.After(10 * time.Second):
		t.Fatal("manager not idle")
	}
}

// start runs a manager with workers on a store in t.TempDir(); the resync
// is an hour, so only the store's changes and Changed drive it.
func start(t *testing.T, rt *testRuntime, workers int, statics []*corev1.Pod, pods ...*corev1.Pod) *testEnv {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &testEnv{db: db, rt: rt, static: &staticPods{pods: statics, passes: make(chan struct{}, 1000)},
		idle: make(chan struct{}, 1000)}
	for _, p := range pods {
		e.put(t, p)
	}
	e.m, err = New(Config{ResyncInterval: time.Hour, PodWorkers: workers, Static: e.static}, db, rt,
		slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	e.m.idleHook = func() {
		select {
		case e.idle <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- e.m.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		rt.checkNoOverlap(t)
	})
	return e
}

func (e *testEnv) put(t *testing.T, p *corev1.Pod) {
	t.Helper()
	b, err := protocol.EncodePod(p)
	if err != nil {
		t.Fatal(err)
	}
	err = e.db.Update(func(tx *store.Tx) error {
		return tx.PutObject(&protocol.Object{Kind: protocol.KindPod, UID: string(p.UID), Namespace: p.Namespace,
			Name: p.Name, ResourceVersion: p.ResourceVersion, Data: b})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (e *testEnv) remove(t *testing.T, uid types.UID) {
	t.Helper()
	err := e.db.Update(func(tx *store.Tx) error {
		_, err := tx.DeleteObject(protocol.KindPod, string(uid))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// outbox is the outbox's frames by key.
func (e *testEnv) outbox(t *testing.T) map[string]*protocol.Frame {
	t.Helper()
	out := map[string]*protocol.Frame{}
	err := e.db.View(func(tx *store.Tx) error {
		var err error
		tx.Outbox(0, func(it store.OutboxItem) bool {
			var f *protocol.Frame
			f, err = protocol.Decode(it.Frame)
			out[it.Key] = f
			return err == nil
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ackAll empties the outbox, as the hub's acknowledgements do.
func (e *testEnv) ackAll(t *testing.T) {
	t.Helper()
	err := e.db.Update(func(tx *store.Tx) error {
		var seqs []uint64
		tx.Outbox(0, func(it store.OutboxItem) bool { seqs = append(seqs, it.Seq); return true })
		for _, s := range seqs {
			if err := tx.Acked(s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitOutbox waits until the outbox satisfies cond.
func (e *testEnv) waitOutbox(t *testing.T, what string, cond func(map[string]*protocol.Frame) bool) map[string]*protocol.Frame {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ob := e.outbox(t)
		if cond(ob) {
			return ob
		}
		if time.Now().After(deadline) {
			keys := slices.Sorted(func(yield func(string) bool) {
				for k := range ob {
					if !yield(k) {
						return
					}
				}
			})
			t.Fatalf("outbox: %s: not within 10s; it holds %v", what, keys)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func hasStatuses(uids ...types.UID) func(map[string]*protocol.Frame) bool {
	return func(ob map[string]*protocol.Frame) bool {
		for _, u := range uids {
			if ob[store.OutboxPodStatus(string(u))] == nil {
				return false
			}
		}
		return true
	}
}

func testPod(i int) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("p%02d", i),
			UID: types.UID(fmt.Sprintf("uid-%02d", i)), ResourceVersion: "1"},
		Spec: corev1.PodSpec{NodeName: "edge", Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
	}
}

func testPods(n int) ([]*corev1.Pod, []types.UID) {
	var pods []*corev1.Pod
	var uids []types.UID
	for i := range n {
		pods = append(pods, testPod(i))
		uids = append(uids, pods[i].UID)
	}
	return pods, uids
}

// Pods start in parallel, as many at once as there are workers and no more.
func TestPodsSyncInParallel(t *testing.T) {
	rt := newTestRuntime()
	pods, uids := testPods(10)
	for _, u := range uids {
		rt.hold(u)
	}
	e := start(t, rt, 4, nil, pods...)

	// Four syncs are under way at once, each held: a manager that syncs
	// one pod at a time never gets here.
	inside := map[types.UID]bool{}
	for len(inside) < 4 {
		select {
		case c := <-rt.entered:
			inside[c.uid] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d syncs at once: %v", len(inside), inside)
		}
	}
	for _, u := range uids {
		rt.release(u)
	}
	e.waitOutbox(t, "every status", hasStatuses(uids...))
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.maxActive != 4 {
		t.Errorf("%d calls at once, want 4 (the workers)", rt.maxActive)
	}
}

// A pod that changes while it is synced is synced again once that sync is
// done, with its newest spec only, while other pods go on.
func TestPodNeverSyncedTwiceAtOnce(t *testing.T) {
	rt := newTestRuntime()
	pods, uids := testPods(3)
	a := pods[0]
	rt.hold(a.UID)
	e := start(t, rt, 4, nil, pods...)
	rt.waitEntered(t, "sync", a.UID)
	e.waitOutbox(t, "the other pods' statuses", hasStatuses(uids[1:]...))

	for _, rv := range []string{"2", "3"} {
		p := a.DeepCopy()
		p.ResourceVersion, p.Spec.Containers[0].Image = rv, "busybox:"+rv
		e.put(t, p)
		e.kick(t)
	}
	if n := len(rt.callsOf(a.UID)); n != 1 {
		t.Fatalf("%d calls for the held pod while its first sync runs, want 1", n)
	}
	rt.release(a.UID)
	e.waitOutbox(t, "the held pod's status", hasStatuses(a.UID))
	c := rt.waitEntered(t, "sync", a.UID)
	if img := c.pod.Spec.Containers[0].Image; img != "busybox:3" {
		t.Errorf("second sync with image %s, want the newest, busybox:3", img)
	}
	e.waitOutbox(t, "the status of the newest spec", func(ob map[string]*protocol.Frame) bool {
		f := ob[store.OutboxPodStatus(string(a.UID))]
		st, err := protocol.DecodePodStatus(f.PodStatus.Status)
		return err == nil && st.ContainerStatuses[0].Image == "busybox:3"
	})
	if calls := rt.callsOf(a.UID); len(calls) != 2 {
		t.Errorf("%d syncs of the changed pod, want 2: the first and one with the newest spec", len(calls))
	}
}

// The scheduling itself (kicks while pods wait, full passes pending,
// deletion during a sync, flushes, eviction) is Engine's, tested by the
// scripts of testdata/engine (engine_test.go) without goroutines or clocks.
// The tests here check the shell: workers, the store, the runtime, the
// outbox.

// A deleted pod is killed with its grace period, one call, and its
// termination is queued once the kill returned; it is not synced again.
func TestDeletedPodTerminatedAfterKill(t *testing.T) {
	rt := newTestRuntime()
	pods, uids := testPods(2)
	e := start(t, rt, 4, nil, pods...)
	e.waitOutbox(t, "statuses", hasStatuses(uids...))

	p := pods[0].DeepCopy()
	now := metav1.Now()
	grace := int64(7)
	p.ResourceVersion, p.DeletionTimestamp, p.DeletionGracePeriodSeconds = "2", &now, &grace
	rt.hold(p.UID)
	e.put(t, p)
	e.m.Changed()
	c := rt.waitEntered(t, "kill", p.UID)
	if c.grace != 7*time.Second {
		t.Errorf("kill grace %s, want 7s", c.grace)
	}
	term := store.OutboxPodTerminated(string(p.UID))
	if e.outbox(t)[term] != nil {
		t.Fatal("termination queued before the kill returned")
	}
	e.kick(t) // while the kill runs: nothing more for this pod
	rt.release(p.UID)
	ob := e.waitOutbox(t, "termination", func(ob map[string]*protocol.Frame) bool { return ob[term] != nil })
	if pt := ob[term].PodTerminated; pt.UID != string(p.UID) || pt.Name != p.Name {
		t.Errorf("termination %+v", pt)
	}
	e.kick(t)
	e.kick(t)
	if calls := rt.callsOf(p.UID); len(calls) != 2 || calls[0].op != "sync" || calls[1].op != "kill" {
		t.Errorf("calls for the deleted pod: %+v, want one sync and one kill", calls)
	}
}

// A pod the store drops while it is synced is killed at once (grace 0)
// when the sync returns, and its status is not reported.
func TestPodRemovedWhileSyncingIsKilledAfter(t *testing.T) {
	rt := newTestRuntime()
	pods, _ := testPods(1)
	p := pods[0]
	rt.hold(p.UID)
	e := start(t, rt, 4, nil, p)
	rt.waitEntered(t, "sync", p.UID)
	e.remove(t, p.UID)
	e.kick(t)
	e.forgetIdle()
	rt.release(p.UID)
	c := rt.waitEntered(t, "kill", p.UID)
	if c.grace != 0 {
		t.Errorf("kill grace %s, want 0", c.grace)
	}
	// Idle once the kill returned, with every status it had flushed: a
	// status queued for the removed pod is in the outbox by then.
	e.waitIdle(t)
	if ob := e.outbox(t); ob[store.OutboxPodStatus(string(p.UID))] != nil {
		t.Error("status of a removed pod queued")
	}
	if uids, _ := rt.fake.Pods(t.Context()); len(uids) != 0 {
		t.Errorf("runtime still runs %v", uids)
	}
}

// Pods the runtime runs that the store does not hold are killed.
func TestUnknownPodsKilled(t *testing.T) {
	rt := newTestRuntime()
	pods, uids := testPods(2)
	if _, err := rt.fake.SyncPod(t.Context(), pods[1]); err != nil { // run before edgecore restarted
		t.Fatal(err)
	}
	e := start(t, rt, 4, nil, pods[0])
	if c := rt.waitEntered(t, "kill", uids[1]); c.grace != 0 {
		t.Errorf("kill grace %s, want 0", c.grace)
	}
	e.waitOutbox(t, "the wanted pod's status", hasStatuses(uids[0]))
	if calls := rt.callsOf(uids[0]); len(calls) == 0 || calls[0].op != "sync" {
		t.Errorf("calls for the wanted pod: %+v", calls)
	}
}

// Connected reports every status again, though none changed.
func TestStatusesReportedAgainOnConnected(t *testing.T) {
	rt := newTestRuntime()
	pods, uids := testPods(3)
	e := start(t, rt, 2, nil, pods...)
	e.waitIdle(t) // the first pass is done, its statuses queued
	if ob := e.outbox(t); !hasStatuses(uids...)(ob) {
		t.Fatalf("outbox after the first pass: %d frames", len(ob))
	}
	e.ackAll(t)
	// Each kick syncs every pod again; idle comes after their statuses
	// were flushed, so one queued again would be in the outbox by then.
	for range 2 {
		e.forgetIdle()
		e.kick(t)
		e.waitIdle(t)
	}
	if ob := e.outbox(t); len(ob) != 0 {
		t.Fatalf("unchanged statuses queued again without Connected: %d", len(ob))
	}
	if n := len(rt.callsOf(uids[0])); n != 3 {
		t.Fatalf("%d syncs of a pod after two kicks, want 3: the kicks' passes did not run", n)
	}
	e.m.Connected()
	e.waitOutbox(t, "statuses after Connected", hasStatuses(uids...))
}

// A static pod runs; the cloud is asked for its mirror pod, and its status
// goes to the mirror once the store holds it.
func TestStaticPodStatusGoesToMirror(t *testing.T) {
	rt := newTestRuntime()
	s := testPod(1)
	s.Name, s.UID = "web-edge", "static-hash"
	s.Annotations = map[string]string{configHashAnnotation: "static-hash", "kubernetes.io/config.source": "file"}
	e := start(t, rt, 4, []*corev1.Pod{s})
	ob := e.waitOutbox(t, "mirror request", func(ob map[string]*protocol.Frame) bool { return ob["mirror/default/web-edge"] != nil })
	mp, err := protocol.DecodePod(ob["mirror/default/web-edge"].MirrorPod.Pod)
	if err != nil {
		t.Fatal(err)
	}
	rt.waitEntered(t, "sync", s.UID)
	if mp.Annotations[mirrorAnnotation] != "static-hash" || mp.UID != "" {
		t.Errorf("mirror pod %v uid %q", mp.Annotations, mp.UID)
	}
	mp.UID, mp.ResourceVersion = "mirror-uid", "5"
	e.put(t, mp)
	e.m.Changed()
	ob = e.waitOutbox(t, "status of the mirror", hasStatuses("mirror-uid"))
	if ps := ob[store.OutboxPodStatus("mirror-uid")].PodStatus; ps.Name != "web-edge" {
		t.Errorf("mirror status %+v", ps)
	}
	if ob[store.OutboxPodStatus(string(s.UID))] != nil {
		t.Error("status queued under the static pod's own UID")
	}
	if calls := rt.callsOf("mirror-uid"); len(calls) != 0 {
		t.Errorf("the mirror pod was run: %+v", calls)
	}
}

// An idle manager is one goroutine, whatever its number of pods: workers
// exist only while pods are synced.
func TestIdleManagerIsOneGoroutine(t *testing.T) {
	for _, n := range []int{0, 10} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			rt := newTestRuntime()
			pods, uids := testPods(n)
			e := start(t, rt, 4, nil, pods...)
			e.waitOutbox(t, "statuses", hasStatuses(uids...))
			deadline := time.Now().Add(10 * time.Second)
			for {
				g := managerGoroutines()
				if g == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d goroutines of the manager with %d idle pods, want 1", g, n)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

// managerGoroutines counts the goroutines running a Manager method.
func managerGoroutines() int {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "pods.(*Manager).") {
			n++
		}
	}
	return n
}

func TestConfigPodWorkers(t *testing.T) {
	c := Config{}
	if err := c.validate(); err != nil || c.PodWorkers != DefaultPodWorkers {
		t.Errorf("default: %d, %v", c.PodWorkers, err)
	}
	c = Config{PodWorkers: -1}
	if err := c.validate(); err == nil {
		t.Error("negative podWorkers accepted")
	}
}

// BenchmarkResync is one resync of a node's 10 pods on the fake runtime,
// as the simulator's hollow nodes make every ResyncInterval: the pass, the
// syncs on the workers and the statuses compared (none changed).
func BenchmarkResync(b *testing.B) {
	db, err := store.Open(filepath.Join(b.TempDir(), "edge.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	pods, _ := testPods(10)
	for _, p := range pods {
		pb, err := protocol.EncodePod(p)
		if err != nil {
			b.Fatal(err)
		}
		err = db.Update(func(tx *store.Tx) error {
			return tx.PutObject(&protocol.Object{Kind: protocol.KindPod, UID: string(p.UID), Namespace: p.Namespace,
				Name: p.Name, ResourceVersion: p.ResourceVersion, Data: pb})
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	m, err := New(Config{ResyncInterval: time.Hour}, db, fake.New("192.0.2.1"),
		slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	idle := make(chan struct{}, 1)
	m.idleHook = func() {
		select {
		case idle <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(b.Context())
	done := make(chan error)
	go func() { done <- m.Start(ctx) }()
	defer func() { cancel(); <-done }()
	<-idle // the first pass
	b.ReportAllocs()
	for b.Loop() {
		m.Changed()
		<-idle
	}
}

// Images lists the images of the store's pods (init containers included)
// and the static pods, whether or not they run: what image GC must keep.
func TestImagesOfHeldPods(t *testing.T) {
	rt := newTestRuntime()
	s := testPod(1)
	s.Name, s.UID = "static-web", "static-hash"
	s.Annotations = map[string]string{configHashAnnotation: "static-hash", "kubernetes.io/config.source": "file"}
	s.Spec.Containers[0].Image = "registry.local/web:2"
	p := testPod(2)
	p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "registry.local/init:1"}}
	e := start(t, rt, 1, []*corev1.Pod{s}, p, testPod(3))
	got, err := e.m.Images()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"busybox", "registry.local/init:1", "registry.local/web:2"}; !slices.Equal(got, want) {
		t.Errorf("Images() = %v, want %v", got, want)
	}
}

// Changes keeps the newest change announced: a pass for it syncs every pod
// whose sync started before it, so a sync between two changes is done
// again.
func TestChangesKeepNewest(t *testing.T) {
	c := NewChanges()
	if got := c.take(); !got.IsZero() {
		t.Fatalf("no change announced, take = %v", got)
	}
	c.Changed()
	between := time.Now()
	c.Changed()
	if got := c.take(); got.Before(between) {
		t.Errorf("take = %v, before the second change (after %v)", got, between)
	}
	if got := c.take(); !got.IsZero() {
		t.Errorf("taken twice: %v", got)
	}
}
