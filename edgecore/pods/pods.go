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

	// Owned by the Start goroutine:
	lastStatus map[types.UID][]byte // the last status queued per pod
	terminated map[types.UID]bool   // pods whose termination is queued
}

// New builds a Manager. queued is called after statuses were added to the
// outbox.
func New(cfg Config, db *store.DB, rt runtime.Runtime, queued func(), log *slog.Logger) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Manager{cfg: cfg, db: db, rt: rt, log: log, queued: queued, kickc: make(chan struct{}, 1),
		lastStatus: map[types.UID][]byte{}, terminated: map[types.UID]bool{}}, nil
}

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

type queuedFrame struct {
	key   string
	frame *protocol.Frame
}

func (m *Manager) sync(ctx context.Context) error {
	if m.resend.Swap(false) {
		clear(m.lastStatus)
	}
	var pods []*corev1.Pod
	err := m.db.View(func(tx *store.Tx) error {
		return tx.ForEachObject(protocol.KindPod, func(o *protocol.Object) error {
			p, err := protocol.DecodePod(o.Data)
			if err != nil {
				m.log.Error("undecodable pod in store", slog.String("uid", o.UID), slog.Any("err", err))
				return nil
			}
			pods = append(pods, p)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("read pods: %w", err)
	}
	want := make(map[types.UID]bool, len(pods))
	var out []queuedFrame
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
		if bytes.Equal(b, m.lastStatus[p.UID]) {
			continue
		}
		m.lastStatus[p.UID] = b
		out = append(out, queuedFrame{store.OutboxPodStatus(string(p.UID)), &protocol.Frame{
			PodStatus: &protocol.PodStatus{UID: string(p.UID), Namespace: p.Namespace, Name: p.Name, Status: b}}})
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
	if len(out) == 0 {
		return nil
	}
	err = m.db.Update(func(tx *store.Tx) error {
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
			if q.frame.PodStatus != nil {
				delete(m.lastStatus, types.UID(q.frame.PodStatus.UID))
			} else {
				delete(m.terminated, types.UID(q.frame.PodTerminated.UID))
			}
		}
		return fmt.Errorf("queue statuses: %w", err)
	}
	m.queued()
	return nil
}
