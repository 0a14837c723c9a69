package controlplane

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWritePKI(t *testing.T) {
	dir := t.TempDir()
	p, err := writePKI(dir, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		t.Fatalf("load serving pair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(p.caPEM) {
		t.Fatal("CA PEM does not parse")
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("serving cert does not verify for %s: %v", host, err)
		}
	}
	if _, err := tls.LoadX509KeyPair(p.caCert, p.caKey); err != nil {
		t.Errorf("load CA pair: %v", err)
	}

	csv, err := os.ReadFile(p.tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(csv)), "\n")
	if len(lines) != 3 {
		t.Fatalf("token file has %d lines, want 3:\n%s", len(lines), csv)
	}
	want := p.tokens[adminUser] + "," + adminUser + "," + adminUser + `,"system:masters"`
	if lines[0] != want {
		t.Errorf("admin line = %q, want %q", lines[0], want)
	}
	for _, f := range []string{p.caKey, p.serverKey, p.saKey, p.tokenFile} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", filepath.Base(f), st.Mode().Perm())
		}
	}
}

func TestRepoRoot(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "a", "b")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	// A nested module with another path must be skipped.
	write(t, filepath.Join(root, "go.mod"), "module "+modulePath+"\n\ngo 1.25\n")
	write(t, filepath.Join(root, "a", "go.mod"), "module "+modulePath+"/tools/kube\n")
	got, err := repoRoot(deep)
	if err != nil {
		t.Fatal(err)
	}
	if got != root {
		t.Errorf("repoRoot = %s, want %s", got, root)
	}
	if _, err := repoRoot(t.TempDir()); err == nil {
		t.Error("repoRoot outside a repository: want an error")
	}
}

func TestMissingBinariesSayWhatToRun(t *testing.T) {
	_, err := Start(t.Context(), Options{Dir: t.TempDir(), BinDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "make kube-binaries") {
		t.Fatalf("Start with an empty BinDir: err = %v, want one that mentions make kube-binaries", err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		ok   bool
	}{
		{"empty dir", Options{}, false},
		{"defaults", Options{Dir: "x"}, true},
		{"grace not above period", Options{Dir: "x", NodeMonitorPeriod: 2 * time.Second, NodeMonitorGracePeriod: time.Second}, false},
		{"grace above period", Options{Dir: "x", NodeMonitorPeriod: time.Second, NodeMonitorGracePeriod: 4 * time.Second}, true},
		{"negative", Options{Dir: "x", StopTimeout: -1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			err := o.validate()
			if (err == nil) != tc.ok {
				t.Fatalf("validate() = %v, want ok=%v", err, tc.ok)
			}
			if err == nil && (!filepath.IsAbs(o.Dir) || o.StartTimeout == 0 || o.StopTimeout == 0 || o.Logger == nil) {
				t.Errorf("validate did not fill defaults: %+v", o)
			}
		})
	}
}

func TestFreePortsDistinct(t *testing.T) {
	ports, err := freePorts(5)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("ports %v: want 5 distinct positive ports", ports)
		}
		seen[p] = true
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The API server refuses loopback and link-local endpoints: so does
// StartMetricsServer's check, before anything is made.
func TestMetricsServerOptionsAddress(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "metrics-server")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for addr, ok := range map[string]bool{"192.0.2.7": true, "10.1.2.3": true, "127.0.0.1": false, "::1": false,
		"169.254.1.1": false, "0.0.0.0": false, "fe80::1": false, "not-an-ip": false, "": false} {
		o := MetricsServerOptions{Address: addr, Path: bin}
		if err := o.validate(""); (err == nil) != ok {
			t.Errorf("address %q: %v, want ok %v", addr, err, ok)
		}
	}
	o := MetricsServerOptions{Address: "192.0.2.7", Path: filepath.Join(t.TempDir(), "missing")}
	if err := o.validate(""); err == nil {
		t.Error("a missing binary: no error")
	}
}
