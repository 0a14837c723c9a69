package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/tether-edge/tether/protocol"
)

// splitLister is a clientLister that reads nodes through a clientset of
// their own.
type splitLister struct {
	clientLister
	nodes kubernetes.Interface
}

func (l splitLister) Node(name string) (*corev1.Node, error) {
	return l.nodes.CoreV1().Nodes().Get(l.ctx, name, metav1.GetOptions{})
}

// clientLister is a Lister that reads pods and nodes through the fake
// clientset, so they are never stale, and devices from fakeDevices.
type clientLister struct {
	ctx    context.Context
	client kubernetes.Interface
	*fakeDevices
}

func (l clientLister) Pod(namespace, name string) (*corev1.Pod, error) {
	return l.client.CoreV1().Pods(namespace).Get(l.ctx, name, metav1.GetOptions{})
}

func (l clientLister) Node(name string) (*corev1.Node, error) {
	return l.client.CoreV1().Nodes().Get(l.ctx, name, metav1.GetOptions{})
}

// edgeNodeObj is the Node of an edge node, as RegisterNode creates it.
func edgeNodeObj(name string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name), Labels: NodeLabels(name, nil)}}
}

// newWriter returns a Writer over a fake clientset holding objs and, unless
// objs has Nodes of those names, the Nodes of edge nodes edge-1 and edge-2.
func newWriter(t testing.TB, cfg Config, objs ...runtime.Object) (*Writer, *fake.Clientset) {
	t.Helper()
	for _, name := range []string{edge1, edge2} {
		if !slices.ContainsFunc(objs, func(o runtime.Object) bool { n, ok := o.(*corev1.Node); return ok && n.Name == name }) {
			objs = append(objs, edgeNodeObj(name))
		}
	}
	client := fake.NewClientset(objs...)
	log := slog.New(slog.DiscardHandler)
	if tt, ok := t.(*testing.T); ok {
		log = slog.New(slog.NewTextHandler(tt.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	devs := newFakeDevices()
	w, err := New(client, devs, clientLister{ctx: t.Context(), client: client, fakeDevices: devs}, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return w, client
}

// start runs w until the test ends.
func start(t testing.TB, w *Writer) {
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan error, 1)
	go func() { stopped <- w.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-stopped; err != nil {
			t.Errorf("Start: %v", err)
		}
	})
}

// result is a done callback that fails the test if called twice.
type result struct {
	t     testing.TB
	calls atomic.Int32
	ch    chan error
}

func newResult(t testing.TB) *result { return &result{t: t, ch: make(chan error, 1)} }

func (r *result) done(err error) {
	if r.calls.Add(1) > 1 {
		r.t.Errorf("done called again, with %v", err)
		return
	}
	r.ch <- err
}

func (r *result) wait() error {
	r.t.Helper()
	select {
	case err := <-r.ch:
		return err
	case <-time.After(10 * time.Second):
		r.t.Fatal("done not called within 10s")
		return nil
	}
}

func actions(c *fake.Clientset, verb, resource string) []k8stesting.Action {
	var out []k8stesting.Action
	for _, a := range c.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource {
			out = append(out, a)
		}
	}
	return out
}

const (
	edge1 = "edge-1"
	edge2 = "edge-2"
	podNS = "shop"
)

func pod(name, uid, node string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: podNS, UID: types.UID(uid)},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "i"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodPending, QOSClass: corev1.PodQOSBestEffort},
	}
}

func podStatusMsg(t testing.TB, p *corev1.Pod, s corev1.PodStatus) *protocol.PodStatus {
	b, err := protocol.EncodePodStatus(&s)
	if err != nil {
		t.Fatal(err)
	}
	return &protocol.PodStatus{UID: string(p.UID), Namespace: p.Namespace, Name: p.Name, Status: b}
}

func running(msg string) corev1.PodStatus {
	return corev1.PodStatus{Phase: corev1.PodRunning, Message: msg, PodIP: "10.88.0.7",
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
}

func TestConfigValidate(t *testing.T) {
	var c Config
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	if c.Workers != 8 || c.LeaseDuration != 40*time.Second || c.RenewInterval != 10*time.Second ||
		c.MaxRetries != 5 || c.Clock == nil {
		t.Fatalf("defaults: %+v", c)
	}
	for _, bad := range []Config{
		{Workers: -1},
		{LeaseDuration: 1500 * time.Millisecond},
		{LeaseDuration: 10 * time.Second, RenewInterval: 10 * time.Second},
		{MaxRetries: -1},
		{RetryBaseDelay: time.Second, RetryMaxDelay: time.Millisecond},
		{WriteTimeout: -time.Second},
	} {
		if err := bad.validate(); err == nil {
			t.Errorf("%+v: validated", bad)
		}
	}
}

func TestPodStatusCoalesce(t *testing.T) {
	p := pod("p1", "uid-1", edge1)
	w, client := newWriter(t, Config{}, p)
	r1, r2 := newResult(t), newResult(t)
	// Both arrive before any worker runs.
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("first")), r1.done)
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("second")), r2.done)
	start(t, w)
	if err := r1.wait(); err != nil {
		t.Fatal(err)
	}
	if err := r2.wait(); err != nil {
		t.Fatal(err)
	}
	patches := actions(client, "patch", "pods")
	if len(patches) != 1 {
		t.Fatalf("%d patches, want 1", len(patches))
	}
	if patch := string(patches[0].(k8stesting.PatchAction).GetPatch()); !strings.Contains(patch, `"second"`) {
		t.Fatalf("patch %s does not carry the newer status", patch)
	}
	if s := w.Stats(); s.Coalesced != 1 || s.PodStatuses != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// A status that arrives while an older one of the same pod is being written
