package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// joined lays out below root what `edgecore join` writes (a configuration
// with the operator's settings kept, the CA and the node's credentials) and
// what edgecore makes at its first start (the store, the credentials it
// hands to local processes), and an executable standing for edgecore.
func joined(t *testing.T, root string) (binary, config, dataDir string) {
	t.Helper()
	binary = filepath.Join(root, "usr/local/bin/edge core") // a space: ExecStart quoting
	config = filepath.Join(root, "etc/tether/edgecore.yaml")
	pkiDir := filepath.Join(root, "etc/tether/pki")
	dataDir = filepath.Join(root, "var/lib/tether/edgecore")
	files := map[string]string{
		binary:                            "#!/bin/sh\nexit 0\n",
		filepath.Join(pkiDir, "ca.crt"):   "ca",
		filepath.Join(pkiDir, "node.pem"): "key and certificate",
		filepath.Join(dataDir, "edge.db"): "store",
		filepath.Join(dataDir, "credentials/metaserver-node.token"): "token",
		filepath.Join(dataDir, "credentials/mqtt-mapper.password"):  "password",
		filepath.Join(dataDir, "pods/uid-1/volumes/cm/data"):        "a volume",
	}
	for p, body := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := map[string]any{
		"nodeName": "edge-1",
		"dataDir":  dataDir,
		"runtime":  "fake",
		"labels":   map[string]string{"site": "store-1"},
		"cloud": map[string]any{"url": "wss://127.0.0.1:10000/v1/connect",
			"caFile": filepath.Join(pkiDir, "ca.crt"), "credentialsFile": filepath.Join(pkiDir, "node.pem")},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return binary, config, dataDir
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// The unit join writes passes `systemd-analyze verify` (which prints
// warnings and still exits 0 for unknown keys or bad values, so any output
// fails the test), is enabled below the root by `systemctl --root`, and
// reset removes everything join and edgecore's first start wrote, keeping
// the operator's own settings and, without RemoveData, the store.
func TestInstallVerifyAndReset(t *testing.T) {
	root := t.TempDir()
	binary, config, dataDir := joined(t, root)
	o := Options{Root: root, Binary: binary, ConfigPath: config}
	inst, err := InstallService(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile(inst.UnitPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`ExecStart="` + binary + `" --config ` + config,
		"Restart=on-failure", "KillMode=process", "After=network-online.target containerd.service",
		"Wants=network-online.target containerd.service", "LimitNOFILE=", "CapabilityBoundingSet=CAP_SYS_ADMIN",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	if strings.Contains(string(unit), "ProtectSystem") || strings.Contains(string(unit), "PrivateTmp") {
		t.Errorf("unit makes a mount namespace: edgecore's tmpfs mounts would not reach containerd:\n%s", unit)
	}

	if sa, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Logf("SKIPPED part: systemd-analyze not found (apt-get install systemd): the unit is not verified")
	} else {
		out, err := exec.Command(sa, "verify", inst.UnitPath).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", inst.UnitPath, err, out)
		}
	}
	wants := filepath.Join(root, UnitDir, "multi-user.target.wants", UnitName)
	_, scErr := exec.LookPath("systemctl")
	if scErr == nil {
		if !exists(wants) || len(inst.Systemctl) != 1 || !strings.Contains(inst.Systemctl[0], "--root="+root) {
			t.Errorf("systemctl --root enable: link %s exists %v; ran %q", wants, exists(wants), inst.Systemctl)
		}
	} else {
		t.Logf("systemctl not found: the unit is not enabled (%s)", inst.Note)
	}

	plan, err := Plan(o)
	if err != nil {
		t.Fatal(err)
	}
	removed, err := Reset(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{inst.UnitPath, wants, filepath.Join(root, "etc/tether/pki"),
		filepath.Join(dataDir, "credentials")} {
		if exists(p) {
			t.Errorf("reset left %s", p)
		}
	}
	for _, p := range plan {
		if exists(p) {
			t.Errorf("reset left %s, which it planned to remove", p)
		}
	}
	if !slices.Contains(removed, inst.UnitPath) {
		t.Errorf("reset says it removed %q, not the unit", removed)
	}
	if !exists(filepath.Join(dataDir, "edge.db")) {
		t.Errorf("reset without RemoveData removed the store")
	}
	b, err := os.ReadFile(config)
	if err != nil {
		t.Fatalf("reset removed the configuration that holds the operator's settings: %v", err)
	}
	var left map[string]any
	if err := yaml.Unmarshal(b, &left); err != nil {
		t.Fatal(err)
	}
	if _, ok := left["cloud"]; ok || left["nodeName"] != nil || left["runtime"] != "fake" || left["labels"] == nil {
		t.Errorf("configuration after reset: %v; want the join's cloud and nodeName gone, the rest kept", left)
	}

	// Again, with the data directory: the store and the pods' files go.
	o.RemoveData = true
	if _, err := Reset(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	if exists(dataDir) {
		t.Errorf("reset with RemoveData left %s", dataDir)
	}
	// Run a third time: nothing left to do is not an error.
	if _, err := Reset(t.Context(), o); err != nil {
		t.Errorf("reset after reset: %v", err)
	}
}

// A configuration naming a data directory that reset must never remove
// whole: refused before anything is touched.
func TestResetRefusesShallowDataDir(t *testing.T) {
	root := t.TempDir()
	for _, dir := range []string{"/", "/var", "relative/dir"} {
		config := filepath.Join(root, "edgecore.yaml")
		if err := os.WriteFile(config, []byte("dataDir: "+dir+"\nnodeName: n\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		o := Options{Root: root, ConfigPath: config, RemoveData: true, Systemctl: "-"}
		if _, err := Reset(t.Context(), o); err == nil || !strings.Contains(err.Error(), "refusing") {
			t.Errorf("dataDir %q: reset returned %v, want a refusal", dir, err)
		}
		if b, _ := os.ReadFile(config); !strings.Contains(string(b), "nodeName") {
			t.Errorf("dataDir %q: the refused reset changed the configuration: %s", dir, b)
		}
	}
}

// ExecStart quoting: what systemd would split or expand (spaces, quotes,
// $, %) is quoted and escaped, plain paths are left as they are.
func TestQuoteArg(t *testing.T) {
	for in, want := range map[string]string{
		"/usr/local/bin/edgecore": "/usr/local/bin/edgecore",
		"/opt/my edge/edgecore":   `"/opt/my edge/edgecore"`,
		`/a"b`:                    `"/a\"b"`,
		"/a$HOME%i":               `"/a$$HOME%%i"`,
	} {
		if got := quoteArg(in); got != want {
			t.Errorf("quoteArg(%q) = %s, want %s", in, got, want)
		}
	}
}

// A path that would smuggle a directive into the unit (a newline, then
// ExecStartPre=...) is refused, and no unit is written.
func TestInstallRefusesControlCharacters(t *testing.T) {
	root := t.TempDir()
	for _, o := range []Options{
		{Root: root, Binary: "/usr/local/bin/edgecore", ConfigPath: "/etc/e.yaml\nExecStartPre=/bin/sh -c evil"},
		{Root: root, Binary: "/usr/local/bin/edgecore\r", ConfigPath: "/etc/e.yaml"},
	} {
		o.Systemctl = "-"
		if _, err := InstallService(t.Context(), o); err == nil || !strings.Contains(err.Error(), "control characters") {
			t.Errorf("binary %q, config %q: %v, want a refusal", o.Binary, o.ConfigPath, err)
		}
		if exists(o.UnitPath()) {
			t.Errorf("a unit was written for config %q", o.ConfigPath)
		}
	}
}
