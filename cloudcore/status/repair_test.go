package status

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/protocol"
)

// The node lifecycle controller marks a connected node Unknown (its Lease
// lapsed while the hub was away): at the node's next heartbeat the Writer
// writes its last reported conditions back, fenced with the report's order,
// as the kubelet does at its next status sync. Not for a node whose
// session ended here, not over a newer report, not over an Unknown the
// edge reported itself.
func TestNodeConditionsWrittenBack(t *testing.T) {
	w, client := newWriter(t, Config{})
	start(t, w)
	o := protocol.StatusOrder{Epoch: 5, Seq: 9}
	r := newResult(t)
	w.NodeStatus(edge1, o, nodeStatusMsg(t, nil, nodeStatus("10.0.0.1", corev1.ConditionTrue)), r.done)
	if err := r.wait(); err != nil {
		t.Fatal(err)
	}
	get := func() *corev1.Node {
		t.Helper()
		n, err := client.CoreV1().Nodes().Get(t.Context(), edge1, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	ready := func(n *corev1.Node) corev1.NodeCondition {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c
			}
		}
		return corev1.NodeCondition{}
	}
	marked := metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second))
	markUnknown := func(reason string) {
		t.Helper()
		n := get()
		for i := range n.Status.Conditions {
			n.Status.Conditions[i].Status = corev1.ConditionUnknown
			n.Status.Conditions[i].Reason = reason
			n.Status.Conditions[i].LastTransitionTime = marked
		}
		if _, err := client.CoreV1().Nodes().UpdateStatus(t.Context(), n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	stays := func(what string) {
		t.Helper()
		w.Heartbeat(edge1)
		time.Sleep(300 * time.Millisecond)
		if c := ready(get()); c.Status != corev1.ConditionUnknown {
			t.Errorf("%s: Ready %s, want it left Unknown", what, c.Status)
		}
	}

	markUnknown(NodeUnknownReason)
	w.Heartbeat(edge1)
	waitFor(t, "Ready written back", func() bool { return ready(get()).Status == corev1.ConditionTrue })
	n := get()
	c := ready(n)
	if c.Reason != "KubeletReady" || !c.LastTransitionTime.After(marked.Time) || c.LastHeartbeatTime.Before(&marked) {
		t.Errorf("Ready written back %+v: want the reported reason, a transition and a heartbeat now", c)
	}
	if rec, _ := parseFence(n.Annotations[FenceAnnotation]); rec != o {
		t.Errorf("recorded order %v, want the report's %v", rec, o)
	}
	if st := w.Stats(); st.NodeRepairs != 1 {
		t.Errorf("NodeRepairs %d, want 1", st.NodeRepairs)
	}
	// Ready again: a heartbeat writes nothing more.
	before := len(actions(client, "patch", "nodes"))
	w.Heartbeat(edge1)
	time.Sleep(300 * time.Millisecond)
	if after := len(actions(client, "patch", "nodes")); after != before {
		t.Errorf("%d patches after a heartbeat of a Ready node, want none", after-before)
	}

	// Unknown as the edge itself said it: not the controller's marking.
	markUnknown("EdgeSaysSo")
	stays("another reason")

	// A newer report recorded (another replica wrote it): its to repair.
	markUnknown(NodeUnknownReason)
	n = get()
	n.Annotations[FenceAnnotation] = formatFence(protocol.StatusOrder{Epoch: 5, Seq: 10})
	if _, err := client.CoreV1().Nodes().Update(t.Context(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	stays("a newer report recorded")

	// The session ended here: nothing kept, nothing written.
	n = get()
	n.Annotations[FenceAnnotation] = formatFence(o)
	if _, err := client.CoreV1().Nodes().Update(t.Context(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	w.SessionEnded(edge1)
	stays("the session ended")
	if st := w.Stats(); st.NodeRepairs != 1 {
		t.Errorf("NodeRepairs %d, want 1", st.NodeRepairs)
	}
}
