package cri

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"
	grpcstatus "google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tether-edge/tether/edgecore/events"
)

// podSync is one SyncPod call: what containerd holds for the pod, what was
// done about it and why containers wait.
type podSync struct {
	r   *Runtime
	pod *corev1.Pod
	ps  *podState
	now time.Time

	sandboxID  string
	attempt    uint32 // the sandbox's
	sandbox    *runtimeapi.PodSandboxStatus
	sandboxErr error
	// frozen: the sandbox is gone and the pod must not run again (restart
	// policy); only its status is reported.
	frozen bool
	// containers by name, newest attempt first.
	containers map[string][]*runtimeapi.ContainerStatus
	// waiting says why a container is not running when it should.
	waiting   map[string]*corev1.ContainerStateWaiting
	env       *podEnv
	vols      map[string]string
	volErrs   map[string]error
	imageUser map[string]int64
	initDone  bool
	// targets are the IDs of the containers whose PID namespace the
	// ephemeral containers being started join, by name.
	targets map[string]string
	// deadline: the pod ran past its activeDeadlineSeconds; it is stopped
	// and reported Failed (DeadlineExceeded), and never runs again.
	deadline bool
}

// SyncPod implements runtime.Runtime.
func (r *Runtime) SyncPod(ctx context.Context, pod *corev1.Pod) (*corev1.PodStatus, error) {
	if msg := validatePod(pod); msg != "" {
		return r.invalidStatus(pod, msg), nil
	}
	// The kubelet's admission of spec.os: a pod for another OS fails here.
	if podOS := pod.Spec.OS; podOS != nil && string(podOS.Name) != goruntime.GOOS {
		return r.rejectedStatus(pod, "PodOSNotSupported", "Failed to admit pod as the OS field doesn't match node OS"), nil
	}
	if name := forbiddenSysctl(pod); name != "" {
		return r.rejectedStatus(pod, "SysctlForbidden", fmt.Sprintf("forbidden sysctl: %q not allowlisted", name)), nil
	}
	s := &podSync{r: r, pod: pod, ps: r.state(pod), now: time.Now(),
		waiting: map[string]*corev1.ContainerStateWaiting{}, imageUser: map[string]int64{}}
	err := s.run(ctx)
	st := s.status()
	s.logWaiting()
	if err != nil {
		return st, fmt.Errorf("sync pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return st, nil
}

func (s *podSync) run(ctx context.Context) error {
	sandboxes, err := s.r.listSandboxes(ctx, s.pod.UID)
	if err != nil {
		s.sandboxErr = err
		return err
	}
	var ready *runtimeapi.PodSandbox
	for _, sb := range sandboxes {
		if sb.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			ready = sb
			break
		}
	}
	if s.pastDeadline(sandboxes) {
		return s.stopForDeadline(ctx, ready, sandboxes)
	}
	var errs []error
	switch {
	case ready != nil:
		s.sandboxID, s.attempt = ready.Id, ready.Metadata.GetAttempt()
		for _, sb := range sandboxes {
			if sb != ready {
				errs = append(errs, s.retireSandbox(ctx, sb))
			}
		}
	case len(sandboxes) > 0 && !s.mayRecreate(ctx, sandboxes[0]):
		s.sandboxID, s.attempt, s.frozen = sandboxes[0].Id, sandboxes[0].Metadata.GetAttempt(), true
	default:
		var attempt uint32
		if len(sandboxes) > 0 {
			attempt = sandboxes[0].Metadata.GetAttempt() + 1
			s.r.log.Info("pod sandbox is gone, making a new one", slog.String("pod", s.name()))
			s.r.event(s.pod, "", events.Normal, events.SandboxChanged, "Pod sandbox changed, it will be killed and re-created.")
		}
		for _, sb := range sandboxes {
			errs = append(errs, s.retireSandbox(ctx, sb))
		}
		id, err := s.r.runSandbox(ctx, s.pod, attempt)
		if err != nil {
			s.r.event(s.pod, "", events.Warning, events.FailedCreatePodSandBox, "Failed to create pod sandbox: %v", err)
			s.sandboxErr = err
			return errors.Join(append(errs, err)...)
		}
		s.sandboxID, s.attempt = id, attempt
	}
	cctx, cancel := s.r.call(ctx)
	st, err := s.r.rs.PodSandboxStatus(cctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: s.sandboxID})
	cancel()
	if err != nil {
		s.sandboxErr = fmt.Errorf("sandbox status: %w", err)
		return errors.Join(append(errs, s.sandboxErr)...)
	}
	s.sandbox = st.Status
	if err := s.observe(ctx); err != nil {
		return errors.Join(append(errs, err)...)
	}
	if s.frozen {
		s.updateProber()
		return errors.Join(errs...)
	}
	ip, ips := s.podIPs()
	s.env = &podEnv{objs: s.r.objs, pod: s.pod, podIP: ip, podIPs: ips, hostIP: s.r.cfg.NodeIP,
		nodeName: s.r.cfg.NodeName, nodeCPU: s.r.nodeCPU, nodeMem: s.r.nodeMem, inCluster: s.r.cfg.InCluster}
	s.vols, s.volErrs = s.r.volumes(s.env, s.ps)
	changed, err := s.act(ctx)
	errs = append(errs, err)
	if changed {
		errs = append(errs, s.observe(ctx))
	}
	errs = append(errs, s.gc(ctx))
	for _, insts := range s.containers {
		if insts[0].State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			s.r.rotateLog(ctx, insts[0])
		}
	}
	s.updateProber()
	return errors.Join(errs...)
}

