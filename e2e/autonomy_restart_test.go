//go:build integration

package e2e

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/protocol"
)

// edgecore restarted while the cloud is unreachable: every pod comes back
// from the store at once, and the cloud sees them Running again when the
// link returns, with no change and no new object messages.
func TestOfflineRestartRestoresPods(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := startEdge(t, c, "e2e-offline-restart")
	const n = 5
	uids := map[string]bool{}
	for i := 0; i < n; i++ {
		p, err := client.CoreV1().Pods(ns).Create(t.Context(), barePod(ns, "p"+string(rune('a'+i)), e.name), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		uids[string(p.UID)] = true
	}
	eventually(t, 30*time.Second, "pods Running", func() (bool, error) {
		pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning {
				return false, nil
			}
		}
		return len(pods.Items) == n, nil
	})

	waitSettled(t, ns, e)

	e.link.Cut()
	e.stop()
	start := time.Now()
	e.start()
	eventually(t, 10*time.Second, "every pod running again with no cloud", func() (bool, error) {
		got, err := e.ec.Runtime.Pods(t.Context())
		if err != nil || len(got) != n {
			return false, err
		}
		for _, u := range got {
			if !uids[string(u)] {
				return false, nil
			}
		}
		return true, nil
	})
	t.Logf("%d pods running %s after an offline edgecore start", n, time.Since(start).Round(time.Millisecond))
	if len(e.objects(protocol.KindPod)) != n {
		t.Fatalf("store lost pods")
	}

	e.link.Heal()
	eventually(t, 30*time.Second, "edge resynced", func() (bool, error) {
		s := e.ec.Agent.State()
		return s.Connected && s.LastResync != nil, nil
	})
	if r := e.ec.Agent.State().LastResync; r.Upserts != 0 || r.Deletes != 0 {
		t.Errorf("resync after an offline restart sent %d upserts and %d deletes; nothing changed", r.Upserts, r.Deletes)
	}
	pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if !uids[string(p.UID)] || p.Status.Phase != corev1.PodRunning {
			t.Errorf("pod %s: uid %s phase %s", p.Name, p.UID, p.Status.Phase)
		}
	}
}
