//go:build integration

package simulator

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/cloudcore/enroll"
	"github.com/tether-edge/tether/controlplane"
	"github.com/tether-edge/tether/edgecore"
)

// cp is the control plane every scenario shares; each scenario has its own
// namespace, nodes and cloudcore.
var cp *controlplane.ControlPlane

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tether-sim-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp, err = controlplane.Start(ctx, controlplane.Options{
		Dir:                   filepath.Join(dir, "cp"),
		WithControllerManager: true,
		WithScheduler:         true,
		Logger:                slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start control plane:", err)
		return 1
	}
	defer cp.Stop()
	return m.Run()
}

// testConfig is a Sim for a scenario of a few dozen nodes on a loaded
// machine: short timers, so that links come back within a second or two
// and heartbeats renew leases often.
func testConfig(t *testing.T, name string) Config {
	cfg := Config{
		Name:              name,
		Dir:               t.TempDir(),
		Kubeconfig:        cp.Kubeconfig(),
		Cloud:             cloudcore.Config{HeartbeatInterval: metav1.Duration{Duration: 2 * time.Second}},
		ReconnectInitial:  200 * time.Millisecond,
		ReconnectMax:      2 * time.Second,
		PodResyncInterval: 2 * time.Second,
		ProgressInterval:  5 * time.Second,
	}
	if testing.Verbose() {
		cfg.Progress = t.Output()
		cfg.Log = slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})
	}
	return cfg
}

// TestScenarios runs testdata/*.txt, each against a Sim of its own. Run
// with -rewrite to update the expected output.
func TestScenarios(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios in testdata (%v)", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
			defer cancel()
			s, err := New(ctx, testConfig(t, "t-"+name))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			datadriven.RunTest(t, f, func(t *testing.T, d *datadriven.TestData) string {
				out, err := s.Exec(ctx, fromTestData(d))
				if err != nil {
					t.Fatalf("%s: %v\n%s", d.Pos, err, s.Summary())
				}
				return out + "\n"
			})
			if t.Failed() {
				t.Log(s.Summary())
			}
		})
	}
}

func fromTestData(d *datadriven.TestData) Directive {
	dir := Directive{Cmd: d.Cmd, Input: d.Input, Expected: d.Expected, HasExpected: true}
	for _, a := range d.CmdArgs {
		dir.Args = append(dir.Args, Arg{Key: a.Key, Vals: a.Vals})
	}
	return dir
}

