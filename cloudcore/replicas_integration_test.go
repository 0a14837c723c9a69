//go:build integration

package cloudcore

import (
	"bytes"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
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
	// Each replica's metrics say the same: one leader, one CA.
	var leaders float64
	for i, cc := range ccs {
		v := gather(t, cc)
		leaders += v["tether_leader"]
		if exp := v["tether_ca_certificate_expiry_timestamp_seconds"]; exp != float64(cc.CA.Cert.NotAfter.UnixNano())/1e9 {
			t.Errorf("replica %d: CA expiry metric %v, CA expires %v", i, exp, cc.CA.Cert.NotAfter)
		}
		if v["tether_hub_serving_certificate_expiry_timestamp_seconds"] < float64(time.Now().Unix()) {
			t.Errorf("replica %d: serving certificate expiry %v", i, v["tether_hub_serving_certificate_expiry_timestamp_seconds"])
		}
	}
	if leaders != 1 {
		t.Errorf("tether_leader sums to %v over the replicas, want 1", leaders)
	}
	stopped := time.Now()
	stops[first]()
	got, at := leader(other)
	if got != other {
		t.Fatalf("leader %d after the first stopped", got)
	}
	t.Logf("replica %d led; it stopped (released the Lease) and replica %d led %s later", first, other,
		at.Sub(stopped).Round(10*time.Millisecond))
}

// gather reads cc's metrics registry, checks the names with promlint, and
// returns the value of each unlabelled tether_ metric (the sum over labels
// for the others).
func gather(t *testing.T, cc *CloudCore) map[string]float64 {
	t.Helper()
	families, err := cc.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "tether_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
	v := map[string]float64{}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "tether_") {
			continue
		}
		for _, m := range f.Metric {
			switch {
			case m.Gauge != nil:
				v[f.GetName()] += m.Gauge.GetValue()
			case m.Counter != nil:
				v[f.GetName()] += m.Counter.GetValue()
			}
		}
	}
	return v
}
