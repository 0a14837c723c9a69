package dispatch

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestSyncVersionStatus: a status change leaves the version alone, except
// for the condition of a readiness gate, which the edge needs.
func TestSyncVersionStatus(t *testing.T) {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u", ResourceVersion: "1"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	v := syncVersion(p)
	p.Status.Phase, p.ResourceVersion = corev1.PodRunning, "2"
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if syncVersion(p) != v {
		t.Error("a status change without readiness gates changed the version")
	}
	p.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: "example.com/gate"}}
	gated := syncVersion(p)
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: "example.com/gate", Status: corev1.ConditionTrue})
	open := syncVersion(p)
	if open == gated {
		t.Error("the readiness gate's condition turning True did not change the version")
	}
	p.Status.Conditions[0].Status = corev1.ConditionFalse
	p.Status.Conditions[1].LastTransitionTime = metav1.Now()
	if syncVersion(p) != open {
		t.Error("other conditions, or the gate condition's time, changed the version")
	}
}

// TestSyncVersionEphemeralContainers: adding an ephemeral container (the
// ephemeralcontainers subresource changes only spec.ephemeralContainers)
// changes the version, so the pod reaches the edge again.
func TestSyncVersionEphemeralContainers(t *testing.T) {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u", ResourceVersion: "1"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	v := PodVersion(p)
	p.ResourceVersion = "2"
	p.Spec.EphemeralContainers = []corev1.EphemeralContainer{{TargetContainerName: "c",
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger", Image: "busybox"}}}
	if PodVersion(p) == v {
		t.Error("adding an ephemeral container left the version unchanged")
	}
}
