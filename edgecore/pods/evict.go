package pods

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/protocol"
)

// Eviction, as the kubelet's eviction manager does it when reclaiming
// images did not relieve the node: one pod at a time, the one that matters
// least first, killed at once (a hard threshold) and reported Failed with
// reason Evicted. Critical pods are never evicted.

// SystemCriticalPriority is the priority from which a pod is critical
// (scheduling.SystemCriticalPriority: system-cluster-critical and
// system-node-critical are at or above it).
const SystemCriticalPriority = 2000000000

// criticalPodAnnotation is the old way to mark a pod critical, still
// honoured.
const criticalPodAnnotation = "scheduler.alpha.kubernetes.io/critical-pod"

// EvictionReason is the reason of an evicted pod's status, the kubelet's.
const EvictionReason = "Evicted"

// Critical reports whether a pod is never evicted: a static or mirror pod,
// a pod of priority SystemCriticalPriority or more, or one annotated
// critical.
func Critical(p *corev1.Pod) bool {
	if isStatic(p) {
		return true
	}
	if _, ok := p.Annotations[mirrorAnnotation]; ok {
		return true
	}
	if src, ok := p.Annotations["kubernetes.io/config.source"]; ok && src != "api" {
		return true
	}
	if _, ok := p.Annotations[criticalPodAnnotation]; ok {
		return true
	}
	return priority(p) >= SystemCriticalPriority
}

func priority(p *corev1.Pod) int32 {
	if p.Spec.Priority != nil {
		return *p.Spec.Priority
	}
	return 0
}

