package status

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"

	"github.com/tether-edge/tether/histogram"
	"github.com/tether-edge/tether/protocol"
)

// ErrRejected marks a message that is refused for good: it is invalid, the
// API server refused it as invalid or as a bad request, or it is about an object that
// is not the node's own, is gone or was replaced. The edge must not resend it.
// It is protocol.ErrRejected, so that the hub needs to know only that one.
var ErrRejected = protocol.ErrRejected

// deviceSweep is how often the Writer drops the Device writes it remembers
// that the cache shows by now (deviceWrite).
const deviceSweep = 10 * time.Minute

// ErrStopped is the error of messages given up because the Writer stopped.
// The edge may resend them to the next hub.
var ErrStopped = errors.New("status writer stopped")

// ErrSessionEnded is the error of messages given up because the session of
// their node on this replica ended (SessionEnded). The edge sends them again
// to the replica it reaches next.
var ErrSessionEnded = errors.New("the node's session on this cloudcore ended")

// kind is the kind of object a message writes.
type kind uint8

const (
	kindNodeStatus kind = iota + 1
	kindPodStatus
	kindPodTerminated
	kindEvent
	kindLease
	kindMirrorPod
	kindDeviceStatus
)

func (k kind) String() string {
	switch k {
	case kindNodeStatus:
		return "NodeStatus"
	case kindPodStatus:
		return "PodStatus"
	case kindPodTerminated:
		return "PodTerminated"
	case kindEvent:
		return "Event"
	case kindLease:
		return "Lease"
	case kindMirrorPod:
		return "MirrorPod"
	case kindDeviceStatus:
		return "DeviceStatus"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// key names the object messages are coalesced on.
type key struct {
	kind kind
	node string
	// id is the pod UID for pod messages, the device UID for device
	// status, namespace/name for mirror pods, the Event's name for events
	// and empty for node status and Leases.
	id string
}

// heartbeat is the message of a Lease renewal.
type heartbeat struct{}

// entry is the state of one key that has a message pending or being written.
type entry struct {
	// msg is the newest message of the key not yet taken by a worker, or nil.
	// It is a *protocol.NodeStatus, *protocol.PodStatus,
	// *protocol.PodTerminated, *protocol.Event, *protocol.MirrorPod,
	// *protocol.DeviceStatus or heartbeat.
	msg any
	// order is msg's order among the node's reports (zero: not fenced;
	// see fence.go).
	order protocol.StatusOrder
	// dones are the callbacks of msg and of the messages it replaced.
	dones []func(error)
	// busy is set while a worker writes an older message of the key; the key
	// is queued again when it is done.
	busy bool
	// queued is set while the key is in the queue or waits there for a retry.
	queued bool
	// ended is set when the node's session ended (SessionEnded) while a
	// worker wrote the key: that write is not retried.
	ended bool
}

// Writer writes edge nodes' reports to the API server. Its methods are safe
// for concurrent use and return at once; the writes happen on Start's
// workers.
//
// Each message method takes the name of the node whose session the message
// came from and a done callback. done is called exactly once, on a worker
// (or, for a message handed over after Start returned, at once with
// ErrStopped): with nil when the message is durable in the API server or
// needed no write, with an error wrapping ErrRejected when it is refused for
// good, or with another error when it was given up and may be resent. A
// message replaced by a newer one of the same object has its done called
// with the newer one's result. done must not block: it holds up a worker.
type Writer struct {
	client  kubernetes.Interface
	devices DeviceClient
	lister  Lister
	cfg     Config
	log     *slog.Logger

	stats counters

	mu sync.Mutex
	// queue holds the keys with a message to write, but Leases; leaseQueue
	// the Leases to renew. Both nil until Start. Guarded by mu.
	queue, leaseQueue workqueue.TypedRateLimitingInterface[key]
	// entries holds every key with a message pending or being written.
	// Guarded by mu.
	entries map[key]*entry
	// byNode indexes entries by node (SessionEnded), Leases left out.
	// Guarded by mu.
	byNode map[string]map[key]struct{}
	// stopped is set once Start has given up what was left; later messages
	// fail at once. Guarded by mu.
	stopped bool

	leaseMu sync.Mutex
	// leases holds, per node, the Lease last read or written. Guarded by
	// leaseMu.
	leases map[string]*coordinationv1.Lease

	repMu sync.Mutex
	// reports holds, per node with a session here, its last node status
	// report written (repair.go). Guarded by repMu.
	reports map[string]reported

	devMu sync.Mutex
	// devWrites holds, per Device UID, the status last written that the
	// cache may not show yet. Guarded by devMu.
	devWrites map[types.UID]*deviceWrite
}

// New returns a Writer that writes core objects with client and Device
// status with devices, and reads current objects from lister. Nothing is
// written until Start.
func New(client kubernetes.Interface, devices DeviceClient, lister Lister, cfg Config, log *slog.Logger) (*Writer, error) {
	if client == nil || devices == nil || lister == nil {
		return nil, errors.New("status writer: client, device client and lister are required")
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("status writer config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Writer{
		client:    client,
		devices:   devices,
		lister:    lister,
		cfg:       cfg,
		log:       log,
		entries:   make(map[key]*entry),
		byNode:    make(map[string]map[key]struct{}),
		leases:    make(map[string]*coordinationv1.Lease),
		reports:   make(map[string]reported),
		devWrites: make(map[types.UID]*deviceWrite),
	}, nil
}

// Start runs the workers until ctx ends, then gives up the messages not
// written yet with ErrStopped and returns nil. It may be called once.
// Messages handed over before Start wait for it.
func (w *Writer) Start(ctx context.Context) error {
	w.mu.Lock()
	if w.queue != nil || w.stopped {
		w.mu.Unlock()
		return errors.New("status writer started twice")
	}
	newQueue := func(name string) workqueue.TypedRateLimitingInterface[key] {
		return workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[key](w.cfg.RetryBaseDelay, w.cfg.RetryMaxDelay),
			workqueue.TypedRateLimitingQueueConfig[key]{Name: name, Clock: w.cfg.Clock},
		)
	}
	q, lq := newQueue("cloudcore_status"), newQueue("cloudcore_leases")
	w.queue, w.leaseQueue = q, lq
	for k, e := range w.entries {
		e.queued = true
		w.queueOf(k).Add(k)
	}
	w.mu.Unlock()
	w.log.Info("status writer started", slog.Int("workers", w.cfg.Workers), slog.Int("lease_workers", w.cfg.LeaseWorkers))

	var wg sync.WaitGroup
	wg.Go(func() { w.warmLeases(ctx) })
	for range w.cfg.Workers {
		wg.Go(func() { w.work(ctx, q) })
	}
	for range w.cfg.LeaseWorkers {
		wg.Go(func() { w.work(ctx, lq) })
	}
	wg.Go(func() {
		t := w.cfg.Clock.NewTicker(deviceSweep)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C():
				w.forgetDeviceWrites()
			}
		}
	})
	<-ctx.Done()
	q.ShutDown()
	lq.ShutDown()
	wg.Wait()

	// Keys waiting for a retry, and keys added after the shutdown, are left.
	w.mu.Lock()
	w.stopped = true
	var dones []func(error)
	for k, e := range w.entries {
		dones = append(dones, e.dones...)
		w.deleteEntry(k)
	}
	w.mu.Unlock()
	w.stats.givenUp.Add(int64(len(dones)))
	for _, done := range dones {
		done(ErrStopped)
	}
	st := w.Stats()
	w.log.Info("status writer stopped", slog.Int("given_up", len(dones)), slog.Int64("pod_statuses", st.PodStatuses),
		slog.Int64("node_statuses", st.NodeStatuses), slog.Int64("stale", st.Stale),
		slog.Int64("fence_conflicts", st.FenceConflicts), slog.Int64("fence_only", st.FenceOnly))
	return nil
}

