package status

import (
	"errors"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/tether-edge/tether/protocol"
)

// writes lists the clientset's actions that change something.
func writes(c *fake.Clientset) []string {
	var out []string
	for _, a := range c.Actions() {
		switch a.GetVerb() {
		case "get", "list", "watch":
		default:
			out = append(out, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	return out
}

// message is one message to a Writer, sent as node.
type message struct {
	name string
	send func(w *Writer, node string, done func(error))
}

func mirrorMsg(t testing.TB, p *corev1.Pod) *protocol.MirrorPod {
	b, err := protocol.EncodePod(p)
	if err != nil {
		t.Fatal(err)
	}
	return &protocol.MirrorPod{Namespace: p.Namespace, Name: p.Name, Pod: b}
}

// TestCrossNodeRefused has edge node A (edge-1) write B's (edge-2) objects:
// every message is refused with its reason counted, and nothing is written.
func TestCrossNodeRefused(t *testing.T) {
	now := metav1.Now()
	bPod := pod("b-pod", "uid-b", edge2)
	bPod.DeletionTimestamp = &now
	bPod.Finalizers = []string{"keep"}
	bLease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: edge2, Namespace: corev1.NamespaceNodeLease},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(edge2), RenewTime: &metav1.MicroTime{Time: now.Add(-time.Hour)}}}
	w, client := newWriter(t, Config{}, bPod, bLease)
	devs := w.devices.(*fakeDevices)
	devs.add(thermometer(), device("b-dev", "uid-bd", edge2))
	start(t, w)

	bMirror := pod("b-pod", "", edge2)
	bMirror.Annotations = map[string]string{MirrorAnnotation: "h"}
	cases := []struct {
		message
		reason func(Refusals) int64
	}{
		{message{"status of B's pod", func(w *Writer, n string, done func(error)) {
			w.PodStatus(n, protocol.StatusOrder{}, podStatusMsg(t, bPod, running("fake ready")), done)
		}}, func(r Refusals) int64 { return r.NotOwnPod }},
		{message{"status of B's pod, wrong uid", func(w *Writer, n string, done func(error)) {
			w.PodStatus(n, protocol.StatusOrder{}, podStatusMsg(t, pod("b-pod", "guess", edge2), running("fake ready")), done)
		}}, func(r Refusals) int64 { return r.NotOwnPod }},
		{message{"termination of B's pod", func(w *Writer, n string, done func(error)) {
			w.PodTerminated(n, &protocol.PodTerminated{UID: "uid-b", Namespace: podNS, Name: "b-pod"}, done)
		}}, func(r Refusals) int64 { return r.NotOwnPod }},
		{message{"status of B's device", func(w *Writer, n string, done func(error)) {
			w.DeviceStatus(n, protocol.StatusOrder{}, &protocol.DeviceStatus{UID: "uid-bd", Namespace: devNS, Name: "b-dev", State: "online"}, done)
		}}, func(r Refusals) int64 { return r.NotOwnDevice }},
		{message{"event about B's Node", func(w *Writer, n string, done func(error)) {
			w.Event(n, &protocol.Event{InvolvedKind: "Node", Name: edge2, Type: "Warning", Reason: "NodeNotReady"}, done)
		}}, func(r Refusals) int64 { return r.EventNotOwn }},
		{message{"event about B's pod", func(w *Writer, n string, done func(error)) {
			w.Event(n, &protocol.Event{InvolvedKind: "Pod", Namespace: podNS, Name: "b-pod", Type: "Normal", Reason: "Killing"}, done)
		}}, func(r Refusals) int64 { return r.EventNotOwn }},
		{message{"event about B's device", func(w *Writer, n string, done func(error)) {
			w.Event(n, &protocol.Event{InvolvedKind: "Device", Namespace: devNS, Name: "b-dev", Type: "Warning", Reason: "Offline"}, done)
		}}, func(r Refusals) int64 { return r.EventNotOwn }},
		{message{"event about a secret", func(w *Writer, n string, done func(error)) {
			w.Event(n, &protocol.Event{InvolvedKind: "Secret", Namespace: podNS, Name: "db-password", Type: "Normal", Reason: "X"}, done)
		}}, func(r Refusals) int64 { return r.EventNotOwn }},
		{message{"mirror over B's pod", func(w *Writer, n string, done func(error)) {
			w.MirrorPod(n, mirrorMsg(t, bMirror), done)
		}}, func(r Refusals) int64 { return r.MirrorForbidden }},
		{message{"delete B's pod as a mirror", func(w *Writer, n string, done func(error)) {
			w.MirrorPod(n, &protocol.MirrorPod{Namespace: podNS, Name: "b-pod", Delete: true}, done)
		}}, func(r Refusals) int64 { return r.MirrorForbidden }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := c.reason(w.Stats().Refused)
			r := newResult(t)
			c.send(w, edge1, r.done)
			if err := r.wait(); !errors.Is(err, ErrRejected) {
				t.Fatalf("got %v, want ErrRejected", err)
			}
			if got := c.reason(w.Stats().Refused); got != before+1 {
				t.Fatalf("refusal counted %d times, want once (stats %+v)", got-before, w.Stats().Refused)
			}
		})
	}
	if got := writes(client); len(got) != 0 {
		t.Fatalf("writes %v, want none", got)
	}
	if n := devs.numPatches(); n != 0 {
		t.Fatalf("%d device patches, want none", n)
	}
	if s := w.Stats(); s.Refused.Total() != int64(len(cases)) || s.Rejected != int64(len(cases)) {
		t.Fatalf("stats %+v", s)
	}

	// A's heartbeat renews A's Lease only: a session has no way to name
	// another node's Lease.
	w.Heartbeat(edge1)
	waitFor(t, "lease of A", func() bool { return w.Stats().LeaseCreates == 1 })
	l, err := client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(t.Context(), edge2, metav1.GetOptions{})
	if err != nil || !l.Spec.RenewTime.Equal(bLease.Spec.RenewTime) {
		t.Fatalf("B's lease %v, %v: want it untouched", l, err)
	}
	if got := writes(client); len(got) != 1 || got[0] != "create leases" {
		t.Fatalf("writes %v, want only A's Lease created", got)
	}
}

