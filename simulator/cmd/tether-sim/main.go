// Command tether-sim runs scenario scripts against thousands of hollow edge
// nodes in this process, one cloudcore and a Kubernetes control plane (see
// package simulator). It prints each command's output, a progress line
// every few seconds and a summary at the end; it exits 1 if a command
// failed (the script stops there) or an output differed from the one the
// script expects.
//
//	tether-sim simulator/testdata/bench/connect-1000.txt
//	tether-sim --cloudcore bin/cloudcore --dir /dev/shm/sim script.txt
//	tether-sim --kubeconfig ~/.kube/config script.txt
//
// A second tether-sim adds nodes to the first one's hub (one process may
// hold only so many sockets and stores): --join-hub, --ca-secret and
// --kubeconfig as the first one prints them at start. It enrolls its nodes
// with the CA in that Secret, as the first one does.
//
// With --netns (root), cloudcore (in this process) and the nodes run in
// network namespaces of their own, across one emulated link (package
// simulator/netns; this kernel has no netem): scripts then also take the
// link commands of package simulator/netns/netnscmd (link delay=25ms
// loss=1%, link partition, link heal, link stats).
//
//	tether-sim --netns --netns-delay 25ms simulator/testdata/cut-heal.txt
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // served only with --pprof
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/simulator"
	"github.com/tether-edge/tether/simulator/netns"
	"github.com/tether-edge/tether/simulator/netns/netnscmd"
)

