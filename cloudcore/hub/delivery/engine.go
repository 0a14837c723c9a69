package delivery

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tether-edge/tether/protocol"
)

// Config configures an Engine.
type Config struct {
	// Window is the most object messages unacknowledged at once (>= 1).
	Window int
	// ResendAfter is how long a message may stay unacknowledged before it
	// is sent again (> 0).
	ResendAfter time.Duration
	// AliveInterval is how often the engine asks for the node to be reported
	// alive (Output.Alive), jittered by ±25% so that sessions started
	// together do not report together for ever; 0 never does.
	AliveInterval time.Duration
	// Version is the session's protocol version: objects of kinds newer than
	// it are neither sent nor counted as wanted.
	Version uint32
	// Seed seeds the jitter of AliveInterval; the same seed and inputs give
	// the same outputs.
	Seed uint64
}

func (c *Config) validate() error {
	if c.Window < 1 || c.ResendAfter <= 0 || c.AliveInterval < 0 {
		return fmt.Errorf("delivery: window %d, resend after %s, alive interval %s: "+
			"want window >= 1, resend after > 0, alive interval >= 0", c.Window, c.ResendAfter, c.AliveInterval)
	}
	if c.Version == 0 {
		return errors.New("delivery: protocol version 0")
	}
	return nil
}

// Input is one event for the engine: Connected, Changed, Desired, Sent,
// Acked, Tick or Disconnected.
type Input interface{ input() }

// Connected: the node said Hello. Its inventories are what it holds. Any
// state of a previous connection is forgotten, and a resync starts; the
// output asks for Reconcile and reports the node alive.
type Connected struct {
	Inventory, NewInventory []protocol.ObjectRef
}

// Changed: the source says the node's objects may have changed. The output
// asks for Reconcile.
type Changed struct{}

// Desired is every object the node should hold now (Source.Desired: Data
// unset, in the order of protocol.Kinds), and the kinds the source serves
// (Source.Serves): objects of other kinds are never deleted. The engine
// keeps neither slice past Step.
type Desired struct {
	Objects []protocol.Object
	Served  []protocol.Kind
}

// Sent says what became of each message of the previous Output.Send.
type Sent struct {
	Results []Result
}

// Result is what became of one message.
type Result struct {
	Seq     uint64
	Outcome Outcome
	// ResourceVersion is the version encoded for an Upsert (the source's
	// current one, which may be newer than the desired set said).
	ResourceVersion string
	// Bytes is the encoded frame's size (Outcome Queued).
	Bytes int
}

// Outcome is what became of a message the engine asked to send.
type Outcome uint8

const (
	// Queued: the frame is on its way to the node.
	Queued Outcome = iota
	// Gone: the object no longer exists (or could not be read); nothing
	// went. It is not tried again before the next Changed or Tick (a
	// change notification follows).
	Gone
	// TooLarge: the frame could not be encoded. The object counts as
	// delivered at that version and is not retried until it changes.
	TooLarge
)