// TestNotEdgeNodeRefused claims the name of a kubelet's node (no edge role
// label) and of a node that does not exist: every message kind is refused,
// no Lease is created, nothing is written.
func TestNotEdgeNodeRefused(t *testing.T) {
	now := metav1.Now()
	kubelet := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1", UID: "uid-w",
		Labels: map[string]string{corev1.LabelHostname: "worker-1"}}}
	var objs []runtime.Object
	objs = append(objs, kubelet)
	for _, node := range []string{"worker-1", "ghost"} {
		payments := pod("payments-"+node, "uid-p-"+node, node)
		dying := pod("dying-"+node, "uid-d-"+node, node)
		dying.DeletionTimestamp = &now
		dying.Finalizers = []string{"keep"}
		objs = append(objs, payments, dying)
	}
	w, client := newWriter(t, Config{}, objs...)
	devs := w.devices.(*fakeDevices)
	devs.add(thermometer(), device("dev-worker-1", "uid-dw", "worker-1"), device("dev-ghost", "uid-dg", "ghost"))
	start(t, w)

	messages := func(node string) []message {
		payments, _ := client.CoreV1().Pods(podNS).Get(t.Context(), "payments-"+node, metav1.GetOptions{})
		mirror := pod("static-"+node, "", node)
		mirror.Annotations = map[string]string{MirrorAnnotation: "h"}
		return []message{
			{"NodeStatus", func(w *Writer, n string, done func(error)) {
				w.NodeStatus(n, protocol.StatusOrder{}, nodeStatusMsg(t, nil, nodeStatus("10.0.0.1", corev1.ConditionTrue)), done)
			}},
			{"PodStatus", func(w *Writer, n string, done func(error)) {
				st := running("fake")
				st.PodIP = "6.6.6.6"
				w.PodStatus(n, protocol.StatusOrder{}, podStatusMsg(t, payments, st), done)
			}},
			{"PodTerminated", func(w *Writer, n string, done func(error)) {
				w.PodTerminated(n, &protocol.PodTerminated{UID: "uid-d-" + node, Namespace: podNS, Name: "dying-" + node}, done)
			}},
			{"Event about the node", func(w *Writer, n string, done func(error)) {
				w.Event(n, &protocol.Event{InvolvedKind: "Node", Name: n, Type: "Normal", Reason: "Starting"}, done)
			}},
			{"Event about its pod", func(w *Writer, n string, done func(error)) {
				w.Event(n, &protocol.Event{InvolvedKind: "Pod", Namespace: podNS, Name: payments.Name, Type: "Normal", Reason: "Started"}, done)
			}},
			{"MirrorPod", func(w *Writer, n string, done func(error)) { w.MirrorPod(n, mirrorMsg(t, mirror), done) }},
			{"DeviceStatus", func(w *Writer, n string, done func(error)) {
				w.DeviceStatus(n, protocol.StatusOrder{}, &protocol.DeviceStatus{UID: "uid-d" + node[:1], Namespace: devNS, Name: "dev-" + node, State: "online"}, done)
			}},
		}
	}
	for _, c := range []struct {
		node, want string
		count      func(Refusals) int64
	}{
		{"worker-1", "node worker-1 has no node-role.kubernetes.io/edge label: not an edge node",
			func(r Refusals) int64 { return r.NotEdgeNode }},
		{"ghost", "node ghost does not exist: it was deleted, which revokes it; join it again with a new token (edgecore join)",
			func(r Refusals) int64 { return r.NodeMissing }},
	} {
		t.Run(c.node, func(t *testing.T) {
			msgs := messages(c.node)
			for _, m := range msgs {
				r := newResult(t)
				m.send(w, c.node, r.done)
				if err := r.wait(); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), c.want) {
					t.Errorf("%s: got %v, want a rejection saying %q", m.name, err, c.want)
				}
			}
			w.Heartbeat(c.node)
			want := int64(len(msgs) + 1)
			waitFor(t, "heartbeat refused", func() bool { return c.count(w.Stats().Refused) == want })
			// Refused again: no Lease is remembered for the node.
			w.Heartbeat(c.node)
			waitFor(t, "second heartbeat refused", func() bool { return c.count(w.Stats().Refused) == want+1 })
		})
	}
	if got := writes(client); len(got) != 0 {
		t.Fatalf("writes %v, want none", got)
	}
	if l, err := client.CoordinationV1().Leases(corev1.NamespaceNodeLease).List(t.Context(), metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
		t.Fatalf("leases %v, %v: want none", l, err)
	}
	if n := devs.numPatches(); n != 0 {
		t.Fatalf("%d device patches, want none", n)
	}
	if p, _ := client.CoreV1().Pods(podNS).Get(t.Context(), "payments-worker-1", metav1.GetOptions{}); p.Status.PodIP != "" {
		t.Fatalf("pod status %+v written", p.Status)
	}
}

