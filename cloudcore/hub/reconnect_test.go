package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-edge/tether/protocol"
)

// upgradeStatus dials url as node (no certificate if node is "") and
// returns the HTTP status and Retry-After of a refused upgrade (101 if it
// was accepted; the connection is closed).
func upgradeStatus(t *testing.T, url, node string) (int, string) {
	t.Helper()
	tc := &tls.Config{InsecureSkipVerify: true}
	if node != "" {
		tc.Certificates = []tls.Certificate{*issueCert(t, node, "id-"+node)}
	}
	ws, resp, err := (&websocket.Dialer{TLSClientConfig: tc}).Dial(url, nil)
	if err == nil {
		ws.Close()
		return http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial as %q: %v", node, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// Past SessionRate an authenticated edge is answered 503 before the
// upgrade, with a Retry-After that grows by a slot per edge turned away
// (the queue it hands out); unauthenticated connections (the attacker's
// flood) are refused 401 and use up no session.
func TestSessionRateShedsWithRetryAfter(t *testing.T) {
	// One session at once, then one every 40 s: the slots are 40 s apart.
	s := serveHub(t, Config{SessionRate: 0.025, SessionBurst: 1}, nopUpstream{})
	url := "wss://" + s.addr + Path
	for range 5 {
		if code, _ := upgradeStatus(t, url, ""); code != http.StatusUnauthorized {
			t.Fatalf("no certificate: %d, want 401", code)
		}
	}
	if code, _ := upgradeStatus(t, url, "n1"); code != http.StatusSwitchingProtocols {
		t.Fatalf("first edge: %d, want the upgrade (the unauthenticated ones took no session)", code)
	}
	var afters []int
	for _, node := range []string{"n2", "n3", "n4"} {
		code, ra := upgradeStatus(t, url, node)
		n, err := strconv.Atoi(ra)
		if code != http.StatusServiceUnavailable || err != nil {
			t.Fatalf("%s: %d Retry-After %q, want 503 with seconds", node, code, ra)
		}
		afters = append(afters, n)
	}
	// Slots at 40, 80 and 120 s (less the few ms the dials took).
	for i, n := range afters {
		if want := 40 * (i + 1); n < want-1 || n > want {
			t.Errorf("Retry-After of the edge shed #%d: %ds, want its slot, about %ds", i+1, n, want)
		}
	}
	if st := s.h.Stats(); st.Shed != 3 || st.Sessions > 1 {
		t.Errorf("stats: shed %d sessions %d, want 3 and at most 1", st.Shed, st.Sessions)
	}
}

// The admission queue hands out whole seconds, no more edges per second
// than SessionRate, and starts over once its slots are past.
func TestAdmissionSlots(t *testing.T) {
	a := newAdmission(10, 2)
	now := time.Unix(1000, 0)
	for i := range 2 {
		if ok, _ := a.take(now); !ok {
			t.Fatalf("take %d within the burst refused", i)
		}
	}
	perSecond := map[time.Duration]int{}
	var last time.Duration
	for i := range 45 {
		ok, after := a.take(now)
		if ok || after < time.Second || after%time.Second != 0 || after < last {
			t.Fatalf("shed #%d: ok %v after %s (last %s)", i, ok, after, last)
		}
		last = after
		perSecond[after]++
	}
	for d, n := range perSecond {
		if n > 10 {
			t.Errorf("%d edges told to come back after %s; want at most SessionRate (10)", n, d)
		}
	}
	if last != 5*time.Second {
		t.Errorf("the 45th shed edge: after %s, want 5s (its slot is at 4.5s)", last)
	}
	// A minute on, the bucket is full and the queue empty.
	if ok, _ := a.take(now.Add(time.Minute)); !ok {
		t.Error("a minute later: refused")
	}
	a2 := newAdmission(0.001, 1)
	a2.take(now)
	for range 10 {
		if _, after := a2.take(now); after > maxRetryAfter {
			t.Fatalf("after %s past maxRetryAfter", after)
		}
	}
}

// The Welcome of an edge of protocol 5 carries the bound its back-off may
// grow to: sessions / SessionRate, at least MinReconnectMax; an older edge
// gets none.
func TestWelcomeReconnectMax(t *testing.T) {
	_, url := startHub(t, Config{SessionRate: 0.5})
	e1, err := dialAs(t, url, issueCert(t, "n1", "id-n1"), "n1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := e1.welcome.ReconnectMax.D(); got != 2*time.Second {
		t.Errorf("first edge: ReconnectMax %s, want (0+1)/0.5 = 2s", got)
	}
	e2, err := dialAs(t, url, issueCert(t, "n2", "id-n2"), "n2", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := e2.welcome.ReconnectMax.D(); got != 4*time.Second {
		t.Errorf("second edge: ReconnectMax %s, want (1+1)/0.5 = 4s", got)
	}
	old, err := dialVersion(t, url, issueCert(t, "n3", "id-n3"), "n3", nil, protocol.ReconnectMaxSince-1)
	if err != nil {
		t.Fatal(err)
	}
	if old.welcome.ReconnectMax != 0 || old.welcome.ProtocolVersion != protocol.ReconnectMaxSince-1 {
		t.Errorf("version 4 edge's Welcome %+v, want no ReconnectMax", old.welcome)
	}
	_, url = startHub(t, Config{})
	e, err := dialAs(t, url, issueCert(t, "n1", "id-n1"), "n1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.welcome.ReconnectMax.D(); got != MinReconnectMax {
		t.Errorf("default rate, one node: %s, want %s", got, MinReconnectMax)
	}
}

// Drain stops listening and fails /readyz, then closes the sessions one
// by one over DrainTime with ShuttingDown, and Serve returns.
func TestDrainSpreadsSessions(t *testing.T) {
	const n = 4
	s := serveHub(t, Config{DrainTime: time.Second}, nopUpstream{})
	url := "wss://" + s.addr + Path
	type got struct {
		at   time.Time
		code protocol.ErrorCode
	}
	gotc := make(chan got, n)
	for i := range n {
		node := "n" + strconv.Itoa(i+1)
		e, err := dialAs(t, url, issueCert(t, node, "id-"+node), node, nil)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for f := range e.frames {
				if f.Error != nil {
					gotc <- got{time.Now(), f.Error.Code}
					return
				}
			}
			gotc <- got{time.Now(), 0}
		}()
	}
	waitFor(t, "4 sessions", func() bool { return s.h.Stats().Sessions == n })
	start := time.Now()
	drained := make(chan error, 1)
	go func() { drained <- s.h.Drain(context.Background()) }()
	first := <-gotc
	if first.code != protocol.ErrorShuttingDown {
		t.Fatalf("first edge sent away with %v, want ShuttingDown", first.code)
	}
	if resp, err := http.Get("http://" + s.health + "/readyz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("/readyz while draining: %s, want 503", resp.Status)
		}
	}
	waitFor(t, "the listener closed", func() bool {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	last := first
	for range n - 1 {
		g := <-gotc
		if g.code != protocol.ErrorShuttingDown {
			t.Fatalf("edge sent away with %v, want ShuttingDown", g.code)
		}
		last = g
	}
	// Slots at 0, 250, 500 and 750 ms: the last cannot come before 750 ms.
	if spread := last.at.Sub(start); spread < 700*time.Millisecond {
		t.Errorf("the last edge was sent away %s after Drain, want its slot at 750ms", spread)
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Drain did not return")
	}
	if err := s.h.Drain(context.Background()); err != nil || errors.Is(err, context.Canceled) {
		t.Errorf("second Drain: %v", err)
	}
}

// Limit MaxHandshakes: connections that have not finished their TLS
// handshake and request hold a place (the attacker's silent connections
// too, until HandshakeTimeout); one past the limit is not closed but waits,
// unaccepted, until a place is given back: by a connection that got
// through (a request served on it), one closed, or one that stayed silent
// past HandshakeTimeout. Closing the hub ends the wait.
func TestMaxHandshakes(t *testing.T) {
	s := serveHub(t, Config{HandshakeTimeout: time.Hour, MaxHandshakes: 2}, nopUpstream{})
	// A served request: no place held after it.
	if got, err := get(s.addr, "/v1/ca", nil); err != nil || got != "200 ca" {
		t.Fatalf("GET /v1/ca: %q %v", got, err)
	}
	waitFor(t, "the request's connection closed", func() bool { return s.h.Stats().Conns == 0 })
	silent, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the silent connection admitted", func() bool { return s.h.Stats().Conns == 1 })
	holdConns(t, s, 1, nil, 2)
	type result struct {
		got string
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		got, err := get(s.addr, "/v1/ca", nil)
		done <- result{got, err, time.Now()}
	}()
	waitFor(t, "a connection waiting for a place", func() bool { return s.h.Stats().AcceptWaitsHandshakes == 1 })
	select {
	case r := <-done:
		t.Fatalf("served or refused while both places were held: %q %v", r.got, r.err)
	case <-time.After(300 * time.Millisecond):
	}
	closed := time.Now()
	silent.Close()
	r := <-done
	if r.err != nil || r.got != "200 ca" {
		t.Fatalf("GET /v1/ca once a place was back: %q %v", r.got, r.err)
	}
	if r.at.Before(closed) {
		t.Errorf("served before the silent connection closed")
	}
	if st := s.h.Stats(); st.AcceptWaitsRate != 0 || st.AcceptWait < 300*time.Millisecond {
		t.Errorf("waited for the rate %d (want 0); waited %s in all, want >= 300ms", st.AcceptWaitsRate, st.AcceptWait)
	}
}

// An attacker's silent connections fill MaxHandshakes: an edge arriving
// then waits, unaccepted, and is served once HandshakeTimeout closed them,
// not refused; the hub stops at once with a connection still waiting.
func TestMaxHandshakesSilentAttacker(t *testing.T) {
	s := serveHub(t, Config{HandshakeTimeout: time.Second, MaxHandshakes: 2}, nopUpstream{})
	for range 2 {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	waitFor(t, "the silent connections admitted", func() bool { return s.h.Stats().Conns == 2 })
	start := time.Now()
	if got, err := get(s.addr, "/v1/ca", nil); err != nil || got != "200 ca" {
		t.Fatalf("GET /v1/ca behind silent connections: %q %v", got, err)
	}
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Errorf("served after %s, before the silent connections' HandshakeTimeout (1s)", took)
	}
	if st := s.h.Stats(); st.AcceptWaitsHandshakes != 1 {
		t.Errorf("waited for a place %d times, want 1", st.AcceptWaitsHandshakes)
	}
	// The edge was served once the first silent connection closed; the
	// second closes at about the same time.
	waitFor(t, "both silent connections closed before a request", func() bool { return s.h.Stats().ConnsClosedNew == 2 })

	// Both places held again, one more connection waiting: the hub stops.
	for range 3 {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	waitFor(t, "a connection waiting", func() bool { return s.h.Stats().AcceptWaitsHandshakes == 2 })
	stopped := make(chan struct{})
	go func() { s.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the hub did not stop with a connection waiting for a place")
	}
}
