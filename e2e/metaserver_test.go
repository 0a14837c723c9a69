//go:build integration

package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/tether-edge/tether/edgecore/metaserver"
	"github.com/tether-edge/tether/protocol"
)

// metaserverClient returns a clientset for the edge's metaserver, as an
// application on the edge machine would make one, once it listens.
func (e *edge) metaserverClient() kubernetes.Interface {
	e.t.Helper()
	ms := e.ec.MetaServer
	select {
	case <-ms.Ready():
	case <-time.After(10 * time.Second):
		e.t.Fatal("metaserver not listening")
	}
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: "http://" + ms.Addr(),
		BearerTokenFile: metaserver.TokenFile(e.ec.CredentialsDir(), metaserver.NodeClient)})
	if err != nil {
		e.t.Fatal(err)
	}
	return cs
}

// A client-go program on the edge lists and watches the node's pods through
// the metaserver while the cloud is cut off. A pod created and one deleted
// in the cloud meanwhile reach its informer, through the same watch, once
// the link heals.
func TestMetaServerServesPodsWhileCut(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := startEdge(t, c, "e2e-meta")
	if _, err := client.CoreV1().ConfigMaps(ns).Create(t.Context(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "settings"}, Data: map[string]string{"mode": "edge"}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		p := barePod(ns, n, e.name)
		p.Labels = map[string]string{"app": "meta"}
		p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: "settings"}}}}
		if _, err := client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "pods a, b and their configmap at the edge", func() (bool, error) {
		return e.byName(protocol.KindPod, ns, "a") != nil && e.byName(protocol.KindPod, ns, "b") != nil &&
			e.byName(protocol.KindConfigMap, ns, "settings") != nil, nil
	})

	e.link.Cut()
	eventually(t, 10*time.Second, "edge notices the cut", func() (bool, error) {
		return !e.ec.Agent.State().Connected, nil
	})

	local := e.metaserverClient()
	ctx := t.Context()
	podNames := func(l []corev1.Pod) string {
		var s []string
		for _, p := range l {
			s = append(s, p.Name)
		}
		slices.Sort(s)
		return strings.Join(s, " ")
	}
	pods, err := local.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=meta"})
	if err != nil {
		t.Fatal(err)
	}
	if got := podNames(pods.Items); got != "a b" {
		t.Fatalf("pods through the metaserver while cut: %q", got)
	}
	if pods, err := local.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + e.name}); err != nil || len(pods.Items) != 2 {
		t.Fatalf("pods of the node across namespaces: %v %v", pods, err)
	}
	if cm, err := local.CoreV1().ConfigMaps(ns).Get(ctx, "settings", metav1.GetOptions{}); err != nil || cm.Data["mode"] != "edge" {
		t.Fatalf("configmap: %+v %v", cm, err)
	}
	if n, err := local.CoreV1().Nodes().Get(ctx, e.name, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if _, ok := n.Labels[metaserver.EdgeRoleLabel]; !ok {
		t.Fatalf("node labels %v", n.Labels)
	}

	events := make(chan string, 100)
	factory := informers.NewSharedInformerFactoryWithOptions(local, 0, informers.WithNamespace(ns))
	inf := factory.Core().V1().Pods().Informer()
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { events <- "add " + o.(*corev1.Pod).Name },
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			events <- "delete " + o.(*corev1.Pod).Name
		},
	})
	factory.Start(ctx.Done())
	t.Cleanup(factory.Shutdown) // after t.Context() ends
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync")
	}
	expect := func(timeout time.Duration, want ...string) {
		t.Helper()
		var got []string
		deadline := time.After(timeout)
		for len(got) < len(want) {
			select {
			case ev := <-events:
				got = append(got, ev)
			case <-deadline:
				t.Fatalf("informer events %v, want %v", got, want)
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("informer events %v, want %v", got, want)
		}
	}
	expect(10*time.Second, "add a", "add b")

	// While cut: a new pod for the node, and a pod deleted (forced, so the
	// API server drops it without waiting for the edge).
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), barePod(ns, "c", e.name), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	zero := int64(0)
	if err := client.CoreV1().Pods(ns).Delete(t.Context(), "a", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	// The edge still serves what it holds.
	if pods, err := local.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil || podNames(pods.Items) != "a b" {
		t.Fatalf("pods while cut after the cloud changed: %v %v", pods, err)
	}

	e.link.Heal()
	expect(60*time.Second, "add c", "delete a")
	var held []corev1.Pod
	for _, o := range inf.GetStore().List() {
		held = append(held, *o.(*corev1.Pod))
	}
	if got := podNames(held); got != "b c" {
		t.Fatalf("informer holds %q, want \"b c\"", got)
	}
	if pods, err := local.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil || podNames(pods.Items) != "b c" {
		t.Fatalf("pods after the heal: %v %v", pods, err)
	}
}
