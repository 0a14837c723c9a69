package agent

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"time"

	devicesapi "github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// Engine is the session's delivery state as a pure state machine: the
// upstream window (outbox frames sent and not yet acknowledged, resent when
// they stay so too long, refused ones kept for a newer hub) and the apply
// of what the hub sends (objects checked, committed with the outbox
// acknowledgements in one transaction, then acknowledged). It does no IO,
// takes no locks, starts no goroutines and reads no clock: Engine.Step
// takes an Input and the current time and returns an Output, which the
// Agent's session goroutine carries out. The tests drive it with scripts
// (testdata/engine/*.txt).
//
// An Output.Read must be answered with OutboxRead, and an Output.Commit
// with Committed, before any other input, unless the session ends first
// (Down): the shell may leave them unanswered then.
type Engine struct {
	window      int
	resendAfter time.Duration

	// up: a session is open.
	up bool
	// sentUpTo is the Seq of the last outbox frame sent (or skipped) in
	// this session; inflight the frames sent and not acknowledged, with
	// when they were sent.
	sentUpTo uint64
	inflight map[uint64]time.Time
	// refused are outbox frames the hub answered ErrorUnknownMessage (an
	// older hub): not sent again in this session, kept for a newer hub.
	refused map[uint64]bool
	// reading: an Output.Read waits for its OutboxRead.
	reading bool
	// applying is the batch whose Commit waits for Committed.
	applying *applying
}

// applying is a batch from the hub being committed.
type applying struct {
	ack     protocol.Ack
	upAcked []uint64
	commit  Commit
	kinds   map[protocol.Kind]bool
	objects int
}

// NewEngine returns an Engine with at most window outbox frames in flight,
// resent when the oldest is unacknowledged for resendAfter.
func NewEngine(window int, resendAfter time.Duration) *Engine {
	return &Engine{window: window, resendAfter: resendAfter}
}

// Input is one event for the Engine: Up, Down, OutboxChanged, OutboxRead,
// Received, Committed or Tick.
type Input interface{ agentInput() }

// Up: a session with the hub opened. The outbox is sent from its start.
type Up struct{}

// Down: the session ended. What was in flight stays in the outbox, sent
// again in the next session.
type Down struct{}

// OutboxChanged: something was queued in the outbox.
type OutboxChanged struct{}

// OutboxRead answers Output.Read: the outbox entries after Read.After, in
// Seq order, at most Read.Max of them.
type OutboxRead struct {
	Items []store.OutboxItem
	Err   error
}

// Received: frames from the hub that arrived together (at most
// MaxBatch), applied as one.
type Received struct{ Frames []*protocol.Frame }

// Committed answers Output.Commit.
type Committed struct{ Err error }

// Tick: time passed; the window is checked for frames unacknowledged too
// long.
type Tick struct{}

func (Up) agentInput()            {}
func (Down) agentInput()          {}
func (OutboxChanged) agentInput() {}
func (OutboxRead) agentInput()    {}
func (Received) agentInput()      {}
func (Committed) agentInput()     {}
func (Tick) agentInput()          {}

// MaxBatch is the most frames of one Received.
const MaxBatch = 512

// Output is what the session does after a Step, in this order: log, call
// the commit hook (Hook), send Send, tell the observers (Changed,
// Connected), commit Commit (and Step Committed), read Read (and Step
// OutboxRead), and end the session with Fail.
type Output struct {
	Log []LogLine
	// Hook is what a commit took, for Config.CommitHook.
	Hook *Commit
	// Send are frames to write to the hub, in order.
	Send []Send
	// Changed lists the kinds and objects a commit changed
	// (Observer.ObjectsChanged); nil if none.
	Changed *Changed
	// Connected: tell the observers a session started.
	Connected bool
	// Commit is one store transaction to make; Committed says how it went.
	Commit *StoreWrite
	// Read asks for outbox entries (OutboxRead).
	Read *ReadOutbox
	// Resync is the hub's ResyncDone, for State.
	Resync *protocol.ResyncDone
	// ObjectFrames counts the Upsert and Delete frames applied, for State.
	ObjectFrames int
	// Certificate is a certificate the hub issued, to install.
	Certificate []byte
	// Review is the hub's answer to an access review (Reviews.Answered).
	Review *protocol.AccessReviewResult
	// APIResponses are the hub's answers to relayed writes
	// (Relay.Answered).
	APIResponses []*protocol.APIResponse
	// Fail ends the session with this error.
	Fail error
}

// Send is a frame to write: Frame, or Raw (an outbox entry, encoded).
type Send struct {
	Frame *protocol.Frame
	Raw   []byte
	// Seq is Raw's outbox Seq.
	Seq uint64
}

