// Package fake is an in-memory runtime.Runtime: every pod it is given is
// Running at once, with Ready containers. The simulator's hollow nodes and
// fast unit tests use it; nothing runs.
//
// A pod annotated RestartEveryAnnotation (a duration of a second or more)
// has its containers "restart" that often: at each SyncPod a period or more
// after the last restart, their restart count goes up and their running
// state starts again, so that the pod's status changes while it lives
// (the replica tests watch such changes for any going back).
package fake

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Runtime is the in-memory runtime.
type Runtime struct {
	// HostIP is reported as the pods' host IP, and as their pod IP for
	// host-network pods.
	HostIP string
	// Now is the clock of restarts (RestartEveryAnnotation); nil is
	// time.Now.
	Now func() time.Time

	mu sync.Mutex
	// pods by UID; guarded by mu.
	pods map[types.UID]*pod
	// next pod IP suffix; guarded by mu.
	nextIP int
}

type pod struct {
	started metav1.Time
	ip      string
	// restarts counts the containers' restarts, the last at restarted
	// (RestartEveryAnnotation).
	restarts  int32
	restarted metav1.Time
}

// RestartEveryAnnotation asks the fake runtime to restart a pod's
// containers every so often: its value is a Go duration of at least a
// second (others are ignored).
const RestartEveryAnnotation = "fake.tether.io/restart-every"

// restartEvery returns the restart period p asks for, or zero.
func restartEvery(p *corev1.Pod) time.Duration {
	d, err := time.ParseDuration(p.Annotations[RestartEveryAnnotation])
	if err != nil || d < time.Second {
		return 0
	}
	return d
}

// New returns an empty runtime.
func New(hostIP string) *Runtime {
	return &Runtime{HostIP: hostIP, pods: map[types.UID]*pod{}}
}

// SyncPod implements runtime.Runtime.
func (r *Runtime) SyncPod(_ context.Context, p *corev1.Pod) (*corev1.PodStatus, error) {
	r.mu.Lock()
	st, ok := r.pods[p.UID]
	if !ok {
		r.nextIP++
		st = &pod{started: metav1.NewTime(r.now().Truncate(time.Second)),
			ip: fmt.Sprintf("10.244.%d.%d", (r.nextIP/250)%250, r.nextIP%250+2)}
		if p.Spec.HostNetwork {
			st.ip = r.HostIP
		}
		// A pod the node ran before edgecore restarted: like containers that
		// kept running, it keeps its start time and address.
		if p.Status.StartTime != nil && p.Status.PodIP != "" {
			st.started, st.ip = *p.Status.StartTime, p.Status.PodIP
		}
		st.restarted = st.started
		r.pods[p.UID] = st
	}
	if every := restartEvery(p); every > 0 {
		if now := r.now(); now.Sub(st.restarted.Time) >= every {
			st.restarts++
			// Whole seconds, as the API server keeps times: each restart a
			// second or more after the last shows.
			st.restarted = metav1.NewTime(now.Truncate(time.Second))
		}
	}
	restarts, restarted := st.restarts, st.restarted
	r.mu.Unlock()

	s := &corev1.PodStatus{
		Phase:     corev1.PodRunning,
		HostIP:    r.HostIP,
		PodIP:     st.ip,
		PodIPs:    []corev1.PodIP{{IP: st.ip}},
		StartTime: &st.started,
		QOSClass:  qos(p),
	}
	if r.HostIP != "" {
		s.HostIPs = []corev1.HostIP{{IP: r.HostIP}}
	}
	for _, t := range []corev1.PodConditionType{corev1.PodInitialized, corev1.PodReady, corev1.ContainersReady, corev1.PodScheduled} {
		s.Conditions = append(s.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: st.started})
	}
	for _, c := range p.Spec.InitContainers {
		s.InitContainerStatuses = append(s.InitContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "fake://" + c.Image, ContainerID: "fake://" + string(p.UID) + "/" + c.Name,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed", StartedAt: st.started, FinishedAt: st.started}},
		})
	}
	started := true
	for _, c := range p.Spec.Containers {
		cs := corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "fake://" + c.Image, ContainerID: "fake://" + string(p.UID) + "/" + c.Name,
			Ready: true, Started: &started, RestartCount: restarts,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: restarted}},
		}
		if restarts > 0 {
			cs.ContainerID = fmt.Sprintf("fake://%s/%s/%d", p.UID, c.Name, restarts)
			cs.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 1, Reason: "Error", StartedAt: st.started, FinishedAt: restarted}}
		}
		s.ContainerStatuses = append(s.ContainerStatuses, cs)
	}
	return s, nil
}

func (r *Runtime) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// KillPod implements runtime.Runtime.
func (r *Runtime) KillPod(_ context.Context, uid types.UID, _ time.Duration) error {
	r.mu.Lock()
	delete(r.pods, uid)
	r.mu.Unlock()
	return nil
}

// Pods implements runtime.Runtime.
func (r *Runtime) Pods(context.Context) ([]types.UID, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	uids := make([]types.UID, 0, len(r.pods))
	for u := range r.pods {
		uids = append(uids, u)
	}
	slices.Sort(uids)
	return uids, nil
}

func qos(p *corev1.Pod) corev1.PodQOSClass {
	requests, limits := false, false
	for _, c := range p.Spec.Containers {
		requests = requests || len(c.Resources.Requests) > 0
		limits = limits || len(c.Resources.Limits) > 0
	}
	switch {
	case !requests && !limits:
		return corev1.PodQOSBestEffort
	default:
		return corev1.PodQOSBurstable
	}
}
