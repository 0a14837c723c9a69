package status

import (
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds, in seconds, of the write latency
// histograms (Stats.WriteLatency): an API write takes milliseconds on a
// healthy API server, seconds on a loaded one.
var LatencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// latency is a histogram of durations, lock-free: a counter per bucket.
type latency struct {
	buckets [14]atomic.Uint64 // len(LatencyBuckets)+1: the last is +Inf
	count   atomic.Uint64
	sumNs   atomic.Int64
}

func (l *latency) observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(LatencyBuckets) && s > LatencyBuckets[i] {
		i++
	}
	l.buckets[i].Add(1)
	l.count.Add(1)
	l.sumNs.Add(int64(d))
}

// Histogram is a latency histogram as Prometheus takes it: the count of
// observations at or below each of LatencyBuckets (cumulative), the count
// and the sum in seconds.
type Histogram struct {
	Buckets map[float64]uint64
	Count   uint64
	Sum     float64
}

func (l *latency) snapshot() Histogram {
	h := Histogram{Buckets: make(map[float64]uint64, len(LatencyBuckets))}
	var cum uint64
	for i, le := range LatencyBuckets {
		cum += l.buckets[i].Load()
		h.Buckets[le] = cum
	}
	h.Count = l.count.Load()
	h.Sum = float64(l.sumNs.Load()) / 1e9
	return h
}
