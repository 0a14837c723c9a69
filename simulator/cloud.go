package simulator

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/childproc"
	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/cloudcore/hub"
)

// cloud is the cloudcore the fleet connects to: in this process, or its own
// process. Either listens on the same loopback address across restarts, so
// that nodes find it where they expect it.
type cloud interface {
	// start starts cloudcore and returns once its hub accepts sessions.
	start(ctx context.Context) error
	// stop stops it (the nodes see their sessions end).
	stop() error
	// hub is the hub when cloudcore runs in this process, else nil.
	hub() *hub.Hub
	// pid is cloudcore's process id when it runs on its own, else 0.
	pid() int
	// url is the hub's websocket URL.
	url() string
}

// cloudBase is what both kinds of cloud share.
type cloudBase struct {
	cfg cloudcore.Config // the template: Listener and ListenAddr are set here
	// dataDir holds the cloudcore binary's configuration and log.
	dataDir string
	address string
	// health is cloudcore's health listener, on loopback in ns.
	health string
	ns     Namespace      // where cloudcore runs
	roots  *x509.CertPool // the CA bundle the hub's certificate chains to
}

// newCloudBase picks the hub's address: a free port on host in ns.
func newCloudBase(cfg cloudcore.Config, dataDir, host string, ns Namespace, roots *x509.CertPool) (*cloudBase, error) {
	if host != "127.0.0.1" {
		cfg.CertIPs = append(cfg.CertIPs, host)
	}
	addr, err := fixedPort(ns, host)
	if err != nil {
		return nil, fmt.Errorf("pick the hub's port: %w", err)
	}
	cfg.ListenAddr = addr
	health, err := fixedPort(ns, "127.0.0.1")
	if err != nil {
		return nil, fmt.Errorf("pick cloudcore's health port: %w", err)
	}
	cfg.HealthAddr = health
	// Every hollow node dials from the same address, as fast as
	// ConnectRate: the hub's limits per address and on new connections
	// are for the field, not for one host that is many nodes.
	if cfg.MaxConnsPerIP == 0 {
		cfg.MaxConnsPerIP = 1 << 30
	}
	if cfg.AcceptRate == 0 {
		cfg.AcceptRate, cfg.AcceptBurst = 1e6, 1e6
	}
	if cfg.DrainTime.Duration == 0 {
		// A restart is an outage here (restart-hub); replicas drain on purpose.
		cfg.DrainTime.Duration = time.Millisecond
	}
	if cfg.AcceptRatePerIP == 0 {
		cfg.AcceptRatePerIP, cfg.AcceptBurstPerIP = 1e6, 1e6
	}
	return &cloudBase{cfg: cfg, dataDir: dataDir, address: addr, health: health, ns: ns, roots: roots}, nil
}

// fixedPort picks a free port on host in ns for a listener that must get
// it back after each restart: below the kernel's ephemeral range
// (ip_local_port_range), where no outgoing connection takes it meanwhile
// (thousands of nodes redialing a stopped hub cycle through that whole
// range within a minute). Past 100 tries, any free port.
func fixedPort(ns Namespace, host string) (string, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	for range 100 {
		if low <= 10000 {
			break
		}
		port := 10000 + rand.N(low-10000)
		if ln, err := ns.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port))); err == nil {
			addr := ln.Addr().String()
			ln.Close()
			return addr, nil
		}
	}
	ln, err := ns.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func (c *cloudBase) url() string { return "wss://" + c.address + hub.Path }

// waitReady polls cloudcore's /readyz until it answers 200 (the
// dispatcher's caches are synced and the hub listens) or ctx ends; exited, if it fires, means cloudcore
// stopped on its own.
func (c *cloudBase) waitReady(ctx context.Context, exited <-chan struct{}) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	// Dialled from cloudcore's namespace, on its loopback: the health
	// listener is not on the tunnel's port.
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: c.ns.DialContext, DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	for {
		resp, err := client.Get("http://" + c.health + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("readyz: %s", resp.Status)
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("cloudcore not ready: %w (last error: %v)", ctx.Err(), lastErr)
		case <-exited:
			return fmt.Errorf("cloudcore exited while starting (last error: %v)", lastErr)
		case <-tick.C:
		}
	}
}

