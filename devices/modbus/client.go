package modbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// DefaultTimeout bounds one request (connecting included) unless
// ClientConfig.Timeout says otherwise.
const DefaultTimeout = time.Second

// ClientConfig configures a Client.
type ClientConfig struct {
	// Addr is the device's host:port (Modbus TCP's port is 502).
	Addr string
	// Timeout bounds each request, from sending it (or dialing, when the
	// client has no connection) to its response (default DefaultTimeout).
	// A context deadline that comes sooner wins.
	Timeout time.Duration
	// Dial opens connections (default: a net.Dialer over TCP).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (c *ClientConfig) validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("modbus: client addr %q is not host:port: %w", c.Addr, err)
	}
	if c.Timeout < 0 {
		return fmt.Errorf("modbus: client timeout %s is negative", c.Timeout)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Dial == nil {
		c.Dial = (&net.Dialer{}).DialContext
	}
	return nil
}

// Client is a Modbus TCP client (master) of one device address. It connects
// on the first request and again after a connection fails, sends one request
// at a time and matches the response by transaction id, discarding responses
// to earlier requests that timed out.
//
// A Client is not safe for concurrent use: one goroutine owns it (the
// protocol allows one outstanding request per connection as this client
// uses it, so there is nothing to gain from sharing it).
//
// Errors: an *Exception when the device answered with an exception (it is
// reachable); an error wrapping ErrMalformed when its answer broke the
// protocol; otherwise the network error (refused, reset, timeout: see
// Unreachable). After any error but an exception the connection is closed,
// and the next request dials again.
type Client struct {
	cfg  ClientConfig
	conn net.Conn
	txid uint16
	buf  []byte // MaxFrame bytes for reading
	pdu  []byte // the request's PDU, being built
	out  []byte // the request's frame, being written
}

// NewClient returns a client of the device at cfg.Addr; it does not connect
// yet.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Client{cfg: cfg, buf: make([]byte, MaxFrame),
		pdu: make([]byte, 0, MaxPDU), out: make([]byte, 0, MaxFrame)}, nil
}

// Addr is the device's address.
func (c *Client) Addr() string { return c.cfg.Addr }

// Close closes the connection, if any. The client may still be used: the
// next request dials again.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// Unreachable reports whether err says the device could not be spoken to
// (no connection, a timeout, a reset, a canceled context) rather than that it
// answered: an *Exception or a malformed answer are not.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	var ex *Exception
	return !errors.As(err, &ex) && !errors.Is(err, ErrMalformed)
}

// ReadCoils reads count coils (function 1) from addr.
func (c *Client) ReadCoils(ctx context.Context, unit uint8, addr, count uint16) ([]bool, error) {
	r, err := c.Do(ctx, unit, &Request{Function: FuncReadCoils, Addr: addr, Count: count})
	return r.Bits, err
}

// ReadDiscreteInputs reads count discrete inputs (function 2) from addr.
func (c *Client) ReadDiscreteInputs(ctx context.Context, unit uint8, addr, count uint16) ([]bool, error) {
	r, err := c.Do(ctx, unit, &Request{Function: FuncReadDiscreteInputs, Addr: addr, Count: count})
	return r.Bits, err
}

// ReadHoldingRegisters reads count holding registers (function 3) from
// addr.
func (c *Client) ReadHoldingRegisters(ctx context.Context, unit uint8, addr, count uint16) ([]uint16, error) {
	r, err := c.Do(ctx, unit, &Request{Function: FuncReadHoldingRegisters, Addr: addr, Count: count})
	return r.Registers, err
}

// ReadInputRegisters reads count input registers (function 4) from addr.
func (c *Client) ReadInputRegisters(ctx context.Context, unit uint8, addr, count uint16) ([]uint16, error) {
	r, err := c.Do(ctx, unit, &Request{Function: FuncReadInputRegisters, Addr: addr, Count: count})
	return r.Registers, err
}

// WriteSingleCoil sets the coil at addr (function 5).
func (c *Client) WriteSingleCoil(ctx context.Context, unit uint8, addr uint16, on bool) error {
	_, err := c.Do(ctx, unit, &Request{Function: FuncWriteSingleCoil, Addr: addr, Count: 1, Bits: []bool{on}})
	return err
}

// WriteSingleRegister sets the holding register at addr (function 6).
func (c *Client) WriteSingleRegister(ctx context.Context, unit uint8, addr, value uint16) error {
	_, err := c.Do(ctx, unit, &Request{Function: FuncWriteSingleRegister, Addr: addr, Count: 1, Registers: []uint16{value}})
	return err
}

// WriteMultipleCoils sets len(values) coils from addr (function 15).
func (c *Client) WriteMultipleCoils(ctx context.Context, unit uint8, addr uint16, values []bool) error {
	_, err := c.Do(ctx, unit, &Request{Function: FuncWriteMultipleCoils, Addr: addr, Count: uint16(len(values)), Bits: values})
	return err
}

// WriteMultipleRegisters sets len(values) holding registers from addr
// (function 16).
func (c *Client) WriteMultipleRegisters(ctx context.Context, unit uint8, addr uint16, values []uint16) error {
	_, err := c.Do(ctx, unit, &Request{Function: FuncWriteMultipleRegisters, Addr: addr, Count: uint16(len(values)), Registers: values})
	return err
}

// Do sends one request to unit and returns its response. A request the
// protocol does not allow (unknown function, quantity out of limits, a range
// past address 65535) is refused before anything is sent, with the
// *Exception a device would answer.
func (c *Client) Do(ctx context.Context, unit uint8, req *Request) (Response, error) {
	if ex := req.check(); ex != nil {
		return Response{}, fmt.Errorf("modbus: refused to send %s of %d at %d: %w", req.Function, req.quantity(), req.Addr, ex)
	}
	resp, err := c.roundTrip(ctx, unit, req)
	if err != nil {
		var ex *Exception
		if !errors.As(err, &ex) {
			// The stream may hold a partial or late answer: start afresh.
			c.Close()
		}
		return Response{}, fmt.Errorf("modbus %s unit %d: %s at %d: %w", c.cfg.Addr, unit, req.Function, req.Addr, err)
	}
	return resp, nil
}

func (c *Client) roundTrip(ctx context.Context, unit uint8, req *Request) (Response, error) {
	deadline := time.Now().Add(c.cfg.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if c.conn == nil {
		dctx, cancel := context.WithDeadline(ctx, deadline)
		conn, err := c.cfg.Dial(dctx, "tcp", c.cfg.Addr)
		cancel()
		if err != nil {
			return Response{}, err
		}
		c.conn = conn
	}
	conn := c.conn
	if err := conn.SetDeadline(deadline); err != nil {
		return Response{}, err
	}
	// A canceled context interrupts the IO at once.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	c.txid++
	c.pdu = req.appendPDU(c.pdu[:0])
	c.out = AppendFrame(c.out[:0], Frame{TxID: c.txid, Unit: unit, PDU: c.pdu})
	if _, err := conn.Write(c.out); err != nil {
		return Response{}, ctxErr(ctx, err)
	}
	for {
		f, err := ReadFrame(conn, c.buf)
		if err != nil {
			return Response{}, ctxErr(ctx, err)
		}
		if f.TxID != c.txid {
			// The answer to an earlier request that timed out: skip it.
			continue
		}
		if f.Unit != unit {
			return Response{}, malformed("response from unit %d, want %d", f.Unit, unit)
		}
		return parseResponse(req, f.PDU)
	}
}

// ctxErr prefers the context's error to the IO error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}
