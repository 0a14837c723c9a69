// Command tether-bench runs Tether's benchmark suite (issue 5) and writes
// report.json, report.txt and latency.png to its output directory. It
// needs the control plane binaries, cloudcore and edgecore in --bin (make
// bench builds them).
//
//	tether-bench --nodes 100,1000,5000,10000 --out bench/out
//
// One control plane and one simulator serve every node count: the fleet
// grows from one count to the next. Past what one process holds (its file
// limit: two files a node, or --nodes-per-process) the extra nodes run in
// simulator processes of their own joined to the same cloudcore
// (joined.go). At each count the suite measures
// cloudcore (its own process) idle and under pod churn, pod dispatch and
// create-to-Running latencies, idle bandwidth, and a reconnect storm. Then
// it measures the real edgecore binary's idle RSS and, with --devices
// devices on another edgecore binary, the lag from a device's twin report
// on MQTT to the Device's status in the API server (devices.go); it takes
// the twin figures from the Go benchmarks' output (--gobench), and, with
// --profile-nodes, profiles a cloudcore running inside this process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tether-edge/tether/bench"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == joinedCommand {
		if err := runJoined(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "tether-bench:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tether-bench:", err)
		os.Exit(1)
	}
}

// Config is the suite's configuration, from flags.
type Config struct {
	// Nodes are the node counts, ascending.
	Nodes []int
	// Out is the output directory.
	Out string
	// BinDir holds cloudcore, edgecore and the Kubernetes binaries.
	BinDir string
	// Pods is how many pods each churn creates, at PodRate a second.
	Pods    int
	PodRate float64
	// ConnectRate is how many nodes start a second.
	ConnectRate float64
	// Settle is the pause after a node count's nodes connected, before the
	// idle measurements.
	Settle time.Duration
	// Idle is the window of the fleet's idle measurements. Edges report
	// their node status every 5 minutes when it is unchanged, so a window
	// shorter than that holds heartbeats (every 30s) only.
	Idle time.Duration
	// EdgeIdle is the window of the edgecore binary's idle traffic (with
	// --netns), which judges the idle uplink target: long enough to hold a
	// node status report (default 5m15s).
	EdgeIdle time.Duration
	// StormDown is how long the hub stays down in the storm;
	// StormTimeout how long the nodes get to resync.
	StormDown, StormTimeout time.Duration
	// ConnectTimeout bounds the wait for a scale's nodes to connect.
	ConnectTimeout time.Duration
	// GoBench is a file of `go test -bench` output to include (empty: none).
	GoBench string
	// Edgecore measures the edgecore binary's idle RSS.
	Edgecore bool
	// CloudQPS and CloudBurst, if > 0, replace cloudcore's kubeQPS and
	// kubeBurst (its API write rate limit).
	CloudQPS   float64
	CloudBurst int
	// Netns runs the hollow nodes, and the edgecore binary of the idle
	// measurement, in network namespaces of their own, behind emulated
	// links with NetnsDelay each way and NetnsLoss of the packets lost
	// (root).
	Netns      bool
	NetnsDelay time.Duration
	NetnsLoss  float64
	// ProfileNodes, if > 0, profiles an in-process cloudcore with this many
	// nodes (cpu.pprof, heap.pprof in Out).
	ProfileNodes int
	// NodesPerProcess is the most hollow nodes one simulator process holds
	// (0: as many as its file limit allows, maxNodes); the nodes past it
	// run in joined simulator processes (joined.go).
	NodesPerProcess int
	// Devices is how many devices the device lag step puts on one edgecore
	// binary (0: the step does not run).
	Devices int
}

