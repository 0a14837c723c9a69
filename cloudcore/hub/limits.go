package hub

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/time/rate"
)

// fdReserve is how many file descriptors below the process's limit
// (RLIMIT_NOFILE) MaxConns must stay: cloudcore's API server connections,
// the health listener, files and a margin.
const fdReserve = 1024

// fdLimit is the process's soft limit of open files, or 0 if unknown.
func fdLimit() uint64 {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return 0
	}
	return l.Cur
}

// limitLog logs a line at most every 10 s: limits hit by a flood would
// otherwise flood the log.
type limitLog struct{ s rate.Sometimes }

func newLimitLog() *limitLog { return &limitLog{s: rate.Sometimes{Interval: 10 * time.Second}} }

func (l *limitLog) do(f func()) { l.s.Do(f) }

// connLimiter is a listener that closes, at once, a new connection past
// AcceptRatePerIP from its source address, past MaxConns open or past
// MaxConnsPerIP open from its source address: before its TLS handshake, so
// that a refused connection costs the hub an accept and a close. Past
// MaxHandshakes in progress or past AcceptRate it waits instead: it stops
// accepting until a handshake ends or a token comes, and the connections
// not accepted wait in the kernel's listen backlog, their ClientHello sent
// and unread, costing nothing. A connection closed there would cost its
// edge a TCP connect and the key shares of a ClientHello (X25519 and
// ML-KEM, a few hundred microseconds) for nothing, and bring it back at
// random later: in a 10,000-node storm the refused connections outnumbered
// the sessions, and the fleet's CPU spent on them was the hub's to lose on
// a shared machine. The source address's checks come first: one address
// flooding the hub is refused before it takes a place or a token.
type connLimiter struct {
	net.Listener
	h     *Hub
	rate  *rate.Limiter
	total atomic.Int64
	// slots holds a value per connection admitted that has not finished
	// its TLS handshake and request header yet (MaxHandshakes).
	slots     chan struct{}
	closed    chan struct{}
	closeOnce sync.Once
	logRate   *limitLog
	logCap    *limitLog

	mu sync.Mutex
	// perIP counts the open connections of each source address; guarded
	// by mu. An address with none has no entry.
	perIP map[string]int
	// rateIP is the AcceptRatePerIP bucket of each source address that
	// connected lately; guarded by mu. A full bucket is the same as none:
	// such entries are swept when the map is at maxRateIPs.
	rateIP map[string]*rate.Limiter
}

// maxRateIPs bounds connLimiter.rateIP (about 100 bytes an entry).
const maxRateIPs = 1 << 16

func newConnLimiter(ln net.Listener, h *Hub) *connLimiter {
	return &connLimiter{Listener: ln, h: h, perIP: map[string]int{}, rateIP: map[string]*rate.Limiter{},
		rate:  rate.NewLimiter(rate.Limit(h.cfg.AcceptRate), h.cfg.AcceptBurst),
		slots: make(chan struct{}, h.cfg.MaxHandshakes), closed: make(chan struct{}),
		logRate: newLimitLog(), logCap: newLimitLog()}
}

func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lc, err := l.admit(c)
		if lc != nil {
			return lc, nil
		}
		c.Close()
		if err != nil {
			return nil, err
		}
	}
}

func (l *connLimiter) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// admit returns c wrapped to release its place when closed, or nil if a
// limit refuses it. It waits for a MaxHandshakes place and an AcceptRate
// token; closing the listener ends the wait with net.ErrClosed.
func (l *connLimiter) admit(c net.Conn) (net.Conn, error) {
	st, cfg := &l.h.stats, &l.h.cfg
	ip := hostOf(c.RemoteAddr())
	if !l.allowIP(ip, time.Now()) {
		n := st.refusedRateIP.Add(1)
		l.logRate.do(func() {
			l.h.log.Warn("connection refused: accept rate limit per address", slog.String("remote", ip),
				slog.Float64("acceptRatePerIP", cfg.AcceptRatePerIP), slog.Int64("refusedSoFar", n))
		})
		return nil, nil
	}
	if l.total.Add(1) > int64(cfg.MaxConns) {
		l.total.Add(-1)
		n := st.refusedTotal.Add(1)
		l.logCap.do(func() {
			l.h.log.Warn("connection refused: connection limit", slog.String("remote", ip),
				slog.Int("maxConns", cfg.MaxConns), slog.Int64("refusedSoFar", n))
		})
		return nil, nil
	}
	l.mu.Lock()
	if l.perIP[ip] >= cfg.MaxConnsPerIP {
		l.mu.Unlock()
		l.total.Add(-1)
		n := st.refusedPerIP.Add(1)
		l.logCap.do(func() {
			l.h.log.Warn("connection refused: connection limit per address", slog.String("remote", ip),
				slog.Int("maxConnsPerIP", cfg.MaxConnsPerIP), slog.Int64("refusedSoFar", n))
		})
		return nil, nil
	}
	l.perIP[ip]++
	l.mu.Unlock()
	st.conns.Add(1)
	if err := l.wait(); err != nil {
		l.release(ip)
		return nil, err
	}
	lc := &limitedConn{Conn: c, l: l, ip: ip}
	lc.handshaking.Store(true)
	return lc, nil
}

