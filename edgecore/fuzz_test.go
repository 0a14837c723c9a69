package edgecore

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

// FuzzConfig checks edgecore's configuration file: strict YAML, then
// validate, which never panics. An accepted configuration validates again
// to the same configuration (its defaults are idempotent), and written back
// as YAML it reads and validates to the same configuration. The files it
// names are replaced with files of t.TempDir, so that only those are read.
func FuzzConfig(f *testing.F) {
	base := "nodeName: store-0421-pi\ncloud:\n  url: wss://cloud.example:10000/v1/connect\n  caFile: /etc/tether/pki/ca.crt\n" +
		"  credentialsFile: /etc/tether/pki/node.pem\n"
	for _, s := range []string{
		base,
		base + "dataDir: /var/lib/tether/edgecore\nlabels:\n  tether.io/site: store-0421\nruntime: cri\ncri:\n" +
			"  endpoint: unix:///run/containerd/containerd.sock\n  pauseImage: registry.k8s.io/pause:3.10\n  podLogDir: /var/log/pods\n" +
			"  cgroupParent: /tether-demo\n  clusterDNS: [10.96.0.10]\n  containerLogMaxSize: 10Mi\n  containerLogMaxFiles: 3\n",
		base + "nodeIP: 192.168.7.21\nmaxPods: 30\nreconnectInitial: 2s\nreconnectMax: 2m\nnodeStatusInterval: 5m\n" +
			"podResyncInterval: 10s\nstaticPodPath: \"-\"\noutboxMax: 500\npodWorkers: 4\nmetaserver:\n  enable: true\n  addr: \"[::1]:10550\"\n",
		base + "devices:\n  mqtt:\n    broker: external\n    url: tcp://10.0.0.5:1883\n    username: edge\n    passwordFile: /etc/tether/mqtt.pass\n" +
			"  reportInterval: 500ms\n",
		base + "devices:\n  enable: false\nmetaserver:\n  enable: false\n",
		"cloud:\n  url: wss://cloud:10000\n  token: abcdef.0123456789abcdef\n",
		"nodeNmae: typo\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	pass := filepath.Join(dir, "mqtt.pass")
	if err := os.WriteFile(ca, []byte("x"), 0o600); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(pass, []byte("s3cret\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var cfg Config
		if err := yaml.UnmarshalStrict(in, &cfg); err != nil {
			return
		}
		if cfg.Cloud.CAFile != "" {
			cfg.Cloud.CAFile = ca
		}
		if cfg.Devices.MQTT.PasswordFile != "" {
			cfg.Devices.MQTT.PasswordFile = pass
		}
		if err := cfg.validate(); err != nil {
			return
		}
		want, err := json.Marshal(&cfg)
		if err != nil {
			t.Fatalf("accepted config does not encode: %v", err)
		}
		if err := cfg.validate(); err != nil {
			t.Fatalf("accepted config fails validate the second time: %v\n%s", err, want)
		}
		if got, _ := json.Marshal(&cfg); string(got) != string(want) {
			t.Fatalf("validate again changed the config:\n%s\n%s", want, got)
		}
		out, err := yaml.Marshal(&cfg)
		if err != nil {
			t.Fatal(err)
		}
		var back Config
		if err := yaml.UnmarshalStrict(out, &back); err != nil {
			t.Fatalf("written back, the config does not read: %v\n%s", err, out)
		}
		if err := back.validate(); err != nil {
			t.Fatalf("written back, the config does not validate: %v\n%s", err, out)
		}
		if got, _ := json.Marshal(&back); string(got) != string(want) {
			t.Fatalf("written back and read, the config changed:\n%s\n%s", want, got)
		}
	})
}
