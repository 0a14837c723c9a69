//go:build integration

package simulator

import (
	"context"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/simulator/netns"
)

// buildCloudcore builds the cloudcore binary into a temporary directory.
func buildCloudcore(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(t.TempDir(), "cloudcore")
	out, err := exec.CommandContext(t.Context(), goBin, "build", "-o", bin, "github.com/tether-edge/tether/cloudcore/cmd/cloudcore").CombinedOutput()
	if err != nil {
		t.Fatalf("go build cloudcore: %v: %s", err, out)
	}
	return bin
}

// Twenty hollow nodes in one network namespace and cloudcore (its own
// process) in another, joined by an emulated link with 25ms each way: the
// nodes connect across it, a pod reaches its node and runs, and the link
// counts the traffic both ways.
func TestAcrossNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	bin := buildCloudcore(t)
	const delay = 25 * time.Millisecond
	w, err := netns.NewWAN(ctx, netns.Options{Prefix: "tethersimtest-", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		netns.Impairment{Delay: delay})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("close the namespaces: %v", err)
		}
	})
	api, err := url.Parse(cp.URL())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.ForwardHost(api.Host); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t, "t-netns")
	cfg.CloudcoreBinary = bin
	cfg.CloudNamespace, cfg.NodeNamespace, cfg.HubHost = w.Cloud, w.Edges, w.HubHost()
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	if got, want := netnsOf(t, s.CloudPid()), w.Cloud.Name; got != want {
		t.Errorf("cloudcore runs in network namespace %s, want %s", got, want)
	}

	before := w.Link.Stats()
	const n = 20
	s.AddNodes(n)
	if _, err := s.Connect(ctx, nil, 0); err != nil {
		t.Fatal(err)
	}
	r, err := s.WaitConnected(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Connected != n || r.Registered != n {
		t.Fatalf("%+v, want %d connected and registered", r, n)
	}
	// A websocket over TLS over TCP takes several round trips to open:
	// with 50ms a round trip, no node connects in less than 100ms.
	if r.ConnectTime < 4*delay {
		t.Errorf("%d nodes connected in %s across a link of %s each way", n, r.ConnectTime, delay)
	}
	connected := w.Link.Stats()
	// The link's B end is the nodes': B to A is up.
	up, down := connected.BToA.Bytes-before.BToA.Bytes, connected.AToB.Bytes-before.AToB.Bytes
	wireUp, wireDown := s.wireTotals()
	t.Logf("connect: %d nodes in %s; link %d B up, %d B down; TLS layer %d B up, %d B down", n, r.ConnectTime, up, down, wireUp, wireDown)
	// The IP layer carries the TLS records and more (TCP/IP headers).
	if wireUp == 0 || up < wireUp || down < wireDown {
		t.Errorf("link counted %d B up, %d B down; the nodes' connections %d B up, %d B down", up, down, wireUp, wireDown)
	}

	if _, err := s.CreatePods(ctx, 1, 0, []int{7}); err != nil {
		t.Fatal(err)
	}
	out, err := s.Exec(ctx, Directive{Cmd: "expect", Args: []Arg{{Key: "pods-running", Vals: []string{"1"}},
		{Key: "pods-held", Vals: []string{"1"}}, {Key: "within", Vals: []string{"2m"}}}})
	if err != nil || strings.Contains(out, "FAIL") {
		t.Fatalf("the pod across the link: %q %v\n%s", out, err, s.Summary())
	}
	// The measure starts when the simulator learns of the binding (the
	// create call's return or its watch event), which can be a few
	// milliseconds after the API server sent the pod on (21 ms seen for a
	// 25 ms link under load): half the link's delay still proves the pod
	// crossed it (about 1 ms without a link).
	if d := s.Dispatch(); d.Samples != 1 || d.P50 < delay/2 {
		t.Errorf("dispatch %s: want one sample of at least half the link's %s", d, delay)
	}
	after := w.Link.Stats()
	if after.AToB.Bytes <= connected.AToB.Bytes || after.BToA.Bytes <= connected.BToA.Bytes {
		t.Errorf("the pod crossed no link: %+v, then %+v", connected, after)
	}
}

// netnsOf names the network namespace process pid is in: the name under
// /var/run/netns whose inode matches, or its /proc link.
func netnsOf(t *testing.T, pid int) string {
	t.Helper()
	want, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid), "ns", "net"))
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		if st, err := os.Stat(filepath.Join("/var/run/netns", e.Name())); err == nil && os.SameFile(st, want) {
			return e.Name()
		}
	}
	l, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", "net"))
	return l
}
