//go:build integration

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// The tests of this file run the whole stack on containerd: the API server,
// cloudcore, edgecore with `runtime: cri`, and the private containerd of
// containerd(t) with the test images (testimages: pause and busybox). Each
// runs one CRI edge (see newCRIEdge).

// criPod is a busybox pod bound to node that runs script with sh -c.
func criPod(t *testing.T, ns, name, node, script string) *corev1.Pod {
	p := barePod(ns, name, node)
	c := &p.Spec.Containers[0]
	c.Image = containerd(t).BusyboxImage
	c.ImagePullPolicy = corev1.PullIfNotPresent // no registry: the image is imported
	c.Command = []string{"sh", "-c", script}
	return p
}

func createPod(t *testing.T, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	p, err := client.CoreV1().Pods(p.Namespace).Create(t.Context(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitPod waits until cond holds for the pod as the API server has it and
// returns that pod. cond's error explains what it still waits for.
func waitPod(t *testing.T, ns, name string, timeout time.Duration, what string, cond func(*corev1.Pod) (bool, error)) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	eventually(t, timeout, "pod "+name+" "+what, func() (bool, error) {
		var err error
		p, err = client.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		ok, err := cond(p)
		if err != nil {
			err = fmt.Errorf("%w; status: %s", err, describePod(p))
		}
		return ok, err
	})
	return p
}

func runningAndReady(p *corev1.Pod) (bool, error) {
	if p.Status.Phase != corev1.PodRunning || !podReady(p) {
		return false, fmt.Errorf("not Running and Ready")
	}
	return true, nil
}

// describePod is the pod's status in one line, for failures.
func describePod(p *corev1.Pod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase=%s reason=%s message=%q ready=%v", p.Status.Phase, p.Status.Reason, p.Status.Message, podReady(p))
	for _, cs := range p.Status.ContainerStatuses {
		fmt.Fprintf(&b, "; container %s id=%s restarts=%d state=%s last=%s", cs.Name, cs.ContainerID,
			cs.RestartCount, stateOf(cs.State), stateOf(cs.LastTerminationState))
	}
	return b.String()
}

func stateOf(s corev1.ContainerState) string {
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

func mainStatus(p *corev1.Pod) corev1.ContainerStatus {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == "main" {
			return cs
		}
	}
	return corev1.ContainerStatus{}
}

// logFile is the CRI log file of the pod's main container's attempt, under
// the edge's podLogDir.
func (e *edge) logFile(p *corev1.Pod, attempt int) string {
	return filepath.Join(e.cri.PodLogDir, p.Namespace+"_"+p.Name+"_"+string(p.UID), "main", fmt.Sprintf("%d.log", attempt))
}

// waitFileHolds waits until the file holds want.
func waitFileHolds(t *testing.T, path, want string, timeout time.Duration) {
	t.Helper()
	var b []byte
	eventually(t, timeout, fmt.Sprintf("%s to hold %q", path, want), func() (bool, error) {
		var err error
		b, err = os.ReadFile(path)
		return strings.Contains(string(b), want), fmt.Errorf("%v; it holds %q", err, tailString(string(b), 300))
	})
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// criContainers lists the containers containerd holds for the pod, through
// the CRI API, as the edge's runtime sees them.
func criContainers(t *testing.T, uid types.UID) []*runtimeapi.Container {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+containerd(t).Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	list, err := runtimeapi.NewRuntimeServiceClient(conn).ListContainers(t.Context(), &runtimeapi.ListContainersRequest{
		Filter: &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"io.kubernetes.pod.uid": string(uid)}}})
	if err != nil {
		t.Fatal(err)
	}
	return list.Containers
}

// criRun is a container as containerd has it: what changes when it is
// restarted.
type criRun struct {
	ID      string
	Attempt uint32
	State   runtimeapi.ContainerState
}

func criRuns(t *testing.T, uid types.UID) []criRun {
	t.Helper()
	var out []criRun
	for _, c := range criContainers(t, uid) {
		out = append(out, criRun{ID: c.Id, Attempt: c.GetMetadata().GetAttempt(), State: c.State})
	}
	slices.SortFunc(out, func(a, b criRun) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// A busybox pod with a configMap volume and an env var from a secret runs
// in containerd and is Running in the API server; its container log shows
// both values, and a change of the configmap in the API server reaches the
// mounted file without a restart.
func TestCRIConfigMapVolumeAndSecretEnv(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := newCRIEdge(t, c, "e2e-cri-config")
	e.start()

	cm, err := client.CoreV1().ConfigMaps(ns).Create(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cfg"}, Data: map[string]string{"greeting": "hello-1"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sec"}, Data: map[string][]byte{"token": []byte("s3cret")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := criPod(t, ns, "web", e.name, `echo "token=$TOKEN"; while true; do echo "file=$(cat /etc/cfg/greeting)"; sleep 0.5; done`)
	p.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}}
	ctr := &p.Spec.Containers[0]
	ctr.VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/cfg", ReadOnly: true}}
	ctr.Env = []corev1.EnvVar{{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "token"}}}}
	created := time.Now()
	p = createPod(t, p)

	p = waitPod(t, ns, p.Name, 90*time.Second, "Running and Ready", runningAndReady)
	t.Logf("pod Running and Ready in the API server %s after its create", time.Since(created).Round(time.Millisecond))
	cs := mainStatus(p)
	if !strings.HasPrefix(cs.ContainerID, "containerd://") || cs.State.Running == nil || p.Status.PodIP == "" {
		t.Errorf("status: %s, pod IP %q", describePod(p), p.Status.PodIP)
	}
	log := e.logFile(p, 0)
	waitFileHolds(t, log, "token=s3cret", 20*time.Second)
	waitFileHolds(t, log, "file=hello-1", 20*time.Second)

	cm.Data["greeting"] = "hello-2"
	changed := time.Now()
	if _, err := client.CoreV1().ConfigMaps(ns).Update(t.Context(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFileHolds(t, filepath.Join(e.dir, "pods", string(p.UID), "volumes", "cfg", "greeting"), "hello-2", 30*time.Second)
	waitFileHolds(t, log, "file=hello-2", 30*time.Second)
	t.Logf("configmap change in the container %s after the update", time.Since(changed).Round(time.Millisecond))

	p, err = client.CoreV1().Pods(ns).Get(t.Context(), p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if now := mainStatus(p); now.ContainerID != cs.ContainerID || now.RestartCount != 0 || p.Status.Phase != corev1.PodRunning {
		t.Errorf("container restarted on a configmap change: %s", describePod(p))
	}
}

// A container that exits under restartPolicy Always is restarted with a
// back-off, and a container whose liveness probe fails is restarted; the
// restart counts reach the API server.
func TestCRIRestartsReachAPIServer(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := newCRIEdge(t, c, "e2e-cri-restarts")
	e.start()

	crasher := createPod(t, criPod(t, ns, "crasher", e.name, `echo "run at $(date +%s)"; sleep 3; exit 3`))
	// Healthy for two seconds after each start.
	sick := criPod(t, ns, "sick", e.name, `touch /tmp/ok; (sleep 2; rm /tmp/ok) & while true; do sleep 1; done`)
	sick.Spec.Containers[0].LivenessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/ok"}}},
		PeriodSeconds: 1, FailureThreshold: 2, TimeoutSeconds: 1,
	}
	sick = createPod(t, sick)

	// Watch the crasher's statuses for a CrashLoopBackOff between restarts.
	var mu sync.Mutex
	var backoffMsgs []string
	w, err := client.CoreV1().Pods(ns).Watch(t.Context(), metav1.ListOptions{FieldSelector: "metadata.name=crasher"})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok {
				if wt := mainStatus(p).State.Waiting; wt != nil && wt.Reason == "CrashLoopBackOff" {
					mu.Lock()
					backoffMsgs = append(backoffMsgs, wt.Message)
					mu.Unlock()
				}
			}
		}
	}()

	restarted := func(n int32) func(*corev1.Pod) (bool, error) {
		return func(p *corev1.Pod) (bool, error) {
			cs := mainStatus(p)
			return cs.RestartCount >= n && cs.State.Running != nil && p.Status.Phase == corev1.PodRunning,
				fmt.Errorf("want restartCount >= %d and running", n)
		}
	}
	start := time.Now()
	for _, p := range []*corev1.Pod{crasher, sick} {
		waitPod(t, ns, p.Name, 90*time.Second, "restarted once", restarted(1))
		t.Logf("%s: restartCount 1 in the API server %s after its create", p.Name, time.Since(start).Round(time.Millisecond))
	}
	for _, p := range []*corev1.Pod{crasher, sick} {
		got := waitPod(t, ns, p.Name, 90*time.Second, "restarted twice", restarted(2))
		t.Logf("%s: restartCount %d in the API server %s after its create", p.Name, mainStatus(got).RestartCount,
			time.Since(start).Round(time.Millisecond))
		if last := mainStatus(got).LastTerminationState.Terminated; last == nil {
			t.Errorf("%s: no last termination state: %s", p.Name, describePod(got))
		} else if p.Name == "crasher" && last.ExitCode != 3 {
			t.Errorf("crasher: last exit code %d, want 3: %s", last.ExitCode, describePod(got))
		}
	}
	// As the kubelet does, the first restart is at once, the second after
	// backoffInitial, the third after twice that. The API's times are in
	// whole seconds.
	got := waitPod(t, ns, crasher.Name, 90*time.Second, "restarted three times", restarted(3))
	cs := mainStatus(got)
	if last := cs.LastTerminationState.Terminated; last == nil {
		t.Errorf("crasher: no last termination state: %s", describePod(got))
	} else if gap := cs.State.Running.StartedAt.Sub(last.FinishedAt.Time); gap < 2*criBackoff.initial-time.Second {
		t.Errorf("crasher: restart %d came %s after the exit, want a back-off of %s", cs.RestartCount, gap, 2*criBackoff.initial)
	} else {
		t.Logf("crasher: restart %d came %s after the exit (back-off %s)", cs.RestartCount, gap, 2*criBackoff.initial)
	}
	w.Stop()
	<-watched
	mu.Lock()
	defer mu.Unlock()
	if len(backoffMsgs) == 0 {
		t.Errorf("the crasher never showed CrashLoopBackOff in the API server")
	} else if !strings.Contains(backoffMsgs[0], "back-off") {
		t.Errorf("CrashLoopBackOff message %q", backoffMsgs[0])
	}
}

