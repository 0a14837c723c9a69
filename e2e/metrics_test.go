//go:build integration

package e2e

import (
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
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
	"github.com/tether-edge/tether/protocol"
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

// metricsServer is a running metrics-server.
type metricsServer struct {
	t    *testing.T
	port int
	proc *childproc.Process
	hc   *http.Client
}

// startMetricsServer runs bin/metrics-server against the control plane,
// scraping only node, with the extra flags and environment.
func startMetricsServer(t *testing.T, node string, env []string, flags ...string) *metricsServer {
	bin := metricsServerBin(t)
	port := freePort(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, append([]string{
		"--secure-port=" + strconv.Itoa(port), "--bind-address=127.0.0.1", "--cert-dir=" + dir,
		"--kubeconfig=" + cp.Kubeconfig(), "--authentication-kubeconfig=" + cp.Kubeconfig(),
		"--authorization-kubeconfig=" + cp.Kubeconfig(), "--authentication-tolerate-lookup-failure",
		"--metric-resolution=10s", "--kubelet-request-timeout=5s",
		"--node-selector=kubernetes.io/hostname=" + node, "-v=2"}, flags...)...)
	cmd.Env = append(os.Environ(), env...)
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
	return &metricsServer{t: t, port: port, proc: proc, hc: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}} // metrics-server's self-signed certificate, on loopback
}

// get reads path of the metrics API (metrics.k8s.io/v1beta1) from
// metrics-server into v, as the cluster's admin.
func (m *metricsServer) get(path string, v any) error {
	if m.proc.Exited() {
		m.t.Fatalf("metrics-server exited: %v", m.proc.Err())
	}
	req, _ := http.NewRequestWithContext(m.t.Context(), http.MethodGet,
		fmt.Sprintf("https://127.0.0.1:%d/apis/metrics.k8s.io/v1beta1/%s", m.port, path), nil)
	req.Header.Set("Authorization", "Bearer "+cp.RESTConfig().BearerToken)
	resp, err := m.hc.Do(req)
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

// checkMetrics waits for the pod's metrics and checks them and the node's.
func (m *metricsServer) checkMetrics(ns, pod, node string) {
	t := m.t
	var pm podMetrics
	eventually(t, 90*time.Second, "pod metrics from metrics-server", func() (bool, error) {
		pm = podMetrics{}
		if err := m.get(fmt.Sprintf("namespaces/%s/pods/%s", ns, pod), &pm); err != nil {
			return false, err
		}
		return len(pm.Containers) == 1, fmt.Errorf("containers %+v", pm.Containers)
	})
	var nm struct {
		Usage map[string]resource.Quantity `json:"usage"`
	}
	if err := m.get("nodes/"+node, &nm); err != nil {
		t.Fatalf("node metrics: %v", err)
	}
	ncpu, nmem := nm.Usage["cpu"], nm.Usage["memory"]
	t.Logf("metrics-server: node %s: cpu %s, memory %s", node, ncpu.String(), nmem.String())
	if ncpu.IsZero() || nmem.IsZero() {
		t.Errorf("node metrics: cpu %s memory %s, want both non-zero", ncpu.String(), nmem.String())
	}
	cpu, mem := pm.Containers[0].Usage["cpu"], pm.Containers[0].Usage["memory"]
	t.Logf("metrics-server: pod %s/%s container %s: cpu %s, memory %s", ns, pod, pm.Containers[0].Name, cpu.String(), mem.String())
	if pm.Containers[0].Name != "main" || cpu.IsZero() || mem.Value() < 4<<20 {
		t.Fatalf("pod metrics: container %s cpu %s memory %s: want non-zero cpu and at least 4Mi", pm.Containers[0].Name, cpu.String(), mem.String())
	}
}

// busyScript holds 8 MB (a file in the pod's /dev/shm, a tmpfs charged to
// its container) and burns some CPU.
const busyScript = `head -c 8000000 /dev/zero > /dev/shm/hold; while :; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.2; done`

// TestCRIMetricsServer runs the real metrics-server (built from the module
// proxy) against the edge's stats handler (EdgeCore.Stats) served on
// loopback over TLS, as its kubelet port: the metrics API shows the edge
// pod's CPU and memory, and the node's.
func TestCRIMetricsServer(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := newCRIEdge(t, c, "e2e-cri-metrics")
	e.start()
	pod := createPod(t, criPod(t, ns, "busy", e.name, busyScript))
	waitPod(t, ns, pod.Name, 90*time.Second, "Running and Ready", runningAndReady)

	kubelet := httptest.NewUnstartedServer(e.ec.Stats)
	kubelet.EnableHTTP2 = false
	kubelet.StartTLS()
	t.Cleanup(kubelet.Close)
	kport := kubelet.Listener.Addr().(*net.TCPAddr).Port

	ms := startMetricsServer(t, e.name, nil, "--kubelet-port="+strconv.Itoa(kport), "--kubelet-insecure-tls",
		"--kubelet-preferred-address-types=InternalIP")
	ms.checkMetrics(ns, pod.Name, e.name)
}

// TestMetricsServerThroughTunnel: metrics-server scrapes the edge node the
// way the API server reaches it, through cloudcore's kubelet proxy (a
// CONNECT to <node name>:10250 on the egress socket, relayed here from a
// loopback port for metrics-server's HTTPS_PROXY) and the tunnel, with its
// own credentials (the admin's token, checked by the proxy with a
// TokenReview and a SubjectAccessReview on nodes/metrics): the metrics API
// shows the edge pod's CPU and memory.
func TestMetricsServerThroughTunnel(t *testing.T) {
	c := startStreamCloud(t, nil)
	node := "str-metrics"
	startStreamEdge(t, c, node)
	ns := namespace(t)
	pod := runningPod(t, criPod(t, ns, "busy", node, busyScript))

	// A loopback HTTP proxy port that relays each connection, CONNECT
	// request included, to the egress socket.
	relay, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	go func() {
		for {
			in, err := relay.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("unix", egressSocket)
			if err != nil {
				in.Close()
				continue
			}
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	// The node's kubelet certificate is cloudcore's, for the node's name.
	caFile := filepath.Join(t.TempDir(), "cloudcore-ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cc.CA.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	ms := startMetricsServer(t, node,
		[]string{"HTTPS_PROXY=http://" + relay.Addr().String(), "NO_PROXY=127.0.0.1,localhost"},
		"--kubelet-port="+strconv.Itoa(protocol.KubeletPort), "--kubelet-certificate-authority="+caFile,
		"--kubelet-preferred-address-types=Hostname")
	ms.checkMetrics(ns, pod.Name, node)
}