func (o Outcome) String() string {
	switch o {
	case Queued:
		return "queued"
	case Gone:
		return "gone"
	case TooLarge:
		return "too-large"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Acked is an Ack from the node: Seqs applied, Rejected refused for good
// (both count as delivered).
type Acked struct {
	Seqs     []uint64
	Rejected []protocol.Rejection
}

// Tick: the time of Output.Timer came (or any time: a Tick early does
// nothing harmful).
type Tick struct{}

// Disconnected: the connection is gone. The engine forgets the session and
// ignores every input until the next Connected.
type Disconnected struct{}

func (Connected) input()    {}
func (Changed) input()      {}
func (Desired) input()      {}
func (Sent) input()         {}
func (Acked) input()        {}
func (Tick) input()         {}
func (Disconnected) input() {}

// Output is what the shell does after a Step: count Metrics, report the node
// alive, log, send ResyncDone and arm its timer for Timer; then queue Send
// and step Sent, or else, if Reconcile, step Desired (Reconcile stays set
// until a Desired comes, so one asked for while messages wait for their
// Sent is not lost).
type Output struct {
	// Send lists the object messages to queue, in order. For an Upsert,
	// Object has no Data: the shell encodes the source's current version.
	// Every message must be answered by a Result in the next Step (Sent).
	// The slice is valid until the next Step.
	Send []Message
	// Reconcile asks for the node's desired set (a Desired input). It
	// stays set in every Output until one comes.
	Reconcile bool
	// ResyncDone, if set, is the resync's end, to send to the node.
	ResyncDone *Resync
	// Alive asks for the node to be reported alive (Upstream.Heartbeat).
	Alive bool
	// Timer is when to Tick next; zero for never.
	Timer time.Time
	// Resent counts messages unacknowledged for ResendAfter, forgotten to
	// be sent again.
	Resent int
	// Rejected lists the messages the node refused, for the log.
	Rejected []Rejected
	// Lost counts the messages in flight when the connection went
	// (Disconnected).
	Lost int
	// AckLatency lists, for each message acknowledged or rejected in this
	// step, how long after it was sent the answer came (the hub's ack
	// latency histogram). A duplicate answer, or one for a message already
	// settled by a newer one, has none. The slice is valid until the next
	// Step.
	AckLatency []time.Duration
	// Metrics are counters to add to the hub's.
	Metrics Metrics
}

// Message is one object message to send: an Upsert of Object (without
// Data), or, if Delete, a Delete of Object's kind, UID, namespace and name.
type Message struct {
	Seq    uint64
	Delete bool
	Object protocol.Object
}

// Resync is the end of a session's resync.
type Resync struct {
	protocol.ResyncDone
	// Took is the time since Connected.
	Took time.Duration
}

// Rejected is an object message the node refused.
type Rejected struct {
	Seq    uint64
	Kind   protocol.Kind
	UID    string
	Reason string
}

// Metrics are counter increments.
type Metrics struct {
	// ObjectMessages counts the object messages queued.
	ObjectMessages int64
	// Resyncs counts resyncs completed; ResyncMessages and ResyncBytes the
	// messages queued during resyncs and their bytes.
	Resyncs, ResyncMessages, ResyncBytes int64
	// DeleteScans counts the walks of the acknowledged objects for those to
	// delete, DeleteScanned the objects they visited.
	DeleteScans, DeleteScanned int64
}

type key struct {
	kind protocol.Kind
	uid  string
}

// held is what the node acknowledged holding of one object.
type held struct {
	rv, namespace, name string
	// unsure is set when a message of the object expired unacknowledged:
	// the node may or may not have applied it, so the object counts as
	// held at no version (it is deleted if the node should not hold it,
	// sent again if it should).
	unsure bool
}

// flight is an object message sent and not yet acknowledged.
type flight struct {
	key  key
	del  bool
	held held
	// prev is the message of the same object in flight when this one was
	// sent (0: none).
	prev   uint64
	sentAt time.Time
}

type resyncState struct {
	start            time.Time
	upserts, deletes int
	bytes            int64
}

// Engine is one session's delivery state. It does no IO, takes no locks and
// reads no clock; it is not safe for concurrent use: one goroutine owns it.
type Engine struct {
	cfg Config
	rng *rand.Rand

	connected bool
	// now is the latest time given; time never goes back.
	now time.Time
	// acked is what the node acknowledged holding, by object.
	acked map[key]held
	// inflight is the messages unacknowledged, by seq; byKey the newest of
	// each object.
	inflight map[uint64]*flight
	byKey    map[key]uint64
	// order is the seqs sent, oldest first; those no longer in flight are
	// skipped when met.
	order []uint64
	seq   uint64
	// want is the desired version of each object of the last Desired.
	want map[key]string
	// skip is the objects whose upsert came back Gone since the last
	// Changed or Tick: reconciles do not try them meanwhile, so that a
	// source whose desired set lists an object it cannot encode does not
	// make the engine and its shell spin.
	skip map[key]struct{}
	// blocked is set when the last reconcile stopped at the window.
	blocked bool
	// reconcile is set when a Desired is wanted.
	reconcile bool
	resync    *resyncState
	// dels are the deletes found by the last walk of acked, in the order
	// they go out; those before delsNext went (or were no longer due).
	// Until all went, reconciles take them from here rather than walking
	// acked again: a Hello may list many more objects than the node should
	// hold, and a resync reconciles at every batch of acks.
	dels     []key
	delsNext int
	delsDue  bool
	// nextAlive is when Output.Alive is due next.
	nextAlive time.Time

	out     Output
	sendBuf []Message
	ackBuf  []time.Duration
}

// New returns an engine for one session, which starts with Connected.
func New(cfg Config) (*Engine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Engine{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0))}, nil
}