func (s *podSync) name() string { return s.pod.Namespace + "/" + s.pod.Name }

// pastDeadline says whether the pod has been active longer than its
// activeDeadlineSeconds, counted from its start time (the API server's, else
// its oldest sandbox's creation), as the kubelet's activeDeadlineHandler.
func (s *podSync) pastDeadline(sandboxes []*runtimeapi.PodSandbox) bool {
	d := s.pod.Spec.ActiveDeadlineSeconds
	if d == nil {
		return false
	}
	var start time.Time
	switch {
	case s.pod.Status.StartTime != nil:
		start = s.pod.Status.StartTime.Time
	case len(sandboxes) > 0:
		for _, sb := range sandboxes {
			if t := time.Unix(0, sb.CreatedAt); start.IsZero() || t.Before(start) {
				start = t
			}
		}
	default:
		return false
	}
	return !s.now.Before(start.Add(time.Duration(*d) * time.Second))
}

// stopForDeadline stops the containers and the sandbox of a pod past its
// deadline (the preStop hooks and the grace period apply) and keeps the
// sandbox, so that its containers' last states are reported.
func (s *podSync) stopForDeadline(ctx context.Context, ready *runtimeapi.PodSandbox, sandboxes []*runtimeapi.PodSandbox) error {
	s.deadline, s.frozen = true, true
	if len(sandboxes) == 0 {
		return nil
	}
	sb := ready
	if sb == nil {
		sb = sandboxes[0]
	}
	s.sandboxID, s.attempt = sb.Id, sb.Metadata.GetAttempt()
	var errs []error
	if ready != nil {
		s.r.log.Info("pod past its active deadline: stopping it", slog.String("pod", s.name()))
		list, err := s.r.listContainers(ctx, s.pod.UID, "")
		if err != nil {
			return err
		}
		var g errgroup.Group
		for _, c := range list {
			if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
				continue
			}
			s.r.event(s.pod, c.Metadata.GetName(), events.Normal, events.Killing, "Stopping container %s", c.Metadata.GetName())
			g.Go(func() error { return s.r.stopContainer(ctx, s.pod, c.Id, c.Metadata.GetName(), podGrace(s.pod)) })
		}
		errs = append(errs, g.Wait())
		cctx, cancel := s.r.call(ctx)
		if _, err := s.r.rs.StopPodSandbox(cctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stop sandbox %s: %w", sb.Id, err))
		}
		cancel()
	}
	cctx, cancel := s.r.call(ctx)
	st, err := s.r.rs.PodSandboxStatus(cctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.Id})
	cancel()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("sandbox status: %w", err))...)
	}
	s.sandbox = st.Status
	errs = append(errs, s.observe(ctx))
	s.updateProber()
	return errors.Join(errs...)
}

// retireSandbox removes an old sandbox of the pod, remembering its
// containers' attempt numbers first.
func (s *podSync) retireSandbox(ctx context.Context, sb *runtimeapi.PodSandbox) error {
	cs, err := s.r.listContainers(ctx, s.pod.UID, sb.Id)
	if err != nil {
		return err
	}
	for _, c := range cs {
		s.noteAttempt(c.Metadata.GetName(), c.Metadata.GetAttempt())
		if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			if err := s.r.stopContainer(ctx, s.pod, c.Id, c.Metadata.GetName(), podGrace(s.pod)); err != nil {
				return err
			}
		}
	}
	return s.r.removeSandbox(ctx, sb.Id)
}

