//go:build integration

package cloudcore

import (
	"bytes"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tether-edge/tether/controlplane"
)

// TestReplicasShareCAAndLeader starts two cloudcores at once, as the
// ServiceAccount of manifests/cloudcore, against one API server: they load
// one CA (the first to create its Secret wins, the other loads it), exactly
// one of them leads (holds LeaderLease and runs the autonomy controller),
// and when the leader stops the other takes over.
func TestReplicasShareCAAndLeader(t *testing.T) {
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	client, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	applyRBAC(t, client)
	kubeconfig := writeKubeconfig(t, cp, cloudcoreUser)

	var (
		ccs   [2]*CloudCore
		stops [2]func()
		wg    sync.WaitGroup
	)
	for i := range ccs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ccs[i], stops[i] = runStoppable(t, Config{Kubeconfig: kubeconfig, SkipCRDInstall: true,
				Logger: log.With("replica", i)})
		}()
	}
	wg.Wait()
	if ccs[0] == nil || ccs[1] == nil {
		t.FailNow() // runStoppable said why
	}
	if !bytes.Equal(ccs[0].CA.Cert.Raw, ccs[1].CA.Cert.Raw) {
		t.Fatal("the two replicas made two CAs")
	}

	// leaders waits until exactly one of the running replicas leads, and
	// checks that it stays so for a while.
	leader := func(running ...int) (int, time.Time) {
		t.Helper()
		var lead []int
		var at time.Time
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			lead = lead[:0]
			for _, i := range running {
				if ccs[i].Leading() {
					lead = append(lead, i)
				}
			}
			if len(lead) == 1 {
				at = time.Now()
				break
			}
		}
		if len(lead) != 1 {
			t.Fatalf("leaders among %v: %v, want exactly one", running, lead)
		}
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if ccs[0].Leading() && ccs[1].Leading() {
				t.Fatal("both replicas lead at once")
			}
		}
		l, err := client.CoordinationV1().Leases("tether-system").Get(ctx, LeaderLease, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != ccs[lead[0]].election.identity {
			t.Fatalf("Lease held by %v, want replica %d (%s)", l.Spec.HolderIdentity, lead[0], ccs[lead[0]].election.identity)
		}
		return lead[0], at
	}
	first, _ := leader(0, 1)
	other := 1 - first
	stopped := time.Now()
	stops[first]()
	got, at := leader(other)
	if got != other {
		t.Fatalf("leader %d after the first stopped", got)
	}
	t.Logf("replica %d led; it stopped (released the Lease) and replica %d led %s later", first, other,
		at.Sub(stopped).Round(10*time.Millisecond))
}
