package modbus

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startServer runs a Server on a free loopback port until the test ends.
func startServer(t testing.TB, cfg ServerConfig) *Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = quietLogger()
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	return s
}

func newClient(t testing.TB, addr string, timeout time.Duration) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{Addr: addr, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientServer(t *testing.T) {
	var (
		mu     sync.Mutex
		writes []Write
	)
	s := startServer(t, ServerConfig{OnWrite: func(w Write) {
		mu.Lock()
		defer mu.Unlock()
		writes = append(writes, w)
	}})
	ctx := t.Context()
	c := newClient(t, s.Addr(), time.Second)

	s.SetInputRegisters(10, 215, 0xFFFF)
	s.SetDiscreteInputs(3, true, false, true)
	s.SetHoldingRegisters(0xFFFE, 7, 8)

	if v, err := c.ReadInputRegisters(ctx, 1, 10, 2); err != nil || !reflect.DeepEqual(v, []uint16{215, 0xFFFF}) {
		t.Fatalf("input registers %v, %v", v, err)
	}
	if v, err := c.ReadDiscreteInputs(ctx, 1, 2, 5); err != nil || !reflect.DeepEqual(v, []bool{false, true, false, true, false}) {
		t.Fatalf("discrete inputs %v, %v", v, err)
	}
	if v, err := c.ReadHoldingRegisters(ctx, 1, 0xFFFE, 2); err != nil || !reflect.DeepEqual(v, []uint16{7, 8}) {
		t.Fatalf("holding registers at the top %v, %v", v, err)
	}

	if err := c.WriteSingleRegister(ctx, 1, 100, 0xBEEF); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMultipleRegisters(ctx, 1, 101, []uint16{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if v, err := c.ReadHoldingRegisters(ctx, 1, 100, 4); err != nil || !reflect.DeepEqual(v, []uint16{0xBEEF, 1, 2, 3}) {
		t.Fatalf("holding registers %v, %v", v, err)
	}
	if got := s.HoldingRegisters(100, 4); !reflect.DeepEqual(got, []uint16{0xBEEF, 1, 2, 3}) {
		t.Fatalf("server holds %v", got)
	}

	if err := c.WriteSingleCoil(ctx, 1, 5, true); err != nil {
		t.Fatal(err)
	}
	bits := make([]bool, 20)
	bits[0], bits[19] = true, true
	if err := c.WriteMultipleCoils(ctx, 1, 6, bits); err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadCoils(ctx, 1, 5, 21)
	if err != nil || !reflect.DeepEqual(got, append([]bool{true}, bits...)) {
		t.Fatalf("coils %v, %v", got, err)
	}

	mu.Lock()
	defer mu.Unlock()
	want := []Write{
		{Unit: 1, Function: FuncWriteSingleRegister, Addr: 100, Count: 1},
		{Unit: 1, Function: FuncWriteMultipleRegisters, Addr: 101, Count: 3},
		{Unit: 1, Function: FuncWriteSingleCoil, Addr: 5, Count: 1},
		{Unit: 1, Function: FuncWriteMultipleCoils, Addr: 6, Count: 20},
	}
	if !reflect.DeepEqual(writes, want) {
		t.Fatalf("OnWrite saw %+v, want %+v", writes, want)
	}
}

func TestClientRefusesBadRequests(t *testing.T) {
	c := newClient(t, "127.0.0.1:1", time.Second) // never dialed
	ctx := t.Context()
	for name, err := range map[string]error{
		"126 registers":  func() error { _, err := c.ReadHoldingRegisters(ctx, 1, 0, 126); return err }(),
		"0 coils":        func() error { _, err := c.ReadCoils(ctx, 1, 0, 0); return err }(),
		"past 65535":     func() error { _, err := c.ReadInputRegisters(ctx, 1, 0xFFFF, 2); return err }(),
		"124 registers":  c.WriteMultipleRegisters(ctx, 1, 0, make([]uint16, 124)),
		"no coils":       c.WriteMultipleCoils(ctx, 1, 0, nil),
		"1969 coils":     c.WriteMultipleCoils(ctx, 1, 0, make([]bool, 1969)),
		"unknown (Do 8)": func() error { _, err := c.Do(ctx, 1, &Request{Function: 8}); return err }(),
	} {
		var ex *Exception
		if !errors.As(err, &ex) {
			t.Errorf("%s: %v, want an *Exception", name, err)
		}
	}
	if c.conn != nil {
		t.Fatal("a refused request dialed")
	}
}

func TestServerUnitAndExceptions(t *testing.T) {
	s := startServer(t, ServerConfig{UnitID: 7})
	c := newClient(t, s.Addr(), time.Second)
	ctx := t.Context()
	if _, err := c.ReadHoldingRegisters(ctx, 7, 0, 1); err != nil {
		t.Fatal(err)
	}
	_, err := c.ReadHoldingRegisters(ctx, 8, 0, 1)
	var ex *Exception
	if !errors.As(err, &ex) || ex.Code != ExGatewayTargetNoResponse {
		t.Fatalf("other unit: %v", err)
	}
	// An exception keeps the connection.
	conn := c.conn
	if _, err := c.ReadHoldingRegisters(ctx, 7, 0, 1); err != nil || c.conn != conn {
		t.Fatalf("after an exception: %v, same conn %v", err, c.conn == conn)
	}
	// Requests the client would refuse reach the server as raw frames.
	raw, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	buf := make([]byte, MaxFrame)
	for _, tc := range []struct {
		pdu  []byte
		want []byte
	}{
		{[]byte{8, 0, 0, 0, 0}, []byte{0x88, 1}},
		{[]byte{3, 0, 0, 0, 200}, []byte{0x83, 3}},
		{[]byte{3, 0xFF, 0xFF, 0, 2}, []byte{0x83, 2}},
		{[]byte{5, 0, 0, 0, 1}, []byte{0x85, 3}},
	} {
		if _, err := raw.Write(AppendFrame(nil, Frame{TxID: 9, Unit: 7, PDU: tc.pdu})); err != nil {
			t.Fatal(err)
		}
		f, err := ReadFrame(raw, buf)
		if err != nil || f.TxID != 9 || f.Unit != 7 || string(f.PDU) != string(tc.want) {
			t.Fatalf("pdu % x: got %+v %v, want % x", tc.pdu, f, err, tc.want)
		}
	}
	// A frame with a bad header closes the connection.
	raw.Write([]byte{0, 1, 0, 9, 0, 6, 7, 3, 0, 0, 0, 1})
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := ReadFrame(raw, buf); err != io.EOF {
		t.Fatalf("after a bad header: %v, want EOF", err)
	}
}

// peer is a scripted device: it reads each request and lets the test answer.
type peer struct {
	ln    net.Listener
	conns chan net.Conn
}

func newPeer(t *testing.T) *peer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{ln: ln, conns: make(chan net.Conn, 4)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			p.conns <- c
		}
	}()
	return p
}

func (p *peer) accept(t *testing.T) net.Conn {
	select {
	case c := <-p.conns:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection")
		return nil
	}
}

func TestClientTimeoutStaleAndReconnect(t *testing.T) {
	p := newPeer(t)
	c := newClient(t, p.ln.Addr().String(), 200*time.Millisecond)
	ctx := t.Context()

	// 1. The peer never answers: the request times out, and the client
	// drops the connection.
	errc := make(chan error, 1)
	go func() { _, err := c.ReadHoldingRegisters(ctx, 1, 0, 1); errc <- err }()
	conn1 := p.accept(t)
	err := <-errc
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !Unreachable(err) {
		t.Fatalf("silent peer: %v, want a timeout", err)
	}

	// 2. The next request dials again; the peer first sends an answer to
	// an older transaction, then the right one: the stale one is skipped.
	go func() { v, err := c.ReadHoldingRegisters(ctx, 1, 0, 1); errc <- err; _ = v }()
	conn2 := p.accept(t)
	if conn2 == conn1 {
		t.Fatal("same connection")
	}
	buf := make([]byte, MaxFrame)
	req, err := ReadFrame(conn2, buf)
	if err != nil {
		t.Fatal(err)
	}
	conn2.Write(AppendFrame(nil, Frame{TxID: req.TxID - 1, Unit: 1, PDU: []byte{3, 2, 0, 99}}))
	conn2.Write(AppendFrame(nil, Frame{TxID: req.TxID, Unit: 1, PDU: []byte{3, 2, 0, 42}}))
	if err := <-errc; err != nil {
		t.Fatalf("with a stale answer first: %v", err)
	}

	// 3. A malformed answer: ErrMalformed, not unreachable, and the
	// connection is dropped.
	go func() { _, err := c.ReadHoldingRegisters(ctx, 1, 0, 1); errc <- err }()
	req, err = ReadFrame(conn2, buf)
	if err != nil {
		t.Fatal(err)
	}
	conn2.Write(AppendFrame(nil, Frame{TxID: req.TxID, Unit: 1, PDU: []byte{3, 4, 0, 42, 0, 0}}))
	if err := <-errc; !errors.Is(err, ErrMalformed) || Unreachable(err) {
		t.Fatalf("malformed answer: %v", err)
	}
	if c.conn != nil {
		t.Fatal("connection kept after a malformed answer")
	}

	// 4. A canceled context ends a request at once.
	cctx, cancel := context.WithCancel(ctx)
	go func() { _, err := c.ReadHoldingRegisters(cctx, 1, 0, 1); errc <- err }()
	p.accept(t)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
}

func TestClientDeviceGone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := newClient(t, addr, time.Second)
	_, err = c.ReadHoldingRegisters(t.Context(), 1, 0, 1)
	if err == nil || !Unreachable(err) {
		t.Fatalf("nothing listening: %v", err)
	}
}

