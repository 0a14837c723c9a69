package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/tether-edge/tether/cloudcore/hub/delivery"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
	"github.com/tether-edge/tether/streams"
)

// session is one node's connection. Fields below "owner state" belong to the
// goroutine running run and are touched by nothing else. The node's delivery
// state is a delivery.Engine: the owner steps it with what happens (the
// Hello, change notifications, acks, its timer) and does what it says
// (queue frames, read the desired set, report the node alive).
type session struct {
	h    *Hub
	node string
	// id is the identity of the node's certificate; set before run.
	id string
	// notAfter is the expiry of the node's newest certificate (unix
	// nanoseconds): the one it connected with, then the one it renewed in
	// the session (it proved it holds the key by signing the request).
	notAfter atomic.Int64
	// version is the protocol version of the session.
	version uint32
	// epoch is the edge store's epoch (Hello.StoreEpoch) in a session of
	// version protocol.StatusOrderSince or newer; zero otherwise: the
	// node's reports are then not fenced (order).
	epoch uint64
	// started is when the session was registered (rebalancing moves no
	// session younger than RebalanceConfig.Settle).
	started time.Time
	// renewing is set while a CertRequest is being answered; another one
	// meanwhile is refused.
	renewing atomic.Bool
	// reviewing is set while an AccessReview is being answered; another
	// one meanwhile is refused.
	reviewing atomic.Bool
	conn      *websocket.Conn
	log       *slog.Logger
	sendq     *sendQueue
	// streamq holds the stream frames (streams.go), sent when sendq is
	// empty.
	streamq *sendQueue
	kickc   chan struct{}
	// kickedAt is when the oldest kick not yet taken by the owner came
	// (Unix nanoseconds, 0: none), for the dispatch latency.
	kickedAt atomic.Int64
	// unacked is the engine's window in use after its last step (read by
	// Hub.Stats).
	unacked atomic.Int64
	// queuedInStep counts the object messages queued by the current step
	// (owner only).
	queuedInStep int
	upc          chan struct{}
	stopc        chan struct{}

	stopOnce sync.Once
	// stopErr is why the session stops; written once, before stopc closes.
	stopErr *protocol.Error

	upMu sync.Mutex
	// upAcks and upRejected are upstream messages whose writes finished,
	// waiting to be acknowledged; guarded by upMu.
	upAcks     []uint64
	upRejected []protocol.Rejection

	// upInFlight counts the upstream messages read and not done yet: the
	// reader stops at MaxUpstreamInFlight and waits for a token in upRoom.
	upInFlight atomic.Int64
	upRoom     chan struct{}
	// upLimit is the node's UpstreamRate; the reader's alone.
	upLimit *rate.Limiter
	// relaying counts the relayed writes in flight (relay.go).
	relaying atomic.Int32
	// streams are the session's byte streams (streams.go); nil before
	// protocol version 3.
	streams *streams.Mux

	// owner state
	eng *delivery.Engine
	// hello is the node's Hello until run gives it to eng.
	hello *protocol.Hello
	// timer is eng's timer, armed for timerAt (zero: stopped).
	timer   *time.Timer
	timerAt time.Time
	// buf, served, results and acks are storage reused between steps.
	buf     []protocol.Object
	served  []protocol.Kind
	results []delivery.Result
	acks    delivery.Acked
}

// epochOf returns the store epoch of hello in a session of version, or zero
// before protocol.StatusOrderSince.
func epochOf(hello *protocol.Hello, version uint32) uint64 {
	if version < protocol.StatusOrderSince {
		return 0
	}
	return hello.StoreEpoch
}

// order returns the order of the upstream frame f among the node's reports
// (protocol.StatusOrder), zero (no fence) if the edge gave no epoch or f no
// Seq.
func (s *session) order(f *protocol.Frame) protocol.StatusOrder {
	if s.epoch == 0 || f.Seq == 0 {
		return protocol.StatusOrder{}
	}
	return protocol.StatusOrder{Epoch: s.epoch, Seq: f.Seq}
}