// TestNodeCacheMiss: a Node the cache does not show yet (created by a join
// a moment ago) is read from the API server.
func TestNodeCacheMiss(t *testing.T) {
	p := pod("p1", "uid-1", edge1)
	client := fake.NewClientset(p, edgeNodeObj(edge1))
	devs := newFakeDevices()
	// The cache's nodes: none.
	lister := splitLister{clientLister{ctx: t.Context(), client: client, fakeDevices: devs}, fake.NewClientset()}
	w, err := New(client, devs, lister, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	start(t, w)
	r := newResult(t)
	w.PodStatus(edge1, protocol.StatusOrder{}, podStatusMsg(t, p, running("up")), r.done)
	if err := r.wait(); err != nil {
		t.Fatal(err)
	}
	if n := len(actions(client, "get", "nodes")); n != 1 {
		t.Fatalf("%d node reads from the API server, want 1", n)
	}
}

// TestMirrorPodPolicy has one case per shape of mirror pod NodeRestriction
// forbids, and the shapes it allows.
func TestMirrorPodPolicy(t *testing.T) {
	base := func() *corev1.Pod {
		p := pod("static-"+edge1, "", edge1)
		p.Annotations = map[string]string{MirrorAnnotation: "hash-1"}
		return p
	}
	with := func(f func(p *corev1.Pod)) *corev1.Pod { p := base(); f(p); return p }
	vol := func(name string, src corev1.VolumeSource) func(p *corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: src})
		}
	}
	ref := func(name string) corev1.LocalObjectReference { return corev1.LocalObjectReference{Name: name} }
	forbidden := []struct {
		name string
		pod  *corev1.Pod
		want string
	}{
		{"secret volume", with(vol("s", corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "db-password"}})),
			"references secrets db-password"},
		{"configmap volume", with(vol("c", corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: ref("cluster-config")}})),
			"references configmaps cluster-config"},
		{"env from configmap", with(func(p *corev1.Pod) {
			p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: ref("cm")}}}
		}), "references configmaps cm"},
		{"env from secret", with(func(p *corev1.Pod) {
			p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: ref("s")}}}
		}), "references secrets s"},
		{"env secret key", with(func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "i", Image: "i", Env: []corev1.EnvVar{{Name: "P",
				ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: ref("s"), Key: "k"}}}}}}
		}), "references secrets s"},
		{"env configmap key", with(func(p *corev1.Pod) {
			p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "P",
				ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: ref("cm"), Key: "k"}}}}
		}), "references configmaps cm"},
		{"image pull secret", with(func(p *corev1.Pod) { p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{ref("regcred")} }),
			"references secrets regcred"},
		{"csi secret", with(vol("csi", corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: "d", NodePublishSecretRef: ptr.To(ref("csi-s"))}})),
			"references secrets csi-s"},
		{"projected token", with(vol("token", corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}})), `volume "token" is a projected volume`},
		{"pvc", with(vol("data", corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}})),
			"references persistentvolumeclaim data"},
		{"ephemeral", with(vol("scratch", corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}})), "ephemeral volume"},
		{"resource claim", with(func(p *corev1.Pod) { p.Spec.ResourceClaims = []corev1.PodResourceClaim{{Name: "gpu"}} }),
			"references resource claims"},
		{"service account", with(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "cluster-admin-sa" }),
			`references service account "cluster-admin-sa"`},
		{"deprecated service account", with(func(p *corev1.Pod) { p.Spec.DeprecatedServiceAccount = "builder" }),
			`references service account "builder"`},
		{"default service account with a token", with(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "default" }),
			"without automountServiceAccountToken: false"},
		{"automount token", with(func(p *corev1.Pod) { p.Spec.AutomountServiceAccountToken = ptr.To(true) }),
			"automountServiceAccountToken is true"},
		{"other node", with(func(p *corev1.Pod) { p.Spec.NodeName = edge2 }), `spec.nodeName is "edge-2"`},
		{"no annotation", with(func(p *corev1.Pod) { p.Annotations = nil }), "no kubernetes.io/config.mirror annotation"},
		{"kube-system", with(func(p *corev1.Pod) { p.Namespace = "kube-system" }), "namespace kube-system is not allowed"},
		{"kube-node-lease", with(func(p *corev1.Pod) { p.Namespace = "kube-node-lease" }), "namespace kube-node-lease is not allowed"},
		{"owned by a deployment", with(func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web", UID: "rs"}}
		}), "owned by ReplicaSet web"},
		{"owned by another node", with(func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: edge2, UID: "uid-edge-2"}}
		}), "owned by Node edge-2"},
		{"two owners", with(func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: edge1, UID: "uid-edge-1"},
				{APIVersion: "v1", Kind: "Node", Name: edge1, UID: "uid-edge-1"}}
		}), "2 owner references"},
		{"block owner deletion", with(func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: edge1, UID: "uid-edge-1",
				BlockOwnerDeletion: ptr.To(true)}}
		}), "blockOwnerDeletion"},
	}
	w, client := newWriter(t, Config{})
	start(t, w)
	send := func(p *corev1.Pod) error {
		r := newResult(t)
		w.MirrorPod(edge1, mirrorMsg(t, p), r.done)
		return r.wait()
	}
	for _, c := range forbidden {
		t.Run(c.name, func(t *testing.T) {
			if err := send(c.pod); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a rejection saying %q", err, c.want)
			}
		})
	}
	if got := writes(client); len(got) != 0 {
		t.Fatalf("writes %v, want none", got)
	}
	if s := w.Stats(); s.Refused.MirrorForbidden != int64(len(forbidden)) {
		t.Fatalf("stats %+v", s.Refused)
	}

	// Allowed: privileged, host namespaces, hostPath (as NodeRestriction
	// allows), the default service account without a token, an owner
	// reference to its own Node. The Writer sets the Node as its owner.
	allowed := with(func(p *corev1.Pod) {
		p.Spec.HostNetwork, p.Spec.HostPID = true, true
		p.Spec.ServiceAccountName, p.Spec.AutomountServiceAccountToken = "default", ptr.To(false)
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr.To(true)}
		p.Spec.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}},
			{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	})
	owned := with(func(p *corev1.Pod) {
		p.Name = "owned-" + edge1
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: edge1, UID: "uid-edge-1", Controller: ptr.To(true)}}
	})
	for _, p := range []*corev1.Pod{allowed, owned} {
		if err := send(p); err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
		got, err := client.CoreV1().Pods(podNS).Get(t.Context(), p.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if o := got.OwnerReferences; len(o) != 1 || o[0].Kind != "Node" || o[0].UID != "uid-edge-1" || o[0].Controller == nil || !*o[0].Controller {
			t.Fatalf("%s: owner references %+v, want its Node as controller", p.Name, o)
		}
		if got.Spec.ServiceAccountName != "" {
			t.Fatalf("%s: service account %q, want none", p.Name, got.Spec.ServiceAccountName)
		}
	}
	if s := w.Stats(); s.MirrorWrites != 2 {
		t.Fatalf("stats %+v", s)
	}

	// kube-system, once the Config allows it.
	w2, client2 := newWriter(t, Config{MirrorNamespaces: []string{"kube-system", "edge-apps"}})
	start(t, w2)
	for ns, ok := range map[string]bool{"kube-system": true, "edge-apps": true, podNS: false} {
		r := newResult(t)
		w2.MirrorPod(edge1, mirrorMsg(t, with(func(p *corev1.Pod) { p.Namespace = ns })), r.done)
		if err := r.wait(); (err == nil) != ok {
			t.Errorf("namespace %s: got %v, want allowed %v", ns, err, ok)
		}
	}
	if n := len(actions(client2, "create", "pods")); n != 2 {
		t.Fatalf("%d mirror pods created, want 2", n)
	}
	if err := (&Config{MirrorNamespaces: []string{"Bad_NS"}}).validate(); err == nil {
		t.Fatal("a bad mirror namespace validated")
	}
}

// TestEventAboutDevice: an event about a Device attached to the node is
// written, with the Device as its involved object.
func TestEventAboutDevice(t *testing.T) {
	w, client := newWriter(t, Config{})
	w.devices.(*fakeDevices).add(thermometer(), device("t1", "uid-t1", edge1))
	start(t, w)
	r := newResult(t)
	w.Event(edge1, &protocol.Event{InvolvedKind: "Device", Namespace: devNS, Name: "t1", Type: "Warning", Reason: "Offline"}, r.done)
	if err := r.wait(); err != nil {
		t.Fatal(err)
	}
	evs, _ := client.CoreV1().Events(devNS).List(t.Context(), metav1.ListOptions{})
	if len(evs.Items) != 1 || evs.Items[0].InvolvedObject.APIVersion != "devices.tether.io/v1beta1" || evs.Items[0].InvolvedObject.UID != "uid-t1" {
		t.Fatalf("events %+v", evs.Items)
	}
}
