package pods

import (
	"errors"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// pod builds a pod for the eviction tests: qos "be", "bu" or "g",
// priority, created at minute.
func evictPod(name, qos string, prio int32, minute int) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name),
		ResourceVersion: "1", CreationTimestamp: metav1.NewTime(time.Unix(0, 0).Add(time.Duration(minute) * time.Minute))},
		Spec: corev1.PodSpec{NodeName: "edge", Priority: &prio, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}}}
	r := &p.Spec.Containers[0].Resources
	switch qos {
	case "bu":
		r.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("10Mi")}
	case "g":
		l := corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("10Mi"), corev1.ResourceCPU: resource.MustParse("100m")}
		r.Requests, r.Limits = l, l
	}
	return p
}

func TestEvictionOrder(t *testing.T) {
	static := evictPod("static", "be", 0, 1)
	static.Annotations = map[string]string{configHashAnnotation: "h", "kubernetes.io/config.source": "file"}
	mirror := evictPod("mirror", "be", 0, 1)
	mirror.Annotations = map[string]string{mirrorAnnotation: "h"}
	annotated := evictPod("annotated-critical", "be", 0, 1)
	annotated.Annotations = map[string]string{criticalPodAnnotation: ""}
	deleting := evictPod("deleting", "be", 0, 1)
	deleting.DeletionTimestamp = &metav1.Time{}
	recorded := evictPod("recorded-guaranteed", "be", 0, 1)
	recorded.Status.QOSClass = corev1.PodQOSGuaranteed

	cases := []struct {
		name string
		pods []*corev1.Pod
		want []string
	}{
		{"by QoS: BestEffort, Burstable, Guaranteed", []*corev1.Pod{evictPod("g", "g", 0, 1), evictPod("be", "be", 0, 1), evictPod("bu", "bu", 0, 1)},
			[]string{"be", "bu", "g"}},
		{"by priority within a class", []*corev1.Pod{evictPod("high", "be", 1000, 1), evictPod("low", "be", -5, 1), evictPod("mid", "be", 0, 1)},
			[]string{"low", "mid", "high"}},
		{"QoS before priority", []*corev1.Pod{evictPod("g-low", "g", -100, 1), evictPod("be-high", "be", 100000, 1)},
			[]string{"be-high", "g-low"}},
		{"newest first at equal rank", []*corev1.Pod{evictPod("old", "bu", 0, 1), evictPod("new", "bu", 0, 9)},
			[]string{"new", "old"}},
		{"the QoS class the API server recorded", []*corev1.Pod{recorded, evictPod("bu", "bu", 0, 1)},
			[]string{"bu", "recorded-guaranteed"}},
		{"never critical, static, mirror or deleting pods", []*corev1.Pod{
			evictPod("system-cluster-critical", "be", SystemCriticalPriority, 1),
			evictPod("system-node-critical", "be", SystemCriticalPriority+1000, 1),
			evictPod("just-below", "g", SystemCriticalPriority-1, 1),
			static, mirror, annotated, deleting}, []string{"just-below"}},
		{"none", nil, nil},
	}
	for _, c := range cases {
		var got []string
		for _, p := range EvictionOrder(c.pods) {
			got = append(got, p.Name)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// Evict kills the pod that matters least at once, reports it Failed with
// reason Evicted and never runs it again; then the next; never a
// critical or static pod.
func TestEvict(t *testing.T) {
	rt := newTestRuntime()
	static := evictPod("static", "be", 0, 1)
	static.UID = "static-hash"
	static.Annotations = map[string]string{configHashAnnotation: "static-hash", "kubernetes.io/config.source": "file"}
	victim, next := evictPod("victim", "be", 0, 1), evictPod("guaranteed", "g", 0, 1)
	critical := evictPod("critical", "be", SystemCriticalPriority, 1)
	e := start(t, rt, 2, []*corev1.Pod{static}, victim, next, critical)
	e.waitOutbox(t, "statuses", hasStatuses(victim.UID, next.UID, critical.UID))

	got, err := e.m.Evict(t.Context(), "memory")
	if err != nil || got != "default/victim" {
		t.Fatalf("Evict: %q, %v", got, err)
	}
	ob := e.waitOutbox(t, "evicted status", func(ob map[string]*protocol.Frame) bool {
		f := ob[store.OutboxPodStatus(string(victim.UID))]
		if f == nil {
			return false
		}
		st, err := protocol.DecodePodStatus(f.PodStatus.Status)
		return err == nil && st.Phase == corev1.PodFailed
	})
	st, _ := protocol.DecodePodStatus(ob[store.OutboxPodStatus(string(victim.UID))].PodStatus.Status)
	if st.Reason != EvictionReason || st.Message != "The node was low on resource: memory. " {
		t.Errorf("evicted status: %s %q", st.Reason, st.Message)
	}
	for _, cs := range st.ContainerStatuses {
		if cs.Ready || cs.State.Terminated == nil || cs.State.Terminated.Reason != EvictionReason {
			t.Errorf("evicted container status %+v", cs)
		}
	}
	calls := rt.callsOf(victim.UID)
	if last := calls[len(calls)-1]; last.op != "kill" || last.grace != 0 {
		t.Errorf("victim's last call %+v, want a kill without grace", last)
	}

	// Resyncs do not start it again.
	before := len(rt.callsOf(victim.UID))
	e.kick(t)
	e.waitIdle(t)
	if n := len(rt.callsOf(victim.UID)); n != before {
		t.Errorf("evicted pod synced again: %+v", rt.callsOf(victim.UID)[before:])
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err = e.m.Evict(t.Context(), "ephemeral-storage")
		if !errors.Is(err, ErrEvictionInProgress) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the first eviction's kill still runs
	}
	if got != "default/guaranteed" {
		t.Fatalf("second Evict: %q, %v", got, err)
	}
	e.waitOutbox(t, "second evicted status", func(ob map[string]*protocol.Frame) bool {
		f := ob[store.OutboxPodStatus(string(next.UID))]
		st, err := protocol.DecodePodStatus(f.PodStatus.Status)
		return err == nil && st.Phase == corev1.PodFailed
	})
	e.waitIdle(t)
	if got, err := e.m.Evict(t.Context(), "memory"); got != "" || err != nil {
		t.Errorf("third Evict: %q, %v; want none (critical and static left)", got, err)
	}
	for _, c := range append(rt.callsOf(critical.UID), rt.callsOf(static.UID)...) {
		if c.op == "kill" {
			t.Errorf("critical or static pod killed: %+v", c)
		}
	}
}

// A pod the cloud has as evicted (after edgecore restarted, say) is not
// started again: killed in case it runs, never synced.
func TestEvictedPodFromTheStoreDoesNotRun(t *testing.T) {
	rt := newTestRuntime()
	p := evictPod("evicted", "be", 0, 1)
	p.Status = corev1.PodStatus{Phase: corev1.PodFailed, Reason: EvictionReason, Message: "The node was low on resource: memory. "}
	other := evictPod("other", "be", 0, 1)
	e := start(t, rt, 2, nil, p, other)
	e.waitOutbox(t, "status of the other pod", hasStatuses(other.UID))
	e.waitIdle(t)
	e.kick(t)
	e.waitIdle(t)
	calls := rt.callsOf(p.UID)
	if len(calls) != 1 || calls[0].op != "kill" {
		t.Errorf("calls for the evicted pod: %+v, want one kill", calls)
	}
}
