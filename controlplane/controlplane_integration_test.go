//go:build integration

package controlplane_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"github.com/tether-edge/tether/controlplane"
)

// TestControlPlane starts the whole control plane, uses it through
// client-go, restarts the controller manager, stops it and checks that no
// child process is left.
func TestControlPlane(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	began := time.Now()
	cp, err := controlplane.Start(ctx, controlplane.Options{
		Dir:                    t.TempDir(),
		WithControllerManager:  true,
		WithScheduler:          true,
		NodeMonitorPeriod:      time.Second,
		NodeMonitorGracePeriod: 5 * time.Second,
		Logger:                 slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() }) // when a check below fails
	t.Logf("control plane ready in %s", time.Since(began))

	pids := cp.Pids()
	if len(pids) != 4 {
		t.Fatalf("Pids() = %v, want 4 components", pids)
	}

	cs, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}

	// A namespace and a configmap.
	const ns = "tether-test"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: ns}, Data: map[string]string{"k": "v"}}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create configmap: %v", err)
	}
	got, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "cm", metav1.GetOptions{})
	if err != nil || got.Data["k"] != "v" {
		t.Fatalf("get configmap: %v, %v", got, err)
	}

	// The controller manager creates the namespace's default ServiceAccount,
	// which pod admission needs.
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := cp.WaitForDefaultServiceAccount(waitCtx, ns); err != nil {
		t.Fatal(err)
	}

	// The scheduler binds a pod to a node; the node lifecycle controller
	// marks the node, which never heartbeats, as not ready after the grace
	// period set in Options.
	node := makeNode(t, ctx, cs, "edge-1")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p1", Namespace: ns},
		Spec: corev1.PodSpec{
			Containers:  []corev1.Container{{Name: "c", Image: "tether.invalid/pause"}},
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	eventually(t, 30*time.Second, "pod bound to "+node, func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "p1", metav1.GetOptions{})
		return err == nil && p.Spec.NodeName == node, err
	})
	eventually(t, 30*time.Second, "node marked not ready", func() (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionUnknown, nil
			}
		}
		return false, nil
	})

	// The kubeconfig file works on its own.
	restCfg, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig())
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	cs2, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs2.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		t.Fatalf("get namespace through kubeconfig: %v", err)
	}

	// Restart the controller manager.
	oldKCM := pids[controlplane.ControllerManager]
	if err := cp.StopComponent(controlplane.ControllerManager); err != nil {
		t.Fatal(err)
	}
	assertGone(t, controlplane.ControllerManager, oldKCM)
	if err := cp.StartComponent(ctx, controlplane.ControllerManager); err != nil {
		t.Fatal(err)
	}
	pids = cp.Pids()
	if pids[controlplane.ControllerManager] == 0 || pids[controlplane.ControllerManager] == oldKCM {
		t.Fatalf("after restart Pids() = %v", pids)
	}
	select {
	case <-cp.Done():
		t.Fatalf("Done closed after a requested stop: %v", cp.Err())
	default:
	}

	stopped := time.Now()
	if err := cp.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("control plane stopped in %s", time.Since(stopped))
	for c, pid := range pids {
		assertGone(t, c, pid)
	}
	if left := cp.Pids(); len(left) != 0 {
		t.Errorf("after Stop Pids() = %v, want none", left)
	}
}

// TestAPIServerOnly runs beside TestControlPlane: etcd and kube-apiserver
// alone, and a second Start on the same Dir must be refused.
func TestAPIServerOnly(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	opts := controlplane.Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
	cp, err := controlplane.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	if pids := cp.Pids(); len(pids) != 2 || pids[controlplane.Etcd] == 0 || pids[controlplane.APIServer] == 0 {
		t.Fatalf("Pids() = %v, want etcd and kube-apiserver", pids)
	}

	if _, err := controlplane.Start(ctx, opts); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Start on the same Dir: err = %v, want in use", err)
	}

	cs, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	list, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) == 0 {
		t.Fatalf("list namespaces: %d, %v", len(list.Items), err)
	}
	pids := cp.Pids()
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	for c, pid := range pids {
		assertGone(t, c, pid)
	}
}

// makeNode registers a node with room for pods, as an edge agent would.
func makeNode(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) string {
	t.Helper()
	if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node: %v", err)
	}
	res := corev1.ResourceList{
		corev1.ResourcePods:   resource.MustParse("10"),
		corev1.ResourceCPU:    resource.MustParse("2"),
		corev1.ResourceMemory: resource.MustParse("1Gi"),
	}
	// The controller manager may change the new node (taints, CIDRs) at the
	// same time: read it again and retry on a conflict.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		n.Status = corev1.NodeStatus{
			Capacity:    res,
			Allocatable: res,
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "Test",
				LastHeartbeatTime: now, LastTransitionTime: now,
			}},
		}
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("update node status: %v", err)
	}
	return name
}

// assertGone fails unless neither the process nor any member of its
// process group exists.
func assertGone(t *testing.T, c controlplane.Component, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("%s (pid %d) still exists: kill(pid, 0) = %v", c, pid, err)
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group of %s (pgid %d) still exists: kill(-pgid, 0) = %v", c, pid, err)
	}
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, lastErr)
}