// InFlight is the number of messages sent and not yet acknowledged (the
// unacknowledged window).
func (e *Engine) InFlight() int { return len(e.inflight) }

// Step applies one input at time now and returns what to do.
func (e *Engine) Step(now time.Time, in Input) Output {
	if now.After(e.now) {
		e.now = now
	}
	now = e.now
	clear(e.sendBuf)
	e.out = Output{Send: e.sendBuf[:0], AckLatency: e.ackBuf[:0]}
	switch in := in.(type) {
	case Connected:
		e.connect(now, in)
	case Disconnected:
		if e.connected {
			e.out.Lost = len(e.inflight)
			e.disconnect()
		}
	default:
		if !e.connected {
			break
		}
		switch in := in.(type) {
		case Changed:
			clear(e.skip)
			e.reconcile = true
		case Desired:
			e.reconcile = false
			e.doReconcile(now, in)
		case Sent:
			e.sent(in)
		case Acked:
			e.ack(in)
		case Tick:
			e.tick(now)
		}
	}
	e.sendBuf = e.out.Send
	e.ackBuf = e.out.AckLatency
	e.out.Reconcile = e.connected && e.reconcile
	e.out.Timer = e.timer()
	return e.out
}

func (e *Engine) connect(now time.Time, in Connected) {
	e.disconnect()
	e.connected = true
	e.acked = make(map[key]held, len(in.Inventory)+len(in.NewInventory))
	for _, inv := range [][]protocol.ObjectRef{in.Inventory, in.NewInventory} {
		for _, r := range inv {
			e.acked[key{r.Kind, r.UID}] = held{rv: r.ResourceVersion}
		}
	}
	e.inflight = map[uint64]*flight{}
	e.byKey = map[key]uint64{}
	e.want = map[key]string{}
	e.skip = map[key]struct{}{}
	e.resync = &resyncState{start: now}
	e.reconcile = true
	e.out.Alive = true
	if e.cfg.AliveInterval > 0 {
		e.nextAlive = now.Add(e.jitter(e.cfg.AliveInterval))
	}
}

func (e *Engine) disconnect() {
	*e = Engine{cfg: e.cfg, rng: e.rng, now: e.now, seq: e.seq, sendBuf: e.sendBuf}
}

// jitter returns d ±25%.
func (e *Engine) jitter(d time.Duration) time.Duration {
	return d*3/4 + time.Duration(e.rng.Int64N(int64(d/2)+1))
}

// timer is when the next Tick is due: the oldest message's resend or the
// next alive report.
func (e *Engine) timer() time.Time {
	if !e.connected {
		return time.Time{}
	}
	var t time.Time
	for len(e.order) > 0 {
		if fl := e.inflight[e.order[0]]; fl != nil {
			t = fl.sentAt.Add(e.cfg.ResendAfter)
			break
		}
		e.order = e.order[1:]
	}
	if !e.nextAlive.IsZero() && (t.IsZero() || e.nextAlive.Before(t)) {
		t = e.nextAlive
	}
	return t
}