// QOSClass is the pod's QoS class: the one the API server recorded, else
// computed as the API server does (Guaranteed: every container limits CPU
// and memory, with requests equal to limits; BestEffort: no container
// requests or limits anything; Burstable otherwise).
func QOSClass(p *corev1.Pod) corev1.PodQOSClass {
	if p.Status.QOSClass != "" {
		return p.Status.QOSClass
	}
	any, guaranteed := false, true
	for _, c := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
		if len(c.Resources.Requests) > 0 || len(c.Resources.Limits) > 0 {
			any = true
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			lim, ok := c.Resources.Limits[r]
			if !ok {
				guaranteed = false
				continue
			}
			if req, ok := c.Resources.Requests[r]; ok && req.Cmp(lim) != 0 {
				guaranteed = false
			}
		}
	}
	switch {
	case !any:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

func qosRank(q corev1.PodQOSClass) int {
	switch q {
	case corev1.PodQOSBestEffort:
		return 0
	case corev1.PodQOSBurstable:
		return 1
	}
	return 2
}

// EvictionOrder returns the pods that may be evicted, first to go first:
// BestEffort, then Burstable, then Guaranteed (the kubelet's "exceeds its
// requests", without per-pod usage), lower priority first within a class,
// then the most recently created. Critical pods are left out.
func EvictionOrder(pods []*corev1.Pod) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range pods {
		if !Critical(p) && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b *corev1.Pod) int {
		if c := cmp.Compare(qosRank(QOSClass(a)), qosRank(QOSClass(b))); c != 0 {
			return c
		}
		if c := cmp.Compare(priority(a), priority(b)); c != 0 {
			return c
		}
		if c := b.CreationTimestamp.Compare(a.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

// evictState is an evicted pod's: why, whether its containers were killed
// and its status reported.
type evictState struct {
	msg              string
	killed, reported bool
}

// evictedKilled takes the result of an evicted pod's kill: its status is
// reported Failed, Evicted.
func (e *Engine) evictedKilled(o *Output, j Job) {
	ev := e.evicted[j.UID]
	if ev == nil || j.Pod == nil {
		return
	}
	ev.killed = true
	if ev.reported {
		return
	}
	name := j.Pod.Namespace + "/" + j.Pod.Name
	b, err := e.evictedStatus(j.Pod, ev.msg)
	if err != nil {
		o.log(slog.LevelError, "evicted pod status", slog.String("pod", name), slog.Any("err", err))
		return
	}
	ev.reported = true
	e.report(j.UID, b)
	o.log(slog.LevelWarn, "pod evicted", slog.String("pod", name), slog.String("message", ev.msg))
}

// evictReq asks the Start goroutine to evict a pod.
type evictReq struct {
	resource string
	reply    chan EvictResult
}

// ErrEvictionInProgress: the pod evicted last is still being killed; one
// pod is evicted at a time.
var ErrEvictionInProgress = errors.New("evict: the last eviction is still in progress")

// Evict evicts the pod that matters least (EvictionOrder) because the node
// is short of resource ("memory", "ephemeral-storage", "pids"): its
// containers are killed at once and it is reported Failed with reason
// Evicted, never to run again on this node. It returns the pod's
// namespace/name, or "" when no pod may be evicted (ErrEvictionInProgress
// while the last one is being killed). It may be called from any goroutine while Start runs.
func (m *Manager) Evict(ctx context.Context, resource string) (string, error) {
	req := evictReq{resource: resource, reply: make(chan EvictResult, 1)}
	select {
	case m.evictc <- req:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	select {
	case r := <-req.reply:
		return r.Pod, r.Err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// evict picks the pod to evict from the pods read (Evict).
func (e *Engine) evict(o *Output, now time.Time, resource string, r PodsRead) *EvictResult {
	if r.Err != nil {
		return &EvictResult{Err: fmt.Errorf("evict: %w", r.Err)}
	}
	var pods []*corev1.Pod
	for _, p := range r.Stored {
		if _, ok := p.Annotations[mirrorAnnotation]; !ok {
			pods = append(pods, p)
		}
	}
	pods = append(pods, r.Static...)
	var p *corev1.Pod
	for _, c := range EvictionOrder(pods) {
		if e.evicted[c.UID] == nil && !terminalPhase(c) {
			p = c
			break
		}
	}
	if p == nil {
		return &EvictResult{}
	}
	msg := fmt.Sprintf("The node was low on resource: %s. ", resource)
	e.evicted[p.UID] = &evictState{msg: msg}
	o.log(slog.LevelWarn, "evicting pod", slog.String("pod", p.Namespace+"/"+p.Name), slog.String("resource", resource),
		slog.String("qos", string(QOSClass(p))), slog.Int("priority", int(priority(p))))
	if e.pods == nil {
		e.pods = map[types.UID]*corev1.Pod{}
	}
	e.pods[p.UID] = p
	e.schedule(p.UID)
	e.launch(o, now)
	return &EvictResult{Pod: p.Namespace + "/" + p.Name}
}

// terminalPhase: the pod ran to its end (or was evicted) as the cloud last
// reported it; it is not started again.
func terminalPhase(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodFailed && p.Status.Reason == EvictionReason
}

// evictedStatus is the status of an evicted pod: the last one reported,
// Failed with reason Evicted, its containers terminated and not ready.
func (e *Engine) evictedStatus(p *corev1.Pod, msg string) ([]byte, error) {
	st := &corev1.PodStatus{}
	if b := e.lastStatus[p.UID]; b != nil {
		if old, err := protocol.DecodePodStatus(b); err == nil {
			st = old
		}
	}
	st.Phase, st.Reason, st.Message = corev1.PodFailed, EvictionReason, msg
	for i := range st.Conditions {
		if c := &st.Conditions[i]; c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
			c.Status, c.Reason = corev1.ConditionFalse, "PodFailed"
		}
	}
	for _, list := range [][]corev1.ContainerStatus{st.InitContainerStatuses, st.ContainerStatuses} {
		for i := range list {
			cs := &list[i]
			cs.Ready = false
			if cs.State.Running != nil || cs.State.Waiting != nil {
				var started = cs.State.Running
				cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: 137, Reason: EvictionReason, Message: msg, ContainerID: cs.ContainerID}}
				if started != nil {
					cs.State.Terminated.StartedAt = started.StartedAt
				}
			}
		}
	}
	return protocol.EncodePodStatus(st)
}
