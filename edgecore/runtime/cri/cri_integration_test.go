//go:build integration

package cri

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tether-edge/tether/edgecore/runtime/cri/critest"
	"github.com/tether-edge/tether/testimages"
)

// containerd is the private containerd every test of the package uses.
var containerd *critest.Containerd

const testCgroupParent = "/tether-critest"

// IntegrationContainerd is the test containerd, for the external tests of
// the package (edgecore's wiring).
func IntegrationContainerd() *critest.Containerd { return containerd }

// IntegrationCgroupParent is the tests' pod cgroup parent, removed at the
// end.
const IntegrationCgroupParent = testCgroupParent

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("cri integration tests need root; skipped")
		os.Exit(0)
	}
	start := time.Now()
	var err error
	containerd, err = critest.Start(context.Background(), critest.Options{NoRegistry: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("private containerd at %s ready in %s (subnet %s)\n", containerd.Endpoint, time.Since(start).Round(time.Millisecond), containerd.Subnet)
	code := m.Run()
	if err := containerd.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop containerd:", err)
		code = 1
	}
	// The parent of the pod cgroups.
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range entries {
		os.Remove(filepath.Join("/sys/fs/cgroup", e.Name(), testCgroupParent))
	}
	os.Remove(filepath.Join("/sys/fs/cgroup", testCgroupParent))
	os.Exit(code)
}

// objects is an in-memory Objects.
type objects struct {
	mu         sync.Mutex
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
}

func newObjects() *objects {
	return &objects{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
}

func (o *objects) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.configMaps[ns+"/"+name].DeepCopy(), nil
}

func (o *objects) Services(ns string) ([]*corev1.Service, error) { return nil, nil }

func (o *objects) Secret(ns, name string) (*corev1.Secret, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.secrets[ns+"/"+name].DeepCopy(), nil
}

func (o *objects) setConfigMap(ns, name string, data map[string]string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.configMaps[ns+"/"+name] = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}
}

func (o *objects) setSecret(ns, name string, data map[string][]byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.secrets[ns+"/"+name] = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}
}

// newRuntime makes a Runtime on the test containerd with its own volume and
// log directories and short back-offs; every pod left is killed at cleanup.
func newRuntime(t *testing.T, objs Objects) *Runtime {
	t.Helper()
	return newNodeRuntime(t, objs, "edge-test")
}

// newNodeRuntime is newRuntime for the node named node.
func newNodeRuntime(t *testing.T, objs Objects, node string) *Runtime {
	t.Helper()
	r, err := New(t.Context(), Config{
		Endpoint:       containerd.Endpoint,
		PauseImage:     containerd.PauseImage,
		RootDir:        t.TempDir(),
		PodLogDir:      t.TempDir(),
		CgroupParent:   testCgroupParent,
		BackoffInitial: metav1.Duration{Duration: time.Second},
		BackoffMax:     metav1.Duration{Duration: 4 * time.Second},
		NodeName:       node,
		NodeIP:         "127.0.0.1",
	}, objs, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		uids, err := r.Pods(ctx)
		if err != nil {
			t.Error(err)
		}
		for _, u := range uids {
			if err := r.KillPod(ctx, u, 0); err != nil {
				t.Error(err)
			}
		}
		r.Close()
	})
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

var podSeq int

func busyboxPod(name string, script string) *corev1.Pod {
	podSeq++
	grace := int64(1)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name,
			UID:               types.UID(fmt.Sprintf("00000000-0000-4000-8000-%012d", time.Now().UnixNano()%1e12+int64(podSeq))),
			CreationTimestamp: metav1.NewTime(time.Now().Truncate(time.Second))},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "app", Image: containerd.BusyboxImage,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         []string{"sh", "-c", script}}},
		},
	}
}