func (c *Config) validate() error {
	if len(c.Nodes) == 0 {
		return errors.New("--nodes: at least one node count")
	}
	for i, n := range c.Nodes {
		if n <= 0 {
			return fmt.Errorf("--nodes: %d: want > 0", n)
		}
		if i > 0 && n <= c.Nodes[i-1] {
			return fmt.Errorf("--nodes: %v: want strictly ascending counts", c.Nodes)
		}
	}
	if c.Out == "" {
		return errors.New("--out: required")
	}
	for _, b := range []string{"cloudcore", "edgecore", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			return fmt.Errorf("--bin: %w (make build kube-binaries)", err)
		}
	}
	if c.Pods < 0 || c.PodRate <= 0 || c.ConnectRate <= 0 {
		return fmt.Errorf("--pods %d, --pod-rate %g, --connect-rate %g: want pods >= 0 and rates > 0", c.Pods, c.PodRate, c.ConnectRate)
	}
	if c.Idle <= 0 || c.EdgeIdle <= 0 || c.Settle < 0 || c.StormDown < 0 || c.StormTimeout <= 0 || c.ConnectTimeout <= 0 {
		return errors.New("--idle, --edge-idle, --storm-timeout and --connect-timeout must be positive, --settle and --storm-down not negative")
	}
	if c.CloudQPS < 0 || c.CloudBurst < 0 {
		return fmt.Errorf("--cloud-qps %g, --cloud-burst %d: must not be negative", c.CloudQPS, c.CloudBurst)
	}
	if c.NetnsDelay < 0 || c.NetnsLoss < 0 || c.NetnsLoss > 1 {
		return fmt.Errorf("--netns-delay %s, --netns-loss %g: want delay >= 0 and loss in [0, 1]", c.NetnsDelay, c.NetnsLoss)
	}
	if (c.NetnsDelay > 0 || c.NetnsLoss > 0) && !c.Netns {
		return errors.New("--netns-delay and --netns-loss need --netns")
	}
	if c.Netns && os.Geteuid() != 0 {
		return errors.New("--netns: network namespaces need root")
	}
	if c.Devices < 0 {
		return fmt.Errorf("--devices %d: want >= 0", c.Devices)
	}
	if max := maxNodes(); c.NodesPerProcess < 0 || c.NodesPerProcess > max {
		return fmt.Errorf("--nodes-per-process %d: want 0 to %d (this process may open %d files, 2 a node)",
			c.NodesPerProcess, max, fileLimit())
	} else if c.NodesPerProcess == 0 {
		if max == 0 {
			return fmt.Errorf("--nodes-per-process: this process may open %d files: too few for a hundred nodes", fileLimit())
		}
		c.NodesPerProcess = max
	}
	if c.ProfileNodes < 0 {
		return fmt.Errorf("--profile-nodes %d: want >= 0", c.ProfileNodes)
	}
	return nil
}

// fileLimit is the most files this process may open: the hard
// RLIMIT_NOFILE, which the simulator raises its soft limit to.
func fileLimit() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 1 << 20
	}
	return l.Max
}

// maxNodes is the largest hundred of hollow nodes one simulator process's
// file limit allows: the simulator counts two files a node and 64 more.
func maxNodes() int {
	l := fileLimit()
	if l > 1<<24 {
		return 1 << 24
	}
	return int((l-64)/2) / 100 * 100
}

