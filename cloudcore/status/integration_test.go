//go:build integration

package status

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/tether-edge/tether/controlplane"
	"github.com/tether-edge/tether/protocol"
)

// TestAgainstAPIServer runs the writer against a real API server, scheduler
// and controller manager: the Node it registers takes pods, and the API server accepts its
// patches, deletions, events and Leases.
func TestAgainstAPIServer(t *testing.T) {
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	cp := startControlPlane(t, controlplane.Options{WithScheduler: true,
		// The node lifecycle controller lifts the not-ready taint that
		// admission puts on new Nodes, once they report Ready.
		WithControllerManager: true, Logger: log})
	client, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	devs := newFakeDevices() // devices are tested against an API server in package cloudcore
	w, err := New(client, devs, clientLister{ctx: ctx, client: client, fakeDevices: devs}, Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	start(t, w)
	send := func(write func(done func(error))) error {
		r := newResult(t)
		write(r.done)
		return r.wait()
	}
	poll := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 60s", what)
			}
		}
	}

	// Register the node as the join does, then its status, its Lease.
	if _, err := RegisterNode(ctx, client, edge1, map[string]string{"site": "s1", "node-role.kubernetes.io/master": ""}, nil); err != nil {
		t.Fatal(err)
	}
	if err := send(func(done func(error)) {
		w.NodeStatus(edge1, protocol.StatusOrder{}, nodeStatusMsg(t, map[string]string{"site": "s1"}, nodeStatus("10.0.0.1", corev1.ConditionTrue)), done)
	}); err != nil {
		t.Fatal(err)
	}
	node, err := client.CoreV1().Nodes().Get(ctx, edge1, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if node.Status.Allocatable.Cpu().String() != "4" {
		t.Fatalf("node status %+v: want the reported allocatable", node.Status)
	}
	if node.Labels[corev1.LabelOSStable] != "linux" || node.Labels["site"] != "s1" || !hasLabel(node, EdgeRoleLabel) ||
		hasLabel(node, "node-role.kubernetes.io/master") {
		t.Fatalf("node labels %v: want site, the edge role, os from the status, and no master role", node.Labels)
	}
	w.Heartbeat(edge1)
	poll("lease", func() bool { return w.Stats().LeaseCreates == 1 })
	lease, err := client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, edge1, metav1.GetOptions{})
	if err != nil || len(lease.OwnerReferences) != 1 || lease.OwnerReferences[0].UID != node.UID {
		t.Fatalf("lease %+v, %v: want it owned by the Node", lease, err)
	}
	if err := send(func(done func(error)) {
		w.NodeStatus(edge1, protocol.StatusOrder{}, nodeStatusMsg(t, nil, nodeStatus("10.0.0.2", corev1.ConditionTrue)), done)
	}); err != nil {
		t.Fatal(err)
	}

	// The scheduler places a pod on it.
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: podNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cp.WaitForDefaultServiceAccount(ctx, podNS); err != nil {
		t.Fatal(err)
	}
	no := false
	p, err := client.CoreV1().Pods(podNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.PodSpec{NodeSelector: map[string]string{EdgeRoleLabel: ""}, AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "c", Image: "nginx"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	poll("binding", func() bool {
		p, err = client.CoreV1().Pods(podNS).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && p.Spec.NodeName == edge1
	})

	// Status, events.
	st := running("up")
	st.HostIP, st.StartTime = "10.0.0.2", &metav1.Time{Time: time.Now().Truncate(time.Second)}
	st.ContainerStatuses = []corev1.ContainerStatus{{Name: "c", Image: "nginx", ImageID: "sha256:1", Ready: true,
		ContainerID: "containerd://1", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: *st.StartTime}}}}
	if err := send(func(done func(error)) { w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, st), done) }); err != nil {
		t.Fatal(err)
	}
	p, _ = client.CoreV1().Pods(podNS).Get(ctx, "web", metav1.GetOptions{})
	if p.Status.Phase != corev1.PodRunning || p.Status.QOSClass == "" {
		t.Fatalf("pod status %+v", p.Status)
	}
	for _, m := range []*protocol.Event{
		{InvolvedKind: "Pod", Namespace: podNS, Name: "web", UID: string(p.UID), Type: "Normal", Reason: "Started", Message: "started c"},
		{InvolvedKind: "Node", Name: edge1, Type: "Normal", Reason: "Starting"},
	} {
		if err := send(func(done func(error)) { w.Event(edge1, m, done) }); err != nil {
			t.Fatalf("%s event: %v", m.InvolvedKind, err)
		}
	}

	// The UID preconditions: the API server refuses a status patch for
	// another pod of the same name as invalid, which the writer rejects, and
	// a deletion with a conflict, which it takes as the pod being gone.
	other := running("x")
	patch, _, err := podStatusPatch("not-the-uid", &p.Status, &other)
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.CoreV1().Pods(podNS).Patch(ctx, "web", types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if !errors.Is(classify(err), ErrRejected) {
		t.Fatalf("patch with another uid: %v, want a rejection", err)
	}
	otherUID := types.UID("not-the-uid")
	err = client.CoreV1().Pods(podNS).Delete(ctx, "web", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &otherUID}})
	if !apierrors.IsConflict(err) {
		t.Fatalf("delete with another uid: %v, want a conflict", err)
	}

	// Deletion: the pod stays until the edge reports it terminated.
	if err := client.CoreV1().Pods(podNS).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := send(func(done func(error)) {
		w.PodTerminated(edge1, &protocol.PodTerminated{UID: string(p.UID), Namespace: podNS, Name: "web"}, done)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods(podNS).Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("pod after PodTerminated: %v, want NotFound", err)
	}
	if s := w.Stats(); s.Rejected != 0 || s.GivenUp != 0 || s.NodeStatuses != 2 || s.NodeLabelPatches != 1 || s.PodDeletes != 1 || s.Events != 2 {
		t.Fatalf("stats %+v", s)
	}

	// A kubelet's node (no edge role label) with a pod bound to it: its
	// name gets nothing written, pod status and Lease included.
	if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	payments, err := client.CoreV1().Pods(podNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "payments"},
		Spec: corev1.PodSpec{NodeName: "worker-1", AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "c", Image: "payments"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fake := running("fake")
	fake.PodIP = "6.6.6.6"
	err = send(func(done func(error)) {
		w.PodStatus("worker-1", protocol.StatusOrder{}, podStatusMsg(t, payments, fake), done)
	})
	if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "not an edge node") {
		t.Fatalf("pod status from a kubelet's node name: %v, want a refusal", err)
	}
	w.Heartbeat("worker-1")
	poll("lease refusal", func() bool { return w.Stats().Refused.NotEdgeNode == 2 })
	if p, err := client.CoreV1().Pods(podNS).Get(ctx, "payments", metav1.GetOptions{}); err != nil || p.Status.PodIP != "" {
		t.Fatalf("pod %v, %v: want its status untouched", p.Status, err)
	}
	if _, err := client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, "worker-1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("lease of worker-1: %v, want NotFound", err)
	}
}

