package hub

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/tether-edge/tether/protocol"
	"github.com/tether-edge/tether/streams"
)

// Errors of OpenStream.
var (
	// ErrNotConnected: the node has no session on this hub.
	ErrNotConnected = errors.New("node not connected to this cloudcore")
	// ErrEdgeTooOld: the node's edgecore speaks a protocol older than 3,
	// without streams.
	ErrEdgeTooOld = errors.New("edge too old: its edgecore does not carry streams (protocol version 3); upgrade it")
	// ErrStreamLimit: MaxStreams or MaxStreamsPerNode streams are open.
	ErrStreamLimit = errors.New("stream limit reached")
)

// OpenStream opens a byte stream to node's kubelet API through its session
// (package streams). The caller closes it.
func (h *Hub) OpenStream(node string) (net.Conn, error) {
	h.mu.Lock()
	s := h.sessions[node]
	h.mu.Unlock()
	if s == nil {
		return nil, ErrNotConnected
	}
	if s.streams == nil {
		return nil, fmt.Errorf("%w (it speaks %d)", ErrEdgeTooOld, s.version)
	}
	if n := h.streamsOpen.Add(1); n > int64(h.cfg.MaxStreams) {
		h.streamsOpen.Add(-1)
		h.stats.streamsRefused.Add(1)
		return nil, fmt.Errorf("%w: %d streams open through this cloudcore (MaxStreams)", ErrStreamLimit, h.cfg.MaxStreams)
	}
	c, err := s.streams.Open()
	if err != nil {
		h.streamsOpen.Add(-1)
		if errors.Is(err, streams.ErrTooManyStreams) {
			h.stats.streamsRefused.Add(1)
			return nil, fmt.Errorf("%w: %d streams open to node %s (MaxStreamsPerNode)", ErrStreamLimit,
				h.cfg.MaxStreamsPerNode, node)
		}
		return nil, err
	}
	h.stats.streams.Add(1)
	return &countedConn{Conn: c, done: func() { h.streamsOpen.Add(-1) }}, nil
}

// countedConn calls done once, at its first Close.
type countedConn struct {
	net.Conn
	once sync.Once
	done func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.done)
	return err
}

// streamQueue is the most stream frames queued for the writer per session
// (2 MiB of data at most), and streamBurst how many it sends between two
// looks at the other frames (128 KiB).
const (
	streamQueue = 64
	streamBurst = 4
)

// sendStreamFrame queues a stream frame on the session's stream queue,
// waiting for room: the writer sends stream frames only when no other frame
// waits, so streams share what the link leaves and never delay objects
// and acks by more than streamBurst frames. It fails once the session
// stops.
func (s *session) sendStreamFrame(f *protocol.Frame) error {
	b, err := protocol.Encode(f)
	if err != nil {
		return err
	}
	for !s.streamq.push(b) {
		select {
		case <-s.streamq.room:
		case <-s.stopc:
			return errors.New("session closed")
		}
	}
	if s.streamq.hasRoom() {
		signalChan(s.streamq.room) // the next waiting stream, if any
	}
	return nil
}

// newStreams makes the session's streams if the edge carries them.
func (s *session) newStreams() {
	if s.version >= 3 {
		s.streams = streams.NewMux(s.sendStreamFrame, s.h.cfg.MaxStreamsPerNode, nil)
	}
}

// handleStream takes a stream frame from the reader.
func (s *session) handleStream(f *protocol.Frame) {
	if s.streams == nil {
		s.sendFrame(&protocol.Frame{Error: &protocol.Error{Code: protocol.ErrorUnexpected,
			Message: f.Type() + " before protocol version 3"}})
		return
	}
	s.streams.Handle(f)
}
