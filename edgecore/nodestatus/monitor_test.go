package nodestatus

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// probe is a RuntimeProbe answering what the test sets.
type probe struct {
	mu    sync.Mutex
	err   error
	conds []RuntimeCondition
	dir   string
}

func (p *probe) Status(context.Context) ([]RuntimeCondition, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conds, p.err
}

func (p *probe) ImageFS(context.Context) (string, error) { return p.dir, nil }

type reclaims struct {
	mu  sync.Mutex
	got []Pressure
}

func (r *reclaims) Reclaim(_ context.Context, p Pressure) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, p)
	return nil
}

// tmpfs mounts a tmpfs of size bytes on a new directory.
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

func fill(t *testing.T, dir string, n int) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "filler"), make([]byte, n), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestMonitorDiskPressureOnSmallFS: a data directory and an image file
// system on two real 4 MiB tmpfs; filling either gives DiskPressure, says
// which, and asks for reclaiming; emptying it clears it (no transition
// period here).
func TestMonitorDiskPressureOnSmallFS(t *testing.T) {
	data, images := tmpfs(t, "4m"), tmpfs(t, "4m")
	p := &probe{conds: []RuntimeCondition{{Type: RuntimeReady, Status: true}, {Type: NetworkReady, Status: true}}, dir: images}
	var changes int
	rec := &reclaims{}
	th := DefaultThresholds()
	th.TransitionPeriod = 0
	m := NewMonitor(MonitorConfig{Thresholds: th, DataDir: data, Runtime: p, Reclaim: rec, Changed: func([]corev1.NodeCondition) { changes++ }})
	ctx := t.Context()

	out := m.Sample(ctx)
	if c := status(out, corev1.NodeDiskPressure); c.Status != corev1.ConditionFalse || out.Pressure.Any() || changes != 1 {
		t.Fatalf("empty: %+v, pressure %+v, changes %d", c, out.Pressure, changes)
	}
	fill(t, images, 3700<<10) // 3.7 of 4 MiB: 7.5% left, under 15%
	out = m.Sample(ctx)
	if c := status(out, corev1.NodeDiskPressure); c.Status != corev1.ConditionTrue || c.Message != "edgecore has disk pressure (imagefs.available<15%)" ||
		out.Pressure != (Pressure{ImageFS: true}) || changes != 2 {
		t.Fatalf("image fs filled: %+v, pressure %+v, changes %d", c, out.Pressure, changes)
	}
	fill(t, data, 3800<<10)
	out = m.Sample(ctx)
	if out.Pressure != (Pressure{NodeFS: true, ImageFS: true}) || changes != 3 {
		t.Fatalf("both filled: pressure %+v, changes %d", out.Pressure, changes)
	}
	os.Remove(filepath.Join(images, "filler"))
	os.Remove(filepath.Join(data, "filler"))
	out = m.Sample(ctx)
	if c := status(out, corev1.NodeDiskPressure); c.Status != corev1.ConditionFalse || changes != 4 {
		t.Fatalf("emptied: %+v, changes %d", c, changes)
	}

	// The runtime stops answering: NotReady, then back.
	p.mu.Lock()
	p.err = errors.New("CRI status: Unavailable")
	p.mu.Unlock()
	out = m.Sample(ctx)
	if c := status(out, corev1.NodeReady); c.Status != corev1.ConditionFalse || c.Reason != ReasonRuntimeDown || changes != 5 {
		t.Fatalf("runtime down: %+v, changes %d", c, changes)
	}
	if got := m.Conditions(out.Conditions[0].LastHeartbeatTime.Time); len(got) != 4 || got[3].Status != corev1.ConditionFalse {
		t.Errorf("Conditions: %+v", got)
	}
	p.mu.Lock()
	p.err = nil
	p.mu.Unlock()
	if out = m.Sample(ctx); status(out, corev1.NodeReady).Status != corev1.ConditionTrue {
		t.Fatalf("runtime back: %+v", status(out, corev1.NodeReady))
	}
}

// TestMonitorSameFS: an image file system on the data directory's file
// system is counted once, as nodefs.
func TestMonitorSameFS(t *testing.T) {
	data := tmpfs(t, "4m")
	m := NewMonitor(MonitorConfig{Thresholds: DefaultThresholds(), DataDir: data,
		Runtime: &probe{conds: []RuntimeCondition{{Type: RuntimeReady, Status: true}, {Type: NetworkReady, Status: true}}, dir: data}})
	fill(t, data, 3500<<10) // 12.5% left: imagefs would be under 15%, nodefs is not under 10%
	if out := m.Sample(t.Context()); out.Pressure.Any() {
		t.Errorf("pressure %+v on one file system 12.5%% free", out.Pressure)
	}
}