// NodeStatus writes the status of the node's Node and adds the labels of
// m.Labels the edge may set (EdgeMaySet) that the Node lacks. It creates no
// Node: a Node is registered at join (RegisterNode), and a NodeStatus for a
// missing Node is refused (RefusedNodeMissing).
// A report with an order (o not zero) is fenced (fence.go): written only if
// it is newer than the one the Node records, and dropped as stale (done
// with nil) otherwise.
func (w *Writer) NodeStatus(node string, o protocol.StatusOrder, m *protocol.NodeStatus, done func(error)) {
	w.enqueueOrdered(key{kind: kindNodeStatus, node: node}, o, m, done)
}

// PodStatus writes the status of a pod bound to the node. A report with an
// order (o not zero) is fenced (fence.go): written only if it is newer than
// the one the pod records, and dropped as stale (done with nil) otherwise.
func (w *Writer) PodStatus(node string, o protocol.StatusOrder, m *protocol.PodStatus, done func(error)) {
	var uid string
	if m != nil {
		uid = m.UID
	}
	w.enqueueOrdered(key{kind: kindPodStatus, node: node, id: uid}, o, m, done)
}

// PodTerminated deletes a pod bound to the node whose containers all stopped
// after it was marked for deletion.
func (w *Writer) PodTerminated(node string, m *protocol.PodTerminated, done func(error)) {
	var uid string
	if m != nil {
		uid = m.UID
	}
	w.enqueue(key{kind: kindPodTerminated, node: node, id: uid}, m, done)
}

