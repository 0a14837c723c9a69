//go:build integration

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/cloudcore/autonomy"
	"github.com/tether-edge/tether/protocol"
)

// The API server gives every pod tolerations of the unreachable and
// not-ready taints for tolerationSecondsE2E (TestMain's apiserver flags).
const tolerationSecondsE2E = 5

// An edge node cut off from the cloud is tainted unreachable:NoExecute by
// the real node lifecycle controller, and the taint-eviction controller
// evicts what does not tolerate that forever: here only the pod that opted
// out. The Deployment's pods and a bare pod stay, are not replaced, and are
// Running and Ready with the same UIDs, IPs and start times once the link
// returns.
func TestPodsSurviveDisconnection(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := startEdge(t, c, "e2e-autonomy")
	// The node lifecycle controller taints nodes NoExecute only in a zone
	// that still has Ready nodes (in a fully disrupted zone it blames its
	// own connectivity), and in a small cluster only while at most 2 or
	// under 55% of the zone's nodes are not Ready. Earlier tests leave dead
	// nodes in the default zone: give this node its own zone, with a peer
	// that stays connected.
	peer := startEdge(t, c, "e2e-autonomy-peer")
	for _, n := range []*edge{e, peer} {
		waitNodeReady(t, n.name, corev1.ConditionTrue, 30*time.Second)
		labelNode(t, n.name, corev1.LabelTopologyZone, "e2e-autonomy")
	}

	replicas := int32(2)
	labels := map[string]string{"app": "autonomy-web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{autonomy.EdgeRoleLabel: "", corev1.LabelHostname: e.name},
					Containers:   []corev1.Container{{Name: "web", Image: "busybox:e2e", Command: []string{"httpd", "-f"}}},
				},
			},
		},
	}
	if _, err := client.AppsV1().Deployments(ns).Create(t.Context(), dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	optOut := barePod(ns, "leaves", e.name)
	optOut.Annotations = map[string]string{autonomy.OptOutKey: "true"}
	for _, p := range []*corev1.Pod{barePod(ns, "stays", e.name), optOut} {
		if _, err := client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// Every pod Running and Ready; the tolerations rewritten except the
	// opted-out pod's.
	var before map[types.UID]podRun // the pods that must stay, by UID
	var leaves types.UID
	eventually(t, 60*time.Second, "4 pods Running and Ready, tolerations rewritten", func() (bool, error) {
		pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		before = map[types.UID]podRun{}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Status.Phase != corev1.PodRunning || !podReady(p) {
				return false, fmt.Errorf("pod %s not Running and Ready", p.Name)
			}
			d := disconnectToleration(p)
			if p.Name == "leaves" {
				if d != tolerationSecondsE2E*time.Second {
					return false, fmt.Errorf("opted-out pod tolerates the disconnect for %s; want %ds, untouched", d, tolerationSecondsE2E)
				}
				leaves = p.UID
				continue
			}
			if d >= 0 {
				return false, fmt.Errorf("pod %s tolerates the disconnect for %s, not forever", p.Name, d)
			}
			before[p.UID] = runOf(p)
		}
		return len(pods.Items) == 4, fmt.Errorf("%d pods", len(pods.Items))
	})
	st := c.cc.AutonomyStats()
	t.Logf("autonomy stats after start: %+v", st)
	if st.Patched < 3 {
		t.Errorf("autonomy stats %+v: want at least 3 pods patched", st)
	}

	e.link.Cut()
	cut := time.Now()
	waitNodeReady(t, e.name, corev1.ConditionUnknown, nodeMonitorGrace+20*time.Second)
	unknown := time.Since(cut)
	eventually(t, 30*time.Second, "node tainted unreachable:NoExecute", func() (bool, error) {
		tainted, taints, err := unreachableTaint(t, e.name)
		return tainted, fmt.Errorf("taints %v: %v", taints, err)
	})
	tainted := time.Now()
	t.Logf("after the cut: Ready=Unknown %s, tainted %s", unknown.Round(time.Millisecond), time.Since(cut).Round(time.Millisecond))

	// The control case: the opted-out pod is evicted after its
	// tolerationSeconds.
	eventually(t, tolerationSecondsE2E*time.Second+30*time.Second, "opted-out pod evicted", func() (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(t.Context(), "leaves", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return err == nil && (p.UID != leaves || p.DeletionTimestamp != nil), err
	})
	t.Logf("opted-out pod evicted %s after the taint", time.Since(tainted).Round(time.Millisecond))

	// The others stay, well past tolerationSeconds, and nothing replaces
	// them.
	hold := tainted.Add(tolerationSecondsE2E*time.Second + nodeMonitorGrace + 5*time.Second)
	for checks := 0; ; checks++ {
		pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		stay := 0
		for _, p := range pods.Items {
			switch _, ok := before[p.UID]; {
			case p.UID == leaves:
			case !ok:
				t.Fatalf("pod %s (%s) appeared while the node was away: a replacement", p.Name, p.UID)
			case p.DeletionTimestamp != nil:
				t.Fatalf("pod %s is being deleted while the node is away", p.Name)
			default:
				stay++
			}
		}
		if stay != len(before) {
			t.Fatalf("%d of %d pods left while the node is away", stay, len(before))
		}
		if time.Now().After(hold) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if tainted, taints, err := unreachableTaint(t, e.name); !tainted {
		t.Fatalf("node not tainted unreachable at the end of the hold (taints %v, %v): the hold proves nothing", taints, err)
	}
	t.Logf("%d pods kept through %s of the taint", len(before), time.Since(tainted).Round(time.Millisecond))

	e.link.Heal()
	healed := time.Now()
	waitNodeReady(t, e.name, corev1.ConditionTrue, 30*time.Second)
	eventually(t, 30*time.Second, "taint lifted", func() (bool, error) {
		tainted, taints, err := unreachableTaint(t, e.name)
		return err == nil && !tainted, fmt.Errorf("taints %v: %v", taints, err)
	})
	t.Logf("after the heal: Ready and untainted %s", time.Since(healed).Round(time.Millisecond))
	eventually(t, 30*time.Second, "the same pods Running and Ready, as they ran before", func() (bool, error) {
		for uid, was := range before {
			p, err := podByUID(t, ns, uid)
			if err != nil {
				return false, err
			}
			if p.Status.Phase != corev1.PodRunning || !podReady(p) {
				return false, fmt.Errorf("pod %s not Running and Ready", p.Name)
			}
			if now := runOf(p); now != was {
				return false, fmt.Errorf("pod %s was %+v before the outage, now %+v: restarted", p.Name, was, now)
			}
		}
		return true, nil
	})
	t.Logf("pods Ready again %s after the heal", time.Since(healed).Round(time.Millisecond))
	eventually(t, 30*time.Second, "the evicted pod gone, from the API server and the edge", func() (bool, error) {
		_, err := client.CoreV1().Pods(ns).Get(t.Context(), "leaves", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return false, err
		}
		_, held := e.objects(protocol.KindPod)[string(leaves)]
		return !held, nil
	})
	pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if _, ok := before[p.UID]; !ok {
			t.Errorf("pod %s (%s): not one of the pods from before the outage", p.Name, p.UID)
		}
	}
	if len(pods.Items) != len(before) {
		t.Errorf("%d pods after the outage, want the %d from before", len(pods.Items), len(before))
	}
}

// Only pods bound to edge nodes are touched, and not those that opted out,
// themselves or through their node. A pod bound to a node that does not
// exist yet is rewritten once an edge Node of that name appears. The nodes
// here are bare Node objects: the controller only reads their labels.
func TestAutonomyTouchesOnlyEdgePods(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	nodes := map[string]map[string]string{
		"e2e-autonomy-plain":  nil, // not an edge node
		"e2e-autonomy-optout": {autonomy.EdgeRoleLabel: "", autonomy.OptOutKey: "true"},
		"e2e-autonomy-edge":   {autonomy.EdgeRoleLabel: ""},
	}
	for name, labels := range nodes {
		if name == "e2e-autonomy-edge" {
			continue // created after its pod is bound
		}
		createNode(t, name, labels)
	}
	for _, n := range []string{"e2e-autonomy-plain", "e2e-autonomy-optout", "e2e-autonomy-edge"} {
		if _, err := client.CoreV1().Pods(ns).Create(t.Context(), barePod(ns, "on-"+n, n), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second) // the controller sees every pod, and the edge one's missing node
	createNode(t, "e2e-autonomy-edge", nodes["e2e-autonomy-edge"])
	eventually(t, 30*time.Second, "pod on the new edge node rewritten", func() (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(t.Context(), "on-e2e-autonomy-edge", metav1.GetOptions{})
		return err == nil && disconnectToleration(p) < 0, err
	})
	// One worker takes keys in order: the pods queued before were looked at.
	for _, n := range []string{"e2e-autonomy-plain", "e2e-autonomy-optout"} {
		p, err := client.CoreV1().Pods(ns).Get(t.Context(), "on-"+n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d := disconnectToleration(p); d != tolerationSecondsE2E*time.Second {
			t.Errorf("pod on %s tolerates the disconnect for %s; want %ds, untouched", n, d, tolerationSecondsE2E)
		}
		for _, f := range p.ManagedFields {
			if f.Manager == autonomy.FieldManager {
				t.Errorf("pod on %s has fields managed by %s", n, f.Manager)
			}
		}
	}
	if st := c.cc.AutonomyStats(); st.OptedOut < 1 || st.Patched < 1 {
		t.Errorf("autonomy stats %+v: want the opted-out node's pod counted and one pod patched", st)
	}
}

func labelNode(t *testing.T, node, key, value string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, key, value)
	if _, err := client.CoreV1().Nodes().Patch(t.Context(), node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

func createNode(t *testing.T, name string, labels map[string]string) {
	t.Helper()
	if _, err := client.CoreV1().Nodes().Create(t.Context(), &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// disconnectToleration is how long p tolerates its node being unreachable or
// not ready, as the taint-eviction controller reckons it: the first
// toleration matching each taint counts. Negative is forever.
func disconnectToleration(p *corev1.Pod) time.Duration {
	d := time.Duration(-1)
	for _, key := range []string{corev1.TaintNodeUnreachable, corev1.TaintNodeNotReady} {
		taint := corev1.Taint{Key: key, Effect: corev1.TaintEffectNoExecute}
		found := false
		for _, tol := range p.Spec.Tolerations {
			if tol.ToleratesTaint(&taint) {
				if s := tol.TolerationSeconds; s != nil && (d < 0 || time.Duration(*s)*time.Second < d) {
					d = time.Duration(*s) * time.Second
				}
				found = true
				break
			}
		}
		if !found {
			return 0
		}
	}
	return d
}

// unreachableTaint reports whether the node is tainted
// unreachable:NoExecute, and its taints.
func unreachableTaint(t *testing.T, name string) (bool, []corev1.Taint, error) {
	n, err := client.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		return false, nil, err
	}
	for _, taint := range n.Spec.Taints {
		if taint.Key == corev1.TaintNodeUnreachable && taint.Effect == corev1.TaintEffectNoExecute {
			return true, n.Spec.Taints, nil
		}
	}
	return false, n.Spec.Taints, nil
}

func podByUID(t *testing.T, ns string, uid types.UID) (*corev1.Pod, error) {
	pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	for i := range pods.Items {
		if pods.Items[i].UID == uid {
			return &pods.Items[i], nil
		}
	}
	return nil, fmt.Errorf("no pod %s", uid)
}

// podRun is what the runtime reports of a running pod; any restart changes
// it (the fake runtime gives a new IP and start time).
type podRun struct {
	Name, IP, Started string
	Restarts          int32
}

func runOf(p *corev1.Pod) podRun {
	r := podRun{Name: p.Name, IP: p.Status.PodIP}
	if p.Status.StartTime != nil {
		r.Started = p.Status.StartTime.UTC().String()
	}
	for _, c := range p.Status.ContainerStatuses {
		r.Restarts += c.RestartCount
		if c.State.Running != nil {
			r.Started += " " + c.State.Running.StartedAt.UTC().String()
		}
	}
	return r
}