func newSession(h *Hub, conn *websocket.Conn, hello *protocol.Hello) *session {
	version := min(hello.ProtocolVersion, protocol.Version)
	eng, err := delivery.New(delivery.Config{Window: h.cfg.Window, ResendAfter: h.cfg.ResendAfter,
		AliveInterval: h.cfg.AliveInterval, Version: version, Seed: rand.Uint64()})
	if err != nil {
		// Config.validate and the handshake admit only what the engine
		// takes.
		panic(fmt.Sprintf("hub: session of node %s: %v", hello.NodeName, err))
	}
	s := &session{
		h:       h,
		node:    hello.NodeName,
		version: version,
		epoch:   epochOf(hello, version),
		conn:    conn,
		log:     h.log.With(slog.String("node", hello.NodeName)),
		sendq:   newSendQueue(h.cfg.SendQueue),
		streamq: newSendQueue(streamQueue),
		kickc:   make(chan struct{}, 1),
		upc:     make(chan struct{}, 1),
		stopc:   make(chan struct{}),
		eng:     eng,
		hello:   hello,
		upRoom:  make(chan struct{}, 1),
		upLimit: rate.NewLimiter(rate.Limit(h.cfg.UpstreamRate), h.cfg.UpstreamBurst),
	}
	s.newStreams()
	return s
}

// kick asks the owner to reconcile. It never blocks.
func (s *session) kick() {
	s.kickedAt.CompareAndSwap(0, time.Now().UnixNano())
	select {
	case s.kickc <- struct{}{}:
	default:
	}
}

// stop ends the session, telling the peer e (nil: close without a word);
// it says whether this call stopped it (a session already stopping is left
// as it is, with its first reason).
func (s *session) stop(e *protocol.Error) (stopped bool) {
	s.stopOnce.Do(func() {
		s.stopErr = e
		close(s.stopc)
		stopped = true
	})
	return stopped
}

func (s *session) upstreamDone(seq uint64) func(error) {
	return func(err error) {
		if s.upInFlight.Add(-1) < int64(s.h.cfg.MaxUpstreamInFlight) {
			select {
			case s.upRoom <- struct{}{}:
			default:
			}
		}
		s.upMu.Lock()
		switch {
		case err == nil:
			s.upAcks = append(s.upAcks, seq)
		case errors.Is(err, protocol.ErrRejected):
			s.upRejected = append(s.upRejected, protocol.Rejection{Seq: seq, Reason: err.Error()})
		default:
			// Given up for now: no ack, the edge sends it again later.
			s.log.Warn("upstream write failed", slog.Uint64("seq", seq), slog.Any("err", err))
		}
		s.upMu.Unlock()
		select {
		case s.upc <- struct{}{}:
		default:
		}
	}
}

