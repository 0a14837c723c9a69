// Package pods runs the pods the edge store holds. Its Manager is
// level-based: on every change and on a timer it compares the pods in the
// store with the runtime, starts, syncs and kills what differs, and queues
// each pod's status in the outbox when it changed. It needs nothing from the
// cloud, so pods keep running, and come back after a restart, while the link
// is down.
package pods

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
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
}

func (c *Config) validate() error {
	if c.ResyncInterval == 0 {
		c.ResyncInterval = 10 * time.Second
	}
	if c.OutboxMax == 0 {
		c.OutboxMax = 10000
	}
	if c.ResyncInterval < 0 || c.OutboxMax < 0 {
		return fmt.Errorf("pods: resync interval %s and outbox max %d must not be negative", c.ResyncInterval, c.OutboxMax)
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
	// resend asks the next sync to report every status again.
	resend atomic.Bool

	// static, if set, adds the node's static pods.
	static StaticPods

	// Owned by the Start goroutine:
	lastStatus map[types.UID][]byte // the last status queued per reported pod UID
	terminated map[types.UID]bool   // pods whose termination is queued
	lastMirror map[string]string    // ns/name -> config hash (or "" for delete) of the mirror request queued
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
		lastStatus: map[types.UID][]byte{}, terminated: map[types.UID]bool{}, lastMirror: map[string]string{}}, nil
}

// SetStaticPods adds a source of static pods. Call it before Start.
func (m *Manager) SetStaticPods(s StaticPods) { m.static = s }

// Changed tells the Manager that pods or what they use changed. It never
// blocks.
func (m *Manager) Changed() {
	select {
	case m.kickc <- struct{}{}:
	default:
	}
}

// ObjectsChanged implements agent.Observer.
func (m *Manager) ObjectsChanged(map[protocol.Kind]bool) { m.Changed() }

// Connected implements agent.Observer: every pod's status is reported again
// (the status writer in the cloud skips those that did not change).
func (m *Manager) Connected() {
	m.resend.Store(true)
	m.Changed()
}