// syncUntil syncs the pod every 200ms until cond holds for its status.
func syncUntil(t *testing.T, r *Runtime, pod *corev1.Pod, timeout time.Duration, what string, cond func(*corev1.PodStatus) bool) *corev1.PodStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var st *corev1.PodStatus
	var err error
	for time.Now().Before(deadline) {
		st, err = r.SyncPod(t.Context(), pod)
		if err == nil && cond(st) {
			return st
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("pod %s: %s: not within %s; last error %v; last status:\n%s", pod.Name, what, timeout, err, describe(st))
	return nil
}

func describe(st *corev1.PodStatus) string {
	if st == nil {
		return "<nil>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase=%s reason=%s message=%q ip=%s\n", st.Phase, st.Reason, st.Message, st.PodIP)
	for _, c := range st.Conditions {
		fmt.Fprintf(&b, "  condition %s=%s %s %s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	for _, cs := range allStatuses(st) {
		fmt.Fprintf(&b, "  container %s ready=%v restarts=%d state=%s last=%s\n", cs.Name, cs.Ready, cs.RestartCount,
			stateString(cs.State), stateString(cs.LastTerminationState))
	}
	return b.String()
}

// allStatuses are the statuses of the init, regular and ephemeral
// containers.
func allStatuses(st *corev1.PodStatus) []corev1.ContainerStatus {
	return slices.Concat(st.InitContainerStatuses, st.ContainerStatuses, st.EphemeralContainerStatuses)
}

func stateString(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "running"
	case s.Waiting != nil:
		return fmt.Sprintf("waiting(%s: %s)", s.Waiting.Reason, s.Waiting.Message)
	case s.Terminated != nil:
		return fmt.Sprintf("terminated(%s, exit %d)", s.Terminated.Reason, s.Terminated.ExitCode)
	}
	return "-"
}

func containerStatus(st *corev1.PodStatus, name string) corev1.ContainerStatus {
	for _, cs := range allStatuses(st) {
		if cs.Name == name {
			return cs
		}
	}
	return corev1.ContainerStatus{}
}

func running(name string) func(*corev1.PodStatus) bool {
	return func(st *corev1.PodStatus) bool { return containerStatus(st, name).State.Running != nil }
}

// logPath is the CRI log file of a container attempt.
func logPath(r *Runtime, pod *corev1.Pod, container string, attempt int) string {
	return filepath.Join(r.podLogDir(pod), container, fmt.Sprintf("%d.log", attempt))
}

// waitLog waits until the log file holds a line with want.
func waitLog(t *testing.T, path, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var b []byte
	for time.Now().Before(deadline) {
		b, _ = os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("log %s: no %q within %s; it holds:\n%s", path, want, timeout, b)
}

func TestConfigMapVolumeSecretEnvAndKill(t *testing.T) {
	objs := newObjects()
	objs.setConfigMap("default", "cfg", map[string]string{"greeting": "hello-1"})
	objs.setSecret("default", "sec", map[string][]byte{"token": []byte("s3cret")})
	r := newRuntime(t, objs)

	pod := busyboxPod("web", `echo "token=$TOKEN name=$POD_NAME ns=$POD_NS ip=$POD_IP node=$NODE greet=$GREET"; `+
		`while true; do echo "file=$(cat /etc/cfg/greeting)"; sleep 0.3; done`)
	pod.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}}
	field := func(p string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: p}}
	}
	c := &pod.Spec.Containers[0]
	c.VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/cfg", ReadOnly: true}}
	c.Env = []corev1.EnvVar{
		{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "token"}}},
		{Name: "POD_NAME", ValueFrom: field("metadata.name")},
		{Name: "POD_NS", ValueFrom: field("metadata.namespace")},
		{Name: "POD_IP", ValueFrom: field("status.podIP")},
		{Name: "NODE", ValueFrom: field("spec.nodeName")},
		{Name: "GREET", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "greeting"}}},
	}
	c.Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("200m"), corev1.ResourceMemory: resource.MustParse("64Mi")}}

	start := time.Now()
	st, err := r.SyncPod(t.Context(), pod)
	if err != nil {
		t.Fatal(err)
	}
	if containerStatus(st, "app").State.Running == nil {
		t.Fatalf("first sync did not start the container:\n%s", describe(st))
	}
	t.Logf("pod running %s after the first SyncPod began", time.Since(start).Round(time.Millisecond))
	if st.Phase != corev1.PodRunning || st.PodIP == "" || st.HostIP != "127.0.0.1" || st.QOSClass != corev1.PodQOSGuaranteed {
		t.Errorf("status:\n%s", describe(st))
	}
	st = syncUntil(t, r, pod, 10*time.Second, "ready", func(st *corev1.PodStatus) bool {
		return containerStatus(st, "app").Ready
	})
	for _, cond := range st.Conditions {
		if cond.Status != corev1.ConditionTrue {
			t.Errorf("condition %s is %s", cond.Type, cond.Status)
		}
	}
	log := logPath(r, pod, "app", 0)
	waitLog(t, log, fmt.Sprintf("token=s3cret name=web ns=default ip=%s node=edge-test greet=hello-1", st.PodIP), 10*time.Second)
	waitLog(t, log, "file=hello-1", 10*time.Second)

	// A second sync changes nothing.
	st2, err := r.SyncPod(t.Context(), pod)
	if err != nil {
		t.Fatal(err)
	}
	if describe(st2) != describe(st) || containerStatus(st2, "app").ContainerID != containerStatus(st, "app").ContainerID {
		t.Errorf("status changed on an idle sync:\n%s\n%s", describe(st), describe(st2))
	}

	// The configmap changes: the file follows, the container is not restarted.
	objs.setConfigMap("default", "cfg", map[string]string{"greeting": "hello-2"})
	if _, err := r.SyncPod(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	waitLog(t, log, "file=hello-2", 10*time.Second)
	st, _ = r.SyncPod(t.Context(), pod)
	if cs := containerStatus(st, "app"); cs.RestartCount != 0 || cs.State.Running == nil {
		t.Errorf("container restarted on a configmap change:\n%s", describe(st))
	}

	// The limits reached the container's cgroup.
	ctr := strings.TrimPrefix(containerStatus(st, "app").ContainerID, "containerd://")
	cg := filepath.Join("/sys/fs/cgroup/memory", testCgroupParent, "pod"+string(pod.UID), ctr, "memory.limit_in_bytes")
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil { // cgroup v2
		cg = filepath.Join("/sys/fs/cgroup", testCgroupParent, "pod"+string(pod.UID), ctr, "memory.max")
	}
	if b, err := os.ReadFile(cg); err != nil || strings.TrimSpace(string(b)) != "67108864" {
		t.Errorf("%s = %s (%v), want 67108864", cg, b, err)
	}

	// KillPod removes the sandbox, the volumes, the logs and the cgroup.
	start = time.Now()
	if err := r.KillPod(t.Context(), pod.UID, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("pod killed in %s", time.Since(start).Round(time.Millisecond))
	uids, err := r.Pods(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range uids {
		if u == pod.UID {
			t.Errorf("Pods still lists %s", u)
		}
	}
	list, err := r.rs.ListPodSandbox(t.Context(), &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		LabelSelector: map[string]string{labelPodUID: string(pod.UID)}}})
	if err != nil || len(list.Items) != 0 {
		t.Errorf("sandboxes left: %v %v", list, err)
	}
	for _, p := range []string{r.podDir(string(pod.UID)), r.podLogDir(pod),
		filepath.Join("/sys/fs/cgroup/memory", testCgroupParent, "pod"+string(pod.UID)),
		filepath.Join("/sys/fs/cgroup/cpu", testCgroupParent, "pod"+string(pod.UID))} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind (%v)", p, err)
		}
	}
	// Killing it again, or an unknown pod, is fine.
	if err := r.KillPod(t.Context(), pod.UID, 0); err != nil {
		t.Error(err)
	}
}

