// Package pkitest runs TLS handshakes for tests of Tether's certificates and
// session tickets.
package pkitest

import (
	"crypto/tls"
	"net"
	"testing"
)

// Handshake runs one TLS connection between client and server over
// loopback TCP (net.Pipe, being unbuffered, deadlocks a TLS 1.3 handshake
// whose ends write at once) and returns both ends' states. After the
// handshake the server sends a byte, which the client reads: the session
// tickets a TLS 1.3 server sends after its handshake reach the client's
// session cache.
func Handshake(t testing.TB, client, server *tls.Config) (c, s tls.ConnectionState) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		state tls.ConnectionState
		err   error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		sc := tls.Server(conn, server)
		err = sc.HandshakeContext(t.Context())
		if err == nil {
			_, err = sc.Write([]byte{1})
		}
		done <- result{sc.ConnectionState(), err}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cc := tls.Client(conn, client)
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