func (s *podSync) noteAttempt(name string, attempt uint32) {
	if a, ok := s.ps.attempts[name]; !ok || attempt > a {
		s.ps.attempts[name] = attempt
	}
}

// mayRecreate says whether a pod whose sandbox is gone runs again: not when
// its restart policy says its containers that ran stay down.
func (s *podSync) mayRecreate(ctx context.Context, sb *runtimeapi.PodSandbox) bool {
	cs, err := s.r.listContainers(ctx, s.pod.UID, sb.Id)
	if err != nil || len(cs) == 0 {
		return true
	}
	switch s.pod.Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		latest := map[string]*runtimeapi.Container{}
		for _, c := range cs {
			if l := latest[c.Metadata.GetName()]; l == nil || c.Metadata.GetAttempt() > l.Metadata.GetAttempt() {
				latest[c.Metadata.GetName()] = c
			}
		}
		for _, c := range s.pod.Spec.Containers {
			l := latest[c.Name]
			if l == nil {
				return true
			}
			st, err := s.r.containerStatus(ctx, l.Id)
			if err != nil || st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 0 {
				return true
			}
		}
		return false
	}
	return true
}

func (r *Runtime) containerStatus(ctx context.Context, id string) (*runtimeapi.ContainerStatus, error) {
	cctx, cancel := r.call(ctx)
	defer cancel()
	resp, err := r.rs.ContainerStatus(cctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return nil, fmt.Errorf("container status: %w", err)
	}
	return resp.Status, nil
}

// observe reads the sandbox's containers.
func (s *podSync) observe(ctx context.Context) error {
	list, err := s.r.listContainers(ctx, s.pod.UID, s.sandboxID)
	if err != nil {
		return err
	}
	s.containers = map[string][]*runtimeapi.ContainerStatus{}
	for _, c := range list {
		st, err := s.r.containerStatus(ctx, c.Id)
		if err != nil {
			return err
		}
		name := st.Metadata.GetName()
		s.containers[name] = append(s.containers[name], st)
		s.noteAttempt(name, st.Metadata.GetAttempt())
	}
	for _, insts := range s.containers {
		slices.SortFunc(insts, func(a, b *runtimeapi.ContainerStatus) int {
			if a.Metadata.GetAttempt() != b.Metadata.GetAttempt() {
				return int(b.Metadata.GetAttempt()) - int(a.Metadata.GetAttempt())
			}
			return int((b.CreatedAt - a.CreatedAt) / int64(time.Millisecond))
		})
	}
	return nil
}

func (s *podSync) podIPs() (string, []string) {
	if s.pod.Spec.HostNetwork {
		return s.r.cfg.NodeIP, []string{s.r.cfg.NodeIP}
	}
	n := s.sandbox.GetNetwork()
	if n == nil || n.Ip == "" {
		return "", nil
	}
	ips := []string{n.Ip}
	for _, a := range n.AdditionalIps {
		ips = append(ips, a.Ip)
	}
	return n.Ip, ips
}

func restartPolicy(pod *corev1.Pod) corev1.RestartPolicy {
	if pod.Spec.RestartPolicy == "" {
		return corev1.RestartPolicyAlways
	}
	return pod.Spec.RestartPolicy
}

// act starts what should run: the ephemeral containers that never ran, the
// first init container not done, or, once all are, every container that is
// missing, or exited and due a restart. It reports whether it created or
// stopped anything.
func (s *podSync) act(ctx context.Context) (bool, error) {
	ephemeral := s.startEphemeral(ctx)
	changed, err := s.actContainers(ctx)
	return ephemeral || changed, err
}

