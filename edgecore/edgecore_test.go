package edgecore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestConfigErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	os.WriteFile(ca, []byte("x"), 0o600)
	good := "nodeName: edge-1\ncloud:\n  url: wss://cloud:10000/v1/connect\n  token: tok\n  caFile: " + ca + "\ndataDir: " + dir + "\n"
	cases := []struct{ yaml, field string }{
		{strings.Replace(good, "edge-1", "Edge_1", 1), "nodeName"},
		{strings.Replace(good, "wss://", "http://", 1), "cloud.url"},
		{strings.Replace(good, "  token: tok\n", "", 1), "cloud.token"},
		{strings.Replace(good, ca, ca+".missing", 1), "cloud.caFile"},
		{good + "runtime: docker\n", "runtime"},
		{good + "nodeIP: 300.1.1.1\n", "nodeIP"},
		{good + "maxPods: -1\n", "maxPods"},
		{good + "reconnectInitial: 10s\nreconnectMax: 1s\n", "reconnectMax"},
		{good + "podResyncInterval: -5s\n", "podResyncInterval"},
	}
	for _, c := range cases {
		var cfg Config
		if err := yaml.UnmarshalStrict([]byte(c.yaml), &cfg); err != nil {
			t.Fatalf("%s: %v", c.field, err)
		}
		err := cfg.validate()
		if err == nil || !strings.HasPrefix(err.Error(), c.field+":") {
			t.Errorf("want an error naming %s, got %v", c.field, err)
		}
	}
	var cfg Config
	if err := yaml.UnmarshalStrict([]byte(good+"nodeNmae: typo\n"), &cfg); err == nil || !strings.Contains(err.Error(), "nodeNmae") {
		t.Errorf("unknown field: got %v", err)
	}
	if err := yaml.UnmarshalStrict([]byte(good), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	if cfg.MaxPods != 110 || cfg.Runtime != "fake" || cfg.ReconnectMax.Duration == 0 {
		t.Errorf("defaults not filled: %+v", cfg)
	}
}
