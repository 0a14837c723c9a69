// Package pods runs the pods the edge store holds. Its Manager is
// level-based: on every change and on a timer it compares the pods in the
// store with the runtime, starts, syncs and kills what differs, and queues
// each pod's status in the outbox when it changed. It needs nothing from the
// cloud, so pods keep running, and come back after a restart, while the link
// is down.
//
// The decisions are Engine's, a pure state machine (engine.go) tested with
// scripts (testdata/*.txt); the Manager is its shell: one goroutine, Start's,
// owns the Engine and does the IO it asks for (store reads, runtime calls on
// workers, outbox writes, the flush timer). Pods are worked on in parallel,
// like the kubelet's pod workers but bounded: at most Config.PodWorkers
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
	"github.com/tether-edge/tether/histogram"
	"github.com/tether-edge/tether/protocol"
)

// Config configures the Manager.
type Config struct {
	// ResyncInterval is how often every pod is synced even without a change
	// (default 10s).
	ResyncInterval time.Duration
	// PodWorkers is how many pods are synced or killed at once (default
	// DefaultPodWorkers). One pod's syncs and kill never overlap.
	PodWorkers int
	// Reported, if set, gets every status once it is queued in the outbox
	// (see Reported); the metaserver reads it.
	Reported *Reported
	// Changes, if set, is where the Manager hears of changes (Changes.Changed);
	// made before the Manager, it can be handed to what reports changes
	// (the runtime, the static pod source) first. Default: one of its own.
	Changes *Changes
	// Static, if set, gives the node's static pods.
	Static StaticPods
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
	if c.Changes == nil {
		c.Changes = NewChanges()
	}
	if c.Reported == nil {
		c.Reported = NewReported()
	}
	if c.PodWorkers == 0 {
		c.PodWorkers = DefaultPodWorkers
	}
	if c.ResyncInterval < 0 {
		return fmt.Errorf("pods: resync interval %s must not be negative", c.ResyncInterval)
	}
	if c.PodWorkers < 0 {
		return fmt.Errorf("pods: podWorkers %d must not be negative", c.PodWorkers)
	}
	return nil
}

// Manager reconciles the store's pods with the runtime: the shell of an
// Engine.
type Manager struct {
	cfg Config
	db  *store.DB
	rt  runtime.Runtime
	log *slog.Logger
	// evictc carries Evict's requests to the Start goroutine.
	evictc chan evictReq
	// resend asks the next full pass to report every status again.
	resend atomic.Bool
	// results carries the workers' results to the Start goroutine; its
	// buffer holds one per worker, so a worker never waits.
	results chan Done
	// wg joins the workers.
	wg sync.WaitGroup
	// idleHook, if set, is called by the Start goroutine when the last work
	// is done (for tests).
	idleHook func()
	// syncLatency and killLatency time the workers' SyncPod and KillPod.
	syncLatency, killLatency histogram.Latency

	// Owned by the Start goroutine:
	eng        *Engine
	flushTimer *time.Timer
	// pendingEvict is the Evict request waiting for its read.
	pendingEvict *evictReq
}

// Changes is where the Manager hears that pods or what they use changed.
// Changed may be called from any goroutine and never blocks.
type Changes struct {
	// at is when the newest change not yet taken was announced, in Unix
	// nanoseconds (0: none).
	at atomic.Int64
	c  chan struct{}
}

// NewChanges returns a Changes for Config.Changes.
func NewChanges() *Changes { return &Changes{c: make(chan struct{}, 1)} }

// Changed tells the Manager that pods or what they use changed.
func (c *Changes) Changed() {
	c.at.Store(time.Now().UnixNano())
	select {
	case c.c <- struct{}{}:
	default:
	}
}

// take returns when the newest change not taken yet was announced (zero:
// none) and forgets it.
func (c *Changes) take() time.Time {
	if ns := c.at.Swap(0); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
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

// New builds a Manager. The agent hears of the statuses it queues from the
// store (store.DB.OutboxChanged).
func New(cfg Config, db *store.DB, rt runtime.Runtime, log *slog.Logger) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, db: db, rt: rt, log: log, evictc: make(chan evictReq),
		results: make(chan Done, cfg.PodWorkers), eng: NewEngine(cfg.PodWorkers)}, nil
}

// Changed tells the Manager that pods or what they use changed. It never
// blocks.
func (m *Manager) Changed() { m.cfg.Changes.Changed() }

// Images returns the images of every pod the node holds, whether it runs
// or not: the store's pods (also while the cloud is away) and the static
// pods, with their init and ephemeral containers. Image garbage collection
// keeps them. It may be called from any goroutine.
func (m *Manager) Images() ([]string, error) { return Images(m.db, m.cfg.Static) }

