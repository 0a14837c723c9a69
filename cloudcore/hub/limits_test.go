package hub

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/tether-edge/tether/pki/pkitest"
	"github.com/tether-edge/tether/protocol"
)

// served is a hub running Serve on loopback listeners, as cloudcore runs it.
type served struct {
	h      *Hub
	src    *memSource
	addr   string // the tunnel's host:port
	health string // the health listener's host:port
	// stop ends Serve and waits for it (once; the test's end does too).
	stop func()
}

// serveHub runs Serve with cfg (Addr, TLS, Auth and the health listener
// filled in) until the test ends. /v1/ca answers "ca".
func serveHub(t *testing.T, cfg Config, up Upstream) *served {
	t.Helper()
	pair := pkitest.ServingCert(t, testCA())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = ln.Addr().String()
	cfg.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert}
	cfg.HealthListener = hln
	if cfg.Auth == nil {
		cfg.Auth = newTestAuth(t)
	}
	cfg.Handlers = map[string]http.Handler{"/v1/ca": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ca")
	})}
	src := &memSource{objs: map[string]protocol.Object{}, unserved: map[protocol.Kind]bool{}}
	h, err := New(cfg, src, up, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	src.hub = h
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, ln) }()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	t.Cleanup(stop)
	return &served{h: h, src: src, addr: cfg.Addr, health: hln.Addr().String(), stop: stop}
}

// closedWithin reports how long the hub took to close c (it reads until an
// error), or fails if c is still open after limit.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %s", limit)
	}
	return time.Since(start)
}

func dialTLS(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond every 5 ms for 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
	}
}

// Limits HandshakeTimeout (http.Server's ReadHeaderTimeout, which covers the
// TLS handshake too) and IdleTimeout: a silent TCP connection, one silent
// after its TLS handshake and a keep-alive one idle after a request are all
// closed within their timeout.
func TestSlowConnectionsClosed(t *testing.T) {
	const timeout = time.Second
	s := serveHub(t, Config{HandshakeTimeout: timeout, IdleTimeout: timeout}, nopUpstream{})
	limit := 10 * timeout

	t.Run("silent TCP", func(t *testing.T) {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		d := closedWithin(t, c, limit)
		t.Logf("silent TCP connection closed after %s (HandshakeTimeout %s)", d.Round(time.Millisecond), timeout)
	})
	t.Run("silent after TLS", func(t *testing.T) {
		c := dialTLS(t, s.addr)
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		d := closedWithin(t, c, limit)
		t.Logf("connection silent after TLS closed after %s (HandshakeTimeout %s)", d.Round(time.Millisecond), timeout)
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		c := dialTLS(t, s.addr)
		fmt.Fprintf(c, "GET /v1/ca HTTP/1.1\r\nHost: hub\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "ca" || resp.Close {
			t.Fatalf("GET /v1/ca: %s %q close=%v", resp.Status, b, resp.Close)
		}
		d := closedWithin(t, c, limit)
		t.Logf("idle keep-alive connection closed after %s (IdleTimeout %s)", d.Round(time.Millisecond), timeout)
	})
	// The server counts a close once its side of the connection is done,
	// a moment after the client sees it.
	waitFor(t, "the closes counted", func() bool {
		st := s.h.Stats()
		return st.ConnsClosedNew >= 2 && st.ConnsClosedIdle >= 1
	})
	waitFor(t, "no connection open", func() bool { return s.h.Stats().Conns == 0 })
}

// get does GET path on a new TLS connection from local (nil: any address).
func get(addr, path string, local net.Addr) (string, error) {
	d := &net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, b), nil
}

// holdConns opens n TCP connections from local and waits until the hub
// counts want open.
func holdConns(t *testing.T, s *served, n int, local net.Addr, want int64) {
	t.Helper()
	for range n {
		c, err := (&net.Dialer{LocalAddr: local}).Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	waitFor(t, fmt.Sprintf("%d connections open", want), func() bool { return s.h.Stats().Conns == want })
}

// refusedAtOnce dials and checks the hub closes the connection at once.
func refusedAtOnce(t *testing.T, s *served, local net.Addr) {
	t.Helper()
	c, err := (&net.Dialer{LocalAddr: local}).Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// HandshakeTimeout is an hour: only a limit closes it.
	d := closedWithin(t, c, 5*time.Second)
	t.Logf("connection past the limit closed after %s", d.Round(time.Millisecond))
}

// Limit MaxConns: the connection past it is closed at once; once one
// closes, the hub serves again.
func TestMaxConns(t *testing.T) {
	s := serveHub(t, Config{HandshakeTimeout: time.Hour, MaxConns: 4}, nopUpstream{})
	holdConns(t, s, 3, nil, 3)
	var last net.Conn
	last, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "4 open", func() bool { return s.h.Stats().Conns == 4 })
	refusedAtOnce(t, s, nil)
	if st := s.h.Stats(); st.ConnsRefusedTotal != 1 || st.Conns != 4 {
		t.Fatalf("refused %d (want 1), open %d (want 4)", st.ConnsRefusedTotal, st.Conns)
	}
	last.Close()
	waitFor(t, "3 open", func() bool { return s.h.Stats().Conns == 3 })
	if got, err := get(s.addr, "/v1/ca", nil); err != nil || got != "200 ca" {
		t.Fatalf("GET /v1/ca after a close: %q %v", got, err)
	}
}

