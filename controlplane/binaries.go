package controlplane

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// modulePath is the module whose root holds bin/.
const modulePath = "github.com/tether-edge/tether"

// defaultEtcd is where Debian's etcd-server package installs etcd.
const defaultEtcd = "/usr/bin/etcd"

// binDir returns the directory holding the Kubernetes binaries: explicit if
// set, else $TETHER_BIN_DIR, else bin/ at the repository root found from
// the working directory, else the directory of the running executable (so
// bin/controlplane works from anywhere).
func binDir(explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if env := os.Getenv("TETHER_BIN_DIR"); env != "" {
		return env, nil
	}
	if wd, err := os.Getwd(); err == nil {
		if root, err := repoRoot(wd); err == nil {
			return filepath.Join(root, "bin"), nil
		}
	}
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		if _, err := os.Stat(filepath.Join(dir, string(APIServer))); err == nil {
			return dir, nil
		}
	}
	return "", errors.New("find bin dir: not inside the tether repository; set Options.BinDir or TETHER_BIN_DIR")
}

// repoRoot walks up from dir to the directory whose go.mod declares
// modulePath.
func repoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("find repo root: %w", err)
	}
	for {
		if goModDeclares(filepath.Join(dir, "go.mod"), modulePath) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find repo root: no go.mod for %s above the working directory", modulePath)
		}
		dir = parent
	}
}

func goModDeclares(path, module string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`) == module
		}
	}
	return false
}

// findBinaries returns the path of every component's binary, or an error
// that says how to get the missing ones.
func findBinaries(explicitBinDir, etcdPath string) (map[Component]string, error) {
	dir, err := binDir(explicitBinDir)
	if err != nil {
		return nil, err
	}
	bins := map[Component]string{}
	var missing []string
	for _, c := range []Component{APIServer, ControllerManager, Scheduler} {
		p := filepath.Join(dir, string(c))
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, string(c))
			continue
		}
		bins[c] = p
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("find binaries: %s not found in %s: run `make kube-binaries` (or set TETHER_BIN_DIR)",
			strings.Join(missing, ", "), dir)
	}

	if etcdPath == "" {
		if p, err := exec.LookPath("etcd"); err == nil {
			etcdPath = p
		} else {
			etcdPath = defaultEtcd
		}
	}
	if _, err := os.Stat(etcdPath); err != nil {
		return nil, fmt.Errorf("find binaries: etcd not found at %s: install Debian's etcd-server (apt-get install etcd-server)", etcdPath)
	}
	bins[Etcd] = etcdPath
	return bins, nil
}