// A second Sim joins the first one's hub: its nodes connect there, and it
// refuses to restart a hub it does not run.
func TestJoinHub(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	a, err := New(ctx, testConfig(t, "t-join-a"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	bcfg := testConfig(t, "t-join-b")
	hub := a.Hub()
	bcfg.Hub = &hub
	var edited atomic.Int32
	bcfg.Edge = func(i int, cfg *edgecore.Config) { edited.Add(1) }
	b, err := New(ctx, bcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, s := range []*Sim{a, b} {
		s.AddNodes(3)
		if _, err := s.Connect(ctx, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []*Sim{a, b} {
		if r, err := s.WaitConnected(ctx); err != nil || r.Connected != 3 {
			t.Fatalf("%s: %+v %v", s.Name(), r, err)
		}
	}
	if st, ok := a.HubStats(); !ok || st.Sessions != 6 {
		t.Errorf("hub sessions %d (%v), want 6", st.Sessions, ok)
	}
	if edited.Load() != 3 {
		t.Errorf("Config.Edge called %d times, want 3", edited.Load())
	}
	// The joined Sim enrolled its nodes itself, with the CA from the
	// hub's Secret.
	n, err := b.Client().CoreV1().Nodes().Get(ctx, b.NodeName(0), metav1.GetOptions{})
	if err != nil || n.Labels[SimLabel] != "t-join-b" || n.Annotations[enroll.AnnotationIdentity] == "" {
		t.Errorf("node %s: labels %v, annotations %v (%v), want %s=t-join-b and an identity", b.NodeName(0),
			n.Labels, n.Annotations, err, SimLabel)
	}
	if err := b.RestartHub(ctx, 0); err == nil {
		t.Error("the joined Sim restarted a hub it does not run")
	}
	// A storm across both: b marks it, a restarts the hub, each measures
	// its own nodes' share on the one clock.
	marked := time.Now()
	b.MarkStorm()
	if err := a.RestartHub(ctx, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := a.WaitResynced(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.WaitResynced(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("storm: a %s; b %s", sa, sb)
	if sb.Nodes != 3 || sb.Resynced != 3 {
		t.Errorf("the joined Sim's storm: %d/%d resynced, want 3/3", sb.Resynced, sb.Nodes)
	}
	for _, st := range []Storm{sa, sb} {
		if st.Back.IsZero() || st.End.Before(st.Back) || st.End.Sub(st.Back) != st.Took {
			t.Errorf("storm back %s, end %s, took %s", st.Back, st.End, st.Took)
		}
	}
	if !sb.Back.After(marked) || sb.Down <= 0 {
		t.Errorf("the joined Sim's nodes came back at %s (down %s), marked at %s", sb.Back, sb.Down, marked)
	}
	for _, st := range []Storm{sa, sb} {
		if st.Each.Samples != 3 || st.Each.Max > st.Took || st.Dials < 3 || st.Unanswered > st.Dials-3 {
			t.Errorf("storm each node %s, %d connections (%d unanswered), took %s: want 3 samples within it, >= 3 connections",
				st.Each, st.Dials, st.Unanswered, st.Took)
		}
	}
	// What Kubernetes sees: a's view covers b's Nodes too.
	ra, err := a.WaitReady(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ra.APINodes != 6 || ra.APIReady <= 0 || ra.APIConditions > ra.APIReady || ra.APILeases > ra.APIReady {
		t.Errorf("API readiness: %d Nodes, ready %s (conditions %s, leases %s), want 6 and a time", ra.APINodes,
			ra.APIReady, ra.APIConditions, ra.APILeases)
	}
	// The nodes came back with the certificates they were enrolled with.
	for _, s := range []*Sim{a, b} {
		if e := s.Enrollments(); len(e) != 1 || e[0].Nodes != 3 {
			t.Errorf("%s: enrollments %v, want one of 3 nodes", s.Name(), e)
		}
	}
	if err := b.Close(); err != nil {
		t.Errorf("close the joined Sim: %v", err)
	}
}

// A Sim named as one that just closed finds its namespace terminating (the
// earlier Sim deleted it): it waits for it to go and makes it again, with
// its default service account, instead of waiting for an account that
// would not come back. Held up for good, it says so.
func TestNamespaceStillTerminating(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	rc := rest.CopyConfig(cp.RESTConfig())
	rc.QPS, rc.Burst = 2000, 4000 // as a Sim's: no client-side wait cut short by the test's deadline
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	const hold = "tether.test/hold"
	ns := fmt.Sprintf("t-terminating-%d", time.Now().UnixNano()%1e9) // one per run (-count)
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cms := client.CoreV1().ConfigMaps(ns)
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "held", Finalizers: []string{hold}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	s := &Sim{client: client, cfg: Config{Name: ns}}

	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if err := s.createNamespace(short, ns); err == nil || !strings.Contains(err.Error(), "still terminating") {
		t.Fatalf("namespace held terminating: %v, want an error saying so", err)
	}

	done := make(chan error, 1)
	go func() { done <- s.createNamespace(ctx, ns) }()
	select {
	case err := <-done:
		t.Fatalf("returned %v while the namespace was terminating", err)
	case <-time.After(time.Second):
	}
	if _, err := cms.Patch(ctx, "held", types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`),
		metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cur, err := client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil || cur.DeletionTimestamp != nil || cur.Labels[SimLabel] != ns {
		t.Fatalf("namespace after: %v %+v", err, cur)
	}
	if err := s.waitServiceAccount(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}); err != nil {
		t.Error(err)
	}
}