func TestRestartPolicyAndBackoff(t *testing.T) {
	r := newRuntime(t, newObjects())

	always := busyboxPod("crasher", `echo "run at $(date +%s)"; exit 3`)
	never := busyboxPod("once", `echo bye; exit 3`)
	never.Spec.RestartPolicy = corev1.RestartPolicyNever
	onFailure := busyboxPod("job", `exit 0`)
	onFailure.Spec.RestartPolicy = corev1.RestartPolicyOnFailure

	sawBackoff := false
	st := syncUntil(t, r, always, 30*time.Second, "restarted twice in back-off", func(st *corev1.PodStatus) bool {
		cs := containerStatus(st, "app")
		if w := cs.State.Waiting; w != nil && w.Reason == "CrashLoopBackOff" {
			sawBackoff = true
			if !strings.Contains(w.Message, "back-off") {
				t.Errorf("waiting message %q", w.Message)
			}
		}
		return cs.RestartCount >= 2 && sawBackoff
	})
	cs := containerStatus(st, "app")
	if last := cs.LastTerminationState.Terminated; last == nil || last.ExitCode != 3 || last.Reason != "Error" {
		t.Errorf("last state:\n%s", describe(st))
	}
	if st.Phase != corev1.PodRunning {
		t.Errorf("phase %s with restartPolicy Always, want Running", st.Phase)
	}

	st = syncUntil(t, r, never, 10*time.Second, "failed", func(st *corev1.PodStatus) bool { return st.Phase == corev1.PodFailed })
	if cs := containerStatus(st, "app"); cs.RestartCount != 0 || cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 3 {
		t.Errorf("never:\n%s", describe(st))
	}
	st = syncUntil(t, r, onFailure, 10*time.Second, "succeeded", func(st *corev1.PodStatus) bool { return st.Phase == corev1.PodSucceeded })
	if cs := containerStatus(st, "app"); cs.RestartCount != 0 || cs.State.Terminated.Reason != "Completed" {
		t.Errorf("onFailure:\n%s", describe(st))
	}
	// They stay down.
	time.Sleep(1500 * time.Millisecond)
	for _, p := range []*corev1.Pod{never, onFailure} {
		st, err := r.SyncPod(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		if containerStatus(st, "app").RestartCount != 0 {
			t.Errorf("%s restarted:\n%s", p.Name, describe(st))
		}
	}
}

// A crash-looping container whose image is updated starts with the new
// image at once, and its restarts back off afresh: the back-off the old
// image built up (at its 4s maximum) does not hold the new one, as the
// kubelet keys its back-off by the container's spec hash.
func TestBackoffResetOnImageUpdate(t *testing.T) {
	r := newRuntime(t, newObjects())
	files, err := testimages.BusyboxFiles(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	const updated = "tether.test/busybox:backoff-reset"
	if err := containerd.ImportImage(t.Context(), updated, files); err != nil {
		t.Fatal(err)
	}
	pod := busyboxPod("crash-update", `exit 3`)
	// The image goes with the test (the image GC test counts the images).
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := r.KillPod(ctx, pod.UID, 0); err != nil {
			t.Error(err)
		}
		if _, err := r.is.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: updated}}); err != nil {
			t.Error(err)
		}
	})
	syncUntil(t, r, pod, 30*time.Second, "at the maximum back-off", func(st *corev1.PodStatus) bool {
		w := containerStatus(st, "app").State.Waiting
		return w != nil && w.Reason == "CrashLoopBackOff" && strings.HasPrefix(w.Message, "back-off 4s ")
	})
	before := containerStatus(mustSync(t, r, pod), "app").RestartCount

	pod.Spec.Containers[0].Image = updated
	var msgs []string
	st := syncUntil(t, r, pod, 20*time.Second, "in back-off with the new image", func(st *corev1.PodStatus) bool {
		cs := containerStatus(st, "app")
		if w := cs.State.Waiting; w != nil && w.Reason == "CrashLoopBackOff" && cs.RestartCount > before {
			msgs = append(msgs, w.Message)
			return true
		}
		return false
	})
	if !strings.HasPrefix(msgs[0], "back-off 1s ") {
		t.Errorf("first back-off with the new image: %q, want the initial 1s\n%s", msgs[0], describe(st))
	}
	if cs := containerStatus(st, "app"); cs.Image != updated && !strings.Contains(cs.Image, "backoff-reset") {
		t.Errorf("image %q, want %s", cs.Image, updated)
	}
}