// Limit MaxConnsPerIP: 127.0.0.1 at its limit is refused; 127.0.0.2 is
// still served.
func TestMaxConnsPerIP(t *testing.T) {
	s := serveHub(t, Config{HandshakeTimeout: time.Hour, MaxConnsPerIP: 3}, nopUpstream{})
	one := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
	holdConns(t, s, 3, one, 3)
	refusedAtOnce(t, s, one)
	if st := s.h.Stats(); st.ConnsRefusedPerIP != 1 || st.ConnsRefusedTotal != 0 {
		t.Fatalf("refused per IP %d (want 1), in total %d (want 0)", st.ConnsRefusedPerIP, st.ConnsRefusedTotal)
	}
	if got, err := get(s.addr, "/v1/ca", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}); err != nil || got != "200 ca" {
		t.Fatalf("GET /v1/ca from another address: %q %v", got, err)
	}
}

// Limit AcceptRate and AcceptBurst: past the burst a new connection is not
// closed but waits, unaccepted, for the bucket's next token (one in 400 ms
// here): its TLS handshake then runs, and it is served.
func TestAcceptRate(t *testing.T) {
	s := serveHub(t, Config{HandshakeTimeout: time.Hour, AcceptRate: 2.5, AcceptBurst: 3}, nopUpstream{})
	holdConns(t, s, 3, nil, 3)
	start := time.Now()
	if got, err := get(s.addr, "/v1/ca", nil); err != nil || got != "200 ca" {
		t.Fatalf("GET /v1/ca past the burst: %q %v", got, err)
	}
	took := time.Since(start)
	st := s.h.Stats()
	if st.AcceptWaitsRate != 1 || st.AcceptWaitsHandshakes != 0 {
		t.Fatalf("waited for the rate %d (want 1), for a handshake place %d (want 0)", st.AcceptWaitsRate, st.AcceptWaitsHandshakes)
	}
	if took < 300*time.Millisecond || st.AcceptWait < 300*time.Millisecond {
		t.Errorf("served %s after it connected, waited %s at accept: want about 400ms, the next token", took, st.AcceptWait)
	}
	t.Logf("served %s after it connected (waited %s at accept)", took.Round(time.Millisecond), st.AcceptWait.Round(time.Millisecond))
}

// Limit AcceptRatePerIP and AcceptBurstPerIP: 127.0.0.1 past its burst
// (the bucket refilling once in 1,000 s) is closed at once, before it takes
// a token of AcceptRate or waits for one; 127.0.0.2 is still served.
func TestAcceptRatePerIP(t *testing.T) {
	s := serveHub(t, Config{HandshakeTimeout: time.Hour, AcceptRatePerIP: 0.001, AcceptBurstPerIP: 3,
		AcceptRate: 0.001, AcceptBurst: 5}, nopUpstream{})
	one := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
	holdConns(t, s, 3, one, 3)
	for range 3 {
		refusedAtOnce(t, s, one)
	}
	if st := s.h.Stats(); st.ConnsRefusedRatePerIP != 3 || st.AcceptWaitsRate != 0 || st.Conns != 3 {
		t.Fatalf("refused by rate per IP %d (want 3), waited for the rate %d (want 0), open %d (want 3)",
			st.ConnsRefusedRatePerIP, st.AcceptWaitsRate, st.Conns)
	}
	if got, err := get(s.addr, "/v1/ca", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}); err != nil || got != "200 ca" {
		t.Fatalf("GET /v1/ca from another address: %q %v", got, err)
	}
}