// is written after it; statuses that arrive meanwhile are coalesced.
func TestPodStatusWhileWriting(t *testing.T) {
	p := pod("p1", "uid-1", edge1)
	w, client := newWriter(t, Config{}, p)
	entered, release := make(chan struct{}), make(chan struct{})
	var n atomic.Int32
	client.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if n.Add(1) == 1 {
			close(entered)
			<-release
		}
		return false, nil, nil
	})
	start(t, w)
	r1, r2, r3 := newResult(t), newResult(t), newResult(t)
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("1")), r1.done)
	<-entered
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("2")), r2.done)
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("3")), r3.done)
	close(release)
	for _, r := range []*result{r1, r2, r3} {
		if err := r.wait(); err != nil {
			t.Fatal(err)
		}
	}
	patches := actions(client, "patch", "pods")
	if len(patches) != 2 || !strings.Contains(string(patches[1].(k8stesting.PatchAction).GetPatch()), `"3"`) {
		t.Fatalf("got %d patches, want 2, the last with status 3", len(patches))
	}
	got, _ := client.CoreV1().Pods(podNS).Get(t.Context(), "p1", metav1.GetOptions{})
	if got.Status.Message != "3" {
		t.Fatalf("pod status message %q, want 3", got.Status.Message)
	}
}

func TestPodStatusPatch(t *testing.T) {
	p := pod("p1", "uid-1", edge1)
	gate := corev1.PodCondition{Type: "example.com/gate", Status: corev1.ConditionTrue}
	p.Status.Conditions = []corev1.PodCondition{gate}
	w, client := newWriter(t, Config{}, p)
	start(t, w)

	r := newResult(t)
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("up")), r.done)
	if err := r.wait(); err != nil {
		t.Fatal(err)
	}
	patches := actions(client, "patch", "pods")
	if len(patches) != 1 {
		t.Fatalf("%d patches, want 1", len(patches))
	}
	pa := patches[0].(k8stesting.PatchAction)
	if pa.GetSubresource() != "status" || pa.GetPatchType() != types.StrategicMergePatchType {
		t.Fatalf("patch of %q with %s, want a strategic merge patch of status", pa.GetSubresource(), pa.GetPatchType())
	}
	var patch struct {
		Metadata struct {
			UID string `json:"uid"`
		} `json:"metadata"`
		Status map[string]any `json:"status"`
	}
	if err := json.Unmarshal(pa.GetPatch(), &patch); err != nil {
		t.Fatal(err)
	}
	if patch.Metadata.UID != "uid-1" || patch.Status["phase"] != "Running" {
		t.Fatalf("patch %s: want the uid precondition and phase Running", pa.GetPatch())
	}
	got, _ := client.CoreV1().Pods(podNS).Get(t.Context(), "p1", metav1.GetOptions{})
	if got.Status.Phase != corev1.PodRunning || got.Status.QOSClass != corev1.PodQOSBestEffort || len(got.Status.Conditions) != 2 {
		t.Fatalf("pod status %+v: want Running, the QoS class and the gate condition kept", got.Status)
	}

	// The same status again: nothing to write.
	r = newResult(t)
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("up")), r.done)
	if err := r.wait(); err != nil {
		t.Fatal(err)
	}
	if n := len(actions(client, "patch", "pods")); n != 1 {
		t.Fatalf("%d patches after an unchanged status, want 1", n)
	}

	// An ephemeral container's status (kubectl debug) is written like the
	// others: the field is not dropped on the way.
	st := running("up")
	st.EphemeralContainerStatuses = []corev1.ContainerStatus{{Name: "debugger", Image: "busybox",
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 3, Reason: "Error"}}}}
	r = newResult(t)
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, st), r.done)
	if err := r.wait(); err != nil {
		t.Fatal(err)
	}
	got, _ = client.CoreV1().Pods(podNS).Get(t.Context(), "p1", metav1.GetOptions{})
	if es := got.Status.EphemeralContainerStatuses; len(es) != 1 || es[0].Name != "debugger" ||
		es[0].State.Terminated == nil || es[0].State.Terminated.ExitCode != 3 {
		t.Fatalf("ephemeral container statuses %+v: want debugger terminated with exit code 3", es)
	}
}

func TestPodStatusRejected(t *testing.T) {
	other := pod("other", "uid-2", "edge-2")
	mine := pod("mine", "uid-1", edge1)
	w, client := newWriter(t, Config{}, other, mine)
	client.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		// The API server's answer when the UID precondition fails.
		return true, nil, apierrors.NewInvalid(schema.GroupKind{Kind: "Pod"}, "mine", field.ErrorList{
			field.Invalid(field.NewPath("metadata", "uid"), "uid-1", "field is immutable")})
	})
	start(t, w)
	cases := []struct {
		name string
		node string
		m    *protocol.PodStatus
	}{
		{"bound to another node", edge1, podStatusMsg(t, other, running(""))},
		{"uid mismatch", edge1, podStatusMsg(t, pod("mine", "uid-old", edge1), running(""))},
		{"gone", edge1, podStatusMsg(t, pod("gone", "uid-3", edge1), running(""))},
		{"uid precondition failed", edge1, podStatusMsg(t, mine, running(""))},
		{"bad node name", "Edge_1", podStatusMsg(t, mine, running(""))},
		{"nil message", edge1, nil},
	}
	for _, c := range cases {
		r := newResult(t)
		w.PodStatus(c.node, protocol.StatusOrder{}, c.m, r.done)
		if err := r.wait(); !errors.Is(err, ErrRejected) {
			t.Errorf("%s: got %v, want ErrRejected", c.name, err)
		}
	}
	// Only the pod that passed the checks reached the API server.
	if n := len(actions(client, "patch", "pods")); n != 1 {
		t.Fatalf("%d patches, want 1", n)
	}
	if s := w.Stats(); s.Rejected != int64(len(cases)) {
		t.Fatalf("stats %+v", s)
	}
}

