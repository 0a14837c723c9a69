// Package install installs edgecore as a systemd service on a board and
// undoes a join: `edgecore join --install-service` writes
// /etc/systemd/system/edgecore.service (Unit) and enables and starts it;
// `edgecore reset` stops, disables and removes the unit and removes what
// join wrote (the node's key and certificate, the CA, the cloud settings
// of the configuration) and the credentials edgecore made in its data
// directory, and the whole data directory when asked.
//
// Every path is taken below Options.Root ("/" on a board), so that tests
// write into a temporary directory. systemctl is called only on the real
// root (with systemd running), or with `systemctl --root` below another
// root, which only makes or removes the [Install] symlinks.
package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/pki"
)

// UnitName is the name of edgecore's systemd unit.
const UnitName = "edgecore.service"

// UnitDir is where the unit is written, below Options.Root.
const UnitDir = "/etc/systemd/system"

// DefaultDataDir is edgecore's data directory when its configuration names
// none (edgecore.Config.DataDir's default).
const DefaultDataDir = "/var/lib/tether/edgecore"

// Unit is the systemd unit that runs binary with the configuration at
// config. Why each setting:
//
//   - After/Wants containerd.service: the CRI runtime is there before
//     edgecore starts (Wants, not Requires: edgecore keeps running and
//     reports the node NotReady while containerd is down, instead of being
//     stopped with it).
//   - Restart=on-failure with no start limit: a board must come back by
//     itself, however many times it failed.
//   - KillMode=process: stopping or restarting edgecore stops edgecore
//     only. The pods' processes are containerd's (its shims, in
//     containerd.service's cgroup and the pods' own cgroups), so they keep
//     running across an edgecore restart or upgrade, which then adopts them.
//   - Root, with a bounding set of the capabilities it uses: CAP_SYS_ADMIN
//     to mount the tmpfs of memory-backed emptyDir volumes, CAP_CHOWN,
//     CAP_FOWNER, CAP_FSETID for the volumes' fsGroup ownership and setgid
//     bits, CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH to clean up pod
//     directories that containers wrote as other users. Add
//     CAP_NET_BIND_SERVICE if a listener is configured below port 1024.
//   - No mount namespace (ProtectSystem, ProtectHome, PrivateTmp,
//     ProtectKernelTunables, ProtectControlGroups, ReadOnlyPaths all make
//     one): the tmpfs edgecore mounts for a pod must be seen by containerd
//     in the host's namespace, and edgecore removes pod cgroups, creates
//     hostPath directories and renews its certificate in /etc/tether.
//     Hardening that only filters system calls or privileges is on.
//   - LimitNOFILE: one descriptor per pod log, watch and connection.
func Unit(binary, config string) []byte {
	return []byte(fmt.Sprintf(`# Written by edgecore join --install-service; removed by edgecore reset.
[Unit]
Description=Tether edgecore: the edge node agent
After=network-online.target containerd.service
Wants=network-online.target containerd.service
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart=%s --config %s
Restart=on-failure
RestartSec=5
# Stop edgecore only: the pods belong to containerd and keep running.
KillMode=process
TimeoutStopSec=30
LimitNOFILE=1048576
CapabilityBoundingSet=CAP_SYS_ADMIN CAP_CHOWN CAP_FOWNER CAP_FSETID CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictNamespaces=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK

[Install]
WantedBy=multi-user.target
`, quoteArg(binary), quoteArg(config)))
}

// quoteArg quotes a path for ExecStart when it needs it.
func quoteArg(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\"'\\%$;") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, `%`, `%%`, `$`, `$$`)
	return `"` + r.Replace(s) + `"`
}

// Options of InstallService and Reset.
type Options struct {
	// Root is the directory the unit's path is taken below ("/" by
	// default; a temporary directory in tests).
	Root string
	// Binary is the edgecore binary the unit runs (default: the running
	// one, os.Executable).
	Binary string
	// ConfigPath is edgecore's configuration, as edgecore join wrote it.
	ConfigPath string
	// Systemctl is the systemctl binary ("" looks it up on PATH; "-" never
	// calls it).
	Systemctl string
	// RemoveData, for Reset, removes the whole data directory (the store,
	// the pods' volumes and logs kept there), not only its credentials.
	RemoveData bool
}

func (o *Options) fill() error {
	if o.Root == "" {
		o.Root = "/"
	}
	if !filepath.IsAbs(o.Root) {
		return fmt.Errorf("root %q: want an absolute path", o.Root)
	}
	if o.ConfigPath == "" {
		return errors.New("the edgecore configuration's path is required")
	}
	return nil
}

// UnitPath is where the unit is written.
func (o Options) UnitPath() string {
	root := o.Root
	if root == "" {
		root = "/"
	}
	return filepath.Join(root, UnitDir, UnitName)
}

// systemctl returns the systemctl binary and the arguments that point it at
// Root, or "" when it must not be called: not found, Systemctl "-", or the
// real root without systemd running (a container, a chroot).
func (o Options) systemctl() (bin string, args []string) {
	bin = o.Systemctl
	if bin == "-" {
		return "", nil
	}
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("systemctl"); err != nil {
			return "", nil
		}
	}
	if filepath.Clean(o.Root) != "/" {
		return bin, []string{"--root=" + o.Root}
	}
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		return "", nil
	}
	return bin, nil
}

// Installed says what InstallService did.
type Installed struct {
	UnitPath string
	// Systemctl lists the systemctl commands run; empty when none was
	// (Note says why).
	Systemctl []string
	Note      string
}

