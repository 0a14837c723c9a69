package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// sample is a report with every kind of figure, and gaps.
func sample() *Report {
	t0 := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	r := &Report{
		Schema:   SchemaVersion,
		Started:  t0,
		Finished: t0.Add(17 * time.Minute),
		Machine:  Machine{Cores: 2, GoVersion: "go1.26.8", OS: "linux", Arch: "amd64", GitCommit: "0123456789abcdef", GitDirty: true},
		Args:     []string{"--nodes", "100,1000"},
	}
	for _, n := range []int{1000, 100, 10000} {
		s := Scale{Nodes: n, Connected: n, ConnectSeconds: float64(n) / 400, Enrolled: n, EnrollSeconds: float64(n) / 500,
			CloudcoreIdle:  PerNode(Usage{Seconds: 30, CPUSeconds: 3, CPUCores: 0.1, RSSPeakBytes: int64(n) * 100 << 10, Samples: 31}, n),
			CloudcoreChurn: PerNode(Usage{Seconds: 60, CPUSeconds: 30, CPUCores: 0.5, RSSPeakBytes: int64(n) * 120 << 10, Samples: 61}, n),
			Dispatch:       &Latency{Samples: 500, P50Ms: 3 + float64(n)/1000, P99Ms: 20 + float64(n)/100, MaxMs: 300},
			Churn:          &Churn{Pods: 500, PerSecond: 20, Seconds: 25},
			Storm:          &Storm{Nodes: n, Seconds: float64(n) / 500, BytesSent: int64(n) * 2000, Resynced: n},
			IdleBandwidth:  &Bandwidth{Seconds: 60, UplinkBitsPerSecond: 80, DownlinkBitsPerSecond: 40, Layer: "tls"},
		}
		if n == 100 {
			s.SetUnavailable("createToRunning", errors.New("watch failed"))
		} else {
			s.CreateToRunning = &Latency{Samples: 500, P50Ms: 40, P99Ms: 900, MaxMs: 1200}
		}
		if err := r.AddScale(s); err != nil {
			panic(err)
		}
	}
	r.EdgecoreIdle = &EdgecoreIdle{RSSBytes: 21 << 20, Runtime: "fake", SettleSeconds: 2}
	r.SetUnavailable("twin", ErrNotAvailable)
	r.GoBenchmarks = []GoBenchmark{{Package: "p", Name: "BenchmarkX", Procs: 2, Iterations: 10, Metrics: map[string]float64{"ns/op": 12.5}}}
	Evaluate(r)
	return r
}

func TestReportRoundTrip(t *testing.T) {
	r := sample()
	if got := []int{r.Scales[0].Nodes, r.Scales[1].Nodes, r.Scales[2].Nodes}; !reflect.DeepEqual(got, []int{100, 1000, 10000}) {
		t.Fatalf("scales not sorted: %v", got)
	}
	path := filepath.Join(t.TempDir(), "report.json")
	if err := r.Write(path); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip changed the report:\n got %+v\nwant %+v", got, r)
	}
	// The JSON names are the stable interface: pin a few.
	b, _ := os.ReadFile(path)
	for _, name := range []string{`"schema": 1`, `"gitCommit"`, `"cores": 2`, `"p99Ms"`, `"rssPeakBytes"`,
		`"cpuMillicoresPerNode"`, `"uplinkBitsPerSecond"`, `"createToRunning": "watch failed"`, `"status": "met"`} {
		if !bytes.Contains(b, []byte(name)) {
			t.Errorf("report.json lacks %s", name)
		}
	}
}

func TestReadRefusesOtherSchemaAndUnknownFields(t *testing.T) {
	if _, err := Read(strings.NewReader(`{"schema": 99}`)); err == nil || !strings.Contains(err.Error(), "schema 99") {
		t.Errorf("schema 99: got %v", err)
	}
	if _, err := Read(strings.NewReader(`{"schema": 1, "nodez": 3}`)); err == nil || !strings.Contains(err.Error(), "nodez") {
		t.Errorf("unknown field: got %v", err)
	}
}

func TestAddScaleRefusesDuplicates(t *testing.T) {
	var r Report
	if err := r.AddScale(Scale{Nodes: 5}); err != nil {
		t.Fatal(err)
	}
	if err := r.AddScale(Scale{Nodes: 5}); err == nil {
		t.Error("a second scale of 5 nodes was accepted")
	}
	if err := r.AddScale(Scale{Nodes: 0}); err == nil {
		t.Error("a scale of 0 nodes was accepted")
	}
}

