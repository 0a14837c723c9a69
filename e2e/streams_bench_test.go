//go:build integration

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
)

// TestStreamLatency measures, through the real API server, cloudcore's
// kubelet proxy and the tunnel, the time to the first byte of `kubectl
// logs` and the round trip of an exec (echo), over TETHER_BENCH_STREAMS
// runs each, and prints p50 and p99. It is a measurement, run by `make
// bench` (skipped unless TETHER_BENCH_STREAMS is set); it asserts nothing
// about time.
func TestStreamLatency(t *testing.T) {
	var runs int
	if _, err := fmt.Sscan(os.Getenv("TETHER_BENCH_STREAMS"), &runs); err != nil || runs < 1 {
		t.Skip("set TETHER_BENCH_STREAMS=100 to measure")
	}
	c := startStreamCloud(t, nil)
	node := "str-bench"
	startStreamEdge(t, c, node)
	ns := namespace(t)
	runningPod(t, criPod(t, ns, "talker", node, talker))

	firstByte := make([]time.Duration, 0, runs)
	for range runs {
		start := time.Now()
		rc, err := client.CoreV1().Pods(ns).GetLogs("talker", &corev1.PodLogOptions{Follow: true}).Stream(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(rc, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		firstByte = append(firstByte, time.Since(start))
		rc.Close()
	}
	exec := make([]time.Duration, 0, runs)
	for range runs {
		req := client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name("talker").SubResource("exec").
			VersionedParams(&corev1.PodExecOptions{Container: "main", Command: []string{"echo", "x"}, Stdout: true, Stderr: true},
				scheme.ParameterCodec)
		start := time.Now()
		ex, err := remotecommand.NewSPDYExecutor(cp.RESTConfig(), "POST", req.URL())
		if err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		if err := ex.StreamWithContext(t.Context(), remotecommand.StreamOptions{Stdout: &out, Stderr: &errb}); err != nil {
			t.Fatalf("exec: %v %s", err, errb.String())
		}
		exec = append(exec, time.Since(start))
		if out.String() != "x\n" {
			t.Fatalf("exec echo x: %q", out.String())
		}
	}
	report := fmt.Sprintf("streams: %d runs each through the API server, cloudcore's kubelet proxy and the tunnel\n"+
		"  kubectl logs, time to first byte: p50 %s  p99 %s\n  exec echo, round trip:            p50 %s  p99 %s\n",
		runs, pct(firstByte, 50), pct(firstByte, 99), pct(exec, 50), pct(exec, 99))
	fmt.Print(report)
	if out := os.Getenv("TETHER_BENCH_STREAMS_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			t.Error(err)
		}
	}
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))].Round(100 * time.Microsecond)
}
