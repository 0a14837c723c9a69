package kubeletproxy

import (
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"github.com/tether-edge/tether/pki"
)

// NodeCerts returns a Config.Certs issuing, from ca, a serving certificate
// for each node name, kept until two thirds of validity passed.
func NodeCerts(ca *pki.CA, validity time.Duration) func(node string) (*tls.Certificate, error) {
	var mu sync.Mutex
	type entry struct {
		cert  *tls.Certificate
		renew time.Time
	}
	cache := map[string]entry{}
	return func(node string) (*tls.Certificate, error) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if e, ok := cache[node]; ok && now.Before(e.renew) {
			return e.cert, nil
		}
		certPEM, keyPEM, err := ca.IssueServer(node, []string{node}, nil, validity)
		if err != nil {
			return nil, fmt.Errorf("serving certificate for node %s: %w", node, err)
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("serving certificate for node %s: %w", node, err)
		}
		if len(cache) >= 100000 {
			clear(cache)
		}
		cache[node] = entry{cert: &c, renew: now.Add(validity * 2 / 3)}
		return &c, nil
	}
}
