package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/bench"
	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/controlplane"
	"github.com/tether-edge/tether/simulator"
	"github.com/tether-edge/tether/simulator/netns"
)

// suite runs everything and fills rep. A step that fails is recorded as
// unavailable with its error; suite returns an error only when the run
// could not go on (the control plane did not start, ctx ended).
func suite(ctx context.Context, cfg Config, rep *bench.Report, log *slog.Logger) error {
	tmp, err := os.MkdirTemp(tmpBase(), "tether-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	binDir, err := filepath.Abs(cfg.BinDir)
	if err != nil {
		return err
	}

	log.Info("starting the control plane", slog.String("dir", tmp))
	cp, err := controlplane.Start(ctx, controlplane.Options{
		Dir:                   filepath.Join(tmp, "controlplane"),
		BinDir:                binDir,
		WithControllerManager: true,
		WithScheduler:         true,
		Logger:                slog.New(slog.NewTextHandler(io.Discard, nil)),
		// Room for thousands of nodes' leases and statuses (as the
		// simulator does for its own control plane).
		APIServerArgs: []string{"--max-requests-inflight=2000", "--max-mutating-requests-inflight=1000"},
	})
	if err != nil {
		return fmt.Errorf("control plane: %w", err)
	}
	defer cp.Stop()

	// With --netns, cloudcore and the edges run in network namespaces of
	// their own, joined by an emulated link.
	var wan *netns.WAN
	if cfg.Netns {
		if wan, err = newWAN(ctx, cfg, cp, log); err != nil {
			return err
		}
		defer wan.Close()
		rep.Link = &bench.Link{DelayMs: float64(cfg.NetnsDelay) / float64(time.Millisecond), LossPercent: 100 * cfg.NetnsLoss}
	}

	if err := scales(ctx, cfg, rep, cp, wan, binDir, filepath.Join(tmp, "sim"), log); err != nil {
		if ctx.Err() != nil {
			return err
		}
		// The other measurements do not need the fleet.
		log.Error("node counts", slog.Any("err", err))
		rep.Errors = append(rep.Errors, err.Error())
	}
	if cfg.Edgecore {
		e, err := edgecoreIdle(ctx, cfg, cp, wan, binDir, filepath.Join(tmp, "edgecore"), log)
		if err != nil {
			log.Error("edgecore idle RSS", slog.Any("err", err))
			rep.SetUnavailable("edgecoreIdle", err)
		} else {
			rep.EdgecoreIdle = e
		}
	} else {
		rep.SetUnavailable("edgecoreIdle", errors.New("not asked for (--edgecore=false)"))
	}
	if cfg.Devices > 0 {
		d, err := deviceLag(ctx, cfg, cp, binDir, filepath.Join(tmp, "devices"), log)
		if err != nil {
			log.Error("device lag", slog.Any("err", err))
			rep.SetUnavailable("deviceLag", err)
		}
		rep.DeviceLag = d
	} else {
		rep.SetUnavailable("deviceLag", errors.New("not asked for (--devices 0)"))
	}
	goBenchmarks(cfg, rep)
	if cfg.ProfileNodes > 0 {
		if err := profile(ctx, cfg, cp, log); err != nil {
			log.Error("profile", slog.Any("err", err))
			rep.Errors = append(rep.Errors, "profile: "+err.Error())
		}
	}
	return ctx.Err()
}

// newWAN makes the namespaces of --netns: cloudcore's, which reaches the
// API server on the host's loopback, and the edges', joined by a link with
// --netns-delay and --netns-loss.
func newWAN(ctx context.Context, cfg Config, cp *controlplane.ControlPlane, log *slog.Logger) (*netns.WAN, error) {
	api, err := url.Parse(cp.URL())
	if err != nil {
		return nil, fmt.Errorf("API server URL: %w", err)
	}
	wan, err := netns.NewWAN(ctx, netns.Options{Logger: log}, netns.Impairment{Delay: cfg.NetnsDelay, Loss: cfg.NetnsLoss})
	if err != nil {
		return nil, err
	}
	if err := wan.ForwardHost(api.Host); err != nil {
		wan.Close()
		return nil, err
	}
	return wan, nil
}

// cloudConfig is cloudcore's configuration for the simulator.
func cloudConfig(cfg Config) cloudcore.Config {
	return cloudcore.Config{KubeQPS: float32(cfg.CloudQPS), KubeBurst: cfg.CloudBurst}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o644)
}

