// Package pods runs the pods the edge store holds. Its Manager is
// level-based: on every change and on a timer it compares the pods in the
// store with the runtime, starts, syncs and kills what differs, and queues
// each pod's status in the outbox when it changed. It needs nothing from the
// cloud, so pods keep running, and come back after a restart, while the link
// is down.
//
// Pods are worked on in parallel, like the kubelet's pod workers but
// bounded. One goroutine, Start's, owns the manager's state: the pods the
// last pass read, the statuses queued, the work queue. A pass puts the pods
// in the queue and hands the queue, in order, to at most Config.PodWorkers
// worker goroutines, each running one SyncPod or KillPod and sending its
// result back. A pod is never worked on by two workers at once: a pod that
// changes while its worker runs goes to the back of the queue once the
// worker is done, and a queued pod is looked up when its worker starts, so
// it runs with the newest spec the store held. Workers exist only while
// there is work: an idle manager is one goroutine however many pods it
// runs, which matters to the simulator's thousands of nodes in one process.
//
// Changes come in bursts (a batch from the cloud, a container's exit seen
// by the runtime), each a kick that says when something changed, not
// what. A pass for a kick syncs every pod except those whose last sync
// started after the change with the same spec: they saw it. While pods
// wait for a worker, a kick makes a light pass that queues only the pods
// that are new, changed or gone, and the full pass follows once none
// waits: otherwise every kick during a big start would sync again every
// pod started so far, taking the workers from the pods still waiting. The
// resync timer syncs every pod.
package pods

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/edgecore/runtime"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// Config configures the Manager.
type Config struct {
	// ResyncInterval is how often every pod is synced even without a change
	// (default 10s).
	ResyncInterval time.Duration
	// OutboxMax bounds the outbox (see store.Tx.Enqueue; default 10000).
	OutboxMax int
	// PodWorkers is how many pods are synced or killed at once (default
	// DefaultPodWorkers). One pod's syncs and kill never overlap.
	PodWorkers int
	// Reported, if set, gets every status once it is queued in the outbox
	// (see Reported); the metaserver reads it.
	Reported *Reported
}

// DefaultPodWorkers is Config.PodWorkers' default. On containerd a pod's
// first sync (sandbox, network, container) takes about 230 ms alone, much
// of it waiting for runc and the CNI plugins. With 8 at once each takes
// about 700 ms, so a batch starts about 2.5 times faster, even on the two
// shared cores of the e2e test (20 pods); with 16 every pod waited longer.
const DefaultPodWorkers = 8

func (c *Config) validate() error {
	if c.ResyncInterval == 0 {
		c.ResyncInterval = 10 * time.Second
	}
	if c.OutboxMax == 0 {
		c.OutboxMax = 10000
	}
	if c.Reported == nil {
		c.Reported = NewReported()
	}
	if c.PodWorkers == 0 {
		c.PodWorkers = DefaultPodWorkers
	}
	if c.ResyncInterval < 0 || c.OutboxMax < 0 {
		return fmt.Errorf("pods: resync interval %s and outbox max %d must not be negative", c.ResyncInterval, c.OutboxMax)
	}
	if c.PodWorkers < 0 {
		return fmt.Errorf("pods: podWorkers %d must not be negative", c.PodWorkers)
	}
	return nil
}

// Manager reconciles the store's pods with the runtime.
type Manager struct {
	cfg Config
	db  *store.DB
	rt  runtime.Runtime
	log *slog.Logger
	// queued is called after statuses were queued in the outbox.
	queued func()
	kickc  chan struct{}
	// evictc carries Evict's requests to the Start goroutine.
	evictc chan evictReq
	// kickedAt is when the oldest change not yet passed was announced, in
	// Unix nanoseconds (0: none).
	kickedAt atomic.Int64
	// resend asks the next pass to report every status again.
	resend atomic.Bool
	// results carries the workers' results to the Start goroutine; its
	// buffer holds one per worker, so a worker never waits.
	results chan result
	// wg joins the workers.
	wg sync.WaitGroup

	// static, if set, adds the node's static pods.
	static StaticPods
	// idleHook, if set, is called by the Start goroutine when the last work
	// is done (for tests).
	idleHook func()

	// Owned by the Start goroutine:
	lastStatus map[types.UID][]byte // the last status queued per reported pod UID
	terminated map[types.UID]bool   // pods whose termination is queued
	lastMirror map[string]string    // ns/name -> config hash (or "" for delete) of the mirror request queued
	evicted    map[types.UID]*evictState
	// fullPending: a kick came while pods waited for a worker; a full pass
	// for the changes since pendingSince is due once none waits.
	fullPending  bool
	pendingSince time.Time
	// synced holds when each pod's last successful sync started and the
	// resourceVersion it synced.
	synced map[types.UID]syncMark
	// pods are the pods to run, by UID, and mirrors the mirror pods, by
	// ns/name, as the last pass read them. They are kept only while work
	// is queued or running (workers look pods up when they start) and
	// dropped when the last work is done, so an idle manager holds no
	// decoded pods.
	pods    map[types.UID]*corev1.Pod
	mirrors map[string]*corev1.Pod
	// work holds the pods queued or being worked on; queue the queued ones,
	// oldest first; running counts the workers.
	work    map[types.UID]*podWork
	queue   []types.UID
	running int
	// out holds the frames not yet queued in the outbox; lastFlush is when
	// they last were; flushTimer, when flushArmed, fires when out is due.
	out        []queuedFrame
	lastFlush  time.Time
	flushTimer *time.Timer
	flushArmed bool
}

