package cloudcore

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// TestDeployConfig checks that the configuration manifests/cloudcore
// deploys cloudcore with (the ConfigMap's cloudcore.yaml) is one cloudcore
// reads and accepts, as cmd/cloudcore does: strictly, then validate.
func TestDeployConfig(t *testing.T) {
	b, err := os.ReadFile("../manifests/cloudcore/deploy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var found bool
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var cm corev1.ConfigMap
		if err := yaml.Unmarshal(doc, &cm); err != nil || cm.Kind != "ConfigMap" {
			continue
		}
		found = true
		var cfg Config
		if err := yaml.UnmarshalStrict([]byte(cm.Data["cloudcore.yaml"]), &cfg); err != nil {
			t.Fatalf("cloudcore.yaml: %v", err)
		}
		if err := cfg.validate(); err != nil {
			t.Fatalf("cloudcore.yaml: %v", err)
		}
		if cfg.Kubeconfig != "" || !cfg.SkipCRDInstall || cfg.ListenAddr != "0.0.0.0:10000" || cfg.HealthAddr != "0.0.0.0:10001" {
			t.Errorf("cloudcore.yaml: kubeconfig %q (want in-cluster), skipCRDInstall %v, listen %s, health %s",
				cfg.Kubeconfig, cfg.SkipCRDInstall, cfg.ListenAddr, cfg.HealthAddr)
		}
	}
	if !found {
		t.Fatal("no ConfigMap in deploy.yaml")
	}
}