// Event creates an event about the node's Node, a pod bound to it or a
// Device attached to it, or updates the count and last time of the one
// created for the same event (see protocol.Event). Messages about one event
// are coalesced: the newest is written.
func (w *Writer) Event(node string, m *protocol.Event, done func(error)) {
	if m == nil {
		w.enqueue(key{kind: kindEvent, node: node}, m, done)
		return
	}
	w.enqueue(key{kind: kindEvent, node: node, id: eventName(node, m)}, m, done)
}

// Heartbeat renews the node's Lease, unless it was renewed less than
// Config.RenewInterval ago. It also writes back the node's last reported
// conditions if the node lifecycle controller marked them Unknown
// meanwhile (repair.go): the node is connected.
func (w *Writer) Heartbeat(node string) {
	w.repairIfMarkedUnknown(node)
	if !w.leaseDue(node, w.cfg.Clock.Now()) {
		w.stats.unchanged.Add(1)
		return
	}
	w.enqueue(key{kind: kindLease, node: node}, heartbeat{}, nil)
}

// SessionEnded gives up, with ErrSessionEnded, the messages of node not
// written yet, those waiting for a retry included, and keeps a write in
// progress from being retried. The hub calls it when the node has no session
// on this replica any more: the edge sends every message not acknowledged
// again, to the replica it reaches next, which may write newer ones; written
// here later (after a retry's back-off, or behind a queue), an older status
// would land after a newer one and take the object back. Leases are kept
// (a renewal is never older than another). A write already sent to the API
// server cannot be recalled: it lands within WriteTimeout.
func (w *Writer) SessionEnded(node string) {
	w.forget(node)
	w.mu.Lock()
	var dones []func(error)
	for k := range w.byNode[node] {
		e := w.entries[k]
		if e.busy {
			e.ended = true
			dones = append(dones, e.dones...)
			e.msg, e.dones = nil, nil
			continue
		}
		dones = append(dones, e.dones...)
		w.deleteEntry(k)
		if w.queue != nil {
			w.queueOf(k).Forget(k)
		}
	}
	w.mu.Unlock()
	if len(dones) > 0 {
		w.stats.givenUp.Add(int64(len(dones)))
		w.log.Debug("session ended: its messages not written are given up", slog.String("node", node),
			slog.Int("messages", len(dones)))
	}
	for _, done := range dones {
		done(ErrSessionEnded)
	}
}

// enqueue makes msg the pending message of k. A nil done is allowed. After
// Start returned, done is called at once with ErrStopped.
func (w *Writer) enqueue(k key, msg any, done func(error)) {
	w.enqueueOrdered(k, protocol.StatusOrder{}, msg, done)
}

// enqueueOrdered is enqueue for a message with order o. A message older
// than the pending one of k (both with an order) is dropped as stale at
// once: its done is called with nil.
func (w *Writer) enqueueOrdered(k key, o protocol.StatusOrder, msg any, done func(error)) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		if done != nil {
			w.stats.givenUp.Add(1)
			done(ErrStopped)
		}
		return
	}
	e := w.entries[k]
	if e == nil {
		e = new(entry)
		w.entries[k] = e
		if k.kind != kindLease {
			if w.byNode[k.node] == nil {
				w.byNode[k.node] = make(map[key]struct{})
			}
			w.byNode[k.node][k] = struct{}{}
		}
	}
	if e.msg != nil && !o.IsZero() && o.Before(e.order) {
		w.mu.Unlock()
		w.stats.stale.Add(1)
		if done != nil {
			done(nil)
		}
		return
	}
	if e.msg != nil {
		w.stats.coalesced.Add(1)
	}
	e.msg, e.order, e.ended = msg, o, false
	if done != nil {
		e.dones = append(e.dones, done)
	}
	if w.queue != nil && !e.busy && !e.queued {
		e.queued = true
		w.queueOf(k).Add(k)
	}
	w.mu.Unlock()
}