// tmpBase is /dev/shm where there is one (the nodes' stores on tmpfs).
func tmpBase() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

// scales grows one simulator's fleet (its stores in simDir) through
// cfg.Nodes and measures each count.
func scales(ctx context.Context, cfg Config, rep *bench.Report, cp *controlplane.ControlPlane, wan *netns.WAN, binDir, simDir string, log *slog.Logger) error {
	// The hollow nodes' warnings and cloudcore's log go to the output
	// directory.
	warnings, err := os.Create(filepath.Join(cfg.Out, "sim-warnings.log"))
	if err != nil {
		return err
	}
	defer warnings.Close()
	simCfg := simulator.Config{
		Name:             "bench",
		Dir:              simDir,
		Kubeconfig:       cp.Kubeconfig(),
		BinDir:           binDir,
		CloudcoreBinary:  filepath.Join(binDir, "cloudcore"),
		Cloud:            cloudConfig(cfg),
		ConnectRate:      cfg.ConnectRate,
		Progress:         os.Stderr,
		ProgressInterval: 10 * time.Second,
		Log:              slog.NewTextHandler(warnings, &slog.HandlerOptions{Level: slog.LevelWarn}),
	}
	if wan != nil {
		// cloudcore in its namespace, the nodes dialling from theirs,
		// across the link.
		simCfg.CloudNamespace, simCfg.NodeNamespace, simCfg.HubHost = wan.Cloud, wan.Edges, wan.HubHost()
	}
	sim, err := simulator.New(ctx, simCfg)
	if err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	fl := &fleet{sim: sim, parts: []part{localPart{sim}}, perProcess: cfg.NodesPerProcess,
		addPart: func(ctx context.Context, i int) (part, error) {
			dir := joinedDir(simDir, i)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, err
			}
			jc := joinedConfig{Name: fmt.Sprintf("bench-j%d", i), Dir: dir, Kubeconfig: cp.Kubeconfig(), Hub: sim.Hub(),
				Warnings: filepath.Join(cfg.Out, fmt.Sprintf("sim-warnings-j%d.log", i))}
			if wan != nil {
				jc.Netns = wan.Edges.Name
			}
			log.Info("starting a joined simulator process", slog.Int("process", i), slog.String("log", filepath.Join(cfg.Out, fmt.Sprintf("joined-%d.log", i))))
			return startJoined(ctx, exe, jc, filepath.Join(cfg.Out, fmt.Sprintf("joined-%d.log", i)))
		}}
	defer func() {
		if err := fl.close(); err != nil {
			log.Error("joined simulator processes", slog.Any("err", err))
		}
		if err := sim.Close(); err != nil {
			log.Error("simulator close", slog.Any("err", err))
		}
		if err := copyFile(filepath.Join(simDir, "cloudcore", "cloudcore.log"), filepath.Join(cfg.Out, "cloudcore.log")); err != nil {
			log.Warn("cloudcore log", slog.Any("err", err))
		}
	}()
	for _, n := range cfg.Nodes {
		log.Info("node count", slog.Int("nodes", n), slog.Int("processes", processes(n, fl.perProcess)))
		s, err := scale(ctx, cfg, fl, wan, n, log)
		if aerr := rep.AddScale(s); aerr != nil {
			return aerr
		}
		if err != nil {
			// The fleet could not reach n: larger counts would not either.
			rep.Errors = append(rep.Errors, fmt.Sprintf("%d nodes: %v", n, err))
			log.Error("node count failed; stopping", slog.Int("nodes", n), slog.Any("err", err))
			break
		}
	}
	return ctx.Err()
}

