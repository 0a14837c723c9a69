//go:build integration

package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/tether-edge/tether/controlplane"
	"github.com/tether-edge/tether/protocol"
)

// The edge's /stats/summary and /metrics/resource through the tunnel, as
// the API server (or metrics-server) reaches them through cloudcore's
// kubelet proxy: the pod's CPU and memory; a user without nodes/stats or
// nodes/metrics rights is refused before the edge.
func TestStatsThroughTunnel(t *testing.T) {
	c := startStreamCloud(t, nil)
	node := "str-stats"
	startStreamEdge(t, c, node)
	ns := namespace(t)
	runningPod(t, criPod(t, ns, "busy", node, `head -c 8000000 /dev/zero > /dev/shm/hold; while :; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.2; done`))
	apiserver := clusterCert(t, controlplane.KubeletClientUser)
	hc := proxyClient(t, c, node, protocol.KubeletPort, apiserver)
	code, body := get(t, hc, "/stats/summary")
	if code != 200 {
		t.Fatalf("/stats/summary: %d %.300q", code, body)
	}
	var sum statsapi.Summary
	if err := json.Unmarshal([]byte(body), &sum); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, p := range sum.Pods {
		if p.PodRef.Namespace == ns && p.PodRef.Name == "busy" && len(p.Containers) == 1 {
			c := p.Containers[0]
			t.Logf("summary through the tunnel: pod %s/busy cpu %d ns, working set %d bytes", ns, *c.CPU.UsageCoreNanoSeconds, *c.Memory.WorkingSetBytes)
			found = *c.CPU.UsageCoreNanoSeconds > 0 && *c.Memory.WorkingSetBytes > 4<<20
		}
	}
	if !found || sum.Node.NodeName != node {
		t.Fatalf("summary: %.500s", body)
	}
	code, body = get(t, hc, "/metrics/resource")
	if code != 200 || !strings.Contains(body, `container_cpu_usage_seconds_total{container="main",namespace="`+ns+`",pod="busy"}`) {
		t.Fatalf("/metrics/resource: %d %.500s", code, body)
	}
	if code, body := get(t, proxyClient(t, c, node, protocol.KubeletPort, clusterCert(t, "no-rights")), "/metrics/resource"); code != 403 {
		t.Fatalf("/metrics/resource by a user without nodes/metrics: %d %.200q", code, body)
	}
}
