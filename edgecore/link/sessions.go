package link

import (
	"crypto/tls"
	"sync"
)

// SessionCache is the TLS session cache of an edge's link: the hub's
// session tickets, so that a reconnect resumes the session (no certificate
// sent, no signature made or verified on either end; see cloudcore/certs
// TicketKeys).
//
// Go's TLS client drops a ticket after any failed handshake that offered
// it. A hub taking a reconnecting fleet may close connections before their
// handshake (a per-address accept limit, its connection cap, or a hub of
// an older version past its accept rate): an edge that lost its ticket
// that way would pay a full handshake, in the storm when it counts. So this cache keeps a ticket
// through MaxTicketFailures-1 failed handshakes in a row and drops it at
// the next, in case the ticket itself is what fails (a server that cannot
// take it and does not fall back to a full handshake, as the hub does).
// A handshake that succeeds replaces the ticket and starts the count anew.
//
// It holds at most n tickets (NewSessionCache; one per hub address); past
// that, one is dropped to make room.
type SessionCache struct {
	max int

	mu sync.Mutex
	// m holds the tickets by cache key; guarded by mu.
	m map[string]*cachedTicket
}

// MaxTicketFailures is how many failed handshakes in a row drop a ticket.
const MaxTicketFailures = 5

type cachedTicket struct {
	cs    *tls.ClientSessionState
	fails int
}

// NewSessionCache returns a cache of at most n tickets (at least one).
func NewSessionCache(n int) *SessionCache {
	return &SessionCache{max: max(n, 1), m: map[string]*cachedTicket{}}
}

// Get returns the ticket for key.
func (c *SessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.m[key]; ok {
		return t.cs, true
	}
	return nil, false
}

// Put keeps cs for key. A nil cs is Go's drop after a failed handshake:
// counted, and the ticket dropped at the MaxTicketFailures-th in a row.
func (c *SessionCache) Put(key string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs == nil {
		if t, ok := c.m[key]; ok {
			if t.fails++; t.fails >= MaxTicketFailures {
				delete(c.m, key)
			}
		}
		return
	}
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[key] = &cachedTicket{cs: cs}
}
