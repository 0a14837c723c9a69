// Package critest runs a private containerd for integration tests of the CRI
// runtime: its own config, socket, root, state, runc root, CNI configuration
// (bridge + host-local + portmap on its own subnet) and sandbox image, as a
// child process that dies with the test (Pdeathsig) and is stopped by its
// own pid. It builds the test images (testimages: pause and busybox) and
// imports them, since no registry is reachable; a Registry on loopback
// serves images to pull, reached through Containerd.Mirror.
//
// It needs root, containerd, ctr, runc, the CNI plugins and busybox-static;
// see .ci/run.
package critest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tether-edge/tether/testimages"
)

// Options configure Start. Zero values take defaults.
type Options struct {
	// Dir holds the config, socket, root, state and logs (default: a new
	// directory under os.TempDir, removed by Stop).
	Dir string
	// Subnet is the pod network, a /24 or larger (default: a random /24 in
	// 10.200.0.0/13).
	Subnet string
	// CNIBinDir holds the CNI plugins (default /usr/lib/cni, where Debian's
	// containernetworking-plugins puts them).
	CNIBinDir string
	// Containerd is the binary (default: containerd on PATH).
	Containerd string
	// StartTimeout bounds the start, image import included (default 60s).
	StartTimeout time.Duration
	// NoRegistry points every registry at a closed loopback port
	// (certs.d/_default/hosts.toml): a pull of an image that was not
	// imported fails at once, with no name lookup and no traffic off the
	// machine (the conformance suite names registry.k8s.io images).
	NoRegistry bool
}

// closedRegistry is where NoRegistry sends every pull: the discard port on
// loopback, where nothing listens.
const closedRegistry = "http://127.0.0.1:9"

// Containerd is a running private containerd.
type Containerd struct {
	// Endpoint is its CRI socket's path.
	Endpoint string
	// Dir holds its files; Log is its log file.
	Dir, Log string
	// PauseImage is its sandbox_image; BusyboxImage the other imported image.
	PauseImage, BusyboxImage string
	// Subnet is the pod network; Bridge the bridge's name.
	Subnet, Bridge string

	ownDir bool
	cmd    *exec.Cmd
	exited chan struct{}
	// bin and config start containerd again (Restart).
	bin, config string
	// certsDir is the registry hosts directory of NoRegistry (Mirror).
	certsDir string
}

// Start builds and imports the test images and starts containerd. Call Stop
// when done, also after a failed test.
func Start(ctx context.Context, opts Options) (*Containerd, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("critest: containerd needs root")
	}
	if opts.CNIBinDir == "" {
		opts.CNIBinDir = "/usr/lib/cni"
	}
	if opts.Containerd == "" {
		opts.Containerd = "containerd"
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	tag := fmt.Sprintf("%08x", rand.Uint32())
	if opts.Subnet == "" {
		opts.Subnet = fmt.Sprintf("10.%d.%d.0/24", 200+rand.IntN(8), rand.IntN(256))
	}
	c := &Containerd{Dir: opts.Dir, PauseImage: testimages.Pause, BusyboxImage: testimages.Busybox,
		Subnet: opts.Subnet, Bridge: "tt" + tag, exited: make(chan struct{})}
	if c.Dir == "" {
		d, err := os.MkdirTemp("", "tether-ctd-")
		if err != nil {
			return nil, fmt.Errorf("critest: %w", err)
		}
		c.Dir, c.ownDir = d, true
	}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	dirs := map[string]string{}
	for _, d := range []string{"root", "state", "runc", "cni-conf", "cni-ipam", "images", "certs.d/_default"} {
		dirs[d] = filepath.Join(c.Dir, d)
		if err := os.MkdirAll(dirs[d], 0o700); err != nil {
			return nil, fmt.Errorf("critest: %w", err)
		}
	}
	c.Endpoint = filepath.Join(c.Dir, "containerd.sock")
	c.Log = filepath.Join(c.Dir, "containerd.log")
	pauseTar, err := testimages.BuildPause(ctx, dirs["images"])
	if err != nil {
		return nil, fmt.Errorf("critest: %w", err)
	}
	busyboxTar, err := testimages.BuildBusybox(ctx, dirs["images"])
	if err != nil {
		return nil, fmt.Errorf("critest: %w", err)
	}
	cniConf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "tether-%s",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, tag, c.Bridge, dirs["cni-ipam"], c.Subnet)
	if err := os.WriteFile(filepath.Join(dirs["cni-conf"], "10-tether.conflist"), []byte(cniConf), 0o644); err != nil {
		return nil, fmt.Errorf("critest: %w", err)
	}
	registryConfig := ""
	if opts.NoRegistry {
		hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", closedRegistry, closedRegistry)
		if err := os.WriteFile(filepath.Join(dirs["certs.d/_default"], "hosts.toml"), []byte(hosts), 0o644); err != nil {
			return nil, fmt.Errorf("critest: %w", err)
		}
		c.certsDir = filepath.Join(c.Dir, "certs.d")
		registryConfig = fmt.Sprintf("\n    [plugins.\"io.containerd.grpc.v1.cri\".registry]\n      config_path = %q", c.certsDir)
	}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %q

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %q
    # Required on these VMs: runc cannot lower oom_score_adj.
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"%s
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %q
      conf_dir = %q
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = %q
          SystemdCgroup = false
  [plugins."io.containerd.internal.v1.opt"]
    path = %q