// actContainers is act for the init containers and the containers.
func (s *podSync) actContainers(ctx context.Context) (bool, error) {
	policy := restartPolicy(s.pod)
	for i := range s.pod.Spec.InitContainers {
		c := &s.pod.Spec.InitContainers[i]
		insts := s.containers[c.Name]
		if len(insts) > 0 && succeeded(insts[0]) {
			continue
		}
		if len(insts) == 0 {
			return s.start(ctx, c), nil
		}
		latest := insts[0]
		if latest.State == runtimeapi.ContainerState_CONTAINER_RUNNING || policy == corev1.RestartPolicyNever {
			return false, nil
		}
		return s.restart(ctx, c, latest), nil
	}
	s.initDone = true
	changed := false
	for i := range s.pod.Spec.Containers {
		c := &s.pod.Spec.Containers[i]
		insts := s.containers[c.Name]
		if len(insts) == 0 {
			changed = s.start(ctx, c) || changed
			continue
		}
		latest := insts[0]
		if latest.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			if why, msg, grace := s.killReason(c, latest); why != "" {
				s.r.event(s.pod, c.Name, events.Normal, events.Killing, "%s", msg)
				s.r.killAsync(s.ps, s.pod, latest.Id, c.Name, grace, why)
			}
			continue
		}
		if s.r.killing(latest.Id) {
			continue
		}
		if latest.Annotations[annotationHash] != containerHash(c) {
			// The spec changed (a new image): start the new one at once.
			changed = s.start(ctx, c) || changed
			continue
		}
		if !shouldRestart(policy, latest) {
			continue
		}
		changed = s.restart(ctx, c, latest) || changed
	}
	return changed, nil
}

func succeeded(st *runtimeapi.ContainerStatus) bool {
	return st.State == runtimeapi.ContainerState_CONTAINER_EXITED && st.ExitCode == 0
}

func shouldRestart(policy corev1.RestartPolicy, st *runtimeapi.ContainerStatus) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return !succeeded(st)
	}
	return true
}

// killReason says why a running container must be killed, if it must, the
// Killing event's message, as the kubelet's, and the grace period: the
// failed probe's terminationGracePeriodSeconds if it has one, else the
// pod's.
func (s *podSync) killReason(c *corev1.Container, st *runtimeapi.ContainerStatus) (why, msg string, grace time.Duration) {
	switch {
	case s.r.killing(st.Id):
		return "", "", 0
	case st.Annotations[annotationHash] != containerHash(c):
		return "container spec changed", fmt.Sprintf("Container %s definition changed, will be restarted", c.Name), podGrace(s.pod)
	case s.ps.prober.result(c.Name, st.Id, probeLiveness) == resultFailure:
		return "liveness probe failed", fmt.Sprintf("Container %s failed liveness probe, will be restarted", c.Name),
			probeGrace(s.pod, c.LivenessProbe)
	case s.ps.prober.result(c.Name, st.Id, probeStartup) == resultFailure:
		return "startup probe failed", fmt.Sprintf("Container %s failed startup probe, will be restarted", c.Name),
			probeGrace(s.pod, c.StartupProbe)
	}
	return "", "", 0
}

// probeGrace is the grace period of a kill for a failed probe: the probe's
// terminationGracePeriodSeconds overrides the pod's.
func probeGrace(pod *corev1.Pod, p *corev1.Probe) time.Duration {
	if p != nil && p.TerminationGracePeriodSeconds != nil && *p.TerminationGracePeriodSeconds >= 0 {
		return time.Duration(*p.TerminationGracePeriodSeconds) * time.Second
	}
	return podGrace(pod)
}

// restart starts a new attempt of an exited container unless it is in
// back-off, in which case it waits in CrashLoopBackOff. The back-off is the
// container's with this spec (restartKey): a new image starts afresh.
func (s *podSync) restart(ctx context.Context, c *corev1.Container, latest *runtimeapi.ContainerStatus) bool {
	key := restartKey(s.pod.UID, c)
	finished := latest.FinishedAt
	if finished == 0 {
		finished = latest.CreatedAt
	}
	if d := s.r.restarts.remaining(key, time.Unix(0, finished), s.now); d > 0 {
		s.r.event(s.pod, c.Name, events.Warning, events.BackOff, "Back-off restarting failed container %s in pod %s",
			c.Name, events.FormatPod(s.pod))
		s.waiting[c.Name] = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)",
				s.r.restarts.delay(key), c.Name, s.pod.Name, s.pod.Namespace, s.pod.UID)}
		s.r.wakeAt(s.ps, s.now.Add(d))
		return false
	}
	s.r.restarts.next(key, s.now)
	return s.start(ctx, c)
}

// restartKey is the restart back-off's key of c in the pod: its UID (all
// of a pod's keys start with "<uid>/"), the container's name and its spec
// hash, as the kubelet keys its back-off, so that a container whose image
// is updated is not held by the back-off the old image built up.
func restartKey(uid types.UID, c *corev1.Container) string {
	return string(uid) + "/" + c.Name + "/" + containerHash(c)
}

