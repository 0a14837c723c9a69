// Package events records Kubernetes events about the node and its pods as
// the kubelet does: the same reasons, types and messages (Pulling, Pulled,
// Failed, BackOff, Created, Started, Killing, Unhealthy, Starting,
// NodeReady...), queued in the store's outbox with the statuses so that
// they reach the API server after the link comes back.
//
// Events are aggregated on the edge as client-go's EventCorrelator does for
// the kubelet (see Correlator): a repeat of an event (same object, type,
// reason and message) raises the count of the first instead of making a new
// one, more than MaxSimilar events of one object and reason with different
// messages within SimilarWindow are combined into one, and each object has
// a token bucket (Burst events, one more every RefillEvery) past which
// updates are not sent. A crash loop is one BackOff event whose count
// grows. The outbox holds one entry per aggregated event, replaced by its
// newer count, so a long time offline does not grow it either; the hub
// turns an event sent again with a higher count into an update of the
// Event object it wrote the first time.
//
// The Recorder is safe to call from any goroutine and never blocks: events
// go through a bounded queue to the one goroutine that owns the correlator
// and writes to the store (Start), in batches.
package events

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// Type is an event's type.
type Type string

// The event types of Kubernetes.
const (
	Normal  Type = "Normal"
	Warning Type = "Warning"
)

// Reason is an event's reason: a short CamelCase word that tools match on.
type Reason string

// Reasons, as the kubelet's (k8s.io/kubernetes/pkg/kubelet/events).
const (
	// Containers.
	Created             Reason = "Created"
	Started             Reason = "Started"
	Failed              Reason = "Failed"
	Killing             Reason = "Killing"
	BackOff             Reason = "BackOff"
	Pulling             Reason = "Pulling"
	Pulled              Reason = "Pulled"
	Unhealthy           Reason = "Unhealthy"
	InspectFailed       Reason = "InspectFailed"
	ErrImageNeverPull   Reason = "ErrImageNeverPull"
	FailedPostStartHook Reason = "FailedPostStartHook"
	FailedPreStopHook   Reason = "FailedPreStopHook"
	// Pods.
	FailedMount            Reason = "FailedMount"
	FailedCreatePodSandBox Reason = "FailedCreatePodSandBox"
	SandboxChanged         Reason = "SandboxChanged"
	// The node.
	Starting                  Reason = "Starting"
	NodeReady                 Reason = "NodeReady"
	NodeNotReady              Reason = "NodeNotReady"
	NodeHasSufficientMemory   Reason = "NodeHasSufficientMemory"
	NodeHasInsufficientMemory Reason = "NodeHasInsufficientMemory"
	NodeHasNoDiskPressure     Reason = "NodeHasNoDiskPressure"
	NodeHasDiskPressure       Reason = "NodeHasDiskPressure"
	NodeHasSufficientPID      Reason = "NodeHasSufficientPID"
	NodeHasInsufficientPID    Reason = "NodeHasInsufficientPID"
)

// NodeConditions records the kubelet's events when the node's conditions
// change: NodeReady or NodeNotReady, NodeHasSufficientMemory or
// NodeHasInsufficientMemory, and the same for disk and PID pressure, each
// "Node <name> status is now: <reason>". The first Observe records every
// condition's, as the kubelet does at its start. It is not safe for
// concurrent use: one goroutine observes.
type NodeConditions struct {
	Node     string
	Recorder interface{ Record(Event) }
	// last status seen per condition.
	last map[corev1.NodeConditionType]corev1.ConditionStatus
}

// Observe takes the node's conditions now.
func (n *NodeConditions) Observe(conds []corev1.NodeCondition) {
	if n.last == nil {
		n.last = map[corev1.NodeConditionType]corev1.ConditionStatus{}
	}
	for _, c := range conds {
		if prev, ok := n.last[c.Type]; ok && prev == c.Status {
			continue
		}
		n.last[c.Type] = c.Status
		var r Reason
		bad := c.Status == corev1.ConditionTrue
		switch c.Type {
		case corev1.NodeReady:
			r, bad = NodeReady, c.Status != corev1.ConditionTrue
			if bad {
				r = NodeNotReady
			}
		case corev1.NodeMemoryPressure:
			r = pick(bad, NodeHasInsufficientMemory, NodeHasSufficientMemory)
		case corev1.NodeDiskPressure:
			r = pick(bad, NodeHasDiskPressure, NodeHasNoDiskPressure)
		case corev1.NodePIDPressure:
			r = pick(bad, NodeHasInsufficientPID, NodeHasSufficientPID)
		default:
			continue
		}
		n.Recorder.Record(Eventf(NodeObject(n.Node), Normal, r, "Node %s status is now: %s", n.Node, r))
	}
}

func pick(bad bool, ifBad, ifGood Reason) Reason {
	if bad {
		return ifBad
	}
	return ifGood
}

// Object is what an event is about.
type Object struct {
	// Kind is "Pod" or "Node".
	Kind      string
	Namespace string
	Name      string
	UID       string
	// FieldPath names a container of a pod: spec.containers{name}.
	FieldPath string
}

// PodObject is the pod, or its container named container if not empty.
func PodObject(pod *corev1.Pod, container string) Object {
	o := Object{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID)}
	if container != "" {
		o.FieldPath = ContainerFieldPath(pod, container)
	}
	return o
}

// ContainerFieldPath is the field path of pod's container name, as the
// kubelet writes it.
func ContainerFieldPath(pod *corev1.Pod, name string) string {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			return fmt.Sprintf("spec.initContainers{%s}", name)
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if c.Name == name {
			return fmt.Sprintf("spec.ephemeralContainers{%s}", name)
		}
	}
	return fmt.Sprintf("spec.containers{%s}", name)
}

// NodeObject is the node. Its UID is its name, as the kubelet's node
// reference has it (kubectl describe node looks the events up by it).
func NodeObject(name string) Object {
	return Object{Kind: "Node", Name: name, UID: name}
}

// Event is one event to record.
type Event struct {
	Object  Object
	Type    Type
	Reason  Reason
	Message string
}

// Eventf makes an Event with a formatted message.
func Eventf(o Object, t Type, r Reason, format string, args ...any) Event {
	return Event{Object: o, Type: t, Reason: r, Message: fmt.Sprintf(format, args...)}
}

// FormatPod names a pod in messages as the kubelet does: name_namespace(uid).
func FormatPod(pod *corev1.Pod) string {
	return fmt.Sprintf("%s_%s(%s)", pod.Name, pod.Namespace, pod.UID)
}
