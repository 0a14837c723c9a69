package svcproxy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
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
		for _, doc := range strings.Split(d.Input, "\n---\n") {
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
