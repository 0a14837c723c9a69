//go:build integration

package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// syncUntilErr is syncUntil for other goroutines than the test's: it
// returns an error instead of failing the test.
func syncUntilErr(ctx context.Context, r *Runtime, pod *corev1.Pod, timeout time.Duration, what string, cond func(*corev1.PodStatus) bool) (*corev1.PodStatus, error) {
	deadline := time.Now().Add(timeout)
	var st *corev1.PodStatus
	var err error
	for time.Now().Before(deadline) {
		st, err = r.SyncPod(ctx, pod)
		if err == nil && cond(st) {
			return st, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return st, fmt.Errorf("pod %s: %s: not within %s; last error %v; last status:\n%s", pod.Name, what, timeout, err, describe(st))
}

// Pods are synced and killed from several goroutines at once, as
// pods.Manager's workers do (run with -race): each starts with its volume,
// environment and probes; killing some while the others are synced leaves
// the others alone.
func TestParallelSyncAndKill(t *testing.T) {
	objs := newObjects()
	objs.setConfigMap("default", "shared", map[string]string{"greeting": "hi"})
	r := newRuntime(t, objs)
	const n = 6
	var pods []*corev1.Pod
	for i := range n {
		p := busyboxPod(fmt.Sprintf("par-%d", i), `trap "exit 0" TERM; echo "$(cat /etc/cfg/greeting)"; touch /tmp/ready; while true; do sleep 0.2; done`)
		p.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "shared"}}}}}
		c := &p.Spec.Containers[0]
		c.VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/cfg", ReadOnly: true}}
		c.ReadinessProbe = &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/ready"}}},
			PeriodSeconds: 1,
		}
		pods = append(pods, p)
	}

	// All start at once.
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := time.Now()
	for i, p := range pods {
		wg.Go(func() {
			st, err := syncUntilErr(t.Context(), r, p, 60*time.Second, "ready", func(st *corev1.PodStatus) bool { return containerStatus(st, "app").Ready })
			errs[i] = err
			if err == nil {
				ids[i] = containerStatus(st, "app").ContainerID
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pods ready, synced from %d goroutines, in %s", n, n, time.Since(start).Round(time.Millisecond))
	for _, p := range pods {
		waitLog(t, logPath(r, p, "app", 0), "hi", 10*time.Second)
	}

	// The first half is killed while the second half is synced.
	for i, p := range pods {
		wg.Go(func() {
			if i < n/2 {
				errs[i] = r.KillPod(t.Context(), p.UID, time.Second)
				return
			}
			for range 3 {
				st, err := r.SyncPod(t.Context(), p)
				if err != nil {
					errs[i] = err
					return
				}
				if cs := containerStatus(st, "app"); cs.ContainerID != ids[i] || cs.RestartCount != 0 || !cs.Ready {
					errs[i] = fmt.Errorf("pod %s changed while others were killed:\n%s", p.Name, describe(st))
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	uids, err := r.Pods(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var want []types.UID
	for _, p := range pods[n/2:] {
		want = append(want, p.UID)
	}
	slices.Sort(want)
	if !slices.Equal(uids, want) {
		t.Errorf("pods left %v, want %v", uids, want)
	}
}

// Two edgecores on one containerd, with other node names, leave each
// other's pods alone: neither lists the other's, killing the other's pod
// by UID does nothing, and their containers carry their node's name.
func TestNodesSharingContainerdKeepApart(t *testing.T) {
	objs := newObjects()
	ra := newNodeRuntime(t, objs, "edge-a")
	rb := newNodeRuntime(t, objs, "edge-b")
	pa := busyboxPod("on-a", `trap "exit 0" TERM; while true; do sleep 0.2; done`)
	pb := busyboxPod("on-b", `trap "exit 0" TERM; while true; do sleep 0.2; done`)
	syncUntil(t, ra, pa, 15*time.Second, "running on a", running("app"))
	stb := syncUntil(t, rb, pb, 15*time.Second, "running on b", running("app"))
	idb := containerStatus(stb, "app").ContainerID

	for r, want := range map[*Runtime]types.UID{ra: pa.UID, rb: pb.UID} {
		uids, err := r.Pods(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(uids, []types.UID{want}) {
			t.Errorf("node %s lists %v, want only %s", r.cfg.NodeName, uids, want)
		}
	}
	list, err := ra.rs.ListContainers(t.Context(), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		LabelSelector: map[string]string{labelManaged: managedBy}}})
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[types.UID]string{}
	for _, c := range list.Containers {
		nodes[types.UID(c.Labels[labelPodUID])] = c.Labels[labelNode]
	}
	if nodes[pa.UID] != "edge-a" || nodes[pb.UID] != "edge-b" {
		t.Errorf("containers' node labels: %v", nodes)
	}

	// a kills b's pod, as a pod it no longer wants would be: nothing
	// happens (its running container would keep a cgroup rmdir from
	// succeeding and fail the kill).
	if err := ra.KillPod(t.Context(), pb.UID, 0); err != nil {
		t.Fatal(err)
	}
	stb, err = rb.SyncPod(t.Context(), pb)
	if err != nil {
		t.Fatal(err)
	}
	if cs := containerStatus(stb, "app"); cs.ContainerID != idb || cs.RestartCount != 0 || cs.State.Running == nil {
		t.Errorf("b's pod after a killed it:\n%s", describe(stb))
	}
	if sbs, err := ra.listSandboxes(t.Context(), pb.UID); err != nil || len(sbs) != 0 {
		t.Errorf("a sees b's sandboxes: %v %v", sbs, err)
	}
	if sbs, err := rb.listSandboxes(t.Context(), pb.UID); err != nil || len(sbs) != 1 {
		t.Errorf("b's sandboxes: %v %v", sbs, err)
	}
}

// A sandbox of an older edgecore, without a node name, is adopted by the
// edgecore that syncs its pod and killed by it, but never listed by Pods,
// so no edgecore kills it as unknown.
func TestUnlabelledSandboxAdoptedNotListed(t *testing.T) {
	objs := newObjects()
	ra := newNodeRuntime(t, objs, "edge-a")
	rb := newNodeRuntime(t, objs, "edge-b")
	pod := busyboxPod("legacy", `trap "exit 0" TERM; while true; do sleep 0.2; done`)
	cfg := ra.sandboxConfig(pod, 0)
	delete(cfg.Labels, labelNode)
	if err := os.MkdirAll(cfg.LogDirectory, 0o755); err != nil {
		t.Fatal(err)
	}
	resp, err := ra.rs.RunPodSandbox(t.Context(), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ra.removeSandbox(ctx, resp.PodSandboxId) // if the test failed before the kill
	})

	for _, r := range []*Runtime{ra, rb} {
		if uids, err := r.Pods(t.Context()); err != nil || slices.Contains(uids, pod.UID) {
			t.Errorf("node %s lists the unlabelled sandbox's pod: %v %v", r.cfg.NodeName, uids, err)
		}
	}
	syncUntil(t, ra, pod, 15*time.Second, "running", running("app"))
	sbs, err := ra.listSandboxes(t.Context(), pod.UID)
	if err != nil {
		t.Fatal(err)
	}
	if len(sbs) != 1 || sbs[0].Id != resp.PodSandboxId {
		t.Errorf("the unlabelled sandbox was not adopted: %v", sbs)
	}
	if err := ra.KillPod(t.Context(), pod.UID, 0); err != nil {
		t.Fatal(err)
	}
	list, err := ra.rs.ListPodSandbox(t.Context(), &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		LabelSelector: map[string]string{labelPodUID: string(pod.UID)}}})
	if err != nil || len(list.Items) != 0 {
		t.Errorf("sandboxes left after the kill: %v %v", list, err)
	}
}