func mustSync(t *testing.T, r *Runtime, pod *corev1.Pod) *corev1.PodStatus {
	t.Helper()
	st, err := r.SyncPod(t.Context(), pod)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestInitContainersRunInOrder(t *testing.T) {
	r := newRuntime(t, newObjects())
	pod := busyboxPod("init", `cat /work/order; sleep 3600`)
	pod.Spec.Volumes = []corev1.Volume{{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	mount := []corev1.VolumeMount{{Name: "work", MountPath: "/work"}}
	pod.Spec.Containers[0].VolumeMounts = mount
	pod.Spec.InitContainers = []corev1.Container{
		{Name: "first", Image: containerd.BusyboxImage, Command: []string{"sh", "-c", "sleep 0.5; echo first >> /work/order"}, VolumeMounts: mount},
		{Name: "second", Image: containerd.BusyboxImage, Command: []string{"sh", "-c", "echo second >> /work/order"}, VolumeMounts: mount},
	}
	st, err := r.SyncPod(t.Context(), pod)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != corev1.PodPending || containerStatus(st, "app").State.Waiting == nil ||
		containerStatus(st, "app").State.Waiting.Reason != "PodInitializing" {
		t.Errorf("while initializing:\n%s", describe(st))
	}
	st = syncUntil(t, r, pod, 20*time.Second, "running", running("app"))
	for _, name := range []string{"first", "second"} {
		if cs := containerStatus(st, name); cs.State.Terminated == nil || cs.State.Terminated.Reason != "Completed" {
			t.Errorf("init container %s:\n%s", name, describe(st))
		}
	}
	waitLog(t, logPath(r, pod, "app", 0), "first", 5*time.Second)
	b, _ := os.ReadFile(logPath(r, pod, "app", 0))
	if !strings.Contains(string(b), "first\n") || !strings.Contains(string(b), "second") ||
		strings.Index(string(b), "first") > strings.Index(string(b), "second") {
		t.Errorf("order:\n%s", b)
	}
}

// TestActiveDeadline: a running pod whose activeDeadlineSeconds is set
// (or lowered, as an update does) past its age is stopped and reported
// Failed with reason DeadlineExceeded, and is not started again.
func TestActiveDeadline(t *testing.T) {
	r := newRuntime(t, newObjects())
	pod := busyboxPod("deadline", "sleep 3600")
	st := syncUntil(t, r, pod, 20*time.Second, "running", running("app"))
	if st.Phase != corev1.PodRunning {
		t.Fatalf("not running:\n%s", describe(st))
	}
	pod.Status.StartTime = st.StartTime
	d := int64(1)
	pod.Spec.ActiveDeadlineSeconds = &d
	time.Sleep(time.Second)
	st = syncUntil(t, r, pod, 20*time.Second, "failed for its deadline", func(st *corev1.PodStatus) bool {
		return st.Phase == corev1.PodFailed
	})
	if st.Reason != "DeadlineExceeded" || containerStatus(st, "app").State.Terminated == nil {
		t.Fatalf("past its deadline:\n%s", describe(st))
	}
	for i := 0; i < 3; i++ {
		st, err := r.SyncPod(t.Context(), pod)
		if err != nil {
			t.Fatal(err)
		}
		if st.Phase != corev1.PodFailed || containerStatus(st, "app").State.Running != nil {
			t.Fatalf("started again after its deadline:\n%s", describe(st))
		}
	}
}

// TestEtcHosts: a container's /etc/hosts is the kubelet-managed file with
// the pod's address and hostAliases; a container that mounts a volume at
// /etc/hosts keeps its own.
func TestEtcHosts(t *testing.T) {
	r := newRuntime(t, newObjects())
	pod := busyboxPod("hosts", "cat /etc/hosts; sleep 3600")
	pod.Spec.HostAliases = []corev1.HostAlias{{IP: "123.45.67.89", Hostnames: []string{"foo", "bar"}}}
	pod.Spec.Volumes = []corev1.Volume{{Name: "own", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "own", Image: containerd.BusyboxImage,
		Command:      []string{"sh", "-c", "cat /etc/hosts; echo end; sleep 3600"},
		VolumeMounts: []corev1.VolumeMount{{Name: "own", MountPath: "/etc/hosts", SubPath: "hosts"}}})
	st := syncUntil(t, r, pod, 20*time.Second, "running", running("app"))
	waitLog(t, logPath(r, pod, "app", 0), "123.45.67.89\tfoo\tbar", 5*time.Second)
	b, _ := os.ReadFile(logPath(r, pod, "app", 0))
	for _, want := range []string{"# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost", st.PodIP + "\thosts", "# Entries added by HostAliases."} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/etc/hosts lacks %q:\n%s", want, b)
		}
	}
	syncUntil(t, r, pod, 20*time.Second, "running", running("own"))
	waitLog(t, logPath(r, pod, "own", 0), "end", 5*time.Second)
	if b, _ := os.ReadFile(logPath(r, pod, "own", 0)); strings.Contains(string(b), "Kubernetes-managed") {
		t.Errorf("a container with its own /etc/hosts mount got the managed one:\n%s", b)
	}
}

func TestLivenessProbeRestarts(t *testing.T) {
	r := newRuntime(t, newObjects())
	// Healthy for two seconds after each start.
	pod := busyboxPod("sick", `touch /tmp/ok; (sleep 2; rm /tmp/ok) & while true; do sleep 1; done`)
	pod.Spec.Containers[0].LivenessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/ok"}}},
		PeriodSeconds: 1, FailureThreshold: 2, TimeoutSeconds: 1,
	}
	syncUntil(t, r, pod, 10*time.Second, "running", running("app"))
	st := syncUntil(t, r, pod, 30*time.Second, "restarted by the liveness probe", func(st *corev1.PodStatus) bool {
		return containerStatus(st, "app").RestartCount >= 1 && containerStatus(st, "app").State.Running != nil
	})
	if last := containerStatus(st, "app").LastTerminationState.Terminated; last == nil {
		t.Errorf("no last state after a liveness restart:\n%s", describe(st))
	}
}

