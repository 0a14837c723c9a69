//go:build integration

package netnscmd

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

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
