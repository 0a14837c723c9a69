//go:build integration

package cri

import (
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestEphemeralContainers: ephemeral containers added to a running pod run
// in its sandbox; the one with a target sees the target's process as PID 1
// (it shares its PID namespace), the one without sees its own; each exits,
// is reported Terminated with its exit code in ephemeralContainerStatuses
// and is not restarted, though the pod restarts Always; the pod's own
// container is not touched. One whose target is not a container of the pod
// waits with CreateContainerConfigError and leaves the pod running.
func TestEphemeralContainers(t *testing.T) {
	r := newRuntime(t, newObjects())
	pod := busyboxPod("ephemeral", "sleep 3601")
	st := syncUntil(t, r, pod, 20*time.Second, "running", running("app"))
	appID := containerStatus(st, "app").ContainerID

	// What kubectl debug --target=app adds, and one without a target.
	script := `tr '\0' ' ' < /proc/1/cmdline; echo; sleep 2; exit 3`
	pod.Spec.EphemeralContainers = []corev1.EphemeralContainer{
		{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: containerd.BusyboxImage,
			ImagePullPolicy: corev1.PullIfNotPresent, Command: []string{"sh", "-c", script},
			TerminationMessagePolicy: corev1.TerminationMessageReadFile}, TargetContainerName: "app"},
		{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "alone", Image: containerd.BusyboxImage,
			ImagePullPolicy: corev1.PullIfNotPresent, Command: []string{"sh", "-c", script}}},
		{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "lost", Image: containerd.BusyboxImage,
			ImagePullPolicy: corev1.PullIfNotPresent, Command: []string{"true"}}, TargetContainerName: "nope"},
	}
	st = syncUntil(t, r, pod, 20*time.Second, "ephemeral containers running", func(st *corev1.PodStatus) bool {
		return len(st.EphemeralContainerStatuses) == 3 && running("debugger")(st) && running("alone")(st)
	})
	if cs := containerStatus(st, "debugger"); cs.Ready || cs.ContainerID == "" {
		t.Errorf("running ephemeral container: ready=%v id=%q\n%s", cs.Ready, cs.ContainerID, describe(st))
	}
	if w := containerStatus(st, "lost").State.Waiting; w == nil || w.Reason != "CreateContainerConfigError" ||
		!strings.Contains(w.Message, `"nope"`) {
		t.Errorf("ephemeral container with an unknown target:\n%s", describe(st))
	}
	if st.Phase != corev1.PodRunning || !running("app")(st) {
		t.Errorf("pod after adding ephemeral containers:\n%s", describe(st))
	}

	waitLog(t, logPath(r, pod, "debugger", 0), "\n", 5*time.Second)
	waitLog(t, logPath(r, pod, "alone", 0), "\n", 5*time.Second)
	if b, _ := os.ReadFile(logPath(r, pod, "debugger", 0)); !strings.Contains(string(b), "sleep 3601") {
		t.Errorf("the targeted ephemeral container's PID 1 is not the target's process; log:\n%s", b)
	}
	if b, _ := os.ReadFile(logPath(r, pod, "alone", 0)); strings.Contains(string(b), "3601") || !strings.Contains(string(b), "/proc/1/cmdline") {
		t.Errorf("the untargeted ephemeral container's PID 1 is not its own process; log:\n%s", b)
	}

	terminated := func(name string) func(*corev1.PodStatus) bool {
		return func(st *corev1.PodStatus) bool { return containerStatus(st, name).State.Terminated != nil }
	}
	st = syncUntil(t, r, pod, 20*time.Second, "ephemeral containers exited", func(st *corev1.PodStatus) bool {
		return terminated("debugger")(st) && terminated("alone")(st)
	})
	// Not restarted: several syncs later, still the one container each, and
	// the pod's container is the one it was.
	for range 5 {
		time.Sleep(300 * time.Millisecond)
		var err error
		if st, err = r.SyncPod(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"debugger", "alone"} {
		cs := containerStatus(st, name)
		if term := cs.State.Terminated; term == nil || term.ExitCode != 3 || term.Reason != "Error" || cs.RestartCount != 0 {
			t.Errorf("%s after exit:\n%s", name, describe(st))
		}
		list, err := r.listContainers(t.Context(), pod.UID, "")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, c := range list {
			if c.Metadata.GetName() == name {
				n++
				if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
					t.Errorf("%s runs again", name)
				}
			}
		}
		if n != 1 {
			t.Errorf("%s: %d containers, want 1 (no restart)", name, n)
		}
	}
	if cs := containerStatus(st, "app"); cs.State.Running == nil || cs.ContainerID != appID || cs.RestartCount != 0 {
		t.Errorf("the pod's container changed:\n%s", describe(st))
	}
	if st.Phase != corev1.PodRunning {
		t.Errorf("pod phase %s after its ephemeral containers exited", st.Phase)
	}

	// The sandbox dies: the pod runs again in a new one, its ephemeral
	// containers do not (the kubelet's rule), and are reported terminated.
	stopSandbox(t, r, pod)
	st = syncUntil(t, r, pod, 20*time.Second, "running in a new sandbox", func(st *corev1.PodStatus) bool {
		cs := containerStatus(st, "app")
		return cs.State.Running != nil && cs.ContainerID != appID
	})
	var err error
	for range 3 {
		time.Sleep(300 * time.Millisecond)
		if st, err = r.SyncPod(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"debugger", "alone"} {
		if term := containerStatus(st, name).State.Terminated; term == nil || term.Reason != "ContainerStatusUnknown" {
			t.Errorf("%s after the sandbox was replaced:\n%s", name, describe(st))
		}
	}
	list, err := r.listContainers(t.Context(), pod.UID, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if n := c.Metadata.GetName(); n == "debugger" || n == "alone" {
			t.Errorf("ephemeral container %s started again in the new sandbox", n)
		}
	}
}