// InstallService writes the unit and enables it: on the real root with
// systemd running, daemon-reload and enable --now (edgecore starts); below
// another root, `systemctl --root enable` makes the [Install] symlink only.
func InstallService(ctx context.Context, o Options) (*Installed, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("the edgecore binary: %w", err)
		}
		o.Binary = exe
	}
	bin, err := filepath.Abs(o.Binary)
	if err != nil {
		return nil, err
	}
	cfg, err := filepath.Abs(o.ConfigPath)
	if err != nil {
		return nil, err
	}
	for _, p := range []string{bin, cfg} {
		if strings.ContainsFunc(p, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			// A newline would start a directive of its own in the unit.
			return nil, fmt.Errorf("path %q: control characters cannot go into a systemd unit", p)
		}
	}
	res := &Installed{UnitPath: o.UnitPath()}
	if err := os.MkdirAll(filepath.Dir(res.UnitPath), 0o755); err != nil {
		return nil, fmt.Errorf("unit dir: %w", err)
	}
	if err := pki.WriteFileSync(res.UnitPath, Unit(bin, cfg), 0o644); err != nil {
		return nil, fmt.Errorf("write unit: %w", err)
	}
	sc, args := o.systemctl()
	if sc == "" {
		res.Note = "systemd is not running here (or systemctl is missing): the unit is written, not enabled; " +
			"enable it with: systemctl enable --now " + UnitName
		return res, nil
	}
	steps := [][]string{{"enable", UnitName}}
	if len(args) == 0 { // the real root, systemd running
		steps = [][]string{{"daemon-reload"}, {"enable", "--now", UnitName}}
	}
	for _, s := range steps {
		cmd := append(append([]string{}, args...), s...)
		if out, err := exec.CommandContext(ctx, sc, cmd...).CombinedOutput(); err != nil {
			return res, fmt.Errorf("systemctl %s: %w: %s", strings.Join(cmd, " "), err, bytes.TrimSpace(out))
		}
		res.Systemctl = append(res.Systemctl, "systemctl "+strings.Join(cmd, " "))
	}
	return res, nil
}

// Plan lists what Reset removes, for the confirmation: the unit, the files
// join wrote, the credentials edgecore made, and the data directory with
// RemoveData. The configuration is kept, without the cloud and nodeName
// that join set (removed when nothing else is left).
func Plan(o Options) ([]string, error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	doc, err := readConfig(o.ConfigPath)
	if err != nil {
		return nil, err
	}
	var paths []string
	paths = append(paths, o.UnitPath())
	if cloud, ok := doc["cloud"].(map[string]any); ok {
		for _, k := range []string{"caFile", "credentialsFile"} { // as join wrote them
			if p, _ := cloud[k].(string); p != "" {
				paths = append(paths, p)
			}
		}
	}
	dataDir, _ := doc["dataDir"].(string)
	if dataDir == "" {
		dataDir = DefaultDataDir
	}
	if o.RemoveData {
		clean := filepath.Clean(dataDir)
		if !filepath.IsAbs(clean) || clean == "/" || strings.Count(clean, "/") < 2 {
			return nil, fmt.Errorf("dataDir %q: refusing to remove it (want an absolute path at least two levels deep)", dataDir)
		}
		paths = append(paths, clean)
	} else {
		paths = append(paths, filepath.Join(dataDir, "credentials"))
	}
	return paths, nil
}

// Reset undoes a join: stops, disables and removes the unit (systemctl as
// for InstallService), removes the paths of Plan, and takes cloud and
// nodeName out of the configuration. The pods keep running in containerd
// (KillMode=process); a missing file is not an error, so reset can be run
// again after a failure.
func Reset(ctx context.Context, o Options) ([]string, error) {
	paths, err := Plan(o)
	if err != nil {
		return nil, err
	}
	var removed []string
	if sc, args := o.systemctl(); sc != "" {
		if _, err := os.Stat(o.UnitPath()); err == nil {
			verb := []string{"disable", "--now", UnitName}
			if len(args) > 0 {
				verb = []string{"disable", UnitName}
			}
			cmd := append(append([]string{}, args...), verb...)
			if out, err := exec.CommandContext(ctx, sc, cmd...).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("systemctl %s: %w: %s", strings.Join(cmd, " "), err, bytes.TrimSpace(out))
			}
		}
	}
	var errs []error
	for _, p := range paths {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w (a pod's tmpfs still mounted? stop its pods first)", p, err))
			continue
		}
		removed = append(removed, p)
	}
	for _, p := range paths[1:] { // the pki directory join made, once empty
		os.Remove(filepath.Dir(p))
	}
	if sc, args := o.systemctl(); sc != "" && len(args) == 0 {
		exec.CommandContext(ctx, sc, "daemon-reload").Run()
	}
	if err := forgetCloud(o.ConfigPath); err != nil {
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

func readConfig(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]any{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	doc := map[string]any{}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if doc == nil {
		doc = map[string]any{}
	}
	return doc, nil
}

// forgetCloud removes what join set in the configuration (cloud, nodeName)
// and the file when nothing else is left in it.
func forgetCloud(path string) error {
	doc, err := readConfig(path)
	if err != nil {
		return err
	}
	if len(doc) == 0 {
		return nil
	}
	delete(doc, "cloud")
	delete(doc, "nodeName")
	if len(doc) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("config: %w", err)
		}
		return nil
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return err
	}
	return pki.WriteFileSync(path, b, 0o600)
}