// Changed is what Observer.ObjectsChanged hears.
type Changed struct {
	Kinds map[protocol.Kind]bool
	Refs  []protocol.ObjectRef
}

// StoreWrite is one transaction: objects put and deleted, in the order the
// hub sent them, and the outbox entries the hub acknowledged removed.
type StoreWrite struct {
	Objects []ObjectWrite
	Acked   []uint64
}

// ObjectWrite is a Put or a Delete.
type ObjectWrite struct {
	Put    *protocol.Object
	Delete *protocol.Delete
}

// ReadOutbox asks for at most Max outbox entries after After.
type ReadOutbox struct {
	After uint64
	Max   int
}

// LogLine is a message to log.
type LogLine struct {
	Level slog.Level
	Msg   string
	Attrs []slog.Attr
}

func (o *Output) log(level slog.Level, msg string, attrs ...slog.Attr) {
	o.Log = append(o.Log, LogLine{Level: level, Msg: msg, Attrs: attrs})
}

// Step takes one input at now.
func (e *Engine) Step(now time.Time, in Input) Output {
	var o Output
	switch in := in.(type) {
	case Up:
		e.up = true
		e.sentUpTo, e.inflight, e.refused = 0, map[uint64]time.Time{}, nil
		o.Connected = true
		e.fill(&o)
	case Down:
		// A Read or Commit asked for in the session that ended may never
		// be answered: the shell stops carrying out an Output at the
		// first failed send. Left set, either would stop every later
		// session from reading the outbox (nothing sent upstream until
		// edgecore restarts).
		e.up = false
		e.inflight, e.refused, e.reading, e.applying = nil, nil, false, nil
	case OutboxChanged:
		e.fill(&o)
	case OutboxRead:
		if !e.reading {
			return o // the answer to a read of an ended session
		}
		e.reading = false
		if in.Err != nil {
			o.Fail = fmt.Errorf("read outbox: %w", in.Err)
			return o
		}
		e.send(&o, now, in.Items)
	case Received:
		if e.up {
			e.receive(&o, in.Frames)
		}
	case Committed:
		e.committed(&o, in.Err)
	case Tick:
		if e.up && e.stale(now) {
			o.log(slog.LevelWarn, "outbox unacknowledged, sending it again", slog.Int("inflight", len(e.inflight)))
			e.inflight, e.sentUpTo = map[uint64]time.Time{}, 0
			e.fill(&o)
		}
	}
	return o
}

// fill asks for the outbox frames that fit in the window.
func (e *Engine) fill(o *Output) {
	if !e.up || e.reading || e.applying != nil {
		return
	}
	room := e.window - len(e.inflight)
	if room <= 0 {
		return
	}
	e.reading = true
	// Refused entries are read and skipped: read enough to fill the room
	// whatever they are.
	o.Read = &ReadOutbox{After: e.sentUpTo, Max: room + len(e.refused)}
}

// send sends the entries read until the window is full.
func (e *Engine) send(o *Output, now time.Time, items []store.OutboxItem) {
	if !e.up {
		return
	}
	room := e.window - len(e.inflight)
	for _, it := range items {
		if e.refused[it.Seq] {
			e.sentUpTo = it.Seq
			continue
		}
		if room <= 0 {
			break
		}
		o.Send = append(o.Send, Send{Raw: it.Frame, Seq: it.Seq})
		e.inflight[it.Seq] = now
		e.sentUpTo = it.Seq
		room--
	}
}

// stale reports whether a frame in flight was sent resendAfter ago.
func (e *Engine) stale(now time.Time) bool {
	cutoff := now.Add(-e.resendAfter)
	for _, t := range e.inflight {
		if t.Before(cutoff) {
			return true
		}
	}
	return false
}

