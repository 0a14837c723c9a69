// Package monitoring holds the Prometheus alert rules
// (tether-alerts.yaml) and a Grafana dashboard (tether-dashboard.json) for
// cloudcore's and edgecore's metrics, embedded so that a test checks they
// name only metrics that exist.
package monitoring

import _ "embed"

// Alerts is the rule file; Dashboard the dashboard's JSON.
var (
	//go:embed tether-alerts.yaml
	Alerts []byte
	//go:embed tether-dashboard.json
	Dashboard []byte
)
