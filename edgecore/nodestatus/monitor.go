package nodestatus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// RuntimeProbe asks the container runtime how it is: its CRI status, and
// where its images are stored.
type RuntimeProbe interface {
	// Status is the runtime's answer to the CRI Status call.
	Status(ctx context.Context) ([]RuntimeCondition, error)
	// ImageFS is the directory on the file system the runtime keeps its
	// images in (the mount point of CRI ImageFsInfo).
	ImageFS(ctx context.Context) (string, error)
}

// Reclaimer frees what the node is short of, the kubelet's way: images
// first, then pods. Reclaim is called from the monitor's goroutine after
// each observation that finds a signal past its threshold; it returns when
// done, and the monitor measures again.
type Reclaimer interface {
	Reclaim(ctx context.Context, p Pressure) error
}

// MonitorConfig configures a Monitor.
type MonitorConfig struct {
	// Period is how often the signals are measured (default 5s). A
	// runtime that stops answering makes the node NotReady within two
	// periods (one to notice it, one for the call to time out).
	Period time.Duration
	// Thresholds are the pressure thresholds.
	Thresholds Thresholds
	// DataDir is the node file system's directory.
	DataDir string
	// Runtime is the container runtime to watch; nil for none (the node is
	// then Ready as long as edgecore runs).
	Runtime RuntimeProbe
	// Reclaim, if set, is called under pressure.
	Reclaim Reclaimer
	// Changed is called (from the monitor's goroutine; it must not block)
	// with the new conditions when a condition changed, so that the status
	// is reported at once.
	Changed func([]corev1.NodeCondition)
	// Proc is where /proc is (default /proc).
	Proc   string
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Monitor measures the node's signals every Period (the sampler around the
// Engine) and keeps the conditions for Source. It is the only goroutine
// touching its engine.
type Monitor struct {
	cfg    MonitorConfig
	engine *Engine

	mu sync.Mutex
	// last is the latest output; guarded by mu.
	last Output
	// observed is whether one observation was made; guarded by mu.
	observed bool
}

// NewMonitor returns a monitor; call Sample once before reporting a
// status, and Start to keep measuring.
func NewMonitor(cfg MonitorConfig) *Monitor {
	if cfg.Period == 0 {
		cfg.Period = 5 * time.Second
	}
	if cfg.Proc == "" {
		cfg.Proc = "/proc"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Monitor{cfg: cfg, engine: NewEngine(cfg.Thresholds)}
}

// Start measures every Period until ctx ends.
func (m *Monitor) Start(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		out := m.Sample(ctx)
		if out.Pressure.Any() && m.cfg.Reclaim != nil && ctx.Err() == nil {
			if err := m.cfg.Reclaim.Reclaim(ctx, out.Pressure); err != nil {
				m.cfg.Logger.Warn("reclaim under pressure", slog.Any("pressure", out.Pressure), slog.Any("err", err))
			}
		}
	}
}

// Sample measures once, computes the conditions and calls Changed if they
// changed. Only Start's goroutine (or the caller before Start) may call
// it.
func (m *Monitor) Sample(ctx context.Context) Output {
	s := m.measure(ctx)
	m.mu.Lock()
	prev := m.last
	out := m.engine.Observe(m.cfg.Now(), s)
	m.last, m.observed = out, true
	m.mu.Unlock()
	if out.Changed {
		for _, c := range out.Conditions {
			i := slices.IndexFunc(prev.Conditions, func(p corev1.NodeCondition) bool { return p.Type == c.Type })
			good := (c.Type == corev1.NodeReady) == (c.Status == corev1.ConditionTrue)
			if i >= 0 && prev.Conditions[i].Status == c.Status && prev.Conditions[i].Reason == c.Reason || i < 0 && good {
				continue // unchanged, or good from the start
			}
			lvl := slog.LevelInfo
			if !good {
				lvl = slog.LevelWarn
			}
			m.cfg.Logger.Log(ctx, lvl, "node condition", slog.String("type", string(c.Type)),
				slog.String("status", string(c.Status)), slog.String("reason", c.Reason), slog.String("message", c.Message))
		}
		if m.cfg.Changed != nil {
			m.cfg.Changed(out.Conditions)
		}
	}
	return out
}

// Conditions returns the conditions of the last sample with heartbeat now,
// or nil before the first.
func (m *Monitor) Conditions(now time.Time) []corev1.NodeCondition {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.observed {
		return nil
	}
	return m.engine.Conditions(now)
}

// measure reads the signals. What cannot be read is left zero (no
// pressure) and logged at debug level.
func (m *Monitor) measure(ctx context.Context) Signals {
	var s Signals
	log := m.cfg.Logger
	var err error
	if s.MemAvailable, s.MemTotal, err = ReadMemory(filepath.Join(m.cfg.Proc, "meminfo")); err != nil {
		log.Debug("read memory", slog.Any("err", err))
	}
	if s.PIDsUsed, s.PIDsMax, err = ReadPIDs(m.cfg.Proc); err != nil {
		log.Debug("read pids", slog.Any("err", err))
	}
	var nodeDev uint64
	if m.cfg.DataDir != "" {
		if s.NodeFS, nodeDev, err = Statfs(m.cfg.DataDir); err != nil {
			log.Debug("statfs data dir", slog.Any("err", err))
		}
	}
	if m.cfg.Runtime == nil {
		return s
	}
	cctx, cancel := context.WithTimeout(ctx, m.cfg.Period)
	defer cancel()
	s.Runtime = &RuntimeSignal{}
	conds, err := m.cfg.Runtime.Status(cctx)
	if err != nil {
		s.Runtime.Down = downReason(err)
		return s
	}
	s.Runtime.Conditions = conds
	dir, err := m.cfg.Runtime.ImageFS(cctx)
	if err != nil || dir == "" {
		log.Debug("image file system", slog.Any("err", err))
		return s
	}
	fs, dev, err := Statfs(dir)
	if err != nil {
		log.Debug("statfs image fs", slog.String("dir", dir), slog.Any("err", err))
		return s
	}
	if dev != nodeDev || nodeDev == 0 {
		s.ImageFS = fs
	}
	return s
}

// downReason describes a failed runtime call. The probe's errors should
// not change from one failed call to the next (a gRPC code, not a whole
// error), or every sample is a change.
func downReason(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return "the runtime did not answer in time"
	}
	return err.Error()
}

