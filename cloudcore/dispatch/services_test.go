package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	fcache "k8s.io/client-go/tools/cache/testing"

	"github.com/tether-edge/tether/protocol"
)

func siteNode(name, site string) *corev1.Node {
	n := edgeNode(name, true)
	if site != "" {
		n.Labels[SiteLabel] = site
	}
	return n
}

func svc(ns, name string, annotations map[string]string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-svc-" + name),
		ResourceVersion: "1", Annotations: annotations}, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10"}}
}

// slice returns an EndpointSlice of service with one endpoint per node, of
// address 10.244.<i>.1.
func slice(ns, name, service string, nodes ...string) *discoveryv1.EndpointSlice {
	e := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-es-" + name),
		ResourceVersion: "1", Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4}
	for i, n := range nodes {
		e.Endpoints = append(e.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.244." + string(rune('0'+i)) + ".1"},
			NodeName: &n})
	}
	return e
}

// encodedNodes encodes the slice name as node holds it and returns the
// nodes of its endpoints and its version.
func encodedNodes(t *testing.T, d *Dispatcher, node, ns, name string) ([]string, string) {
	t.Helper()
	o := protocol.Object{Kind: protocol.KindEndpointSlice, UID: "uid-es-" + name, Namespace: ns, Name: name}
	if ok, err := d.Encode(node, &o); !ok || err != nil {
		t.Fatalf("encode %s for %s: %v %v", name, node, ok, err)
	}
	e, err := protocol.DecodeEndpointSlice(o.Data)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ep := range e.Endpoints {
		out = append(out, *ep.NodeName)
	}
	return out, o.ResourceVersion
}

// TestDesiredServices checks which Services and endpoints a node holds: the
// Services of its pods' namespaces (not of a mirror pod's), its own
// endpoints, and with tether.io/endpoints: site those of its site too.
func TestDesiredServices(t *testing.T) {
	src := &fakeSources{devices: fcache.NewFakeControllerSource(), models: fcache.NewFakeControllerSource()}
	src.served.Store(true)
	d, rec, client := startDispatcherClient(t, src,
		siteNode("s1a", "store-1"), siteNode("s1b", "store-1"), siteNode("s2", "store-2"),
		refPod("pos", "s1a", false), refPod("pos-b", "b", false),
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "static", UID: "uid-static",
			Annotations: map[string]string{corev1.MirrorPodAnnotationKey: "h"}}, Spec: corev1.PodSpec{NodeName: "s2"}},
		svc(ns, "web", nil), svc(ns, "db", map[string]string{EndpointsAnnotation: "site"}),
		svc("other", "x", nil),
		slice(ns, "web-1", "web", "s1a", "s1b", "cloud"),
		slice(ns, "db-1", "db", "s1a", "s1b", "s2"),
		slice("other", "x-1", "x", "s2"),
	)
	got := desired(d, "s1a")
	var svcs []string
	for _, s := range got {
		if s[:7] == "Service" || s[:8] == "Endpoint" {
			svcs = append(svcs, s[:len(s)-len(s[indexAt(s):])])
		}
	}
	if want := []string{"Service/db", "Service/web", "EndpointSlice/db-1", "EndpointSlice/web-1"}; !slices.Equal(svcs, want) {
		t.Fatalf("s1a holds %v, want %v", svcs, want)
	}
	if got := desired(d, "s2"); len(got) != 1 { // the mirror pod only
		t.Fatalf("s2 (a mirror pod in other) holds %v", got)
	}
	if got, _ := encodedNodes(t, d, "s1a", ns, "web-1"); !slices.Equal(got, []string{"s1a"}) {
		t.Fatalf("web-1 for s1a: endpoints on %v, want s1a only", got)
	}
	dbNodes, dbVer := encodedNodes(t, d, "s1a", ns, "db-1")
	if !slices.Equal(dbNodes, []string{"s1a", "s1b"}) {
		t.Fatalf("db-1 for s1a: endpoints on %v, want s1a s1b (its site)", dbNodes)
	}
	if got, _ := encodedNodes(t, d, "s2", ns, "db-1"); !slices.Equal(got, []string{"s2"}) {
		t.Fatalf("db-1 for s2: endpoints on %v, want s2", got)
	}
	_, webVer := encodedNodes(t, d, "s1a", ns, "web-1")
	if v := versionOf(d, "s1a", protocol.KindEndpointSlice, "web-1"); v != webVer {
		t.Fatalf("Desired version %q, Encode version %q", v, webVer)
	}

	// A change of an endpoint elsewhere does not change the node's copy;
	// one of its own does. The node hears of both.
	e := slice(ns, "web-1", "web", "s1a", "s1b", "cloud")
	e.Endpoints[2].Addresses = []string{"10.244.9.9"}
	e.ResourceVersion = "2"
	rec.waitFor(t) // drain
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Update(t.Context(), e, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "s1a")
	if _, v := encodedNodes(t, d, "s1a", ns, "web-1"); v != webVer {
		t.Fatalf("an endpoint on another node changed s1a's version: %q -> %q", webVer, v)
	}
	e.Endpoints[0].Addresses = []string{"10.244.8.8"}
	e.ResourceVersion = "3"
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Update(t.Context(), e, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "s1a")
	if _, v := encodedNodes(t, d, "s1a", ns, "web-1"); v == webVer {
		t.Fatal("s1a's own endpoint changed and its version did not")
	}

	// An update of endpoints only tells the nodes they name (that run pods
	// in the namespace), not b; any other change tells every node of the
	// namespace.
	rec.waitFor(t)
	o, n2 := slice(ns, "web-1", "web", "s1a", "cloud"), slice(ns, "web-1", "web", "s1a", "cloud")
	n2.Endpoints[1].Addresses = []string{"10.244.7.7"}
	d.sliceChanged(o, n2)
	if got := rec.waitFor(t, "s1a"); !slices.Equal(got, []string{"s1a"}) {
		t.Fatalf("endpoints update told %v, want s1a only", got)
	}
	n2.Labels["x"] = "y"
	d.sliceChanged(o, n2)
	if got := rec.waitFor(t, "s1a", "b"); len(got) != 2 {
		t.Fatalf("labels update told %v, want s1a and b", got)
	}

	// s1b leaves store-1: db-1 for s1a loses its endpoint.
	n := siteNode("s1b", "store-3")
	if _, err := client.CoreV1().Nodes().Update(t.Context(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "a", "b", "s1a", "s1b", "s2")
	rec.waitFor(t)
	if got, v := encodedNodes(t, d, "s1a", ns, "db-1"); !slices.Equal(got, []string{"s1a"}) || v == dbVer {
		t.Fatalf("after s1b moved: db-1 for s1a on %v, version %q (was %q)", got, v, dbVer)
	}
	// An object of the new kinds is sent only from version 4.
	if protocol.KindService.Since() != 4 || protocol.KindEndpointSlice.Since() != 4 || protocol.KindPod.Since() != 1 {
		t.Fatal("Since")
	}
}

