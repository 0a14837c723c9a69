package twin

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/devices/mqtt"
)

func mustStep(t *testing.T, e *Engine, at int64, ins ...Input) Output {
	t.Helper()
	var out Output
	for _, in := range ins {
		out = e.Step(time.UnixMilli(at), in)
		if out.Err != nil {
			t.Fatalf("%T: %v", in, out.Err)
		}
	}
	return out
}

func str(s string) *string { return &s }

// thermoLived is thermo after a mapper report, an expected value set at the
// edge and a state change.
func thermoLived(t *testing.T) *Engine {
	e := New("edge-1")
	mustStep(t, e, t0, upsertThermo)
	mustStep(t, e, t1, TwinUpdate{Device: thermo, Msg: report("r", "temperature", "24", "humidity", "40")},
		TwinUpdate{Device: thermo, Msg: expect("x", "label", "hello world")},
		StateUpdate{Device: thermo, EventID: "s", State: "online"})
	return e
}

func TestSnapshot(t *testing.T) {
	e := thermoLived(t)
	got, ok := e.Snapshot(thermo)
	if !ok {
		t.Fatal("no snapshot")
	}
	want := Saved{Version: 3, State: "online", LastOnline: t1, Props: []SavedProp{
		{Name: "humidity", Type: TypeInt, Actual: &SavedValue{Value: "40", Timestamp: t1, Version: mqtt.TwinVersion{Edge: 1}}},
		{Name: "label", Type: TypeString, Expected: &SavedValue{Value: "hello world", Timestamp: t1, Version: mqtt.TwinVersion{Edge: 1}}},
		{Name: "temperature", Type: TypeFloat,
			Expected: &SavedValue{Value: "25", Timestamp: t0, Version: mqtt.TwinVersion{Cloud: 3}},
			Actual:   &SavedValue{Value: "24", Timestamp: t1, Version: mqtt.TwinVersion{Edge: 1}, ObservedDesired: str("25")}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshot:\n got %+v\nwant %+v", got, want)
	}
	if _, ok := e.Snapshot(ghost); ok {
		t.Error("snapshot of an unknown device")
	}
}

// TestRestore: a restore with the version the twin was saved at gives the
// same twin back, edge-set expected values included, and publishes the
// membership and the delta.
func TestRestore(t *testing.T) {
	saved, _ := thermoLived(t).Snapshot(thermo)
	before := render(thermoLived(t).Step(time.UnixMilli(t2), TwinGet{Device: thermo, EventID: "g"}))

	e := New("edge-1")
	out := e.Step(time.UnixMilli(t2), DeviceRestored{DeviceUpserted: upsertThermo, Saved: saved})
	if out.Err != nil {
		t.Fatal(out.Err)
	}
	var topics []string
	for _, p := range out.Publish {
		topics = append(topics, p.Topic.String())
	}
	if want := []string{membership + "updated", delta}; !slices.Equal(topics, want) {
		t.Errorf("restore published %q, want %q", topics, want)
	}
	if d := string(out.Publish[1].Payload); !strings.Contains(d, `"delta":{"label":"hello world","temperature":"25"}`) {
		t.Errorf("delta %s", d)
	}
	if got, _ := e.Snapshot(thermo); !reflect.DeepEqual(got, saved) {
		t.Errorf("snapshot after restore:\n got %+v\nwant %+v", got, saved)
	}
	if after := render(e.Step(time.UnixMilli(t2), TwinGet{Device: thermo, EventID: "g"})); after != before {
		t.Errorf("twin after restore:\n%s\nbefore:\n%s", after, before)
	}
	// A restore sends no status: what was flushed went up already.
	if out := e.Step(time.UnixMilli(t2), Flush{}); len(out.Status) != 0 || !slices.Equal(out.Changed, []mqtt.DeviceID{thermo}) {
		t.Errorf("flush after restore: status %+v changed %v", out.Status, out.Changed)
	}
	if out := e.Step(time.UnixMilli(t2), DeviceRestored{DeviceUpserted: upsertThermo, Saved: saved}); out.Err == nil ||
		!strings.Contains(out.Err.Error(), "already held") {
		t.Errorf("second restore: %v", out.Err)
	}
}

// TestRestoreNewerCloud: the cloud changed the device since the save, so
// its desired values replace the saved expected ones; reported values stay
// unless their property's type changed.
func TestRestoreNewerCloud(t *testing.T) {
	saved, _ := thermoLived(t).Snapshot(thermo)
	e := New("edge-1")
	newer := DeviceUpserted{Device: thermo, Version: 4, Desired: map[string]string{"temperature": "26"}, Model: Model{Properties: []Property{
		{Name: "temperature", Type: TypeFloat, Access: ReadWrite},
		{Name: "humidity", Type: TypeDouble, Access: ReadOnly},
		{Name: "label", Type: TypeString, Access: ReadWrite},
	}}}
	mustStep(t, e, t2, DeviceRestored{DeviceUpserted: newer, Saved: saved})
	got, _ := e.Snapshot(thermo)
	want := Saved{Version: 4, State: "online", LastOnline: t1, Props: []SavedProp{
		{Name: "temperature", Type: TypeFloat,
			Expected: &SavedValue{Value: "26", Timestamp: t2, Version: mqtt.TwinVersion{Cloud: 4}},
			Actual:   &SavedValue{Value: "24", Timestamp: t1, Version: mqtt.TwinVersion{Edge: 1}, ObservedDesired: str("25")}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshot:\n got %+v\nwant %+v", got, want)
	}
}

func TestFlushChangedAndObservedDesired(t *testing.T) {
	e := New("edge-1")
	lampUp := DeviceUpserted{Device: lamp, Model: Model{Properties: []Property{{Name: "switch", Type: TypeBoolean, Access: ReadWrite}}}, Version: 1}
	mustStep(t, e, t0, upsertThermo, lampUp)
	if out := mustStep(t, e, t0, Flush{}); !slices.Equal(out.Changed, []mqtt.DeviceID{lamp, thermo}) || out.Status != nil {
		t.Fatalf("flush after upserts: changed %v status %v", out.Changed, out.Status)
	}
	// An expected value set at the edge changes the twin, not the status.
	mustStep(t, e, t1, TwinUpdate{Device: lamp, Msg: expect("x", "switch", "true")})
	if out := mustStep(t, e, t1, Flush{}); !slices.Equal(out.Changed, []mqtt.DeviceID{lamp}) || out.Status != nil {
		t.Fatalf("flush after expected: changed %v status %v", out.Changed, out.Status)
	}
	mustStep(t, e, t2, TwinUpdate{Device: thermo, Msg: report("r", "temperature", "24", "humidity", "3")})
	out := mustStep(t, e, t2, Flush{})
	want := []Status{{Device: thermo, Reported: []Reported{
		{Name: "humidity", Value: "3", Timestamp: t2},
		{Name: "temperature", Value: "24", Timestamp: t2, ObservedDesired: str("25")},
	}}}
	if !slices.Equal(out.Changed, []mqtt.DeviceID{thermo}) || !reflect.DeepEqual(out.Status, want) {
		t.Fatalf("flush after report: changed %v status %+v", out.Changed, out.Status)
	}
	// A state that does not change changes nothing.
	mustStep(t, e, t3, StateUpdate{Device: thermo, State: "unknown"})
	if out := mustStep(t, e, t3, Flush{}); out.Changed != nil || out.Status != nil {
		t.Fatalf("flush after same state: changed %v status %v", out.Changed, out.Status)
	}
	// A removed device is not listed.
	mustStep(t, e, t3, TwinUpdate{Device: lamp, Msg: report("r", "switch", "false")}, DeviceRemoved{Device: lamp})
	if out := mustStep(t, e, t3, Flush{}); out.Changed != nil || out.Status != nil {
		t.Fatalf("flush after removal: changed %v status %v", out.Changed, out.Status)
	}
}

func TestRepublish(t *testing.T) {
	e := New("edge-1")
	if out := mustStep(t, e, t0, Republish{}); len(out.Publish) != 0 {
		t.Fatalf("republish without devices: %s", render(out))
	}
	lampUp := DeviceUpserted{Device: lamp, Model: Model{Properties: []Property{{Name: "switch", Type: TypeBoolean, Access: ReadWrite}}}, Version: 1}
	mustStep(t, e, t0, upsertThermo, lampUp)
	got := render(mustStep(t, e, t1, Republish{}))
	want := `publish ` + membership + `updated {"event_id":"twin-5","timestamp":1718000002000,"added_devices":[` +
		`{"id":"default/lamp","name":"lamp","state":"unknown","twin":{"switch":{"metadata":{"type":"boolean"}}}},` +
		`{"id":"default/thermo","name":"thermo","state":"unknown","twin":{` + others + `,"temperature":` + tempDesired + `}}],"removed_devices":[]}` + "\n" +
		`publish ` + delta + ` {"event_id":"twin-6","timestamp":1718000002000,"twin":{` + others + `,"temperature":` + tempDesired + `},"delta":{"temperature":"25"}}` + "\n"
	if got != want {
		t.Errorf("republish:\n got:\n%s\nwant:\n%s", got, want)
	}
}

func TestRepublishChunks(t *testing.T) {
	e := New("edge-1")
	n := 2*RepublishChunk + 1
	for i := range n {
		mustStep(t, e, t0, DeviceUpserted{Device: mqtt.DeviceID{Namespace: "ns", Name: fmt.Sprintf("d%03d", i)},
			Model: Model{Properties: []Property{{Name: "switch", Type: TypeBoolean, Access: ReadWrite}}}, Version: 1})
	}
	out := mustStep(t, e, t1, Republish{})
	var sizes []int
	seen := map[string]bool{}
	for _, p := range out.Publish {
		var m mqtt.MembershipUpdated
		if err := json.Unmarshal(p.Payload, &m); err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(m.AddedDevices))
		for _, d := range m.AddedDevices {
			seen[d.ID] = true
		}
	}
	if !slices.Equal(sizes, []int{RepublishChunk, RepublishChunk, 1}) || len(seen) != n {
		t.Errorf("membership messages of %v devices, %d distinct, want %d, %d, 1 and %d", sizes, len(seen), RepublishChunk, RepublishChunk, n)
	}
}
