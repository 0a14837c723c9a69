package cloudcore

import (
	"strings"
	"testing"
)

func TestScaledLimiter(t *testing.T) {
	s := newScaledLimiter()
	for _, tc := range []struct {
		nodes int
		qps   float32
		burst int
	}{
		{0, 100, 200},
		{400, 100, 200},
		{1000, 200, 400},
		{10000, 2000, 4000},
		{10, 100, 200},
	} {
		s.resize(tc.nodes)
		if s.QPS() != tc.qps || s.l.Burst() != tc.burst {
			t.Errorf("%d nodes: qps %v burst %d, want %v and %d", tc.nodes, s.QPS(), s.l.Burst(), tc.qps, tc.burst)
		}
	}
}

func TestConfigKubeQPS(t *testing.T) {
	base := func() Config { return Config{} }
	c := base()
	if err := c.validate(); err != nil || c.KubeQPS != 0 || c.KubeBurst != 0 {
		t.Fatalf("unset: %v, qps %v burst %d; want the scaled limit (0, 0)", err, c.KubeQPS, c.KubeBurst)
	}
	c = base()
	c.KubeQPS = 50
	if err := c.validate(); err != nil || c.KubeBurst != 100 {
		t.Fatalf("qps 50: %v, burst %d; want 100", err, c.KubeBurst)
	}
	c = base()
	c.KubeBurst = 10
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "kubeBurst") {
		t.Fatalf("burst without qps: %v", err)
	}
}
