//go:build integration

package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-edge/tether/bench"
	"github.com/tether-edge/tether/controlplane"
)

// The device lag step with 40 devices, against a real control plane and
// the cloudcore and edgecore binaries built from this tree: every report
// of both rounds reaches the API server, and the figures are in order.
func TestDeviceLag(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	bin := t.TempDir()
	goBuild(t, ctx, bin, "cloudcore/cmd/cloudcore")
	goBuild(t, ctx, bin, "edgecore/cmd/edgecore")
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()

	const n = 40
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	dir := t.TempDir()
	d, err := deviceLag(ctx, Config{Devices: n}, cp, bin, dir, log)
	if err != nil {
		for _, f := range []string{"cloudcore.log", "edgecore.log"} {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			t.Logf("%s:\n%s", f, b)
		}
		t.Fatal(err)
	}
	if d.Devices != n || d.ServedSeconds <= 0 {
		t.Errorf("devices %d, served after %gs", d.Devices, d.ServedSeconds)
	}
	for name, r := range map[string]*bench.LagRound{"burst": d.Burst, "steady": d.Steady} {
		if r == nil {
			t.Errorf("%s: no round", name)
			continue
		}
		t.Logf("%s: %+v", name, *r)
		if r.Error != "" || r.Reports != n || r.Samples != n {
			t.Errorf("%s: %d of %d reports arrived (%d published): %s", name, r.Samples, n, r.Reports, r.Error)
		}
		if !(0 < r.P50Ms && r.P50Ms <= r.P90Ms && r.P90Ms <= r.P99Ms && r.P99Ms <= r.MaxMs) {
			t.Errorf("%s: percentiles out of order: %+v", name, *r)
		}
	}
	if d.Steady != nil && d.Steady.PerSecond != deviceRate {
		t.Errorf("steady rate %g, want %d", d.Steady.PerSecond, deviceRate)
	}
}
