package status

import (
	"context"
	"log/slog"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/protocol"
)

// NodeUnknownReason is the reason the node lifecycle controller
// (kube-controller-manager) gives the conditions of a node it has not heard
// from within its grace period: neither a status nor a Lease renewal.
const NodeUnknownReason = "NodeStatusUnknown"

// reported is what the Writer keeps of the last node status it wrote (or
// found written) for a node with a session here: its conditions and order.
type reported struct {
	conds []corev1.NodeCondition
	order protocol.StatusOrder
}

// repairConditions is the message that writes a node's last reported
// conditions back (Writer.Heartbeat).
type repairConditions struct{}

// remember keeps st's conditions as node's last report, of order o.
func (w *Writer) remember(node string, st *corev1.NodeStatus, o protocol.StatusOrder) {
	conds := slices.Clone(st.Conditions)
	w.repMu.Lock()
	defer w.repMu.Unlock()
	if r, ok := w.reports[node]; ok && !o.IsZero() && o.Before(r.order) {
		return
	}
	w.reports[node] = reported{conds: conds, order: o}
}

// forget drops node's last report (its session here ended).
func (w *Writer) forget(node string) {
	w.repMu.Lock()
	delete(w.reports, node)
	w.repMu.Unlock()
}

func (w *Writer) report(node string) (reported, bool) {
	w.repMu.Lock()
	defer w.repMu.Unlock()
	r, ok := w.reports[node]
	return r, ok
}

// markedUnknown reports whether n's Ready condition is one the node
// lifecycle controller set Unknown while the node's last report here said
// otherwise.
func markedUnknown(n *corev1.Node, r reported) bool {
	i := slices.IndexFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool { return c.Type == corev1.NodeReady })
	if i < 0 {
		return false
	}
	c := n.Status.Conditions[i]
	if c.Status != corev1.ConditionUnknown || c.Reason != NodeUnknownReason {
		return false
	}
	j := slices.IndexFunc(r.conds, func(c corev1.NodeCondition) bool { return c.Type == corev1.NodeReady })
	return j >= 0 && r.conds[j].Status != corev1.ConditionUnknown
}

// repairIfMarkedUnknown queues the write of node's last reported
// conditions if the node lifecycle controller marked the Node Unknown
// although the node is connected here (it heard from it, so the Lease
// lapsed for a while: the hub was down, or its writes lagged). The kubelet
// does the same at its next status sync (every 10 s): the edge reports an
// unchanged status only every NodeStatusInterval (5 minutes), and until
// then the Node would stay NotReady, tainted, its pods not ready. Nothing
// is queued while a node status of the node is pending.
func (w *Writer) repairIfMarkedUnknown(node string) {
	r, ok := w.report(node)
	if !ok {
		return
	}
	n, err := w.lister.Node(node)
	if err != nil || n == nil || !markedUnknown(n, r) {
		return
	}
	k := key{kind: kindNodeStatus, node: node}
	w.mu.Lock()
	pending := w.entries[k] != nil
	w.mu.Unlock()
	if !pending {
		w.enqueue(k, repairConditions{}, nil)
	}
}

// repairNodeStatus writes node's last reported conditions back over those
// the node lifecycle controller marked Unknown, with the heartbeat time
// now, fenced with the report's order: a newer report written meanwhile
// (here or by another replica) wins.
func (w *Writer) repairNodeStatus(ctx context.Context, cur *corev1.Node) error {
	for attempt := 1; ; attempt++ {
		r, ok := w.report(cur.Name)
		if !ok || !markedUnknown(cur, r) {
			return nil
		}
		fenced := !r.order.IsZero()
		if rec, ok := w.recordedFence(cur.Annotations[FenceAnnotation], "node/"+cur.Name); fenced && ok && r.order.Before(rec) {
			return nil
		}
		now := metav1.NewTime(w.cfg.Clock.Now())
		st := cur.Status.DeepCopy()
		for _, c := range r.conds {
			c.LastHeartbeatTime = now
			i := slices.IndexFunc(st.Conditions, func(x corev1.NodeCondition) bool { return x.Type == c.Type })
			switch {
			case i < 0:
				c.LastTransitionTime = now
				st.Conditions = append(st.Conditions, c)
			default:
				if st.Conditions[i].Status != c.Status {
					c.LastTransitionTime = now
				} else {
					c.LastTransitionTime = st.Conditions[i].LastTransitionTime
				}
				st.Conditions[i] = c
			}
		}
		patch, err := nodeStatusPatch(&cur.Status, st)
		if err != nil {
			return reject(err)
		}
		var again bool
		if cur, again, err = w.patchNodeStatus(ctx, cur, patch, r.order, attempt); again {
			continue
		}
		if err != nil {
			return err
		}
		w.stats.nodeRepairs.Add(1)
		w.log.Info("node conditions written back: the controller-manager had marked them Unknown while the node is connected",
			slog.String("node", cur.Name))
		return nil
	}
}