// parseCounts parses "100,1000,5k,10000".
func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		mul := 1
		if k, ok := strings.CutSuffix(f, "k"); ok {
			f, mul = k, 1000
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("node count %q: %w", f, err)
		}
		out = append(out, n*mul)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func run() error {
	var (
		cfg   Config
		nodes = flag.String("nodes", "100,1000,5000,10000", "node counts, comma-separated (e.g. 100,1k,5k)")
	)
	flag.StringVar(&cfg.Out, "out", "bench/out", "output directory")
	flag.StringVar(&cfg.BinDir, "bin", "bin", "directory of cloudcore, edgecore and the Kubernetes binaries")
	flag.IntVar(&cfg.Pods, "pods", 500, "pods created (then deleted) per node count")
	flag.Float64Var(&cfg.PodRate, "pod-rate", 50, "pods created a second during churn")
	flag.Float64Var(&cfg.ConnectRate, "connect-rate", 200, "nodes started a second")
	flag.DurationVar(&cfg.Settle, "settle", 30*time.Second, "pause after the nodes connected, before the idle window")
	flag.DurationVar(&cfg.Idle, "idle", 60*time.Second, "the fleet's idle window (bandwidth, cloudcore idle); under 5m it holds heartbeats only")
	flag.DurationVar(&cfg.EdgeIdle, "edge-idle", 5*time.Minute+15*time.Second, "the edgecore binary's idle traffic window (with --netns); 5m holds one node status")
	flag.DurationVar(&cfg.StormDown, "storm-down", 2*time.Second, "how long the hub stays down in the storm")
	flag.DurationVar(&cfg.StormTimeout, "storm-timeout", 5*time.Minute, "how long the nodes get to resync after the storm")
	flag.DurationVar(&cfg.ConnectTimeout, "connect-timeout", 10*time.Minute, "how long a node count's nodes get to connect")
	flag.StringVar(&cfg.GoBench, "gobench", "", "file of `go test -bench` output to include in the report")
	flag.BoolVar(&cfg.Edgecore, "edgecore", true, "measure the edgecore binary's idle RSS")
	flag.Float64Var(&cfg.CloudQPS, "cloud-qps", 0, "cloudcore's kubeQPS (0: its default)")
	flag.IntVar(&cfg.CloudBurst, "cloud-burst", 0, "cloudcore's kubeBurst (0: its default)")
	flag.BoolVar(&cfg.Netns, "netns", false, "run the hollow nodes and the edgecore binary behind emulated links in network namespaces and count their IP traffic (root)")
	flag.DurationVar(&cfg.NetnsDelay, "netns-delay", 0, "the emulated link's delay each way (with --netns)")
	flag.Float64Var(&cfg.NetnsLoss, "netns-loss", 0, "share of packets the emulated link drops, 0 to 1 (with --netns)")
	flag.IntVar(&cfg.ProfileNodes, "profile-nodes", 0, "profile an in-process cloudcore with this many nodes (0: no)")
	flag.IntVar(&cfg.NodesPerProcess, "nodes-per-process", 0, "most hollow nodes in one simulator process; more run in joined ones (0: as the file limit allows)")
	flag.IntVar(&cfg.Devices, "devices", 1000, "devices on one edgecore binary for the device to API server lag (0: skip it)")
	flag.Parse()
	var err error
	if cfg.Nodes, err = parseCounts(*nodes); err != nil {
		return fmt.Errorf("--nodes: %w", err)
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	rep := &bench.Report{
		Schema:  bench.SchemaVersion,
		Started: time.Now().UTC(),
		Machine: bench.ThisMachine(ctx, ""),
		Args:    os.Args[1:],
	}
	runErr := suite(ctx, cfg, rep, log)
	if runErr != nil {
		rep.Errors = append(rep.Errors, runErr.Error())
	}
	rep.Finished = time.Now().UTC()
	bench.Evaluate(rep)
	return errors.Join(runErr, write(cfg.Out, rep, log))
}

// write writes report.json, report.txt and latency.png, and the text to
// stdout.
func write(out string, rep *bench.Report, log *slog.Logger) error {
	var errs []error
	errs = append(errs, rep.Write(filepath.Join(out, "report.json")))
	var b strings.Builder
	if err := bench.WriteText(&b, rep); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, os.WriteFile(filepath.Join(out, "report.txt"), []byte(b.String()), 0o644))
	fmt.Print(b.String())
	if err := bench.PlotLatencyFile(filepath.Join(out, "latency.png"), rep, 900, 560); err != nil && !errors.Is(err, bench.ErrNothingToPlot) {
		errs = append(errs, err)
	}
	log.Info("report written", slog.String("dir", out))
	return errors.Join(errs...)
}