func TestPodTerminated(t *testing.T) {
	now := metav1.Now()
	dying := pod("dying", "uid-1", edge1)
	dying.DeletionTimestamp = &now
	dying.Finalizers = nil
	alive := pod("alive", "uid-2", edge1)
	elsewhere := pod("elsewhere", "uid-3", "edge-2")
	elsewhere.DeletionTimestamp = &now
	w, client := newWriter(t, Config{}, dying, alive, elsewhere)
	start(t, w)

	terminated := func(p *corev1.Pod) error {
		r := newResult(t)
		w.PodTerminated(edge1, &protocol.PodTerminated{UID: string(p.UID), Namespace: p.Namespace, Name: p.Name}, r.done)
		return r.wait()
	}
	if err := terminated(dying); err != nil {
		t.Fatal(err)
	}
	deletes := actions(client, "delete", "pods")
	if len(deletes) != 1 {
		t.Fatalf("%d deletes, want 1", len(deletes))
	}
	opts := deletes[0].(k8stesting.DeleteAction).GetDeleteOptions()
	if opts.GracePeriodSeconds == nil || *opts.GracePeriodSeconds != 0 ||
		opts.Preconditions == nil || opts.Preconditions.UID == nil || *opts.Preconditions.UID != "uid-1" {
		t.Fatalf("delete options %+v: want grace 0 and the uid precondition", opts)
	}
	// Gone already: success.
	if err := terminated(dying); err != nil {
		t.Fatalf("pod already gone: %v", err)
	}
	if err := terminated(alive); !errors.Is(err, ErrRejected) {
		t.Fatalf("pod not being deleted: got %v, want ErrRejected", err)
	}
	if err := terminated(elsewhere); !errors.Is(err, ErrRejected) {
		t.Fatalf("pod of another node: got %v, want ErrRejected", err)
	}
	if n := len(actions(client, "delete", "pods")); n != 1 {
		t.Fatalf("%d deletes, want 1", n)
	}
}

func nodeStatus(ip string, ready corev1.ConditionStatus) corev1.NodeStatus {
	res := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi"),
		corev1.ResourcePods: resource.MustParse("110")}
	return corev1.NodeStatus{
		Capacity: res, Allocatable: res,
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready, Reason: "KubeletReady"}},
		Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: edge1}},
		NodeInfo:   corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "arm64", KubeletVersion: "tether"},
	}
}

func nodeStatusMsg(t testing.TB, labels map[string]string, s corev1.NodeStatus) *protocol.NodeStatus {
	b, err := protocol.EncodeNodeStatus(&s)
	if err != nil {
		t.Fatal(err)
	}
	return &protocol.NodeStatus{Labels: labels, Status: b}
}

func TestRegisterNode(t *testing.T) {
	kubelet := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1", Labels: map[string]string{"team": "a"}}}
	client := fake.NewClientset(kubelet)
	asked := map[string]string{"site": "store-1", "node-role.kubernetes.io/control-plane": "", "node.kubernetes.io/pool": "a",
		"node-restriction.kubernetes.io/secure": "true", corev1.LabelOSStable: "linux", EdgeRoleLabel: "taken-over"}
	n, err := RegisterNode(t.Context(), client, edge1, asked, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"site": "store-1", "node.kubernetes.io/pool": "a", EdgeRoleLabel: "",
		corev1.LabelHostname: edge1, corev1.LabelOSStable: "linux"}
	if fmt.Sprint(n.Labels) != fmt.Sprint(want) {
		t.Fatalf("labels %v, want %v", n.Labels, want)
	}
	// A join retried gets the Node as it is.
	again, err := RegisterNode(t.Context(), client, edge1, map[string]string{"site": "other"}, nil)
	if err != nil || again.Labels["site"] != "store-1" {
		t.Fatalf("second RegisterNode: %v, %v", again, err)
	}
	// A kubelet's node is not taken over, nor changed.
	if _, err := RegisterNode(t.Context(), client, "worker-1", nil, nil); !errors.Is(err, ErrNotEdgeNode) {
		t.Fatalf("RegisterNode of a kubelet's node: %v, want ErrNotEdgeNode", err)
	}
	if _, err := RegisterNode(t.Context(), client, "Bad_Name", nil, nil); err == nil {
		t.Fatal("RegisterNode of an invalid name succeeded")
	}
	if n := len(actions(client, "update", "nodes")) + len(actions(client, "patch", "nodes")); n != 0 {
		t.Fatalf("%d node updates, want none", n)
	}
	if w, _ := client.CoreV1().Nodes().Get(t.Context(), "worker-1", metav1.GetOptions{}); fmt.Sprint(w.Labels) != "map[team:a]" {
		t.Fatalf("kubelet node labels %v", w.Labels)
	}
}