// scale brings the fleet to n nodes and measures. A measurement that fails
// is recorded in the scale; the error is for a fleet that did not connect.
func scale(ctx context.Context, cfg Config, fl *fleet, wan *netns.WAN, n int, log *slog.Logger) (bench.Scale, error) {
	s := bench.Scale{Nodes: n, Processes: processes(n, fl.perProcess)}
	sim := fl.sim
	// Enrolled first, apart: the connect time is the nodes' starting and
	// connecting only.
	e, err := fl.enroll(ctx, n)
	s.Enrolled, s.EnrollSeconds = e.Nodes, e.Took.Seconds()
	if err != nil {
		return s, fmt.Errorf("enroll: %w", err)
	}
	log.Info("enrolled", slog.Int("nodes", e.Nodes), slog.Duration("took", e.Took.Round(time.Millisecond)),
		slog.Float64("perSecond", float64(e.Nodes)/max(e.Took.Seconds(), 1e-9)))
	if err := fl.grow(ctx, n, cfg.ConnectRate); err != nil {
		return s, fmt.Errorf("connect: %w", err)
	}
	r, err := fl.waitConnected(ctx, cfg.ConnectTimeout)
	s.Connected, s.ConnectSeconds = r.Connected, r.ConnectTime.Seconds()
	if err != nil {
		for _, f := range []string{"cloudcoreIdle", "cloudcoreChurn", "dispatch", "createToRunning", "storm", "idleBandwidth"} {
			s.SetUnavailable(f, err)
		}
		return s, err
	}
	log.Info("connected", slog.Int("nodes", r.Connected), slog.Duration("took", r.ConnectTime.Round(time.Millisecond)))
	// Let the new nodes' first statuses and Leases reach the API server
	// before anything is called idle.
	if err := sleep(ctx, cfg.Settle); err != nil {
		return s, err
	}

	// Idle: cloudcore's use and the links' traffic over the same window.
	var (
		bw       simulator.Bandwidth
		l0, l1   netns.LinkStats
		tl0, tl1 time.Time
	)
	u, err := sampleCloud(ctx, sim, func(ctx context.Context) error {
		var err error
		if wan != nil {
			tl0, l0 = time.Now(), wan.Link.Stats()
		}
		bw, err = fl.idle(ctx, cfg.Idle)
		if wan != nil {
			tl1, l1 = time.Now(), wan.Link.Stats()
		}
		return err
	})
	if wan != nil && err == nil && bw.Nodes > 0 {
		// The link carries every node's traffic: per node is its bytes
		// over the nodes and the window.
		secs := tl1.Sub(tl0).Seconds()
		per := secs * float64(bw.Nodes) / 8
		// The link's B end is the fleet's: B to A is up.
		s.IdleLink = &bench.Bandwidth{Seconds: secs, Layer: "ip",
			UplinkBitsPerSecond:   float64(l1.BToA.Bytes-l0.BToA.Bytes) / per,
			DownlinkBitsPerSecond: float64(l1.AToB.Bytes-l0.AToB.Bytes) / per}
	}
	if err != nil {
		s.SetUnavailable("cloudcoreIdle", err)
		s.SetUnavailable("idleBandwidth", err)
	} else {
		s.CloudcoreIdle = bench.PerNode(u, n)
		s.IdleBandwidth = &bench.Bandwidth{Seconds: bw.Window.Seconds(), UplinkBitsPerSecond: bw.UpBitsPerSecond,
			DownlinkBitsPerSecond: bw.DownBitsPerSecond, Layer: "tls"}
		log.Info("idle", slog.String("bandwidth", bw.String()), slog.Float64("cloudcoreCores", u.CPUCores),
			slog.Int64("cloudcoreRSS", u.RSSPeakBytes))
	}
	if ctx.Err() != nil {
		return s, ctx.Err()
	}

	// Churn: create pods at a rate, wait for them all to be committed at
	// the edge and Running, delete them, wait for them to go.
	if cfg.Pods > 0 {
		sim.ResetLatencies()
		start := time.Now()
		var (
			churnErr error
			downPer  float64
		)
		u, err := sampleCloud(ctx, sim, func(ctx context.Context) error {
			downPer, churnErr = churn(ctx, cfg, sim)
			return nil
		})
		d, early := sim.DispatchSamples()
		s.Churn = &bench.Churn{Pods: cfg.Pods, PerSecond: cfg.PodRate, Seconds: time.Since(start).Seconds(), DispatchEarly: early,
			DownBytesPerPod: downPer}
		if churnErr != nil {
			s.Churn.Error = churnErr.Error()
		}
		// cloudcore's use during the churn is worth having even when the
		// churn did not finish.
		if err != nil {
			s.SetUnavailable("cloudcoreChurn", err)
		} else {
			s.CloudcoreChurn = bench.PerNode(u, n)
		}
		if s.Dispatch = fromSamples(d); s.Dispatch == nil {
			s.SetUnavailable("dispatch", orNoSamples(churnErr))
		}
		if s.CreateToRunning = fromSamples(sim.CreateToRunningSamples()); s.CreateToRunning == nil {
			s.SetUnavailable("createToRunning", orNoSamples(churnErr))
		}
		err = churnErr
		log.Info("churn", slog.String("dispatch", sim.Dispatch().String()),
			slog.String("createToRunning", sim.CreateToRunning().String()), slog.Any("err", err))
	} else {
		for _, f := range []string{"cloudcoreChurn", "dispatch", "createToRunning"} {
			s.SetUnavailable(f, errors.New("--pods 0"))
		}
	}
	if ctx.Err() != nil {
		return s, ctx.Err()
	}

	// Storm: restart the hub; every node reconnects and resyncs.
	var ls0 netns.LinkStats
	if wan != nil {
		ls0 = wan.Link.Stats()
	}
	if err := fl.markStorm(ctx); err != nil {
		s.SetUnavailable("storm", err)
		return s, nil
	}
	if err := sim.RestartHub(ctx, cfg.StormDown); err != nil {
		s.SetUnavailable("storm", err)
		return s, nil
	}
	st, err := fl.waitResynced(ctx, cfg.StormTimeout)
	s.Storm = &bench.Storm{Nodes: st.Nodes, Resynced: st.Resynced, Seconds: st.Took.Seconds(),
		BytesSent: st.WireDown, BytesReceived: st.WireUp}
	if wan != nil {
		ls1 := wan.Link.Stats()
		s.Storm.LinkBytesSent, s.Storm.LinkBytesReceived = ls1.AToB.Bytes-ls0.AToB.Bytes, ls1.BToA.Bytes-ls0.BToA.Bytes
	}
	log.Info("storm", slog.String("storm", st.String()), slog.Any("err", err))
	if err != nil && st.Resynced < st.Nodes {
		// The nodes that had not resynced may still be connecting: give
		// them the rest of the connect timeout before the next count.
		fl.waitConnected(ctx, cfg.ConnectTimeout)
	}
	return s, nil
}

