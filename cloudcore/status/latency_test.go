package status

import (
	"testing"
	"time"
)

// Each kind's write latency is reported once it has one.
func TestWriteLatencyByKind(t *testing.T) {
	var c counters
	c.latency[kindPodStatus].Observe(time.Millisecond)
	if got := c.writeLatency(); len(got) != 1 || got["PodStatus"].Count != 1 {
		t.Errorf("writeLatency %v, want PodStatus only", got)
	}
}