// nextAttempt is the attempt number of c's next container: one more than
// any seen, 0 for the first.
func (s *podSync) nextAttempt(name string) uint32 {
	if a, ok := s.ps.attempts[name]; ok {
		return a + 1
	}
	return 0
}

// start creates and starts an attempt of c. It reports whether a container
// was created; when none could be, waiting says why.
func (s *podSync) start(ctx context.Context, c *corev1.Container) bool {
	// Volumes first, as the kubelet mounts them before it looks at images.
	for _, vm := range c.VolumeMounts {
		if err := s.volErrs[vm.Name]; err != nil {
			s.r.event(s.pod, "", events.Warning, events.FailedMount, "MountVolume.SetUp failed for volume %q : %v", vm.Name, err)
			s.waiting[c.Name] = &corev1.ContainerStateWaiting{Reason: "ContainerCreating",
				Message: fmt.Sprintf("volume %q: %v", vm.Name, err)}
			return false
		}
	}
	image, w := s.image(ctx, c)
	if w != nil {
		s.waiting[c.Name] = w
		return false
	}
	attempt := s.nextAttempt(c.Name)
	cfg, err := s.containerConfig(c, attempt, image)
	if err != nil {
		var ve *volumeError
		if errors.As(err, &ve) {
			s.r.event(s.pod, "", events.Warning, events.FailedMount, "MountVolume.SetUp failed for volume %q : %v", ve.volume, ve.err)
		} else {
			s.r.event(s.pod, c.Name, events.Warning, events.Failed, "Error: %v", err)
		}
		if errors.As(err, &ve) {
			s.waiting[c.Name] = &corev1.ContainerStateWaiting{Reason: "ContainerCreating", Message: err.Error()}
		} else {
			s.waiting[c.Name] = &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: err.Error()}
		}
		return false
	}
	start := time.Now()
	cctx, cancel := s.r.call(ctx)
	defer cancel()
	resp, err := s.r.rs.CreateContainer(cctx, &runtimeapi.CreateContainerRequest{PodSandboxId: s.sandboxID,
		Config: cfg, SandboxConfig: s.r.sandboxConfig(s.pod, s.attempt)})
	if err != nil {
		s.r.event(s.pod, c.Name, events.Warning, events.Failed, "Error: %s", grpcMessage(err))
		s.waiting[c.Name] = &corev1.ContainerStateWaiting{Reason: "CreateContainerError", Message: err.Error()}
		return false
	}
	s.noteAttempt(c.Name, attempt)
	s.r.event(s.pod, c.Name, events.Normal, events.Created, "Created container %s", c.Name)
	if _, err := s.r.rs.StartContainer(cctx, &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId}); err != nil {
		s.r.event(s.pod, c.Name, events.Warning, events.Failed, "Error: %s", grpcMessage(err))
		s.waiting[c.Name] = &corev1.ContainerStateWaiting{Reason: "RunContainerError", Message: err.Error()}
		return true
	}
	s.r.event(s.pod, c.Name, events.Normal, events.Started, "Started container %s", c.Name)
	s.r.log.Info("container started", slog.String("pod", s.name()), slog.String("container", c.Name),
		slog.Int("attempt", int(attempt)), slog.Duration("took", time.Since(start)))
	if c.Lifecycle != nil && c.Lifecycle.PostStart != nil {
		grace := podGrace(s.pod)
		hctx, cancel := context.WithTimeout(ctx, grace)
		err := s.r.runHandler(hctx, s.pod, c, resp.ContainerId, c.Lifecycle.PostStart, grace)
		cancel()
		if err != nil {
			s.r.log.Warn("postStart hook failed, killing the container", slog.String("pod", s.name()),
				slog.String("container", c.Name), slog.Any("err", err))
			s.r.event(s.pod, c.Name, events.Warning, events.FailedPostStartHook, "PostStartHook failed: %v", err)
			s.r.killAsync(s.ps, s.pod, resp.ContainerId, c.Name, grace, "postStart hook failed")
			s.waiting[c.Name] = &corev1.ContainerStateWaiting{Reason: "PostStartHookError", Message: err.Error()}
		}
	}
	return true
}

// killing reports whether a kill of the container is under way.
func (r *Runtime) killing(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.kills[id]
}

