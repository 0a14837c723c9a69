package modbus

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Addr is the host:port to listen on in Start (port 0 picks a free
	// one; Server.Addr tells which). Unused by Serve.
	Addr string
	// UnitID, when not 0, is the only unit the server answers as; a
	// request to another unit gets exception 0x0B (gateway target device
	// failed to respond), as from a gateway. 0 answers every unit.
	UnitID uint8
	// MaxConns bounds the open connections (default 16); more are closed
	// at once.
	MaxConns int
	// IdleTimeout closes a connection silent for that long (default 5m).
	IdleTimeout time.Duration
	// OnWrite, if set, is called after each write request applied, from
	// the connection's goroutine and without the server's lock held.
	OnWrite func(Write)
	// Logger is where the server logs (default slog.Default()).
	Logger *slog.Logger
}

// Write describes one applied write request, for ServerConfig.OnWrite.
type Write struct {
	Unit     uint8
	Function FunctionCode
	Addr     uint16
	// Count is how many coils or registers were written.
	Count int
}

func (c *ServerConfig) validate() error {
	if c.MaxConns < 0 || c.IdleTimeout < 0 {
		return fmt.Errorf("modbus: server: negative maxConns %d or idleTimeout %s", c.MaxConns, c.IdleTimeout)
	}
	if c.MaxConns == 0 {
		c.MaxConns = 16
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Server is a Modbus TCP server (slave) holding its four tables in memory:
// 65536 coils, discrete inputs, holding registers and input registers, all
// zero at first. Clients read all four and write coils and holding
// registers; the program that runs the server sets any of them (say, an
// input register as a sensor's reading) with the Set methods. It serves
// tests, the demo and the simulator as a device.
//
// Each connection has its own goroutine; requests on one connection are
// answered in order. A Server serves once: call Start or Serve one time.
type Server struct {
	cfg ServerConfig
	log *slog.Logger

	mu sync.Mutex
	// The tables; guarded by mu.
	coils, discrete []bool
	holding, input  []uint16
	// addr is the address listened on; guarded by mu.
	addr  string
	ready chan struct{}
}

// NewServer returns a server whose tables are all zero; it serves nothing
// until Start or Serve.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: cfg.Logger, ready: make(chan struct{}),
		coils: make([]bool, 1<<16), discrete: make([]bool, 1<<16),
		holding: make([]uint16, 1<<16), input: make([]uint16, 1<<16)}, nil
}

// Ready is closed once the server listens.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the address the server listens on, "" before it does.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Start listens on ServerConfig.Addr and serves until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("modbus: server: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves connections accepted from ln until ctx ends, then closes ln
// and every connection and returns once their goroutines did.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	s.addr = ln.Addr().String()
	s.mu.Unlock()
	close(s.ready)
	s.log.Info("modbus server listening", slog.String("addr", ln.Addr().String()), slog.Int("unit", int(s.cfg.UnitID)))

	var wg sync.WaitGroup
	conns := map[net.Conn]struct{}{}
	var connsMu sync.Mutex // guards conns
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		connsMu.Lock()
		defer connsMu.Unlock()
		for c := range conns {
			c.Close()
		}
	})
	defer stop()
	var err error
	for {
		conn, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("modbus: server: accept: %w", aerr)
				ln.Close()
			}
			break
		}
		connsMu.Lock()
		if ctx.Err() != nil || len(conns) >= s.cfg.MaxConns {
			connsMu.Unlock()
			s.log.Warn("modbus server refuses a connection", slog.String("remote", conn.RemoteAddr().String()),
				slog.Int("max_conns", s.cfg.MaxConns))
			conn.Close()
			continue
		}
		conns[conn] = struct{}{}
		connsMu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(conn)
			connsMu.Lock()
			delete(conns, conn)
			connsMu.Unlock()
			conn.Close()
		}()
	}
	connsMu.Lock()
	for c := range conns {
		c.Close()
	}
	connsMu.Unlock()
	wg.Wait()
	return err
}

