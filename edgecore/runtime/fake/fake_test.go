package fake

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// A pod annotated to restart every 5s restarts at the first sync 5s or more
// after its last start; one without the annotation, or with a period under
// a second, never does.
func TestRestartEvery(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	r := New("10.0.0.1")
	r.Now = func() time.Time { return now }
	mk := func(uid, every string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: types.UID("u-" + uid), Name: uid},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
		if every != "" {
			p.Annotations = map[string]string{RestartEveryAnnotation: every}
		}
		return p
	}
	pods := []*corev1.Pod{mk("flapping", "5s"), mk("steady", ""), mk("too-fast", "100ms"), mk("bad", "often")}
	sync := func() []int32 {
		var out []int32
		for _, p := range pods {
			s, err := r.SyncPod(t.Context(), p)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, s.ContainerStatuses[0].RestartCount)
		}
		return out
	}
	for _, step := range []struct {
		advance time.Duration
		want    []int32
	}{
		{0, []int32{0, 0, 0, 0}},
		{4 * time.Second, []int32{0, 0, 0, 0}},
		{time.Second, []int32{1, 0, 0, 0}},
		{time.Second, []int32{1, 0, 0, 0}},
		{5 * time.Second, []int32{2, 0, 0, 0}},
		{time.Minute, []int32{3, 0, 0, 0}},
	} {
		now = now.Add(step.advance)
		got := sync()
		for i := range got {
			if got[i] != step.want[i] {
				t.Fatalf("after %s: restarts %v, want %v", step.advance, got, step.want)
			}
		}
	}
	s, _ := r.SyncPod(t.Context(), pods[0])
	c := s.ContainerStatuses[0]
	if !c.State.Running.StartedAt.Time.Equal(now) || c.LastTerminationState.Terminated == nil {
		t.Fatalf("container %+v: want it running since the last restart, with the previous run terminated", c)
	}
}