func TestSummarize(t *testing.T) {
	if Summarize(nil) != nil {
		t.Error("Summarize(nil) is not nil")
	}
	var d []time.Duration
	for i := 100; i >= 1; i-- { // unsorted on purpose
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	got := Summarize(d)
	want := &Latency{Samples: 100, P50Ms: 50, P99Ms: 99, MaxMs: 100}
	if *got != *want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	one := Summarize([]time.Duration{7 * time.Millisecond})
	if one.P50Ms != 7 || one.P99Ms != 7 {
		t.Errorf("one sample: %+v", one)
	}
	// Nearest rank of 3 values: p50 is the 2nd, p99 the 3rd.
	three := Summarize([]time.Duration{3 * time.Millisecond, time.Millisecond, 2 * time.Millisecond})
	if three.P50Ms != 2 || three.P99Ms != 3 {
		t.Errorf("three samples: %+v", three)
	}
}

func TestEvaluate(t *testing.T) {
	r := sample()
	got := map[string]TargetResult{}
	for _, tr := range r.Targets {
		got[tr.Name] = tr
	}
	check := func(name string, status Status, value float64) {
		t.Helper()
		tr, ok := got[name]
		if !ok {
			t.Fatalf("no target %s", name)
		}
		if tr.Status != status {
			t.Errorf("%s: status %s, want %s (%s)", name, tr.Status, status, tr.Note)
		}
		if value >= 0 && (tr.Value == nil || *tr.Value != value) {
			t.Errorf("%s: value %v, want %v", name, tr.Value, value)
		}
	}
	// 10000 nodes * 120 KiB peak = 1171.875 MiB.
	check("cloudcore-rss", Met, 10000*120.0/1024)
	check("dispatch-p99", Met, 30)
	check("storm-resync", Met, 20)
	check("idle-uplink", Met, 0.08)
	check("edgecore-idle-rss", Met, float64(21<<20)/1e6)

	// Now make each miss.
	r.Scale(1000).Dispatch.P99Ms = 150
	r.Scale(10000).Storm.Resynced = 9999
	r.Scale(10000).IdleBandwidth.UplinkBitsPerSecond = 100
	r.EdgecoreIdle.RSSBytes = 30e6
	r.Scale(10000).Connected = 9000
	Evaluate(r)
	got = map[string]TargetResult{}
	for _, tr := range r.Targets {
		got[tr.Name] = tr
	}
	check("cloudcore-rss", Missed, -1)
	check("dispatch-p99", Missed, 150)
	check("storm-resync", Missed, 20)
	check("idle-uplink", Missed, 0.1)
	check("edgecore-idle-rss", Missed, 30)
	if n := got["cloudcore-rss"].Note; !strings.Contains(n, "only 9000 of 10000 nodes connected") {
		t.Errorf("cloudcore-rss note %q", n)
	}

	// Without the 10,000-node run those targets are not measured; the note
	// gives the largest run's figure.
	r.Scales = r.Scales[:2]
	r.EdgecoreIdle = nil
	r.SetUnavailable("edgecoreIdle", errors.New("bin/edgecore missing"))
	Evaluate(r)
	got = map[string]TargetResult{}
	for _, tr := range r.Targets {
		got[tr.Name] = tr
	}
	check("cloudcore-rss", NotMeasured, -1)
	check("storm-resync", NotMeasured, -1)
	if n := got["storm-resync"].Note; n != "no run at 10000 nodes; 2 s at 1000 nodes" {
		t.Errorf("storm note %q", n)
	}
	// The edgecore binary's IP-layer figure, when there is one, is the one
	// judged.
	r.EdgecoreIdle = &EdgecoreIdle{RSSBytes: 20e6, Runtime: "fake",
		Link: &Bandwidth{Seconds: 60, UplinkBitsPerSecond: 120, DownlinkBitsPerSecond: 90, Layer: "ip"}, LinkDelayMs: 25}
	Evaluate(r)
	got = map[string]TargetResult{}
	for _, tr := range r.Targets {
		got[tr.Name] = tr
	}
	check("idle-uplink", Missed, 0.12)
	if n := got["idle-uplink"].Note; !strings.Contains(n, "ip layer") {
		t.Errorf("idle-uplink note %q", n)
	}
	if got["cloudcore-rss"].Value != nil {
		t.Error("an unmeasured target has a value")
	}
	r.EdgecoreIdle = nil
	Evaluate(r)
	got = map[string]TargetResult{}
	for _, tr := range r.Targets {
		got[tr.Name] = tr
	}
	check("edgecore-idle-rss", NotMeasured, -1)
	if n := got["edgecore-idle-rss"].Note; n != "bin/edgecore missing" {
		t.Errorf("edgecore note %q", n)
	}
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	if err := WriteText(&b, sample()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"commit 0123456789ab (dirty), 2 cores",
		"13ms / 120ms", // 10000 nodes dispatch
		"10000 in 20s", // 10000 nodes enrolled
		"100 nodes, createToRunning: watch failed",
		"twin: not available",
		"pod dispatch p99 at 1000 nodes",
		"edgecore binary RSS, one node idle (runtime fake): 22.0 MB",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
	// Two tables, each a header and one row per scale aligned to it.
	lines := strings.Split(out, "\n")
	tables := 0
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), "nodes") {
			tables++
			for _, row := range lines[i+1 : i+4] {
				if utf8.RuneCountInString(row) != utf8.RuneCountInString(l) {
					t.Errorf("row %q not aligned with header %q", row, l)
				}
			}
		}
	}
	if tables != 2 {
		t.Errorf("%d scale tables, want 2:\n%s", tables, out)
	}
}

func TestPlotLatencyPNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "latency.png")
	if err := PlotLatencyFile(path, sample(), 800, 500); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 800 || b.Dy() != 500 {
		t.Errorf("size %dx%d, want 800x500", b.Dx(), b.Dy())
	}
	// Something was drawn: not every pixel has the background's color.
	bg := img.At(0, 0)
	drawn := 0
	for y := 0; y < 500; y += 5 {
		for x := 0; x < 800; x += 5 {
			if img.At(x, y) != bg {
				drawn++
			}
		}
	}
	if drawn < 100 {
		t.Errorf("only %d sampled pixels differ from the background", drawn)
	}

	empty := &Report{Schema: SchemaVersion}
	if err := PlotLatencyFile(filepath.Join(t.TempDir(), "x.png"), empty, 800, 500); !errors.Is(err, ErrNothingToPlot) {
		t.Errorf("empty report: got %v, want ErrNothingToPlot", err)
	}
}

func TestReadProcOwnPID(t *testing.T) {
	p, err := ReadProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	// The Go runtime's own count of memory it got from the OS bounds RSS
	// from above, loosely (the binary's text is resident too).
	if p.RSSBytes < 1<<20 || p.RSSBytes > int64(ms.Sys)+256<<20 {
		t.Errorf("RSS %d bytes, Go runtime Sys %d", p.RSSBytes, ms.Sys)
	}
	if _, err := ReadProc(1 << 30); err == nil {
		t.Error("ReadProc of a pid that cannot exist succeeded")
	}
}

