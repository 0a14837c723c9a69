package enroll

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-edge/tether/cloudcore/certs"
	"github.com/tether-edge/tether/pki"
)

// maxVerified bounds verifiedCerts: more node certificates than a hub has
// connections; past it the cache starts empty again.
const maxVerified = 1 << 16

// verifiedCerts remembers the node certificates whose chain the CA verified,
// by the SHA-256 of their DER, with the node and identity they name. An edge
// presents the same certificate at every reconnect (and a resumed TLS
// session carries it in its ticket), so a fleet reconnecting after an outage
// would otherwise have its certificates' signatures verified again, one
// ECDSA verification each: a tenth of the hub's CPU in a 10,000-node storm.
// What depends on time is checked at every use: the certificate's and the
// CA's validity. A certificate differing by one byte is another entry, and
// verified; a node's revocation is checked by the caller (Check) each time.
//
// The hub's session tickets carry an entry (ticketEntry) for the
// certificate of the session they resume, sealed under keys only a holder
// of the CA key has (certs.TicketKeys): a replica restarted, or another one,
// remembers the certificate when the ticket opens, before the connection
// is authenticated.
type verifiedCerts struct {
	ca *pki.CA
	// chains counts the chain verifications done (the CA's signature
	// checked), not the answers from memory.
	chains atomic.Int64

	mu sync.Mutex
	// m holds what each verified certificate names; guarded by mu.
	m map[[32]byte]verifiedNode
}

type verifiedNode struct{ node, id string }

func newVerifiedCerts(ca *pki.CA) *verifiedCerts {
	return &verifiedCerts{ca: ca, m: map[[32]byte]verifiedNode{}}
}

// verify is ca.VerifyNode(c, at), remembered.
func (v *verifiedCerts) verify(c *x509.Certificate, at time.Time) (node, id string, err error) {
	sum := sha256.Sum256(c.Raw)
	v.mu.Lock()
	n, ok := v.m[sum]
	v.mu.Unlock()
	if ok {
		if at.Before(c.NotBefore) || at.After(c.NotAfter) {
			return "", "", fmt.Errorf("x509: certificate has expired or is not yet valid: current time %s is outside %s to %s",
				at.UTC().Format(time.RFC3339), c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
		}
		if ca := v.ca.Cert; at.Before(ca.NotBefore) || at.After(ca.NotAfter) {
			return "", "", fmt.Errorf("x509: the CA certificate has expired or is not yet valid: current time %s is outside %s to %s",
				at.UTC().Format(time.RFC3339), ca.NotBefore.UTC().Format(time.RFC3339), ca.NotAfter.UTC().Format(time.RFC3339))
		}
		return n.node, n.id, nil
	}
	v.chains.Add(1)
	if node, id, err = v.ca.VerifyNode(c, at); err != nil {
		return "", "", err
	}
	v.remember(sum, verifiedNode{node, id})
	return node, id, nil
}

func (v *verifiedCerts) remember(sum [32]byte, n verifiedNode) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.m) >= maxVerified {
		clear(v.m)
	}
	v.m[sum] = n
}

// ticketEntry returns the entry of c for a session ticket: the SHA-256 of
// its DER and what it names, each name after its length (2 bytes); nil if c
// does not verify now.
func (v *verifiedCerts) ticketEntry(c *x509.Certificate, at time.Time) []byte {
	node, id, err := v.verify(c, at)
	if err != nil || len(node) > 0xffff || len(id) > 0xffff {
		return nil
	}
	sum := sha256.Sum256(c.Raw)
	e := make([]byte, 0, len(certs.TicketEntryPrefix)+len(sum)+4+len(node)+len(id))
	e = append(e, certs.TicketEntryPrefix...)
	e = append(e, sum[:]...)
	e = binary.BigEndian.AppendUint16(e, uint16(len(node)))
	e = append(e, node...)
	e = binary.BigEndian.AppendUint16(e, uint16(len(id)))
	return append(e, id...)
}

// fromTicket remembers the certificate of a ticket's entry; a malformed
// entry is ignored (the certificate is then verified when used).
func (v *verifiedCerts) fromTicket(e []byte) {
	rest, ok := bytes.CutPrefix(e, []byte(certs.TicketEntryPrefix))
	if !ok || len(rest) < 32 {
		return
	}
	sum, rest := [32]byte(rest[:32]), rest[32:]
	name := func() (string, bool) {
		if len(rest) < 2 {
			return "", false
		}
		n := int(binary.BigEndian.Uint16(rest))
		if len(rest) < 2+n {
			return "", false
		}
		s := string(rest[2 : 2+n])
		rest = rest[2+n:]
		return s, true
	}
	node, ok1 := name()
	id, ok2 := name()
	if !ok1 || !ok2 || len(rest) != 0 || node == "" {
		return
	}
	v.remember(sum, verifiedNode{node, id})
}