// wait takes a MaxHandshakes place and an AcceptRate token, waiting for
// them if need be; closing the listener ends the wait with net.ErrClosed.
func (l *connLimiter) wait() error {
	st := &l.h.stats
	select {
	case l.slots <- struct{}{}:
	default:
		st.waitedHandshakes.Add(1)
		start := time.Now()
		select {
		case l.slots <- struct{}{}:
		case <-l.closed:
			return net.ErrClosed
		}
		st.acceptWaitNanos.Add(int64(time.Since(start)))
	}
	r := l.rate.Reserve()
	if d := r.Delay(); d > 0 {
		st.waitedRate.Add(1)
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-l.closed:
			r.Cancel()
			<-l.slots
			return net.ErrClosed
		}
		st.acceptWaitNanos.Add(int64(d))
	}
	return nil
}

// allowIP takes a token from ip's AcceptRatePerIP bucket. An address not
// tracked yet while maxRateIPs are is allowed: AcceptRate still applies.
func (l *connLimiter) allowIP(ip string, now time.Time) bool {
	cfg := &l.h.cfg
	l.mu.Lock()
	defer l.mu.Unlock()
	lim := l.rateIP[ip]
	if lim == nil {
		if len(l.rateIP) >= maxRateIPs {
			for k, v := range l.rateIP {
				if v.TokensAt(now) >= float64(cfg.AcceptBurstPerIP) {
					delete(l.rateIP, k)
				}
			}
		}
		if len(l.rateIP) >= maxRateIPs {
			return true
		}
		lim = rate.NewLimiter(rate.Limit(cfg.AcceptRatePerIP), cfg.AcceptBurstPerIP)
		l.rateIP[ip] = lim
	}
	return lim.AllowN(now, 1)
}

func (l *connLimiter) release(ip string) {
	l.mu.Lock()
	if l.perIP[ip]--; l.perIP[ip] <= 0 {
		delete(l.perIP, ip)
	}
	l.mu.Unlock()
	l.total.Add(-1)
	l.h.stats.conns.Add(-1)
}

func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// limitedConn gives its place back once closed, and remembers the last
// http.ConnState the server gave it.
type limitedConn struct {
	net.Conn
	l     *connLimiter
	ip    string
	once  sync.Once
	state atomic.Int32
	// handshaking is set until the connection's TLS handshake and first
	// request header are done (or it closed): it holds a MaxHandshakes
	// place.
	handshaking atomic.Bool
}

// handshakeDone gives back the connection's MaxHandshakes place, once.
func (c *limitedConn) handshakeDone() {
	if c.handshaking.CompareAndSwap(true, false) {
		<-c.l.slots
	}
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.handshakeDone()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}

// connState counts the connections the server closes before they made a
// request (silent, a TLS handshake or request header that did not finish in
// HandshakeTimeout) and those closed idle (IdleTimeout, or the peer left).
func (h *Hub) connState(c net.Conn, st http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	prev := http.ConnState(lc.state.Swap(int32(st)))
	if st != http.StateNew {
		lc.handshakeDone()
	}
	if st != http.StateClosed {
		return
	}
	switch prev {
	case http.StateNew:
		n := h.stats.closedNew.Add(1)
		h.logTimeout.do(func() {
			h.log.Info("connection closed before a request", slog.String("remote", lc.ip),
				slog.Duration("handshakeTimeout", h.cfg.HandshakeTimeout), slog.Int64("closedSoFar", n))
		})
	case http.StateIdle:
		h.stats.closedIdle.Add(1)
	}
}

// MinReconnectMax is the least back-off cap the hub advertises
// (Welcome.ReconnectMax): one node is back within about that of the hub's
// return, however long it was away.
const MinReconnectMax = 2 * time.Second

// maxRetryAfter bounds the Retry-After the hub hands out: past it the
// queue of shed edges is not tracked further (they come back then and
// are shed again if need be).
const maxRetryAfter = 5 * time.Minute

// ReconnectMax is the back-off cap the hub advertises to edges of protocol
// 5: its sessions divided by SessionRate, at least MinReconnectMax and at
// most a minute. Edges that lost the hub retry at random below it, so the
// whole fleet, coming back after an outage, arrives over about that long:
// at about the rate the hub starts sessions.
func (h *Hub) ReconnectMax() time.Duration {
	n := float64(h.stats.sessions.Load() + 1)
	d := time.Duration(n / h.cfg.SessionRate * float64(time.Second))
	return min(max(d, MinReconnectMax), time.Minute)
}

// admission paces new sessions: a token bucket at SessionRate, and for
// the edges it turns away a queue of times to come back, a slot of
// 1/SessionRate each after the last one handed out, so that they return
// spread at the rate the bucket refills instead of together.
type admission struct {
	lim  *rate.Limiter
	slot time.Duration

	mu sync.Mutex
	// next is the end of the last slot handed out; guarded by mu.
	next time.Time
}

func newAdmission(r float64, burst int) *admission {
	return &admission{lim: rate.NewLimiter(rate.Limit(r), burst), slot: time.Duration(float64(time.Second) / r)}
}

// take admits a session at now, or returns when to come back: whole
// seconds (Retry-After's unit), at least one, at most maxRetryAfter. The
// edge draws its wait from the last of them (link.Jittered), which is
// where its slot lies.
func (a *admission) take(now time.Time) (ok bool, after time.Duration) {
	if a.lim.AllowN(now, 1) {
		return true, 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next.Before(now) {
		a.next = now
	}
	if a.next.Sub(now) < maxRetryAfter {
		a.next = a.next.Add(a.slot)
	}
	d := a.next.Sub(now)
	ceil := (d + time.Second - 1).Truncate(time.Second)
	return false, min(max(ceil, time.Second), maxRetryAfter)
}