func TestNodeStatus(t *testing.T) {
	node := edgeNodeObj(edge1)
	node.Labels["site"] = "store-1"
	node.ResourceVersion = "7"
	w, client := newWriter(t, Config{}, node)
	start(t, w)
	send := func(m *protocol.NodeStatus) error {
		r := newResult(t)
		w.NodeStatus(edge1, protocol.StatusOrder{}, m, r.done)
		return r.wait()
	}

	// The labels the edge asks for (and os and arch from its status) that
	// the Node lacks are added; those it may not set are not, and no label
	// it has is changed.
	asked := map[string]string{"site": "store-2", "node-role.kubernetes.io/control-plane": "", "node.kubernetes.io/pool": "a",
		EdgeRoleLabel: "x"}
	if err := send(nodeStatusMsg(t, asked, nodeStatus("10.0.0.1", corev1.ConditionTrue))); err != nil {
		t.Fatal(err)
	}
	labelPatches := actions(client, "patch", "nodes")
	if len(labelPatches) != 2 || labelPatches[0].(k8stesting.PatchAction).GetSubresource() != "" {
		t.Fatalf("want a patch of the Node's labels, then of its status; got %v", labelPatches)
	}
	if p := string(labelPatches[0].(k8stesting.PatchAction).GetPatch()); !strings.Contains(p, `"resourceVersion":"7"`) {
		t.Fatalf("label patch %s has no resourceVersion precondition", p)
	}
	n, err := client.CoreV1().Nodes().Get(t.Context(), edge1, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"site": "store-1", "node.kubernetes.io/pool": "a", EdgeRoleLabel: "",
		corev1.LabelHostname: edge1, corev1.LabelOSStable: "linux", corev1.LabelArchStable: "arm64"}
	if fmt.Sprint(n.Labels) != fmt.Sprint(want) {
		t.Fatalf("labels %v, want %v", n.Labels, want)
	}
	if n.Status.Allocatable.Cpu().String() != "4" || len(n.Spec.Taints) != 0 {
		t.Fatalf("node %+v: want allocatable cpu 4 and no taints", n)
	}

	// Another agent's condition, which the edge does not report.
	n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse})
	if _, err := client.CoreV1().Nodes().UpdateStatus(t.Context(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := send(nodeStatusMsg(t, asked, nodeStatus("10.0.0.2", corev1.ConditionFalse))); err != nil {
		t.Fatal(err)
	}
	patches := actions(client, "patch", "nodes")
	if len(patches) != 3 || patches[2].(k8stesting.PatchAction).GetSubresource() != "status" {
		t.Fatalf("want one more patch, of nodes/status, got %v", patches)
	}
	n, _ = client.CoreV1().Nodes().Get(t.Context(), edge1, metav1.GetOptions{})
	if len(n.Status.Addresses) != 2 || n.Status.Addresses[0].Address != "10.0.0.2" {
		t.Fatalf("addresses %v: want them replaced", n.Status.Addresses)
	}
	if len(n.Status.Conditions) != 2 {
		t.Fatalf("conditions %v: want Ready and NetworkUnavailable", n.Status.Conditions)
	}

	// Unchanged: no write.
	if err := send(nodeStatusMsg(t, nil, nodeStatus("10.0.0.2", corev1.ConditionFalse))); err != nil {
		t.Fatal(err)
	}
	if n := len(actions(client, "patch", "nodes")); n != 3 {
		t.Fatalf("%d patches after an unchanged status, want 3", n)
	}
	if len(actions(client, "create", "nodes")) != 0 {
		t.Fatal("a Node was created")
	}
	if s := w.Stats(); s.NodeLabelPatches != 1 || s.NodeStatuses != 2 || s.Unchanged != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestNodeStatusRejected(t *testing.T) {
	kubeletNode := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"}}
	w, client := newWriter(t, Config{}, kubeletNode)
	start(t, w)
	for _, c := range []struct {
		name, node string
		m          *protocol.NodeStatus
		want       string
	}{
		{"not an edge node", "worker-1", nodeStatusMsg(t, nil, nodeStatus("10.0.0.1", corev1.ConditionTrue)), "not an edge node"},
		{"missing", "edge-9", nodeStatusMsg(t, map[string]string{"site": "s"}, nodeStatus("10.0.0.1", corev1.ConditionTrue)),
			"node edge-9 does not exist: it was deleted, which revokes it; join it again with a new token (edgecore join)"},
		{"bad name", "Edge_1", nodeStatusMsg(t, nil, nodeStatus("10.0.0.1", corev1.ConditionTrue)), "Edge_1"},
		{"empty status", edge1, &protocol.NodeStatus{}, "node status is empty"},
	} {
		r := newResult(t)
		w.NodeStatus(c.node, protocol.StatusOrder{}, c.m, r.done)
		if err := r.wait(); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want a rejection saying %q", c.name, err, c.want)
		}
	}
	if n := len(actions(client, "patch", "nodes")) + len(actions(client, "create", "nodes")); n != 0 {
		t.Fatalf("%d node writes, want none", n)
	}
	if s := w.Stats(); s.Refused.NotEdgeNode != 1 || s.Refused.NodeMissing != 1 || s.Refused.Total() != 2 || s.Rejected != 4 {
		t.Fatalf("stats %+v", s)
	}
}

func TestEvent(t *testing.T) {
	mine := pod("mine", "uid-1", edge1)
	other := pod("other", "uid-2", "edge-2")
	w, client := newWriter(t, Config{}, mine, other)
	start(t, w)
	send := func(m *protocol.Event) error {
		r := newResult(t)
		w.Event(edge1, m, r.done)
		return r.wait()
	}
	podEvent := &protocol.Event{InvolvedKind: "Pod", Namespace: podNS, Name: "mine", UID: "uid-1", Type: "Warning",
		Reason: "BackOff", Message: "restarting", Count: 3, FirstTime: 1_700_000_000_000, LastTime: 1_700_000_060_000}
	if err := send(podEvent); err != nil {
		t.Fatal(err)
	}
	if err := send(podEvent); err != nil { // a resend
		t.Fatalf("resend: %v", err)
	}
	evs, _ := client.CoreV1().Events(podNS).List(t.Context(), metav1.ListOptions{})
	if len(evs.Items) != 1 {
		t.Fatalf("%d events, want 1", len(evs.Items))
	}
	ev := evs.Items[0]
	if ev.InvolvedObject.UID != "uid-1" || ev.InvolvedObject.Namespace != podNS || ev.Source.Component != EventComponent ||
		ev.Source.Host != edge1 || ev.Count != 3 || ev.FirstTimestamp.UnixMilli() != 1_700_000_000_000 ||
		ev.LastTimestamp.UnixMilli() != 1_700_000_060_000 || ev.Reason != "BackOff" || ev.Type != "Warning" {
		t.Fatalf("event %+v", ev)
	}

	if err := send(&protocol.Event{InvolvedKind: "Node", Name: edge1, Type: "Normal", Reason: "Starting"}); err != nil {
		t.Fatal(err)
	}
	if evs, _ := client.CoreV1().Events(metav1.NamespaceDefault).List(t.Context(), metav1.ListOptions{}); len(evs.Items) != 1 {
		t.Fatalf("%d node events in default, want 1", len(evs.Items))
	}

	for _, m := range []*protocol.Event{
		{InvolvedKind: "Node", Name: "edge-2", Type: "Normal", Reason: "Starting"},
		{InvolvedKind: "Pod", Namespace: podNS, Name: "other", Type: "Normal", Reason: "Pulled"},
		{InvolvedKind: "Secret", Namespace: podNS, Name: "s", Type: "Normal", Reason: "X"},
	} {
		if err := send(m); !errors.Is(err, ErrRejected) {
			t.Errorf("event about %s %s: got %v, want ErrRejected", m.InvolvedKind, m.Name, err)
		}
	}
	if s := w.Stats(); s.Events != 2 || s.Unchanged != 1 || s.Rejected != 3 {
		t.Fatalf("stats %+v", s)
	}
}

// waitFor polls cond, for results the writer gives no callback for.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLease(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC))
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: edge1, UID: "node-uid", Labels: map[string]string{EdgeRoleLabel: ""}}}
	w, client := newWriter(t, Config{Clock: clk}, node)
	start(t, w)
	lease := func() *coordinationv1.Lease {
		t.Helper()
		l, err := client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(t.Context(), edge1, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	w.Heartbeat(edge1)
	waitFor(t, "lease create", func() bool { return w.Stats().LeaseCreates == 1 })
	l := lease()
	if *l.Spec.HolderIdentity != edge1 || *l.Spec.LeaseDurationSeconds != 40 || !l.Spec.RenewTime.Time.Equal(clk.Now()) ||
		len(l.OwnerReferences) != 1 || l.OwnerReferences[0].UID != "node-uid" || l.OwnerReferences[0].Kind != "Node" {
		t.Fatalf("lease %+v", l)
	}

	// Within RenewInterval: not even queued.
	clk.Step(9 * time.Second)
	w.Heartbeat(edge1)
	w.Heartbeat(edge1)
	if s := w.Stats(); s.Unchanged != 2 || s.LeaseCreates != 1 || s.LeaseRenewals != 0 {
		t.Fatalf("stats %+v", s)
	}

	// Someone else wrote the Lease meanwhile: the update conflicts once,
	// and the writer starts again from the current Lease.
	var updates atomic.Int32
	client.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if updates.Add(1) == 1 {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, edge1, errors.New("changed"))
		}
		return false, nil, nil
	})
	gets := len(actions(client, "get", "leases"))
	clk.Step(time.Second)
	w.Heartbeat(edge1)
	waitFor(t, "lease renewal", func() bool { return w.Stats().LeaseRenewals == 1 })
	if n, s := updates.Load(), w.Stats(); n != 2 || s.Retries != 0 || len(actions(client, "get", "leases")) != gets+1 {
		t.Fatalf("%d updates, stats %+v: want a conflict, one get and one update", n, s)
	}
	if l := lease(); !l.Spec.RenewTime.Time.Equal(clk.Now()) {
		t.Fatalf("renew time %v, want %v", l.Spec.RenewTime, clk.Now())
	}

	// Another replica, its clock a minute ahead, renewed it: this one's
	// renewal keeps that renew time rather than taking it back.
	ahead := metav1.NewMicroTime(clk.Now().Add(time.Minute))
	l = lease()
	l.Spec.RenewTime = &ahead
	if _, err := client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Update(t.Context(), l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// (The API server would answer the update from the cached Lease with a
	// conflict, and the writer read it again; the fake clientset checks no
	// resourceVersion, so the cache is dropped here.)
	w.cacheLease(edge1, nil)
	clk.Step(10 * time.Second)
	w.Heartbeat(edge1)
	waitFor(t, "lease renewal", func() bool { return w.Stats().LeaseRenewals == 2 })
	if l := lease(); !l.Spec.RenewTime.Time.Equal(ahead.Time) {
		t.Fatalf("renew time %v, want %v: never back", l.Spec.RenewTime, ahead)
	}
}

