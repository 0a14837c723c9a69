//go:build integration

package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// statusWrites watches, from its start, every write of the pods of one
// namespace and of one Node in the API server, and records what each
// MODIFIED event shows that no status write may do. The API server drops a
// write that changes nothing (no new resourceVersion, no event), so every
// event is a write that changed the stored object; checked per object,
// against the object of the previous event:
//
//   - a write that changed nothing but resourceVersion and managedFields
//     (a duplicate that got through);
//   - a pod status equal to one the pod already held and left (A, B, A: an
//     older report written after a newer one);
//   - a pod status going backwards: its phase back from Running to
//     Pending, or from Succeeded/Failed to anything else; its startTime
//     earlier; a container's restartCount lower, or its running startedAt
//     earlier; a condition keeping its status with an earlier
//     lastTransitionTime;
//   - a Node condition's lastHeartbeatTime earlier than one already written,
//     or its lastTransitionTime changed while its status did not.
//
// The pod rules hold for every writer of pods the test has (the edge's
// reports through any replica, the API server's deletion).
type statusWrites struct {
	mu sync.Mutex
	// pods holds each pod's statuses in the order written, by UID; last
	// the last object seen of each pod and of the Node. Guarded by mu.
	pods     map[string][]corev1.PodStatus
	lastPod  map[string]*corev1.Pod
	lastNode *corev1.Node
	// writes counts the MODIFIED events, podStatusWrites those that
	// changed a pod's status, nodeStatusWrites a Node's; problems are what
	// broke the rules. Guarded by mu.
	writes, podStatusWrites, nodeStatusWrites int
	problems                                  []string
}

// watchStatusWrites starts a statusWrites on the pods of ns and the Node
// node; it stops at the end of the test.
func watchStatusWrites(t *testing.T, ns, node string) *statusWrites {
	t.Helper()
	w := &statusWrites{pods: map[string][]corev1.PodStatus{}, lastPod: map[string]*corev1.Pod{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		w.pod(&pods.Items[i])
	}
	pw, err := watchtools.NewRetryWatcher(pods.ResourceVersion, &cache.ListWatch{
		WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
			return client.CoreV1().Pods(ns).Watch(ctx, o)
		}})
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{FieldSelector: "metadata.name=" + node})
	if err != nil {
		t.Fatal(err)
	}
	for i := range nodes.Items {
		w.node(&nodes.Items[i])
	}
	nw, err := watchtools.NewRetryWatcher(nodes.ResourceVersion, &cache.ListWatch{
		WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = "metadata.name=" + node
			return client.CoreV1().Nodes().Watch(ctx, o)
		}})
	if err != nil {
		t.Fatal(err)
	}
	for _, wi := range []watch.Interface{pw, nw} {
		wg.Go(func() {
			defer wi.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case ev, ok := <-wi.ResultChan():
					if !ok {
						return
					}
					if ev.Type != watch.Modified && ev.Type != watch.Added {
						continue
					}
					switch o := ev.Object.(type) {
					case *corev1.Pod:
						w.pod(o)
					case *corev1.Node:
						w.node(o)
					}
				}
			}
		})
	}
	return w
}

// stripped is o with what every write changes cleared.
func stripped(o metav1.Object) {
	o.SetResourceVersion("")
	o.SetManagedFields(nil)
}

func (w *statusWrites) problem(format string, args ...any) {
	if len(w.problems) < 50 {
		w.problems = append(w.problems, fmt.Sprintf(format, args...))
	}
}

func (w *statusWrites) pod(p *corev1.Pod) {
	w.mu.Lock()
	defer w.mu.Unlock()
	uid := string(p.UID)
	name := p.Name + " (" + uid[:8] + ")"
	prev := w.lastPod[uid]
	cur := p.DeepCopy()
	stripped(cur)
	w.lastPod[uid] = cur
	if prev == nil {
		w.pods[uid] = []corev1.PodStatus{cur.Status}
		return
	}
	w.writes++
	if equality.Semantic.DeepEqual(prev, cur) {
		w.problem("pod %s: written at resourceVersion %s with nothing changed", name, p.ResourceVersion)
		return
	}
	seen := w.pods[uid]
	if equality.Semantic.DeepEqual(seen[len(seen)-1], cur.Status) {
		return // metadata or spec changed
	}
	w.podStatusWrites++
	for i, s := range seen[:len(seen)-1] {
		if equality.Semantic.DeepEqual(s, cur.Status) {
			w.problem("pod %s: status %d of %d written again at resourceVersion %s after a newer one (%s)",
				name, i+1, len(seen), p.ResourceVersion, podStatusLine(&cur.Status))
		}
	}
	if why := podStatusBack(&seen[len(seen)-1], &cur.Status); why != "" {
		w.problem("pod %s: status went back at resourceVersion %s: %s", name, p.ResourceVersion, why)
	}
	w.pods[uid] = append(seen, cur.Status)
}