func TestReadinessProbes(t *testing.T) {
	r := newRuntime(t, newObjects())
	web := busyboxPod("ready", `mkdir -p /www; echo ok > /www/index.html; exec httpd -f -p 8080 -h /www`)
	web.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	web.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/index.html", Port: intstr.FromString("http")}},
		PeriodSeconds: 1,
	}
	web.Spec.Containers[0].LivenessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}},
		PeriodSeconds: 1,
	}
	notReady := busyboxPod("unready", `exec sleep 3600`)
	notReady.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(9999)}},
		PeriodSeconds: 1, FailureThreshold: 1,
	}
	st := syncUntil(t, r, web, 15*time.Second, "ready", func(st *corev1.PodStatus) bool { return containerStatus(st, "app").Ready })
	if st.Conditions[1].Type != corev1.PodReady || st.Conditions[1].Status != corev1.ConditionTrue {
		t.Errorf("ready condition:\n%s", describe(st))
	}
	syncUntil(t, r, notReady, 10*time.Second, "running", running("app"))
	time.Sleep(2500 * time.Millisecond)
	st, err := r.SyncPod(t.Context(), notReady)
	if err != nil {
		t.Fatal(err)
	}
	if cs := containerStatus(st, "app"); cs.Ready || cs.State.Running == nil || st.Phase != corev1.PodRunning {
		t.Errorf("unready pod:\n%s", describe(st))
	}
	st, _ = r.SyncPod(t.Context(), web)
	if cs := containerStatus(st, "app"); !cs.Ready || cs.RestartCount != 0 {
		t.Errorf("web pod after a while:\n%s", describe(st))
	}
}

