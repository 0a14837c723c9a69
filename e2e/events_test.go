//go:build integration

package e2e

import (
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

// eventsAbout lists the Events about an object, as kubectl describe finds
// them (by involved object kind, name and UID).
func eventsAbout(t *testing.T, ns, kind, name string, uid types.UID) []corev1.Event {
	t.Helper()
	sel := fields.Set{"involvedObject.kind": kind, "involvedObject.name": name, "involvedObject.uid": string(uid)}
	list, err := client.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{FieldSelector: sel.AsSelector().String()})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// findEvent returns the event of that type and reason whose message
// contains msg.
func findEvent(evs []corev1.Event, typ, reason, msg string) *corev1.Event {
	for i := range evs {
		e := &evs[i]
		if e.Type == typ && e.Reason == reason && strings.Contains(e.Message, msg) {
			return e
		}
	}
	return nil
}

func eventLines(evs []corev1.Event) string {
	var lines []string
	for _, e := range evs {
		lines = append(lines, fmt.Sprintf("%s %s x%d %s: %s", e.Type, e.Reason, e.Count, e.InvolvedObject.FieldPath, e.Message))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// waitEvents waits until want holds for the events about the object.
func waitEvents(t *testing.T, ns, kind, name string, uid types.UID, timeout time.Duration, what string,
	want func([]corev1.Event) error) []corev1.Event {
	t.Helper()
	var evs []corev1.Event
	eventually(t, timeout, what, func() (bool, error) {
		evs = eventsAbout(t, ns, kind, name, uid)
		if err := want(evs); err != nil {
			return false, fmt.Errorf("%w; events:\n%s", err, eventLines(evs))
		}
		return true, nil
	})
	return evs
}

// TestCRIEvents: the edge's events as a kubelet's, in the API server, on
// containerd: the node's Starting and NodeReady; Pulling, Failed and
// BackOff of a pod whose image is missing; Pulled, Created, Started of a
// crash-looping pod and one BackOff whose count grows, in a bounded number
// of Event objects; Unhealthy and Killing of a failing liveness probe;
// FailedMount of a volume whose configmap is missing.
func TestCRIEvents(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := newCRIEdge(t, c, "e2e-cri-events")
	e.start()

	waitEvents(t, "", "Node", e.name, types.UID(e.name), 60*time.Second, "node events", func(evs []corev1.Event) error {
		if findEvent(evs, "Normal", "Starting", "Starting edgecore.") == nil ||
			findEvent(evs, "Normal", "NodeReady", "Node "+e.name+" status is now: NodeReady") == nil {
			return fmt.Errorf("no Starting and NodeReady")
		}
		return nil
	})

	const missingImage = "tether.test/busybox-missing:1"
	missing := criPod(t, ns, "missing-image", e.name, `true`)
	missing.Spec.Containers[0].Image = missingImage
	missing = createPod(t, missing)

	crash := criPod(t, ns, "crash", e.name, `echo crashing; exit 3`)
	crash = createPod(t, crash)

	probe := criPod(t, ns, "probe", e.name, `exec sleep 3600`)
	probe.Spec.Containers[0].LivenessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "echo sick; exit 1"}}},
		PeriodSeconds: 1, FailureThreshold: 2}
	probe = createPod(t, probe)

	noCM := criPod(t, ns, "no-configmap", e.name, `exec sleep 3600`)
	noCM.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "missing"}}}}}
	noCM.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/cfg"}}
	noCM = createPod(t, noCM)

	evs := waitEvents(t, ns, "Pod", missing.Name, missing.UID, 90*time.Second, "missing image's events", func(evs []corev1.Event) error {
		for _, w := range []struct{ typ, reason, msg string }{
			{"Normal", "Pulling", fmt.Sprintf("Pulling image %q", missingImage)},
			{"Warning", "Failed", fmt.Sprintf("Failed to pull image %q: ", missingImage)},
			{"Warning", "Failed", "Error: ErrImagePull"},
			{"Normal", "BackOff", fmt.Sprintf("Back-off pulling image %q", missingImage)},
			{"Warning", "Failed", "Error: ImagePullBackOff"},
		} {
			if findEvent(evs, w.typ, w.reason, w.msg) == nil {
				return fmt.Errorf("no %s %s %q", w.typ, w.reason, w.msg)
			}
		}
		return nil
	})
	for _, ev := range evs {
		if ev.InvolvedObject.FieldPath != "spec.containers{main}" || ev.Source.Host != e.name {
			t.Errorf("event %s %q: fieldPath %q, host %q", ev.Reason, ev.Message, ev.InvolvedObject.FieldPath, ev.Source.Host)
		}
	}
	t.Logf("missing image's events:\n%s", eventLines(evs))

	// The crash loop: BackOff's count grows, Created and Started are one
	// Event each with a count, so the Event objects stay few.
	evs = waitEvents(t, ns, "Pod", crash.Name, crash.UID, 120*time.Second, "crash loop's BackOff counted", func(evs []corev1.Event) error {
		bo := findEvent(evs, "Warning", "BackOff", "Back-off restarting failed container main in pod crash_"+ns+"("+string(crash.UID)+")")
		st := findEvent(evs, "Normal", "Started", "Started container main")
		if bo == nil || bo.Count < 3 || st == nil || st.Count < 3 {
			return fmt.Errorf("no BackOff and Started with a count of 3 or more")
		}
		return nil
	})
	for _, w := range []struct{ typ, reason, msg string }{
		{"Normal", "Pulled", fmt.Sprintf("Container image %q already present on machine", containerd(t).BusyboxImage)},
		{"Normal", "Created", "Created container main"},
	} {
		if ev := findEvent(evs, w.typ, w.reason, w.msg); ev == nil || ev.Count < 2 {
			t.Errorf("crash loop: %s %s %q: %+v", w.typ, w.reason, w.msg, ev)
		}
	}
	p, err := client.CoreV1().Pods(ns).Get(t.Context(), crash.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	restarts := mainStatus(p).RestartCount
	if len(evs) > 4 {
		t.Errorf("crash loop made %d Event objects, want at most 4 (Pulled, Created, Started, BackOff):\n%s", len(evs), eventLines(evs))
	}
	t.Logf("crash loop after %d restarts: %d Event objects:\n%s", restarts, len(evs), eventLines(evs))

	evs = waitEvents(t, ns, "Pod", probe.Name, probe.UID, 90*time.Second, "liveness probe's events", func(evs []corev1.Event) error {
		if findEvent(evs, "Warning", "Unhealthy", "Liveness probe failed: ") == nil ||
			findEvent(evs, "Normal", "Killing", "Container main failed liveness probe, will be restarted") == nil {
			return fmt.Errorf("no Unhealthy and Killing")
		}
		return nil
	})
	t.Logf("liveness probe's events:\n%s", eventLines(evs))

	evs = waitEvents(t, ns, "Pod", noCM.Name, noCM.UID, 60*time.Second, "missing configmap's events", func(evs []corev1.Event) error {
		if findEvent(evs, "Warning", "FailedMount", `MountVolume.SetUp failed for volume "cfg" : `) == nil {
			return fmt.Errorf("no FailedMount")
		}
		return nil
	})
	t.Logf("missing configmap's events:\n%s", eventLines(evs))

	// What a user sees.
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		out, err := exec.CommandContext(t.Context(), kubectl, "--kubeconfig", cp.Kubeconfig(), "describe", "pod", "-n", ns, crash.Name).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl describe: %v\n%s", err, out)
		}
		desc := string(out)
		i := strings.Index(desc, "Events:")
		if i < 0 || !strings.Contains(desc[i:], "BackOff") || !strings.Contains(desc[i:], "Back-off restarting failed container main") {
			t.Fatalf("kubectl describe pod shows no BackOff event:\n%s", desc)
		}
		t.Logf("kubectl describe pod %s:\n%s", crash.Name, desc[i:])
	}
}