`, dirs["root"], dirs["state"], c.Endpoint, c.PauseImage, registryConfig, opts.CNIBinDir, dirs["cni-conf"], dirs["runc"],
		filepath.Join(dirs["root"], "opt"))
	configPath := filepath.Join(c.Dir, "config.toml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		return nil, fmt.Errorf("critest: %w", err)
	}
	c.bin, c.config = opts.Containerd, configPath
	if err := c.run(ctx); err != nil {
		return nil, err
	}
	for _, img := range []struct{ tar, name string }{{pauseTar, c.PauseImage}, {busyboxTar, c.BusyboxImage}} {
		if err := c.importTar(ctx, img.tar, img.name); err != nil {
			return nil, err
		}
	}
	if err := c.checkImages(ctx); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// run starts the containerd process and waits until it is ready.
func (c *Containerd) run(ctx context.Context) error {
	logf, err := os.OpenFile(c.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("critest: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(c.bin, "--config", c.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Die with the test binary; a containerd left behind would hold its
	// bolt lock.
	// Its own process group: a Ctrl-C at the terminal reaches the parent
	// only, which removes the sandboxes (and their network namespaces)
	// before it stops containerd. Pdeathsig still ends it with the parent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	// Pdeathsig fires when the thread that forked the child exits, and the
	// Go runtime ends a thread whose goroutine exits while locked to it
	// (childproc does that each time a child it started, such as
	// metrics-server, exits): so containerd is forked and waited for on a
	// goroutine locked to its thread, which lives as long as containerd.
	exited := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		if err := cmd.Start(); err != nil {
			goruntime.UnlockOSThread()
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("critest: start containerd: %w", err)
	}
	c.cmd, c.exited = cmd, exited
	return c.waitReady(ctx)
}

// Kill stops the containerd process alone, as a crash or `systemctl stop
// containerd` would: SIGKILL, no sandbox removed; the containers' shims
// keep running. Restart starts it again.
func (c *Containerd) Kill() error {
	if c.cmd == nil || c.cmd.Process == nil {
		return errors.New("critest: containerd not started")
	}
	c.cmd.Process.Kill()
	<-c.exited
	return nil
}

