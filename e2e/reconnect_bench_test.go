//go:build integration && bench

package e2e

import (
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/edgecore"
)

// One node back after a long outage: cloudcore stops for
// TETHER_OUTAGE (default 60s) while an edge with the default reconnect
// settings waits, then starts again. Measured from the hub listening again
// to the edge's new session resynced, and to its Node Ready again in the
// API server (the heartbeat after the hub's return). Before protocol 5 the
// back-off grew to 60s and the node was back 26s after the hub. Figures
// only: it fails when the node does not come back at all.
func TestReconnectAfterOutage(t *testing.T) {
	outage := 60 * time.Second
	if v := os.Getenv("TETHER_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		outage = d
	}
	c := startCloud(t)
	e := newEdge(t, c, "e2e-outage")
	e.tweak = func(cfg *edgecore.Config) {
		// The defaults, not the harness's short ones.
		cfg.ReconnectInitial, cfg.ReconnectMax = metav1.Duration{}, metav1.Duration{}
	}
	e.start()
	waitNodeReady(t, e.name, corev1.ConditionTrue, 60*time.Second)
	before := e.ec.Agent.State().Sessions

	c.stop()
	t.Logf("cloudcore stopped for %s", outage)
	time.Sleep(outage)
	rc, _ := nodeReady(t, e.name)
	readyBefore := rc.Status
	// cloudcore listens itself once its caches are synced, as the binary
	// does: no edge's dial waits in a listener's backlog meanwhile.
	c.tweak = func(cfg *cloudcore.Config) {
		cfg.Listener.Close()
		cfg.Listener, cfg.ListenAddr = nil, c.addr
	}
	c.start(nil)
	var listening time.Time
	eventually(t, 2*time.Minute, "hub listening", func() (bool, error) {
		if c.cc.Hub.Listening() {
			listening = time.Now()
			return true, nil
		}
		return false, nil
	})
	var session time.Duration
	eventually(t, time.Minute, "edge resynced", func() (bool, error) {
		s := e.ec.Agent.State()
		if s.Connected && s.Sessions > before && s.LastResync != nil {
			session = time.Since(listening)
			return true, nil
		}
		return false, nil
	})
	// Ready again: the node lifecycle controller marked it Unknown during
	// the outage (no Lease renewal); the node status the edge sends first
	// thing makes it True. If it stayed Ready, its Lease renewed is the mark.
	what := "node Ready"
	eventually(t, time.Minute, "node Ready again", func() (bool, error) {
		if readyBefore != corev1.ConditionTrue {
			c, _ := nodeReady(t, e.name)
			return c.Status == corev1.ConditionTrue, nil
		}
		what = "node Lease renewed (the node stayed Ready)"
		l, err := client.CoordinationV1().Leases("kube-node-lease").Get(t.Context(), e.name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return l.Spec.RenewTime != nil && l.Spec.RenewTime.After(listening), nil
	})
	t.Logf("reconnect after a %s outage: session resynced %s after the hub listened again; %s %s after (Ready was %s before the hub's return)",
		outage, session.Round(time.Millisecond), what, time.Since(listening).Round(time.Millisecond), readyBefore)
}