func (s *Server) serveConn(conn net.Conn) {
	r := bufio.NewReader(conn)
	buf := make([]byte, MaxFrame)
	out := make([]byte, 0, MaxFrame)
	pdu := make([]byte, 0, MaxPDU)
	for {
		conn.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		f, err := ReadFrame(r, buf)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("modbus server closes a connection", slog.String("remote", conn.RemoteAddr().String()), slog.Any("err", err))
			}
			return
		}
		var w *Write
		pdu, w = s.handle(pdu[:0], f.Unit, f.PDU)
		out = AppendFrame(out[:0], Frame{TxID: f.TxID, Unit: f.Unit, PDU: pdu})
		conn.SetWriteDeadline(time.Now().Add(s.cfg.IdleTimeout))
		if _, err := conn.Write(out); err != nil {
			return
		}
		if w != nil && s.cfg.OnWrite != nil {
			s.cfg.OnWrite(*w)
		}
	}
}

// handle answers one request PDU: it appends the response PDU to b and
// returns, for an applied write, what it wrote.
func (s *Server) handle(b []byte, unit uint8, reqPDU []byte) ([]byte, *Write) {
	req, ex := parseRequest(reqPDU)
	if ex == nil && s.cfg.UnitID != 0 && unit != s.cfg.UnitID {
		ex = &Exception{req.Function, ExGatewayTargetNoResponse}
	}
	if ex != nil {
		return appendException(b, ex), nil
	}
	var resp Response
	var w *Write
	a, n := int(req.Addr), req.quantity()
	s.mu.Lock()
	switch req.Function {
	case FuncReadCoils:
		resp.Bits = append([]bool(nil), s.coils[a:a+n]...)
	case FuncReadDiscreteInputs:
		resp.Bits = append([]bool(nil), s.discrete[a:a+n]...)
	case FuncReadHoldingRegisters:
		resp.Registers = append([]uint16(nil), s.holding[a:a+n]...)
	case FuncReadInputRegisters:
		resp.Registers = append([]uint16(nil), s.input[a:a+n]...)
	case FuncWriteSingleCoil, FuncWriteMultipleCoils:
		copy(s.coils[a:], req.Bits)
		w = &Write{Unit: unit, Function: req.Function, Addr: req.Addr, Count: n}
	case FuncWriteSingleRegister, FuncWriteMultipleRegisters:
		copy(s.holding[a:], req.Registers)
		w = &Write{Unit: unit, Function: req.Function, Addr: req.Addr, Count: n}
	}
	s.mu.Unlock()
	return appendResponse(b, &req, &resp), w
}

// get copies n values of table from addr; the range is clipped to the
// table.
func get[T any](s *Server, table []T, addr uint16, n int) []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	end := min(int(addr)+n, len(table))
	return append([]T(nil), table[addr:end]...)
}

// set copies values into table from addr, clipped to the table.
func set[T any](s *Server, table []T, addr uint16, values []T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	copy(table[addr:], values)
}

// Coils returns n coils from addr.
func (s *Server) Coils(addr uint16, n int) []bool { return get(s, s.coils, addr, n) }

// DiscreteInputs returns n discrete inputs from addr.
func (s *Server) DiscreteInputs(addr uint16, n int) []bool { return get(s, s.discrete, addr, n) }

// HoldingRegisters returns n holding registers from addr.
func (s *Server) HoldingRegisters(addr uint16, n int) []uint16 { return get(s, s.holding, addr, n) }

// InputRegisters returns n input registers from addr.
func (s *Server) InputRegisters(addr uint16, n int) []uint16 { return get(s, s.input, addr, n) }

// SetCoils sets coils from addr.
func (s *Server) SetCoils(addr uint16, values ...bool) { set(s, s.coils, addr, values) }

// SetDiscreteInputs sets discrete inputs from addr.
func (s *Server) SetDiscreteInputs(addr uint16, values ...bool) { set(s, s.discrete, addr, values) }

// SetHoldingRegisters sets holding registers from addr.
func (s *Server) SetHoldingRegisters(addr uint16, values ...uint16) { set(s, s.holding, addr, values) }

// SetInputRegisters sets input registers from addr.
func (s *Server) SetInputRegisters(addr uint16, values ...uint16) { set(s, s.input, addr, values) }
