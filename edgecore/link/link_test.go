package link

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-edge/tether/protocol"
)

func TestBackoffGrowsJitteredAndCapped(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 8 * time.Second}
	for i, ceil := range []time.Duration{1, 2, 4, 8, 8, 8} {
		ceil *= time.Second
		d := b.Next()
		if d < 0 || d > ceil {
			t.Errorf("attempt %d: %s outside [0, %s]", i, d, ceil)
		}
	}
	// The hub's bound raises the cap, never lowers it.
	b.SetHubMax(20 * time.Second)
	if c := b.Cap(); c != 20*time.Second {
		t.Errorf("cap with the hub's 20s: %s", c)
	}
	b.SetHubMax(time.Second)
	if c := b.Cap(); c != 8*time.Second {
		t.Errorf("cap with the hub's 1s: %s, want Max 8s", c)
	}
	// Full jitter: the delays at the cap spread over [0, cap], about
	// evenly (a quarter in each quarter, give or take).
	var quarters [4]int
	for range 4000 {
		quarters[min(int(b.Next()*4/(8*time.Second)), 3)]++
	}
	for i, n := range quarters {
		if n < 800 || n > 1200 {
			t.Errorf("quarter %d of the cap: %d of 4000 delays", i, n)
		}
	}
	b.Reset()
	if d := b.Next(); d > time.Second {
		t.Errorf("after Reset: %s", d)
	}
	// Jitter: many nodes do not all pick the same delay.
	seen := map[time.Duration]bool{}
	for i := 0; i < 50; i++ {
		n := Backoff{Initial: time.Second, Max: time.Minute}
		seen[n.Next()] = true
	}
	if len(seen) < 40 {
		t.Errorf("only %d distinct first delays of 50", len(seen))
	}
}

// A Dialer with NetDial opens its TCP connection through it, and runs TLS
// and the handshake on top.
func TestDialThroughNetDial(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		if _, _, err := conn.ReadMessage(); err != nil {
			return
		}
		b, _ := protocol.Encode(&protocol.Frame{Welcome: &protocol.Welcome{ProtocolVersion: protocol.Version,
			HeartbeatInterval: protocol.DurationOf(time.Second), SessionTimeout: protocol.DurationOf(3 * time.Second),
			MaxFrameSize: protocol.MaxFrameSize}})
		conn.WriteMessage(websocket.BinaryMessage, b)
		conn.ReadMessage() // until the client leaves
	}))
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	var dialed []string
	d := &Dialer{URL: "wss" + strings.TrimPrefix(srv.URL, "https") + "/v1/connect",
		TLS: &tls.Config{RootCAs: pool}, Timeout: 5 * time.Second,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialed = append(dialed, network+" "+addr)
			var nd net.Dialer
			return nd.DialContext(ctx, network, addr)
		}}
	conn, err := d.Dial(t.Context(), &protocol.Hello{ProtocolVersion: protocol.Version, MinVersion: protocol.MinVersion, NodeName: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if want := "tcp " + strings.TrimPrefix(srv.URL, "https://"); len(dialed) != 1 || dialed[0] != want {
		t.Errorf("NetDial called with %q, want [%q]", dialed, want)
	}
	if conn.Welcome.HeartbeatInterval.D() != time.Second {
		t.Errorf("welcome %+v", conn.Welcome)
	}
}

// A 503 before the upgrade comes back as a *RetryAfterError with the
// header's seconds; Jittered spreads it over its last second.
func TestDialRetryAfter(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", r.URL.Query().Get("ra"))
		http.Error(w, "too many sessions starting", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	for ra, want := range map[string]time.Duration{"3": 3 * time.Second, "": 0, "x": 0, "-2": 0,
		"100000": MaxRetryAfter} {
		d := &Dialer{URL: "wss" + strings.TrimPrefix(srv.URL, "https") + "/v1/connect?ra=" + ra,
			TLS: &tls.Config{RootCAs: pool}, Timeout: 5 * time.Second}
		_, err := d.Dial(t.Context(), &protocol.Hello{ProtocolVersion: protocol.Version, NodeName: "n1"})
		var re *RetryAfterError
		if !errors.As(err, &re) || re.After != want || !strings.Contains(err.Error(), "too many sessions") {
			t.Errorf("Retry-After %q: %v, want a RetryAfterError of %s", ra, err, want)
		}
	}
	for range 100 {
		if d := Jittered(3 * time.Second); d < 2*time.Second || d >= 3*time.Second {
			t.Fatalf("Jittered(3s) = %s", d)
		}
		if d := Jittered(time.Second); d < 0 || d >= time.Second {
			t.Fatalf("Jittered(1s) = %s", d)
		}
	}
}
