// Command controlplane runs a local Kubernetes control plane (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler) for the Tether
// demo until it receives SIGINT or SIGTERM, then stops every process it
// started.
//
//	controlplane --dir .run [--no-scheduler] [--no-controller-manager]
//
// With --metrics-server ADDRESS it turns the API server's aggregation
// layer on and runs metrics-server on ADDRESS (an address of this host
// that is not loopback) as the metrics.k8s.io API, for kubectl top; with
// --metrics-server-wait FILE, only once FILE exists (the demo writes
// cloudcore's CA there, which metrics-server checks edge kubelets with).
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
	"syscall"
	"time"

	"github.com/tether-edge/tether/controlplane"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		opts       controlplane.Options
		noKCM      = flag.Bool("no-controller-manager", false, "do not start kube-controller-manager")
		noSched    = flag.Bool("no-scheduler", false, "do not start kube-scheduler")
		debug      = flag.Bool("debug", false, "log at debug level")
		readyFile  = flag.String("ready-file", "", "write the kubeconfig path to this file once the control plane is ready")
		msAddr     = flag.String("metrics-server", "", "run metrics-server on this address of the host (not loopback) as the metrics.k8s.io API (kubectl top); turns the aggregation layer on")
		msWait     = flag.String("metrics-server-wait", "", "start metrics-server only once this file exists")
		msArgs     multiFlag
		msEnv      multiFlag
		stopTimout = flag.Duration("stop-timeout", 15*time.Second, "how long each component may take to exit after SIGTERM")
	)
	flag.StringVar(&opts.Dir, "dir", ".run", "directory for etcd data, certificates, kubeconfigs and logs (cleared at start)")
	flag.StringVar(&opts.BinDir, "bin-dir", "", "directory holding kube-apiserver, kube-controller-manager, kube-scheduler (default: $TETHER_BIN_DIR, else <repo>/bin)")
	flag.StringVar(&opts.EgressSocket, "egress-socket", "", "unix socket of the API server's egress proxy (cloudcore --kubelet-proxy-socket): kubectl logs/exec reach edge nodes through it")
	flag.StringVar(&opts.EtcdPath, "etcd", "", "etcd binary (default: etcd on $PATH, else /usr/bin/etcd)")
	flag.DurationVar(&opts.NodeMonitorPeriod, "node-monitor-period", 0, "kube-controller-manager --node-monitor-period (0: its default, 5s)")
	flag.DurationVar(&opts.NodeMonitorGracePeriod, "node-monitor-grace-period", 0, "kube-controller-manager --node-monitor-grace-period (0: its default, 40s)")
	flag.Var(&msArgs, "metrics-server-arg", "a flag for metrics-server (repeatable), e.g. --kubelet-certificate-authority=FILE")
	flag.Var(&msEnv, "metrics-server-env", "an environment variable for metrics-server (repeatable), e.g. HTTPS_PROXY=http://127.0.0.1:10003")
	flag.Parse()
	opts.AggregationLayer = *msAddr != ""
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", flag.Args())
	}

	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	opts.Logger = log
	opts.WithControllerManager = !*noKCM
	opts.WithScheduler = !*noSched
	opts.StopTimeout = *stopTimout

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	began := time.Now()
	cp, err := controlplane.Start(ctx, opts)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	kubeconfig, err := filepath.Abs(cp.Kubeconfig())
	if err != nil {
		kubeconfig = cp.Kubeconfig()
	}
	fmt.Printf("Control plane ready in %s at %s\n\n", time.Since(began).Round(time.Millisecond), cp.URL())
	fmt.Printf("kubeconfig: %s\n\n  export KUBECONFIG=%s\n  kubectl get ns\n\n", kubeconfig, kubeconfig)
	fmt.Printf("Logs: %s\nPress Ctrl-C to stop.\n", filepath.Dir(cp.LogPath(controlplane.APIServer)))
	if *readyFile != "" {
		if err := os.WriteFile(*readyFile, []byte(kubeconfig+"\n"), 0o644); err != nil {
			log.Error("write ready file", slog.Any("err", err))
		}
	}

	if *msAddr != "" {
		go func() {
			for *msWait != "" {
				if _, err := os.Stat(*msWait); err == nil {
					break
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(500 * time.Millisecond):
				}
			}
			ms, err := cp.StartMetricsServer(ctx, controlplane.MetricsServerOptions{Address: *msAddr, Args: msArgs, Env: msEnv})
			if err != nil {
				log.Error("metrics-server did not start", slog.Any("err", err))
				return
			}
			log.Info("metrics-server running: kubectl top works once the API server reaches it", slog.String("url", ms.URL()))
		}()
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping control plane")
	case <-cp.Done():
		runErr = fmt.Errorf("run: %w", cp.Err())
		log.Error("a component failed, stopping control plane", slog.Any("err", cp.Err()))
	}
	if err := cp.Stop(); err != nil {
		return errors.Join(runErr, err)
	}
	if runErr == nil {
		log.Info("control plane stopped")
	}
	return runErr
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string { return fmt.Sprint(*m) }

func (m *multiFlag) Set(v string) error {
	*m = append(*m, v)
	return nil
}