func TestRetry(t *testing.T) {
	p := pod("p1", "uid-1", edge1)
	for _, c := range []struct {
		name     string
		failures int32
		want     func(error) bool
		patches  int
	}{
		{"recovers", 1, func(err error) bool { return err == nil }, 2},
		{"gives up", 100, func(err error) bool { return err != nil && !errors.Is(err, ErrRejected) }, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			w, client := newWriter(t, Config{MaxRetries: 2, RetryBaseDelay: time.Millisecond, RetryMaxDelay: 2 * time.Millisecond}, p)
			var n atomic.Int32
			client.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
				if n.Add(1) <= c.failures {
					return true, nil, apierrors.NewServiceUnavailable("etcd is slow")
				}
				return false, nil, nil
			})
			start(t, w)
			r := newResult(t)
			w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("x")), r.done)
			if err := r.wait(); !c.want(err) {
				t.Fatalf("done(%v)", err)
			}
			if got := len(actions(client, "patch", "pods")); got != c.patches {
				t.Fatalf("%d patches, want %d", got, c.patches)
			}
			if s := w.Stats(); s.Retries != int64(c.patches-1) || s.APIErrors != int64(min(c.failures, int32(c.patches))) {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestStop(t *testing.T) {
	p := pod("p1", "uid-1", edge1)
	w, _ := newWriter(t, Config{}, p)
	r := newResult(t)
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("x")), r.done)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(); !errors.Is(err, ErrStopped) {
		t.Fatalf("pending message: got %v, want ErrStopped", err)
	}
	r = newResult(t)
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("x")), r.done)
	if err := r.wait(); !errors.Is(err, ErrStopped) {
		t.Fatalf("message after stop: got %v, want ErrStopped", err)
	}
	if err := w.Start(t.Context()); err == nil {
		t.Fatal("second Start succeeded")
	}
}