// queueOf returns the queue of k's lane. Call with mu held, after Start.
func (w *Writer) queueOf(k key) workqueue.TypedRateLimitingInterface[key] {
	if k.kind == kindLease {
		return w.leaseQueue
	}
	return w.queue
}

// work writes the keys of q until q shuts down.
func (w *Writer) work(ctx context.Context, q workqueue.TypedRateLimitingInterface[key]) {
	for {
		k, shutdown := q.Get()
		if shutdown {
			return
		}
		w.process(ctx, q, k)
		q.Done(k)
	}
}

// process writes the pending message of k, then requeues k for a retry or
// for a newer message, or calls the callbacks.
func (w *Writer) process(ctx context.Context, q workqueue.TypedRateLimitingInterface[key], k key) {
	w.mu.Lock()
	e := w.entries[k]
	if e == nil || e.msg == nil {
		w.mu.Unlock()
		return
	}
	msg, order, dones := e.msg, e.order, e.dones
	e.msg, e.order, e.dones, e.busy, e.queued = nil, protocol.StatusOrder{}, nil, true, false
	w.mu.Unlock()

	err := ErrStopped
	if ctx.Err() == nil {
		start := time.Now()
		err = w.write(ctx, k, order, msg)
		if int(k.kind) < len(w.stats.latency) {
			w.stats.latency[k.kind].Observe(time.Since(start))
		}
	}
	if fromAPI(err) {
		w.stats.apiErrors.Add(1)
	}
	err = classify(err)
	if err != nil && ctx.Err() != nil && !errors.Is(err, ErrRejected) && !errors.Is(err, ErrStopped) {
		err = fmt.Errorf("%w: %w", ErrStopped, err)
	}
	attempt := q.NumRequeues(k) + 1
	w.mu.Lock()
	ended := e.ended && e.msg == nil
	w.mu.Unlock()
	if ended && retryable(err) {
		err = fmt.Errorf("%w: %w", ErrSessionEnded, err)
	}
	if retryable(err) && !ended && ctx.Err() == nil && attempt <= w.cfg.MaxRetries {
		w.stats.retries.Add(1)
		w.log.Debug("status write failed, will retry", logKey(k), slog.Int("attempt", attempt), slog.Any("error", err))
		w.mu.Lock()
		if e.msg == nil {
			e.msg, e.order = msg, order
		} else {
			w.stats.coalesced.Add(1) // the newer message is retried instead
		}
		e.dones = append(dones, e.dones...)
		e.busy, e.queued = false, true
		q.AddRateLimited(k)
		w.mu.Unlock()
		return
	}

	q.Forget(k)
	w.mu.Lock()
	e.busy = false
	if e.msg != nil {
		e.queued = true
		q.Add(k)
	} else {
		w.deleteEntry(k)
	}
	w.mu.Unlock()

	switch {
	case err == nil:
	case errors.Is(err, ErrRejected):
		w.stats.rejected.Add(int64(len(dones)))
		if reason := refusalOf(err); reason != 0 {
			w.countRefusal(k, reason, len(dones), err)
		} else {
			w.log.Info("status message rejected", logKey(k), slog.Any("error", err))
		}
	default:
		w.stats.givenUp.Add(int64(len(dones)))
		w.log.Warn("status message given up", logKey(k), slog.Int("attempts", attempt), slog.Any("error", err))
	}
	for _, done := range dones {
		done(err)
	}
}

// deleteEntry removes k's entry. Call with mu held.
func (w *Writer) deleteEntry(k key) {
	delete(w.entries, k)
	if keys := w.byNode[k.node]; keys != nil {
		delete(keys, k)
		if len(keys) == 0 {
			delete(w.byNode, k.node)
		}
	}
}

func logKey(k key) slog.Attr {
	return slog.Group("object", slog.String("kind", k.kind.String()), slog.String("node", k.node), slog.String("id", k.id))
}