func orNoSamples(err error) error {
	if err != nil {
		return err
	}
	return errors.New("no samples")
}

// sampleCloud follows the cloudcore process while work runs.
func sampleCloud(ctx context.Context, sim *simulator.Sim, work func(context.Context) error) (bench.Usage, error) {
	pid := sim.CloudPid()
	if pid == 0 {
		return bench.Usage{}, errors.New("cloudcore does not run as its own process")
	}
	return bench.Sampler{PID: pid, Every: time.Second}.Measure(ctx, work)
}

func fromSamples(d []time.Duration) *bench.Latency { return bench.Summarize(d) }

// churn creates cfg.Pods pods over every node, waits until each was
// committed at its edge and seen Running, then deletes them and waits for
// them to be gone. downPerPod is the nodes' downstream link bytes from the
// first create until the statuses settled (churnSettle after every pod was
// Running), over the pods created.
func churn(ctx context.Context, cfg Config, sim *simulator.Sim) (downPerPod float64, err error) {
	_, down0 := sim.WireTotals()
	created, err := sim.CreatePods(ctx, cfg.Pods, cfg.PodRate, nil)
	if err != nil {
		return 0, fmt.Errorf("create pods: %d of %d: %w", created, cfg.Pods, err)
	}
	wait := 2*time.Minute + time.Duration(float64(cfg.Pods)/cfg.PodRate*float64(time.Second))
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var dispatched, running int
	err = poll(wctx, 250*time.Millisecond, func() (bool, error) {
		d, _ := sim.DispatchSamples()
		dispatched, running = len(d), len(sim.CreateToRunningSamples())
		return dispatched >= created && running >= created, nil
	})
	if err != nil {
		return 0, fmt.Errorf("pods: %d created, %d committed at the edge, %d Running: %w", created, dispatched, running, err)
	}
	if err := sleep(ctx, churnSettle); err != nil {
		return 0, err
	}
	if _, down1 := sim.WireTotals(); created > 0 {
		downPerPod = float64(down1-down0) / float64(created)
	}
	if _, err := sim.DeletePods(ctx, -1, cfg.PodRate, nil); err != nil {
		return downPerPod, fmt.Errorf("delete pods: %w", err)
	}
	var left int
	err = poll(wctx, time.Second, func() (bool, error) {
		l, err := sim.Client().CoreV1().Pods(sim.Name()).List(wctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		left = len(l.Items)
		return left == 0, nil
	})
	if err != nil {
		return downPerPod, fmt.Errorf("delete pods: %d left: %w", left, err)
	}
	return downPerPod, nil
}

// churnSettle is how long churn waits after every pod was Running before it
// counts the bytes sent down: the last status writes reach the API server
// and anything they cause to be sent arrives.
const churnSettle = 3 * time.Second

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// poll calls cond every interval until it is true, fails or ctx ends.
func poll(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

// profile runs cloudcore inside this process with cfg.ProfileNodes nodes
// and writes a CPU profile of connect, churn and a storm (cpu.pprof) and a
// heap profile at the end (heap.pprof). The profiles hold the hollow nodes
// too: read them with `go tool pprof -top -focus cloudcore`.
func profile(ctx context.Context, cfg Config, cp *controlplane.ControlPlane, log *slog.Logger) error {
	log.Info("profile run", slog.Int("nodes", cfg.ProfileNodes))
	sim, err := simulator.New(ctx, simulator.Config{
		Name:             "bench-profile",
		Kubeconfig:       cp.Kubeconfig(),
		Cloud:            cloudConfig(cfg),
		ConnectRate:      cfg.ConnectRate,
		Progress:         os.Stderr,
		ProgressInterval: 10 * time.Second,
	})
	if err != nil {
		return err
	}
	defer sim.Close()
	f, err := os.Create(filepath.Join(cfg.Out, "cpu.pprof"))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	stopped := false
	stopCPU := func() {
		if !stopped {
			pprof.StopCPUProfile()
			stopped = true
		}
	}
	defer stopCPU()
	idx := sim.AddNodes(cfg.ProfileNodes)
	if _, err := sim.Connect(ctx, idx, cfg.ConnectRate); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	_, err = sim.WaitConnected(cctx)
	cancel()
	if err != nil {
		return err
	}
	if cfg.Pods > 0 {
		if _, err := churn(ctx, cfg, sim); err != nil {
			return err
		}
	}
	if err := sim.RestartHub(ctx, cfg.StormDown); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, cfg.StormTimeout)
	_, err = sim.WaitResynced(sctx)
	cancel()
	stopCPU()
	runtime.GC()
	h, herr := os.Create(filepath.Join(cfg.Out, "heap.pprof"))
	if herr == nil {
		herr = errors.Join(pprof.Lookup("heap").WriteTo(h, 0), h.Close())
	}
	return errors.Join(err, herr)
}