func TestSamplerSeesOwnCPUAndMemory(t *testing.T) {
	s := Sampler{PID: os.Getpid(), Every: 10 * time.Millisecond}
	var keep [][]byte
	u, err := s.Measure(t.Context(), func(ctx context.Context) error {
		// Burn CPU for at least 300ms of CPU time (the counters tick every
		// 10ms), and touch 64 MiB.
		start, _ := ReadProc(os.Getpid())
		for i := 0; i < 64; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			keep = append(keep, b)
		}
		x := 0
		for {
			for i := 0; i < 1e6; i++ {
				x ^= i * 31
			}
			now, err := ReadProc(os.Getpid())
			if err != nil {
				return err
			}
			if now.CPU-start.CPU >= 300*time.Millisecond {
				break
			}
		}
		_ = x
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(keep)
	if u.CPUSeconds < 0.3 {
		t.Errorf("CPU %.3fs, want >= 0.3s", u.CPUSeconds)
	}
	if u.CPUCores <= 0 || u.CPUCores > float64(runtime.NumCPU())+0.5 {
		t.Errorf("CPU cores %.2f out of range", u.CPUCores)
	}
	if u.Samples < 2 || u.Seconds <= 0 {
		t.Errorf("samples %d over %.3fs", u.Samples, u.Seconds)
	}
	// 64 MiB are live and touched at the end: they are resident (the
	// growth from the start may be less, if freed pages were reused).
	if u.RSSEndBytes < 64<<20 || u.RSSPeakBytes < u.RSSEndBytes {
		t.Errorf("RSS start %d, end %d, peak %d: the 64 MiB touched were not seen", u.RSSStartBytes, u.RSSEndBytes, u.RSSPeakBytes)
	}
	// RSS may fall below the start (the runtime returns freed pages).
	if u.RSSMeanBytes <= 0 || u.RSSMeanBytes > u.RSSPeakBytes {
		t.Errorf("mean %d, peak %d", u.RSSMeanBytes, u.RSSPeakBytes)
	}
}

func TestSamplerFailsWhenProcessGone(t *testing.T) {
	_, err := Sampler{PID: 1 << 30}.Run(t.Context())
	if err == nil {
		t.Error("sampling a pid that cannot exist succeeded")
	}
}

func TestParseGoBenchmarks(t *testing.T) {
	out := `goos: linux
goarch: amd64
pkg: github.com/tether-edge/tether/protocol
cpu: Some CPU
BenchmarkEncode-2   	  123456	      9876 ns/op	     123 B/op	       4 allocs/op
BenchmarkLogs
    x_test.go:10: a log line
BenchmarkLogs-2     	     100	  12.5 ns/op	  3.5 updates/s
PASS
ok  	github.com/tether-edge/tether/protocol	1.234s
pkg: github.com/tether-edge/tether/edgecore/store
BenchmarkCommit	10	100 ns/op
ok  	github.com/tether-edge/tether/edgecore/store	0.5s
`
	got, err := ParseGoBenchmarks(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []GoBenchmark{
		{Package: "github.com/tether-edge/tether/protocol", Name: "BenchmarkEncode", Procs: 2, Iterations: 123456,
			Metrics: map[string]float64{"ns/op": 9876, "B/op": 123, "allocs/op": 4}},
		{Package: "github.com/tether-edge/tether/protocol", Name: "BenchmarkLogs", Procs: 2, Iterations: 100,
			Metrics: map[string]float64{"ns/op": 12.5, "updates/s": 3.5}},
		{Package: "github.com/tether-edge/tether/edgecore/store", Name: "BenchmarkCommit", Iterations: 10,
			Metrics: map[string]float64{"ns/op": 100}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	fails, err := GoBenchFailures(strings.NewReader(out + "panic: test timed out after 5m0s\nFAIL\tgithub.com/x/y\t300.1s\n--- FAIL: BenchmarkZ\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"panic: test timed out after 5m0s", "FAIL\tgithub.com/x/y\t300.1s", "--- FAIL: BenchmarkZ"}; !reflect.DeepEqual(fails, want) {
		t.Errorf("failures %q, want %q", fails, want)
	}
	if _, err := ParseGoBenchmarks(strings.NewReader("BenchmarkBad-2 10 x ns/op\n")); err == nil {
		t.Error("a bad value parsed")
	}
}

// A fleet behind an emulated link: the IP-layer figures show in the text
// and are the ones judged.
func TestEmulatedLinkFigures(t *testing.T) {
	r := sample()
	r.Link = &Link{DelayMs: 25}
	for i := range r.Scales {
		s := &r.Scales[i]
		s.IdleLink = &Bandwidth{Seconds: 60, UplinkBitsPerSecond: 150, DownlinkBitsPerSecond: 100, Layer: "ip"}
		s.Storm.LinkBytesSent = 3 << 20
	}
	Evaluate(r)
	for _, tr := range r.Targets {
		if tr.Name == "idle-uplink" && (tr.Status != Missed || *tr.Value != 0.15 || !strings.Contains(tr.Note, "ip layer")) {
			t.Errorf("idle-uplink %+v", tr)
		}
	}
	var b bytes.Buffer
	if err := WriteText(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"behind an emulated link: 25 ms each way", "storm sent (IP)", "3.0 MiB", "0.150 / 0.100 kbit/s"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
}

func TestUnfinishedChurnIsShown(t *testing.T) {
	r := sample()
	s := r.Scale(1000)
	s.CreateToRunning.Samples = 300
	s.Churn.Error = "pods: 500 created, 300 Running: context deadline exceeded"
	var b bytes.Buffer
	if err := WriteText(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"40ms / 900ms (300 of 500)", "1000 nodes, churn of 500 pods did not finish: pods: 500 created, 300 Running"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
}

// A scale whose nodes spanned simulator processes says so; one process
// says nothing.
func TestProcessesShown(t *testing.T) {
	r := sample()
	r.Scales[len(r.Scales)-1].Processes = 2
	r.Scales[0].Processes = 1
	var b bytes.Buffer
	if err := WriteText(&b, r); err != nil {
		t.Fatal(err)
	}
	last := r.Scales[len(r.Scales)-1].Nodes
	if want := fmt.Sprintf("%d nodes in 2 simulator processes", last); !strings.Contains(b.String(), want) {
		t.Errorf("text lacks %q:\n%s", want, b.String())
	}
	if strings.Count(b.String(), "simulator processes") != 1 {
		t.Errorf("a scale in one process is shown as spanning processes:\n%s", b.String())
	}
}
