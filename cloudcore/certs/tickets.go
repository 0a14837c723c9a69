package certs

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tether-edge/tether/pki"
)

// TicketPeriod is how long one session ticket key encrypts new tickets. A
// ticket is accepted during the period it was made in and the next one:
// between one and two periods.
const TicketPeriod = 24 * time.Hour

// ticketVersion is the first byte of every ticket; a ticket of another
// version is not resumed.
const ticketVersion = 1

// ticketHeader is the version, the period number and the AES-GCM nonce.
const ticketHeader = 1 + 4 + 12

// TicketKeys wraps and unwraps the hub's TLS 1.3 session tickets with keys
// derived from the CA's private key (HKDF-SHA256, one key per TicketPeriod).
// Every replica holds the CA, so a session that one replica began resumes
// on any other, and on a replica restarted: after an outage the reconnecting
// fleet skips the certificate signatures and verifications of a full
// handshake on both ends (the key exchange stays: TLS 1.3 resumption in Go
// is always with (EC)DHE, so resumed sessions keep forward secrecy). A
// ticket proves that the server which issued it held the CA key, as a
// serving certificate issued by it would.
//
// A ticket carries the client's certificate chain, sealed: the hub
// authenticates a resumed connection as a new one (Authenticator: expiry,
// the node's identity), so a node revoked since is refused all the same.
// With a CertMemory, a ticket also carries the fact that its client
// certificate verified against the CA when the ticket was made: the replica
// that opens it skips that certificate's signature verification, even
// restarted with nothing remembered. A ticket that does not open (another
// CA, a period past, truncated, forged) or of TLS 1.2 (whose resumption has
// no forward secrecy) is ignored: the handshake is a full one.
//
// Use it as tls.Config's WrapSession and UnwrapSession.
type TicketKeys struct {
	secret []byte
	mem    CertMemory
	now    func() time.Time

	mu sync.Mutex
	// aeads caches the AEADs of the periods used lately; guarded by mu.
	aeads map[uint32]cipher.AEAD
}

// CertMemory is what the hub's authenticator remembers of the client
// certificates it verified (enroll.Service). An entry is sealed in a ticket
// and given back when the ticket opens: only a holder of the CA key makes a
// ticket, so what it says was verified, was.
type CertMemory interface {
	// TicketEntry returns what a ticket of a session whose client
	// presented leaf carries: nil if leaf does not verify. Each entry
	// starts with TicketEntryPrefix.
	TicketEntry(leaf *x509.Certificate) []byte
	// FromTicket takes back an entry of a ticket that opened.
	FromTicket(entry []byte)
}

// TicketEntryPrefix starts every CertMemory entry in a ticket's
// SessionState.Extra; Wrap drops an earlier one before adding the new.
const TicketEntryPrefix = "tether verified certificate v1\x00"

// NewTicketKeys derives the ticket keys of ca. mem, if not nil, carries its
// entries in the tickets; now is the clock (nil: time.Now).
func NewTicketKeys(ca *pki.CA, mem CertMemory, now func() time.Time) (*TicketKeys, error) {
	if ca == nil || ca.Key == nil || ca.Cert == nil {
		return nil, fmt.Errorf("session tickets: no CA key")
	}
	d, err := ca.Key.Bytes()
	if err != nil {
		return nil, fmt.Errorf("session tickets: %w", err)
	}
	salt := sha256.Sum256(ca.Cert.Raw)
	secret, err := hkdf.Extract(sha256.New, d, salt[:])
	if err != nil {
		return nil, fmt.Errorf("session tickets: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	return &TicketKeys{secret: secret, mem: mem, now: now, aeads: map[uint32]cipher.AEAD{}}, nil
}

func (k *TicketKeys) period(t time.Time) uint32 {
	return uint32(t.Unix() / int64(TicketPeriod/time.Second))
}

// aead returns the AEAD of period p.
func (k *TicketKeys) aead(p uint32) (cipher.AEAD, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if a, ok := k.aeads[p]; ok {
		return a, nil
	}
	var info [len("tether hub session tickets v1 period ") + 4]byte
	n := copy(info[:], "tether hub session tickets v1 period ")
	binary.BigEndian.PutUint32(info[n:], p)
	key, err := hkdf.Expand(sha256.New, k.secret, string(info[:]), 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if len(k.aeads) >= 4 { // only two periods are in use at a time
		clear(k.aeads)
	}
	k.aeads[p] = a
	return a, nil
}

// Wrap seals ss under the current period's key (tls.Config.WrapSession),
// with the CertMemory's entry for the client's certificate.
func (k *TicketKeys) Wrap(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	if k.mem != nil {
		ss.Extra = slices.DeleteFunc(ss.Extra, func(e []byte) bool { return bytes.HasPrefix(e, []byte(TicketEntryPrefix)) })
		if len(cs.PeerCertificates) > 0 {
			if e := k.mem.TicketEntry(cs.PeerCertificates[0]); e != nil {
				ss.Extra = append(ss.Extra, e)
			}
		}
	}
	plain, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	p := k.period(k.now())
	a, err := k.aead(p)
	if err != nil {
		return nil, err
	}
	// The header apart, as the AEAD wants its nonce and additional data
	// not to overlap the output.
	var hdr [ticketHeader]byte
	hdr[0] = ticketVersion
	binary.BigEndian.PutUint32(hdr[1:5], p)
	if _, err := rand.Read(hdr[5:]); err != nil {
		return nil, err
	}
	out := make([]byte, ticketHeader, ticketHeader+len(plain)+a.Overhead())
	copy(out, hdr[:])
	return a.Seal(out, hdr[5:], plain, hdr[:5]), nil
}

// Unwrap opens a ticket of the current or the previous period
// (tls.Config.UnwrapSession). Anything else gives (nil, nil): no
// resumption, a full handshake.
func (k *TicketKeys) Unwrap(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
	if cs.Version != tls.VersionTLS13 || len(identity) < ticketHeader || identity[0] != ticketVersion {
		return nil, nil
	}
	p, now := binary.BigEndian.Uint32(identity[1:5]), k.period(k.now())
	if p != now && p+1 != now {
		return nil, nil
	}
	a, err := k.aead(p)
	if err != nil {
		return nil, nil
	}
	plain, err := a.Open(nil, identity[5:ticketHeader], identity[ticketHeader:], identity[:5])
	if err != nil {
		return nil, nil
	}
	ss, err := tls.ParseSessionState(plain)
	if err != nil {
		return nil, nil
	}
	if k.mem != nil {
		for _, e := range ss.Extra {
			if bytes.HasPrefix(e, []byte(TicketEntryPrefix)) {
				k.mem.FromTicket(e)
			}
		}
	}
	return ss, nil
}