// Start syncs pods until ctx ends.
func (m *Manager) Start(ctx context.Context) error {
	t := time.NewTicker(m.cfg.ResyncInterval)
	defer t.Stop()
	for {
		if err := m.sync(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("pod sync failed", slog.Any("err", err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-m.kickc:
		case <-t.C:
		}
	}
}

// flushEvery bounds how long a status waits in a long sync pass.
const flushEvery = 100 * time.Millisecond

type queuedFrame struct {
	key   string
	frame *protocol.Frame
}

func (m *Manager) sync(ctx context.Context) error {
	if m.resend.Swap(false) {
		clear(m.lastStatus)
		clear(m.lastMirror)
	}
	var pods []*corev1.Pod
	mirrors := map[string]*corev1.Pod{} // ns/name
	err := m.db.View(func(tx *store.Tx) error {
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
		return fmt.Errorf("read pods: %w", err)
	}
	var out []queuedFrame
	if m.static != nil {
		statics := m.static.Pods()
		pods = append(pods, statics...)
		out = m.syncMirrors(statics, mirrors, out)
	}
	want := make(map[types.UID]bool, len(pods))
	lastFlush := time.Now()
	for _, p := range pods {
		want[p.UID] = true
		if p.DeletionTimestamp != nil {
			if m.terminated[p.UID] {
				continue
			}
			grace := 30 * time.Second
			if p.DeletionGracePeriodSeconds != nil {
				grace = time.Duration(*p.DeletionGracePeriodSeconds) * time.Second
			}
			if err := m.rt.KillPod(ctx, p.UID, grace); err != nil {
				m.log.Error("kill pod", slog.String("pod", p.Namespace+"/"+p.Name), slog.Any("err", err))
				continue
			}
			m.terminated[p.UID] = true
			out = append(out, queuedFrame{store.OutboxPodTerminated(string(p.UID)), &protocol.Frame{
				PodTerminated: &protocol.PodTerminated{UID: string(p.UID), Namespace: p.Namespace, Name: p.Name}}})
			continue
		}
		st, err := m.rt.SyncPod(ctx, p)
		if err != nil {
			m.log.Error("sync pod", slog.String("pod", p.Namespace+"/"+p.Name), slog.Any("err", err))
			if st == nil {
				continue
			}
		}
		b, err := protocol.EncodePodStatus(st)
		if err != nil {
			return fmt.Errorf("encode status of %s/%s: %w", p.Namespace, p.Name, err)
		}
		// A static pod's status goes to its mirror pod, once the mirror
		// exists.
		uid := p.UID
		if hash, ok := p.Annotations[configHashAnnotation]; ok && p.Annotations["kubernetes.io/config.source"] == "file" {
			mp := mirrors[p.Namespace+"/"+p.Name]
			if mp == nil || mp.Annotations[mirrorAnnotation] != hash || mp.DeletionTimestamp != nil {
				continue
			}
			uid = mp.UID
			want[uid] = true // keeps the mirror's last status below
		}
		if bytes.Equal(b, m.lastStatus[uid]) {
			continue
		}
		m.lastStatus[uid] = b
		out = append(out, queuedFrame{store.OutboxPodStatus(string(uid)), &protocol.Frame{
			PodStatus: &protocol.PodStatus{UID: string(uid), Namespace: p.Namespace, Name: p.Name, Status: b}}})
		// A pass that starts many containers takes a while: report what is
		// done every flushEvery instead of holding every status to the end.
		if time.Since(lastFlush) > flushEvery {
			if err := m.flush(out); err != nil {
				return err
			}
			out, lastFlush = out[:0], time.Now()
		}
	}
	// Pods the runtime runs that the store no longer holds: deleted by force
	// or while the edge was away.
	running, err := m.rt.Pods(ctx)
	if err != nil {
		return fmt.Errorf("list runtime pods: %w", err)
	}
	for _, uid := range running {
		if !want[uid] {
			m.log.Info("killing pod no longer wanted", slog.String("uid", string(uid)))
			if err := m.rt.KillPod(ctx, uid, 0); err != nil {
				m.log.Error("kill pod", slog.String("uid", string(uid)), slog.Any("err", err))
			}
		}
	}
	for uid := range m.lastStatus {
		if !want[uid] {
			delete(m.lastStatus, uid)
		}
	}
	for uid := range m.terminated {
		if !want[uid] {
			delete(m.terminated, uid)
		}
	}
	return m.flush(out)
}

// flush queues out in the outbox in one transaction and tells the agent.
func (m *Manager) flush(out []queuedFrame) error {
	if len(out) == 0 {
		return nil
	}
	err := m.db.Update(func(tx *store.Tx) error {
		for _, q := range out {
			if _, err := tx.Enqueue(q.key, q.frame, m.cfg.OutboxMax); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Forget what was not queued, so the next sync tries again.
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
		return fmt.Errorf("queue statuses: %w", err)
	}
	m.queued()
	return nil
}

// syncMirrors queues the mirror pod requests that make the cloud's mirror
// pods match the static pods: a create for each static pod whose mirror is
// missing or stale, a delete for each mirror whose static pod is gone.
func (m *Manager) syncMirrors(statics []*corev1.Pod, mirrors map[string]*corev1.Pod, out []queuedFrame) []queuedFrame {
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
		out = append(out, queuedFrame{"mirror/" + name, &protocol.Frame{
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
		out = append(out, queuedFrame{"mirror/" + name, &protocol.Frame{
			MirrorPod: &protocol.MirrorPod{Namespace: mp.Namespace, Name: mp.Name, Delete: true}}})
	}
	for name := range m.lastMirror {
		if !want[name] && mirrors[name] == nil {
			delete(m.lastMirror, name)
		}
	}
	return out
}
