package simulator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"k8s.io/apimachinery/pkg/types"
)

// ParseScript reads every scenario as datadriven does, so that the command
// line runs the same directives the tests run.
func TestParseScriptAgreesWithDatadriven(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	bench, _ := filepath.Glob("testdata/bench/*.txt")
	files = append(files, bench...)
	if len(files) < 5 {
		t.Fatalf("found only %d scripts", len(files))
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			var want []Directive
			datadriven.RunTest(t, f, func(t *testing.T, d *datadriven.TestData) string {
				want = append(want, fromDatadriven(d))
				return d.Expected
			})
			r, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := ParseScript(r)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("ParseScript found %d directives, datadriven %d", len(got), len(want))
			}
			for i := range got {
				g, w := got[i], want[i]
				g.Line, w.Line = 0, 0
				if len(g.Args) == 0 {
					g.Args = nil
				}
				if !reflect.DeepEqual(g, w) {
					t.Errorf("directive %d:\n got %#v\nwant %#v", i, g, w)
				}
			}
		})
	}
}

func fromDatadriven(d *datadriven.TestData) Directive {
	dir := Directive{Cmd: d.Cmd, Input: d.Input, Expected: strings.TrimSuffix(d.Expected, "\n"), HasExpected: true}
	for _, a := range d.CmdArgs {
		dir.Args = append(dir.Args, Arg{Key: a.Key, Vals: a.Vals})
	}
	return dir
}

