package cloudcore

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Scaled limit of cloudcore's requests when kubeQPS is not set: cloudcore
// speaks for every connected node, where each kubelet would have a budget
// of its own, so a fixed limit that suits 100 nodes starves 10,000 (their
// registrations and the node statuses of a reconnect storm queue for
// minutes ahead of pod statuses). The limit follows the nodes connected.
const (
	// baseQPS is the limit with few nodes (KubeEdge's default).
	baseQPS = 100
	// qpsPerNode is the limit per connected node: a node's steady load is
	// a node status every 5 minutes and the statuses of its pods when they
	// change; at a reconnect or registration it writes one or two objects
	// at once, which this rate clears in 5-10 s.
	qpsPerNode = 0.2
)

// limiterResize is how often the scaled limit looks at the nodes connected.
const limiterResize = 2 * time.Second

// scaledLimiter is a client-go flowcontrol.RateLimiter whose rate is
// max(baseQPS, qpsPerNode × nodes) and whose burst is twice that; resize
// sets the node count.
type scaledLimiter struct {
	mu    sync.Mutex
	nodes int // guarded by mu
	l     *rate.Limiter
}

func newScaledLimiter() *scaledLimiter {
	return &scaledLimiter{l: rate.NewLimiter(baseQPS, 2*baseQPS)}
}

// resize makes the limit follow nodes connected nodes.
func (s *scaledLimiter) resize(nodes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if nodes == s.nodes {
		return
	}
	s.nodes = nodes
	qps := max(baseQPS, qpsPerNode*float64(nodes))
	s.l.SetLimit(rate.Limit(qps))
	s.l.SetBurst(int(2 * qps))
}

func (s *scaledLimiter) TryAccept() bool                { return s.l.Allow() }
func (s *scaledLimiter) Accept()                        { _ = s.l.Wait(context.Background()) }
func (s *scaledLimiter) Wait(ctx context.Context) error { return s.l.Wait(ctx) }
func (s *scaledLimiter) Stop()                          {}
func (s *scaledLimiter) QPS() float32                   { return float32(s.l.Limit()) }
