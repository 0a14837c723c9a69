//go:build integration

package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tether-edge/tether/bench"
	"github.com/tether-edge/tether/controlplane"
	"github.com/tether-edge/tether/simulator"
)

// A node count past the per-process limit runs its extra nodes in a joined
// simulator process (this test binary, see TestMain): 100 nodes at 50 a
// process are 2 processes on one cloudcore, and the scale's figures cover
// all 100.
func TestScalesAcrossProcesses(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	bin := t.TempDir()
	goBuild(t, ctx, bin, "cloudcore/cmd/cloudcore")
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: t.TempDir(), WithControllerManager: true, WithScheduler: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()

	cfg := Config{Nodes: []int{100}, Out: t.TempDir(), BinDir: bin, Pods: 20, PodRate: 20, ConnectRate: 100,
		Settle: time.Second, Idle: 15 * time.Second, StormDown: time.Second, StormTimeout: 3 * time.Minute,
		ConnectTimeout: 3 * time.Minute, NodesPerProcess: 50}
	rep := &bench.Report{Schema: bench.SchemaVersion}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	err = scales(ctx, cfg, rep, cp, nil, bin, filepath.Join(t.TempDir(), "sim"), log)
	if b, rerr := os.ReadFile(filepath.Join(cfg.Out, "joined-1.log")); rerr != nil || t.Failed() || err != nil {
		t.Logf("joined-1.log (%v):\n%s", rerr, b)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Scales) != 1 {
		t.Fatalf("%d scales: %+v (errors %v)", len(rep.Scales), rep.Scales, rep.Errors)
	}
	s := rep.Scales[0]
	t.Logf("scale: %+v; storm %+v; idle %+v", s, s.Storm, s.IdleBandwidth)
	if s.Processes != 2 || s.Connected != 100 {
		t.Errorf("%d connected in %d processes, want 100 in 2", s.Connected, s.Processes)
	}
	if s.Storm == nil || s.Storm.Nodes != 100 || s.Storm.Resynced != 100 || s.Storm.Seconds <= 0 {
		t.Errorf("storm %+v, want 100 of 100 nodes resynced", s.Storm)
	}
	if s.IdleBandwidth == nil || s.CloudcoreIdle == nil || s.CloudcoreIdle.Nodes != 100 {
		t.Errorf("idle: bandwidth %+v, cloudcore %+v (unavailable %v)", s.IdleBandwidth, s.CloudcoreIdle, s.Unavailable)
	}
	if s.Dispatch == nil || s.Dispatch.Samples != cfg.Pods {
		t.Errorf("dispatch %+v, want %d samples", s.Dispatch, cfg.Pods)
	}
	// The joined process removed its nodes when it ended, and its
	// summary counts them.
	client, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	left, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: simulator.SimLabel + "=bench-j1"})
	if err != nil || len(left.Items) != 0 {
		t.Errorf("nodes of the joined process left: %d (%v)", len(left.Items), err)
	}
	if b, _ := os.ReadFile(filepath.Join(cfg.Out, "joined-1.log")); !strings.Contains(string(b), "nodes: 50 made") {
		t.Errorf("the joined process's summary does not count its 50 nodes:\n%s", b)
	}
}

// goBuild builds the module's command at pkg (below the module) into dir.
func goBuild(t *testing.T, ctx context.Context, dir, pkg string) {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	out, err := exec.CommandContext(ctx, goBin, "build", "-o", dir+"/", "github.com/tether-edge/tether/"+pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go build %s: %v: %s", pkg, err, out)
	}
}
