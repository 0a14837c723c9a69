//go:build integration

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/controlplane"
	"github.com/tether-edge/tether/protocol"
)

// hostAddress gives this host an address of its own for the test, one of
// 192.0.2.0/24 (TEST-NET-1, never routed) on a bridge made for it (the
// kernel here has no dummy interfaces), removed at cleanup. The API server
// refuses loopback endpoints, so an aggregated API server on this host
// needs such an address; it stays in the host's local route table.
func hostAddress(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("making an address of the host needs root")
	}
	pid := os.Getpid()
	link := fmt.Sprintf("tms%d", pid%1000000)
	addr := fmt.Sprintf("192.0.2.%d", 2+pid%250)
	ip := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	exec.Command("ip", "link", "del", link).Run() // left by a killed run
	if err := ip("link", "add", link, "type", "bridge"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ip("link", "del", link); err != nil {
			t.Error(err)
		}
	})
	if err := ip("addr", "add", addr+"/32", "dev", link); err != nil {
		t.Fatal(err)
	}
	if err := ip("link", "set", link, "up"); err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestKubectlTop: kubectl top node and kubectl top pod for an edge node,
// through the real API server's aggregation layer: APIService
// v1beta1.metrics.k8s.io, reached through the egress proxy (cloudcore
// dials it directly), to the real metrics-server, which runs with its
// upstream RBAC only and scrapes the edge through cloudcore's kubelet
// proxy (its TCP port, HTTPS_PROXY) and the tunnel with its own
// ServiceAccount token. A user without rights on metrics.k8s.io is
// refused by the API server; a caller of metrics-server itself who forges
// the front proxy's X-Remote-User header is refused by metrics-server,
// without a client certificate or with one of the cluster's client CA
// named as the front proxy.
func TestKubectlTop(t *testing.T) {
	needKubectl(t)
	addr := hostAddress(t)
	proxyAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	c := startStreamCloud(t, func(cfg *cloudcore.Config) { cfg.KubeletProxyAddr = proxyAddr })
	node := "str-top"
	startStreamEdge(t, c, node)
	ns := namespace(t)
	runningPod(t, criPod(t, ns, "busy", node, busyScript))

	caFile := filepath.Join(t.TempDir(), "cloudcore-ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cc.CA.Cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	ms, err := cp.StartMetricsServer(t.Context(), controlplane.MetricsServerOptions{
		Address: addr,
		Args: []string{"--kubelet-port=" + strconv.Itoa(protocol.KubeletPort), "--kubelet-certificate-authority=" + caFile,
			"--kubelet-preferred-address-types=Hostname", "--node-selector=kubernetes.io/hostname=" + node,
			"--metric-resolution=10s", "--kubelet-request-timeout=5s", "-v=2"},
		Env: []string{"HTTPS_PROXY=http://" + proxyAddr, "NO_PROXY=127.0.0.1,localhost"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Before the cloud's cleanup: the API server reaches metrics-server
	// through cloudcore, and an APIService it cannot reach fails
	// discovery for the other tests.
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(cp.LogPath(controlplane.MetricsServerComponent))
			t.Logf("metrics-server log:\n%s", tailString(string(b), 4000))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := ms.Stop(ctx); err != nil {
			t.Error(err)
		}
	})

	began := time.Now()
	var podLine, nodeLine []string
	eventually(t, 2*time.Minute, "kubectl top pod", func() (bool, error) {
		out, err := kubectl(t, nil, "top", "pod", "-n", ns, "--no-headers")
		if err != nil {
			return false, fmt.Errorf("%v: %s", err, out)
		}
		podLine = strings.Fields(out)
		return len(podLine) == 3 && podLine[0] == "busy", fmt.Errorf("output %q", out)
	})
	t.Logf("kubectl top pod -n %s: %q (%s after metrics-server started)", ns, podLine, time.Since(began).Round(time.Second))
	cpu, cerr := resource.ParseQuantity(podLine[1])
	mem, merr := resource.ParseQuantity(podLine[2])
	if cerr != nil || merr != nil || cpu.IsZero() || mem.Value() < 4<<20 {
		t.Fatalf("kubectl top pod: %q, want non-zero CPU and at least 4Mi", podLine)
	}
	out := mustKubectl(t, nil, "top", "node", node, "--no-headers")
	nodeLine = strings.Fields(out)
	t.Logf("kubectl top node %s: %q", node, nodeLine)
	if len(nodeLine) != 5 || nodeLine[0] != node || nodeLine[1] == "0m" || nodeLine[3] == "0Mi" || nodeLine[1] == "<unknown>" {
		t.Fatalf("kubectl top node: %q", out)
	}

	// A user without rights on metrics.k8s.io: the API server refuses.
	for _, args := range [][]string{
		{"top", "pod", "-n", ns, "--as", "no-rights"},
		{"get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/" + node, "--as", "no-rights"},
	} {
		if out, err := kubectl(t, nil, args...); err == nil || !strings.Contains(strings.ToLower(out), "forbidden") {
			t.Fatalf("kubectl %s: %v %q, want forbidden", strings.Join(args, " "), err, out)
		}
	}

	// Straight to metrics-server with the front proxy's headers forged.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cp.CACert())
	forged := func(cert *tls.Certificate) (int, string) {
		tc := &tls.Config{RootCAs: roots, ServerName: "metrics-server.kube-system.svc"}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, Proxy: nil}}
		req, _ := http.NewRequest("GET", ms.URL()+"/apis/metrics.k8s.io/v1beta1/namespaces/"+ns+"/pods", nil)
		req.Header.Set("X-Remote-User", "tether-admin")
		req.Header.Set("X-Remote-Group", "system:masters")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, string(b)
	}
	code, body := forged(nil)
	t.Logf("metrics-server, forged X-Remote-User without a client certificate: %d %.200q", code, body)
	if code != 401 && (code != 403 || !strings.Contains(body, "system:anonymous")) {
		t.Fatalf("metrics-server, X-Remote-User without a client certificate: %d %.300q, want 401 or 403", code, body)
	}
	code, body = forged(clusterCert(t, controlplane.FrontProxyClientUser))
	t.Logf("metrics-server, forged X-Remote-User with a cluster client certificate: %d %.200q", code, body)
	// Taken for the certificate's own name, the header ignored.
	if code != 403 || !strings.Contains(body, `User \"`+controlplane.FrontProxyClientUser+`\"`) {
		t.Fatalf("metrics-server, X-Remote-User with a cluster client certificate named %s: %d %.300q, want 403",
			controlplane.FrontProxyClientUser, code, body)
	}
}