func (e *Engine) tick(now time.Time) {
	if !e.nextAlive.IsZero() && !now.Before(e.nextAlive) {
		e.out.Alive = true
		e.nextAlive = now.Add(e.jitter(e.cfg.AliveInterval))
	}
	// Messages are in order of sending, so of sentAt: the expired ones
	// come first.
	cutoff := now.Add(-e.cfg.ResendAfter)
	for len(e.order) > 0 {
		seq := e.order[0]
		if fl := e.inflight[seq]; fl != nil {
			if fl.sentAt.After(cutoff) {
				break
			}
			e.forget(seq, fl)
			h := fl.held
			if a, ok := e.acked[fl.key]; ok {
				h = a
			}
			h.unsure = true
			e.acked[fl.key] = h
			e.out.Resent++
		}
		e.order = e.order[1:]
	}
	if e.out.Resent > 0 || len(e.skip) > 0 {
		clear(e.skip)
		e.reconcile = true
	}
}

// forget drops the message seq from the messages in flight.
func (e *Engine) forget(seq uint64, fl *flight) {
	delete(e.inflight, seq)
	if e.byKey[fl.key] != seq {
		return
	}
	if prev := e.inflight[fl.prev]; prev != nil && prev.key == fl.key {
		e.byKey[fl.key] = fl.prev // an older one is still in flight
	} else {
		delete(e.byKey, fl.key)
	}
}

func (e *Engine) ack(in Acked) {
	stale := false
	for _, seq := range in.Seqs {
		stale = e.acknowledged(seq) || stale
	}
	for _, r := range in.Rejected {
		if fl := e.inflight[r.Seq]; fl != nil {
			e.out.Rejected = append(e.out.Rejected, Rejected{Seq: r.Seq, Kind: fl.key.kind, UID: fl.key.uid,
				Reason: r.Reason})
		}
		stale = e.acknowledged(r.Seq) || stale
	}
	if stale || e.blocked || e.resync != nil {
		e.reconcile = true
	}
}

// acknowledged records that the node applied message seq, and the older
// messages of the same object. It reports whether what the node now holds
// differs from what the last Desired wanted.
func (e *Engine) acknowledged(seq uint64) (stale bool) {
	fl := e.inflight[seq]
	if fl == nil {
		return false // a duplicate, expired and resent, settled by a newer one, or never ours
	}
	e.forget(seq, fl)
	e.out.AckLatency = append(e.out.AckLatency, e.now.Sub(fl.sentAt))
	for p := fl.prev; p != 0; {
		old := e.inflight[p]
		if old == nil || old.key != fl.key {
			break
		}
		e.forget(p, old)
		p = old.prev
	}
	rv, wanted := e.want[fl.key]
	if fl.del {
		delete(e.acked, fl.key)
		return wanted
	}
	e.acked[fl.key] = fl.held
	return !wanted || rv != fl.held.rv
}

func (e *Engine) sent(in Sent) {
	for _, r := range in.Results {
		fl := e.inflight[r.Seq]
		if fl == nil {
			continue
		}
		switch r.Outcome {
		case Queued:
			if !fl.del && r.ResourceVersion != "" {
				fl.held.rv = r.ResourceVersion
			}
			e.out.Metrics.ObjectMessages++
			if rs := e.resync; rs != nil {
				if fl.del {
					rs.deletes++
				} else {
					rs.upserts++
				}
				rs.bytes += int64(r.Bytes)
				e.out.Metrics.ResyncMessages++
				e.out.Metrics.ResyncBytes += int64(r.Bytes)
			}
		case TooLarge:
			e.forget(r.Seq, fl)
			if r.ResourceVersion != "" {
				fl.held.rv = r.ResourceVersion
			}
			e.acked[fl.key] = fl.held
		default: // Gone
			e.forget(r.Seq, fl)
			e.skip[fl.key] = struct{}{}
		}
		if r.Outcome != Queued && (e.blocked || e.resync != nil) {
			// Room came back, or the resync may be over.
			e.reconcile = true
		}
	}
}

