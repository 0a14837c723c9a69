package cri_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/edgecore"
)

// edgecore's config takes `runtime: cri` with a `cri:` section whose errors
// name the field.
func TestEdgecoreConfigNamesCRIFields(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := "nodeName: edge-1\ncloud:\n  url: wss://cloud:10000/v1/connect\n  caFile: " + ca +
		"\n  credentialsFile: " + ca + "\ndataDir: " + dir + "\nruntime: cri\n"
	cases := []struct{ yaml, field string }{
		{good + "cri:\n  endpoint: run/containerd.sock\n", "cri.endpoint"},
		{good + "cri:\n  podLogDir: logs\n", "cri.podLogDir"},
		{good + "cri:\n  cgroupParent: tether.slice\n", "cri.cgroupParent"},
		{good + "cri:\n  clusterDNS: [10.0.0.300]\n", "cri.clusterDNS"},
		{good + "cri:\n  backoffInitial: 1m\n  backoffMax: 10s\n", "cri.backoffMax"},
		{good + "cri:\n  requestTimeout: -1s\n", "cri.requestTimeout"},
		{good + "cri:\n  imageGCHighThresholdPercent: 101\n", "cri.imageGCHighThresholdPercent"},
		{good + "cri:\n  imageGCHighThresholdPercent: 70\n", "cri.imageGCLowThresholdPercent"},
		{good + "cri:\n  imageGCLowThresholdPercent: -5\n", "cri.imageGCLowThresholdPercent"},
		{good + "cri:\n  imageMinimumGCAge: -1m\n", "cri.imageMinimumGCAge"},
		{strings.Replace(good, "runtime: cri", "runtime: docker", 1), "runtime"},
	}
	for _, c := range cases {
		var cfg edgecore.Config
		if err := yaml.UnmarshalStrict([]byte(c.yaml), &cfg); err != nil {
			t.Fatalf("%s: %v", c.field, err)
		}
		_, err := edgecore.New(cfg)
		if err == nil || !strings.HasPrefix(err.Error(), "config: "+c.field+":") {
			t.Errorf("want an error naming %s, got %v", c.field, err)
		}
	}
	var cfg edgecore.Config
	if err := yaml.UnmarshalStrict([]byte(good+"cri:\n  endpiont: x\n"), &cfg); err == nil || !strings.Contains(err.Error(), "endpiont") {
		t.Errorf("unknown cri field: got %v", err)
	}
}