func hasLabel(n *corev1.Node, key string) bool {
	_, ok := n.Labels[key]
	return ok
}

// The warm-up reads every page of the API server's Leases, and caches the
// expired node Leases only.
func TestWarmLeasesPaged(t *testing.T) {
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	cp := startControlPlane(t, controlplane.Options{Logger: log})
	client, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	secs := int32(40)
	for i := range 8 {
		name := fmt.Sprintf("edge-%d", i)
		renewed := metav1.NewMicroTime(time.Now().Add(-time.Hour))
		if i == 7 { // live
			renewed = metav1.NewMicroTime(time.Now())
		}
		if _, err := client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: &secs, RenewTime: &renewed},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	defer func(n int64) { warmLeasePage = n }(warmLeasePage)
	warmLeasePage = 3
	devs := newFakeDevices()
	w, err := New(client, devs, clientLister{ctx: ctx, client: client, fakeDevices: devs}, Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	w.warmLeases(ctx)
	if got := w.Stats().LeasesWarmed; got != 7 {
		t.Fatalf("%d Leases cached over pages of 3, want the 7 expired", got)
	}
}

// startControlPlane starts a control plane with opts in a directory of the
// test's, stopped at its end.
func startControlPlane(t *testing.T, opts controlplane.Options) *controlplane.ControlPlane {
	t.Helper()
	opts.Dir = t.TempDir()
	cp, err := controlplane.Start(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	return cp
}
