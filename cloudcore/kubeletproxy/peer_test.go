package kubeletproxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/pki"
)

// startPeer runs Peers on loopback for ca, holding the sessions of the
// nodes in held (each stream echoes what it reads, prefixed by the node's
// name), and returns it and its address.
func startPeer(t *testing.T, ca *pki.CA, held ...string) (*Peers, string) {
	t.Helper()
	local := func(node string) (net.Conn, error) {
		for _, h := range held {
			if h == node {
				a, b := net.Pipe()
				go func() {
					defer b.Close()
					fmt.Fprintf(b, "%s:", node)
					io.Copy(b, b)
				}()
				return a, nil
			}
		}
		return nil, fmt.Errorf("%w: %s", ErrNoSession, node)
	}
	return servePeer(t, PeerConfig{CA: ca, Local: local})
}

// servePeer runs Peers with cfg (no peers to discover, logs discarded) on
// loopback until the test ends, and returns it and its address.
func servePeer(t *testing.T, cfg PeerConfig) (*Peers, string) {
	t.Helper()
	cfg.Discover = func(context.Context) ([]string, error) { return nil, nil }
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := NewPeers(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return p, ln.Addr().String()
}

func newAsker(t *testing.T, ca *pki.CA, addrs ...string) *Peers {
	t.Helper()
	p, err := NewPeers(PeerConfig{CA: ca, Local: func(string) (net.Conn, error) { return nil, ErrNoSession },
		Discover: func(context.Context) ([]string, error) { return addrs, nil },
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Of two peers, the one holding the node's session relays its stream; a
// node nobody holds is an error naming the replicas asked; a dead peer
// among them does not hide the live one.
func TestPeersOpenStream(t *testing.T) {
	ca, err := pki.NewCA("shared")
	if err != nil {
		t.Fatal(err)
	}
	_, b := startPeer(t, ca)
	pc, c := startPeer(t, ca, "edge-1")
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	asker := newAsker(t, ca, b, c, deadAddr)
	conn, err := asker.OpenStream(t.Context(), "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(conn, "ping")
	buf := make([]byte, len("edge-1:ping"))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "edge-1:ping" {
		t.Fatalf("stream through the peer: %q %v", buf, err)
	}
	conn.Close()
	if asker.Forwarded.Load() != 1 || pc.Served.Load() != 1 {
		t.Errorf("forwarded %d, served %d", asker.Forwarded.Load(), pc.Served.Load())
	}
	if _, err := newAsker(t, ca, b, c).OpenStream(t.Context(), "edge-9"); err == nil {
		t.Fatal("a node no peer holds: no error")
	}
	if _, err := newAsker(t, ca).OpenStream(t.Context(), "edge-1"); err == nil {
		t.Fatal("no peers: no error")
	}
}

// A replica with a peer certificate of another CA is refused (its request
// never reaches Local), and it refuses the peer's server certificate too.
func TestPeersOfAnotherCA(t *testing.T) {
	ca, err := pki.NewCA("shared")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	pc, addr := startPeer(t, ca, "edge-1")
	if _, err := newAsker(t, other, addr).OpenStream(t.Context(), "edge-1"); err == nil {
		t.Fatal("a replica of another CA got a stream")
	}
	if pc.Served.Load() != 0 {
		t.Fatal("served a stream to another CA's replica")
	}
	// A client with a certificate of the shared CA that is not a peer's
	// (an edge node's) fails the handshake.
	pair := nodeCert(t, ca)
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{pair}})
	if err == nil {
		// TLS 1.3: the client learns of the refusal when it reads.
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: p\r\n%s: edge-1\r\nContent-Length: 0\r\n\r\n", PeerPath, peerNodeHeader)
		var b []byte
		b, err = io.ReadAll(c)
		c.Close()
		if err == nil {
			err = fmt.Errorf("answered %q", b)
		}
		if len(b) > 0 {
			t.Fatalf("an edge node's certificate at the peer listener: answered %q", b)
		}
	}
	if err == nil || pc.Served.Load() != 0 {
		t.Fatalf("an edge node's certificate at the peer listener: %v, served %d", err, pc.Served.Load())
	}
	t.Logf("an edge node's certificate at the peer listener: %v", err)
}

// A true peer's request with an oversized header, or on another path, gets
// no stream.
func TestPeersMalformedRequests(t *testing.T) {
	ca, err := pki.NewCA("shared")
	if err != nil {
		t.Fatal(err)
	}
	pc, addr := startPeer(t, ca, "edge-1")
	asker := newAsker(t, ca)
	cert, err := asker.certificate()
	if err != nil {
		t.Fatal(err)
	}
	do := func(req string) string {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{*cert}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, req)
		b := make([]byte, 12)
		io.ReadFull(c, b)
		return string(b)
	}
	big := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: p\r\n%s: edge-1\r\nX-Pad: %s\r\n\r\n", PeerPath, peerNodeHeader, strings.Repeat("a", 8<<10))
	if got := do(big); got != "HTTP/1.1 431" {
		t.Errorf("8 KiB header: %q, want 431", got)
	}
	if got := do(fmt.Sprintf("GET /other HTTP/1.1\r\nHost: p\r\n%s: edge-1\r\n\r\n", peerNodeHeader)); got != "HTTP/1.1 404" {
		t.Errorf("another path: %q, want 404", got)
	}
	if pc.Served.Load() != 0 {
		t.Errorf("served %d streams", pc.Served.Load())
	}
}

// startLoadPeer runs Peers on loopback for ca that says it holds sessions.
func startLoadPeer(t *testing.T, ca *pki.CA, sessions int, ready bool) string {
	t.Helper()
	_, addr := servePeer(t, PeerConfig{CA: ca, Local: func(string) (net.Conn, error) { return nil, ErrNoSession },
		Load: func() (int, bool) { return sessions, ready }})
	return addr
}

// Loads asks every peer its load: live peers answer, a dead one, one of
// another CA and one that does not serve loads are left out; an edge
// node's certificate gets no answer at LoadPath.
func TestPeersLoads(t *testing.T) {
	ca, err := pki.NewCA("shared")
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	a, b := startLoadPeer(t, ca, 500, true), startLoadPeer(t, ca, 0, false)
	foreign := startLoadPeer(t, other, 7, true)
	_, noLoad := startPeer(t, ca)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	// Peers of the shared CA whose answers are out of range, malformed or
	// larger than maxLoadAnswer are left out too.
	negative, huge := startLoadPeer(t, ca, -5, true), startLoadPeer(t, ca, 1<<25, true)
	garbage := hostilePeer(t, ca, "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{sessions")
	padded := hostilePeer(t, ca, "HTTP/1.1 200 OK\r\n\r\n{\"sessions\": 1, \"ready\": true, \"pad\": \""+
		strings.Repeat("x", 2*maxLoadAnswer)+"\"}")
	got, err := newAsker(t, ca, a, b, foreign, noLoad, deadAddr, negative, huge, garbage, padded).Loads(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]PeerLoad{a: {Sessions: 500, Ready: true}, b: {Sessions: 0, Ready: false}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("loads %v, want %v", got, want)
	}

	pair := nodeCert(t, ca)
	c, err := tls.Dial("tcp", a, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{pair}})
	if err == nil {
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: p\r\n\r\n", LoadPath)
		b, _ := io.ReadAll(c)
		c.Close()
		if strings.Contains(string(b), "sessions") {
			t.Fatalf("an edge node's certificate at LoadPath: answered %q", b)
		}
	}
}

// nodeCert is a client certificate of ca for an edge node, edge-1: the
// shared CA's, but not a peer's.
func nodeCert(t *testing.T, ca *pki.CA) tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueClient(pki.NodeCNPrefix+"edge-1", []string{pki.NodeOrganization}, 3600e9)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// hostilePeer listens on loopback with a peer certificate of ca and
// answers every connection with answer, whatever it is asked.
func hostilePeer(t *testing.T, ca *pki.CA, answer string) string {
	t.Helper()
	certPEM, keyPEM, err := ca.IssuePeer(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair},
		ClientAuth: tls.RequireAnyClientCert, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.Read(make([]byte, 4096))
				io.WriteString(c, answer)
			}()
		}
	}()
	return ln.Addr().String()
}
