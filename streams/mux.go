// Package streams multiplexes byte streams over one tunnel session
// (protocol version 3: StreamOpen, StreamData, StreamCredit, StreamClose).
// Both ends use it: the hub opens streams (Mux.Open) to carry the API
// server's requests to an edge node's kubelet API; the edge accepts them
// (Listener) and serves them with an http.Server.
//
// Each stream is a net.Conn (one end of a net.Pipe, so that deadlines work
// as http.Server needs them) with two pump goroutines: one reads what the
// user writes and sends it as StreamData chunks while the peer's credit
// lasts; the other writes what the peer sent into the pipe and credits the
// peer as the user consumes it. Memory is bounded: per stream, at most
// protocol.StreamWindow bytes are queued in each direction, and a Mux holds
// at most Max streams. A peer that sends past the window loses the stream,
// not the session.
package streams

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/tether-edge/tether/protocol"
)

// Send queues a frame to the peer. It must not block for long; an error
// means the frame was not queued (the stream is closed).
type Send func(f *protocol.Frame) error

// ErrTooManyStreams is returned by Open at the Mux's limit.
var ErrTooManyStreams = errors.New("too many streams open to this node")

// ErrClosed is returned by Open once the Mux is closed (the session ended).
var ErrClosed = errors.New("session closed")

// Mux is the streams of one session.
type Mux struct {
	send   Send
	max    int
	accept func(net.Conn) bool
	// opened counts streams opened since start, for tests and stats.
	opened atomic.Int64

	mu sync.Mutex
	// streams are the open streams by id; guarded by mu.
	streams map[uint32]*stream
	nextID  uint32 // guarded by mu
	closed  bool   // guarded by mu
}

// NewMux builds the streams of a session. max bounds the streams open at
// once. accept, on the side that accepts streams (the edge), takes each
// stream the peer opens; it must not block and reports false to refuse it.
// Nil accept refuses every StreamOpen (the hub).
func NewMux(send Send, max int, accept func(net.Conn) bool) *Mux {
	return &Mux{send: send, max: max, accept: accept, streams: map[uint32]*stream{}}
}

// Open opens a stream to the peer.
func (m *Mux) Open() (net.Conn, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	if len(m.streams) >= m.max {
		m.mu.Unlock()
		return nil, ErrTooManyStreams
	}
	m.nextID++
	if m.nextID == 0 {
		m.nextID = 1
	}
	s := m.newStreamLocked(m.nextID)
	m.mu.Unlock()
	if err := m.send(&protocol.Frame{StreamOpen: &protocol.StreamOpen{ID: s.id}}); err != nil {
		s.shut("", false)
		return nil, fmt.Errorf("open stream: %w", err)
	}
	s.start()
	return s.user, nil
}

// Len is the number of open streams.
func (m *Mux) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.streams)
}

// Opened counts the streams opened since the Mux was made, both ways.
func (m *Mux) Opened() int64 { return m.opened.Load() }

func (m *Mux) newStreamLocked(id uint32) *stream {
	user, mine := net.Pipe()
	s := &stream{m: m, id: id, user: user, mine: mine, credit: protocol.StreamWindow,
		creditc: make(chan struct{}, 1), inc: make(chan struct{}, 1), done: make(chan struct{})}
	m.streams[id] = s
	m.opened.Add(1)
	return s
}

// Handle takes a stream frame from the peer. It never blocks.
func (m *Mux) Handle(f *protocol.Frame) {
	switch {
	case f.StreamOpen != nil:
		id := f.StreamOpen.ID
		m.mu.Lock()
		switch {
		case m.closed:
			m.mu.Unlock()
			return
		case m.accept == nil:
			m.mu.Unlock()
			m.send(&protocol.Frame{StreamClose: &protocol.StreamClose{ID: id, Reason: "streams are not accepted here"}})
			return
		case m.streams[id] != nil:
			s := m.streams[id]
			m.mu.Unlock()
			s.shut("stream id reused", true)
			return
		case len(m.streams) >= m.max:
			m.mu.Unlock()
			m.send(&protocol.Frame{StreamClose: &protocol.StreamClose{ID: id,
				Reason: fmt.Sprintf("too many streams: the node takes at most %d at once", m.max)}})
			return
		}
		s := m.newStreamLocked(id)
		m.mu.Unlock()
		s.start()
		if !m.accept(s.user) {
			s.shut("the node is not serving streams", true)
		}
	case f.StreamData != nil:
		if s := m.get(f.StreamData.ID); s != nil {
			s.received(f.StreamData.Data)
		}
	case f.StreamCredit != nil:
		if s := m.get(f.StreamCredit.ID); s != nil {
			s.credited(int64(f.StreamCredit.Bytes))
		}
	case f.StreamClose != nil:
		if s := m.get(f.StreamClose.ID); s != nil {
			s.peerClosed(f.StreamClose.Reason)
		}
	}
}

func (m *Mux) get(id uint32) *stream {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.streams[id]
}

// Close ends every stream; Open fails from then on.
func (m *Mux) Close() {
	m.mu.Lock()
	m.closed = true
	all := make([]*stream, 0, len(m.streams))
	for _, s := range m.streams {
		all = append(all, s)
	}
	m.mu.Unlock()
	for _, s := range all {
		s.shut("", false)
	}
}

func (m *Mux) remove(s *stream) {
	m.mu.Lock()
	if m.streams[s.id] == s {
		delete(m.streams, s.id)
	}
	m.mu.Unlock()
}