func TestBadPodsLeaveOthersRunning(t *testing.T) {
	objs := newObjects()
	r := newRuntime(t, objs)
	good := busyboxPod("good", `exec sleep 3600`)
	st := syncUntil(t, r, good, 10*time.Second, "running", running("app"))
	goodID := containerStatus(st, "app").ContainerID

	missing := busyboxPod("missing-image", `true`)
	missing.Spec.Containers[0].Image = "tether.test/missing:1"
	st = syncUntil(t, r, missing, 30*time.Second, "image pull failure", func(st *corev1.PodStatus) bool {
		w := containerStatus(st, "app").State.Waiting
		return w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff")
	})
	if w := containerStatus(st, "app").State.Waiting; !strings.Contains(w.Message, "tether.test/missing:1") || st.Phase != corev1.PodPending {
		t.Errorf("missing image:\n%s", describe(st))
	}
	syncUntil(t, r, missing, 10*time.Second, "ImagePullBackOff", func(st *corev1.PodStatus) bool {
		w := containerStatus(st, "app").State.Waiting
		return w != nil && w.Reason == "ImagePullBackOff" && strings.Contains(w.Message, "tether.test/missing:1")
	})

	never := busyboxPod("never-pull", `true`)
	never.Spec.Containers[0].Image = "tether.test/missing:2"
	never.Spec.Containers[0].ImagePullPolicy = corev1.PullNever
	st, err := r.SyncPod(t.Context(), never)
	if err != nil {
		t.Fatal(err)
	}
	if w := containerStatus(st, "app").State.Waiting; w == nil || w.Reason != "ErrImageNeverPull" || !strings.Contains(w.Message, "tether.test/missing:2") {
		t.Errorf("never pull:\n%s", describe(st))
	}

	invalid := busyboxPod("invalid", `true`)
	invalid.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "nowhere", MountPath: "/x"}}
	st, err = r.SyncPod(t.Context(), invalid)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != corev1.PodFailed || st.Reason != "InvalidSpec" || !strings.Contains(st.Message, `volume "nowhere" is not defined`) {
		t.Errorf("invalid pod:\n%s", describe(st))
	}

	noConfig := busyboxPod("no-config", `true`)
	noConfig.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}}}}
	st, err = r.SyncPod(t.Context(), noConfig)
	if err != nil {
		t.Fatal(err)
	}
	if w := containerStatus(st, "app").State.Waiting; w == nil || w.Reason != "CreateContainerConfigError" || !strings.Contains(w.Message, `configmap "absent" not found`) {
		t.Errorf("missing configmap:\n%s", describe(st))
	}
	// Once it exists, the pod starts.
	objs.setConfigMap("default", "absent", map[string]string{"A": "1"})
	syncUntil(t, r, noConfig, 10*time.Second, "started once the configmap exists", func(st *corev1.PodStatus) bool {
		return containerStatus(st, "app").ContainerID != ""
	})

	st, err = r.SyncPod(t.Context(), good)
	if err != nil {
		t.Fatal(err)
	}
	if cs := containerStatus(st, "app"); cs.ContainerID != goodID || cs.State.Running == nil || cs.RestartCount != 0 {
		t.Errorf("good pod disturbed:\n%s", describe(st))
	}
}

func TestVolumeKinds(t *testing.T) {
	objs := newObjects()
	objs.setConfigMap("default", "cm", map[string]string{"app.conf": "level=1", "other": "x"})
	objs.setSecret("default", "sec", map[string][]byte{"password": []byte("pw-1")})
	r := newRuntime(t, objs)
	hostDir := t.TempDir()
	os.WriteFile(filepath.Join(hostDir, "host.txt"), []byte("from-host"), 0o644)

	pod := busyboxPod("volumes", `while true; do `+
		`echo "cm=$(cat /cm/conf) sec=$(cat /sec/password) secmode=$(stat -c %a /sec/..data/password) `+
		`proj=$(cat /proj/conf)/$(cat /proj/password)/$(cat /proj/podname) dapi=$(cat /dapi/labels) `+
		`host=$(cat /host/host.txt) sub=$(cat /sub.conf) tmp=$(df /sec | tail -1 | cut -c1-5)"; sleep 0.3; done`)
	pod.Labels = map[string]string{"app": "vol"}
	mode := int32(0o400)
	ref := func(n string) corev1.LocalObjectReference { return corev1.LocalObjectReference{Name: n} }
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: ref("cm"),
			Items: []corev1.KeyToPath{{Key: "app.conf", Path: "conf"}}}}},
		{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec", DefaultMode: &mode}}},
		{Name: "proj", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: ref("cm"), Items: []corev1.KeyToPath{{Key: "app.conf", Path: "conf"}}}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: ref("sec")}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
				{Path: "podname", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}},
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
			{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: ref("kube-root-ca.crt")}},
		}}}},
		{Name: "dapi", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}}},
		{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir}}},
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{
		{Name: "cm", MountPath: "/cm"}, {Name: "sec", MountPath: "/sec"}, {Name: "proj", MountPath: "/proj"},
		{Name: "dapi", MountPath: "/dapi"}, {Name: "host", MountPath: "/host", ReadOnly: true},
		{Name: "cm", MountPath: "/sub.conf", SubPath: "conf"}, {Name: "scratch", MountPath: "/scratch"},
	}
	syncUntil(t, r, pod, 10*time.Second, "running", running("app"))
	log := logPath(r, pod, "app", 0)
	waitLog(t, log, `cm=level=1 sec=pw-1 secmode=400 proj=level=1/pw-1/volumes dapi=app="vol" host=from-host sub=level=1 tmp=tmpfs`, 10*time.Second)

	// The secret and the configmap change: both volumes follow (the subPath
	// mount does not, as in Kubernetes).
	objs.setConfigMap("default", "cm", map[string]string{"app.conf": "level=2"})
	objs.setSecret("default", "sec", map[string][]byte{"password": []byte("pw-2")})
	if _, err := r.SyncPod(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	waitLog(t, log, `cm=level=2 sec=pw-2 secmode=400 proj=level=2/pw-2/volumes`, 10*time.Second)
	if b, _ := os.ReadFile(log); strings.Contains(string(b), "sub=level=2") {
		t.Error("the subPath mount followed the update")
	}

	// The tmpfs of the secret volume is unmounted by KillPod.
	secDir := r.volumeDir(string(pod.UID), "sec")
	if !isMountPoint(secDir) {
		t.Errorf("%s is not a mount point", secDir)
	}
	if err := r.KillPod(t.Context(), pod.UID, time.Second); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), r.podDir(string(pod.UID))) {
		t.Errorf("mounts left under %s", r.podDir(string(pod.UID)))
	}
}