// The buckets of AcceptRatePerIP are kept for at most maxRateIPs
// addresses: full ones are swept, and past the bound a new address has
// only AcceptRate.
func TestAcceptRatePerIPBounded(t *testing.T) {
	h := &Hub{cfg: Config{AcceptRatePerIP: 1, AcceptBurstPerIP: 2}}
	l := &connLimiter{h: h, perIP: map[string]int{}, rateIP: map[string]*rate.Limiter{}}
	now := time.Now()
	for i := range maxRateIPs {
		if !l.allowIP(fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255), now) {
			t.Fatal("a new address refused")
		}
	}
	if len(l.rateIP) != maxRateIPs {
		t.Fatalf("%d buckets", len(l.rateIP))
	}
	// None is full yet: the next address is not tracked, but allowed.
	if !l.allowIP("192.0.2.1", now) || len(l.rateIP) != maxRateIPs {
		t.Fatalf("past the bound: %d buckets", len(l.rateIP))
	}
	// A second later every bucket is full again: swept.
	if !l.allowIP("192.0.2.1", now.Add(time.Second)) || len(l.rateIP) != 1 {
		t.Fatalf("after a sweep: %d buckets, want 1", len(l.rateIP))
	}
	if !l.allowIP("192.0.2.1", now.Add(time.Second)) || l.allowIP("192.0.2.1", now.Add(time.Second)) {
		t.Fatal("192.0.2.1: want its burst of 2, then refused")
	}
}

// /healthz and /readyz are on the health listener, not the tunnel's.
func TestHealthListener(t *testing.T) {
	s := serveHub(t, Config{}, nopUpstream{})
	if got, err := get(s.addr, "/healthz", nil); err != nil || !strings.HasPrefix(got, "404") {
		t.Fatalf("GET /healthz on the tunnel port: %q %v, want 404", got, err)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + s.health + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok\n" {
			t.Fatalf("GET %s on the health listener: %s %q", p, resp.Status, b)
		}
	}
}

// heldUpstream keeps every Event's done until release, and records the
// most held at once.
type heldUpstream struct {
	nopUpstream
	mu sync.Mutex
	// free: done is called at once; guarded by mu.
	free    bool
	held    []func(error) // guarded by mu
	maxHeld int           // guarded by mu
	total   int           // guarded by mu
}

func (u *heldUpstream) Event(_ string, _ *protocol.Event, done func(error)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.free {
		u.total++
		go done(nil)
		return
	}
	u.held = append(u.held, done)
	u.total++
	u.maxHeld = max(u.maxHeld, len(u.held))
}

func (u *heldUpstream) counts() (held, maxHeld, total int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.held), u.maxHeld, u.total
}