// Images returns the images of every pod the node holds: the pods of db and
// of static (which may be nil). See Manager.Images.
func Images(db *store.DB, static StaticPods) ([]string, error) {
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
	err := db.View(func(tx *store.Tx) error {
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
	if static != nil {
		for _, p := range static.Pods() {
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
	m.step(ctx, Resync{})
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.cfg.Changes.c:
			// The changes announced before this are all seen by what
			// starts after it; a kick with none announced was passed
			// already.
			since := m.cfg.Changes.take()
			if m.resend.Swap(false) {
				m.step(ctx, Reconnected{}) // a kick for a change now
			} else {
				m.step(ctx, Kick{Since: since})
			}
		case <-t.C:
			m.step(ctx, Resync{})
		case r := <-m.results:
			m.step(ctx, r)
		case req := <-m.evictc:
			m.pendingEvict = &req
			m.step(ctx, Evict{Resource: req.resource})
			if m.pendingEvict != nil {
				panic("pods: Evict unanswered")
			}
		case <-m.flushTimer.C:
			m.step(ctx, FlushDue{})
		}
	}
}

// stop waits for the running workers and queues what they reported.
func (m *Manager) stop(ctx context.Context) {
	m.step(ctx, Stop{})
	for m.eng.running > 0 {
		m.step(ctx, <-m.results)
	}
	m.wg.Wait()
	m.step(ctx, FlushDue{})
}

// step runs the Engine on in and does what it asks.
func (m *Manager) step(ctx context.Context, in Input) {
	m.do(ctx, m.eng.Step(time.Now(), in))
}

func (m *Manager) do(ctx context.Context, o Output) {
	for _, l := range o.Log {
		m.log.LogAttrs(ctx, l.Level, l.Msg, l.Attrs...)
	}
	if o.Evicted != nil {
		m.pendingEvict.reply <- *o.Evicted
		m.pendingEvict = nil
	}
	for _, j := range o.Jobs {
		m.wg.Add(1)
		go m.runJob(ctx, j)
	}
	if o.Keep != nil {
		m.cfg.Reported.retain(func(uid types.UID) bool { return o.Keep[uid] })
	}
	if o.StopFlush {
		m.flushTimer.Stop()
	}
	if !o.FlushAt.IsZero() {
		m.flushTimer.Reset(time.Until(o.FlushAt))
	}
	if o.Enqueue != nil {
		m.do(ctx, m.eng.Step(time.Now(), Flushed{Err: m.enqueue(o.Enqueue)}))
	}
	if o.Read != nil {
		m.do(ctx, m.eng.Step(time.Now(), m.read(ctx, o.Read.Full)))
	}
	// Last, so that a test woken by it finds the statuses in the outbox:
	// an idle Engine has flushed them.
	if o.Idle && m.idleHook != nil {
		m.idleHook()
	}
}

// read reads the pods for a pass; with full, the runtime's too.
func (m *Manager) read(ctx context.Context, full bool) PodsRead {
	var r PodsRead
	r.Err = m.db.View(func(tx *store.Tx) error {
		return tx.ForEachObject(protocol.KindPod, func(o *protocol.Object) error {
			p, err := protocol.DecodePod(o.Data)
			if err != nil {
				m.log.Error("undecodable pod in store", slog.String("uid", o.UID), slog.Any("err", err))
				return nil
			}
			r.Stored = append(r.Stored, p)
			return nil
		})
	})
	if r.Err != nil {
		r.Err = fmt.Errorf("read pods: %w", r.Err)
		return r
	}
	if m.cfg.Static != nil {
		r.Static = m.cfg.Static.Pods()
	}
	if full {
		running, err := m.rt.Pods(ctx)
		if err != nil {
			if ctx.Err() == nil {
				m.log.Error("pod sync failed", slog.Any("err", fmt.Errorf("list runtime pods: %w", err)))
			}
		} else {
			r.Running, r.RunningOK = running, true
		}
	}
	return r
}

// runJob is a worker: it runs j and sends the result back.
func (m *Manager) runJob(ctx context.Context, j Job) {
	defer m.wg.Done()
	r := Done{Job: j}
	start := time.Now()
	if j.Kill {
		r.Err = m.rt.KillPod(ctx, j.UID, j.Grace)
		m.killLatency.Observe(time.Since(start))
	} else {
		st, err := m.rt.SyncPod(ctx, j.Pod)
		m.syncLatency.Observe(time.Since(start))
		r.Err = err
		if st != nil {
			b, err := protocol.EncodePodStatus(st)
			if err != nil {
				r.Err = fmt.Errorf("encode status: %w", err)
			}
			r.Status = b
		}
	}
	m.results <- r
}

// SyncLatency is how long the runtime's SyncPod took, per call.
func (m *Manager) SyncLatency() *histogram.Latency { return &m.syncLatency }

// KillLatency is how long the runtime's KillPod took, per call.
func (m *Manager) KillLatency() *histogram.Latency { return &m.killLatency }

// enqueue queues frames in the outbox in one transaction; the store tells
// the agent. The statuses queued go to Reported.
func (m *Manager) enqueue(frames []Queued) error {
	err := m.db.Update(func(tx *store.Tx) error {
		for _, q := range frames {
			if _, err := tx.Enqueue(q.Key, q.Frame); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, q := range frames {
		if f := q.Frame.PodStatus; f != nil {
			m.cfg.Reported.set(types.UID(f.UID), f.Status)
		}
	}
	return nil
}