// With the link cut, edgecore is stopped and started again: every pod is
// Running again in the runtime within 10s of the start, and no container
// was restarted, since they kept running under containerd. After the heal
// the API server shows the same pods Running and Ready, restart counts
// unchanged.
func TestCRIOfflineRestartKeepsContainers(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := newCRIEdge(t, c, "e2e-cri-offline")
	e.start()
	const n = 5
	for i := range n {
		createPod(t, criPod(t, ns, fmt.Sprintf("p%d", i), e.name, `exec sleep 3600`))
	}
	before := map[types.UID]corev1.ContainerStatus{} // by pod UID
	eventually(t, 90*time.Second, "pods Running and Ready", func() (bool, error) {
		pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if ok, err := runningAndReady(&p); !ok {
				return false, fmt.Errorf("%s: %w", p.Name, err)
			}
			before[p.UID] = mainStatus(&p)
		}
		return len(pods.Items) == n, nil
	})
	waitSettled(t, ns, e)
	eventually(t, 30*time.Second, "the outbox empty", func() (bool, error) {
		var l int
		err := e.ec.DB.View(func(tx *store.Tx) error { l = tx.OutboxLen(); return nil })
		return l == 0, err
	})
	runs := map[types.UID][]criRun{}
	for uid := range before {
		runs[uid] = criRuns(t, uid)
		if len(runs[uid]) != 1 || runs[uid][0].State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Fatalf("pod %s: containers %+v, want one running", uid, runs[uid])
		}
	}

	e.link.Cut()
	e.stop()
	start := time.Now()
	e.start()
	// The restarted edgecore's pod manager queues the status the runtime
	// reports for every pod on its first sync (the outbox was empty).
	var recovery time.Duration
	eventually(t, 60*time.Second, "every pod Running and Ready in the runtime with no cloud", func() (bool, error) {
		st := e.outboxStatuses()
		for uid := range before {
			s := st[uid]
			if s == nil || s.Phase != corev1.PodRunning || len(s.ContainerStatuses) != 1 || !s.ContainerStatuses[0].Ready {
				return false, fmt.Errorf("pod %s: no Running and Ready status queued", uid)
			}
		}
		recovery = time.Since(start)
		return true, nil
	})
	t.Logf("%d pods Running again in the runtime %s after an offline edgecore start", n, recovery.Round(time.Millisecond))
	if recovery > 10*time.Second {
		t.Errorf("pods Running again %s after edgecore's start; the target is 10s", recovery.Round(time.Millisecond))
	}
	for uid, was := range runs {
		if now := criRuns(t, uid); !slices.Equal(now, was) {
			t.Errorf("pod %s: containers were %+v, now %+v: restarted", uid, was, now)
		}
	}
	for uid, s := range e.outboxStatuses() {
		if was, ok := before[uid]; ok && (s.ContainerStatuses[0].ContainerID != was.ContainerID || s.ContainerStatuses[0].RestartCount != was.RestartCount) {
			t.Errorf("pod %s: status after the restart %+v, before %+v", uid, s.ContainerStatuses[0], was)
		}
	}

	// Offline long enough for the node lifecycle controller to mark the
	// node and its pods not ready.
	waitNodeReady(t, e.name, corev1.ConditionUnknown, nodeMonitorGrace+30*time.Second)
	eventually(t, 30*time.Second, "pods marked not Ready by the node lifecycle controller", func() (bool, error) {
		pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if podReady(&p) {
				return false, fmt.Errorf("pod %s still Ready", p.Name)
			}
		}
		return true, nil
	})
	t.Logf("node Ready=Unknown and its pods not Ready %s after the cut", time.Since(start).Round(time.Millisecond))

	e.link.Heal()
	healed := time.Now()
	eventually(t, 60*time.Second, "edge resynced", func() (bool, error) {
		s := e.ec.Agent.State()
		return s.Connected && s.LastResync != nil, fmt.Errorf("agent %+v", s)
	})
	waitNodeReady(t, e.name, corev1.ConditionTrue, 60*time.Second)
	eventually(t, 60*time.Second, "the same pods Running and Ready, not restarted", func() (bool, error) {
		pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		if len(pods.Items) != n {
			return false, fmt.Errorf("%d pods", len(pods.Items))
		}
		for _, p := range pods.Items {
			was, ok := before[p.UID]
			switch {
			case !ok:
				return false, fmt.Errorf("pod %s has a new UID %s: replaced", p.Name, p.UID)
			case p.DeletionTimestamp != nil:
				return false, fmt.Errorf("pod %s is being deleted", p.Name)
			}
			if ok, err := runningAndReady(&p); !ok {
				return false, fmt.Errorf("%s: %w", p.Name, err)
			}
			if cs := mainStatus(&p); cs.ContainerID != was.ContainerID || cs.RestartCount != was.RestartCount {
				return false, fmt.Errorf("pod %s: container %s restarts %d, was %s restarts %d", p.Name,
					cs.ContainerID, cs.RestartCount, was.ContainerID, was.RestartCount)
			}
		}
		return true, nil
	})
	t.Logf("API server shows the pods Running and Ready %s after the heal", time.Since(healed).Round(time.Millisecond))
}