func (s *session) run(ctx context.Context) {
	s.log.Info("edge connected", slog.String("remote", s.conn.RemoteAddr().String()),
		slog.Int("inventory", len(s.hello.Inventory)+len(s.hello.NewInventory)))
	frames := make(chan *protocol.Frame, 64)
	readerDone, writerDone := make(chan struct{}), make(chan struct{})
	go func() { defer close(readerDone); s.readLoop(frames) }()
	go func() { defer close(writerDone); s.writeLoop() }()

	s.timer = time.NewTimer(time.Hour)
	s.timer.Stop()
	defer s.timer.Stop()
	s.step(delivery.Connected{Inventory: s.hello.Inventory, NewInventory: s.hello.NewInventory})
	s.hello = nil
loop:
	for {
		select {
		case f := <-frames:
			s.handle(f)
			// Take whatever else is queued before stepping the acks once.
			for more := true; more; {
				select {
				case f := <-frames:
					s.handle(f)
				default:
					more = false
				}
			}
			if len(s.acks.Seqs) > 0 || len(s.acks.Rejected) > 0 {
				s.step(s.acks)
				clear(s.acks.Rejected)
				s.acks = delivery.Acked{Seqs: s.acks.Seqs[:0], Rejected: s.acks.Rejected[:0]}
			}
		case <-s.kickc:
			at := s.kickedAt.Swap(0)
			s.queuedInStep = 0
			s.step(delivery.Changed{})
			if at != 0 && s.queuedInStep > 0 {
				s.h.stats.dispatchLatency.Observe(time.Since(time.Unix(0, at)))
			}
		case <-s.upc:
			s.flushUpstreamAcks()
		case <-s.timer.C:
			// The engine's resends and alive reports (the read deadline
			// ends a session silent for SessionTimeout: while it lasts, the
			// node is alive).
			s.timerAt = time.Time{}
			s.step(delivery.Tick{})
		case <-ctx.Done():
			s.stop(&protocol.Error{Code: protocol.ErrorShuttingDown, Message: "cloudcore is stopping"})
		case <-s.stopc:
			break loop
		}
	}
	lost := s.eng.Step(time.Now(), delivery.Disconnected{}).Lost
	// The writer leaves after its current write; after that this goroutine
	// is the only writer and may say goodbye. Closing the connection ends
	// the reader.
	<-writerDone
	if s.streams != nil {
		s.streams.Close()
	}
	if s.stopErr != nil {
		writeError(s.conn, s.stopErr)
		s.log.Info("edge disconnected", slog.String("reason", s.stopErr.Error()), slog.Int("unacknowledged", lost))
	} else {
		s.log.Info("edge disconnected", slog.Int("unacknowledged", lost))
	}
	s.conn.Close()
	<-readerDone
}

// step steps the engine with in, then with what follows from its outputs
// (the results of the messages it asked for, the desired set it asked
// for), until it asks for nothing more.
func (s *session) step(in delivery.Input) {
	for in != nil {
		out := s.eng.Step(time.Now(), in)
		in = s.apply(&out)
	}
	s.unacked.Store(int64(s.eng.InFlight()))
}

// apply does what out says and returns the input that follows, if any.
func (s *session) apply(out *delivery.Output) delivery.Input {
	st, m := &s.h.stats, &out.Metrics
	st.objectMessages.Add(m.ObjectMessages)
	st.resyncs.Add(m.Resyncs)
	st.resyncMessages.Add(m.ResyncMessages)
	st.resyncBytes.Add(m.ResyncBytes)
	st.deleteScans.Add(m.DeleteScans)
	st.deleteScanned.Add(m.DeleteScanned)
	if out.Alive {
		s.h.upstream.Heartbeat(s.node)
	}
	for _, d := range out.AckLatency {
		st.ackLatency.Observe(d)
	}
	for _, r := range out.Rejected {
		s.log.Warn("edge rejected object", slog.String("kind", r.Kind.String()), slog.String("uid", r.UID),
			slog.String("reason", r.Reason))
	}
	if out.Resent > 0 {
		s.log.Warn("resending unacknowledged objects", slog.Int("count", out.Resent))
	}
	if r := out.ResyncDone; r != nil {
		s.sendFrame(&protocol.Frame{ResyncDone: &r.ResyncDone})
		s.log.Info("resync complete", slog.Uint64("upserts", uint64(r.Upserts)), slog.Uint64("deletes", uint64(r.Deletes)),
			slog.Uint64("bytes", r.Bytes), slog.Duration("took", r.Took))
	}
	if !out.Timer.Equal(s.timerAt) {
		s.timerAt = out.Timer
		s.timer.Stop()
		if !out.Timer.IsZero() {
			s.timer.Reset(time.Until(out.Timer))
		}
	}
	select {
	case <-s.stopc:
		return nil // the session ends: nothing more goes
	default:
	}
	switch {
	case len(out.Send) > 0:
		s.queuedInStep += len(out.Send)
		s.results = s.results[:0]
		for i := range out.Send {
			s.results = append(s.results, s.sendObject(&out.Send[i]))
		}
		return delivery.Sent{Results: s.results}
	case out.Reconcile:
		s.buf = s.h.source.Desired(s.node, s.buf[:0])
		s.served = s.served[:0]
		for _, k := range protocol.Kinds {
			if s.h.source.Serves(k) {
				s.served = append(s.served, k)
			}
		}
		return delivery.Desired{Objects: s.buf, Served: s.served}
	}
	return nil
}

