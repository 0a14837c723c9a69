package status

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Refusal is why the Writer refused a message on authorization grounds: the
// node may not write the object. Every refusal is a rejection (ErrRejected)
// that changes nothing in the API server, is logged with the node, the kind
// and the reason, and is counted in Stats.Refused.
type Refusal uint8

const (
	// RefusedNotEdgeNode: the Node exists but has no EdgeRoleLabel (a
	// kubelet's node, say). Every message kind is refused, Leases included.
	RefusedNotEdgeNode Refusal = iota + 1
	// RefusedNodeMissing: the Node does not exist. Deleting a Node revokes
	// it; the edge must join again.
	RefusedNodeMissing
	// RefusedNotOwnPod: the pod is bound to another node (pod status, pod
	// termination).
	RefusedNotOwnPod
	// RefusedNotOwnDevice: the Device is attached to another node.
	RefusedNotOwnDevice
	// RefusedEventNotOwn: the event's involved object is not the node's
	// own Node, nor a pod or Device bound to it.
	RefusedEventNotOwn
	// RefusedMirrorForbidden: the mirror pod has a shape NodeRestriction
	// forbids (see checkMirrorPod), or its name is taken by a pod that is
	// not a mirror pod of the node.
	RefusedMirrorForbidden
)

func (r Refusal) String() string {
	switch r {
	case RefusedNotEdgeNode:
		return "NotEdgeNode"
	case RefusedNodeMissing:
		return "NodeMissing"
	case RefusedNotOwnPod:
		return "NotOwnPod"
	case RefusedNotOwnDevice:
		return "NotOwnDevice"
	case RefusedEventNotOwn:
		return "EventNotOwn"
	case RefusedMirrorForbidden:
		return "MirrorForbidden"
	}
	return fmt.Sprintf("Refusal(%d)", uint8(r))
}

// ErrNotEdgeNode is the error of RegisterNode for a Node that exists
// without EdgeRoleLabel, and is wrapped by the Writer's refusals of such
// nodes' messages.
var ErrNotEdgeNode = errors.New("not an edge node")

// refusedError carries the reason of a refusal to the worker that counts
// and logs it.
type refusedError struct {
	reason Refusal
	err    error
}

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// refuse returns a rejection for reason, with err as the message the edge
// gets. err must name objects only, never carry their data.
func refuse(reason Refusal, err error) error {
	return reject(&refusedError{reason: reason, err: err})
}

// refusalOf returns the reason err is a refusal for, or 0.
func refusalOf(err error) Refusal {
	var r *refusedError
	if errors.As(err, &r) {
		return r.reason
	}
	return 0
}

// edgeNode returns node's Node if it is an edge node: it exists and carries
// EdgeRoleLabel. The informer cache is asked first; on a miss (a Node just
// created by a join) the API server, through client. Otherwise it returns a
// refusal (RefusedNodeMissing or RefusedNotEdgeNode), or an error worth a
// retry.
func (w *Writer) edgeNode(ctx context.Context, client kubernetes.Interface, node string) (*corev1.Node, error) {
	n, err := w.lister.Node(node)
	if apierrors.IsNotFound(err) {
		n, err = client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, refuse(RefusedNodeMissing, fmt.Errorf(
				"node %s does not exist: it was deleted, which revokes it; join it again with a new token (edgecore join)", node))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("get node %s: %w", node, err)
	}
	if _, ok := n.Labels[EdgeRoleLabel]; !ok {
		return nil, refuse(RefusedNotEdgeNode, fmt.Errorf("node %s has no %s label: %w", node, EdgeRoleLabel, ErrNotEdgeNode))
	}
	return n, nil
}

// refusalCounters back Stats.Refused, indexed by Refusal.
type refusalCounters [RefusedMirrorForbidden + 1]atomic.Int64

// countRefusal counts and logs a refusal of n messages of key k.
func (w *Writer) countRefusal(k key, reason Refusal, n int, err error) {
	w.stats.refused[reason].Add(int64(max(n, 1)))
	w.log.Warn("status message refused", slog.String("node", k.node), slog.String("kind", k.kind.String()),
		slog.String("reason", reason.String()), slog.Any("error", err))
}

// Refusals counts messages refused on authorization grounds, by reason (see
// Refusal). A heartbeat refused counts as one message.
type Refusals struct {
	NotEdgeNode     int64
	NodeMissing     int64
	NotOwnPod       int64
	NotOwnDevice    int64
	EventNotOwn     int64
	MirrorForbidden int64
}

// Total is the sum of the counts.
func (r Refusals) Total() int64 {
	return r.NotEdgeNode + r.NodeMissing + r.NotOwnPod + r.NotOwnDevice + r.EventNotOwn + r.MirrorForbidden
}

func (c *refusalCounters) load() Refusals {
	return Refusals{
		NotEdgeNode:     c[RefusedNotEdgeNode].Load(),
		NodeMissing:     c[RefusedNodeMissing].Load(),
		NotOwnPod:       c[RefusedNotOwnPod].Load(),
		NotOwnDevice:    c[RefusedNotOwnDevice].Load(),
		EventNotOwn:     c[RefusedEventNotOwn].Load(),
		MirrorForbidden: c[RefusedMirrorForbidden].Load(),
	}
}