// stream is one stream. user is the end its user holds, mine the end the
// pumps hold.
type stream struct {
	m          *Mux
	id         uint32
	user, mine net.Conn

	mu sync.Mutex
	// credit is how many bytes the peer still takes; guarded by mu.
	credit int64
	// in is what the peer sent and the user has not read; guarded by mu.
	in [][]byte
	// inBytes is the size of in; guarded by mu.
	inBytes int
	// peerDone: the peer closed (after the data in in); guarded by mu.
	peerDone bool
	// over: the stream is shut; guarded by mu.
	over bool

	creditc chan struct{} // a token when credit grew
	inc     chan struct{} // a token when in grew or the peer closed
	done    chan struct{} // closed by shut
	once    sync.Once
}

func (s *stream) start() {
	go s.pumpOut()
	go s.pumpIn()
}

// pumpOut sends what the user writes.
func (s *stream) pumpOut() {
	buf := make([]byte, protocol.MaxStreamChunk)
	for {
		n, err := s.mine.Read(buf)
		for off := 0; off < n; {
			c, ok := s.takeCredit(int64(n - off))
			if !ok {
				return
			}
			chunk := append([]byte(nil), buf[off:off+int(c)]...)
			if s.m.send(&protocol.Frame{StreamData: &protocol.StreamData{ID: s.id, Data: chunk}}) != nil {
				s.shut("", false)
				return
			}
			off += int(c)
		}
		if err != nil {
			// The user closed its end (or shut did): tell the peer.
			s.shut("", true)
			return
		}
	}
}

// takeCredit waits for credit and takes up to want of it.
func (s *stream) takeCredit(want int64) (int64, bool) {
	for {
		s.mu.Lock()
		if s.over {
			s.mu.Unlock()
			return 0, false
		}
		if s.credit > 0 {
			c := min(s.credit, want)
			s.credit -= c
			s.mu.Unlock()
			return c, true
		}
		s.mu.Unlock()
		select {
		case <-s.creditc:
		case <-s.done:
			return 0, false
		}
	}
}

// pumpIn hands what the peer sent to the user and credits it back.
func (s *stream) pumpIn() {
	var owed int
	for {
		s.mu.Lock()
		var chunk []byte
		if len(s.in) > 0 {
			chunk = s.in[0]
			s.in[0] = nil
			s.in = s.in[1:]
			s.inBytes -= len(chunk)
		}
		peerDone := s.peerDone && chunk == nil
		s.mu.Unlock()
		switch {
		case chunk != nil:
			if _, err := s.mine.Write(chunk); err != nil {
				s.shut("", true)
				return
			}
			owed += len(chunk)
			if owed >= protocol.MaxStreamChunk || s.pending() == 0 {
				if s.m.send(&protocol.Frame{StreamCredit: &protocol.StreamCredit{ID: s.id, Bytes: uint32(owed)}}) != nil {
					s.shut("", false)
					return
				}
				owed = 0
			}
			continue
		case peerDone:
			s.shut("", false)
			return
		}
		select {
		case <-s.inc:
		case <-s.done:
			return
		}
	}
}

func (s *stream) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inBytes
}

func (s *stream) received(b []byte) {
	s.mu.Lock()
	if s.over || s.peerDone {
		s.mu.Unlock()
		return
	}
	if s.inBytes+len(b) > protocol.StreamWindow {
		s.mu.Unlock()
		s.shut(fmt.Sprintf("more than the window of %d bytes sent", protocol.StreamWindow), true)
		return
	}
	s.in = append(s.in, b)
	s.inBytes += len(b)
	s.mu.Unlock()
	signal(s.inc)
}

func (s *stream) credited(n int64) {
	s.mu.Lock()
	s.credit = min(s.credit+n, protocol.StreamWindow)
	s.mu.Unlock()
	signal(s.creditc)
}

func (s *stream) peerClosed(reason string) {
	s.mu.Lock()
	s.peerDone = true
	s.mu.Unlock()
	s.m.remove(s)
	signal(s.inc)
}

// shut ends the stream: the user's end sees EOF, the pumps stop. tell sends
// StreamClose with reason to the peer.
func (s *stream) shut(reason string, tell bool) {
	s.once.Do(func() {
		s.mu.Lock()
		s.over = true
		peerDone := s.peerDone
		s.in, s.inBytes = nil, 0
		s.mu.Unlock()
		close(s.done)
		s.mine.Close()
		s.m.remove(s)
		if tell && !peerDone {
			s.m.send(&protocol.Frame{StreamClose: &protocol.StreamClose{ID: s.id, Reason: reason}})
		}
	})
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Listener is a net.Listener of the streams a peer opens, for an
// http.Server. It outlives sessions: each session's Mux hands its streams
// to Offer.
type Listener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// NewListener makes a Listener that queues at most backlog streams not yet
// accepted.
func NewListener(backlog int) *Listener {
	return &Listener{conns: make(chan net.Conn, backlog), done: make(chan struct{})}
}

// Offer queues c for Accept; it reports false if the backlog is full or the
// listener closed. It never blocks: use it as a Mux's accept.
func (l *Listener) Offer(c net.Conn) bool {
	select {
	case <-l.done:
		return false
	default:
	}
	select {
	case l.conns <- c:
		return true
	default:
		return false
	}
}

// Accept waits for a stream.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept.
func (l *Listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

// Addr is a placeholder address.
func (l *Listener) Addr() net.Addr { return addr{} }

type addr struct{}

func (addr) Network() string { return "tether-stream" }
func (addr) String() string  { return "tunnel" }

var _ io.Closer = (*Listener)(nil)
