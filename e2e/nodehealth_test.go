//go:build integration

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/edgecore/nodestatus"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
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

// TestDiskPressureEvictsBestEffortNotCritical: the edge's data directory
// on a 64 MiB tmpfs, filled past nodefs.available<10%: the API server
// shows DiskPressure=True; image GC frees nothing (every image was first
// seen less than 2m ago), so the BestEffort pod is evicted (Failed,
// reason Evicted, with the message), and the system-node-critical pod
// keeps running.
func TestDiskPressureEvictsBestEffortNotCritical(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := newCRIEdge(t, c, "e2e-pressure")
	data := t.TempDir()
	if err := syscall.Mount("tmpfs", data, "tmpfs", 0, "size=64m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(data, syscall.MNT_DETACH) })
	e.tweak = func(cfg *edgecore.Config) { cfg.DataDir = data }
	e.start()
	waitReady(t, e.name, corev1.ConditionTrue, nodestatus.ReasonReady, 60*time.Second)

	be := createPod(t, criPod(t, ns, "best-effort", e.name, `exec sleep 3600`))
	crit := criPod(t, "kube-system", "e2e-critical", e.name, `exec sleep 3600`)
	crit.Spec.PriorityClassName = "system-node-critical"
	crit = createPod(t, crit)
	t.Cleanup(func() {
		zero := int64(0)
		client.CoreV1().Pods("kube-system").Delete(context.Background(), crit.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	waitPod(t, ns, be.Name, 90*time.Second, "Running and Ready", runningAndReady)
	waitPod(t, "kube-system", crit.Name, 90*time.Second, "Running and Ready", runningAndReady)

	fs, _, err := nodestatus.Statfs(data)
	if err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(data, "filler")
	if err := os.WriteFile(filler, make([]byte, fs.Avail-fs.Total/20), 0o600); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, 30*time.Second, "DiskPressure=True in the API server", func() (bool, error) {
		n, err := client.CoreV1().Nodes().Get(t.Context(), e.name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeDiskPressure {
				return c.Status == corev1.ConditionTrue && strings.Contains(c.Message, "nodefs.available<10%"),
					fmt.Errorf("DiskPressure=%s %q", c.Status, c.Message)
			}
		}
		return false, errors.New("no DiskPressure condition")
	})
	t.Logf("data dir filled to 95%%: DiskPressure=True in the API server after %s", time.Since(start).Round(10*time.Millisecond))
	p := waitPod(t, ns, be.Name, 60*time.Second, "evicted", func(p *corev1.Pod) (bool, error) {
		if p.Status.Phase != corev1.PodFailed || p.Status.Reason != "Evicted" {
			return false, errors.New("not evicted")
		}
		return true, nil
	})
	t.Logf("BestEffort pod evicted %s after the fill: %q", time.Since(start).Round(10*time.Millisecond), p.Status.Message)
	if p.Status.Message != "The node was low on resource: ephemeral-storage. " {
		t.Errorf("eviction message %q", p.Status.Message)
	}
	// Two more monitor periods under pressure: the critical pod stays.
	time.Sleep(11 * time.Second)
	if cp := waitPod(t, "kube-system", crit.Name, time.Second, "Running", runningAndReady); cp.Status.Reason == "Evicted" {
		t.Errorf("critical pod evicted: %s", describePod(cp))
	}
	os.Remove(filler)
}

// TestNodeNotReadyOfflineGoesUpOnHeal: containerd dies while the link is
// cut: the NotReady status is queued in the edge's outbox at once, and the
// API server has it right after the heal.
func TestNodeNotReadyOfflineGoesUpOnHeal(t *testing.T) {
	c := startCloud(t)
	ctd := containerd(t)
	e := newCRIEdge(t, c, "e2e-health-offline")
	e.start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := ctd.Restart(ctx); err != nil && err.Error() != "critest: containerd still runs" {
			t.Errorf("restart containerd: %v", err)
		}
	})
	waitReady(t, e.name, corev1.ConditionTrue, nodestatus.ReasonReady, 60*time.Second)
	e.link.Cut()
	if err := ctd.Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, 20*time.Second, "Ready=False queued in the outbox", func() (bool, error) {
		var ready corev1.NodeCondition
		err := e.ec.DB.View(func(tx *store.Tx) error {
			return tx.Outbox(0, func(it store.OutboxItem) bool {
				if it.Key != store.OutboxNodeStatus {
					return true
				}
				f, err := protocol.Decode(it.Frame)
				if err != nil {
					return false
				}
				st, err := protocol.DecodeNodeStatus(f.NodeStatus.Status)
				if err != nil {
					return false
				}
				for _, c := range st.Conditions {
					if c.Type == corev1.NodeReady {
						ready = c
					}
				}
				return true
			})
		})
		if err != nil {
			return false, err
		}
		return ready.Status == corev1.ConditionFalse && ready.Reason == nodestatus.ReasonRuntimeDown,
			fmt.Errorf("queued Ready=%s %s", ready.Status, ready.Reason)
	})
	t.Logf("offline: Ready=False queued in the outbox %s after containerd was killed", time.Since(start).Round(10*time.Millisecond))
	if c, _ := nodeReady(t, e.name); c.Reason == nodestatus.ReasonRuntimeDown {
		t.Fatalf("the API server has the status while the link is cut: %+v", c)
	}
	e.link.Heal()
	took, _ := waitReady(t, e.name, corev1.ConditionFalse, nodestatus.ReasonRuntimeDown, 30*time.Second)
	t.Logf("healed: Ready=False in the API server %s later", took.Round(10*time.Millisecond))
	if err := ctd.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitReady(t, e.name, corev1.ConditionTrue, nodestatus.ReasonReady, time.Minute)
}