// outboxStatuses returns the pod statuses queued in the edge's outbox, by
// pod UID.
func (e *edge) outboxStatuses() map[types.UID]*corev1.PodStatus {
	out := map[types.UID]*corev1.PodStatus{}
	err := e.ec.DB.View(func(tx *store.Tx) error {
		return tx.Outbox(0, func(it store.OutboxItem) bool {
			f, err := protocol.Decode(it.Frame)
			if err != nil || f.PodStatus == nil {
				return true
			}
			if st, err := protocol.DecodePodStatus(f.PodStatus.Status); err == nil {
				out[types.UID(f.PodStatus.UID)] = st
			}
			return true
		})
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// A pod whose image is missing and a pod whose spec the API server accepts
// but the runtime refuses get statuses that say so in the API server; a
// pod next to them stays Running throughout.
func TestCRIBadPodsReported(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := newCRIEdge(t, c, "e2e-cri-bad")
	e.start()

	good := createPod(t, criPod(t, ns, "good", e.name, `exec sleep 3600`))
	good = waitPod(t, ns, good.Name, 90*time.Second, "Running and Ready", runningAndReady)
	goodID := mainStatus(good).ContainerID
	// goodStays fails the test unless the good pod is Running and Ready
	// with the container it had.
	goodStays := func() {
		t.Helper()
		p, err := client.CoreV1().Pods(ns).Get(t.Context(), good.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cs := mainStatus(p); p.Status.Phase != corev1.PodRunning || !podReady(p) || cs.ContainerID != goodID || cs.RestartCount != 0 {
			t.Fatalf("good pod disturbed: %s", describePod(p))
		}
	}

	const missingImage = "tether.test/busybox-missing:1"
	missing := criPod(t, ns, "missing-image", e.name, `true`)
	missing.Spec.Containers[0].Image = missingImage
	missing = createPod(t, missing)
	// The API server accepts a subPath that starts with "..", such as
	// "..data" (it refuses only ".." as a path element); the runtime
	// refuses it, as the atomic writer's ..data links live there.
	invalid := criPod(t, ns, "invalid", e.name, `exec sleep 3600`)
	invalid.Spec.Volumes = []corev1.Volume{{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	invalid.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "work", MountPath: "/work", SubPath: "..data"}}
	invalid = createPod(t, invalid)

	reasons := map[string]bool{}
	waitPod(t, ns, missing.Name, 90*time.Second, "waiting on a failed pull naming the image", func(p *corev1.Pod) (bool, error) {
		goodStays()
		w := mainStatus(p).State.Waiting
		if w == nil || (w.Reason != "ErrImagePull" && w.Reason != "ImagePullBackOff") {
			return false, fmt.Errorf("not waiting in ErrImagePull or ImagePullBackOff")
		}
		reasons[w.Reason] = true
		if !strings.Contains(w.Message, missingImage) || p.Status.Phase != corev1.PodPending {
			t.Fatalf("missing image: message does not name the image or phase not Pending: %s", describePod(p))
		}
		return true, nil
	})
	p := waitPod(t, ns, invalid.Name, 90*time.Second, "Failed with InvalidSpec", func(p *corev1.Pod) (bool, error) {
		goodStays()
		return p.Status.Phase == corev1.PodFailed && p.Status.Reason == "InvalidSpec", fmt.Errorf("not Failed/InvalidSpec")
	})
	if !strings.Contains(p.Status.Message, "subPath") || !strings.Contains(p.Status.Message, "..data") || podReady(p) {
		t.Errorf("invalid pod's status does not name the problem: %s", describePod(p))
	}
	t.Logf("invalid pod: %s: %s", p.Status.Reason, p.Status.Message)
	if cs := criContainers(t, invalid.UID); len(cs) != 0 {
		t.Errorf("invalid pod has containers: %v", cs)
	}

	// The pull is retried after its back-off: ImagePullBackOff between
	// pulls, still naming the image.
	waitPod(t, ns, missing.Name, 90*time.Second, "in ImagePullBackOff naming the image", func(p *corev1.Pod) (bool, error) {
		goodStays()
		w := mainStatus(p).State.Waiting
		if w != nil {
			reasons[w.Reason] = true
		}
		return w != nil && w.Reason == "ImagePullBackOff" && strings.Contains(w.Message, missingImage), fmt.Errorf("not in ImagePullBackOff")
	})
	p, err := client.CoreV1().Pods(ns).Get(t.Context(), missing.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("missing image: reasons seen %v; last: %s", reasons, stateOf(mainStatus(p).State))
	goodStays()
	if runs := criRuns(t, good.UID); len(runs) != 1 || runs[0].Attempt != 0 || runs[0].State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("good pod's containers in containerd: %+v", runs)
	}
}
