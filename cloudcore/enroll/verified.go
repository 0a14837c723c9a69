package enroll

import (
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

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
type verifiedCerts struct {
	ca *pki.CA

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
	if node, id, err = v.ca.VerifyNode(c, at); err != nil {
		return "", "", err
	}
	v.mu.Lock()
	if len(v.m) >= maxVerified {
		clear(v.m)
	}
	v.m[sum] = verifiedNode{node, id}
	v.mu.Unlock()
	return node, id, nil
}