// podWork is a pod's place in the work queue.
type podWork struct {
	// running: a worker syncs or kills the pod. Otherwise it is queued.
	running bool
	// again: the pod changed while its worker ran; queue it again after.
	again bool
	// sync: the worker syncs (rather than kills) the pod, which it started
	// to at started, with the spec of resourceVersion rv.
	sync    bool
	started time.Time
	rv      string
}

// syncMark is when a sync started and the resourceVersion it synced.
type syncMark struct {
	started time.Time
	rv      string
}

// job is one worker's task: sync pod, or kill the pod with uid (pod is nil
// when the store no longer holds it).
type job struct {
	uid   types.UID
	pod   *corev1.Pod
	kill  bool
	grace time.Duration
	// evict: the kill evicts the pod.
	evict bool
}

// result is what a worker did.
type result struct {
	job
	// status is the encoded status SyncPod returned, if it returned one.
	status []byte
	err    error
}

// StaticPods gives the node's static pods (see package staticpods).
type StaticPods interface {
	Pods() []*corev1.Pod
}

// mirrorAnnotation marks mirror pods, the API server's copies of static
// pods: they are never run from the store, the static pod is.
const mirrorAnnotation = corev1.MirrorPodAnnotationKey

// configHashAnnotation holds a static pod's hash, which its mirror carries
// in mirrorAnnotation.
const configHashAnnotation = "kubernetes.io/config.hash"

// New builds a Manager. queued is called after statuses were added to the
// outbox.
func New(cfg Config, db *store.DB, rt runtime.Runtime, queued func(), log *slog.Logger) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, db: db, rt: rt, log: log, queued: queued, kickc: make(chan struct{}, 1),
		evictc: make(chan evictReq), evicted: map[types.UID]*evictState{},
		results:    make(chan result, cfg.PodWorkers),
		lastStatus: map[types.UID][]byte{}, terminated: map[types.UID]bool{}, lastMirror: map[string]string{},
		work: map[types.UID]*podWork{}, synced: map[types.UID]syncMark{}}, nil
}

// SetStaticPods adds a source of static pods. Call it before Start.
func (m *Manager) SetStaticPods(s StaticPods) { m.static = s }

// Changed tells the Manager that pods or what they use changed. It never
// blocks.
func (m *Manager) Changed() {
	m.kickedAt.CompareAndSwap(0, time.Now().UnixNano())
	select {
	case m.kickc <- struct{}{}:
	default:
	}
}

