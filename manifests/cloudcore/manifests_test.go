package cloudcore_test

import (
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"

	manifests "github.com/tether-edge/tether/manifests/cloudcore"
)

// TestObjects loads the manifests strictly and checks that Leases are
// granted in kube-node-lease only and Services and EndpointSlices read only.
func TestObjects(t *testing.T) {
	objs, err := manifests.Objects()
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) < 10 {
		t.Fatalf("%d objects", len(objs))
	}
	for _, o := range objs {
		var rules []rbacv1.PolicyRule
		ns := ""
		switch r := o.(type) {
		case *rbacv1.ClusterRole:
			rules = r.Rules
		case *rbacv1.Role:
			rules, ns = r.Rules, r.Namespace
		}
		for _, rule := range rules {
			for _, g := range rule.APIGroups {
				// Node Leases, and the replicas' leader Lease: creating
				// one (RBAC cannot name it) and renewing that one.
				leader := ns == "tether-system" && (slices.Equal(rule.Verbs, []string{"create"}) && len(rule.ResourceNames) == 0 ||
					slices.Equal(rule.ResourceNames, []string{"tether-cloudcore-leader"}))
				if g == "coordination.k8s.io" && ns != "kube-node-lease" && !leader {
					t.Errorf("Leases granted outside kube-node-lease: %s %+v", ns, rule)
				}
				if g == "*" {
					t.Errorf("a wildcard group: %+v", rule)
				}
			}
			for _, v := range rule.Verbs {
				if v == "*" || v == "escalate" || v == "bind" || v == "impersonate" {
					t.Errorf("verb %s: %+v", v, rule)
				}
			}
			// Services and EndpointSlices are read, never written.
			if slices.Contains(rule.Resources, "services") || slices.Contains(rule.Resources, "endpointslices") {
				if !slices.Equal(rule.Verbs, []string{"get", "list", "watch"}) {
					t.Errorf("services or endpointslices granted %v: %+v", rule.Verbs, rule)
				}
			}
		}
	}
}