// BenchmarkPodStatusCoalesce sends statuses for 100 pods as fast as the hub
// would hand them over and reports how many reached the API server.
func BenchmarkPodStatusCoalesce(b *testing.B) {
	const pods = 100
	var objs []runtime.Object
	var msgs [pods][4]*protocol.PodStatus
	for i := range pods {
		p := pod(fmt.Sprintf("p%d", i), fmt.Sprintf("uid-%d", i), edge1)
		objs = append(objs, p)
		for j := range msgs[i] {
			msgs[i][j] = podStatusMsg(b, p, running(fmt.Sprint(j)))
		}
	}
	w, _ := newWriter(b, Config{}, objs...)
	start(b, w)
	var wg sync.WaitGroup
	var failed atomic.Int64
	done := func(err error) {
		if err != nil {
			failed.Add(1)
		}
		wg.Done()
	}
	b.ReportAllocs()
	b.ResetTimer()
	wg.Add(b.N)
	for i := range b.N {
		w.PodStatus(edge1, protocol.StatusOrder{}, msgs[i%pods][(i/pods)%4], done)
	}
	wg.Wait()
	b.StopTimer()
	if failed.Load() > 0 {
		b.Fatalf("%d statuses failed", failed.Load())
	}
	s := w.Stats()
	b.ReportMetric(float64(s.PodStatuses)/float64(b.N), "patches/op")
	b.ReportMetric(float64(s.Coalesced)/float64(b.N), "coalesced/op")
}

// TestLeaseLane checks that Lease renewals do not wait behind status writes
// (and the other way round): with one status worker stuck in a pod status
// patch, a Lease is still renewed, and with every lease worker stuck, a pod
// status is still written. (The fake clientset runs one call at a time, so
// Leases go through a clientset of their own, as in cloudcore.)
func TestLeaseLane(t *testing.T) {
	p := pod("p1", "uid-1", edge1)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: edge1, UID: "node-uid", Labels: map[string]string{EdgeRoleLabel: ""}}}
	node2 := edgeNodeObj(edge2)
	client, leases := fake.NewClientset(p, node, node2), fake.NewClientset(node, node2)
	devs := newFakeDevices()
	// Nodes are read from a clientset of their own, as from an informer
	// cache that does not wait for either stuck call.
	lister := splitLister{clientLister{ctx: t.Context(), client: client, fakeDevices: devs}, fake.NewClientset(node, node2)}
	w, err := New(client, devs, lister, Config{Workers: 1, LeaseWorkers: 1, LeaseClient: leases},
		slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	podEntered, podRelease := make(chan struct{}), make(chan struct{})
	var podPatches atomic.Int32
	client.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if podPatches.Add(1) == 1 {
			close(podEntered)
			<-podRelease
		}
		return false, nil, nil
	})
	leaseEntered, leaseRelease := make(chan struct{}), make(chan struct{})
	var leaseCreates atomic.Int32
	leases.PrependReactor("create", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if leaseCreates.Add(1) == 2 {
			close(leaseEntered)
			<-leaseRelease
		}
		return false, nil, nil
	})
	start(t, w)

	r1 := newResult(t)
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("1")), r1.done)
	<-podEntered
	w.Heartbeat(edge1)
	waitFor(t, "lease created while the status worker is busy", func() bool { return w.Stats().LeaseCreates == 1 })
	close(podRelease)
	if err := r1.wait(); err != nil {
		t.Fatal(err)
	}

	w.Heartbeat(edge2) // the second create blocks the only lease worker
	<-leaseEntered
	r2 := newResult(t)
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("2")), r2.done)
	if err := r2.wait(); err != nil {
		t.Fatal(err)
	}
	close(leaseRelease)
	waitFor(t, "second lease", func() bool { return w.Stats().LeaseCreates == 2 })
	if n := len(actions(client, "create", "leases")); n != 0 {
		t.Fatalf("%d Lease creates through the status client, want none", n)
	}
}

