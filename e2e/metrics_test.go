//go:build integration

package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tether-edge/tether/childproc"
)

// metricsServerBin is bin/metrics-server, which hack/kube-binaries.sh
// builds (make kube-binaries, a step of make test-integration).
func metricsServerBin(t *testing.T) string {
	dir := os.Getenv("TETHER_BIN_DIR")
	if dir == "" {
		dir = filepath.Join("..", "bin")
	}
	p, err := filepath.Abs(filepath.Join(dir, "metrics-server"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("metrics-server: %v (run make kube-binaries)", err)
	}
	return p
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// podMetrics is the part of metrics.k8s.io/v1beta1 PodMetrics the test
// reads.
type podMetrics struct {
	Containers []struct {
		Name  string                       `json:"name"`
		Usage map[string]resource.Quantity `json:"usage"`
	} `json:"containers"`
}

// TestCRIMetricsServer runs the real metrics-server (built from the module
// proxy) against the edge's stats handler (EdgeCore.Stats) served on
// loopback over TLS, as its kubelet port: the metrics API shows the edge
// pod's CPU and memory. The handler is served here directly; through the
// tunnel it is the node's kubelet-style server that serves it.
func TestCRIMetricsServer(t *testing.T) {
	bin := metricsServerBin(t)
	ns := namespace(t)
	c := startCloud(t)
	e := newCRIEdge(t, c, "e2e-cri-metrics")
	e.start()
	pod := createPod(t, criPod(t, ns, "busy", e.name,
		`head -c 8000000 /dev/zero > /dev/shm/hold; while :; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.2; done`))
	waitPod(t, ns, pod.Name, 90*time.Second, "Running and Ready", runningAndReady)

	kubelet := httptest.NewUnstartedServer(e.ec.Stats)
	kubelet.EnableHTTP2 = false
	kubelet.StartTLS()
	t.Cleanup(kubelet.Close)
	kport := kubelet.Listener.Addr().(*net.TCPAddr).Port

	port := freePort(t)
	dir := t.TempDir()
	cmd := exec.Command(bin,
		"--secure-port="+strconv.Itoa(port), "--bind-address=127.0.0.1", "--cert-dir="+dir,
		"--kubeconfig="+cp.Kubeconfig(), "--authentication-kubeconfig="+cp.Kubeconfig(),
		"--authorization-kubeconfig="+cp.Kubeconfig(), "--authentication-tolerate-lookup-failure",
		"--kubelet-port="+strconv.Itoa(kport), "--kubelet-insecure-tls",
		"--kubelet-preferred-address-types=InternalIP", "--metric-resolution=10s", "--kubelet-request-timeout=5s",
		"--node-selector=kubernetes.io/hostname="+e.name, "-v=2")
	proc, err := childproc.Start(cmd, childproc.Options{Log: filepath.Join(dir, "metrics-server.log")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		proc.Stop(5 * time.Second)
		if t.Failed() {
			b, _ := os.ReadFile(proc.Log())
			t.Logf("metrics-server log:\n%s", tailString(string(b), 4000))
		}
	})

	token := cp.RESTConfig().BearerToken
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // metrics-server's self-signed certificate, on loopback
	// getMetrics reads path of the metrics API from metrics-server into v.
	getMetrics := func(path string, v any) error {
		if proc.Exited() {
			t.Fatalf("metrics-server exited: %v", proc.Err())
		}
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet,
			fmt.Sprintf("https://127.0.0.1:%d/apis/metrics.k8s.io/v1beta1/%s", port, path), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %s", resp.Status, b)
		}
		return json.Unmarshal(b, v)
	}
	var pm podMetrics
	eventually(t, 90*time.Second, "pod metrics from metrics-server", func() (bool, error) {
		pm = podMetrics{}
		if err := getMetrics(fmt.Sprintf("namespaces/%s/pods/%s", ns, pod.Name), &pm); err != nil {
			return false, err
		}
		return len(pm.Containers) == 1, fmt.Errorf("containers %+v", pm.Containers)
	})
	var nm struct {
		Usage map[string]resource.Quantity `json:"usage"`
	}
	if err := getMetrics("nodes/"+e.name, &nm); err != nil {
		t.Fatalf("node metrics: %v", err)
	}
	ncpu, nmem := nm.Usage["cpu"], nm.Usage["memory"]
	t.Logf("metrics-server: node %s: cpu %s, memory %s", e.name, ncpu.String(), nmem.String())
	if ncpu.IsZero() || nmem.IsZero() {
		t.Errorf("node metrics: cpu %s memory %s, want both non-zero", ncpu.String(), nmem.String())
	}
	cpu, mem := pm.Containers[0].Usage["cpu"], pm.Containers[0].Usage["memory"]
	t.Logf("metrics-server: pod %s/%s container %s: cpu %s, memory %s", ns, pod.Name, pm.Containers[0].Name, cpu.String(), mem.String())
	if pm.Containers[0].Name != "main" || cpu.IsZero() || mem.Value() < 4<<20 {
		t.Fatalf("pod metrics: container %s cpu %s memory %s: want non-zero cpu and at least 4Mi", pm.Containers[0].Name, cpu.String(), mem.String())
	}
}
