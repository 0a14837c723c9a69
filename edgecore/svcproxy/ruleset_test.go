package svcproxy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"
)

// TestRules runs testdata/rules.txt: each "rules" directive takes the
// Services, EndpointSlices and Pods (of node edge-1, as it reports them)
// of its input (YAML documents, apart by "---") and prints the Ruleset, then what was skipped.
// go test -run TestRules -rewrite rewrites the expected output.
func TestRules(t *testing.T) {
	datadriven.RunTest(t, "testdata/rules.txt", func(t *testing.T, d *datadriven.TestData) string {
		if d.Cmd != "rules" {
			t.Fatalf("unknown directive %q", d.Cmd)
		}
		cidr := netip.MustParsePrefix("10.96.0.0/12")
		if d.HasArg("cidr") {
			var s string
			d.ScanArgs(t, "cidr", &s)
			cidr = netip.MustParsePrefix(s)
		}
		in := Input{ServiceCIDR: cidr, NodeName: "edge-1", Pods: map[string]LocalPod{}}
		if d.HasArg("api") {
			var s []string
			d.ScanArgs(t, "api", &s)
			in.APIService, in.APIServer = netip.MustParseAddrPort(s[0]), netip.MustParseAddrPort(s[1])
		}
		if d.HasArg("sources") {
			var srcs []string
			d.ScanArgs(t, "sources", &srcs)
			for _, p := range srcs {
				in.Sources = append(in.Sources, netip.MustParsePrefix(p))
			}
		}
		for _, doc := range strings.Split(d.Input, "\n---\n") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var head struct{ Kind string }
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Fatal(err)
			}
			switch head.Kind {
			case "Service":
				s := new(corev1.Service)
				if err := yaml.UnmarshalStrict([]byte(doc), s); err != nil {
					t.Fatal(err)
				}
				in.Services = append(in.Services, s)
			case "EndpointSlice":
				s := new(discoveryv1.EndpointSlice)
				if err := yaml.UnmarshalStrict([]byte(doc), s); err != nil {
					t.Fatal(err)
				}
				in.Slices = append(in.Slices, s)
			case "Pod": // a pod of edge-1, as it reports it
				p := new(corev1.Pod)
				if err := yaml.UnmarshalStrict([]byte(doc), p); err != nil {
					t.Fatal(err)
				}
				lp := LocalPod{}
				if p.Status.PodIP != "" {
					lp.IP = netip.MustParseAddr(p.Status.PodIP)
				}
				for _, c := range p.Status.Conditions {
					lp.Ready = lp.Ready || c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue
				}
				in.Pods[string(p.UID)] = lp
			default:
				t.Fatalf("kind %q in %q", head.Kind, doc)
			}
		}
		rs, skipped := Rules(in)
		var b strings.Builder
		b.WriteString(rs.String())
		for _, s := range skipped {
			fmt.Fprintf(&b, "skipped %s: %s\n", s.Object, s.Reason)
		}
		return b.String()
	})
}

// BenchmarkRules1000 computes the Ruleset of 1,000 Services, each with a
// slice of 3 endpoints, one a pod of the node.
func BenchmarkRules1000(b *testing.B) {
	in := Input{ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12"), NodeName: "edge-1", Pods: map[string]LocalPod{}}
	port, node, other := int32(8080), "edge-1", "edge-2"
	for i := range 1000 {
		name := fmt.Sprintf("svc-%d", i)
		in.Services = append(in.Services, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("10.96.%d.%d", i>>8, i&255),
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}})
		pn := "http"
		es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name + "-1",
			Labels: map[string]string{discoveryv1.LabelServiceName: name}}, AddressType: discoveryv1.AddressTypeIPv4,
			Ports: []discoveryv1.EndpointPort{{Name: &pn, Port: &port}}}
		for j := range 3 {
			ep := discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.244.%d.%d", i%250, j+2)}, NodeName: &other}
			if j == 0 {
				uid := fmt.Sprintf("uid-%d", i)
				ep.NodeName, ep.TargetRef = &node, &corev1.ObjectReference{Kind: "Pod", UID: types.UID(uid)}
				in.Pods[uid] = LocalPod{IP: netip.MustParseAddr(ep.Addresses[0]), Ready: true}
			}
			es.Endpoints = append(es.Endpoints, ep)
		}
		in.Slices = append(in.Slices, es)
	}
	b.ResetTimer()
	for b.Loop() {
		if rs, skipped := Rules(in); len(rs.Ports) != 1000 || len(skipped) != 0 {
			b.Fatalf("%d ports, %v", len(rs.Ports), skipped)
		}
	}
}
