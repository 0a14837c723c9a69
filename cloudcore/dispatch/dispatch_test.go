package dispatch

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	fcache "k8s.io/client-go/tools/cache/testing"

	"github.com/tether-edge/tether/protocol"
)

func TestPodRefs(t *testing.T) {
	p := &corev1.Pod{Spec: corev1.PodSpec{
		Volumes: []corev1.Volume{
			{VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "vol-cm"}}}},
			{VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "vol-secret"}}},
			{VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}}},
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "proj-secret"}}},
			}}}},
			{VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		},
		InitContainers: []corev1.Container{{EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "init-env"}}}}}},
		Containers: []corev1.Container{{Env: []corev1.EnvVar{
			{Name: "A", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "env-secret"}, Key: "k"}}},
			{Name: "B", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "vol-cm"}, Key: "k"}}},
			{Name: "C", Value: "plain"},
		}}},
		ImagePullSecrets: []corev1.LocalObjectReference{{Name: "pull"}},
	}}
	got := PodRefs(p)
	want := []Ref{
		{protocol.KindConfigMap, "vol-cm"}, {protocol.KindSecret, "vol-secret"}, {protocol.KindConfigMap, "kube-root-ca.crt"},
		{protocol.KindSecret, "proj-secret"}, {protocol.KindConfigMap, "init-env"}, {protocol.KindSecret, "env-secret"},
		{protocol.KindSecret, "pull"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

func refPod(name, node string, mirror bool, vols ...corev1.Volume) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)},
		Spec: corev1.PodSpec{NodeName: node, Volumes: vols}}
	if mirror {
		p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "hash"}
	}
	return p
}

func cmVolume(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}}}}
}

func secretVolume(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name}}}
}

