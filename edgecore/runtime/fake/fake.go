// Package fake is an in-memory runtime.Runtime: every pod it is given is
// Running at once, with Ready containers. The simulator's hollow nodes and
// fast unit tests use it; nothing runs.
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

	mu sync.Mutex
	// pods by UID; guarded by mu.
	pods map[types.UID]*pod
	// next pod IP suffix; guarded by mu.
	nextIP int
}

type pod struct {
	started metav1.Time
	ip      string
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
		st = &pod{started: metav1.NewTime(time.Now().Truncate(time.Second)),
			ip: fmt.Sprintf("10.244.%d.%d", (r.nextIP/250)%250, r.nextIP%250+2)}
		if p.Spec.HostNetwork {
			st.ip = r.HostIP
		}
		// A pod the node ran before edgecore restarted: like containers that
		// kept running, it keeps its start time and address.
		if p.Status.StartTime != nil && p.Status.PodIP != "" {
			st.started, st.ip = *p.Status.StartTime, p.Status.PodIP
		}
		r.pods[p.UID] = st
	}
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
		s.ContainerStatuses = append(s.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "fake://" + c.Image, ContainerID: "fake://" + string(p.UID) + "/" + c.Name,
			Ready: true, Started: &started,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: st.started}},
		})
	}
	return s, nil
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