// sendObject encodes and queues an object message.
func (s *session) sendObject(m *delivery.Message) delivery.Result {
	o := m.Object
	if m.Delete {
		n := s.sendFrame(&protocol.Frame{Seq: m.Seq, Delete: &protocol.Delete{Kind: o.Kind, UID: o.UID,
			Namespace: o.Namespace, Name: o.Name}})
		return delivery.Result{Seq: m.Seq, Bytes: n}
	}
	if ok, err := s.h.source.Encode(s.node, &o); !ok || err != nil {
		if err != nil {
			s.log.Error("encode object", slog.String("kind", o.Kind.String()), slog.String("name", o.Name), slog.Any("err", err))
		}
		return delivery.Result{Seq: m.Seq, Outcome: delivery.Gone} // a change notification follows
	}
	if n := s.sendFrame(&protocol.Frame{Seq: m.Seq, Upsert: &protocol.Upsert{Object: o}}); n > 0 {
		return delivery.Result{Seq: m.Seq, ResourceVersion: o.ResourceVersion, Bytes: n}
	}
	// Could not be encoded (too large): counted as delivered so it is not
	// retried until it changes.
	return delivery.Result{Seq: m.Seq, Outcome: delivery.TooLarge, ResourceVersion: o.ResourceVersion}
}

func (s *session) readLoop(frames chan<- *protocol.Frame) {
	for {
		if !s.waitUpstreamRoom() {
			return
		}
		s.conn.SetReadDeadline(time.Now().Add(s.h.cfg.SessionTimeout))
		_, b, err := s.conn.ReadMessage()
		if err != nil {
			s.stop(readError(err, s.h.cfg.SessionTimeout))
			return
		}
		s.h.stats.framesIn.Add(1)
		s.h.stats.bytesIn.Add(int64(len(b)))
		f, err := protocol.Decode(b)
		if err != nil {
			s.h.stats.badFrames.Add(1)
			code, seq := protocol.ErrorBadFrame, uint64(0)
			if errors.Is(err, protocol.ErrUnknownMessage) {
				code, seq = protocol.ErrorUnknownMessage, f.Seq
			}
			s.log.Warn("bad frame from edge", slog.Int("bytes", len(b)), slog.Any("err", err))
			s.sendFrame(&protocol.Frame{Error: &protocol.Error{Code: code, Seq: seq, Message: err.Error()}})
			continue
		}
		if f.IsStream() {
			s.handleStream(f) // never blocks: windows bound what it holds
			continue
		}
		if upstream(f) {
			if f.Event != nil {
				if !s.upLimit.Allow() {
					s.dropEvent(f.Seq)
					continue
				}
			} else if !s.throttle() {
				return
			}
			s.upInFlight.Add(1)
		} else if (f.CertRequest != nil || f.AccessReview != nil || f.APIRequest != nil) && !s.throttle() {
			// A certificate request costs a signature and a read of the
			// Node from the API server: it waits for the rate like a
			// status (and is answered one at a time, see renew).
			return
		}
		select {
		case frames <- f:
		case <-s.stopc:
			return
		}
	}
}

// upstream reports whether f is a message for Upstream, which calls done.
func upstream(f *protocol.Frame) bool {
	return f.NodeStatus != nil || f.PodStatus != nil || f.PodTerminated != nil || f.Event != nil ||
		f.MirrorPod != nil || f.DeviceStatus != nil
}