// Restart starts containerd again after Kill, with the same configuration
// and state, and waits until it is ready.
func (c *Containerd) Restart(ctx context.Context) error {
	select {
	case <-c.exited:
	default:
		return errors.New("critest: containerd still runs")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return c.run(ctx)
}

// ImportImage builds an image named name (a full reference, e.g.
// tether.test/extra:1) of one layer holding files and imports it.
func (c *Containerd) ImportImage(ctx context.Context, name string, files []testimages.File) error {
	return c.ImportImageConfig(ctx, name, files, testimages.Config{Cmd: []string{"/bin/true"}})
}

// ImportImageConfig is ImportImage with the image's configuration
// (entrypoint, command, environment, user).
func (c *Containerd) ImportImageConfig(ctx context.Context, name string, files []testimages.File, cfg testimages.Config) error {
	dir, err := os.MkdirTemp(c.Dir, "image-")
	if err != nil {
		return fmt.Errorf("critest: %w", err)
	}
	defer os.RemoveAll(dir)
	tar := filepath.Join(dir, "image.tar")
	f, err := os.Create(tar)
	if err != nil {
		return fmt.Errorf("critest: %w", err)
	}
	if err := testimages.WriteOCIArchive(f, name, files, cfg); err != nil {
		f.Close()
		return fmt.Errorf("critest: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("critest: %w", err)
	}
	return c.importTar(ctx, tar, name)
}

func (c *Containerd) importTar(ctx context.Context, tar, name string) error {
	base := name[:strings.LastIndex(name, ":")]
	out, err := exec.CommandContext(ctx, "ctr", "--address", c.Endpoint, "-n", "k8s.io",
		"images", "import", "--base-name", base, tar).CombinedOutput()
	if err != nil {
		return fmt.Errorf("critest: import %s: %w: %s", name, err, out)
	}
	return nil
}

// client dials the CRI socket.
func (c *Containerd) client() (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+c.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

func (c *Containerd) waitReady(ctx context.Context) error {
	conn, err := c.client()
	if err != nil {
		return fmt.Errorf("critest: %w", err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := rt.Status(cctx, &runtimeapi.StatusRequest{})
		cancel()
		if err == nil && conditionsTrue(st.GetStatus()) {
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("critest: containerd exited at start (%s): %s", c.cmd.ProcessState, tail(c.Log))
		case <-ctx.Done():
			return fmt.Errorf("critest: containerd not ready (last error %v): %s", err, tail(c.Log))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func conditionsTrue(st *runtimeapi.RuntimeStatus) bool {
	if st == nil {
		return false
	}
	for _, c := range st.Conditions {
		if !c.Status {
			return false
		}
	}
	return true
}

func (c *Containerd) checkImages(ctx context.Context) error {
	conn, err := c.client()
	if err != nil {
		return fmt.Errorf("critest: %w", err)
	}
	defer conn.Close()
	img := runtimeapi.NewImageServiceClient(conn)
	for _, name := range []string{c.PauseImage, c.BusyboxImage} {
		st, err := img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: name}})
		if err != nil {
			return fmt.Errorf("critest: image status %s: %w", name, err)
		}
		if st.Image == nil {
			return fmt.Errorf("critest: image %s not seen by CRI after import", name)
		}
	}
	return nil
}

// Stop removes every pod sandbox, stops containerd (SIGTERM, then SIGKILL
// after 10s), kills shims it left, unmounts what is left under Dir, deletes
// the bridge and removes Dir if Start made it.
func (c *Containerd) Stop() error {
	var errs []error
	if c.cmd != nil && c.cmd.Process != nil {
		select {
		case <-c.exited:
		default:
			errs = append(errs, c.removeSandboxes())
			c.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-c.exited:
			case <-time.After(10 * time.Second):
				c.cmd.Process.Kill()
				<-c.exited
			}
		}
		c.killShims()
	}
	unmountUnder(c.Dir)
	if c.Bridge != "" {
		exec.Command("ip", "link", "delete", c.Bridge).Run() // absent when no pod ran
	}
	if c.ownDir {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, fmt.Errorf("critest: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (c *Containerd) removeSandboxes() error {
	conn, err := c.client()
	if err != nil {
		return fmt.Errorf("critest: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	list, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("critest: list sandboxes: %w", err)
	}
	var errs []error
	for _, s := range list.Items {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Errorf("critest: stop sandbox %s: %w", s.Id, err))
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Errorf("critest: remove sandbox %s: %w", s.Id, err))
		}
	}
	return errors.Join(errs...)
}

// killShims kills, by pid, the containerd-shim processes started by this
// containerd (their command line names its socket) that outlived it.
func (c *Containerd) killShims() {
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == c.Endpoint {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) {
	if dir == "" {
		return
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
