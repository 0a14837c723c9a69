package hub

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/tether-edge/tether/protocol"
)

// nextStreamFrame skips frames that are not about streams.
func (e *fakeEdge) nextStreamFrame() *protocol.Frame {
	e.t.Helper()
	for {
		if f := e.recv(); f.IsStream() {
			return f
		}
	}
}

func waitConnected(t *testing.T, h *Hub, node string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		for _, n := range h.Connected() {
			if n == node {
				return
			}
		}
	}
	t.Fatalf("node %s not connected", node)
}

func TestStreamRoundTripThroughTheSession(t *testing.T) {
	src, url := startHub(t, Config{})
	e := connect(t, url, nil)
	waitConnected(t, src.hub, "n1")
	c, err := src.hub.OpenStream("n1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	open := e.nextStreamFrame()
	if open.StreamOpen == nil {
		t.Fatalf("want StreamOpen, got %s", open.Type())
	}
	id := open.StreamOpen.ID
	if d := e.nextStreamFrame(); d.StreamData == nil || string(d.StreamData.Data) != "GET / HTTP/1.1\r\n\r\n" {
		t.Fatalf("want the request as StreamData, got %+v", d)
	}
	e.send(&protocol.Frame{StreamData: &protocol.StreamData{ID: id, Data: []byte("HTTP/1.1 200 OK\r\n\r\n")}})
	e.send(&protocol.Frame{StreamClose: &protocol.StreamClose{ID: id}})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "HTTP/1.1 200 OK\r\n\r\n" {
		t.Fatalf("read %q, %v", b, err)
	}
}

func TestStreamToAnOldEdgeIsRefused(t *testing.T) {
	src, url := startHub(t, Config{})
	if _, err := dialVersion(t, url, issueCert(t, "n1", "id-n1"), "n1", nil, 2); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, src.hub, "n1")
	_, err := src.hub.OpenStream("n1")
	if !errors.Is(err, ErrEdgeTooOld) {
		t.Fatalf("open stream to a version 2 edge: %v, want ErrEdgeTooOld", err)
	}
	if _, err := src.hub.OpenStream("nobody"); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("open stream to an unknown node: %v, want ErrNotConnected", err)
	}
}

// An edge older than version 3 must not be sent stream frames, and a
// version 2 edge that sends one is told it is unexpected, not obeyed.
func TestStreamFrameFromAnOldEdgeIsUnexpected(t *testing.T) {
	src, url := startHub(t, Config{})
	e, err := dialVersion(t, url, issueCert(t, "n1", "id-n1"), "n1", nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	waitConnected(t, src.hub, "n1")
	e.send(&protocol.Frame{StreamOpen: &protocol.StreamOpen{ID: 1}})
	for {
		f := e.recv()
		if f.Error != nil {
			if f.Error.Code != protocol.ErrorUnexpected {
				t.Fatalf("error %v, want Unexpected", f.Error)
			}
			return
		}
	}
}

func TestStreamFloodHitsThePerNodeCap(t *testing.T) {
	src, url := startHub(t, Config{MaxStreamsPerNode: 3, MaxStreams: 4})
	connect(t, url, nil)
	waitConnected(t, src.hub, "n1")
	for i := 0; i < 3; i++ {
		c, err := src.hub.OpenStream("n1")
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		defer c.Close()
	}
	_, err := src.hub.OpenStream("n1")
	if !errors.Is(err, ErrStreamLimit) {
		t.Fatalf("fourth stream: %v, want ErrStreamLimit", err)
	}
	if st := src.hub.Stats(); st.StreamsRefused != 1 || st.Streams != 3 {
		t.Fatalf("stats: %d streams, %d refused; want 3 and 1", st.Streams, st.StreamsRefused)
	}
	// The session carries on: the node still gets its heartbeats answered.
}
