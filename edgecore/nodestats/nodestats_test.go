package nodestats

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

var t0 = time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)

// fakeProc writes a procfs with the given CPU ticks (user, system) and
// memory in kB.
func fakeProc(t *testing.T, dir string, user, system int) {
	t.Helper()
	stat := "cpu  " + strconv.Itoa(user) + " 0 " + strconv.Itoa(system) + " 9000 50 0 0 0 0 0\ncpu0 1 2 3 4\nbtime 1764990000\n"
	mem := "MemTotal:       2000000 kB\nMemFree:         500000 kB\nMemAvailable:   1200000 kB\nInactive(file):  300000 kB\n"
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "meminfo"), []byte(mem), 0o644); err != nil {
		t.Fatal(err)
	}
}

type fakeRuntime struct {
	pods []Pod
	err  error
}

func (f *fakeRuntime) PodStats(context.Context) ([]Pod, error) { return f.pods, f.err }
func (f *fakeRuntime) ImageFs(context.Context) (FsUsage, error) {
	return FsUsage{At: t0, UsedBytes: 1 << 20, InodesUsed: 42}, nil
}

func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

// parseMetrics reads Prometheus text into "name{labels}" -> value, checking
// each family's TYPE comes first.
func parseMetrics(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	typed := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			typed[strings.Fields(f)[0]] = true
			continue
		}
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		if !typed[name] {
			t.Fatalf("series before its TYPE: %q", line)
		}
		var f []string
		if strings.Contains(line, "{") {
			f = strings.Fields(line[strings.LastIndex(line, "}")+1:])
		} else {
			f = strings.Fields(line)[1:]
		}
		if len(f) < 1 || len(f) > 2 {
			t.Fatalf("bad series %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			t.Fatalf("bad value in %q: %v", line, err)
		}
		key := line[:len(line)-len(strings.Join(f, " "))-1]
		out[key] = v
	}
	return out
}