// Images returns the images of every pod the node holds, whether it runs
// or not: the store's pods (also while the cloud is away) and the static
// pods, with their init and ephemeral containers. Image garbage collection
// keeps them. It may be called from any goroutine.
func (m *Manager) Images() ([]string, error) {
	seen := map[string]bool{}
	var out []string
	add := func(p *corev1.Pod) {
		for _, c := range p.Spec.InitContainers {
			seen[c.Image] = true
		}
		for _, c := range p.Spec.Containers {
			seen[c.Image] = true
		}
		for _, c := range p.Spec.EphemeralContainers {
			seen[c.Image] = true
		}
	}
	err := m.db.View(func(tx *store.Tx) error {
		return tx.ForEachObject(protocol.KindPod, func(o *protocol.Object) error {
			p, err := protocol.DecodePod(o.Data)
			if err != nil {
				return fmt.Errorf("pod %s: %w", o.UID, err)
			}
			add(p)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("images of the stored pods: %w", err)
	}
	if m.static != nil {
		for _, p := range m.static.Pods() {
			add(p)
		}
	}
	for img := range seen {
		if img != "" {
			out = append(out, img)
		}
	}
	slices.Sort(out)
	return out, nil
}

// ObjectsChanged implements agent.Observer.
func (m *Manager) ObjectsChanged(map[protocol.Kind]bool, []protocol.ObjectRef) { m.Changed() }

// Connected implements agent.Observer: every pod's status is reported again
// (the status writer in the cloud skips those that did not change).
func (m *Manager) Connected() {
	m.resend.Store(true)
	m.Changed()
}

// Start syncs pods until ctx ends. Before it returns, the workers end (the
// runtime's calls see ctx end) and the statuses they reported are queued.
func (m *Manager) Start(ctx context.Context) error {
	t := time.NewTicker(m.cfg.ResyncInterval)
	defer t.Stop()
	m.flushTimer = time.NewTimer(time.Hour)
	m.flushTimer.Stop()
	defer m.flushTimer.Stop()
	defer m.stop(ctx)
	m.pass(ctx, true, time.Now())
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.kickc:
			// The changes announced before this are all seen by what
			// starts after it; a kick with none announced was passed
			// already.
			var since time.Time
			if ns := m.kickedAt.Swap(0); ns != 0 {
				since = time.Unix(0, ns)
			}
			m.kick(ctx, since)
		case <-t.C:
			m.kick(ctx, time.Now())
		case r := <-m.results:
			m.done(ctx, r)
		case req := <-m.evictc:
			req.reply <- m.evict(ctx, req)
		case <-m.flushTimer.C:
			m.flushArmed = false
			m.flush()
		}
	}
}

// stop waits for the running workers and queues what they reported.
func (m *Manager) stop(ctx context.Context) {
	for m.running > 0 {
		m.done(ctx, <-m.results)
	}
	m.wg.Wait()
	m.flush()
}

// flushEvery bounds how long a status waits while pods are worked on: the
// statuses that came in meanwhile are queued in one transaction.
const flushEvery = 100 * time.Millisecond

type queuedFrame struct {
	key   string
	frame *protocol.Frame
}

// kick makes a full pass for the changes since since (none if it is
// zero), or while pods wait for a worker a light one, and the full one
// once none waits.
func (m *Manager) kick(ctx context.Context, since time.Time) {
	if m.fullPending {
		since = earliest(since, m.pendingSince)
	}
	if len(m.queue) > 0 {
		m.fullPending, m.pendingSince = true, since
		m.pass(ctx, false, time.Time{})
		return
	}
	m.fullPending, m.pendingSince = false, time.Time{}
	m.pass(ctx, true, since)
}

// earliest is the earlier of two times, zero meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// pass reads the pods and queues work, then starts workers. It queues the
// pods that are new, changed or gone since the last pass and, for changes
// since since, every pod not synced since then. A full pass also queues
// the pods the runtime runs that the store does not hold, and reports
// every status again if Connected asked.
func (m *Manager) pass(ctx context.Context, full bool, since time.Time) {
	if full && m.resend.Swap(false) {
		clear(m.lastStatus)
		clear(m.lastMirror)
		since = time.Now()
	}
	pods, mirrors, err := m.readPods()
	if err != nil {
		m.log.Error("pod sync failed", slog.Any("err", err))
		return
	}
	if m.static != nil {
		m.syncMirrors(m.static.Pods(), mirrors)
	}
	last := m.pods
	m.pods, m.mirrors = make(map[types.UID]*corev1.Pod, len(pods)), mirrors
	// want: the pods whose last status is kept, mirror pods included.
	want := make(map[types.UID]bool, len(pods))
	for _, p := range pods {
		m.pods[p.UID] = p
		want[p.UID] = true
		if terminalPhase(p) && m.evicted[p.UID] == nil {
			// Evicted before a restart: killed if it runs, never started.
			m.evicted[p.UID] = &evictState{msg: p.Status.Message, reported: true}
		}
		if mp := m.mirrorOf(p); mp != nil {
			want[mp.UID] = true
		}
	}
	for _, p := range pods {
		if !m.syncedSince(p, since) {
			m.schedule(p.UID)
		}
	}
	// Pods the store no longer holds are killed, once their worker is done
	// if one works on them.
	for uid := range last {
		if m.pods[uid] == nil {
			m.schedule(uid)
		}
	}
	for uid := range m.work {
		if m.pods[uid] == nil {
			m.schedule(uid)
		}
	}
	// Pods the runtime runs that the store does not hold: deleted by force
	// or while the edge was away.
	if full {
		if running, err := m.rt.Pods(ctx); err != nil {
			if ctx.Err() == nil {
				m.log.Error("pod sync failed", slog.Any("err", fmt.Errorf("list runtime pods: %w", err)))
			}
		} else {
			for _, uid := range running {
				if m.pods[uid] == nil {
					m.schedule(uid)
				}
			}
		}
	}
	for uid := range m.lastStatus {
		if !want[uid] {
			delete(m.lastStatus, uid)
		}
	}
	m.cfg.Reported.retain(func(uid types.UID) bool { return want[uid] })
	for uid := range m.terminated {
		if !want[uid] {
			delete(m.terminated, uid)
		}
	}
	for uid := range m.evicted {
		if !want[uid] {
			delete(m.evicted, uid)
		}
	}
	for uid := range m.synced {
		if m.pods[uid] == nil {
			delete(m.synced, uid)
		}
	}
	m.launch(ctx)
	m.dropIfIdle()
	m.maybeFlush()
}

// readPods reads the pods to run, the store's and the static ones, and
// the mirror pods by ns/name.
func (m *Manager) readPods() (pods []*corev1.Pod, mirrors map[string]*corev1.Pod, err error) {
	mirrors = map[string]*corev1.Pod{}
	err = m.db.View(func(tx *store.Tx) error {
		return tx.ForEachObject(protocol.KindPod, func(o *protocol.Object) error {
			p, err := protocol.DecodePod(o.Data)
			if err != nil {
				m.log.Error("undecodable pod in store", slog.String("uid", o.UID), slog.Any("err", err))
				return nil
			}
			if _, ok := p.Annotations[mirrorAnnotation]; ok {
				mirrors[p.Namespace+"/"+p.Name] = p
				return nil
			}
			pods = append(pods, p)
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read pods: %w", err)
	}
	if m.static != nil {
		pods = append(pods, m.static.Pods()...)
	}
	return pods, mirrors, nil
}

// syncedSince reports whether the pod's last sync, running or done and
// successful, started with its current spec and not before since: it saw
// the changes before since (with since zero, every change passed already).
func (m *Manager) syncedSince(p *corev1.Pod, since time.Time) bool {
	mark, ok := m.synced[p.UID]
	if w := m.work[p.UID]; w != nil {
		mark, ok = syncMark{w.started, w.rv}, w.running && w.sync
	}
	return ok && mark.rv == p.ResourceVersion && !mark.started.Before(since)
}

// schedule queues the pod with uid for a worker, unless it is queued
// already; a pod being worked on is queued again once its worker is done.
func (m *Manager) schedule(uid types.UID) {
	switch w := m.work[uid]; {
	case w == nil:
		m.work[uid] = &podWork{}
		m.queue = append(m.queue, uid)
	case w.running:
		w.again = true
	}
}

// launch starts workers for the queued pods, oldest first, while fewer
// than PodWorkers run.
func (m *Manager) launch(ctx context.Context) {
	if ctx.Err() != nil {
		return // Start is ending
	}
	for m.running < m.cfg.PodWorkers && len(m.queue) > 0 {
		uid := m.queue[0]
		m.queue = m.queue[1:]
		j, ok := m.jobFor(uid)
		if !ok {
			delete(m.work, uid)
			continue
		}
		if j.kill && j.pod == nil {
			m.log.Info("killing pod no longer wanted", slog.String("uid", string(uid)))
		}
		w := m.work[uid]
		w.running, w.sync, w.started = true, !j.kill, time.Now()
		if j.pod != nil {
			w.rv = j.pod.ResourceVersion
		}
		m.running++
		m.wg.Add(1)
		go m.runJob(ctx, j)
	}
	if len(m.queue) == 0 {
		m.queue = nil // let a long queue's array go
	}
}

// jobFor is what to do now about the pod with uid, from the newest pods
// read: sync it, kill it (it is being deleted, or the store no longer holds
// it), or nothing (its termination is queued already).
func (m *Manager) jobFor(uid types.UID) (job, bool) {
	p := m.pods[uid]
	switch {
	case p == nil:
		return job{uid: uid, kill: true}, true
	case p.DeletionTimestamp != nil:
		if m.terminated[uid] {
			return job{}, false
		}
		grace := 30 * time.Second
		if p.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*p.DeletionGracePeriodSeconds) * time.Second
		}
		return job{uid: uid, pod: p, kill: true, grace: grace}, true
	}
	if e := m.evicted[uid]; e != nil {
		if e.killed {
			return job{}, false
		}
		return job{uid: uid, pod: p, kill: true, evict: true}, true
	}
	return job{uid: uid, pod: p}, true
}

// runJob is a worker: it runs j and sends the result back.
func (m *Manager) runJob(ctx context.Context, j job) {
	defer m.wg.Done()
	r := result{job: j}
	if j.kill {
		r.err = m.rt.KillPod(ctx, j.uid, j.grace)
	} else {
		st, err := m.rt.SyncPod(ctx, j.pod)
		r.err = err
		if st != nil {
			b, err := protocol.EncodePodStatus(st)
			if err != nil {
				r.err = fmt.Errorf("encode status: %w", err)
			}
			r.status = b
		}
	}
	m.results <- r
}

// done takes a worker's result: it queues the pod's status or termination
// and queues the pod again if it changed meanwhile.
func (m *Manager) done(ctx context.Context, r result) {
	m.running--
	uid := r.uid
	name := string(uid)
	if r.pod != nil {
		name = r.pod.Namespace + "/" + r.pod.Name
	}
	switch {
	case r.err != nil && r.kill:
		if ctx.Err() == nil {
			m.log.Error("kill pod", slog.String("pod", name), slog.Any("err", r.err))
		}
	case r.evict:
		m.evictedKilled(r)
	case r.kill:
		// A deleted pod's containers all stopped: the cloud may remove it.
		if p := m.pods[uid]; r.pod != nil && p != nil && p.DeletionTimestamp != nil && !m.terminated[uid] {
			m.terminated[uid] = true
			m.out = append(m.out, queuedFrame{store.OutboxPodTerminated(string(uid)), &protocol.Frame{
				PodTerminated: &protocol.PodTerminated{UID: string(uid), Namespace: p.Namespace, Name: p.Name}}})
		}
	case r.err != nil:
		if ctx.Err() == nil {
			m.log.Error("sync pod", slog.String("pod", name), slog.Any("err", r.err))
		}
	}
	if !r.kill && r.status != nil {
		m.report(uid, r.status)
	}
	w := m.work[uid]
	if w.sync && r.err == nil {
		m.synced[uid] = syncMark{w.started, w.rv}
	} else {
		delete(m.synced, uid)
	}
	// A pod killed because the store no longer holds it is done with.
	gone := r.kill && r.err == nil && m.pods[uid] == nil
	if w.again && !gone {
		w.running, w.again = false, false
		m.queue = append(m.queue, uid)
	} else {
		delete(m.work, uid)
	}
	m.launch(ctx)
	if m.fullPending && len(m.queue) == 0 && ctx.Err() == nil {
		since := m.pendingSince
		m.fullPending, m.pendingSince = false, time.Time{}
		m.pass(ctx, true, since)
	}
	m.dropIfIdle()
	m.maybeFlush()
}

// report queues the pod's status unless it is the one last queued. A
// static pod's status goes to its mirror pod, once the mirror exists. The
// status of a pod the store no longer holds, or whose termination is
// queued, is dropped.
func (m *Manager) report(uid types.UID, status []byte) {
	p := m.pods[uid]
	if p == nil || m.terminated[uid] {
		return
	}
	if isStatic(p) {
		mp := m.mirrorOf(p)
		if mp == nil {
			return
		}
		uid = mp.UID
	}
	if bytes.Equal(status, m.lastStatus[uid]) {
		return
	}
	m.lastStatus[uid] = status
	m.out = append(m.out, queuedFrame{store.OutboxPodStatus(string(uid)), &protocol.Frame{
		PodStatus: &protocol.PodStatus{UID: string(uid), Namespace: p.Namespace, Name: p.Name, Status: status}}})
}

func isStatic(p *corev1.Pod) bool {
	_, ok := p.Annotations[configHashAnnotation]
	return ok && p.Annotations["kubernetes.io/config.source"] == "file"
}

// mirrorOf is the static pod p's current mirror pod: the one of its name
// with its hash, not being deleted. It is nil for other pods.
func (m *Manager) mirrorOf(p *corev1.Pod) *corev1.Pod {
	if !isStatic(p) {
		return nil
	}
	mp := m.mirrors[p.Namespace+"/"+p.Name]
	if mp == nil || mp.Annotations[mirrorAnnotation] != p.Annotations[configHashAnnotation] || mp.DeletionTimestamp != nil {
		return nil
	}
	return mp
}

// dropIfIdle forgets the pods read when no work is left.
func (m *Manager) dropIfIdle() {
	if len(m.work) == 0 && m.pods != nil {
		m.pods, m.mirrors = nil, nil
		if m.idleHook != nil {
			m.idleHook()
		}
	}
}

// maybeFlush queues the frames in out in the outbox now if no pod is being
// worked on or the last flush is flushEvery old, else when it will be.
func (m *Manager) maybeFlush() {
	if len(m.out) == 0 {
		return
	}
	since := time.Since(m.lastFlush)
	if len(m.work) > 0 && since < flushEvery {
		if !m.flushArmed {
			m.flushTimer.Reset(flushEvery - since)
			m.flushArmed = true
		}
		return
	}
	m.flush()
}

// flush queues out in the outbox in one transaction and tells the agent.
func (m *Manager) flush() {
	if m.flushArmed {
		m.flushTimer.Stop()
		m.flushArmed = false
	}
	m.lastFlush = time.Now()
	if len(m.out) == 0 {
		return
	}
	out := m.out
	m.out = nil
	err := m.db.Update(func(tx *store.Tx) error {
		for _, q := range out {
			if _, err := tx.Enqueue(q.key, q.frame, m.cfg.OutboxMax); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Forget what was not queued, so the next pass tries again.
		clear(m.synced)
		for _, q := range out {
			switch f := q.frame; {
			case f.PodStatus != nil:
				delete(m.lastStatus, types.UID(f.PodStatus.UID))
			case f.PodTerminated != nil:
				delete(m.terminated, types.UID(f.PodTerminated.UID))
			case f.MirrorPod != nil:
				delete(m.lastMirror, f.MirrorPod.Namespace+"/"+f.MirrorPod.Name)
			}
		}
		m.log.Error("pod sync failed", slog.Any("err", fmt.Errorf("queue statuses: %w", err)))
		return
	}
	for _, q := range out {
		if f := q.frame.PodStatus; f != nil {
			m.cfg.Reported.set(types.UID(f.UID), f.Status)
		}
	}
	m.queued()
}

// syncMirrors queues the mirror pod requests that make the cloud's mirror
// pods match the static pods: a create for each static pod whose mirror is
// missing or stale, a delete for each mirror whose static pod is gone.
func (m *Manager) syncMirrors(statics []*corev1.Pod, mirrors map[string]*corev1.Pod) {
	want := map[string]bool{}
	for _, p := range statics {
		name := p.Namespace + "/" + p.Name
		want[name] = true
		hash := p.Annotations[configHashAnnotation]
		if mp := mirrors[name]; mp != nil && mp.Annotations[mirrorAnnotation] == hash && mp.DeletionTimestamp == nil {
			m.lastMirror[name] = hash
			continue
		}
		if sent, ok := m.lastMirror[name]; ok && sent == hash {
			continue // queued already; waiting for the mirror to come down
		}
		mirror := p.DeepCopy()
		mirror.UID, mirror.ResourceVersion, mirror.Status = "", "", corev1.PodStatus{}
		mirror.Annotations[mirrorAnnotation] = hash
		b, err := protocol.EncodePod(mirror)
		if err != nil {
			m.log.Error("encode mirror pod", slog.String("pod", name), slog.Any("err", err))
			continue
		}
		m.lastMirror[name] = hash
		m.out = append(m.out, queuedFrame{"mirror/" + name, &protocol.Frame{
			MirrorPod: &protocol.MirrorPod{Namespace: p.Namespace, Name: p.Name, Pod: b}}})
	}
	for name, mp := range mirrors {
		if want[name] || mp.DeletionTimestamp != nil {
			continue
		}
		if sent, ok := m.lastMirror[name]; ok && sent == "" {
			continue
		}
		m.lastMirror[name] = ""
		m.out = append(m.out, queuedFrame{"mirror/" + name, &protocol.Frame{
			MirrorPod: &protocol.MirrorPod{Namespace: mp.Namespace, Name: mp.Name, Delete: true}}})
	}
	for name := range m.lastMirror {
		if !want[name] && mirrors[name] == nil {
			delete(m.lastMirror, name)
		}
	}
}