// killAsync stops a container in the background (it may take the whole
// grace period) and asks for a sync when it is done.
func (r *Runtime) killAsync(ps *podState, pod *corev1.Pod, id, name string, grace time.Duration, why string) {
	r.mu.Lock()
	if r.kills[id] {
		r.mu.Unlock()
		return
	}
	r.kills[id] = true
	r.mu.Unlock()
	r.log.Info("killing container", slog.String("pod", pod.Namespace+"/"+pod.Name), slog.String("container", name),
		slog.String("reason", why), slog.Duration("grace", grace))
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := r.stopContainer(r.bg, pod, id, name, grace)
		if err != nil && r.bg.Err() == nil {
			r.log.Warn("kill container", slog.String("pod", pod.Namespace+"/"+pod.Name),
				slog.String("container", name), slog.Any("err", err))
		}
		r.mu.Lock()
		delete(r.kills, id)
		r.mu.Unlock()
		r.notify()
	}()
}

// wakeAt asks for a sync at t (a back-off's end), once per distinct time.
func (r *Runtime) wakeAt(ps *podState, t time.Time) {
	if ps.wake.Sub(t).Abs() < time.Second {
		return
	}
	ps.wake = t
	r.notifyAfter(time.Until(t))
}

// gc removes the sandbox's old containers: it keeps the newest two of each
// name (the current one and the one before, for lastState).
func (s *podSync) gc(ctx context.Context) error {
	var errs []error
	for _, insts := range s.containers {
		for _, st := range insts[min(2, len(insts)):] {
			if st.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
				continue
			}
			cctx, cancel := s.r.call(ctx)
			_, err := s.r.rs.RemoveContainer(cctx, &runtimeapi.RemoveContainerRequest{ContainerId: st.Id})
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("remove container: %w", err))
				continue
			}
			if st.LogPath != "" {
				os.Remove(st.LogPath)
				rotated, _ := filepath.Glob(st.LogPath + ".*")
				for _, p := range rotated {
					os.Remove(p)
				}
			}
			if p := st.Annotations[annotationTermMsgHostPath]; p != "" {
				os.Remove(p)
			}
		}
	}
	return errors.Join(errs...)
}

// updateProber starts the pod's probes on first need and tells them which
// container of each name runs now.
func (s *podSync) updateProber() {
	if !hasProbes(s.pod) {
		return
	}
	if s.ps.prober == nil {
		p := s.r.newProber(s.pod)
		s.r.mu.Lock() // Close reads it
		s.ps.prober = p
		s.r.mu.Unlock()
	}
	ip, _ := s.podIPs()
	for _, c := range s.pod.Spec.Containers {
		insts := s.containers[c.Name]
		if len(insts) > 0 && insts[0].State == runtimeapi.ContainerState_CONTAINER_RUNNING && !s.frozen {
			s.ps.prober.setTarget(c.Name, probeTarget{id: insts[0].Id, started: time.Unix(0, insts[0].StartedAt), podIP: ip})
		} else {
			s.ps.prober.setTarget(c.Name, probeTarget{})
		}
	}
}

// logWaiting logs each container's waiting reason when it changes.
func (s *podSync) logWaiting() {
	for name, w := range s.waiting {
		if s.ps.lastWaiting[name] == w.Reason+w.Message {
			continue
		}
		s.ps.lastWaiting[name] = w.Reason + w.Message
		level := slog.LevelWarn
		if w.Reason == "ContainerCreating" || w.Reason == "CrashLoopBackOff" || w.Reason == "PodInitializing" {
			level = slog.LevelInfo
		}
		s.r.log.Log(context.Background(), level, "container waiting", slog.String("pod", s.name()),
			slog.String("container", name), slog.String("reason", w.Reason), slog.String("message", w.Message))
	}
	for name := range s.ps.lastWaiting {
		if _, ok := s.waiting[name]; !ok {
			delete(s.ps.lastWaiting, name)
		}
	}
}

func truncTime(ns int64) metav1.Time {
	if ns == 0 {
		return metav1.Time{}
	}
	return metav1.NewTime(time.Unix(0, ns).Truncate(time.Second))
}

// grpcMessage is the message of a CRI error without gRPC's "rpc error: code
// = ... desc =" prefix, as the kubelet shows it.
func grpcMessage(err error) string {
	if st, ok := grpcstatus.FromError(err); ok {
		return st.Message()
	}
	return err.Error()
}
