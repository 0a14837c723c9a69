package protocol

import (
	"errors"
	"fmt"
)

// Byte streams (since version 3) carry the API server's requests to the
// edge's kubelet API (container logs, exec, attach, port-forward, the node
// proxy) through the session, so that nothing listens at the edge. The hub
// opens a stream with StreamOpen; either side then sends StreamData, grants
// the peer more room with StreamCredit, and ends the stream (both ways) with
// StreamClose. A stream's bytes are an HTTP/1.1 connection: the hub writes
// one request, the edge answers it, and an upgraded request (exec, attach,
// port-forward) goes on as raw bytes until either side closes.
//
// Flow control: each side may have at most StreamWindow bytes of StreamData
// sent and not yet credited per stream; the receiver credits the bytes its
// reader consumed. A side that receives more than the window closes the
// stream. Stream frames are never acknowledged and carry no Seq: a session
// that ends ends its streams.

// StreamWindow is the initial room, in bytes, each side grants the other per
// stream.
const StreamWindow = 256 << 10

// MaxStreamChunk is the largest StreamData payload.
const MaxStreamChunk = 32 << 10

// KubeletPort is the port the edge reports as its kubelet endpoint
// (status.daemonEndpoints.kubeletEndpoint.port): the API server asks its
// egress proxy for <node name>:KubeletPort, and the hub takes only that port.
// Nothing listens on it at the edge.
const KubeletPort = 10250

// StreamOpen opens a stream. Sent by the hub. The edge answers StreamClose
// if it refuses it (too many streams).
type StreamOpen struct {
	ID uint32 `cbor:"1,keyasint"`
}

// StreamData carries bytes of a stream, in order.
type StreamData struct {
	ID   uint32 `cbor:"1,keyasint"`
	Data []byte `cbor:"2,keyasint"`
}

// StreamCredit grants the peer Bytes more of room on the stream.
type StreamCredit struct {
	ID    uint32 `cbor:"1,keyasint"`
	Bytes uint32 `cbor:"2,keyasint"`
}

// StreamClose ends a stream both ways. Reason is empty for a normal end;
// bytes sent before it are delivered first.
type StreamClose struct {
	ID     uint32 `cbor:"1,keyasint"`
	Reason string `cbor:"2,keyasint,omitempty"`
}

// IsStream reports whether f carries a stream message.
func (f *Frame) IsStream() bool {
	return f.StreamOpen != nil || f.StreamData != nil || f.StreamCredit != nil || f.StreamClose != nil
}

func (s *StreamOpen) validate() error {
	if s.ID == 0 {
		return errors.New("stream id is 0")
	}
	return nil
}

func (s *StreamData) validate() error {
	if s.ID == 0 {
		return errors.New("stream id is 0")
	}
	if len(s.Data) == 0 || len(s.Data) > MaxStreamChunk {
		return fmt.Errorf("stream data of %d bytes: want 1 to %d", len(s.Data), MaxStreamChunk)
	}
	return nil
}

func (s *StreamCredit) validate() error {
	if s.ID == 0 {
		return errors.New("stream id is 0")
	}
	if s.Bytes == 0 || s.Bytes > StreamWindow {
		return fmt.Errorf("stream credit of %d bytes: want 1 to %d", s.Bytes, StreamWindow)
	}
	return nil
}

func (s *StreamClose) validate() error {
	if s.ID == 0 {
		return errors.New("stream id is 0")
	}
	if len(s.Reason) > 1024 {
		return fmt.Errorf("close reason of %d bytes, more than 1024", len(s.Reason))
	}
	return nil
}
