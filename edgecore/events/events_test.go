package events

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

var t0 = time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)

func testPod() *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "uid-1"},
		Spec: corev1.PodSpec{InitContainers: []corev1.Container{{Name: "init"}}, Containers: []corev1.Container{{Name: "app"}}}}
}

func backOff(pod *corev1.Pod) Event {
	return Eventf(PodObject(pod, "app"), Warning, BackOff, "Back-off restarting failed container %s in pod %s", "app", FormatPod(pod))
}

func TestObjects(t *testing.T) {
	p := testPod()
	if got := PodObject(p, "init").FieldPath; got != "spec.initContainers{init}" {
		t.Errorf("init field path %q", got)
	}
	if got := PodObject(p, "app").FieldPath; got != "spec.containers{app}" {
		t.Errorf("field path %q", got)
	}
	if got := FormatPod(p); got != "web_shop(uid-1)" {
		t.Errorf("FormatPod %q", got)
	}
	if n := NodeObject("edge-1"); n.Kind != "Node" || n.UID != "edge-1" || n.Namespace != "" {
		t.Errorf("node object %+v", n)
	}
}

// A crash loop is one event whose count grows.
func TestCorrelatorRepeats(t *testing.T) {
	c := NewCorrelator(CorrelatorConfig{})
	p := testPod()
	var first Outcome
	for i := range 20 {
		out := c.Observe(backOff(p), t0.Add(time.Duration(i)*10*time.Second))
		if i == 0 {
			first = out
		}
		if out.Key != first.Key {
			t.Fatalf("repeat %d has key %s, want %s", i, out.Key, first.Key)
		}
		if !out.Send || out.Event.Count != int32(i+1) || out.Event.FirstTime != t0.UnixMilli() ||
			out.Event.LastTime != t0.Add(time.Duration(i)*10*time.Second).UnixMilli() {
			t.Fatalf("repeat %d: %+v", i, out)
		}
	}
	e := first.Event
	if e.InvolvedKind != "Pod" || e.Namespace != "shop" || e.Name != "web" || e.UID != "uid-1" ||
		e.FieldPath != "spec.containers{app}" || e.Type != "Warning" || e.Reason != "BackOff" ||
		e.Message != "Back-off restarting failed container app in pod web_shop(uid-1)" {
		t.Fatalf("event %+v", e)
	}
	// Another reason, another container or another pod is another event.
	other := c.Observe(Eventf(PodObject(p, "app"), Normal, Started, "Started container app"), t0)
	if other.Key == first.Key || other.Event.Count != 1 {
		t.Fatalf("Started aggregated with BackOff: %+v", other)
	}
}

// More than MaxSimilar messages of one object and reason are combined.
func TestCorrelatorSimilar(t *testing.T) {
	c := NewCorrelator(CorrelatorConfig{Burst: 1000})
	p := testPod()
	keys := map[string]bool{}
	var last Outcome
	for i := range 30 {
		last = c.Observe(Eventf(PodObject(p, "app"), Warning, Unhealthy, "Liveness probe failed: attempt %d", i), t0.Add(time.Duration(i)*time.Second))
		keys[last.Key] = true
	}
	if len(keys) != 11 {
		t.Fatalf("%d events, want 10 apart and 1 combined", len(keys))
	}
	if !strings.HasPrefix(last.Event.Message, combinedPrefix) || last.Event.Count != 20 {
		t.Fatalf("combined event %+v", last.Event)
	}
	// After the window, messages are apart again.
	out := c.Observe(Eventf(PodObject(p, "app"), Warning, Unhealthy, "Liveness probe failed: later"), t0.Add(time.Hour))
	if strings.HasPrefix(out.Event.Message, combinedPrefix) {
		t.Fatalf("combined after the window: %+v", out.Event)
	}
}

// An object's updates past its bucket are not sent, but counted: the next
// one sent carries the count.
func TestCorrelatorBucket(t *testing.T) {
	c := NewCorrelator(CorrelatorConfig{Burst: 25, RefillEvery: 5 * time.Minute})
	p := testPod()
	sent := 0
	for i := range 100 {
		if c.Observe(backOff(p), t0.Add(time.Duration(i)*time.Millisecond)).Send {
			sent++
		}
	}
	if sent != 25 {
		t.Fatalf("%d sent at once, want the burst of 25", sent)
	}
	// Another object has its own bucket.
	q := testPod()
	q.Name, q.UID = "db", "uid-2"
	if !c.Observe(backOff(q), t0).Send {
		t.Fatal("another pod's event held back")
	}
	out := c.Observe(backOff(p), t0.Add(5*time.Minute+time.Second))
	if !out.Send || out.Event.Count != 101 {
		t.Fatalf("after a refill: %+v", out)
	}
}

func TestCorrelatorBounded(t *testing.T) {
	c := NewCorrelator(CorrelatorConfig{MaxKeys: 100})
	for i := range 1000 {
		p := testPod()
		p.Name = fmt.Sprintf("p%d", i)
		c.Observe(backOff(p), t0)
	}
	if c.seen.len() != 100 || c.similar.len() != 100 || c.buckets.len() != 100 {
		t.Fatalf("caches %d %d %d, want 100 each", c.seen.len(), c.similar.len(), c.buckets.len())
	}
	long := Eventf(NodeObject("n"), Warning, Failed, "%s", strings.Repeat("é", 2000))
	if m := c.Observe(long, t0).Event.Message; len(m) > MaxMessage || !strings.HasPrefix(long.Message, m) {
		t.Fatalf("message of %d bytes not cut at %d on a rune boundary", len(m), MaxMessage)
	}
}

