// Package link is the edge end of the cloud-edge tunnel: it dials the hub
// over TLS, authenticates with the node's client certificate (the TLS
// configuration presents it; package credentials), runs the Hello/Welcome
// handshake and then reads and writes frames. Reconnecting is the caller's
// loop; Backoff gives it exponential, fully jittered, capped delays so that
// a hub restart does not bring every node back in the same second, and a
// hub that sheds a connection (HTTP 503 with Retry-After) says when to come
// back (*RetryAfterError).
package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-edge/tether/protocol"
)

// Dialer opens sessions to the hub.
type Dialer struct {
	// URL is the hub's websocket URL, wss://host:port/v1/connect.
	URL string
	// TLS verifies the hub (its RootCAs hold the cloud's CA) and presents
	// the node's client certificate.
	TLS *tls.Config
	// Timeout bounds the dial and the handshake.
	Timeout time.Duration
	// NetDial, if set, opens the TCP connection instead of a net.Dialer
	// without TCP keep-alives (heartbeats tell a dead link; keep-alive
	// probes would cost an idle edge more than they do). TLS still runs on
	// top of it. The simulator uses it to cut a hollow node's link and
	// count its bytes.
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Conn is an open session.
type Conn struct {
	ws      *websocket.Conn
	Welcome protocol.Welcome

	wmu sync.Mutex // serializes writes
}

// Dial connects and runs the handshake with hello. A refusal by the hub comes
// back as a *protocol.Error (errors.As), or, before the websocket is up, as an
// error naming the HTTP status.
func (d *Dialer) Dial(ctx context.Context, hello *protocol.Hello) (*Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.Timeout)
	defer cancel()
	dial := d.NetDial
	if dial == nil {
		dial = (&net.Dialer{KeepAlive: -1}).DialContext
	}
	wd := websocket.Dialer{
		TLSClientConfig:  d.TLS,
		HandshakeTimeout: d.Timeout,
		ReadBufferSize:   4096,
		WriteBufferSize:  4096,
		NetDialContext:   dial,
	}
	ws, resp, err := wd.DialContext(ctx, d.URL, nil)
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusServiceUnavailable {
			ra := retryAfter(resp.Header.Get("Retry-After"))
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return nil, &RetryAfterError{After: ra, Message: fmt.Sprintf("dial %s: %s: %s", d.URL, resp.Status,
				strings.TrimSpace(string(b)))}
		}
		if resp != nil {
			// The hub says why it refused in the body (a person reads it).
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return nil, fmt.Errorf("dial %s: %s: %s", d.URL, resp.Status, strings.TrimSpace(string(b)))
		}
		return nil, fmt.Errorf("dial %s: %w", d.URL, err)
	}
	ws.SetReadLimit(protocol.MaxFrameSize)
	c := &Conn{ws: ws}
	deadline, _ := ctx.Deadline()
	ws.SetWriteDeadline(deadline)
	if err := c.Write(&protocol.Frame{Hello: hello}); err != nil {
		ws.Close()
		return nil, fmt.Errorf("send hello: %w", err)
	}
	ws.SetReadDeadline(deadline)
	f, err := c.Read()
	if err != nil {
		ws.Close()
		return nil, fmt.Errorf("read welcome: %w", err)
	}
	switch {
	case f.Welcome != nil:
		c.Welcome = *f.Welcome
	case f.Error != nil:
		ws.Close()
		return nil, f.Error
	default:
		ws.Close()
		return nil, fmt.Errorf("hub answered Hello with %s", f.Type())
	}
	ws.SetReadDeadline(time.Time{})
	ws.SetWriteDeadline(time.Time{})
	return c, nil
}

// RetryAfterError is the hub's 503 before the websocket upgrade: it is
// starting, stopping or taking no more sessions for now, and After says
// when to try again (its Retry-After, whole seconds; 0 if it gave none).
type RetryAfterError struct {
	After   time.Duration
	Message string
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%s (retry after %s)", e.Message, e.After)
}

