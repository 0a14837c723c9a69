package monitoring_test

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/manifests/monitoring"
)

var (
	metricRef = regexp.MustCompile(`\btether_[a-z0-9_]+`)
	fqName    = regexp.MustCompile(`fqName: "([a-zA-Z_:][a-zA-Z0-9_:]*)"`)
)

// TestNamesExist checks that the alert rules and the dashboard parse and
// name only metrics that cloudcore or edgecore export, so a renamed metric
// cannot leave an alert that never fires.
func TestNamesExist(t *testing.T) {
	var known []string
	for _, d := range append(cloudcore.MetricDescs(), edgecore.MetricDescs()...) {
		// client_golang has no getter for a Desc's name.
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			known = append(known, m[1])
		}
	}
	if len(known) < 20 {
		t.Fatalf("only %d metric names known: %v", len(known), known)
	}
	var rules struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(monitoring.Alerts, &rules); err != nil {
		t.Fatalf("tether-alerts.yaml: %v", err)
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("rule %+v: alert, expr, severity and summary are required", r)
			}
			for _, m := range metricRef.FindAllString(r.Expr, -1) {
				if !slices.Contains(known, m) {
					t.Errorf("alert %s: no metric %s", r.Alert, m)
				}
			}
		}
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(monitoring.Dashboard, &dash); err != nil {
		t.Fatalf("tether-dashboard.json: %v", err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range metricRef.FindAllString(tg.Expr, -1) {
				// A histogram's series: name_bucket, name_sum, name_count.
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
				if !slices.Contains(known, m) && !slices.Contains(known, base) {
					t.Errorf("panel %q: no metric %s", p.Title, m)
				}
			}
		}
	}
	if n < 5 || len(dash.Panels) < 5 {
		t.Errorf("%d alerts, %d panels", n, len(dash.Panels))
	}
}