func TestServerMaxConns(t *testing.T) {
	s := startServer(t, ServerConfig{MaxConns: 1})
	c1 := newClient(t, s.Addr(), time.Second)
	if _, err := c1.ReadCoils(t.Context(), 1, 0, 1); err != nil {
		t.Fatal(err)
	}
	c2 := newClient(t, s.Addr(), 500*time.Millisecond)
	if _, err := c2.ReadCoils(t.Context(), 1, 0, 1); err == nil {
		t.Fatal("second connection served")
	}
	c1.Close()
	// Once the first closed, the second gets in.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c2.ReadCoils(t.Context(), 1, 0, 1)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second connection still refused: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Round trips over loopback with our server: the client's latency.
func BenchmarkReadHoldingRegisters(b *testing.B) {
	s := startServer(b, ServerConfig{})
	c := newClient(b, s.Addr(), time.Second)
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.ReadHoldingRegisters(ctx, 1, 0, 10); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteSingleRegister(b *testing.B) {
	s := startServer(b, ServerConfig{})
	c := newClient(b, s.Addr(), time.Second)
	ctx := context.Background()
	var v uint16
	for b.Loop() {
		v++
		if err := c.WriteSingleRegister(ctx, 1, 0, v); err != nil {
			b.Fatal(err)
		}
	}
}

// A write and a read back, as the mapper does for a desired value.
func BenchmarkWriteReadBack(b *testing.B) {
	s := startServer(b, ServerConfig{})
	c := newClient(b, s.Addr(), time.Second)
	ctx := context.Background()
	var v uint16
	for b.Loop() {
		v++
		if err := c.WriteSingleRegister(ctx, 1, 0, v); err != nil {
			b.Fatal(err)
		}
		if r, err := c.ReadHoldingRegisters(ctx, 1, 0, 1); err != nil || r[0] != v {
			b.Fatal(r, err)
		}
	}
}
