// Package histogram keeps latency histograms as Prometheus exports them:
// a counter per bucket, the count and the sum, lock-free, so workers and
// sessions observe at once and a scrape reads a Snapshot for
// prometheus.MustNewConstHistogram. The zero Latency is ready to use; every
// Latency has the same buckets (Bounds), from a millisecond (an API write
// on a healthy server, an ack on loopback) to minutes (an image pull on a
// slow link).
package histogram

import (
	"sync/atomic"
	"time"
)

// Bounds are the upper bounds, in seconds, of the buckets.
var Bounds = [...]float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// Latency is a histogram of durations. It is safe for concurrent use.
type Latency struct {
	counts [len(Bounds) + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	count  atomic.Uint64
	sumNs  atomic.Int64
}

// Observe records one duration.
func (l *Latency) Observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(Bounds) && s > Bounds[i] {
		i++
	}
	l.counts[i].Add(1)
	l.count.Add(1)
	l.sumNs.Add(int64(d))
}

// Snapshot is a histogram as Prometheus takes it: the count of observations
// at or below each of Bounds (cumulative), the count and the sum in
// seconds.
type Snapshot struct {
	Buckets map[float64]uint64
	Count   uint64
	Sum     float64
}

// Snapshot reads the histogram. Observations made while it reads may be
// counted in some fields and not yet in others.
func (l *Latency) Snapshot() Snapshot {
	h := Snapshot{Buckets: make(map[float64]uint64, len(Bounds))}
	var cum uint64
	for i, le := range Bounds {
		cum += l.counts[i].Load()
		h.Buckets[le] = cum
	}
	h.Count = l.count.Load()
	h.Sum = float64(l.sumNs.Load()) / 1e9
	return h
}
