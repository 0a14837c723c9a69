package autonomy

import (
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func secs(n int64) *int64 { return &n }

var (
	unreach  = corev1.TaintNodeUnreachable
	notReady = corev1.TaintNodeNotReady
	noExec   = corev1.TaintEffectNoExecute
	exists   = corev1.TolerationOpExists
)

// admitted is what the DefaultTolerationSeconds admission plugin adds.
func admitted(s int64) []corev1.Toleration {
	return []corev1.Toleration{
		{Key: notReady, Operator: exists, Effect: noExec, TolerationSeconds: secs(s)},
		{Key: unreach, Operator: exists, Effect: noExec, TolerationSeconds: secs(s)},
	}
}

func forever(key string) corev1.Toleration {
	return corev1.Toleration{Key: key, Operator: exists, Effect: noExec}
}

func TestRewrite(t *testing.T) {
	wildcard60 := corev1.Toleration{Operator: exists, Effect: noExec, TolerationSeconds: secs(60)}
	custom := corev1.Toleration{Key: "example.com/gpu", Operator: exists, Effect: noExec, TolerationSeconds: secs(30)}
	for _, tc := range []struct {
		name string
		in   []corev1.Toleration
		want []corev1.Toleration // nil: unchanged
	}{
		{"admission defaults: seconds dropped in place", admitted(300),
			[]corev1.Toleration{forever(notReady), forever(unreach)}},
		{"none (admission plugin off): both added", nil,
			[]corev1.Toleration{forever(unreach), forever(notReady)}},
		{"already forever (DaemonSet pods)", []corev1.Toleration{forever(notReady), forever(unreach)}, nil},
		{"tolerates everything", []corev1.Toleration{{Operator: exists}}, nil},
		{"only unreachable, zero seconds", []corev1.Toleration{{Key: unreach, Operator: exists, Effect: noExec, TolerationSeconds: secs(0)}},
			[]corev1.Toleration{forever(unreach), forever(notReady)}},
		{"operator Equal with empty value", []corev1.Toleration{
			{Key: unreach, Operator: corev1.TolerationOpEqual, Effect: noExec, TolerationSeconds: secs(300)}, forever(notReady)},
			[]corev1.Toleration{{Key: unreach, Operator: corev1.TolerationOpEqual, Effect: noExec}, forever(notReady)}},
		{"Equal with another value does not match: left, forever added", []corev1.Toleration{
			{Key: unreach, Operator: corev1.TolerationOpEqual, Value: "x", Effect: noExec, TolerationSeconds: secs(300)}, forever(notReady)},
			[]corev1.Toleration{{Key: unreach, Operator: corev1.TolerationOpEqual, Value: "x", Effect: noExec, TolerationSeconds: secs(300)},
				forever(notReady), forever(unreach)}},
		{"NoSchedule toleration left, NoExecute added", []corev1.Toleration{
			{Key: unreach, Operator: exists, Effect: corev1.TaintEffectNoSchedule}, forever(notReady)},
			[]corev1.Toleration{{Key: unreach, Operator: exists, Effect: corev1.TaintEffectNoSchedule}, forever(notReady), forever(unreach)}},
		{"duplicates all cleared", append(admitted(300), admitted(10)...),
			[]corev1.Toleration{forever(notReady), forever(unreach), forever(notReady), forever(unreach)}},
		{"other keys untouched", append([]corev1.Toleration{custom}, admitted(300)...),
			[]corev1.Toleration{custom, forever(notReady), forever(unreach)}},
		{"NoExecute wildcard with seconds: forever inserted before it, wildcard kept", []corev1.Toleration{wildcard60},
			[]corev1.Toleration{forever(unreach), forever(notReady), wildcard60}},
		{"wildcard before a keyed one", append([]corev1.Toleration{custom, wildcard60}, admitted(300)...),
			[]corev1.Toleration{custom, forever(unreach), forever(notReady), wildcard60, forever(notReady), forever(unreach)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := clone(tc.in)
			got, changed := Rewrite(tc.in)
			if !reflect.DeepEqual(tc.in, in) {
				t.Fatalf("Rewrite modified its input: %v", tc.in)
			}
			want := tc.want
			if want == nil {
				want = tc.in
			}
			if changed != (tc.want != nil) || !reflect.DeepEqual(got, want) {
				t.Fatalf("Rewrite(%v)\n = %v, %v\nwant %v, %v", show(tc.in), show(got), changed, show(want), tc.want != nil)
			}
			if _, again := Rewrite(got); again {
				t.Errorf("Rewrite is not idempotent on %v", show(got))
			}
			if err := onlyAddedTolerations(got, tc.in); err != "" {
				t.Errorf("the API server would refuse the update: %s", err)
			}
			for _, taints := range [][]corev1.Taint{
				{{Key: unreach, Effect: noExec}},
				{{Key: notReady, Effect: noExec}},
				{{Key: unreach, Effect: noExec}, {Key: notReady, Effect: noExec}},
			} {
				if d := evictAfter(taints, got); d >= 0 {
					t.Errorf("with taints %v the pod is evicted after %s; want never", taints, d)
				}
			}
			// Other NoExecute taints evict as before.
			other := []corev1.Taint{{Key: "example.com/gpu", Effect: noExec}}
			if b, a := evictAfter(other, tc.in), evictAfter(other, got); a != b {
				t.Errorf("taint %v: evicted after %s before the rewrite, %s after", other, b, a)
			}
		})
	}
}

// evictAfter is what the taint-eviction controller of Kubernetes 1.31 does
// with a pod on a node with taints (GetMatchingTolerations and
// getMinTolerationTime in pkg/controller/tainteviction): 0 is now, negative
// is never.
func evictAfter(taints []corev1.Taint, ts []corev1.Toleration) time.Duration {
	var used []corev1.Toleration
	for i := range taints {
		found := false
		for j := range ts {
			if ts[j].ToleratesTaint(&taints[i]) {
				used, found = append(used, ts[j]), true
				break
			}
		}
		if !found {
			return 0
		}
	}
	m := int64(math.MaxInt64)
	for _, t := range used {
		if t.TolerationSeconds != nil {
			if *t.TolerationSeconds <= 0 {
				return 0
			}
			m = min(m, *t.TolerationSeconds)
		}
	}
	if m == math.MaxInt64 {
		return -1
	}
	return time.Duration(m) * time.Second
}

// onlyAddedTolerations is validateOnlyAddedTolerations of the API server
// (pkg/apis/core/validation): every old toleration must be in the new list,
// equal but for tolerationSeconds. It returns "" if the update is valid.
func onlyAddedTolerations(newTs, oldTs []corev1.Toleration) string {
	for _, o := range oldTs {
		found := false
		for _, n := range newTs {
			c := o
			c.TolerationSeconds = n.TolerationSeconds
			if reflect.DeepEqual(c, n) {
				found = true
				break
			}
		}
		if !found {
			return "existing toleration " + str(o) + " was modified or removed"
		}
	}
	for _, n := range newTs {
		if n.TolerationSeconds != nil && n.Effect != noExec {
			return "tolerationSeconds without NoExecute: " + str(n)
		}
		if n.Operator == exists && n.Value != "" {
			return "Exists with a value: " + str(n)
		}
	}
	return ""
}

func clone(ts []corev1.Toleration) []corev1.Toleration {
	if ts == nil {
		return nil
	}
	out := make([]corev1.Toleration, len(ts))
	for i, t := range ts {
		out[i] = *t.DeepCopy()
	}
	return out
}

func str(t corev1.Toleration) string {
	s := t.Key + ":" + string(t.Operator)
	if t.Value != "" {
		s += "=" + t.Value
	}
	s += ":" + string(t.Effect)
	if t.TolerationSeconds != nil {
		s += fmt.Sprintf(":%ds", *t.TolerationSeconds)
	}
	return s
}

func show(ts []corev1.Toleration) []string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = str(t)
	}
	return s
}

