package link

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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
		if d < ceil/2 || d > ceil {
			t.Errorf("attempt %d: %s outside [%s, %s]", i, d, ceil/2, ceil)
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