func TestSandboxLossAndAdoption(t *testing.T) {
	objs := newObjects()
	r := newRuntime(t, objs)
	pod := busyboxPod("phoenix", `trap "exit 0" TERM; echo started; while true; do sleep 0.2; done`)
	st := syncUntil(t, r, pod, 10*time.Second, "running", running("app"))
	id := containerStatus(st, "app").ContainerID

	// A second Runtime on the same containerd and directories (edgecore
	// restarted) adopts the pod: nothing restarts.
	r2, err := New(t.Context(), r.cfg, objs, r.log)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	st2, err := r2.SyncPod(t.Context(), pod)
	if err != nil {
		t.Fatal(err)
	}
	if cs := containerStatus(st2, "app"); cs.ContainerID != id || cs.RestartCount != 0 || cs.State.Running == nil || st2.PodIP != st.PodIP {
		t.Errorf("adopted pod changed:\n%s\n%s", describe(st), describe(st2))
	}

	// The image changes: the container is replaced at once.
	pod.Spec.Containers[0].Image, pod.Spec.Containers[0].Command = containerd.PauseImage, nil
	st = syncUntil(t, r, pod, 20*time.Second, "running the new image", func(st *corev1.PodStatus) bool {
		cs := containerStatus(st, "app")
		return cs.State.Running != nil && cs.ContainerID != id
	})
	if cs := containerStatus(st, "app"); cs.RestartCount != 1 || cs.Image != containerd.PauseImage {
		t.Errorf("after an image change:\n%s", describe(st))
	}
	id = containerStatus(st, "app").ContainerID

	// The sandbox dies: a new one is made and the container starts again,
	// its restart count going on.
	stopSandbox(t, r, pod)
	st = syncUntil(t, r, pod, 20*time.Second, "running in a new sandbox", func(st *corev1.PodStatus) bool {
		cs := containerStatus(st, "app")
		return cs.State.Running != nil && cs.ContainerID != id
	})
	if cs := containerStatus(st, "app"); cs.RestartCount != 2 {
		t.Errorf("restart count after a new sandbox:\n%s", describe(st))
	}
	sbs, _ := r.listSandboxes(t.Context(), pod.UID)
	if len(sbs) != 1 || sbs[0].Metadata.Attempt != 1 {
		t.Errorf("sandboxes after recovery: %v", sbs)
	}

	// With restartPolicy Never, a pod whose sandbox died stays down.
	once := busyboxPod("once", `exec sleep 3600`)
	once.Spec.RestartPolicy = corev1.RestartPolicyNever
	syncUntil(t, r, once, 10*time.Second, "running", running("app"))
	stopSandbox(t, r, once)
	st = syncUntil(t, r, once, 10*time.Second, "failed", func(st *corev1.PodStatus) bool { return st.Phase == corev1.PodFailed })
	if sbs, _ := r.listSandboxes(t.Context(), once.UID); len(sbs) != 1 || sbs[0].State == runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Errorf("a Never pod got a new sandbox: %v\n%s", sbs, describe(st))
	}
}

