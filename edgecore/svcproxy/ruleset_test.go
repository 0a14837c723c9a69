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
// Services and EndpointSlices of its input (YAML documents, apart by
// "---") and prints the Ruleset, then what was skipped.
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
		var services []*corev1.Service
		var slices []*discoveryv1.EndpointSlice
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
				services = append(services, s)
			case "EndpointSlice":
				s := new(discoveryv1.EndpointSlice)
				if err := yaml.UnmarshalStrict([]byte(doc), s); err != nil {
					t.Fatal(err)
				}
				slices = append(slices, s)
			default:
				t.Fatalf("kind %q in %q", head.Kind, doc)
			}
		}
		rs, skipped := Rules(cidr, services, slices)
		var b strings.Builder
		b.WriteString(rs.String())
		for _, s := range skipped {
			fmt.Fprintf(&b, "skipped %s: %s\n", s.Object, s.Reason)
		}
		return b.String()
	})
}