// MaxRetryAfter bounds the Retry-After the edge honours: a hub that asks
// for longer is waited for this long.
const MaxRetryAfter = 5 * time.Minute

// retryAfter reads a Retry-After header in seconds (an HTTP date is not
// honoured: 0).
func retryAfter(h string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(h))
	if err != nil || n <= 0 {
		return 0
	}
	return min(time.Duration(n)*time.Second, MaxRetryAfter)
}

// Jittered returns how long to wait for a Retry-After of d whole seconds:
// a uniform draw from [d-1s, d) (from [0, d) below a second), so that
// the edges a hub sent away with the same d come back spread over its last
// second, as the hub planned them (it hands out d at its session rate).
func Jittered(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	lo := max(d-time.Second, 0)
	return lo + rand.N(d-lo)
}

// ErrTooLarge is returned by Read for a frame over the size limit; the
// session is over.
var ErrTooLarge = protocol.ErrTooLarge

// Read returns the next frame. Decode errors that leave the session usable
// are returned as *DecodeError; any other error ends the session. See
// SetReadTimeout for bounding the wait.
func (c *Conn) Read() (*protocol.Frame, error) {
	_, b, err := c.ws.ReadMessage()
	if err != nil {
		if errors.Is(err, websocket.ErrReadLimit) {
			return nil, ErrTooLarge
		}
		return nil, err
	}
	f, err := protocol.Decode(b)
	if err != nil {
		return nil, &DecodeError{Err: err}
	}
	return f, nil
}

// SetReadTimeout makes reads fail when nothing arrives within d.
func (c *Conn) SetReadTimeout(d time.Duration) {
	c.ws.SetReadDeadline(time.Now().Add(d))
}

// DecodeError is a frame that could not be decoded; the session goes on.
type DecodeError struct{ Err error }

func (e *DecodeError) Error() string { return "bad frame from hub: " + e.Err.Error() }
func (e *DecodeError) Unwrap() error { return e.Err }

// Write encodes and sends f.
func (c *Conn) Write(f *protocol.Frame) error {
	b, err := protocol.Encode(f)
	if err != nil {
		return err
	}
	return c.WriteRaw(b)
}

// WriteRaw sends an already encoded frame.
func (c *Conn) WriteRaw(b []byte) error {
	if len(b) > protocol.MaxFrameSize {
		return protocol.ErrTooLarge
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	return c.ws.WriteMessage(websocket.BinaryMessage, b)
}

// Close closes the connection.
func (c *Conn) Close() error {
	c.wmu.Lock()
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
		time.Now().Add(time.Second))
	c.wmu.Unlock()
	return c.ws.Close()
}

// Backoff computes reconnect delays: exponential from Initial up to the cap,
// each drawn uniformly from [0, d] ("full jitter") so that nodes that lost
// the hub together spread evenly over the cap. The cap is Max, or the hub's
// Welcome.ReconnectMax if that is larger (SetHubMax): the hub knows how
// fast its fleet may come back.
type Backoff struct {
	Initial, Max time.Duration
	attempt      int
	hubMax       time.Duration
}

// Next returns the delay before the next attempt.
func (b *Backoff) Next() time.Duration {
	c := b.Cap()
	d := b.Initial << min(b.attempt, 30)
	if d > c || d <= 0 {
		d = c
	}
	b.attempt++
	return rand.N(d + 1)
}

// Cap is the longest delay Next returns: Max, or the hub's bound if larger.
func (b *Backoff) Cap() time.Duration { return max(b.Max, b.hubMax) }

// SetHubMax records the bound the hub advertised (0: none).
func (b *Backoff) SetHubMax(d time.Duration) { b.hubMax = max(d, 0) }

// Reset starts over from Initial.
func (b *Backoff) Reset() { b.attempt = 0 }