// podStatusLine is a short account of a pod status for messages.
func podStatusLine(s *corev1.PodStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s", s.Phase)
	for _, c := range s.Conditions {
		fmt.Fprintf(&b, " %s=%s@%s", c.Type, c.Status, c.LastTransitionTime.Format(time.RFC3339))
	}
	for _, c := range s.ContainerStatuses {
		fmt.Fprintf(&b, " %s:restarts=%d", c.Name, c.RestartCount)
	}
	return b.String()
}

// phaseRank orders pod phases as a pod lives them; -1 for none or Unknown.
func phaseRank(p corev1.PodPhase) int {
	switch p {
	case corev1.PodPending:
		return 0
	case corev1.PodRunning:
		return 1
	case corev1.PodSucceeded, corev1.PodFailed:
		return 2
	}
	return -1
}

// podStatusBack says how cur goes back from prev, or "".
func podStatusBack(prev, cur *corev1.PodStatus) string {
	if a, b := phaseRank(prev.Phase), phaseRank(cur.Phase); a >= 0 && b >= 0 && (b < a || (a == 2 && prev.Phase != cur.Phase)) {
		return fmt.Sprintf("phase %s after %s", cur.Phase, prev.Phase)
	}
	if prev.StartTime != nil && cur.StartTime != nil && cur.StartTime.Before(prev.StartTime) {
		return fmt.Sprintf("startTime %s after %s", cur.StartTime, prev.StartTime)
	}
	containers := func(s *corev1.PodStatus) map[string]corev1.ContainerStatus {
		m := map[string]corev1.ContainerStatus{}
		for _, c := range append(append([]corev1.ContainerStatus{}, s.InitContainerStatuses...), s.ContainerStatuses...) {
			m[c.Name] = c
		}
		return m
	}
	pc := containers(prev)
	for n, c := range containers(cur) {
		o, ok := pc[n]
		if !ok {
			continue
		}
		if c.RestartCount < o.RestartCount {
			return fmt.Sprintf("container %s restartCount %d after %d", n, c.RestartCount, o.RestartCount)
		}
		if c.State.Running != nil && o.State.Running != nil && c.State.Running.StartedAt.Before(&o.State.Running.StartedAt) {
			return fmt.Sprintf("container %s running since %s after since %s", n, c.State.Running.StartedAt, o.State.Running.StartedAt)
		}
	}
	for _, c := range cur.Conditions {
		for _, o := range prev.Conditions {
			if o.Type == c.Type && o.Status == c.Status && c.LastTransitionTime.Before(&o.LastTransitionTime) {
				return fmt.Sprintf("condition %s=%s since %s after since %s", c.Type, c.Status, c.LastTransitionTime, o.LastTransitionTime)
			}
		}
	}
	return ""
}

func (w *statusWrites) node(n *corev1.Node) {
	w.mu.Lock()
	defer w.mu.Unlock()
	prev := w.lastNode
	cur := n.DeepCopy()
	stripped(cur)
	w.lastNode = cur
	if prev == nil {
		return
	}
	w.writes++
	if equality.Semantic.DeepEqual(prev, cur) {
		w.problem("node %s: written at resourceVersion %s with nothing changed", n.Name, n.ResourceVersion)
		return
	}
	if equality.Semantic.DeepEqual(prev.Status, cur.Status) {
		return
	}
	w.nodeStatusWrites++
	for _, c := range cur.Status.Conditions {
		for _, o := range prev.Status.Conditions {
			if o.Type != c.Type {
				continue
			}
			if c.LastHeartbeatTime.Before(&o.LastHeartbeatTime) {
				w.problem("node %s: condition %s heartbeat %s after %s (resourceVersion %s)", n.Name, c.Type,
					c.LastHeartbeatTime, o.LastHeartbeatTime, n.ResourceVersion)
			}
			if o.Status == c.Status && !c.LastTransitionTime.Equal(&o.LastTransitionTime) {
				w.problem("node %s: condition %s=%s transition time %s changed to %s (resourceVersion %s)", n.Name,
					c.Type, c.Status, o.LastTransitionTime, c.LastTransitionTime, n.ResourceVersion)
			}
		}
	}
}

// statuses returns how many statuses the pod with uid held, its first
// included.
func (w *statusWrites) statuses(uid string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pods[uid])
}

// check fails t with every write that broke a rule, and returns the
// counts of writes seen.
func (w *statusWrites) check(t *testing.T) (writes, podStatus, nodeStatus int) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.problems {
		t.Error(p)
	}
	return w.writes, w.podStatusWrites, w.nodeStatusWrites
}