func TestPlan(t *testing.T) {
	edge := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "e", Labels: map[string]string{EdgeRoleLabel: ""}}}
	pod := func(mut func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"},
			Spec: corev1.PodSpec{NodeName: "e", Tolerations: admitted(300)}}
		if mut != nil {
			mut(p)
		}
		return p
	}
	node := func(mut func(*corev1.Node)) *corev1.Node {
		n := edge.DeepCopy()
		mut(n)
		return n
	}
	now := metav1.Now()
	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		node    *corev1.Node
		skip    Skip
		rewrite bool
	}{
		{"edge pod", pod(nil), edge, SkipNone, true},
		{"already rewritten", pod(func(p *corev1.Pod) { p.Spec.Tolerations, _ = Rewrite(p.Spec.Tolerations) }), edge, SkipNone, false},
		{"unbound", pod(func(p *corev1.Pod) { p.Spec.NodeName = "" }), nil, SkipUnbound, false},
		{"deleting", pod(func(p *corev1.Pod) { p.DeletionTimestamp = &now }), edge, SkipFinished, false},
		{"succeeded", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), edge, SkipFinished, false},
		{"pod opts out", pod(func(p *corev1.Pod) { p.Annotations = map[string]string{OptOutKey: "true"} }), edge, SkipPodOptOut, false},
		{"pod annotation false", pod(func(p *corev1.Pod) { p.Annotations = map[string]string{OptOutKey: "false"} }), edge, SkipNone, true},
		{"no node yet", pod(nil), nil, SkipNoNode, false},
		{"not an edge node", pod(nil), node(func(n *corev1.Node) { n.Labels = nil }), SkipNotEdge, false},
		{"node label opts out", pod(nil), node(func(n *corev1.Node) { n.Labels[OptOutKey] = "true" }), SkipNodeOptOut, false},
		{"node annotation opts out", pod(nil), node(func(n *corev1.Node) { n.Annotations = map[string]string{OptOutKey: "true"} }), SkipNodeOptOut, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, skip := plan(tc.pod, tc.node)
			if skip != tc.skip || (want != nil) != tc.rewrite {
				t.Fatalf("plan = %v, %s; want rewrite %v, skip %s", show(want), skip, tc.rewrite, tc.skip)
			}
		})
	}
}

