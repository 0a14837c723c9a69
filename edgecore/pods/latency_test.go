package pods

import (
	"testing"
	"time"
)

func TestLatencySnapshot(t *testing.T) {
	var l Latency
	if n, sum, b := l.Snapshot(); n != 0 || sum != 0 || b[300] != 0 {
		t.Fatalf("empty: %d %v %v", n, sum, b)
	}
	for _, d := range []time.Duration{3 * time.Millisecond, 40 * time.Millisecond, 40 * time.Millisecond, 2 * time.Second, 10 * time.Minute} {
		l.Observe(d)
	}
	n, sum, b := l.Snapshot()
	if n != 5 {
		t.Fatalf("count %d, want 5", n)
	}
	if want := 0.003 + 0.08 + 2 + 600; sum < want-1e-9 || sum > want+1e-9 {
		t.Fatalf("sum %v, want %v", sum, want)
	}
	// Cumulative; the 10 minutes is past the last bucket (counted in +Inf
	// only, which is the count).
	for ub, want := range map[float64]uint64{0.005: 1, 0.01: 1, 0.05: 3, 1: 3, 2.5: 4, 300: 4} {
		if b[ub] != want {
			t.Errorf("bucket le=%v: %d, want %d", ub, b[ub], want)
		}
	}
}
