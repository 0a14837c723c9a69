package link

import (
	"testing"
	"time"
)

func TestBackoffGrowsJitteredAndCapped(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 8 * time.Second}
	for i, ceil := range []time.Duration{1, 2, 4, 8, 8, 8} {
		ceil *= time.Second
		d := b.Next()
		if d < ceil/2 || d > ceil {
			t.Errorf("attempt %d: %s outside [%s, %s]", i, d, ceil/2, ceil)
		}
	}
	b.Reset()
	if d := b.Next(); d > time.Second {
		t.Errorf("after Reset: %s", d)
	}
	// Jitter: many nodes do not all pick the same delay.
	seen := map[time.Duration]bool{}
	for i := 0; i < 50; i++ {
		n := Backoff{Initial: time.Second, Max: time.Minute}
		seen[n.Next()] = true
	}
	if len(seen) < 40 {
		t.Errorf("only %d distinct first delays of 50", len(seen))
	}
}