// receive handles a batch of frames from the hub: objects are committed in
// one transaction with the outbox acknowledgements, then acknowledged.
func (e *Engine) receive(o *Output, batch []*protocol.Frame) {
	a := &applying{kinds: map[protocol.Kind]bool{}}
	w := &StoreWrite{}
	for _, f := range batch {
		switch {
		case f.Upsert != nil:
			a.objects++
			obj := &f.Upsert.Object
			if err := checkObject(obj); err != nil {
				o.log(slog.LevelWarn, "rejecting object from hub", slog.String("kind", obj.Kind.String()),
					slog.String("name", obj.Namespace+"/"+obj.Name), slog.Any("err", err))
				a.ack.Rejected = append(a.ack.Rejected, protocol.Rejection{Seq: f.Seq, Reason: err.Error()})
				continue
			}
			a.ack.Seqs = append(a.ack.Seqs, f.Seq)
			a.kinds[obj.Kind] = true
			w.Objects = append(w.Objects, ObjectWrite{Put: obj})
			a.commit.Upserted = append(a.commit.Upserted, obj.Ref())
		case f.Delete != nil:
			a.objects++
			a.ack.Seqs = append(a.ack.Seqs, f.Seq)
			a.kinds[f.Delete.Kind] = true
			w.Objects = append(w.Objects, ObjectWrite{Delete: f.Delete})
			a.commit.Deleted = append(a.commit.Deleted, protocol.ObjectRef{Kind: f.Delete.Kind, UID: f.Delete.UID})
		case f.Ack != nil:
			a.upAcked = append(a.upAcked, f.Ack.Seqs...)
			for _, r := range f.Ack.Rejected {
				// Refused for good (a write the API server forbids, bad
				// content, an event over the rate): delivered, not sent
				// again.
				o.log(slog.LevelWarn, "hub rejected an update", slog.Uint64("seq", r.Seq), slog.String("reason", r.Reason))
				a.upAcked = append(a.upAcked, r.Seq)
			}
		case f.Heartbeat != nil:
		case f.ResyncDone != nil:
			r := *f.ResyncDone
			o.Resync = &r
			o.log(slog.LevelInfo, "resync complete", slog.Uint64("upserts", uint64(r.Upserts)),
				slog.Uint64("deletes", uint64(r.Deletes)), slog.Uint64("bytes", r.Bytes))
		case f.CertIssued != nil:
			o.Certificate = f.CertIssued.Certificate
		case f.AccessReviewResult != nil:
			o.Review = f.AccessReviewResult
		case f.APIResponse != nil:
			o.APIResponses = append(o.APIResponses, f.APIResponse)
		case f.Error != nil:
			o.log(slog.LevelWarn, "hub reported an error", slog.String("code", f.Error.Code.String()),
				slog.String("message", f.Error.Message), slog.Uint64("seq", f.Error.Seq))
			if f.Error.Fatal() {
				// Nothing of the batch is committed or acknowledged: the
				// hub sends it again in the next session.
				o.Fail = f.Error
				return
			}
			if _, sent := e.inflight[f.Error.Seq]; f.Error.Code == protocol.ErrorUnknownMessage && sent {
				// An older hub cannot take this message: keep it for a
				// newer one, but do not send it again to this one.
				if e.refused == nil {
					e.refused = map[uint64]bool{}
				}
				e.refused[f.Error.Seq] = true
				delete(e.inflight, f.Error.Seq)
			}
		default:
			o.Send = append(o.Send, Send{Frame: &protocol.Frame{Error: &protocol.Error{Code: protocol.ErrorUnexpected,
				Seq: f.Seq, Message: f.Type() + " is not sent by a hub"}}})
		}
	}
	if a.objects == 0 && len(a.upAcked) == 0 {
		e.fill(o) // a refused frame made room
		return
	}
	w.Acked = a.upAcked
	e.applying = a
	o.Commit = w
}

// committed takes the outcome of the batch's Commit.
func (e *Engine) committed(o *Output, err error) {
	a := e.applying
	e.applying = nil
	if a == nil {
		panic("agent: Committed without Commit")
	}
	if err != nil {
		// Nothing was acknowledged: the hub sends it all again.
		o.Fail = fmt.Errorf("commit: %w", err)
		return
	}
	if a.objects > 0 {
		o.ObjectFrames = a.objects
		c := a.commit
		o.Hook = &c
		o.Send = append(o.Send, Send{Frame: &protocol.Frame{Ack: &a.ack}})
		if len(a.kinds) > 0 {
			o.Changed = &Changed{Kinds: a.kinds, Refs: append(slices.Clip(c.Upserted), c.Deleted...)}
		}
	}
	for _, seq := range a.upAcked {
		delete(e.inflight, seq)
	}
	e.fill(o)
}

// checkObject makes sure the object's data decodes as its kind before it is
// stored, so that nothing undecodable reaches the runtime.
func checkObject(o *protocol.Object) error {
	var err error
	switch o.Kind {
	case protocol.KindPod:
		_, err = protocol.DecodePod(o.Data)
	case protocol.KindConfigMap:
		_, err = protocol.DecodeConfigMap(o.Data)
	case protocol.KindSecret:
		_, err = protocol.DecodeSecret(o.Data)
	case protocol.KindDeviceModel:
		err = json.Unmarshal(o.Data, new(devicesapi.DeviceModel))
	case protocol.KindDevice:
		err = json.Unmarshal(o.Data, new(devicesapi.Device))
	case protocol.KindService:
		_, err = protocol.DecodeService(o.Data)
	case protocol.KindEndpointSlice:
		_, err = protocol.DecodeEndpointSlice(o.Data)
	default:
		err = fmt.Errorf("unknown kind %d", o.Kind)
	}
	return err
}
