package link

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/pki/pkitest"
	"github.com/tether-edge/tether/protocol"
)

// ticketHub is a TLS server that answers every request 503 (the Dialer's
// handshake ends there) and reports whether each handshake resumed. In
// mode shed it closes connections before their handshake, as a hub past
// its accept rate does; in mode refuse it aborts any handshake offering a
// ticket (a server that cannot take it and does not fall back).
type ticketHub struct {
	ln       net.Listener
	cfg      *tls.Config
	refusing *tls.Config
	mode     atomic.Int32
	resumed  chan bool
}

const (
	modeServe int32 = iota
	modeShed
	modeRefuse
)

func newTicketHub(t *testing.T) (*ticketHub, *x509.CertPool) {
	t.Helper()
	ca, err := pki.NewCA("link-test")
	if err != nil {
		t.Fatal(err)
	}
	pair := pkitest.ServingCert(t, ca)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	h := &ticketHub{ln: ln, cfg: &tls.Config{Certificates: []tls.Certificate{pair}}, resumed: make(chan bool, 10)}
	h.refusing = h.cfg.Clone()
	h.refusing.UnwrapSession = func([]byte, tls.ConnectionState) (*tls.SessionState, error) {
		return nil, errors.New("this ticket is refused")
	}
	go h.serve()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return h, roots
}

func (h *ticketHub) serve() {
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			switch h.mode.Load() {
			case modeShed:
				return
			case modeRefuse:
				tls.Server(c, h.refusing).Handshake()
				return
			}
			tc := tls.Server(c, h.cfg)
			if tc.Handshake() != nil {
				return
			}
			h.resumed <- tc.ConnectionState().DidResume
			if _, err := http.ReadRequest(bufio.NewReader(tc)); err != nil {
				return
			}
			tc.Write([]byte("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
		}()
	}
}

// The link's ticket outlives connections closed before their handshake (a
// hub shedding a reconnecting fleet), which Go's own cache would drop; a
// ticket whose handshakes keep failing is dropped at the
// MaxTicketFailures-th failure in a row, and a full handshake follows.
func TestSessionCacheKeepsTicketThroughShedding(t *testing.T) {
	h, roots := newTicketHub(t)
	cache := NewSessionCache(1)
	d := &Dialer{URL: "wss://" + h.ln.Addr().String() + "/v1/connect", Timeout: 5 * time.Second,
		TLS: &tls.Config{RootCAs: roots, ClientSessionCache: cache}}
	hello := &protocol.Hello{ProtocolVersion: protocol.Version, NodeName: "n1"}
	dial := func(what string, mode int32, resumed bool) {
		t.Helper()
		h.mode.Store(mode)
		_, err := d.Dial(t.Context(), hello)
		var re *RetryAfterError
		switch {
		case mode != modeServe && (err == nil || errors.As(err, &re)):
			t.Fatalf("%s: want a failed handshake, got %v", what, err)
		case mode != modeServe:
			return
		case !errors.As(err, &re):
			t.Fatalf("%s: want the hub's 503, got %v", what, err)
		}
		if got := <-h.resumed; got != resumed {
			t.Fatalf("%s: resumed %v, want %v", what, got, resumed)
		}
	}
	dial("first", modeServe, false)
	dial("second", modeServe, true)
	for range MaxTicketFailures - 1 {
		dial("shed", modeShed, false)
	}
	dial("after shedding", modeServe, true)
	for i := range MaxTicketFailures {
		if n := len(cache.m); n != 1 {
			t.Fatalf("%d tickets after %d refusals, want 1", n, i)
		}
		dial("ticket refused", modeRefuse, false)
	}
	if n := len(cache.m); n != 0 {
		t.Fatalf("%d tickets kept after %d refusals in a row", n, MaxTicketFailures)
	}
	dial("after the refusals", modeServe, false)
	dial("again", modeServe, true)
}

// SessionCache counts drops, replaces a key's ticket (which resets the
// count), and holds at most its size.
func TestSessionCacheBounds(t *testing.T) {
	c := NewSessionCache(2)
	a, b := &tls.ClientSessionState{}, &tls.ClientSessionState{}
	c.Put("a", a)
	c.Put("a", nil)
	if got, ok := c.Get("a"); !ok || got != a {
		t.Fatal("a drop removed the ticket")
	}
	c.Put("a", b)
	if got, _ := c.Get("a"); got != b {
		t.Fatal("a newer ticket did not replace the older")
	}
	for range MaxTicketFailures - 1 {
		c.Put("a", nil)
	}
	if _, ok := c.Get("a"); !ok {
		t.Fatalf("dropped after %d failures (the count did not start anew)", MaxTicketFailures)
	}
	c.Put("b", a)
	c.Put("c", a)
	if len(c.m) != 2 {
		t.Fatalf("%d tickets held, want at most 2", len(c.m))
	}
}