// TestTransientErrorsRetried: a 403 (RBAC still propagating, a webhook
// that denies while it is down), a 429 or a 5xx is retried with back-off;
// the status arrives and the edge gets an Ack, not a rejection.
func TestTransientErrorsRetried(t *testing.T) {
	p := pod("p1", "uid-1", edge1)
	gr := schema.GroupResource{Resource: "pods"}
	for _, c := range []struct {
		name string
		err  error
	}{
		{"forbidden", apierrors.NewForbidden(gr, "p1", errors.New(`admission webhook "policy.example.com" denied the request: no endpoints available`))},
		{"too many requests", apierrors.NewTooManyRequests("slow down", 0)},
		{"internal error", apierrors.NewInternalError(errors.New("etcd leader changed"))},
		{"timeout", apierrors.NewTimeoutError("request did not complete", 0)},
	} {
		t.Run(c.name, func(t *testing.T) {
			w, client := newWriter(t, Config{RetryBaseDelay: time.Millisecond, RetryMaxDelay: 2 * time.Millisecond}, p)
			var n atomic.Int32
			client.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
				if n.Add(1) == 1 {
					return true, nil, c.err
				}
				return false, nil, nil
			})
			start(t, w)
			r := newResult(t)
			w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("after "+c.name)), r.done)
			if err := r.wait(); err != nil {
				t.Fatalf("done(%v), want nil (an Ack)", err)
			}
			got, err := client.CoreV1().Pods(podNS).Get(t.Context(), "p1", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Status.Message != "after "+c.name {
				t.Fatalf("status message %q, want the edge's", got.Status.Message)
			}
			if s := w.Stats(); s.Retries != 1 || s.Rejected != 0 {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

// An event the edge sends again with a higher count updates the Event
// created the first time; an older count changes nothing; an Event of that
// name that another node (or anyone else) made is not touched.
func TestEventAggregated(t *testing.T) {
	mine := pod("mine", "uid-1", edge1)
	first := &protocol.Event{InvolvedKind: "Pod", Namespace: podNS, Name: "mine", UID: "uid-1",
		FieldPath: "spec.containers{c}", Type: "Warning", Reason: "BackOff",
		Message: "Back-off restarting failed container c in pod mine_shop(uid-1)", Count: 1,
		FirstTime: 1_700_000_000_000, LastTime: 1_700_000_000_000}
	forged := *first
	forged.Name, forged.UID, forged.Message = "theirs", "uid-9", "x"
	squat := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: podNS, Name: eventName(edge1, &forged)},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: podNS, Name: "theirs", UID: "uid-9"},
		Source:         corev1.EventSource{Component: EventComponent, Host: edge2}, Count: 7, Reason: "BackOff", Type: "Warning", Message: "x"}
	theirs := pod("theirs", "uid-9", edge1) // bound to edge-1 now, the name taken by an Event of edge-2
	w, client := newWriter(t, Config{}, mine, theirs, squat)
	start(t, w)
	send := func(m *protocol.Event) error {
		r := newResult(t)
		w.Event(edge1, m, r.done)
		return r.wait()
	}
	if err := send(first); err != nil {
		t.Fatal(err)
	}
	later := *first
	later.Count, later.LastTime = 5, first.LastTime+40_000
	if err := send(&later); err != nil {
		t.Fatal(err)
	}
	stale := *first
	stale.Count, stale.LastTime = 3, first.LastTime+20_000
	if err := send(&stale); err != nil {
		t.Fatal(err)
	}
	evs, _ := client.CoreV1().Events(podNS).List(t.Context(), metav1.ListOptions{
		FieldSelector: "involvedObject.name=mine"})
	var got []corev1.Event
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == "mine" {
			got = append(got, e)
		}
	}
	if len(got) != 1 {
		t.Fatalf("%d events, want 1", len(got))
	}
	if e := got[0]; e.Count != 5 || e.LastTimestamp.UnixMilli() != later.LastTime ||
		e.FirstTimestamp.UnixMilli() != first.FirstTime || e.InvolvedObject.FieldPath != "spec.containers{c}" {
		t.Fatalf("event %+v", e)
	}
	if s := w.Stats(); s.Events != 1 || s.EventUpdates != 1 || s.Unchanged != 1 {
		t.Fatalf("stats %+v", s)
	}

	before := w.Stats().Refused.EventNotOwn
	if err := send(&forged); !errors.Is(err, ErrRejected) {
		t.Fatalf("event over another node's Event: %v, want ErrRejected", err)
	}
	if w.Stats().Refused.EventNotOwn != before+1 {
		t.Fatal("refusal not counted")
	}
	e, err := client.CoreV1().Events(podNS).Get(t.Context(), squat.Name, metav1.GetOptions{})
	if err != nil || e.Count != 7 || e.Source.Host != edge2 {
		t.Fatalf("the other node's Event: %+v, %v: want it untouched", e, err)
	}
}

// A static pod's events name it by its UID at the edge, the config hash its
// mirror pod carries: the Event is about the mirror pod.
func TestEventAboutStaticPod(t *testing.T) {
	mirror := pod("static-web-edge-1", "mirror-uid", edge1)
	mirror.Annotations = map[string]string{MirrorAnnotation: "hash-1"}
	w, client := newWriter(t, Config{}, mirror)
	start(t, w)
	r := newResult(t)
	w.Event(edge1, &protocol.Event{InvolvedKind: "Pod", Namespace: podNS, Name: mirror.Name, UID: "hash-1",
		Type: "Normal", Reason: "Started", Message: "Started container c", Count: 1, FirstTime: 1, LastTime: 1}, r.done)
	if err := r.wait(); err != nil {
		t.Fatal(err)
	}
	evs, _ := client.CoreV1().Events(podNS).List(t.Context(), metav1.ListOptions{})
	if len(evs.Items) != 1 || evs.Items[0].InvolvedObject.UID != "mirror-uid" {
		t.Fatalf("events %+v", evs.Items)
	}
	r = newResult(t)
	w.Event(edge1, &protocol.Event{InvolvedKind: "Pod", Namespace: podNS, Name: mirror.Name, UID: "hash-2",
		Type: "Normal", Reason: "Started", Count: 1}, r.done)
	if err := r.wait(); !errors.Is(err, ErrRejected) {
		t.Fatalf("event with another hash: %v, want ErrRejected", err)
	}
}