func main() {
	code, err := run()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tether-sim:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func run() (int, error) {
	var (
		cfg        simulator.Config
		cloudcore  = flag.String("cloudcore", "", "cloudcore binary to run as its own process (empty: in this process)")
		logFile    = flag.String("log", "", "file for the warnings and errors of nodes and cloudcore (default: counted, not written)")
		pprofAddr  = flag.String("pprof", "", "serve net/http/pprof on this address, e.g. 127.0.0.1:6060")
		metrics    = flag.Bool("metrics", false, "list the metrics expect knows and exit")
		heartbeat  = flag.Duration("heartbeat", 0, "hub heartbeat interval (default: cloudcore's, 30s)")
		lease      = flag.Duration("lease-duration", 0, "node lease duration (default: cloudcore's, 40s)")
		kubeQPS    = flag.Float64("kube-qps", 0, "cloudcore's API server QPS (default: cloudcore's)")
		kubeBurst  = flag.Int("kube-burst", 0, "cloudcore's API server burst (default: cloudcore's)")
		statusWork = flag.Int("status-workers", 0, "cloudcore's status writers (default: cloudcore's)")
		joinHub    = flag.String("join-hub", "", "connect the nodes to this running hub (another tether-sim's) instead of starting cloudcore")
		caSecret   = flag.String("ca-secret", "", "namespace/name of cloudcore's CA Secret, which the nodes are enrolled with (default: cloudcore's, tether-system/tether-ca)")
		netnsOn    = flag.Bool("netns", false, "run cloudcore and the nodes in network namespaces across an emulated link; scripts take link commands (root)")
		netnsDelay = flag.Duration("netns-delay", 0, "with --netns: the link's delay each way")
		netnsLoss  = flag.Float64("netns-loss", 0, "with --netns: share of packets the link drops, 0 to 1")
	)
	flag.StringVar(&cfg.Name, "name", "", "run name: namespace and node name prefix (default: random)")
	flag.StringVar(&cfg.Dir, "dir", "", "directory for node stores and cloudcore (default: a new one in /dev/shm)")
	flag.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "cluster to use (default: start etcd, kube-apiserver, controller manager and scheduler)")
	flag.StringVar(&cfg.BinDir, "bin-dir", "", "directory of the Kubernetes binaries (default: bin/ of the repository)")
	flag.IntVar(&cfg.Replicas, "replicas", 0, "run this many cloudcore processes (with --cloudcore) behind a load balancer; scripts take kill-replica and start-replica")
	flag.DurationVar(&cfg.ReconnectInitial, "reconnect-initial", 0, "nodes' first reconnect delay (default: edgecore's, 1s)")
	flag.DurationVar(&cfg.ReconnectMax, "reconnect-max", 0, "nodes' longest reconnect delay (default: edgecore's, 2s, or the hub's bound)")
	flag.DurationVar(&cfg.NodeStatusInterval, "node-status-interval", 0, "nodes' status report interval when unchanged (default: edgecore's, 5m)")
	flag.DurationVar(&cfg.PodResyncInterval, "pod-resync", 0, "nodes' pod resync interval (default: edgecore's, 10s)")
	flag.Float64Var(&cfg.ConnectRate, "connect-rate", 0, "nodes started per second by connect without rate= (default 200)")
	flag.DurationVar(&cfg.ProgressInterval, "progress", 5*time.Second, "progress line interval")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: tether-sim [flags] script.txt...\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *metrics {
		fmt.Print(simulator.MetricDocs())
		return 0, nil
	}
	if flag.NArg() == 0 {
		flag.Usage()
		return 2, nil
	}
	var scripts [][]simulator.Directive
	for _, f := range flag.Args() {
		r, err := os.Open(f)
		if err != nil {
			return 2, err
		}
		d, err := simulator.ParseScript(r)
		r.Close()
		if err != nil {
			return 2, fmt.Errorf("%s: %w", f, err)
		}
		scripts = append(scripts, d)
	}
	cfg.CloudcoreBinary = *cloudcore
	if *caSecret != "" {
		ns, name, ok := strings.Cut(*caSecret, "/")
		if !ok || ns == "" || name == "" {
			return 2, fmt.Errorf("--ca-secret %q: want namespace/name", *caSecret)
		}
		cfg.Cloud.Namespace, cfg.Cloud.CASecret = ns, name
	}
	if *joinHub != "" {
		cfg.Hub = &simulator.HubConfig{URL: *joinHub, Namespace: cfg.Cloud.Namespace, CASecret: cfg.Cloud.CASecret}
	}
	cfg.Cloud.HeartbeatInterval = metav1.Duration{Duration: *heartbeat}
	cfg.Cloud.LeaseDuration = metav1.Duration{Duration: *lease}
	cfg.Cloud.KubeQPS, cfg.Cloud.KubeBurst, cfg.Cloud.StatusWorkers = float32(*kubeQPS), *kubeBurst, *statusWork
	cfg.Progress = os.Stdout
	if *logFile != "" {
		f, err := os.OpenFile(*logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return 2, err
		}
		defer f.Close()
		cfg.Log = slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelWarn})
	}
	if *pprofAddr != "" {
		go func() { fmt.Fprintln(os.Stderr, "pprof:", http.ListenAndServe(*pprofAddr, nil)) }()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := netnsFlags(*netnsOn, *netnsDelay, *netnsLoss, &cfg); err != nil {
		return 2, err
	}
	if *netnsOn {
		wan, err := netns.NewWAN(ctx, netns.Options{}, netns.Impairment{Delay: *netnsDelay, Loss: *netnsLoss})
		if err != nil {
			return 1, err
		}
		defer wan.Close()
		cfg.CloudNamespace, cfg.NodeNamespace, cfg.HubHost = wan.Cloud, wan.Edges, wan.HubHost()
		cfg.Commands = netnscmd.Commands(wan.Link)
		fmt.Printf("nodes in netns %s, hub in netns %s at %s; link delay %v each way, loss %v\n",
			wan.Edges.Name, wan.Cloud.Name, wan.HubHost(), *netnsDelay, *netnsLoss)
	}
	startCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	s, err := simulator.New(startCtx, cfg)
	cancel()
	if err != nil {
		return 1, err
	}
	code := 0
	for i, script := range scripts {
		fmt.Printf("== %s\n", flag.Arg(i))
		for _, d := range script {
			out, err := s.Exec(ctx, d)
			fmt.Printf("%s\n----\n%s\n", d, out)
			if err != nil {
				// What follows a command that could not run would tell
				// nothing: stop, as the tests do.
				fmt.Printf("ERROR %v\n\n", err)
				code = 1
				break
			}
			if strings.Contains(out, "FAIL") || d.HasExpected && d.Expected != "" && d.Expected != out {
				if d.Expected != "" && d.Expected != out {
					fmt.Printf("MISMATCH (line %d) expected:\n%s\n", d.Line, d.Expected)
				}
				code = 1
			}
			fmt.Println()
		}
		if code != 0 && ctx.Err() != nil {
			break
		}
	}
	if err := s.Close(); err != nil {
		return 1, err
	}
	return code, nil
}

// netnsFlags checks the --netns flags against the rest of cfg.
func netnsFlags(on bool, delay time.Duration, loss float64, cfg *simulator.Config) error {
	switch {
	case !on && (delay != 0 || loss != 0):
		return errors.New("--netns-delay and --netns-loss need --netns")
	case !on:
		return nil
	case delay < 0 || loss < 0 || loss > 1:
		return fmt.Errorf("--netns-delay %v and --netns-loss %v: want a delay of 0 or more and a loss from 0 to 1", delay, loss)
	case cfg.Hub != nil:
		return errors.New("--netns and --join-hub: the hub's process places the nodes' link")
	case cfg.CloudcoreBinary != "":
		return errors.New("--netns and --cloudcore: with --netns cloudcore runs in this process (its hub listens in the cloud namespace)")
	case os.Geteuid() != 0:
		return errors.New("--netns: network namespaces need root")
	}
	return nil
}