// ReadMemory reads MemAvailable and MemTotal (bytes) from a meminfo file.
func ReadMemory(path string) (avail, total int64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	var haveAvail bool
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "MemAvailable:":
			avail, haveAvail = v*1024, true
		case "MemTotal:":
			total = v * 1024
		}
	}
	if !haveAvail || total == 0 {
		return 0, 0, fmt.Errorf("%s: no MemAvailable or MemTotal", path)
	}
	return avail, total, nil
}

// ReadPIDs reads how many tasks run (loadavg's fourth field) and how many
// there may be (the lower of kernel.pid_max and kernel.threads-max).
func ReadPIDs(proc string) (used, max int64, err error) {
	b, err := os.ReadFile(filepath.Join(proc, "loadavg"))
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return 0, 0, fmt.Errorf("loadavg: %q", b)
	}
	_, total, ok := strings.Cut(f[3], "/")
	if !ok {
		return 0, 0, fmt.Errorf("loadavg: %q", b)
	}
	if used, err = strconv.ParseInt(total, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("loadavg: %w", err)
	}
	for _, name := range []string{"sys/kernel/pid_max", "sys/kernel/threads-max"} {
		b, err := os.ReadFile(filepath.Join(proc, name))
		if err != nil {
			return 0, 0, err
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", name, err)
		}
		if max == 0 || n < max {
			max = n
		}
	}
	return used, max, nil
}

// Statfs measures the file system holding dir: the space available to
// unprivileged users and its size, and the device it is on.
func Statfs(dir string) (FS, uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return FS{}, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	var fi syscall.Stat_t
	if err := syscall.Stat(dir, &fi); err != nil {
		return FS{}, 0, fmt.Errorf("stat %s: %w", dir, err)
	}
	return FS{Avail: st.Bavail * uint64(st.Bsize), Total: st.Blocks * uint64(st.Bsize)}, fi.Dev, nil
}
