package cloudcore

import (
	"encoding/json"
	"testing"

	"sigs.k8s.io/yaml"
)

// FuzzConfig checks cloudcore's configuration file: strict YAML, then
// validate, which never panics. An accepted configuration validates again
// to the same configuration (its defaults are idempotent), and written back
// as YAML it reads and validates to the same configuration.
func FuzzConfig(f *testing.F) {
	for _, s := range []string{
		"",
		"kubeconfig: /etc/tether/kubeconfig\nlistenAddr: 0.0.0.0:10000\nnamespace: tether-system\ncaSecret: tether-ca\n" +
			"certDNSNames: [cloud.example, localhost]\ncertIPs: [127.0.0.1, \"::1\"]\n",
		"tlsCertFile: /etc/tether/hub.crt\ntlsKeyFile: /etc/tether/hub.key\ntlsCAFile: /etc/tether/ca.crt\n" +
			"servingCertValidity: 2160h\nclientCertValidity: 8760h\nrenewGracePeriod: 720h\n",
		"heartbeatInterval: 10s\nsessionTimeout: 25s\nleaseDuration: 40s\nkubeQPS: 200\nkubeBurst: 400\nstatusWorkers: 64\n" +
			"leaseWorkers: 16\ninformerResync: 10m\nskipCRDInstall: true\ndeviceCRDPoll: 1m\n",
		"autonomy:\n  patchQPS: 5.5\n  patchBurst: 10\n  retryBaseDelay: 200ms\n  retryMaxDelay: 1m\n",
		"autonomy:\n  disabled: true\nkubeQPS: 0.5\n",
		"tokens: [abcdef.0123456789abcdef]\n",
		"kubeBurst: 10\n",
		"listenAddr: nope\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var cfg Config
		if err := yaml.UnmarshalStrict(in, &cfg); err != nil {
			return
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
