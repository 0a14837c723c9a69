//go:build integration

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/edgecore/nodestatus"
)

// readyBound is how long after containerd stops the API server must show
// the node Ready=False: two periods of the node monitor (5s by default: one
// to notice, one for the CRI call to time out) and 5s for the status to go
// up through the hub and its status writer.
const readyBound = 15 * time.Second

// nodeReady returns the node's Ready condition as the API server has it.
func nodeReady(t *testing.T, name string) (corev1.NodeCondition, *corev1.Node) {
	t.Helper()
	n, err := client.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		return corev1.NodeCondition{}, nil
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c, n
		}
	}
	return corev1.NodeCondition{}, n
}

// waitReady waits until the node's Ready condition has status and reason
// in the API server, and returns how long that took and the condition.
func waitReady(t *testing.T, name string, status corev1.ConditionStatus, reason string, timeout time.Duration) (time.Duration, corev1.NodeCondition) {
	t.Helper()
	start := time.Now()
	var c corev1.NodeCondition
	eventually(t, timeout, fmt.Sprintf("node %s Ready=%s (%s)", name, status, reason), func() (bool, error) {
		c, _ = nodeReady(t, name)
		if c.Status != status || c.Reason != reason {
			return false, fmt.Errorf("Ready=%s %s %q", c.Status, c.Reason, c.Message)
		}
		return true, nil
	})
	return time.Since(start), c
}

// TestNodeNotReadyWhileContainerdDown: containerd killed under a running
// edge makes the node Ready=False with reason ContainerRuntimeDown in the
// API server within readyBound; restarted, the node is Ready again. The
// node reports no kube-proxy version.
func TestNodeNotReadyWhileContainerdDown(t *testing.T) {
	c := startCloud(t)
	ctd := containerd(t)
	e := newCRIEdge(t, c, "e2e-health")
	e.start()
	// Whatever happens, containerd runs again for the tests after this one
	// (registered last: runs before the edge's cleanup kills its pods).
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := ctd.Restart(ctx); err != nil && err.Error() != "critest: containerd still runs" {
			t.Errorf("restart containerd: %v", err)
		}
	})
	_, ready := waitReady(t, e.name, corev1.ConditionTrue, nodestatus.ReasonReady, 60*time.Second)
	if _, n := nodeReady(t, e.name); n.Status.NodeInfo.KubeProxyVersion != "" {
		t.Errorf("node reports kube-proxy %q, none runs", n.Status.NodeInfo.KubeProxyVersion)
	}

	if err := ctd.Kill(); err != nil {
		t.Fatal(err)
	}
	took, down := waitReady(t, e.name, corev1.ConditionFalse, nodestatus.ReasonRuntimeDown, time.Minute)
	t.Logf("containerd killed: Ready=False (%s: %q) in the API server after %s (bound %s)", down.Reason, down.Message,
		took.Round(10*time.Millisecond), readyBound)
	if took > readyBound {
		t.Errorf("Ready=False after %s, want within %s", took, readyBound)
	}
	if !down.LastTransitionTime.After(ready.LastTransitionTime.Time) {
		t.Errorf("transition time %s not after the Ready one %s", down.LastTransitionTime, ready.LastTransitionTime)
	}

	// The transition time stays while the status does.
	time.Sleep(6 * time.Second) // more than a monitor period
	if again, _ := nodeReady(t, e.name); !again.LastTransitionTime.Equal(&down.LastTransitionTime) || again.Status != corev1.ConditionFalse {
		t.Errorf("Ready moved while containerd stayed down: %+v, was %+v", again, down)
	}

	start := time.Now()
	if err := ctd.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	restarted := time.Since(start)
	took, _ = waitReady(t, e.name, corev1.ConditionTrue, nodestatus.ReasonReady, time.Minute)
	t.Logf("containerd restarted in %s: Ready=True in the API server %s later", restarted.Round(10*time.Millisecond),
		took.Round(10*time.Millisecond))
}
