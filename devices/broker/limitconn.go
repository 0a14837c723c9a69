package broker

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
)

// errPacketTooLarge ends a client that sent a packet over its bound.
var errPacketTooLarge = errors.New("mqtt packet too large")

// limitConn bounds the packets a client sends, per connection: it follows
// the MQTT framing (a type byte, the remaining length in 1 to 4 bytes, then
// that many bytes) of what the broker reads, and fails the read that brings
// a length over the limit, before mochi allocates the packet. mochi's own
// bound (Capabilities.MaximumPacketSize) is server-wide; this one is raised
// for edgecore's connection once it authenticated (setLimit).
type limitConn struct {
	net.Conn
	limit atomic.Int64
	// err is the error that ended the client, if its packet was too large;
	// read after the client ended.
	err atomic.Pointer[error]

	// The framing state, touched by the reading goroutine only.
	state     uint8 // stateHeader, stateLength or stateBody
	length    int   // the remaining length read so far
	shift     uint  // of the next length byte
	remaining int   // bytes left in the packet's body
}

const (
	stateHeader = iota
	stateLength
	stateBody
)

func newLimitConn(c net.Conn, limit int64) *limitConn {
	lc := &limitConn{Conn: c}
	lc.limit.Store(limit)
	return lc
}

func (c *limitConn) setLimit(n int64) { c.limit.Store(n) }

func (c *limitConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if serr := c.scan(p[:n]); serr != nil {
		c.err.Store(&serr)
		c.Conn.Close()
		return 0, serr
	}
	return n, err
}

// scan follows the framing over b.
func (c *limitConn) scan(b []byte) error {
	for i := 0; i < len(b); {
		switch c.state {
		case stateHeader:
			c.state, c.length, c.shift = stateLength, 0, 0
			i++
		case stateLength:
			v := b[i]
			i++
			c.length |= int(v&0x7f) << c.shift
			c.shift += 7
			if v&0x80 != 0 {
				if c.shift >= 28 {
					return fmt.Errorf("%w: malformed remaining length", errPacketTooLarge)
				}
				continue
			}
			if limit := c.limit.Load(); int64(c.length) > limit {
				return fmt.Errorf("%w: %d bytes, limit %d", errPacketTooLarge, c.length, limit)
			}
			c.remaining, c.state = c.length, stateBody
			if c.remaining == 0 {
				c.state = stateHeader
			}
		case stateBody:
			k := min(len(b)-i, c.remaining)
			i += k
			c.remaining -= k
			if c.remaining == 0 {
				c.state = stateHeader
			}
		}
	}
	return nil
}

// tooLarge is the error that ended the client if its packet was too large.
func (c *limitConn) tooLarge() error {
	if p := c.err.Load(); p != nil {
		return *p
	}
	return nil
}
