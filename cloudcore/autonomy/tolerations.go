package autonomy

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
)

// OptOutKey, set to "true" as a pod annotation, or as a label or annotation
// of a node, keeps Kubernetes' behaviour for that pod or for every pod on
// that node: evicted tolerationSeconds after the node's link dropped.
const OptOutKey = "tether.io/evict-on-disconnect"

// EdgeRoleLabel marks the nodes whose pods the controller looks after (the
// same label as dispatch.EdgeRoleLabel, which the status writer sets).
const EdgeRoleLabel = "node-role.kubernetes.io/edge"

// disconnectTaints are the NoExecute taints the node lifecycle controller
// puts on a node whose Ready condition is Unknown (unreachable) or False
// (not-ready). An edge node whose link dropped gets the first; the second
// comes if its last report before the drop said NotReady.
var disconnectTaints = []corev1.Taint{
	{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoExecute},
}

// Rewrite returns the tolerations a pod on an edge node should have so that
// the taint-eviction controller never evicts it for the disconnect taints,
// and whether they differ from ts. ts is not modified.
//
// The taint-eviction controller takes, for each taint of the node, the
// first toleration in the pod's list that tolerates it, and evicts the pod
// after the smallest tolerationSeconds among those (never, if none has
// any). API validation lets an existing pod change only the
// tolerationSeconds of its tolerations and add new ones; it compares the
// lists as sets, so order may change. Rewrite therefore, for each
// disconnect taint:
//
//   - drops tolerationSeconds from every toleration naming that taint's key
//     (the DefaultTolerationSeconds admission plugin adds one of these,
//     300s, to every pod that tolerates neither taint);
//   - if the first toleration that tolerates the taint still has
//     tolerationSeconds (a wildcard, key "", with NoExecute), inserts
//     {key, Exists, NoExecute} forever just before it. The wildcard keeps
//     its seconds, and so still evicts the pod for other NoExecute taints;
//   - if nothing tolerates the taint, appends {key, Exists, NoExecute}.
//
// Rewrite(Rewrite(ts)) reports no change.
func Rewrite(ts []corev1.Toleration) ([]corev1.Toleration, bool) {
	out := slices.Clone(ts)
	changed := false
	for i := range disconnectTaints {
		taint := &disconnectTaints[i]
		for j := range out {
			if t := &out[j]; t.Key == taint.Key && t.TolerationSeconds != nil && t.ToleratesTaint(taint) {
				t.TolerationSeconds = nil
				changed = true
			}
		}
		forever := corev1.Toleration{Key: taint.Key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}
		first := slices.IndexFunc(out, func(t corev1.Toleration) bool { return t.ToleratesTaint(taint) })
		switch {
		case first < 0:
			out = append(out, forever)
			changed = true
		case out[first].TolerationSeconds != nil:
			out = slices.Insert(out, first, forever)
			changed = true
		}
	}
	if !changed {
		return ts, false
	}
	return out, true
}

// Skip says why a pod's tolerations are left alone; SkipNone means rewrite
// them (if Rewrite reports a change).
type Skip int

// The reasons, in the order plan checks them.
const (
	SkipNone       Skip = iota
	SkipUnbound         // not bound to a node yet
	SkipFinished        // being deleted, or Succeeded or Failed: eviction changes nothing
	SkipPodOptOut       // the pod carries OptOutKey=true
	SkipNoNode          // the Node does not exist (yet): its creation brings the pod back
	SkipNotEdge         // the node is not an edge node: never touched
	SkipNodeOptOut      // the node carries OptOutKey=true
)

func (s Skip) String() string {
	switch s {
	case SkipNone:
		return "none"
	case SkipUnbound:
		return "unbound"
	case SkipFinished:
		return "finished"
	case SkipPodOptOut:
		return "pod opted out"
	case SkipNoNode:
		return "no node"
	case SkipNotEdge:
		return "not an edge node"
	case SkipNodeOptOut:
		return "node opted out"
	}
	return "unknown"
}

// plan decides for a pod and its node (nil if not found): the tolerations to
// write, or why none. want is nil when there is nothing to write.
func plan(pod *corev1.Pod, node *corev1.Node) (want []corev1.Toleration, skip Skip) {
	switch {
	case pod.Spec.NodeName == "":
		return nil, SkipUnbound
	case pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return nil, SkipFinished
	case pod.Annotations[OptOutKey] == "true":
		return nil, SkipPodOptOut
	case node == nil:
		return nil, SkipNoNode
	case !isEdge(node):
		return nil, SkipNotEdge
	case nodeOptedOut(node):
		return nil, SkipNodeOptOut
	}
	if want, changed := Rewrite(pod.Spec.Tolerations); changed {
		return want, SkipNone
	}
	return nil, SkipNone
}

func isEdge(n *corev1.Node) bool {
	_, ok := n.Labels[EdgeRoleLabel]
	return ok
}

func nodeOptedOut(n *corev1.Node) bool {
	return n.Labels[OptOutKey] == "true" || n.Annotations[OptOutKey] == "true"
}