func indexAt(s string) int {
	for i := range s {
		if s[i] == '@' {
			return i
		}
	}
	return len(s)
}

func versionOf(d *Dispatcher, node string, kind protocol.Kind, name string) string {
	for _, o := range d.Desired(node, nil) {
		if o.Kind == kind && o.Name == name {
			return o.ResourceVersion
		}
	}
	return ""
}

// BenchmarkDesiredServices is the cost of Services at 1,000 per namespace
// for one node: Desired at each change (the time per op), and what a first
// resync sends (objects and bytes of the Upsert frames, per node).
func BenchmarkDesiredServices(b *testing.B) {
	const services = 1000
	objs := []runtime.Object{refPod("pos", "a", false)}
	tcp := corev1.ProtocolTCP
	for i := range services {
		name := fmt.Sprintf("svc-%04d", i)
		objs = append(objs, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), ResourceVersion: "1",
				Labels: map[string]string{"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "store"}},
			Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("10.96.%d.%d", i/250, i%250+1), ClusterIPs: []string{fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)},
				Type: corev1.ServiceTypeClusterIP, Selector: map[string]string{"app.kubernetes.io/name": name},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: tcp}}}})
		// Three endpoints: one on a, two on other nodes.
		e := slice(ns, name+"-abcde", name, "a", "cloud-1", "cloud-2")
		pn, pp := "http", int32(8080)
		e.Ports = []discoveryv1.EndpointPort{{Name: &pn, Port: &pp, Protocol: &tcp}}
		e.Labels[discoveryv1.LabelManagedBy] = "endpointslice-controller.k8s.io"
		objs = append(objs, e)
	}
	src := &fakeSources{devices: fcache.NewFakeControllerSource(), models: fcache.NewFakeControllerSource()}
	src.served.Store(true)
	d, err := newDispatcher(fake.NewClientset(append(objs, edgeNode("a", true))...), src.source(), Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	d.SetNotifier(newRecorder())
	ctx, cancel := context.WithCancel(b.Context())
	defer func() { cancel(); d.Shutdown() }()
	if err := d.Start(ctx); err != nil {
		b.Fatal(err)
	}
	want := 1 + 2*services
	var set []protocol.Object
	for deadline := time.Now().Add(30 * time.Second); len(set) != want; time.Sleep(10 * time.Millisecond) {
		if set = d.Desired("a", nil); time.Now().After(deadline) {
			b.Fatalf("Desired(a) has %d objects, want %d", len(set), want)
		}
	}
	bytes := 0
	for i, o := range set {
		if o.Kind == protocol.KindPod {
			continue
		}
		if ok, err := d.Encode("a", &o); !ok || err != nil {
			b.Fatalf("encode %s: %v %v", o.Name, ok, err)
		}
		f, err := protocol.Encode(&protocol.Frame{Seq: uint64(i + 1), Upsert: &protocol.Upsert{Object: o}})
		if err != nil {
			b.Fatal(err)
		}
		bytes += len(f)
	}
	buf := make([]protocol.Object, 0, want)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		buf = d.Desired("a", buf[:0])
	}
	b.ReportMetric(float64(2*services), "objects/node")
	b.ReportMetric(float64(bytes), "resync-bytes/node")
}