// write writes one message; it returns an error wrapping ErrRejected when the
// message must not be retried.
func (w *Writer) write(ctx context.Context, k key, o protocol.StatusOrder, msg any) error {
	if err := protocol.ValidateNodeName(k.node); err != nil {
		return reject(err)
	}
	ctx, cancel := context.WithTimeout(ctx, w.cfg.WriteTimeout)
	defer cancel()
	// Only edge nodes write anything, Leases included. The Lease lane
	// reads a Node missing from the cache through its own client, so that
	// renewals do not queue behind status writes.
	client := w.client
	if k.kind == kindLease {
		client = w.leaseClient()
	}
	n, err := w.edgeNode(ctx, client, k.node)
	if err != nil {
		if k.kind == kindLease && errors.Is(err, ErrRejected) {
			w.cacheLease(k.node, nil)
		}
		return err
	}
	switch m := msg.(type) {
	case *protocol.NodeStatus:
		return w.writeNodeStatus(ctx, n, o, m)
	case *protocol.PodStatus:
		return w.writePodStatus(ctx, k.node, o, m)
	case *protocol.PodTerminated:
		return w.deletePod(ctx, k.node, m)
	case *protocol.Event:
		return w.writeEvent(ctx, n, m)
	case heartbeat:
		return w.renewLease(ctx, k.node)
	case repairConditions:
		return w.repairNodeStatus(ctx, n)
	case *protocol.MirrorPod:
		return w.writeMirrorPod(ctx, n, m)
	case *protocol.DeviceStatus:
		return w.writeDeviceStatus(ctx, k.node, o, m)
	}
	return reject(fmt.Errorf("no writer for %T", msg))
}

// reject marks err as a refusal for good.
func reject(err error) error {
	return fmt.Errorf("%w: %w", ErrRejected, err)
}

// classify marks the API server's permanent refusals as rejections.
// Forbidden is not one of them: RBAC that is still propagating, or an
// admission webhook that denies while it is down, answers 403 for a while,
// and the message would be lost for good (the edge drops a rejected outbox
// entry). It is retried instead (see retryable) and, if it persists, given
// up, which lets the edge send it again later.
func classify(err error) error {
	if err == nil || errors.Is(err, ErrRejected) {
		return err
	}
	if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) ||
		apierrors.IsRequestEntityTooLargeError(err) || apierrors.IsMethodNotSupported(err) ||
		apierrors.IsNotAcceptable(err) || apierrors.IsUnsupportedMediaType(err) {
		return reject(err)
	}
	return err
}

// fromAPI reports whether err is an answer of the API server or an error of
// the transport, rather than the writer's own refusal.
func fromAPI(err error) bool {
	if err == nil {
		return false
	}
	var status apierrors.APIStatus
	return errors.As(err, &status) || !errors.Is(err, ErrRejected) && !errors.Is(err, ErrStopped)
}

// retryable reports whether a failed write may succeed if tried again.
func retryable(err error) bool {
	if err == nil || errors.Is(err, ErrRejected) || errors.Is(err, ErrStopped) {
		return false
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		// Not an answer of the API server: a transport error or the timeout
		// of the call.
		return true
	}
	code := status.Status().Code
	return code >= 500 || apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) ||
		apierrors.IsTimeout(err) || apierrors.IsConflict(err) || apierrors.IsForbidden(err)
}