func TestTrimKeepsWhatPlanReads(t *testing.T) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u", ResourceVersion: "7",
			Annotations: map[string]string{OptOutKey: "true", "big": "x"}, Labels: map[string]string{"app": "a"}},
		Spec:   corev1.PodSpec{NodeName: "e", Tolerations: admitted(300), Containers: []corev1.Container{{Name: "c"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1"},
	}
	got, _ := trim(p)
	want := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u", ResourceVersion: "7",
			Annotations: map[string]string{OptOutKey: "true"}},
		Spec:   corev1.PodSpec{NodeName: "e", Tolerations: admitted(300)},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("trim(pod) = %+v\nwant %+v", got, want)
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "e", Labels: map[string]string{EdgeRoleLabel: "", "zone": "z"}},
		Status: corev1.NodeStatus{Phase: corev1.NodeRunning}}
	gotN, _ := trim(n)
	if wantN := (&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "e", Labels: map[string]string{EdgeRoleLabel: ""}}}); !reflect.DeepEqual(gotN, wantN) {
		t.Fatalf("trim(node) = %+v, want %+v", gotN, wantN)
	}
}

func TestConfigValidate(t *testing.T) {
	var c Config
	if err := c.Validate(); err != nil || c.PatchQPS != 20 || c.PatchBurst != 100 ||
		c.RetryBaseDelay.Duration != 100*time.Millisecond || c.RetryMaxDelay.Duration != 5*time.Minute {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	for _, bad := range []Config{
		{PatchQPS: -1},
		{PatchBurst: -1},
		{RetryBaseDelay: metav1.Duration{Duration: -time.Second}},
		{RetryBaseDelay: metav1.Duration{Duration: time.Minute}, RetryMaxDelay: metav1.Duration{Duration: time.Second}},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", bad)
		}
	}
}
