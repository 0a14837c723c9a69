package certs

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"strconv"
	"testing"
	"time"

	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/pki/pkitest"
)

// ticketPeer is one end of the ticket tests: a CA, a serving certificate
// and a node's client certificate.
type ticketPeer struct {
	ca     *pki.CA
	server tls.Certificate
	client tls.Certificate
}

func newTicketPeer(t testing.TB) ticketPeer {
	t.Helper()
	ca, err := pki.NewCA("tickets-test")
	if err != nil {
		t.Fatal(err)
	}
	server := pkitest.ServingCert(t, ca)
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	nodePEM, err := ca.IssueNode(&key.PublicKey, "n1", "id-n1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	client, err := pki.TLSPair(nodePEM, key)
	if err != nil {
		t.Fatal(err)
	}
	return ticketPeer{ca: ca, server: server, client: *client}
}

// sessionWrapper is what a hub's tls.Config takes tickets from.
type sessionWrapper interface {
	Wrap(tls.ConnectionState, *tls.SessionState) ([]byte, error)
	Unwrap([]byte, tls.ConnectionState) (*tls.SessionState, error)
}

// handshake runs one connection between a client with cache and a hub
// whose tickets are keys', and returns whether it resumed and the client
// certificate the hub saw.
func handshake(t testing.TB, p ticketPeer, keys sessionWrapper, cache tls.ClientSessionCache, maxVersion uint16) (bool, []*x509.Certificate) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	sc := &tls.Config{Certificates: []tls.Certificate{p.server}, ClientAuth: tls.RequestClientCert,
		MinVersion: tls.VersionTLS12, WrapSession: keys.Wrap, UnwrapSession: keys.Unwrap}
	cc := &tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{p.client},
		ClientSessionCache: cache, MaxVersion: maxVersion}
	c, srv := pkitest.Handshake(t, cc, sc)
	if c.DidResume != srv.DidResume {
		t.Fatalf("client resumed %v, server %v", c.DidResume, srv.DidResume)
	}
	return srv.DidResume, srv.PeerCertificates
}

// A session resumes on the replica that began it, on another replica or a
// restarted one (keys from the same CA), during the ticket's period and
// the next; not with another CA's keys, two periods later, or in TLS 1.2.
// A resumed connection carries the client's certificate from the ticket.
func TestTicketsResume(t *testing.T) {
	p := newTicketPeer(t)
	other := newTicketPeer(t)
	now := time.Date(2026, 12, 6, 13, 0, 0, 0, time.UTC)
	clock := func(d time.Duration) func() time.Time { return func() time.Time { return now.Add(d) } }
	keys := func(ca *pki.CA, d time.Duration) *TicketKeys {
		k, err := NewTicketKeys(ca, nil, clock(d))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	for _, tc := range []struct {
		name string
		// second is the hub of the second connection; the first is always
		// p's at now.
		second     sessionWrapper
		maxVersion uint16
		resumed    bool
	}{
		{"same hub", keys(p.ca, 0), 0, true},
		{"another replica or a restart", keys(p.ca, 0), 0, true},
		{"next period", keys(p.ca, TicketPeriod), 0, true},
		{"two periods later", keys(p.ca, 2*TicketPeriod), 0, false},
		{"another CA's keys", keys(other.ca, 0), 0, false},
		{"TLS 1.2", keys(p.ca, 0), tls.VersionTLS12, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := keys(p.ca, 0)
			if tc.name == "same hub" {
				tc.second = first
			}
			cache := tls.NewLRUClientSessionCache(1)
			resumed, certs := handshake(t, p, first, cache, tc.maxVersion)
			if resumed || len(certs) != 1 || !bytes.Equal(certs[0].Raw, p.client.Leaf.Raw) {
				t.Fatalf("first connection: resumed %v, %d certificates", resumed, len(certs))
			}
			resumed, certs = handshake(t, p, tc.second, cache, tc.maxVersion)
			if resumed != tc.resumed {
				t.Fatalf("second connection resumed %v, want %v", resumed, tc.resumed)
			}
			if len(certs) != 1 || !bytes.Equal(certs[0].Raw, p.client.Leaf.Raw) {
				t.Fatalf("second connection: the hub saw %d certificates, not the node's", len(certs))
			}
		})
	}
}

// recorder keeps the last ticket its keys made.
type recorder struct {
	*TicketKeys
	last []byte
}

func (r *recorder) Wrap(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	b, err := r.TicketKeys.Wrap(cs, ss)
	r.last = bytes.Clone(b)
	return b, err
}

// A ticket that does not open is ignored, never an error: truncated,
// altered anywhere, of another version, empty, random, or offered in TLS
// 1.2.
func TestTicketUnwrapRefuses(t *testing.T) {
	p := newTicketPeer(t)
	keys, err := NewTicketKeys(p.ca, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{TicketKeys: keys}
	handshake(t, p, rec, tls.NewLRUClientSessionCache(1), 0)
	ticket := rec.last
	tls13 := tls.ConnectionState{Version: tls.VersionTLS13}
	if ss, err := keys.Unwrap(ticket, tls13); ss == nil || err != nil {
		t.Fatalf("the ticket made does not open: %v, %v", ss, err)
	}
	refused := func(what string, b []byte, cs tls.ConnectionState) {
		t.Helper()
		if ss, err := keys.Unwrap(b, cs); ss != nil || err != nil {
			t.Errorf("%s: opened (%v, %v)", what, ss != nil, err)
		}
	}
	for i := range ticket {
		b := bytes.Clone(ticket)
		b[i] ^= 0x80
		refused("bit flipped at "+strconv.Itoa(i), b, tls13)
	}
	for n := range len(ticket) {
		refused("truncated to "+strconv.Itoa(n), ticket[:n], tls13)
	}
	refused("longer", append(bytes.Clone(ticket), 0), tls13)
	refused("TLS 1.2", ticket, tls.ConnectionState{Version: tls.VersionTLS12})
	junk := make([]byte, 1<<16)
	rand.Read(junk)
	junk[0] = ticketVersion
	refused("random", junk, tls13)
}

// BenchmarkHubHandshake is one edge's TLS handshake with the hub over
// loopback, both ends in this process (ns/op is the work of both): full
// (certificates, signatures) and resumed with a ticket, as after an outage
// or on another replica.
func BenchmarkHubHandshake(b *testing.B) {
	p := newTicketPeer(b)
	keys, err := NewTicketKeys(p.ca, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, resume := range []bool{false, true} {
		name := "full"
		if resume {
			name = "resumed"
		}
		b.Run(name, func(b *testing.B) {
			cache := tls.NewLRUClientSessionCache(1)
			handshake(b, p, keys, cache, 0) // the ticket
			for b.Loop() {
				if !resume {
					cache = nil
				}
				if resumed, _ := handshake(b, p, keys, cache, 0); resumed != resume {
					b.Fatalf("resumed %v", resumed)
				}
			}
		})
	}
}