// waitUpstreamRoom waits until fewer than MaxUpstreamInFlight upstream
// messages are in flight: meanwhile the session reads nothing, and TCP
// pushes back on the edge. It reports false if the session stops.
func (s *session) waitUpstreamRoom() bool {
	limit := int64(s.h.cfg.MaxUpstreamInFlight)
	if s.upInFlight.Load() < limit {
		return true
	}
	n := s.h.stats.upstreamPaused.Add(1)
	s.h.logRefused.do(func() {
		s.log.Info("session paused: upstream messages in flight at the limit",
			slog.Int("maxUpstreamInFlight", s.h.cfg.MaxUpstreamInFlight), slog.Int64("pausedSoFar", n))
	})
	for s.upInFlight.Load() >= limit {
		select {
		case <-s.upRoom:
		case <-s.stopc:
			return false
		}
	}
	return true
}

// throttle waits for the node's UpstreamRate to allow a message. It
// reports false if the session stops.
func (s *session) throttle() bool {
	r := s.upLimit.Reserve()
	d := r.Delay()
	if d <= 0 {
		return true
	}
	n := s.h.stats.upstreamThrottled.Add(1)
	s.h.logRefused.do(func() {
		s.log.Info("session throttled: upstream rate limit", slog.Float64("upstreamRate", s.h.cfg.UpstreamRate),
			slog.Int64("throttledSoFar", n))
	})
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stopc:
		return false
	}
}

// eventDropped is the reason an Event past the node's rate is rejected.
const eventDropped = "dropped: event rate limit"

// dropEvent drops an Event past the node's rate: it is answered in
// Ack.Rejected, so that the edge does not send it again.
func (s *session) dropEvent(seq uint64) {
	n := s.h.stats.eventsDropped.Add(1)
	s.h.logRefused.do(func() {
		s.log.Warn("events dropped: upstream rate limit", slog.Float64("upstreamRate", s.h.cfg.UpstreamRate),
			slog.Int64("droppedSoFar", n))
	})
	s.upMu.Lock()
	s.upRejected = append(s.upRejected, protocol.Rejection{Seq: seq, Reason: eventDropped})
	s.upMu.Unlock()
	select {
	case s.upc <- struct{}{}:
	default:
	}
}

// readError turns a read failure into the reason the session stops.
func readError(err error, timeout time.Duration) *protocol.Error {
	var ne net.Error
	switch {
	case errors.Is(err, websocket.ErrReadLimit):
		return &protocol.Error{Code: protocol.ErrorTooLarge,
			Message: fmt.Sprintf("frame exceeds the maximum frame size of %d bytes", protocol.MaxFrameSize)}
	case errors.As(err, &ne) && ne.Timeout():
		return &protocol.Error{Code: protocol.ErrorBadFrame, Message: fmt.Sprintf("edge silent for %s", timeout)}
	}
	return nil // the edge closed the connection, or it broke: nobody to tell
}

func (s *session) writeLoop() {
	var batch [][]byte
	for {
		select {
		case <-s.sendq.ready:
		case <-s.streamq.ready:
		case <-s.stopc:
			return
		}
		// Objects, acks and the rest first; stream data (streams.go) a few
		// frames at a time when nothing else waits, so that a busy kubectl
		// logs -f never holds up the node's pods.
		for {
			batch = s.sendq.take(batch)
			if len(batch) == 0 {
				if batch = s.streamq.takeN(batch, streamBurst); len(batch) == 0 {
					break
				}
			}
			for i, b := range batch {
				s.conn.SetWriteDeadline(time.Now().Add(s.h.cfg.SessionTimeout))
				if err := s.conn.WriteMessage(websocket.BinaryMessage, b); err != nil {
					s.log.Debug("write to edge failed", slog.Any("err", err))
					s.stop(nil)
					return
				}
				batch[i] = nil
				s.h.stats.framesOut.Add(1)
				s.h.stats.bytesOut.Add(int64(len(b)))
			}
			if cap(batch) > keptQueue {
				batch = nil
			}
		}
	}
}