// A hostile edge, with its own node's certificate, sends events about
// another node's pod and Node, and a flood of events about its own Node:
// nothing about the other node is written, and the flood is cut at the
// hub's upstream rate (UpstreamBurst 200 at once, then UpstreamRate 50 a
// second, by default), the rest answered as dropped.
func TestEventsFromHostileEdge(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	const attacker, victim = "e2e-ev-attacker", "e2e-ev-victim"
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := c.cc.Enroll.Direct(t.Context(), attacker, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	vkey, _ := pki.NewKey()
	if _, err := c.cc.Enroll.Direct(t.Context(), victim, &vkey.PublicKey); err != nil {
		t.Fatal(err)
	}
	vpod := createPod(t, barePod(ns, "victim-pod", victim))
	ws, err := dialHub(t, c, certPEM, key, attacker)
	if err != nil {
		t.Fatal(err)
	}
	type ackResult struct{ acked, rejected, dropped int }
	acks := make(chan ackResult, 1)
	go func() {
		var r ackResult
		defer func() { acks <- r }()
		for {
			ws.SetReadDeadline(time.Now().Add(15 * time.Second))
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			f, err := protocol.Decode(b)
			if err != nil || f.Ack == nil {
				continue
			}
			r.acked += len(f.Ack.Seqs)
			for _, rj := range f.Ack.Rejected {
				r.rejected++
				if strings.Contains(rj.Reason, "rate limit") {
					r.dropped++
				}
			}
		}
	}()
	now := time.Now().UnixMilli()
	seq := uint64(0)
	emit := func(ev protocol.Event) {
		seq++
		send(t, ws, &protocol.Frame{Seq: seq, Event: &ev})
	}
	emit(protocol.Event{InvolvedKind: "Pod", Namespace: ns, Name: vpod.Name, UID: string(vpod.UID), Type: "Warning",
		Reason: "Failed", Message: "forged", Count: 1, FirstTime: now, LastTime: now})
	emit(protocol.Event{InvolvedKind: "Node", Name: victim, UID: victim, Type: "Warning", Reason: "NodeNotReady",
		Message: "forged", Count: 1, FirstTime: now, LastTime: now})
	const flood = 1000
	start := time.Now()
	for i := range flood {
		emit(protocol.Event{InvolvedKind: "Node", Name: attacker, UID: attacker, Type: "Normal", Reason: "Flood",
			Message: fmt.Sprintf("event %d", i), Count: 1, FirstTime: now, LastTime: now})
	}
	sent := time.Since(start)
	// Let the writer finish what the hub let through.
	var written []corev1.Event
	eventually(t, 30*time.Second, "the flood's events written", func() (bool, error) {
		prev := len(written)
		// This run's (the API keeps FirstTimestamp to the second): the
		// Events of an earlier run (-count) are still there.
		written = slices.DeleteFunc(eventsAbout(t, "", "Node", attacker, types.UID(attacker)), func(e corev1.Event) bool {
			return e.FirstTimestamp.Time.Before(time.UnixMilli(now).Truncate(time.Second))
		})
		time.Sleep(time.Second)
		return len(written) > 0 && len(written) == prev, fmt.Errorf("%d written so far", len(written))
	})
	ws.Close()
	r := <-acks
	limit := 200 + int(50*sent.Seconds()) + 50
	t.Logf("flood of %d events in %v: %d Event objects written (limit %d), acks: %+v", flood, sent, len(written), limit, r)
	if len(written) > limit {
		t.Errorf("%d events written from a flood of %d, want at most %d", len(written), flood, limit)
	}
	if r.dropped < flood-limit {
		t.Errorf("%d events answered as dropped, want at least %d", r.dropped, flood-limit)
	}
	if evs := eventsAbout(t, ns, "Pod", vpod.Name, vpod.UID); len(evs) != 0 {
		t.Errorf("events about the victim's pod: %s", eventLines(evs))
	}
	if evs := eventsAbout(t, "", "Node", victim, types.UID(victim)); len(evs) != 0 {
		t.Errorf("events about the victim's Node: %s", eventLines(evs))
	}
}

// Events of a crash loop while the link is down are queued in the outbox,
// aggregated, and reach the API server once it is back: the Started count
// then tells every restart made offline.
func TestCRIEventsOffline(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := newCRIEdge(t, c, "e2e-cri-events-off")
	e.start()
	crash := createPod(t, criPod(t, ns, "crash-offline", e.name, `exit 1`))
	evs := waitEvents(t, ns, "Pod", crash.Name, crash.UID, 90*time.Second, "first Started", func(evs []corev1.Event) error {
		if findEvent(evs, "Normal", "Started", "Started container main") == nil {
			return fmt.Errorf("no Started")
		}
		return nil
	})
	e.link.Cut()
	before := findEvent(evs, "Normal", "Started", "Started container main").Count
	// The edge's own count, in its outbox, grows while the link is down.
	var queued int32
	eventually(t, 90*time.Second, "restarts counted offline", func() (bool, error) {
		queued = 0
		err := e.ec.DB.View(func(tx *store.Tx) error {
			return tx.Outbox(0, func(it store.OutboxItem) bool {
				f, err := protocol.Decode(it.Frame)
				if err == nil && f.Event != nil && f.Event.Name == crash.Name && f.Event.Reason == "Started" {
					queued = f.Event.Count
				}
				return true
			})
		})
		return queued >= before+2, fmt.Errorf("Started x%d queued (x%d before the cut), %v", queued, before, err)
	})
	e.link.Heal()
	evs = waitEvents(t, ns, "Pod", crash.Name, crash.UID, 60*time.Second, "offline restarts in the API server", func(evs []corev1.Event) error {
		if st := findEvent(evs, "Normal", "Started", "Started container main"); st == nil || st.Count < queued {
			return fmt.Errorf("Started x%d, want at least x%d", st.Count, queued)
		}
		return nil
	})
	t.Logf("Started x%d before the cut, x%d queued offline; after the heal %d Event objects:\n%s", before, queued, len(evs), eventLines(evs))
}