// doReconcile sends what differs between the node's desired set and what
// it acknowledged, within the window.
func (e *Engine) doReconcile(now time.Time, d Desired) {
	clear(e.want)
	e.blocked = false
	for i := range d.Objects {
		o := &d.Objects[i]
		if o.Kind.Since() > e.cfg.Version {
			continue // the node does not know the kind: it holds none
		}
		k := key{o.Kind, o.UID}
		e.want[k] = o.ResourceVersion
		if a, ok := e.acked[k]; ok && !a.unsure && a.rv == o.ResourceVersion {
			continue
		}
		if seq, ok := e.byKey[k]; ok && !e.inflight[seq].del && e.inflight[seq].held.rv == o.ResourceVersion {
			continue
		}
		if _, ok := e.skip[k]; ok {
			continue
		}
		if len(e.inflight) >= e.cfg.Window {
			e.blocked = true
			continue // keep filling want, for the deletes below
		}
		e.send(now, k, false, held{rv: o.ResourceVersion, namespace: o.Namespace, name: o.Name})
	}
	for fresh := false; !fresh; {
		if !e.delsDue {
			e.scanDeletes(d.Served)
			fresh = true
		}
		for e.delsNext < len(e.dels) {
			k := e.dels[e.delsNext]
			if !e.deleteDue(k, d.Served) {
				e.delsNext++
				continue
			}
			if len(e.inflight) >= e.cfg.Window {
				e.blocked = true
				break
			}
			e.delsNext++
			e.send(now, k, true, e.acked[k])
		}
		if e.delsNext < len(e.dels) {
			break // at the window
		}
		// All went: the next reconcile walks acked again, and this one does
		// if its list was from an earlier walk (acks since may have added
		// objects to delete).
		e.delsDue, e.delsNext = false, 0
		if clear(e.dels); cap(e.dels) > 1024 {
			e.dels = nil
		}
		e.dels = e.dels[:0]
	}
	if r := e.resync; r != nil && !e.blocked && len(e.inflight) == 0 {
		e.resync = nil
		e.out.Metrics.Resyncs++
		e.out.ResyncDone = &Resync{ResyncDone: protocol.ResyncDone{Upserts: uint32(r.upserts),
			Deletes: uint32(r.deletes), Bytes: uint64(r.bytes)}, Took: now.Sub(r.start)}
	}
}

// send asks for a message and tracks it as in flight.
func (e *Engine) send(now time.Time, k key, del bool, h held) {
	e.seq++
	e.out.Send = append(e.out.Send, Message{Seq: e.seq, Delete: del, Object: protocol.Object{Kind: k.kind,
		UID: k.uid, Namespace: h.namespace, Name: h.name, ResourceVersion: h.rv}})
	e.inflight[e.seq] = &flight{key: k, del: del, held: h, prev: e.byKey[k], sentAt: now}
	e.byKey[k] = e.seq
	e.order = append(e.order, e.seq)
}

// scanDeletes walks acked for the objects to delete, in the order they go
// out, into dels.
func (e *Engine) scanDeletes(served []protocol.Kind) {
	e.out.Metrics.DeleteScans++
	e.out.Metrics.DeleteScanned += int64(len(e.acked))
	e.dels, e.delsNext, e.delsDue = e.dels[:0], 0, true
	for k := range e.acked {
		if e.deleteDue(k, served) {
			e.dels = append(e.dels, k)
		}
	}
	// Users go before what they use: pods before configmaps and secrets,
	// devices before their models (the reverse of protocol.Kinds). Within a
	// kind, by UID, so that the order does not depend on the map's.
	slices.SortFunc(e.dels, func(a, b key) int {
		if c := int(kindRank[b.kind]) - int(kindRank[a.kind]); c != 0 {
			return c
		}
		switch {
		case a.uid < b.uid:
			return -1
		case a.uid > b.uid:
			return 1
		}
		return 0
	})
}

// deleteDue reports whether the node holds k, should not, and was not sent
// its delete yet.
func (e *Engine) deleteDue(k key, served []protocol.Kind) bool {
	if _, ok := e.acked[k]; !ok {
		return false
	}
	if _, ok := e.want[k]; ok {
		return false
	}
	if seq, ok := e.byKey[k]; ok && e.inflight[seq].del {
		return false
	}
	// Of a kind not served, it is not known yet whether the node should
	// keep it.
	return slices.Contains(served, k.kind)
}

// kindRank is the place of each kind in protocol.Kinds.
var kindRank = func() (r [256]uint8) {
	for i, k := range protocol.Kinds {
		r[k] = uint8(i)
	}
	return r
}()
