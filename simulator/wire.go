package simulator

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// errCut is what a dial returns while a node's link is cut.
var errCut = errors.New("simulator: link cut")

// wire is a hollow node's network: every TCP connection its link opens goes
// through wire.dial (link.Dialer.NetDial), so the simulator counts the bytes
// (TLS records, the layer below the websocket) and cuts the link, with no
// goroutine and no socket of its own.
//
// A cut closes the open connection, as when a WAN link drops and both ends
// see it at once (the e2e tests' cutLink does the same with a relay), and
// refuses dials until heal.
type wire struct {
	// connect opens the connections (nil: a net.Dialer's).
	connect func(ctx context.Context, network, addr string) (net.Conn, error)

	// up and down count bytes from the edge to the cloud and back, over
	// every connection since the node was made.
	up, down atomic.Int64
	// connectedAt is when the last dial connected (Unix nanoseconds): the
	// hub accepted it.
	connectedAt atomic.Int64
	// dials counts the connections the hub accepted (TCP), every attempt
	// included: a storm's connections per node.
	dials atomic.Int64
	// unanswered counts the connections that ended before the hub sent a
	// byte: refused before the TLS handshake (the hub's accept limits).
	unanswered atomic.Int64
	// replica is the cloudcore replica the last dial reached (-1: one
	// cloudcore, or never connected).
	replica atomic.Int32

	mu sync.Mutex
	// cut refuses dials; guarded by mu.
	cut bool
	// conns are the open connections; guarded by mu.
	conns []*wireConn
}

// dial is a link.Dialer's NetDial.
func (w *wire) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if w.isCut() {
		return nil, errCut
	}
	connect := w.connect
	if connect == nil {
		var d net.Dialer
		connect = d.DialContext
	}
	c, err := connect(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	wc := &wireConn{Conn: c, w: w}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cut { // cut while dialing
		c.Close()
		return nil, errCut
	}
	w.conns = append(w.conns, wc)
	w.connectedAt.Store(time.Now().UnixNano())
	w.dials.Add(1)
	if rc, ok := c.(*replicaConn); ok {
		w.replica.Store(int32(rc.replica))
	}
	return wc, nil
}

func (w *wire) isCut() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cut
}

// setCut cuts the link (closing what is open) or heals it.
func (w *wire) setCut(cut bool) {
	w.mu.Lock()
	w.cut = cut
	var open []*wireConn
	if cut {
		open, w.conns = w.conns, nil
	}
	w.mu.Unlock()
	for _, c := range open {
		c.Conn.Close()
	}
}

func (w *wire) forget(c *wireConn) {
	w.mu.Lock()
	w.conns = slices.DeleteFunc(w.conns, func(x *wireConn) bool { return x == c })
	w.mu.Unlock()
}

// wireConn is a connection through a wire.
type wireConn struct {
	net.Conn
	w *wire
	// answered: the hub sent a byte; ended: the first read error, counted.
	answered, ended atomic.Bool
}

func (c *wireConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.w.down.Add(int64(n))
	if n > 0 {
		c.answered.Store(true)
	}
	if err != nil && !c.answered.Load() && c.ended.CompareAndSwap(false, true) {
		c.w.unanswered.Add(1)
	}
	return n, err
}

func (c *wireConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.w.up.Add(int64(n))
	return n, err
}

func (c *wireConn) Close() error {
	c.w.forget(c)
	return c.Conn.Close()
}
