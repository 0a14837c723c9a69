// Package pkitest runs TLS handshakes for tests of Tether's certificates and
// session tickets.
package pkitest

import (
	"crypto/tls"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/tether-edge/tether/pki"
)

// Handshake runs one TLS connection between client and server over a Unix
// socket pair (buffered, unlike net.Pipe, which deadlocks a TLS 1.3
// handshake whose ends write at once; and no loopback port left in
// TIME_WAIT) and returns both ends' states. After the handshake the server
// sends a byte, which the client reads: the session tickets a TLS 1.3
// server sends after its handshake reach the client's session cache.
func Handshake(t testing.TB, client, server *tls.Config) (c, s tls.ConnectionState) {
	t.Helper()
	a, b := socketPair(t)
	defer a.Close()
	defer b.Close()
	type result struct {
		state tls.ConnectionState
		err   error
	}
	done := make(chan result, 1)
	go func() {
		sc := tls.Server(b, server)
		err := sc.HandshakeContext(t.Context())
		if err == nil {
			_, err = sc.Write([]byte{1})
		}
		done <- result{sc.ConnectionState(), err}
	}()
	cc := tls.Client(a, client)
	if err := cc.HandshakeContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	return cc.ConnectionState(), r.state
}

// socketPair returns the two ends of a Unix stream socket pair.
func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f) // a dup: f is closed either way
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

// ServingCert issues, from ca, a serving certificate for localhost and
// 127.0.0.1 valid for an hour, with its key.
func ServingCert(t testing.TB, ca *pki.CA) tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.IssueServer("hub", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}
