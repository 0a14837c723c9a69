package status

import (
	"testing"
	"time"
)

// The histogram counts each duration in the first bucket at or above it,
// cumulatively, and past the last bucket only in Count and Sum.
func TestLatencyHistogram(t *testing.T) {
	var l latency
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 3 * time.Millisecond, 2 * time.Second, time.Minute} {
		l.observe(d)
	}
	h := l.snapshot()
	for le, want := range map[float64]uint64{0.001: 2, 0.0025: 2, 0.005: 3, 2.5: 4, 10: 4} {
		if h.Buckets[le] != want {
			t.Errorf("bucket le=%g: %d, want %d", le, h.Buckets[le], want)
		}
	}
	if h.Count != 5 || h.Sum < 62.004 || h.Sum > 62.0046 {
		t.Errorf("count %d sum %g", h.Count, h.Sum)
	}
	var c counters
	c.latency[kindPodStatus].observe(time.Millisecond)
	if got := c.writeLatency(); len(got) != 1 || got["PodStatus"].Count != 1 {
		t.Errorf("writeLatency %v, want PodStatus only", got)
	}
}