func TestRelistNotifiesOnExit(t *testing.T) {
	objs := newObjects()
	r := newRuntime(t, objs)
	notified := make(chan struct{}, 16)
	r.cfg.Notify = func() {
		select {
		case notified <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- r.Start(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	ctl := t.TempDir()
	pod := busyboxPod("short", `while [ ! -f /ctl/exit ]; do sleep 0.1; done`)
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	pod.Spec.Volumes = []corev1.Volume{{Name: "ctl", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: ctl}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "ctl", MountPath: "/ctl"}}
	syncUntil(t, r, pod, 10*time.Second, "running", running("app"))
	time.Sleep(2500 * time.Millisecond) // the relist has seen it running
	for len(notified) > 0 {
		<-notified
	}
	os.WriteFile(filepath.Join(ctl, "exit"), nil, 0o644)
	select {
	case <-notified:
	case <-time.After(10 * time.Second):
		t.Fatal("no notification when the container exited")
	}
	st, err := r.SyncPod(t.Context(), pod)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != corev1.PodSucceeded {
		t.Errorf("after the notification:\n%s", describe(st))
	}
}

func TestPullAlwaysUsesPresentImageWithoutRegistry(t *testing.T) {
	r := newRuntime(t, newObjects())
	pod := busyboxPod("always", `exec sleep 3600`)
	pod.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways
	// The pull fails at the closed port (the registry unreachable): the
	// image present starts, after that one pull.
	syncUntil(t, r, pod, 10*time.Second, "running from the image present", running("app"))
}

func TestLogRotation(t *testing.T) {
	r := newRuntime(t, newObjects())
	r.cfg.ContainerLogMaxSize = resource.MustParse("4Ki")
	r.cfg.ContainerLogMaxFiles = 3
	pod := busyboxPod("chatty", `i=0; while true; do i=$((i+1)); for j in 0 1 2 3 4 5 6 7 8 9; do `+
		`echo "line $i.$j ..........................................................................................."; done; sleep 0.05; done`)
	syncUntil(t, r, pod, 10*time.Second, "running", running("app"))
	log := logPath(r, pod, "app", 0)
	var rotated []string
	for i := 0; i < 40 && len(rotated) < 2; i++ {
		time.Sleep(300 * time.Millisecond)
		if _, err := r.SyncPod(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
		rotated, _ = filepath.Glob(log + ".*")
	}
	for i := 0; i < 3; i++ { // more rotations keep two old files
		time.Sleep(300 * time.Millisecond)
		if _, err := r.SyncPod(t.Context(), pod); err != nil {
			t.Fatal(err)
		}
	}
	rotated, _ = filepath.Glob(log + ".*")
	if len(rotated) != 2 {
		t.Errorf("rotated files %v, want 2 (containerLogMaxFiles 3)", rotated)
	}
	// The container goes on writing to the reopened file.
	fi1, err := os.Stat(log)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	fi2, _ := os.Stat(log)
	if fi2.Size() <= fi1.Size() && fi2.ModTime().Equal(fi1.ModTime()) {
		t.Errorf("log %s not written after rotation", log)
	}
}

func TestHostPort(t *testing.T) {
	ip := nodeAddress(t)
	r := newRuntime(t, newObjects())
	port := 20000 + int32(time.Now().UnixNano()%10000)
	pod := busyboxPod("hostport", `mkdir -p /www; echo hello-hostport > /www/index.html; exec httpd -f -p 8080 -h /www`)
	pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 8080, HostPort: port, Protocol: corev1.ProtocolTCP}}
	syncUntil(t, r, pod, 10*time.Second, "running", running("app"))
	url := fmt.Sprintf("http://%s/index.html", net.JoinHostPort(ip, fmt.Sprint(port)))
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), "hello-hostport") {
				return
			}
			err = fmt.Errorf("status %d: %s", resp.StatusCode, b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nodeAddress is a non-loopback IPv4 address of this machine, not on a
// test bridge.
func nodeAddress(t *testing.T) string {
	ifaces, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifaces {
		if i.Flags&net.FlagLoopback != 0 || i.Flags&net.FlagUp == 0 ||
			strings.HasPrefix(i.Name, "tt") || strings.HasPrefix(i.Name, "veth") || strings.HasPrefix(i.Name, "cni") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				return n.IP.String()
			}
		}
	}
	t.Skip("no non-loopback IPv4 address")
	return ""
}

// stopSandbox stops the pod's one sandbox behind the Runtime's back, as a
// crash of its pause process would.
func stopSandbox(t *testing.T, r *Runtime, pod *corev1.Pod) {
	t.Helper()
	sbs, err := r.listSandboxes(t.Context(), pod.UID)
	if err != nil || len(sbs) != 1 {
		t.Fatal(sbs, err)
	}
	if _, err := r.rs.StopPodSandbox(t.Context(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: sbs[0].Id}); err != nil {
		t.Fatal(err)
	}
}

// A pod directory without a sandbox (a setup or kill cut short by a stop
// or a crash), with a tmpfs volume holding a secret, is listed by Pods
// beside the running pod, so that the pod engine kills it as unknown:
// KillPod unmounts the tmpfs and removes the directory, and touches
// neither the running pod nor a directory whose name cannot be a UID.
func TestOrphanPodDirectoryRemoved(t *testing.T) {
	r := newRuntime(t, newObjects())
	pod := busyboxPod("orphan-neighbour", "sleep 600")
	syncUntil(t, r, pod, time.Minute, "running", running("app"))

	const orphan = types.UID("00000000-0000-4000-8000-0000000000aa")
	vol := r.volumeDir(string(orphan), "secret-creds")
	if err := os.MkdirAll(vol, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := mountTmpfs(vol, "size=64k,mode=0700"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(vol, syscall.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(vol, "password"), []byte("hunter2"), 0o600); err != nil {
		t.Fatal(err)
	}
	odd := filepath.Join(r.cfg.RootDir, "pods", "not*a-uid")
	if err := os.MkdirAll(odd, 0o700); err != nil {
		t.Fatal(err)
	}

	uids, err := r.Pods(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []types.UID{orphan, pod.UID}
	slices.Sort(want)
	if !slices.Equal(uids, want) {
		t.Fatalf("Pods = %v, want %v (the orphan and the running pod, once each)", uids, want)
	}
	if err := r.KillPod(t.Context(), orphan, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(r.podDir(string(orphan))); !os.IsNotExist(err) {
		t.Errorf("orphan pod directory left (%v)", err)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), vol) {
		t.Errorf("the orphan's tmpfs is still mounted")
	}
	if _, err := os.Stat(odd); err != nil {
		t.Errorf("a directory that is not a pod's removed: %v", err)
	}
	uids, err = r.Pods(t.Context())
	if err != nil || !slices.Equal(uids, []types.UID{pod.UID}) {
		t.Errorf("Pods after = %v, %v; want only %s", uids, err, pod.UID)
	}
	if st := mustSync(t, r, pod); !running("app")(st) {
		t.Errorf("the running pod: %s", describe(st))
	}
}