// Stats counts what a Writer did since New.
type Stats struct {
	// WriteLatency is the time a message's write took (its API calls: a
	// get and a patch, say; a retry is another write), by the message's
	// kind (NodeStatus, PodStatus, PodTerminated, Event, Lease, MirrorPod,
	// DeviceStatus). Kinds never written are left out.
	WriteLatency map[string]histogram.Snapshot
	// NodeLabelPatches, NodeStatuses, PodStatuses, PodDeletes, Events,
	// LeaseCreates and LeaseRenewals count successful API writes by kind.
	// (The Writer creates no Node: RegisterNode does, at join.)
	NodeLabelPatches int64
	NodeStatuses     int64
	PodStatuses      int64
	PodDeletes       int64
	Events           int64
	LeaseCreates     int64
	LeaseRenewals    int64
	// LeasesWarmed counts the expired node Leases cached at start
	// (warmLeases), whose first renewal needs no read.
	LeasesWarmed int64
	// EventUpdates counts updates of an Event's count and last time (an
	// event the edge aggregated).
	EventUpdates int64
	// MirrorWrites counts mirror pod creations and deletions.
	MirrorWrites int64
	// DeviceStatuses counts Device status writes; DeviceUnchanged the
	// device status messages that needed none (also in Unchanged).
	DeviceStatuses  int64
	DeviceUnchanged int64
	// Unchanged counts messages that needed no write: an empty status
	// patch, a pod already deleted, an event already created, a heartbeat
	// within RenewInterval of the last renewal, an unchanged device status.
	Unchanged int64
	// Coalesced counts messages replaced by a newer one of the same object
	// before they were written.
	Coalesced int64
	// Stale counts fenced reports dropped because a report of the same
	// object with a newer order was written already (by this replica or
	// another) or was pending: a late write of a replica the edge had left
	// (fence.go). They are acknowledged as done.
	Stale int64
	// NodeRepairs counts the node conditions written back after the node
	// lifecycle controller marked a connected node Unknown (repair.go).
	NodeRepairs int64
	// FenceConflicts counts fenced writes that found the object changed
	// since it was read (the resourceVersion precondition failed) and read
	// it again (a get) to decide anew; FenceOnly the writes that changed
	// only the recorded order, the status being the same already.
	FenceConflicts int64
	FenceOnly      int64
	// Retries counts writes retried after a retryable error.
	Retries int64
	// Rejected counts messages refused for good (ErrRejected), refusals
	// included.
	Rejected int64
	// Refused counts, by reason, the messages refused because the node may
	// not write the object (see Refusal).
	Refused Refusals
	// GivenUp counts messages given up otherwise: out of retries, a
	// non-retryable error, or the Writer stopped.
	GivenUp int64
	// APIErrors counts writes that failed with an error of the API server or
	// the transport, whatever happened to them then.
	APIErrors int64
}

// counters backs Stats.
type counters struct {
	// latency is each kind's write time (its API calls, retries apart),
	// by kind.
	latency                                                                                      [kindDeviceStatus + 1]histogram.Latency
	nodeLabelPatches, nodeStatuses, podStatuses, podDeletes, events, leaseCreates, leaseRenewals atomic.Int64
	mirrorWrites, deviceStatuses, deviceUnchanged, eventUpdates                                  atomic.Int64
	unchanged, coalesced, retries, rejected, givenUp, apiErrors                                  atomic.Int64
	stale, fenceConflicts, fenceOnly, leasesWarmed, nodeRepairs                                  atomic.Int64
	refused                                                                                      refusalCounters
}

// Stats returns the counts so far, for logs and benchmarks.
func (w *Writer) Stats() Stats {
	c := &w.stats
	return Stats{
		NodeLabelPatches: c.nodeLabelPatches.Load(),
		NodeStatuses:     c.nodeStatuses.Load(),
		PodStatuses:      c.podStatuses.Load(),
		PodDeletes:       c.podDeletes.Load(),
		Events:           c.events.Load(),
		LeaseCreates:     c.leaseCreates.Load(),
		LeaseRenewals:    c.leaseRenewals.Load(),
		LeasesWarmed:     c.leasesWarmed.Load(),
		EventUpdates:     c.eventUpdates.Load(),
		MirrorWrites:     c.mirrorWrites.Load(),
		DeviceStatuses:   c.deviceStatuses.Load(),
		DeviceUnchanged:  c.deviceUnchanged.Load(),
		Unchanged:        c.unchanged.Load(),
		Coalesced:        c.coalesced.Load(),
		Stale:            c.stale.Load(),
		FenceConflicts:   c.fenceConflicts.Load(),
		FenceOnly:        c.fenceOnly.Load(),
		NodeRepairs:      c.nodeRepairs.Load(),
		Retries:          c.retries.Load(),
		Rejected:         c.rejected.Load(),
		GivenUp:          c.givenUp.Load(),
		APIErrors:        c.apiErrors.Load(),
		Refused:          c.refused.load(),
		WriteLatency:     c.writeLatency(),
	}
}

func (c *counters) writeLatency() map[string]histogram.Snapshot {
	out := map[string]histogram.Snapshot{}
	for k := kindNodeStatus; k <= kindDeviceStatus; k++ {
		if h := c.latency[k].Snapshot(); h.Count > 0 {
			out[k.String()] = h
		}
	}
	return out
}
