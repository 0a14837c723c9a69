package cri

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Ephemeral containers (spec.ephemeralContainers, added through the pod's
// ephemeralcontainers subresource, e.g. by kubectl debug) run as the
// kubelet runs them: each once, in the pod's running sandbox, started even
// while init containers run, never restarted (not even when the sandbox is
// replaced), and reported in status.ephemeralContainerStatuses. One with a
// targetContainerName joins the PID namespace of that container's newest
// instance (the CRI's TARGET namespace mode) unless the pod already shares
// one PID namespace or the host's.

// startEphemeral starts the ephemeral containers that never ran in the
// pod. It reports whether it created any; one that cannot start waits
// with the reason, and is tried again on the next sync.
func (s *podSync) startEphemeral(ctx context.Context) bool {
	changed := false
	for i := range s.pod.Spec.EphemeralContainers {
		ec := &s.pod.Spec.EphemeralContainers[i]
		if len(s.containers[ec.Name]) > 0 {
			continue
		}
		if _, ran := s.ps.attempts[ec.Name]; ran {
			continue // it ran in a sandbox that is gone: never again
		}
		target, msg := s.ephemeralTarget(ec)
		if msg != "" {
			s.waiting[ec.Name] = &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: msg}
			continue
		}
		if target != "" {
			if s.targets == nil {
				s.targets = map[string]string{}
			}
			s.targets[ec.Name] = target
		}
		c := corev1.Container(ec.EphemeralContainerCommon)
		changed = s.start(ctx, &c) || changed
	}
	return changed
}

// ephemeralTarget is the ID of the container whose PID namespace ec joins
// ("" for none), or why ec cannot start: its target is not a container of
// the pod (the API server checks that; a static manifest may not), or not
// created yet. validatePod checked its name, image and mounts.
func (s *podSync) ephemeralTarget(ec *corev1.EphemeralContainer) (id, problem string) {
	t := ec.TargetContainerName
	if t == "" {
		return "", ""
	}
	found := false
	for _, cs := range [][]corev1.Container{s.pod.Spec.InitContainers, s.pod.Spec.Containers} {
		for _, c := range cs {
			found = found || c.Name == t
		}
	}
	if !found {
		return "", fmt.Sprintf("target container %q is not a container of the pod", t)
	}
	insts := s.containers[t]
	if len(insts) == 0 {
		return "", fmt.Sprintf("unable to find target container %s", t)
	}
	return insts[0].Id, ""
}

// targetNamespace makes the PID namespace of an ephemeral container the
// one of its target's container, when the pod gives each container its own.
func (s *podSync) targetNamespace(name string, ns *runtimeapi.NamespaceOption) {
	id := s.targets[name]
	if id == "" || ns == nil || ns.Pid != runtimeapi.NamespaceMode_CONTAINER {
		return
	}
	ns.Pid, ns.TargetId = runtimeapi.NamespaceMode_TARGET, id
}

// ephemeralStatuses are the statuses of the pod's ephemeral containers.
// One never Ready (it has no probes and serves nothing, as with the
// kubelet). One that ran in a sandbox since replaced has no container left
// to report: it is Terminated, its status unknown, as the kubelet reports a
// container it cannot find.
func (s *podSync) ephemeralStatuses(defaultWait *corev1.ContainerStateWaiting) []corev1.ContainerStatus {
	var out []corev1.ContainerStatus
	for i := range s.pod.Spec.EphemeralContainers {
		c := corev1.Container(s.pod.Spec.EphemeralContainers[i].EphemeralContainerCommon)
		if _, ran := s.ps.attempts[c.Name]; ran && len(s.containers[c.Name]) == 0 {
			started := false
			out = append(out, corev1.ContainerStatus{Name: c.Name, Image: c.Image, Started: &started,
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137,
					Reason: "ContainerStatusUnknown", Message: "The container could not be located when the pod was terminated"}}})
			continue
		}
		w := s.waiting[c.Name]
		if w == nil {
			w = defaultWait
		}
		cs := s.containerStatus(&c, w)
		cs.Ready = false
		cs.RestartCount = 0
		out = append(out, cs)
	}
	return out
}