// inProcessCloud runs cloudcore in this process.
type inProcessCloud struct {
	*cloudBase
	cc     *cloudcore.CloudCore
	cancel context.CancelFunc
	done   chan error
}

func (c *inProcessCloud) start(ctx context.Context) error {
	if c.cc != nil {
		return errors.New("cloudcore runs already")
	}
	var ln net.Listener
	var err error
	for range 100 { // the old socket may linger a moment
		if ln, err = c.ns.Listen("tcp", c.address); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("hub listen: %w", err)
	}
	cfg := c.cfg
	cfg.Listener = ln
	// The health listener too is in cloudcore's namespace, where
	// waitReady looks for it.
	var hln net.Listener
	for range 100 { // as the hub's, after a restart
		if hln, err = c.ns.Listen("tcp", c.health); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		ln.Close()
		return fmt.Errorf("health listen: %w", err)
	}
	cfg.HealthListener = hln
	cc, err := cloudcore.New(cfg)
	if err != nil {
		ln.Close()
		hln.Close()
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done, exited := make(chan error, 1), make(chan struct{})
	go func() {
		err := cc.Run(runCtx)
		ln.Close()
		hln.Close()
		done <- err
		close(exited)
	}()
	c.cc, c.cancel, c.done = cc, cancel, done
	if err := c.waitReady(ctx, exited); err != nil {
		c.stop()
		return err
	}
	return nil
}

func (c *inProcessCloud) stop() error {
	if c.cc == nil {
		return nil
	}
	c.cancel()
	err := <-c.done
	c.cc = nil
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("cloudcore: %w", err)
	}
	return nil
}

func (c *inProcessCloud) hub() *hub.Hub {
	if c.cc == nil {
		return nil
	}
	return c.cc.Hub
}

func (c *inProcessCloud) pid() int { return 0 }

// processCloud runs the cloudcore binary as a child process, so that its
// memory and CPU are its own and can be read from /proc.
type processCloud struct {
	*cloudBase
	binary string
	proc   *childproc.Process // nil while stopped
}

func (c *processCloud) start(ctx context.Context) error {
	if c.proc != nil {
		return errors.New("cloudcore runs already")
	}
	cfg := c.cfg
	cfg.Logger = nil
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("cloudcore config: %w", err)
	}
	cfgFile := filepath.Join(c.dataDir, "cloudcore.yaml")
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		return err
	}
	// Not bound to a context: stop ends it, SIGTERM first. In its own
	// process group (childproc), a Ctrl-C meant for the simulator reaches
	// cloudcore through stop, after the nodes.
	cmd := c.ns.Command(context.Background(), c.binary, "--config", cfgFile, "--log-level", "warn")
	proc, err := childproc.Start(cmd, childproc.Options{Log: filepath.Join(c.dataDir, "cloudcore.log")})
	if err != nil {
		return err
	}
	c.proc = proc
	if err := c.waitReady(ctx, proc.Done()); err != nil {
		c.stop()
		return fmt.Errorf("%w; see %s", err, proc.Log())
	}
	return nil
}

func (c *processCloud) stop() error {
	if c.proc == nil {
		return nil
	}
	c.proc.Stop(20 * time.Second)
	err := c.proc.Err()
	c.proc = nil
	if err != nil && !childproc.Signalled(err) { // killed by our signal is fine
		return fmt.Errorf("cloudcore: %w", err)
	}
	return nil
}

func (c *processCloud) hub() *hub.Hub { return nil }

func (c *processCloud) pid() int {
	if c.proc == nil || c.proc.Exited() {
		return 0
	}
	return c.proc.Pid()
}

// joinedCloud is a hub another Sim runs: the nodes connect to it, nothing
// more.
type joinedCloud struct {
	hubURL string
}

var errJoined = errors.New("the hub belongs to another process (Config.Hub)")

func (c *joinedCloud) start(context.Context) error { return errJoined }
func (c *joinedCloud) stop() error                 { return errJoined }
func (c *joinedCloud) hub() *hub.Hub               { return nil }
func (c *joinedCloud) pid() int                    { return 0 }
func (c *joinedCloud) url() string                 { return c.hubURL }