func TestParseScriptForms(t *testing.T) {
	src := `# comment
nodes n=3
----
nodes +3 (3)

expect pods-running=5 resync-bytes<=100 nodes=(0-1, 4) within=1s
----
----
ok: a

ok: b
----
----

idle
`
	got, err := ParseScript(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []Directive{
		{Cmd: "nodes", Args: []Arg{{"n", []string{"3"}}}, Expected: "nodes +3 (3)", HasExpected: true, Line: 2},
		{Cmd: "expect", Args: []Arg{{"pods-running", []string{"5"}}, {"resync-bytes<", []string{"100"}},
			{"nodes", []string{"0-1", "4"}}, {"within", []string{"1s"}}}, Expected: "ok: a\n\nok: b", HasExpected: true, Line: 6},
		{Cmd: "idle", Line: 15},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %#v\nwant %#v", got, want)
	}
	for _, bad := range []string{"x a=(1, 2", "x =3", "x\n----\n----\nno end"} {
		if _, err := ParseScript(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestArgs(t *testing.T) {
	s := &Sim{fleet: &fleet{cfg: fleetConfig{prefix: "t"}}}
	s.fleet.add(10)
	_, list, err := ParseLine("cmd nodes=(0-2, 5, 2) rate=50/s for=2s n=7 create")
	if err != nil {
		t.Fatal(err)
	}
	a := newArgs(list)
	sel, err := a.nodes(s, "nodes", nil)
	if err != nil || !reflect.DeepEqual(sel, []int{0, 1, 2, 5}) {
		t.Errorf("nodes: %v %v", sel, err)
	}
	if r, err := a.rate("rate", 0); r != 50 || err != nil {
		t.Errorf("rate: %v %v", r, err)
	}
	if d, err := a.duration("for", 0); d != 2*time.Second || err != nil {
		t.Errorf("for: %v %v", d, err)
	}
	if err := a.unused(); err == nil || !strings.Contains(err.Error(), "n, create") {
		t.Errorf("unused: %v", err)
	}
	for _, bad := range []string{"nodes=10", "nodes=3-1", "nodes=x", "nodes=-1"} {
		_, l, _ := ParseLine("cmd " + bad)
		if _, err := newArgs(l).nodes(s, "nodes", nil); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	_, l, _ := ParseLine("cmd nodes=all")
	if sel, err := newArgs(l).nodes(s, "nodes", nil); len(sel) != 10 || err != nil {
		t.Errorf("all: %v %v", sel, err)
	}
}

func TestSummarize(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	l := Summarize(d)
	if l.Samples != 100 || l.P50 != 50*time.Millisecond || l.P99 != 99*time.Millisecond || l.Max != 100*time.Millisecond {
		t.Errorf("%+v", l)
	}
	if l := Summarize(nil); l.Samples != 0 {
		t.Errorf("empty: %+v", l)
	}
}

// A wire counts both directions and, cut, closes its connection and
// refuses dials until healed.
func TestWire(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	var w wire
	before := time.Now()
	c, err := w.dial(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if at := time.Unix(0, w.connectedAt.Load()); at.Before(before) || at.After(time.Now()) {
		t.Errorf("connectedAt %s, want the time of the dial", at)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if w.up.Load() != 5 || w.down.Load() != 5 {
		t.Errorf("up %d down %d, want 5 and 5", w.up.Load(), w.down.Load())
	}
	w.setCut(true)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read after cut: %v, want the connection closed", err)
	}
	if _, err := w.dial(t.Context(), "tcp", ln.Addr().String()); !errors.Is(err, errCut) {
		t.Errorf("dial while cut: %v", err)
	}
	w.setCut(false)
	c2, err := w.dial(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial after heal: %v", err)
	}
	c2.Close()
	if len(w.conns) != 0 {
		t.Errorf("%d connections remembered after close", len(w.conns))
	}
}

func TestCountingLogger(t *testing.T) {
	var c logCounter
	var out strings.Builder
	log := newCountingLogger(&c, slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelError}))
	l := log.With(slog.String("node", "n1"))
	l.Info("quiet")
	l.Warn("careful")
	l.Error("broken", slog.Any("err", errors.New("boom")))
	if c.warns.Load() != 1 || c.errors.Load() != 1 {
		t.Errorf("warns %d errors %d", c.warns.Load(), c.errors.Load())
	}
	if got := c.last(); got != "broken node=n1 err=boom" {
		t.Errorf("last error %q", got)
	}
	if s := out.String(); !strings.Contains(s, "broken") || strings.Contains(s, "careful") || !strings.Contains(s, "node=n1") {
		t.Errorf("forwarded %q", s)
	}
	if newCountingLogger(&c, nil).Enabled(context.Background(), slog.LevelInfo) {
		t.Error("info enabled")
	}
}

func TestReadProc(t *testing.T) {
	// Spin until the kernel counts CPU time (10ms ticks) for this process.
	var p ProcStat
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if p, err = ReadProc(0); err != nil || p.CPU > 0 {
			break
		}
		for spin := time.Now(); time.Since(spin) < 20*time.Millisecond; {
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if p.RSS < 1<<20 || p.CPU <= 0 {
		t.Errorf("%+v", p)
	}
	if _, err := ReadProc(1 << 30); err == nil {
		t.Error("no error for a pid that does not exist")
	}
}

func TestExpectations(t *testing.T) {
	for _, c := range []struct {
		op   string
		want float64
		got  float64
		ok   bool
	}{{"=", 3, 3, true}, {"=", 3, 4, false}, {"<=", 3, 2, true}, {"<=", 3, 4, false}, {">=", 3, 3, true}, {">=", 3, 2, false}} {
		if got := (expectation{op: c.op, want: c.want}).holds(c.got); got != c.ok {
			t.Errorf("%v %s %v: %v", c.got, c.op, c.want, got)
		}
	}
	if v, err := parseValue(duration, "100ms"); err != nil || v != float64(100*time.Millisecond) {
		t.Errorf("duration: %v %v", v, err)
	}
	if _, err := parseValue(count, "1.5"); err == nil {
		t.Error("count 1.5 accepted")
	}
}

// A pod's dispatch time starts at the earlier of the informer seeing it
// bound and its create call returning; a commit before both counts as zero.
func TestRecorderDispatch(t *testing.T) {
	r := newRecorder()
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	set := func(uid string, f func(p *podTimes)) {
		r.mu.Lock()
		f(r.getLocked(types.UID(uid)))
		r.mu.Unlock()
	}
	// Informer first: 10ms to the commit.
	r.created("a", at(0), at(20))
	set("a", func(p *podTimes) { p.bound, p.committed, p.running = at(5), at(15), at(40) })
	// Create call back first: 30ms.
	r.created("b", at(0), at(10))
	set("b", func(p *podTimes) { p.bound, p.committed = at(25), at(40) })
	// Committed before either: zero, counted as early.
	r.created("c", at(0), at(30))
	set("c", func(p *podTimes) { p.bound, p.committed = at(35), at(20) })
	// Bound later by someone else (not created bound): the informer only.
	set("d", func(p *podTimes) { p.bound, p.committed = at(50), at(57) })
	d, running, early := r.samples()
	slices.Sort(d)
	want := []time.Duration{0, 7 * time.Millisecond, 10 * time.Millisecond, 30 * time.Millisecond}
	if !slices.Equal(d, want) || early != 1 {
		t.Errorf("dispatch %v early %d, want %v and 1", d, early, want)
	}
	if len(running) != 1 || running[0] != 40*time.Millisecond {
		t.Errorf("create to Running %v, want [40ms]", running)
	}
}

// fakeNamespace is a Namespace that is this process's own under another
// type, for the configuration checks.
type fakeNamespace struct{ hostNamespace }

// validate fills the network defaults and refuses network settings that
// cannot work, naming the field.
func TestConfigValidateNetwork(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "cloudcore")
	if err := os.WriteFile(bin, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	join := &HubConfig{URL: "wss://127.0.0.1:10000/v1/connect"}

	var c Config
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	if c.HubHost != "127.0.0.1" || c.CloudNamespace != (hostNamespace{}) || c.NodeNamespace != (hostNamespace{}) {
		t.Errorf("defaults: hubHost %q, cloudNamespace %#v, nodeNamespace %#v", c.HubHost, c.CloudNamespace, c.NodeNamespace)
	}
	if c.Cloud.Namespace != "tether-system" || c.Cloud.CASecret != "tether-ca" {
		t.Errorf("defaults: the CA in Secret %s/%s, want cloudcore's tether-system/tether-ca", c.Cloud.Namespace, c.Cloud.CASecret)
	}
	c = Config{CloudNamespace: fakeNamespace{}, NodeNamespace: fakeNamespace{}, HubHost: "198.18.0.1"}
	if err := c.validate(); err != nil {
		t.Errorf("namespaces with a hub host: %v", err)
	}
	if c.HubHost != "198.18.0.1" || c.CloudNamespace != (fakeNamespace{}) {
		t.Errorf("kept: hubHost %q, cloudNamespace %#v", c.HubHost, c.CloudNamespace)
	}
	c = Config{Hub: join, NodeNamespace: fakeNamespace{}}
	if err := c.validate(); err != nil {
		t.Errorf("a joined Sim dialling from a namespace: %v", err)
	}
	if c.HubHost != "" {
		t.Errorf("a joined Sim got hubHost %q", c.HubHost)
	}
	if c.Hub.Namespace != "tether-system" || c.Hub.CASecret != "tether-ca" {
		t.Errorf("a joined Sim looks for the hub's CA in Secret %s/%s, want tether-system/tether-ca", c.Hub.Namespace, c.Hub.CASecret)
	}

	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"host name":             {Config{HubHost: "hub.example"}, "hubHost"},
		"host with port":        {Config{HubHost: "127.0.0.1:10000"}, "hubHost"},
		"host with zone":        {Config{HubHost: "fe80::1%eth0"}, "hubHost"},
		"namespace no host":     {Config{CloudNamespace: fakeNamespace{}}, "hubHost: required with cloudNamespace"},
		"joined with host":      {Config{Hub: join, HubHost: "198.18.0.1"}, "hub and cloudNamespace or hubHost"},
		"joined cloud netns":    {Config{Hub: join, CloudNamespace: fakeNamespace{}}, "hub and cloudNamespace or hubHost"},
		"joined with cloudcore": {Config{Hub: join, CloudcoreBinary: bin}, "hub and cloudcoreBinary"},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("validate: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// An extension command (Config.Commands) gets its arguments and checks them
// itself: Exec does not call them unknown.
func TestExtensionCommand(t *testing.T) {
	var got []Arg
	s := &Sim{cfg: Config{Commands: map[string]Command{
		"link": func(_ context.Context, _ *Sim, args []Arg) (string, error) {
			got = args
			if len(args) != 1 {
				return "", errors.New("want one argument")
			}
			return "did " + args[0].Key, nil
		},
	}}}
	out, err := s.Exec(t.Context(), Directive{Cmd: "link", Args: []Arg{{Key: "partition"}}, Line: 3})
	if err != nil || out != "did partition" || len(got) != 1 {
		t.Fatalf("link partition: %q, %v", out, err)
	}
	_, err = s.Exec(t.Context(), Directive{Cmd: "link", Line: 4})
	if err == nil || !strings.Contains(err.Error(), "line 4: link: want one argument") {
		t.Fatalf("link without arguments: %v", err)
	}
	if _, err := s.Exec(t.Context(), Directive{Cmd: "nope", Line: 5}); err == nil {
		t.Fatal("unknown command accepted")
	}
}
