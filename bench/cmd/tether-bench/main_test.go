package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/bench"
)

func TestParseCounts(t *testing.T) {
	got, err := parseCounts("1000, 100,5k,1k,10000")
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{100, 1000, 5000, 10000}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := parseCounts("100,x"); err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("bad count: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	bin := t.TempDir()
	for _, b := range []string{"cloudcore", "edgecore", "kube-apiserver"} {
		if err := os.WriteFile(filepath.Join(bin, b), nil, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	good := func() Config {
		return Config{Nodes: []int{100, 1000}, Out: t.TempDir(), BinDir: bin, Pods: 10, PodRate: 5, ConnectRate: 100,
			Idle: time.Second, EdgeIdle: time.Second, StormTimeout: time.Second, ConnectTimeout: time.Second, Edgecore: true}
	}
	c := good()
	if err := c.validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	if c.NodesPerProcess != maxNodes() {
		t.Errorf("nodes per process %d, want maxNodes %d by default", c.NodesPerProcess, maxNodes())
	}
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"no nodes":           {func(c *Config) { c.Nodes = nil }, "--nodes"},
		"zero nodes":         {func(c *Config) { c.Nodes = []int{0} }, "--nodes: 0"},
		"not ascending":      {func(c *Config) { c.Nodes = []int{10, 10} }, "ascending"},
		"no out":             {func(c *Config) { c.Out = "" }, "--out"},
		"no binaries":        {func(c *Config) { c.BinDir = t.TempDir() }, "--bin"},
		"zero rate":          {func(c *Config) { c.PodRate = 0 }, "--pod-rate"},
		"no idle":            {func(c *Config) { c.Idle = 0 }, "--idle"},
		"no edge idle":       {func(c *Config) { c.EdgeIdle = 0 }, "--edge-idle"},
		"neg profile":        {func(c *Config) { c.ProfileNodes = -1 }, "--profile-nodes"},
		"delay alone":        {func(c *Config) { c.NetnsDelay = time.Millisecond }, "need --netns"},
		"loss > 1":           {func(c *Config) { c.Netns, c.NetnsLoss = true, 2 }, "--netns-loss"},
		"neg per process":    {func(c *Config) { c.NodesPerProcess = -1 }, "--nodes-per-process"},
		"too many a process": {func(c *Config) { c.NodesPerProcess = maxNodes() + 1 }, "--nodes-per-process"},
	} {
		c := good()
		tc.mod(&c)
		if err := c.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %s", name, err, tc.want)
		}
	}
}

func TestTwinFigures(t *testing.T) {
	const twin, dt = "github.com/tether-edge/tether/devices/twin", "github.com/tether-edge/tether/edgecore/devicetwin"
	bs := []bench.GoBenchmark{
		{Package: "github.com/tether-edge/tether/protocol", Name: "BenchmarkCodec", Metrics: map[string]float64{"ns/op": 10}},
		{Package: twin, Name: "BenchmarkTwinUpdate", Metrics: map[string]float64{"ns/op": 2500}},
		{Package: dt, Name: "BenchmarkTwinUpdates/devices=1/window=1", Metrics: map[string]float64{"updates/s": 3000}},
		{Package: dt, Name: "BenchmarkTwinUpdates/devices=100/window=64", Metrics: map[string]float64{"updates/s": 9000}},
		{Package: dt, Name: "BenchmarkTwinUpdates/devices=1/window=64", Metrics: map[string]float64{"updates/s": 12000}},
	}
	tw := twinFigures(bs)
	if tw == nil || tw.UpdatesPerSecond != 9000 || tw.EngineUpdatesPerSecond != 400000 || tw.DeviceToAPI != nil {
		t.Fatalf("got %+v", tw)
	}
	if !strings.Contains(tw.Source, "devices=100/window=64") {
		t.Errorf("source %q", tw.Source)
	}
	// Without the 100-device case, the fastest.
	tw = twinFigures(append(bs[:3:3], bs[4]))
	if tw.UpdatesPerSecond != 12000 {
		t.Errorf("fastest case: %+v", tw)
	}
	if twinFigures(bs[:1]) != nil {
		t.Error("twin figures without a twin benchmark")
	}

	// Through the report: the lag is marked not available, never zero.
	f := filepath.Join(t.TempDir(), "gobench.txt")
	out := "pkg: " + twin + "\nBenchmarkTwinUpdate-2   1000   2500 ns/op   10 B/op   1 allocs/op\n"
	if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	goBenchmarks(Config{GoBench: f}, &rep)
	if rep.Twin == nil || rep.Twin.EngineUpdatesPerSecond != 400000 || rep.Twin.UpdatesPerSecond != 0 {
		t.Errorf("twin %+v", rep.Twin)
	}
	if !strings.HasPrefix(rep.Unavailable["twin.deviceToAPI"], "not available") {
		t.Errorf("unavailable %v", rep.Unavailable)
	}
	var none bench.Report
	goBenchmarks(Config{}, &none)
	if none.Twin != nil || none.Unavailable["twin"] == "" {
		t.Errorf("no file: %+v", none)
	}
}

func TestMaxNodesFitsTheFileLimit(t *testing.T) {
	n, l := maxNodes(), fileLimit()
	if n <= 0 || n%100 != 0 || uint64(2*n+64) > l {
		t.Errorf("maxNodes %d with a file limit of %d", n, l)
	}
}
