package pods

import (
	"sync"
	"time"
)

// LatencyBuckets are the upper bounds, in seconds, of the buckets of a
// Latency (a pull of a large image on a slow link takes minutes).
var LatencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// Latency is a histogram of how long runtime calls took: the pod sync
// latency the edge exports (tether_edge_pod_sync_duration_seconds).
// Workers observe into it at once; scrapes read a Snapshot.
type Latency struct {
	mu     sync.Mutex
	counts []uint64 // per bucket of LatencyBuckets, not cumulative
	count  uint64
	sum    float64
}

// Observe records one call that took d.
func (l *Latency) Observe(d time.Duration) {
	s := d.Seconds()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counts == nil {
		l.counts = make([]uint64, len(LatencyBuckets))
	}
	for i, ub := range LatencyBuckets {
		if s <= ub {
			l.counts[i]++
			break
		}
	}
	l.count++
	l.sum += s
}

// Snapshot returns the number of calls, their total seconds and the
// cumulative count at each bucket's upper bound, as Prometheus histograms
// are exported.
func (l *Latency) Snapshot() (count uint64, sum float64, buckets map[float64]uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	buckets = make(map[float64]uint64, len(LatencyBuckets))
	var acc uint64
	for i, ub := range LatencyBuckets {
		if l.counts != nil {
			acc += l.counts[i]
		}
		buckets[ub] = acc
	}
	return l.count, l.sum, buckets
}
