package histogram

import (
	"sync"
	"testing"
	"time"
)

// Each duration is counted in the first bucket at or above it,
// cumulatively, and past the last bucket only in Count and Sum.
func TestLatency(t *testing.T) {
	var l Latency
	if h := l.Snapshot(); h.Count != 0 || h.Sum != 0 || h.Buckets[300] != 0 || len(h.Buckets) != len(Bounds) {
		t.Fatalf("empty: %+v", h)
	}
	for _, d := range []time.Duration{500 * time.Microsecond, time.Millisecond, 3 * time.Millisecond, 2 * time.Second,
		time.Minute, 10 * time.Minute} {
		l.Observe(d)
	}
	h := l.Snapshot()
	for le, want := range map[float64]uint64{0.001: 2, 0.0025: 2, 0.005: 3, 2.5: 4, 10: 4, 60: 5, 300: 5} {
		if h.Buckets[le] != want {
			t.Errorf("bucket le=%g: %d, want %d", le, h.Buckets[le], want)
		}
	}
	if want := 662.0045; h.Count != 6 || h.Sum < want-1e-6 || h.Sum > want+1e-6 {
		t.Errorf("count %d sum %g, want 6 and %g", h.Count, h.Sum, want)
	}
}

func TestLatencyConcurrent(t *testing.T) {
	var l Latency
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				l.Observe(time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if h := l.Snapshot(); h.Count != 8000 || h.Buckets[0.001] != 8000 {
		t.Fatalf("count %d, bucket 1ms %d, want 8000", h.Count, h.Buckets[0.001])
	}
}
