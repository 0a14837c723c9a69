package cri

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// maxTermMessage bounds a termination message, as the kubelet does.
const maxTermMessage = 4096

// status computes the pod's status from what observe saw and act decided.
func (s *podSync) status() *corev1.PodStatus {
	pod := s.pod
	st := &corev1.PodStatus{HostIP: s.r.cfg.NodeIP, QOSClass: qos(pod)}
	if s.r.cfg.NodeIP != "" {
		st.HostIPs = []corev1.HostIP{{IP: s.r.cfg.NodeIP}}
	}
	switch {
	case pod.Status.StartTime != nil:
		st.StartTime = pod.Status.StartTime.DeepCopy()
	case s.sandbox != nil:
		t := truncTime(s.sandbox.CreatedAt)
		st.StartTime = &t
	default:
		t := metav1.NewTime(s.now.Truncate(time.Second))
		st.StartTime = &t
	}
	if s.sandbox != nil {
		ip, ips := s.podIPs()
		st.PodIP = ip
		for _, i := range ips {
			st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: i})
		}
	}
	// Containers that have not run wait for a reason: the sandbox could not
	// be made, init containers run first, or act said why.
	defaultWait := &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	if s.sandboxErr != nil {
		defaultWait = &corev1.ContainerStateWaiting{Reason: "ContainerCreating", Message: s.sandboxErr.Error()}
	}
	initPending := false
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		w := s.waiting[c.Name]
		if w == nil && initPending {
			w = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
		}
		if w == nil {
			w = defaultWait
		}
		cs := s.containerStatus(c, w)
		if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
			initPending = true
		} else {
			// An init container that completed is Ready, as the kubelet
			// reports it (the conformance suite's InitContainer specs).
			cs.Ready = true
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		w := s.waiting[c.Name]
		if w == nil && initPending {
			w = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
		}
		if w == nil {
			w = defaultWait
		}
		st.ContainerStatuses = append(st.ContainerStatuses, s.containerStatus(c, w))
	}
	st.EphemeralContainerStatuses = s.ephemeralStatuses(defaultWait)
	st.Phase = phase(pod, st)
	if s.deadline {
		st.Phase, st.Reason, st.Message = corev1.PodFailed, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
	}
	s.conditions(st, initPending)
	return st
}

// containerStatus is c's status from its newest two containers; w is the
// waiting state to report if it is not running and due to start.
func (s *podSync) containerStatus(c *corev1.Container, w *corev1.ContainerStateWaiting) corev1.ContainerStatus {
	cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image}
	started := false
	cs.Started = &started
	insts := s.containers[c.Name]
	if a, ok := s.ps.attempts[c.Name]; ok && len(insts) == 0 {
		cs.RestartCount = int32(a) + 1 // the sandbox was replaced; this one starts anew
	}
	if len(insts) == 0 {
		cs.State.Waiting = w
		return cs
	}
	latest := insts[0]
	cs.ContainerID = s.r.containerID(latest.Id)
	cs.ImageID = latest.ImageRef
	cs.RestartCount = int32(latest.Metadata.GetAttempt())
	var prev *corev1.ContainerStateTerminated
	if len(insts) > 1 && insts[1].State == runtimeapi.ContainerState_CONTAINER_EXITED {
		prev = s.terminated(c, insts[1])
	}
	override := s.waiting[c.Name]
	switch latest.State {
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: truncTime(latest.StartedAt)}
		cs.LastTerminationState.Terminated = prev
		started = s.ps.prober.result(c.Name, latest.Id, probeStartup) == resultSuccess || c.StartupProbe == nil
		cs.Ready = started && (c.ReadinessProbe == nil || s.ps.prober.result(c.Name, latest.Id, probeReadiness) == resultSuccess)
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		term := s.terminated(c, latest)
		if override != nil {
			cs.State.Waiting = override
			cs.LastTerminationState.Terminated = term
		} else {
			cs.State.Terminated = term
			cs.LastTerminationState.Terminated = prev
		}
	default:
		cs.State.Waiting = w
		cs.LastTerminationState.Terminated = prev
	}
	return cs
}

// containerID is the status's container ID, <runtime>://<id>.
func (r *Runtime) containerID(id string) string {
	name, _, _ := strings.Cut(r.version, "://")
	if name == "" {
		name = "containerd"
	}
	return name + "://" + id
}

func (s *podSync) terminated(c *corev1.Container, st *runtimeapi.ContainerStatus) *corev1.ContainerStateTerminated {
	t := &corev1.ContainerStateTerminated{ExitCode: st.ExitCode, Reason: st.Reason, Message: st.Message,
		StartedAt: truncTime(st.StartedAt), FinishedAt: truncTime(st.FinishedAt), ContainerID: s.r.containerID(st.Id)}
	if t.Reason == "" {
		t.Reason = "Error"
		if t.ExitCode == 0 {
			t.Reason = "Completed"
		}
	}
	if p := st.Annotations[annotationTermMsgHostPath]; p != "" {
		if b := readHead(p, maxTermMessage); len(b) > 0 {
			t.Message = string(b)
		}
	}
	if t.Message == "" && t.ExitCode != 0 && c.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
		t.Message = logTail(st.LogPath, 80, 2048)
	}
	return t
}

func readHead(path string, n int) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, int64(n)))
	return b
}

