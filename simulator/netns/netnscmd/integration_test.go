//go:build integration

package netnscmd

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/controlplane"
	"github.com/tether-edge/tether/simulator"
	"github.com/tether-edge/tether/simulator/netns"
)

func TestLinkCommands(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	ctx := t.Context()
	w, err := netns.NewWAN(ctx, netns.Options{Prefix: "tethertest-", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, netns.Impairment{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cmd := Commands(w.Link)["link"]
	run := func(args ...simulator.Arg) string {
		t.Helper()
		out, err := cmd(context.Background(), nil, args)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if out := run(simulator.Arg{Key: "delay", Vals: []string{"25ms"}}, simulator.Arg{Key: "loss", Vals: []string{"1%"}}); out != "link delay 25ms jitter 0s loss 1%" {
		t.Errorf("delay: %q", out)
	}
	if got := w.Link.Impairment(); got.Delay != 25*time.Millisecond || got.Loss != 0.01 {
		t.Errorf("impairment %+v", got)
	}
	// jitter alone keeps the delay.
	run(simulator.Arg{Key: "jitter", Vals: []string{"5ms"}})
	if got := w.Link.Impairment(); got.Delay != 25*time.Millisecond || got.Jitter != 5*time.Millisecond {
		t.Errorf("impairment after jitter %+v", got)
	}
	if run(simulator.Arg{Key: "partition"}) != "link partitioned" || !w.Link.Partitioned() {
		t.Error("not partitioned")
	}
	if run(simulator.Arg{Key: "heal"}) != "link healed" || w.Link.Partitioned() {
		t.Error("not healed")
	}
	if out := run(simulator.Arg{Key: "stats"}); !strings.HasPrefix(out, "a to b: ") {
		t.Errorf("stats: %q", out)
	}
}

// TestWANScenarios runs testdata/*.txt against a Sim whose cloudcore and
// nodes sit on either side of an emulated link, with the link commands.
func TestWANScenarios(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios in testdata (%v)", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: filepath.Join(t.TempDir(), "cp"),
		WithControllerManager: true, WithScheduler: true, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			w, err := netns.NewWAN(ctx, netns.Options{Prefix: "tethertest-", Logger: discard},
				netns.Impairment{Delay: 25 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			cfg := simulator.Config{
				Name: "t-" + name, Dir: t.TempDir(), Kubeconfig: cp.Kubeconfig(),
				Cloud:            cloudcore.Config{HeartbeatInterval: metav1.Duration{Duration: 2 * time.Second}},
				ReconnectInitial: 200 * time.Millisecond, ReconnectMax: 2 * time.Second,
				PodResyncInterval: 2 * time.Second,
				CloudNamespace:    w.Cloud, NodeNamespace: w.Edges, HubHost: w.HubHost(),
				Commands: Commands(w.Link),
			}
			if testing.Verbose() {
				cfg.Progress = t.Output()
			}
			s, err := simulator.New(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := s.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}()
			datadriven.RunTest(t, f, func(t *testing.T, d *datadriven.TestData) string {
				dir := simulator.Directive{Cmd: d.Cmd, Input: d.Input, Expected: d.Expected, HasExpected: true}
				for _, a := range d.CmdArgs {
					dir.Args = append(dir.Args, simulator.Arg{Key: a.Key, Vals: a.Vals})
				}
				out, err := s.Exec(ctx, dir)
				if err != nil {
					t.Fatalf("%s: %v\n%s", d.Pos, err, s.Summary())
				}
				return out + "\n"
			})
		})
	}
}