// When a node's session ends, its messages not written are given up: a
// message waiting for a retry is not written later (the edge sends it again
// to the replica it reaches next, which may have written a newer one by
// then), a write in progress is not retried; another node's messages and
// the node's Lease go on.
func TestSessionEnded(t *testing.T) {
	p, other := pod("p1", "uid-1", edge1), pod("p2", "uid-2", edge2)
	w, client := newWriter(t, Config{RetryBaseDelay: time.Hour, RetryMaxDelay: time.Hour}, p, other)
	entered, release := make(chan struct{}), make(chan struct{})
	var n atomic.Int32
	client.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.(k8stesting.PatchAction).GetName() != "p1" {
			return false, nil, nil
		}
		switch n.Add(1) {
		case 1: // fails: retried after RetryBaseDelay
			return true, nil, apierrors.NewServiceUnavailable("etcd is slow")
		case 2: // held while the session ends, then fails
			close(entered)
			<-release
			return true, nil, apierrors.NewServiceUnavailable("etcd is slow")
		}
		return false, nil, nil
	})
	// Not started yet: pending.
	r0 := newResult(t)
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("0")), r0.done)
	w.SessionEnded(edge1)
	if err := r0.wait(); !errors.Is(err, ErrSessionEnded) {
		t.Fatalf("pending message: done(%v), want ErrSessionEnded", err)
	}
	start(t, w)

	// Waiting for a retry (an hour away): given up at once, never written.
	r1 := newResult(t)
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("1")), r1.done)
	waitFor(t, "the first patch failed", func() bool { return w.Stats().Retries == 1 })
	w.SessionEnded(edge1)
	if err := r1.wait(); !errors.Is(err, ErrSessionEnded) {
		t.Fatalf("message waiting for a retry: done(%v), want ErrSessionEnded", err)
	}

	// In progress: finishes, not retried; a message queued behind it is
	// given up too.
	r2, r3 := newResult(t), newResult(t)
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("2")), r2.done)
	<-entered
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("3")), r3.done)
	w.SessionEnded(edge1)
	if err := r3.wait(); !errors.Is(err, ErrSessionEnded) {
		t.Fatalf("message behind a write in progress: done(%v), want ErrSessionEnded", err)
	}
	close(release)
	if err := r2.wait(); !errors.Is(err, ErrSessionEnded) {
		t.Fatalf("failed write in progress: done(%v), want ErrSessionEnded", err)
	}

	// Another node's message is written.
	r4 := newResult(t)
	w.PodStatus(edge2, protocol.StatusOrder{}, podStatusMsg(t, other, running("4")), r4.done)
	if err := r4.wait(); err != nil {
		t.Fatal(err)
	}
	// The node's next session writes again.
	r5 := newResult(t)
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("5")), r5.done)
	if err := r5.wait(); err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, a := range actions(client, "patch", "pods") {
		if pa := a.(k8stesting.PatchAction); pa.GetName() == "p1" {
			var st struct {
				Status struct{ Message string }
			}
			json.Unmarshal(pa.GetPatch(), &st)
			msgs = append(msgs, st.Status.Message)
		}
	}
	if strings.Join(msgs, ",") != "1,2,5" {
		t.Fatalf("p1 patched with statuses %v, want 1,2,5 (none retried after the session ended)", msgs)
	}
	got, _ := client.CoreV1().Pods(podNS).Get(t.Context(), "p1", metav1.GetOptions{})
	if got.Status.Message != "5" {
		t.Fatalf("p1 status %q, want 5", got.Status.Message)
	}
	// Everything written: no entry left, and none in the per-node index
	// SessionEnded walks.
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.entries) != 0 || len(w.byNode) != 0 {
		t.Fatalf("left: %d entries, %d nodes indexed", len(w.entries), len(w.byNode))
	}
}

// At start the Writer caches the node Leases that expired (cloudcore was
// down longer than their duration): their first renewal updates without a
// read. A Lease still live (renewed elsewhere), another holder's, or one
// cached already is left alone; their first renewal reads as before.
func TestWarmLeases(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Date(2026, 12, 6, 14, 0, 0, 0, time.UTC))
	lease := func(name, holder string, renewed time.Duration) *coordinationv1.Lease {
		secs := int32(40)
		at := metav1.NewMicroTime(clk.Now().Add(-renewed))
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: corev1.NamespaceNodeLease},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, RenewTime: &at}}
	}
	objs := []runtime.Object{lease(edge1, edge1, 2*time.Minute), lease(edge2, edge2, 5*time.Second),
		lease("edge-3", "someone", 2*time.Minute), edgeNodeObj("edge-3")}
	// More Leases than a page, all expired (the fake clientset answers in
	// one page; TestWarmLeasesPaged lists pages of the API server).
	for i := range int(warmLeasePage) + 10 {
		name := fmt.Sprintf("far-%d", i)
		objs = append(objs, lease(name, name, time.Hour))
	}
	w, client := newWriter(t, Config{Clock: clk}, objs...)
	kept := lease("far-0", "far-0", time.Second)
	w.cacheLease("far-0", kept)
	w.warmLeases(t.Context())
	if got, want := w.Stats().LeasesWarmed, 1+warmLeasePage+9; got != want {
		t.Fatalf("%d Leases cached, want %d", got, want)
	}
	w.leaseMu.Lock()
	_, live := w.leases[edge2]
	_, other := w.leases["edge-3"]
	cachedKept := w.leases["far-0"] == kept
	w.leaseMu.Unlock()
	if live || other || !cachedKept {
		t.Fatalf("cached: the live Lease %v, another holder's %v; the one cached before kept %v", live, other, cachedKept)
	}

	start(t, w)
	for i, node := range []string{edge1, edge2} {
		w.Heartbeat(node)
		waitFor(t, "renewal of "+node, func() bool { return w.Stats().LeaseRenewals == int64(i+1) })
	}
	var got []string
	for _, a := range actions(client, "get", "leases") {
		got = append(got, a.(k8stesting.GetAction).GetName())
	}
	if !slices.Equal(got, []string{edge2}) {
		t.Fatalf("Leases read before renewal: %v, want only the live one (%s)", got, edge2)
	}
}