func openDB(t *testing.T) *store.DB {
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func outboxEvents(t *testing.T, db *store.DB) map[string]*protocol.Event {
	out := map[string]*protocol.Event{}
	err := db.View(func(tx *store.Tx) error {
		return tx.Outbox(0, func(it store.OutboxItem) bool {
			f, err := protocol.Decode(it.Frame)
			if err != nil {
				t.Fatal(err)
			}
			if f.Event != nil {
				out[it.Key] = f.Event
			}
			return true
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Offline, a crash loop of an hour holds one outbox entry with the newest
// count, and a storm past the queue is dropped and counted.
func TestRecorderOutbox(t *testing.T) {
	db := openDB(t)
	now := t0
	queued := 0
	r, err := New(Config{Queue: 500, Now: func() time.Time { return now },
		Correlator: CorrelatorConfig{Burst: 1000}}, db, func() { queued++ })
	if err != nil {
		t.Fatal(err)
	}
	p := testPod()
	for range 360 {
		r.Record(backOff(p))
		now = now.Add(10 * time.Second)
	}
	r.Record(Eventf(NodeObject("edge-1"), Normal, Starting, "Starting edgecore."))
	for range 200 { // past the queue
		r.Record(backOff(p))
	}
	if s := r.Stats(); s.Recorded != 500 || s.Dropped != 61 {
		t.Fatalf("stats %+v, want 500 recorded, 61 dropped", s)
	}
	// Run the owner loop by hand: Start would block.
	for len(r.in) > 0 {
		var batch []timedEvent
		for len(batch) < batchMax && len(r.in) > 0 {
			batch = append(batch, <-r.in)
		}
		r.write(batch)
	}
	evs := outboxEvents(t, db)
	if len(evs) != 2 {
		t.Fatalf("%d outbox events, want 2: %v", len(evs), evs)
	}
	var bo *protocol.Event
	for k, e := range evs {
		if !strings.HasPrefix(k, "event/") {
			t.Errorf("outbox key %q", k)
		}
		if e.Reason == "BackOff" {
			bo = e
		}
	}
	if bo == nil || bo.Count != 499 || bo.FirstTime != t0.UnixMilli() {
		t.Fatalf("BackOff in the outbox: %+v", bo)
	}
	if queued == 0 {
		t.Fatal("queued never called")
	}
}

// Events are the first outbox entries dropped when it is full (the store's
// Options.OutboxMax).
func TestRecorderOutboxMax(t *testing.T) {
	db, err := store.OpenWith(filepath.Join(t.TempDir(), "edge.db"), store.Options{OutboxMax: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r, err := New(Config{Now: func() time.Time { return t0 }}, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	var batch []timedEvent
	for i := range 50 {
		p := testPod()
		p.Name = fmt.Sprintf("p%d", i)
		batch = append(batch, timedEvent{ev: backOff(p), at: t0})
	}
	r.write(batch)
	if n := len(outboxEvents(t, db)); n != 10 {
		t.Fatalf("%d events in the outbox, want OutboxMax 10", n)
	}
}

type recorded []Event

func (r *recorded) Record(e Event) { *r = append(*r, e) }

// The node's condition events: all at the first observation, then only
// changes, with the kubelet's reasons.
func TestNodeConditions(t *testing.T) {
	var got recorded
	n := &NodeConditions{Node: "edge-1", Recorder: &got}
	cond := func(typ corev1.NodeConditionType, st corev1.ConditionStatus) corev1.NodeCondition {
		return corev1.NodeCondition{Type: typ, Status: st}
	}
	healthy := []corev1.NodeCondition{cond(corev1.NodeMemoryPressure, corev1.ConditionFalse),
		cond(corev1.NodeDiskPressure, corev1.ConditionFalse), cond(corev1.NodePIDPressure, corev1.ConditionFalse),
		cond(corev1.NodeReady, corev1.ConditionTrue)}
	n.Observe(healthy)
	n.Observe(healthy)
	sick := []corev1.NodeCondition{cond(corev1.NodeMemoryPressure, corev1.ConditionFalse),
		cond(corev1.NodeDiskPressure, corev1.ConditionTrue), cond(corev1.NodePIDPressure, corev1.ConditionFalse),
		cond(corev1.NodeReady, corev1.ConditionFalse)}
	n.Observe(sick)
	var reasons []string
	for _, e := range got {
		if e.Object != NodeObject("edge-1") || e.Type != Normal || e.Message != "Node edge-1 status is now: "+string(e.Reason) {
			t.Errorf("event %+v", e)
		}
		reasons = append(reasons, string(e.Reason))
	}
	want := "NodeHasSufficientMemory NodeHasNoDiskPressure NodeHasSufficientPID NodeReady NodeHasDiskPressure NodeNotReady"
	if strings.Join(reasons, " ") != want {
		t.Fatalf("reasons %v, want %s", reasons, want)
	}
}