// TestDesiredAuthz checks what a node may receive, in the manner of the
// node authorizer's graph: only an edge node gets anything; it gets its pods
// and what they reference, but nothing that only a mirror pod references.
func TestDesiredAuthz(t *testing.T) {
	src := &fakeSources{devices: fcache.NewFakeControllerSource(), models: fcache.NewFakeControllerSource()}
	src.served.Store(true)
	src.models.Add(model("thermo", 1))
	src.devices.Add(dev("t-a", "uid-t-a", "a", "thermo", 1))
	src.devices.Add(dev("t-cloud", "uid-t-cloud", "cloud", "thermo", 1))
	objs := []runtime.Object{
		// a: a normal pod using cm-used and s-used; a mirror pod
		// referencing cm-mirror, s-mirror and cm-used.
		refPod("web", "a", false, cmVolume("cm-used"), secretVolume("s-used")),
		refPod("static-a", "a", true, cmVolume("cm-mirror"), secretVolume("s-mirror"), cmVolume("cm-used")),
		// cloud (a kubelet's node, no edge label): a pod with a secret.
		refPod("payments", "cloud", false, secretVolume("db-password")),
		// ghost: no Node at all.
		refPod("orphan", "ghost", false, cmVolume("cm-used")),
	}
	for _, n := range []string{"cm-used", "cm-mirror"} {
		objs = append(objs, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: n, UID: types.UID(n)}})
	}
	for _, n := range []string{"s-used", "s-mirror", "db-password"} {
		objs = append(objs, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: n, UID: types.UID(n)}})
	}
	d, rec, client := startDispatcherClient(t, src, objs...)
	rec.waitFor(t, "a")

	for _, c := range []struct {
		node string
		want []string
	}{
		{"a", []string{"ConfigMap/cm-used@", "Secret/s-used@", "DeviceModel/thermo@1", "Device/t-a@1", "Pod/web@", "Pod/static-a@"}},
		{"cloud", nil},
		{"ghost", nil},
	} {
		t.Run(c.node, func(t *testing.T) {
			got := desired(d, c.node)
			slices.Sort(got)
			want := slices.Clone(c.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("Desired(%s) = %v, want %v", c.node, got, want)
			}
		})
	}

	// A configmap referenced only by a mirror pod is in no pod's references
	// either: when it changes, no node is told.
	for _, c := range []struct {
		kind protocol.Kind
		name string
		want []string
	}{
		{protocol.KindConfigMap, "cm-mirror", nil},
		{protocol.KindSecret, "s-mirror", nil},
		{protocol.KindConfigMap, "cm-used", []string{"orphan", "web"}},
	} {
		users, err := d.podsInf.GetIndexer().ByIndex(indexRefs, refKey(c.kind, ns, c.name))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, u := range users {
			got = append(got, u.(*corev1.Pod).Name)
		}
		slices.Sort(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("pods referencing %s %s: %v, want %v", c.kind, c.name, got, c.want)
		}
	}

	// The kubelet's node is labelled an edge node: it gets its objects.
	// Unlabelled again, it gets nothing.
	cloud, err := client.CoreV1().Nodes().Get(t.Context(), "cloud", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cloud.Labels = map[string]string{EdgeRoleLabel: ""}
	if _, err := client.CoreV1().Nodes().Update(t.Context(), cloud, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDesired(t, d, "cloud", "Secret/db-password@", "DeviceModel/thermo@1", "Device/t-cloud@1", "Pod/payments@")
	cloud.Labels = nil
	if _, err := client.CoreV1().Nodes().Update(t.Context(), cloud, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDesired(t, d, "cloud")
	// Deleting an edge node (revocation) empties its set.
	if err := client.CoreV1().Nodes().Delete(t.Context(), "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDesired(t, d, "a")
}

// waitDesired waits until Desired(node) lists want, in any order.
func waitDesired(t *testing.T, d *Dispatcher, node string, want ...string) {
	t.Helper()
	slices.Sort(want)
	var got []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		got = desired(d, node)
		slices.Sort(got)
		if slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("Desired(%s) = %v, want %v", node, got, want)
}

// TestEdgeNodeNotified checks that the hub hears when a node becomes an edge
// node (joins, or is labelled) or stops being one (is deleted or
// unlabelled), and not of changes to other nodes.
func TestEdgeNodeNotified(t *testing.T) {
	src := &fakeSources{devices: fcache.NewFakeControllerSource(), models: fcache.NewFakeControllerSource()}
	d, rec, client := startDispatcherClient(t, src)
	nodes := client.CoreV1().Nodes()
	steps := []struct {
		name string
		do   func() error
	}{
		{"join", func() error {
			_, err := nodes.Create(t.Context(), edgeNode("late", true), metav1.CreateOptions{})
			return err
		}},
		{"unlabel", func() error {
			_, err := nodes.Update(t.Context(), edgeNode("late", false), metav1.UpdateOptions{})
			return err
		}},
		{"label", func() error {
			_, err := nodes.Update(t.Context(), edgeNode("late", true), metav1.UpdateOptions{})
			return err
		}},
		{"delete", func() error { return nodes.Delete(t.Context(), "late", metav1.DeleteOptions{}) }},
	}
	for _, s := range steps {
		// Changes of a node that is not an edge node are no news. The
		// node informer hands over events in order, so a notification
		// for cloud would come before the one for late.
		if _, err := nodes.Update(t.Context(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "cloud",
			Labels: map[string]string{"step": s.name}}}, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := rec.waitFor(t, "late"); slices.Contains(got, "cloud") {
			t.Fatalf("%s: notified %v, the non-edge node too", s.name, got)
		}
	}
	waitDesired(t, d, "late")
}

// TestPodStatusNotSentDown checks that a pod's version, as the hub compares
// it, ignores status writes (the edge's own reports) and follows everything
// else the edge uses, and that a status write wakes no session.
func TestPodStatusNotSentDown(t *testing.T) {
	src := &fakeSources{devices: fcache.NewFakeControllerSource(), models: fcache.NewFakeControllerSource()}
	web := refPod("web", "a", false)
	web.ResourceVersion = "1"
	other := refPod("other", "b", false)
	other.ResourceVersion = "1"
	d, rec, client := startDispatcherClient(t, src, web, other)
	rec.waitFor(t, "a", "b")
	pods := client.CoreV1().Pods(ns)
	version := func() string {
		t.Helper()
		for _, o := range d.Desired("a", nil) {
			if o.Kind == protocol.KindPod && o.Name == "web" {
				if !strings.HasPrefix(o.ResourceVersion, podVersionPrefix) {
					t.Fatalf("pod version %q is not a sync version", o.ResourceVersion)
				}
				return o.ResourceVersion
			}
		}
		t.Fatal("web not desired on a")
		return ""
	}
	// touchOther changes the pod on b and waits for b's notification; the
	// pod informer hands events over in order, so a notification of a
	// caused by the step before would have come first.
	rv := 1
	touchOther := func(step string) []string {
		t.Helper()
		rv++
		other.ResourceVersion = strconv.Itoa(rv)
		other.Labels = map[string]string{"step": step}
		if _, err := pods.Update(t.Context(), other, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return rec.waitFor(t, "b")
	}
	v0 := version()

	for i, phase := range []corev1.PodPhase{corev1.PodPending, corev1.PodRunning, corev1.PodFailed} {
		rv++
		web.ResourceVersion = strconv.Itoa(rv)
		web.Status = corev1.PodStatus{Phase: phase, PodIP: fmt.Sprintf("10.0.0.%d", i),
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}}
		web.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "cloudcore", Subresource: "status",
			Time: &metav1.Time{Time: time.Unix(int64(i), 0)}}}
		if _, err := pods.UpdateStatus(t.Context(), web, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := touchOther("status " + string(phase)); slices.Contains(got, "a") {
			t.Fatalf("status %s: node a notified (%v): the pod would be sent down again", phase, got)
		}
		if v := version(); v != v0 {
			t.Fatalf("status %s: version %s, want %s as before", phase, v, v0)
		}
	}

	// What the edge uses changes the version and notifies the node.
	for _, c := range []struct {
		name   string
		change func(p *corev1.Pod)
	}{
		{"label", func(p *corev1.Pod) { p.Labels = map[string]string{"tier": "web"} }},
		{"annotation", func(p *corev1.Pod) { p.Annotations = map[string]string{"a": "b"} }},
		{"image", func(p *corev1.Pod) { p.Spec.Containers = []corev1.Container{{Name: "c", Image: "web:2"}} }},
		{"deletion", func(p *corev1.Pod) {
			p.DeletionTimestamp = &metav1.Time{Time: time.Unix(100, 0)}
			g := int64(30)
			p.DeletionGracePeriodSeconds = &g
		}},
	} {
		before := version()
		rv++
		web.ResourceVersion = strconv.Itoa(rv)
		c.change(web)
		if _, err := pods.Update(t.Context(), web, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		rec.waitFor(t, "a")
		var after string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if after = version(); after != before {
				break
			}
		}
		if after == before {
			t.Fatalf("%s: version still %s", c.name, after)
		}
		// Encode sends the same version Desired lists.
		o := protocol.Object{Kind: protocol.KindPod, UID: string(web.UID), Namespace: ns, Name: "web"}
		if ok, err := d.Encode("", &o); !ok || err != nil {
			t.Fatalf("%s: Encode: %v %v", c.name, ok, err)
		}
		if o.ResourceVersion != after {
			t.Fatalf("%s: Encode version %s, Desired %s", c.name, o.ResourceVersion, after)
		}
	}

	if err := pods.Delete(t.Context(), "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The recorder may still hold an "a" of the updates above: wait for
	// the delete handler itself rather than for a notification.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, ok := d.podVers.m.Load(web.UID); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a deleted pod's version is still kept")
		}
	}
}