// keptQueue is the most entries a send queue's storage keeps between
// bursts; a burst's larger storage is let go.
const keptQueue = 64

// sendQueue holds a session's encoded frames for its writer. It costs
// nothing while empty (a channel of the default 1,024 entries cost 24 KiB
// per session, a quarter of a GiB at 10,000 nodes) and refuses a frame
// past its limit.
type sendQueue struct {
	limit int
	// ready has a token when items may be non-empty; room when a take
	// made room.
	ready, room chan struct{}

	mu    sync.Mutex
	items [][]byte // guarded by mu
}

func newSendQueue(limit int) *sendQueue {
	return &sendQueue{limit: limit, ready: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

// push queues b; it reports false, queueing nothing, when limit frames wait
// already.
func (q *sendQueue) push(b []byte) bool {
	q.mu.Lock()
	if len(q.items) >= q.limit {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, b)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// len is the number of frames queued.
func (q *sendQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// take moves every queued frame, oldest first, into buf's storage and
// returns it.
func (q *sendQueue) take(buf [][]byte) [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	buf = append(buf[:0], q.items...)
	clear(q.items)
	q.items = q.items[:0]
	if cap(q.items) > keptQueue {
		q.items = nil
	}
	if len(buf) > 0 {
		signalChan(q.room)
	}
	return buf
}

// hasRoom reports whether push would take a frame now.
func (q *sendQueue) hasRoom() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) < q.limit
}

// takeN is take of at most n frames.
func (q *sendQueue) takeN(buf [][]byte, n int) [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := min(n, len(q.items))
	buf = append(buf[:0], q.items[:k]...)
	rest := copy(q.items, q.items[k:])
	clear(q.items[rest:])
	q.items = q.items[:rest]
	if k > 0 {
		signalChan(q.room)
	}
	return buf
}

func signalChan(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// sendFrame encodes f and queues it. It returns the encoded size, or 0 if f
// was not sent. A full queue means the edge stopped reading: the session ends.
func (s *session) sendFrame(f *protocol.Frame) int {
	b, err := protocol.Encode(f)
	if err != nil {
		s.log.Error("cannot encode frame for edge", slog.String("type", f.Type()), slog.Any("err", err))
		return 0
	}
	if !s.sendq.push(b) {
		s.stop(&protocol.Error{Code: protocol.ErrorShuttingDown, Message: "send queue full: edge is not reading"})
		return 0
	}
	return len(b)
}

func (s *session) handle(f *protocol.Frame) {
	switch {
	case f.Ack != nil:
		// Stepped once for the frames read together (run).
		s.acks.Seqs = append(s.acks.Seqs, f.Ack.Seqs...)
		s.acks.Rejected = append(s.acks.Rejected, f.Ack.Rejected...)
	case f.Heartbeat != nil:
		s.sendFrame(&protocol.Frame{Heartbeat: &protocol.Heartbeat{Time: time.Now().UnixMilli()}})
		s.h.upstream.Heartbeat(s.node)
	case f.NodeStatus != nil:
		s.h.upstream.NodeStatus(s.node, s.order(f), f.NodeStatus, s.upstreamDone(f.Seq))
	case f.PodStatus != nil:
		s.h.upstream.PodStatus(s.node, s.order(f), f.PodStatus, s.upstreamDone(f.Seq))
	case f.PodTerminated != nil:
		s.h.upstream.PodTerminated(s.node, f.PodTerminated, s.upstreamDone(f.Seq))
	case f.Event != nil:
		s.h.upstream.Event(s.node, f.Event, s.upstreamDone(f.Seq))
	case f.MirrorPod != nil:
		s.h.upstream.MirrorPod(s.node, f.MirrorPod, s.upstreamDone(f.Seq))
	case f.DeviceStatus != nil:
		s.h.upstream.DeviceStatus(s.node, s.order(f), f.DeviceStatus, s.upstreamDone(f.Seq))
	case f.CertRequest != nil && s.version >= 2:
		s.renew(f.CertRequest.CSR)
	case f.AccessReview != nil && s.version >= protocol.AccessReviewSince:
		s.review(f.AccessReview)
	case f.APIRequest != nil && s.version >= protocol.APIRelaySince:
		s.relay(f.APIRequest)
	case f.Error != nil:
		s.log.Warn("edge reported an error", slog.String("code", f.Error.Code.String()),
			slog.String("message", f.Error.Message), slog.Uint64("seq", f.Error.Seq))
		if f.Error.Fatal() {
			s.stop(nil)
		}
	default:
		s.sendFrame(&protocol.Frame{Error: &protocol.Error{Code: protocol.ErrorUnexpected, Seq: f.Seq,
			Message: f.Type() + " is not sent by an edge"}})
	}
}

func (s *session) flushUpstreamAcks() {
	s.upMu.Lock()
	acks, rej := s.upAcks, s.upRejected
	s.upAcks, s.upRejected = nil, nil
	s.upMu.Unlock()
	if len(acks) == 0 && len(rej) == 0 {
		return
	}
	s.sendFrame(&protocol.Frame{Ack: &protocol.Ack{Seqs: acks, Rejected: rej}})
}

// review answers an AccessReview off the owner goroutine (it asks the API
// server), one at a time per session.
func (s *session) review(r *protocol.AccessReview) {
	answer := func(res *protocol.AccessReviewResult) {
		s.sendFrame(&protocol.Frame{AccessReviewResult: res})
	}
	if s.h.cfg.Reviews == nil {
		answer(&protocol.AccessReviewResult{ID: r.ID, Error: "this hub answers no access reviews"})
		return
	}
	if !s.reviewing.CompareAndSwap(false, true) {
		answer(&protocol.AccessReviewResult{ID: r.ID, Error: "an access review is being answered already"})
		return
	}
	go func() {
		defer s.reviewing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		allowed, err := s.h.cfg.Reviews.Review(ctx, s.node, r)
		if err == nil && len(allowed) != len(r.Checks) {
			err = fmt.Errorf("%d answers to %d checks", len(allowed), len(r.Checks))
		}
		if err != nil {
			s.log.Warn("access review refused", slog.String("pod", r.Namespace+"/"+r.Pod), slog.Any("err", err))
			msg := err.Error()
			if len(msg) > 1000 {
				msg = msg[:1000]
			}
			answer(&protocol.AccessReviewResult{ID: r.ID, Error: msg})
			return
		}
		answer(&protocol.AccessReviewResult{ID: r.ID, Allowed: allowed})
	}()
}

// renew issues a certificate for a CertRequest, off the owner goroutine (it
// reads the Node from the API server), and queues the answer.
func (s *session) renew(csr []byte) {
	if !s.renewing.CompareAndSwap(false, true) {
		s.h.stats.certsRefused.Add(1)
		s.sendFrame(&protocol.Frame{Error: &protocol.Error{Code: protocol.ErrorCertificate,
			Message: "a certificate request is being answered already"}})
		return
	}
	go func() {
		defer s.renewing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cert, err := s.h.cfg.Auth.Renew(ctx, s.node, s.id, csr)
		if err != nil {
			s.h.stats.certsRefused.Add(1)
			s.log.Warn("certificate renewal refused", slog.String("reason", err.Error()))
			s.sendFrame(&protocol.Frame{Error: &protocol.Error{Code: protocol.ErrorCertificate, Message: err.Error()}})
			return
		}
		s.h.stats.certsIssued.Add(1)
		if certs, err := pki.ParseCertsPEM(cert); err == nil {
			s.notAfter.Store(certs[0].NotAfter.UnixNano())
		}
		s.log.Info("client certificate renewed")
		s.sendFrame(&protocol.Frame{CertIssued: &protocol.CertIssued{Certificate: cert}})
	}()
}