func TestResourceAndSummary(t *testing.T) {
	proc := t.TempDir()
	fakeProc(t, proc, 1000, 500)
	now := t0
	rt := &fakeRuntime{pods: []Pod{{Namespace: "shop", Name: "web", UID: "uid-1", StartTime: t0.Add(-time.Hour),
		Containers: []Container{
			{Name: "app", StartTime: t0.Add(-time.Hour), At: t0, CPUNanos: 2_500_000_000, MemoryWorkingSet: 10 << 20, MemoryUsage: 12 << 20},
			{Name: "sidecar", StartTime: t0.Add(-time.Hour), At: t0, CPUNanos: 500_000_000, MemoryWorkingSet: 2 << 20},
		}}}}
	h, err := NewHandler(Config{NodeName: "edge-1", Runtime: rt, ProcDir: proc, FsPath: t.TempDir(),
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	rec := get(t, h, ResourcePath)
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("%d %s", rec.Code, rec.Header())
	}
	m := parseMetrics(t, rec.Body.String())
	want := map[string]float64{
		`container_cpu_usage_seconds_total{container="app",namespace="shop",pod="web"}`:     2.5,
		`container_memory_working_set_bytes{container="app",namespace="shop",pod="web"}`:    10 << 20,
		`container_cpu_usage_seconds_total{container="sidecar",namespace="shop",pod="web"}`: 0.5,
		`container_start_time_seconds{container="app",namespace="shop",pod="web"}`:          float64(t0.Add(-time.Hour).Unix()),
		`pod_cpu_usage_seconds_total{namespace="shop",pod="web"}`:                           3,
		`pod_memory_working_set_bytes{namespace="shop",pod="web"}`:                          12 << 20,
		// (1000+500) ticks of 10ms; idle and iowait left out.
		`node_cpu_usage_seconds_total`: 15,
		// 2000000-500000 kB used, less 300000 kB of inactive file pages.
		`node_memory_working_set_bytes`: 1_200_000 * 1024,
		`resource_scrape_error`:         0,
	}
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}

	// A second request computes rates since the first.
	fakeProc(t, proc, 1100, 500) // 1s of CPU more
	now = t0.Add(10 * time.Second)
	for i := range rt.pods[0].Containers {
		c := &rt.pods[0].Containers[i]
		c.At = now
	}
	rt.pods[0].Containers[0].CPUNanos += 5_000_000_000 // half a core over 10s
	rec = get(t, h, SummaryPath)
	if rec.Code != 200 {
		t.Fatalf("summary: %d %s", rec.Code, rec.Body)
	}
	var sum statsapi.Summary
	if err := json.Unmarshal(rec.Body.Bytes(), &sum); err != nil {
		t.Fatal(err)
	}
	n := sum.Node
	if n.NodeName != "edge-1" || *n.CPU.UsageCoreNanoSeconds != 16e9 || *n.CPU.UsageNanoCores != 1e8 ||
		*n.Memory.WorkingSetBytes != 1_200_000*1024 || *n.Memory.AvailableBytes != 1_200_000*1024 ||
		n.Fs == nil || *n.Fs.CapacityBytes == 0 || *n.Runtime.ImageFs.UsedBytes != 1<<20 || n.StartTime.Unix() != 1764990000 {
		t.Fatalf("node %+v", n)
	}
	if len(sum.Pods) != 1 || len(sum.Pods[0].Containers) != 2 {
		t.Fatalf("pods %+v", sum.Pods)
	}
	p := sum.Pods[0]
	app := p.Containers[0]
	if p.PodRef != (statsapi.PodReference{Name: "web", Namespace: "shop", UID: "uid-1"}) || app.Name != "app" ||
		*app.CPU.UsageNanoCores != 5e8 || *app.Memory.WorkingSetBytes != 10<<20 || *p.CPU.UsageNanoCores != 5e8 ||
		*p.CPU.UsageCoreNanoSeconds != 8e9 || *p.Memory.WorkingSetBytes != 12<<20 {
		t.Fatalf("pod %+v, app %+v", p, app)
	}

	// Only cpu and memory: no file systems.
	rec = get(t, h, SummaryPath+"?only_cpu_and_memory=true")
	sum = statsapi.Summary{}
	if err := json.Unmarshal(rec.Body.Bytes(), &sum); err != nil || sum.Node.Fs != nil || sum.Node.Runtime != nil {
		t.Fatalf("only_cpu_and_memory: %v %+v", err, sum.Node)
	}
}

// The runtime failing: the node's metrics and resource_scrape_error 1, as
// the kubelet; the summary fails.
func TestRuntimeError(t *testing.T) {
	proc := t.TempDir()
	fakeProc(t, proc, 1000, 500)
	h, err := NewHandler(Config{NodeName: "edge-1", Runtime: &fakeRuntime{err: errors.New("containerd is down")}, ProcDir: proc})
	if err != nil {
		t.Fatal(err)
	}
	rec := get(t, h, ResourcePath)
	m := parseMetrics(t, rec.Body.String())
	if rec.Code != 200 || m["resource_scrape_error"] != 1 || m["node_cpu_usage_seconds_total"] != 15 {
		t.Fatalf("%d %v", rec.Code, m)
	}
	if rec := get(t, h, SummaryPath); rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "containerd") {
		t.Fatalf("summary with the runtime down: %d %q", rec.Code, rec.Body)
	}
}

func TestPathsAndMethods(t *testing.T) {
	proc := t.TempDir()
	fakeProc(t, proc, 1, 1)
	h, err := NewHandler(Config{NodeName: "edge-1", ProcDir: proc})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/", "/stats", "/stats/summary/x", "/metrics", "/metrics/cadvisor", "/stats/../metrics/resource"} {
		if rec := get(t, h, p); rec.Code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, SummaryPath, strings.NewReader("{}")))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", rec.Code)
	}
	if _, err := NewHandler(Config{}); err == nil {
		t.Error("no node name accepted")
	}
	// A procfs that cannot be read: 500, the path not shown.
	h, _ = NewHandler(Config{NodeName: "edge-1", ProcDir: filepath.Join(proc, "missing")})
	if rec := get(t, h, ResourcePath); rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), proc) {
		t.Errorf("no procfs: %d %q", rec.Code, rec.Body)
	}
}