// release calls done of every Event held.
func (u *heldUpstream) release() {
	u.mu.Lock()
	held := u.held
	u.held = nil
	u.mu.Unlock()
	for _, d := range held {
		d(nil)
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// Limit MaxUpstreamInFlight: a session that sends 100,000 Events while the
// Upstream does not finish them has exactly the limit in flight; the rest
// wait in the TCP buffers, not in the hub's heap. Then the Upstream
// finishes them slowly, and never holds more than the limit.
func TestUpstreamFlood(t *testing.T) {
	const n, limit = 100_000, 256
	up := &heldUpstream{}
	// The rate limit out of the way: this is about the in-flight limit. So
	// is the send queue: the upstream released, 100,000 acks leave at once,
	// and the test's edge, decoding them on a busy machine, could fall a
	// queue (1,024 frames) behind and be dropped as "not reading".
	src, url := startHubWith(t, Config{MaxUpstreamInFlight: limit, UpstreamRate: 1e9, UpstreamBurst: 1e9, SendQueue: 2 * n}, up)
	e := connect(t, url, nil)
	e.recv() // ResyncDone
	go func() {
		for range e.frames { // the acks
		}
	}()
	before := heapAlloc()
	sent := make(chan error, 1)
	go func() {
		ev := &protocol.Event{InvolvedKind: "Pod", Namespace: "ns", Name: "p", UID: "u",
			Reason: "Flood", Message: strings.Repeat("x", 200), Type: "Normal", Count: 1}
		for i := range n {
			b, err := protocol.Encode(&protocol.Frame{Seq: uint64(i + 1), Event: ev})
			if err == nil {
				err = e.ws.WriteMessage(2, b)
			}
			if err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	waitFor(t, "the limit in flight", func() bool { held, _, _ := up.counts(); return held == limit })
	// The edge is blocked in its writes: give it time to push more, which
	// must stay out of the hub.
	for range 20 {
		select {
		case err := <-sent:
			t.Fatalf("all %d events sent while the upstream held them (%v)", n, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	held, maxHeld, _ := up.counts()
	growth := int64(heapAlloc()) - int64(before)
	t.Logf("stalled upstream: %d in flight (max %d, limit %d), heap growth %d KiB", held, maxHeld, limit, growth>>10)
	if held != limit || maxHeld != limit {
		t.Fatalf("in flight %d, max %d: want the limit %d", held, maxHeld, limit)
	}
	if growth > 16<<20 {
		t.Fatalf("heap grew %d MiB with the upstream stalled", growth>>20)
	}
	if st := src.hub.Stats(); st.UpstreamPaused == 0 {
		t.Fatal("UpstreamPaused not counted")
	}
	// The upstream catches up; the session never exceeds the limit.
	up.mu.Lock()
	up.free = true
	up.mu.Unlock()
	up.release()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every event at the upstream", func() bool { _, _, total := up.counts(); return total == n })
	if _, maxHeld, total := up.counts(); maxHeld > limit || total != n {
		t.Fatalf("max in flight %d (limit %d), %d of %d events reached the upstream", maxHeld, limit, total, n)
	}
}

// Limit UpstreamRate/UpstreamBurst: Events past the burst are dropped and
// answered in Ack.Rejected; statuses past it wait and are all acknowledged.
func TestUpstreamRate(t *testing.T) {
	const burst = 10
	src, url := startHub(t, Config{UpstreamRate: 0.001, UpstreamBurst: burst})
	e := connect(t, url, nil)
	e.recv() // ResyncDone
	for i := range 2 * burst {
		e.send(&protocol.Frame{Seq: uint64(i + 1), Event: &protocol.Event{InvolvedKind: "Pod", Name: "p", Type: "Normal", Reason: "R"}})
	}
	rejected := map[uint64]bool{}
	for len(rejected) < burst {
		f := e.recv()
		if f.Ack == nil || len(f.Ack.Seqs) != 0 {
			t.Fatalf("want Acks rejecting events, got %+v", f)
		}
		for _, r := range f.Ack.Rejected {
			if r.Reason != eventDropped {
				t.Fatalf("rejected %d: %q", r.Seq, r.Reason)
			}
			rejected[r.Seq] = true
		}
	}
	for i := burst + 1; i <= 2*burst; i++ {
		if !rejected[uint64(i)] {
			t.Fatalf("event %d past the burst not rejected (rejected: %v)", i, rejected)
		}
	}
	if st := src.hub.Stats(); st.EventsDropped != burst {
		t.Fatalf("EventsDropped %d, want %d", st.EventsDropped, burst)
	}
	t.Logf("%d events past a burst of %d dropped", burst, burst)
}

// A status past the rate waits rather than being dropped.
func TestUpstreamRateDelaysStatus(t *testing.T) {
	src, url := startHub(t, Config{UpstreamRate: 20, UpstreamBurst: 1})
	e := connect(t, url, nil)
	e.recv() // ResyncDone
	const n = 5
	for i := range n {
		e.send(&protocol.Frame{Seq: uint64(i + 1), PodStatus: &protocol.PodStatus{UID: "u", Namespace: "ns", Name: "p", Status: []byte{1}}})
	}
	acked := 0
	for acked < n {
		f := e.recv()
		if f.Ack == nil || len(f.Ack.Rejected) != 0 {
			t.Fatalf("want Acks, got %+v", f)
		}
		acked += len(f.Ack.Seqs)
	}
	if st := src.hub.Stats(); st.UpstreamThrottled == 0 {
		t.Fatal("UpstreamThrottled not counted")
	}
}

// Limit MaxInventory: the audit's 2 MiB Hello of 233,000 refs is refused
// with a clear error, at the inventory's header (protocol.DecodeHello;
// TestDecodeHelloInventoryLimit has its cost).
func TestHugeInventoryRefused(t *testing.T) {
	src, url := startHub(t, Config{})
	inv := make([]protocol.ObjectRef, 233_000)
	for i := range inv {
		inv[i] = protocol.ObjectRef{Kind: protocol.KindPod, UID: base62(i)}
	}
	b, err := protocol.Encode(&protocol.Frame{Hello: &protocol.Hello{ProtocolVersion: protocol.Version, MinVersion: 1, NodeName: "n1", Inventory: inv}})
	if err != nil || len(b) > protocol.MaxFrameSize {
		t.Fatalf("hello of %d bytes: %v", len(b), err)
	}
	_, err = dialAs(t, url, issueCert(t, "n1", "id-n1"), "n1", inv)
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.ErrorTooLarge || !strings.Contains(pe.Message, "at most 20000") {
		t.Fatalf("hello of %d refs (%d bytes): got %v, want TooLarge at most 20000", len(inv), len(b), err)
	}
	if st := src.hub.Stats(); st.InventoryRefused != 1 {
		t.Fatalf("InventoryRefused %d", st.InventoryRefused)
	}
	t.Logf("Hello of %d bytes, %d refs: %v", len(b), len(inv), err)
}

// A resync that deletes a whole inventory walks it about once, though it
// reconciles at every batch of acks (it walked it at every batch, about
// n/Window times: n²/2/Window objects).
func TestResyncDeletesComputedOnce(t *testing.T) {
	const n = 20_000
	src, url := startHub(t, Config{})
	inv := make([]protocol.ObjectRef, n)
	for i := range inv {
		inv[i] = protocol.ObjectRef{Kind: protocol.KindPod, UID: fmt.Sprintf("%07d", i), ResourceVersion: "1"}
	}
	e := connect(t, url, inv)
	var seqs []uint64
	deletes := 0
	for {
		f := e.recv()
		if f.ResyncDone != nil {
			if f.ResyncDone.Deletes != n || deletes != n {
				t.Fatalf("ResyncDone %+v after %d deletes, want %d", f.ResyncDone, deletes, n)
			}
			break
		}
		if f.Delete == nil {
			t.Fatalf("want a Delete, got %+v", f)
		}
		deletes++
		if seqs = append(seqs, f.Seq); len(seqs) == 8 {
			e.ack(seqs...)
			seqs = seqs[:0]
		}
		if len(e.frames) == 0 && len(seqs) > 0 {
			e.ack(seqs...)
			seqs = seqs[:0]
		}
	}
	st := src.hub.Stats()
	t.Logf("%d deletes: %d scans visited %d objects", n, st.DeleteScans, st.DeleteScanned)
	if st.DeleteScanned > 2*n {
		t.Fatalf("%d scans visited %d objects; want at most %d", st.DeleteScans, st.DeleteScanned, 2*n)
	}
}

// base62 writes i in 4 digits.
func base62(i int) string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, 4)
	for j := 3; j >= 0; j-- {
		b[j] = digits[i%62]
		i /= 62
	}
	return string(b)
}

func TestConfigLimits(t *testing.T) {
	c := Config{}
	if err := c.validateLimits(20000); err != nil || c.MaxConns != 12000 || c.MaxConnsPerIP != 32 ||
		c.IdleTimeout != 30*time.Second || c.MaxInventory != 20000 || c.MaxUpstreamInFlight != 256 {
		t.Fatalf("defaults: %v %+v", err, c)
	}
	c = Config{}
	if err := c.validateLimits(4096); err != nil || c.MaxConns != 4096-fdReserve {
		t.Fatalf("default under a low file limit: %v, max conns %d", err, c.MaxConns)
	}
	for _, c := range []Config{
		{MaxConns: 20000},
		{MaxConnsPerIP: -1},
		{AcceptRate: -1},
		{AcceptRatePerIP: -1},
		{AcceptBurstPerIP: -1},
		{IdleTimeout: -time.Second},
		{MaxInventory: -1},
		{UpstreamBurst: -1},
	} {
		if err := c.validateLimits(20000); err == nil {
			t.Errorf("%+v: validated", c)
		}
	}
	if err := (&Config{}).validateLimits(fdReserve); err == nil {
		t.Error("no room under the file limit: validated")
	}
}

// A websocket session outlives ReadTimeout and IdleTimeout: they are for
// the other endpoints.
func TestSessionOutlivesReadTimeout(t *testing.T) {
	s := serveHub(t, Config{ReadTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond,
		HandshakeTimeout: 300 * time.Millisecond}, nopUpstream{})
	e := connect(t, "wss://"+s.addr+Path, nil)
	e.recv() // ResyncDone
	if !e.quiet(time.Second) {
		t.Fatal("the hub sent something")
	}
	e.send(&protocol.Frame{Seq: 3, PodStatus: &protocol.PodStatus{UID: "u", Namespace: "ns", Name: "p", Status: []byte{1}}})
	if f := e.recv(); f.Ack == nil || len(f.Ack.Seqs) != 1 || f.Ack.Seqs[0] != 3 {
		t.Fatalf("want Ack 3 after a second, got %+v", f)
	}
}