// logTail is the last lines of a CRI log file (lines like
// "2024-01-01T00:00:00.000000000Z stdout F text"), without their prefixes.
func logTail(path string, lines, maxBytes int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 64*maxBytes {
		b = b[len(b)-64*maxBytes:]
	}
	var out []string
	for _, l := range bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n")) {
		f := bytes.SplitN(l, []byte(" "), 4)
		if len(f) == 4 {
			out = append(out, string(f[3]))
		}
	}
	if len(out) > lines {
		out = out[len(out)-lines:]
	}
	msg := strings.Join(out, "\n")
	if len(msg) > maxBytes {
		msg = msg[len(msg)-maxBytes:]
	}
	return msg
}

// phase is the kubelet's getPhase.
func phase(pod *corev1.Pod, st *corev1.PodStatus) corev1.PodPhase {
	policy := restartPolicy(pod)
	for _, cs := range st.InitContainerStatuses {
		if t := cs.State.Terminated; t != nil && t.ExitCode == 0 {
			continue
		}
		failed := (cs.State.Terminated != nil && cs.State.Terminated.ExitCode != 0) ||
			(cs.State.Waiting != nil && cs.LastTerminationState.Terminated != nil && cs.LastTerminationState.Terminated.ExitCode != 0)
		if failed && policy == corev1.RestartPolicyNever {
			return corev1.PodFailed
		}
		return corev1.PodPending
	}
	var waiting, running, stopped, succeeded int
	for _, cs := range st.ContainerStatuses {
		switch {
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil:
			stopped++
			if cs.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case cs.State.Waiting != nil && cs.LastTerminationState.Terminated != nil:
			stopped++
			if cs.LastTerminationState.Terminated.ExitCode == 0 {
				succeeded++
			}
		default:
			waiting++
		}
	}
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0:
		return corev1.PodRunning
	case stopped > 0:
		switch {
		case policy == corev1.RestartPolicyAlways:
			return corev1.PodRunning
		case stopped == succeeded:
			return corev1.PodSucceeded
		case policy == corev1.RestartPolicyNever:
			return corev1.PodFailed
		}
		return corev1.PodRunning
	}
	return corev1.PodPending
}

// conditions sets PodScheduled, Initialized, ContainersReady and Ready,
// keeping each one's last transition time.
func (s *podSync) conditions(st *corev1.PodStatus, initPending bool) {
	cond := func(t corev1.PodConditionType, ok bool, reason, msg string) corev1.PodCondition {
		status := corev1.ConditionFalse
		if ok {
			status, reason, msg = corev1.ConditionTrue, "", ""
		}
		prev, seen := s.ps.conditions[t]
		if !seen || prev.status != status {
			prev = conditionState{status: status, at: metav1.NewTime(s.now.Truncate(time.Second))}
			s.ps.conditions[t] = prev
		}
		return corev1.PodCondition{Type: t, Status: status, Reason: reason, Message: msg, LastTransitionTime: prev.at}
	}
	var notInit, notReady []string
	for _, cs := range st.InitContainerStatuses {
		if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
			notInit = append(notInit, cs.Name)
		}
	}
	for _, cs := range st.ContainerStatuses {
		if !cs.Ready {
			notReady = append(notReady, cs.Name)
		}
	}
	terminal := st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed
	readyReason, readyMsg := "ContainersNotReady", fmt.Sprintf("containers with unready status: %v", notReady)
	if terminal {
		readyReason, readyMsg = "PodCompleted", ""
	}
	containersReady := len(notReady) == 0 && !terminal
	ready := containersReady
	var gatesMissing []string
	for _, g := range s.pod.Spec.ReadinessGates {
		ok := false
		for _, c := range s.pod.Status.Conditions {
			ok = ok || (c.Type == g.ConditionType && c.Status == corev1.ConditionTrue)
		}
		if !ok {
			gatesMissing = append(gatesMissing, string(g.ConditionType))
		}
	}
	podReason, podMsg := readyReason, readyMsg
	if containersReady && len(gatesMissing) > 0 {
		ready = false
		podReason, podMsg = "ReadinessGatesNotReady", fmt.Sprintf("corresponding condition of pod readiness gate %v does not exist or is not True", gatesMissing)
	}
	initReason, initMsg := "ContainersNotInitialized", fmt.Sprintf("containers with incomplete status: %v", notInit)
	if terminal && len(notInit) == 0 {
		initReason = "PodCompleted"
	}
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodInitialized, !initPending, initReason, initMsg),
		cond(corev1.PodReady, ready, podReason, podMsg),
		cond(corev1.ContainersReady, containersReady, readyReason, readyMsg),
		cond(corev1.PodScheduled, true, "", ""),
	}
}

// invalidStatus is the status of a pod whose spec cannot run: Failed, with
// the problems in the message. Nothing is started.
func (r *Runtime) invalidStatus(pod *corev1.Pod, msg string) *corev1.PodStatus {
	return r.rejectedStatus(pod, "InvalidSpec", "pod spec cannot run: "+msg)
}

// rejectedStatus is the Failed status of a pod that never runs here, for
// reason.
func (r *Runtime) rejectedStatus(pod *corev1.Pod, reason, msg string) *corev1.PodStatus {
	st := &corev1.PodStatus{Phase: corev1.PodFailed, Reason: reason, Message: msg,
		HostIP: r.cfg.NodeIP, QOSClass: qos(pod), StartTime: pod.Status.StartTime.DeepCopy()}
	if r.cfg.NodeIP != "" {
		st.HostIPs = []corev1.HostIP{{IP: r.cfg.NodeIP}}
	}
	// A stable time, so the status does not change between syncs.
	at := pod.CreationTimestamp
	if st.StartTime == nil {
		st.StartTime = &at
	} else {
		at = *st.StartTime
	}
	st.Conditions = []corev1.PodCondition{
		{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: reason, LastTransitionTime: at},
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: at},
	}
	return st
}
