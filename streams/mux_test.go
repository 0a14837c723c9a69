package streams

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-edge/tether/protocol"
)

// pair wires a hub-side Mux to an edge-side Mux through encoded frames, as
// the session does.
func pair(t *testing.T, max int) (hub, edge *Mux, ln *Listener) {
	t.Helper()
	ln = NewListener(16)
	var mu sync.Mutex
	deliver := func(to **Mux) Send {
		return func(f *protocol.Frame) error {
			b, err := protocol.Encode(f)
			if err != nil {
				return err
			}
			g, err := protocol.Decode(b)
			if err != nil {
				return err
			}
			mu.Lock()
			m := *to
			mu.Unlock()
			m.Handle(g)
			return nil
		}
	}
	hub = NewMux(deliver(&edge), max, nil)
	edge = NewMux(deliver(&hub), max, ln.Offer)
	t.Cleanup(func() { hub.Close(); edge.Close(); ln.Close() })
	return hub, edge, ln
}

func echo(ln *Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() { io.Copy(c, c); c.Close() }()
	}
}

func TestStreamEchoesLargeDataWithinTheWindow(t *testing.T) {
	hub, edge, ln := pair(t, 4)
	go echo(ln)
	c, err := hub.Open()
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 5<<20) // 20 windows: credits must flow
	rand.Read(data)
	go func() { c.Write(data) }()
	got := make([]byte, len(data))
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("echoed data differs")
	}
	c.Close()
	waitFor(t, func() bool { return hub.Len() == 0 && edge.Len() == 0 })
}

func TestStreamCloseReachesThePeerAfterItsData(t *testing.T) {
	hub, _, ln := pair(t, 4)
	go func() {
		c, _ := ln.Accept()
		c.Write([]byte("hello"))
		c.Close()
	}()
	c, err := hub.Open()
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v; want hello, EOF", b, err)
	}
}

func TestStreamsAreCappedPerMux(t *testing.T) {
	hub, edge, ln := pair(t, 2)
	go echo(ln)
	for i := 0; i < 2; i++ {
		if _, err := hub.Open(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := hub.Open(); !errors.Is(err, ErrTooManyStreams) {
		t.Fatalf("third stream: %v, want ErrTooManyStreams", err)
	}
	// The edge refuses past its own cap too, whatever the hub thinks.
	var closed []string
	var mu sync.Mutex
	edge2 := NewMux(func(f *protocol.Frame) error {
		if f.StreamClose != nil {
			mu.Lock()
			closed = append(closed, f.StreamClose.Reason)
			mu.Unlock()
		}
		return nil
	}, 1, func(net.Conn) bool { return true })
	defer edge2.Close()
	edge2.Handle(&protocol.Frame{StreamOpen: &protocol.StreamOpen{ID: 1}})
	edge2.Handle(&protocol.Frame{StreamOpen: &protocol.StreamOpen{ID: 2}})
	mu.Lock()
	defer mu.Unlock()
	if len(closed) != 1 || !strings.Contains(closed[0], "too many streams") {
		t.Fatalf("closes sent: %q", closed)
	}
	_ = edge
}

func TestStreamPastTheWindowIsClosed(t *testing.T) {
	var closes []string
	var mu sync.Mutex
	m := NewMux(func(f *protocol.Frame) error {
		if f.StreamClose != nil {
			mu.Lock()
			closes = append(closes, f.StreamClose.Reason)
			mu.Unlock()
		}
		return nil
	}, 4, func(net.Conn) bool { return true }) // nobody reads the stream
	defer m.Close()
	m.Handle(&protocol.Frame{StreamOpen: &protocol.StreamOpen{ID: 7}})
	chunk := make([]byte, protocol.MaxStreamChunk)
	for i := 0; i < protocol.StreamWindow/len(chunk)+2; i++ {
		m.Handle(&protocol.Frame{StreamData: &protocol.StreamData{ID: 7, Data: chunk}})
	}
	waitFor(t, func() bool { return m.Len() == 0 })
	mu.Lock()
	defer mu.Unlock()
	if len(closes) != 1 || !strings.Contains(closes[0], "window") {
		t.Fatalf("closes: %q", closes)
	}
}

func TestStreamReadDeadlineWakesABlockedRead(t *testing.T) {
	hub, _, ln := pair(t, 4)
	go func() { c, _ := ln.Accept(); time.Sleep(time.Second); c.Close() }()
	c, err := hub.Open()
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 1)); errc <- err }()
	c.SetReadDeadline(time.Unix(1, 0)) // what http.Server does to abort a read
	var ne net.Error
	if err := <-errc; !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read: %v, want a timeout", err)
	}
}

func TestMuxCloseEndsStreamsAndOpen(t *testing.T) {
	hub, _, ln := pair(t, 4)
	go echo(ln)
	c, err := hub.Open()
	if err != nil {
		t.Fatal(err)
	}
	hub.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after Close: %v, want EOF", err)
	}
	if _, err := hub.Open(); !errors.Is(err, ErrClosed) {
		t.Fatalf("open after close: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 10s")
}
