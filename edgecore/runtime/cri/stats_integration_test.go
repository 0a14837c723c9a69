//go:build integration

package cri

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/tether-edge/tether/edgecore/nodestats"
)

// The node stats handler on containerd: a busybox pod that burns CPU and
// holds 8 MB (a file in its /dev/shm, a tmpfs charged to it) shows non-zero CPU and memory in /stats/summary and
// /metrics/resource, and another node's pod on the same containerd is not
// listed.
func TestPodStatsOnContainerd(t *testing.T) {
	r := newRuntime(t, newObjects())
	other := newNodeRuntime(t, newObjects(), "edge-other")
	pod := busyboxPod("stats", `i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; head -c 8000000 /dev/zero > /dev/shm/hold; echo held; exec sleep 3600`)
	syncUntil(t, r, pod, 60*time.Second, "running", running("app"))
	otherPod := busyboxPod("stats-other", `exec sleep 3600`)
	syncUntil(t, other, otherPod, 60*time.Second, "running", running("app"))
	waitLog(t, logPath(r, pod, "app", 0), "held", 60*time.Second)

	h, err := nodestats.NewHandler(nodestats.Config{NodeName: "edge-test", Runtime: r, FsPath: r.cfg.RootDir})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != 200 {
			t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
		}
		return rec.Body.String()
	}
	get(nodestats.SummaryPath) // a first sample, for the rates
	time.Sleep(time.Second)
	var sum statsapi.Summary
	if err := json.Unmarshal([]byte(get(nodestats.SummaryPath)), &sum); err != nil {
		t.Fatal(err)
	}
	if len(sum.Pods) != 1 {
		t.Fatalf("%d pods, want this node's 1: %+v", len(sum.Pods), sum.Pods)
	}
	p := sum.Pods[0]
	if p.PodRef.Name != "stats" || p.PodRef.UID != string(pod.UID) || len(p.Containers) != 1 || p.Containers[0].Name != "app" {
		t.Fatalf("pod %+v", p)
	}
	c := p.Containers[0]
	cpu, ws := *c.CPU.UsageCoreNanoSeconds, *c.Memory.WorkingSetBytes
	if cpu == 0 || ws < 4<<20 || c.StartTime.IsZero() || *p.Memory.WorkingSetBytes != ws || c.CPU.UsageNanoCores == nil {
		t.Fatalf("container %s: cpu %d ns, working set %d bytes (want > 4 MiB), start %v, rate %v", c.Name, cpu, ws, c.StartTime, c.CPU.UsageNanoCores)
	}
	n := sum.Node
	if *n.CPU.UsageCoreNanoSeconds == 0 || *n.Memory.WorkingSetBytes == 0 || *n.Fs.CapacityBytes == 0 ||
		n.Runtime == nil || n.Runtime.ImageFs == nil || n.Runtime.ImageFs.UsedBytes == nil {
		t.Fatalf("node: cpu %d ns, working set %d, fs capacity %d, image fs %+v", *n.CPU.UsageCoreNanoSeconds,
			*n.Memory.WorkingSetBytes, *n.Fs.CapacityBytes, n.Runtime)
	}
	// (containerd updates its snapshotter's usage in the background: the
	// image fs may still say 0 bytes for a new containerd.)
	t.Logf("summary: pod %s/%s cpu %.3fs (%d nanocores now), working set %.1f MiB; node cpu %.0fs, working set %.0f MiB, image fs %.1f MiB",
		p.PodRef.Namespace, p.PodRef.Name, float64(cpu)/1e9, *c.CPU.UsageNanoCores, float64(ws)/(1<<20),
		float64(*n.CPU.UsageCoreNanoSeconds)/1e9, float64(*n.Memory.WorkingSetBytes)/(1<<20), float64(*n.Runtime.ImageFs.UsedBytes)/(1<<20))

	res := get(nodestats.ResourcePath)
	for _, want := range []string{
		`container_cpu_usage_seconds_total{container="app",namespace="default",pod="stats"} `,
		`container_memory_working_set_bytes{container="app",namespace="default",pod="stats"} `,
		`container_start_time_seconds{container="app",namespace="default",pod="stats"} `,
		`pod_cpu_usage_seconds_total{namespace="default",pod="stats"} `,
		"node_cpu_usage_seconds_total ", "node_memory_working_set_bytes ", "resource_scrape_error 0",
	} {
		if !strings.Contains(res, "\n"+want) {
			t.Errorf("/metrics/resource lacks %q:\n%s", want, res)
		}
	}
	if strings.Contains(res, "stats-other") {
		t.Errorf("/metrics/resource lists another node's pod:\n%s", res)
	}
	for _, line := range strings.Split(res, "\n") {
		if strings.HasPrefix(line, "container_") && strings.Contains(line, `pod="stats"`) {
			t.Logf("%s", line)
		}
	}
}
