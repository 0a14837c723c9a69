//go:build integration

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/edgecore/install"
	"github.com/tether-edge/tether/edgecore/join"
)

// The release binaries of the boards (make release: hack/release.sh,
// static, stripped, version-stamped) run under qemu-user on this amd64
// machine (binfmt_misc is not mounted here, so qemu is called explicitly):
// each joins this test's cloudcore with a join token, as `edgecore join`
// does, runs with the in-memory runtime and is Ready in the API server.
// The test logs each binary's size and the resident memory of its qemu
// process once Ready (VmRSS, and VmHWM the peak), which includes qemu's
// own translation cache: an upper bound of the board's figure.
func TestReleaseEdgecoreUnderQEMU(t *testing.T) {
	arches := []struct{ target, qemu string }{
		{"edgecore-linux-arm64", "qemu-aarch64-static"},
		{"edgecore-linux-armv7", "qemu-arm-static"},
	}
	for _, a := range arches {
		if _, err := exec.LookPath(a.qemu); err != nil {
			t.Skipf("%s not found: qemu-user-static is not installed (apt-get install qemu-user-static, "+
				"or make deps): the arm64 and armv7 edgecore are not run", a.qemu)
		}
	}
	// One build per run: both targets with the release script itself.
	dist := t.TempDir()
	const version = "e2e-qemu-test"
	build := exec.CommandContext(t.Context(), "../hack/release.sh", arches[0].target, arches[1].target)
	build.Env = append(os.Environ(), "DIST="+dist, "VERSION="+version)
	if goBin, err := exec.LookPath("go"); err == nil {
		build.Env = append(build.Env, "GO="+goBin)
	} else {
		build.Env = append(build.Env, "GO=/usr/local/go/bin/go")
	}
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("hack/release.sh: %v\n%s", err, out)
	}
	t.Logf("built %s and %s in %s", arches[0].target, arches[1].target, time.Since(start).Round(time.Second))
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	check := exec.Command("sha256sum", "-c", "SHA256SUMS")
	check.Dir = dist
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c SHA256SUMS: %v\n%s\n%s", err, out, sums)
	}

	c := startCloud(t)
	for _, a := range arches {
		t.Run(a.target, func(t *testing.T) {
			bin := filepath.Join(dist, a.target)
			fi, err := os.Stat(bin)
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.CommandContext(t.Context(), a.qemu, bin, "--version").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "edgecore "+version {
				t.Fatalf("%s %s --version: %v: %q, want %q", a.qemu, a.target, err, out, "edgecore "+version)
			}
			if out, err := exec.Command("file", bin).CombinedOutput(); err == nil && !strings.Contains(string(out), "statically linked") {
				t.Errorf("%s is not static: %s", a.target, out)
			}

			node := "e2e-qemu-" + strings.TrimPrefix(a.target, "edgecore-linux-")
			e := newEdge(t, c, node)
			cfg := edgecore.Config{
				NodeName:          node,
				Cloud:             e.cloudConfig(),
				DataDir:           e.dir,
				NodeIP:            "127.0.0.1",
				Runtime:           "fake", // said explicitly: the default is cri
				ReconnectInitial:  metav1.Duration{Duration: 200 * time.Millisecond},
				ReconnectMax:      metav1.Duration{Duration: 2 * time.Second},
				PodResyncInterval: metav1.Duration{Duration: 2 * time.Second},
				StaticPodPath:     filepath.Join(e.dir, "manifests"),
				MetaServer:        edgecore.MetaServerConfig{Addr: "127.0.0.1:0"},
				Devices:           edgecore.DevicesConfig{MQTT: edgecore.MQTTConfig{Addr: "127.0.0.1:0"}},
			}
			b, err := json.Marshal(cfg) // JSON is YAML
			if err != nil {
				t.Fatal(err)
			}
			cfgFile, logFile := filepath.Join(e.dir, "edgecore.yaml"), filepath.Join(e.dir, "edgecore.log")
			if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
				t.Fatal(err)
			}
			logf, err := os.Create(logFile)
			if err != nil {
				t.Fatal(err)
			}
			defer logf.Close()
			cmd := exec.Command(a.qemu, bin, "--config", cfgFile)
			cmd.Stdout, cmd.Stderr = logf, logf
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			started := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			defer func() {
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case err := <-exited:
					if err != nil {
						b, _ := os.ReadFile(logFile)
						t.Errorf("edgecore under %s exited with %v: %s", a.qemu, err, tailString(string(b), 2000))
					}
				case <-time.After(30 * time.Second):
					cmd.Process.Kill()
					<-exited
					t.Errorf("edgecore under %s did not stop within 30s of SIGTERM", a.qemu)
				}
			}()
			waitNodeReady(t, node, corev1.ConditionTrue, 2*time.Minute)
			ready := time.Since(started)
			time.Sleep(3 * time.Second) // past the start's allocations
			select {
			case err := <-exited:
				b, _ := os.ReadFile(logFile)
				t.Fatalf("edgecore under %s exited: %v: %s", a.qemu, err, tailString(string(b), 2000))
			default:
			}
			rss, hwm := procMemory(t, cmd.Process.Pid)
			t.Logf("%s: binary %.1f MiB; Ready %s after start under %s; RSS of the qemu process %s (peak %s)",
				a.target, float64(fi.Size())/(1<<20), ready.Round(100*time.Millisecond), a.qemu, rss, hwm)
		})
	}
}

// procMemory reads VmRSS and VmHWM of process pid.
func procMemory(t *testing.T, pid int) (rss, hwm string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "VmRSS:" {
			rss = f[1] + " " + f[2]
		} else if len(f) == 3 && f[0] == "VmHWM:" {
			hwm = f[1] + " " + f[2]
		}
	}
	return rss, hwm
}

// A real join (a token from this test's cloudcore) with the service
// installed below a temporary root, as `edgecore join --install-service
// --root DIR` does, then `edgecore reset --root DIR --yes`: the unit
// passes systemd-analyze verify, and reset removes every file join wrote
// and the cloud settings, keeping the operator's own.
func TestJoinInstallServiceAndReset(t *testing.T) {
	c := startCloud(t)
	root := t.TempDir()
	config := filepath.Join(root, "etc/tether/edgecore.yaml")
	if err := os.MkdirAll(filepath.Dir(config), 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(root, "var/lib/tether/edgecore")
	if err := os.WriteFile(config, []byte("runtime: fake\ndataDir: "+dataDir+"\nlabels:\n  site: s1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const node = "e2e-install"
	res, err := join.Join(t.Context(), join.Options{Cloud: c.addr, Token: c.joinToken(node), NodeName: node,
		ConfigPath: config})
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable() // an executable for ExecStart, which verify checks
	if err != nil {
		t.Fatal(err)
	}
	o := install.Options{Root: root, Binary: exe, ConfigPath: config}
	inst, err := install.InstallService(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if sa, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not found (apt-get install systemd): the unit is not verified")
	} else if out, err := exec.Command(sa, "verify", inst.UnitPath).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	written := []string{inst.UnitPath, res.CAFile, res.CredentialsFile}
	for _, p := range written {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("join wrote no %s: %v", p, err)
		}
	}
	if _, err := install.Reset(t.Context(), o); err != nil {
		t.Fatal(err)
	}
	for _, p := range written {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("reset left %s (%v)", p, err)
		}
	}
	b, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); strings.Contains(s, "cloud") || strings.Contains(s, node) || !strings.Contains(s, "site: s1") {
		t.Errorf("configuration after reset:\n%s\nwant the cloud and node name gone, the labels kept", s)
	}
}
