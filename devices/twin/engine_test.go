package twin

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/devices/mqtt"
)

// Times of the steps, in ms.
const (
	t0 = 1718000001000
	t1 = 1718000002000
	t2 = 1718000003000
	t3 = 1718000004000
)

var (
	thermo = mqtt.DeviceID{Namespace: "default", Name: "thermo"}
	lamp   = mqtt.DeviceID{Namespace: "default", Name: "lamp"}
	ghost  = mqtt.DeviceID{Namespace: "default", Name: "ghost"}
)

func bound(v float64) *float64 { return &v }

var thermoModel = Model{Properties: []Property{
	{Name: "temperature", Type: TypeFloat, Access: ReadWrite, Min: bound(-40), Max: bound(125)},
	{Name: "humidity", Type: TypeInt, Access: ReadOnly, Min: bound(0), Max: bound(100)},
	{Name: "label", Type: TypeString, Access: ReadWrite},
	{Name: "on", Type: TypeBoolean, Access: ReadWrite},
}}

// upsertThermo is the cloud's thermo: desired temperature 25, version 3.
var upsertThermo = DeviceUpserted{Device: thermo, Model: thermoModel, Desired: map[string]string{"temperature": "25"}, Version: 3}

// JSON fragments of thermo's twin, to keep the expected outputs readable.
const (
	// temperature with only the desired value of upsertThermo at t0.
	tempDesired = `{"expected":{"value":"25","metadata":{"timestamp":1718000001000}},"metadata":{"type":"float"},"expected_version":{"cloud":3,"edge":0}}`
	// the other properties, without values.
	others = `"humidity":{"metadata":{"type":"int"}},"label":{"metadata":{"type":"string"}},"on":{"metadata":{"type":"boolean"}}`
	// temperature after the mapper's report of peers.md.
	tempPeers = `{"expected":{"value":"25","metadata":{"timestamp":1718000001000}},"actual":{"value":"23.5","metadata":{"timestamp":1718000000000}},"metadata":{"type":"float"},"expected_version":{"cloud":3,"edge":0},"actual_version":{"cloud":0,"edge":1}}`
)

// peersTwinUpdate is the twin/update of a KubeEdge mapper (peers.md §1).
const peersTwinUpdate = `{"event_id":"e1","timestamp":1718000000000,"twin":{"temperature":{"actual":{"value":"23.5","metadata":{"timestamp":1718000000000}},"metadata":{"type":"float"}}}}`

func decoded(t testing.TB, payload string) mqtt.TwinUpdate {
	t.Helper()
	m, err := mqtt.DecodeTwinUpdate([]byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// report is a twin/update with actual values and no device timestamps.
func report(eventID string, kv ...string) mqtt.TwinUpdate {
	m := mqtt.TwinUpdate{BaseMessage: mqtt.BaseMessage{EventID: eventID}, Twin: map[string]*mqtt.MsgTwin{}}
	for i := 0; i < len(kv); i += 2 {
		v := kv[i+1]
		m.Twin[kv[i]] = &mqtt.MsgTwin{Actual: &mqtt.TwinValue{Value: &v}}
	}
	return m
}

// expect is a twin/update setting expected values.
func expect(eventID string, kv ...string) mqtt.TwinUpdate {
	m := mqtt.TwinUpdate{BaseMessage: mqtt.BaseMessage{EventID: eventID}, Twin: map[string]*mqtt.MsgTwin{}}
	for i := 0; i < len(kv); i += 2 {
		v := kv[i+1]
		m.Twin[kv[i]] = &mqtt.MsgTwin{Expected: &mqtt.TwinValue{Value: &v}}
	}
	return m
}

// rejected is the output for a refused request: the error result and Err.
func rejected(topic, eventID string, ts int64, code int, reason string) string {
	r, _ := json.Marshal(reason)
	return fmt.Sprintf("publish %s {\"event_id\":%q,\"timestamp\":%d,\"code\":%d,\"reason\":%s}\nerr %s: %d %s\n",
		topic, eventID, ts, code, r, topic, code, reason)
}

// render prints an output one line per item, for exact comparison.
func render(out Output) string {
	var b strings.Builder
	for _, p := range out.Publish {
		fmt.Fprintf(&b, "publish %s %s\n", p.Topic, p.Payload)
	}
	for _, s := range out.Status {
		fmt.Fprintf(&b, "status %s state=%q lastOnline=%d", s.Device, s.State, s.LastOnline)
		for _, r := range s.Reported {
			fmt.Fprintf(&b, " %s=%s@%d", r.Name, r.Value, r.Timestamp)
		}
		b.WriteString("\n")
	}
	if out.AfterSave {
		b.WriteString("after save\n")
	}
	if out.Err != nil {
		fmt.Fprintf(&b, "err %v\n", out.Err)
	}
	return b.String()
}

type step struct {
	at   int64
	in   Input
	want string
}

const (
	thermoTopic = "$hw/events/device/default/thermo/"
	updResult   = thermoTopic + "twin/update/result"
	document    = thermoTopic + "twin/update/document"
	delta       = thermoTopic + "twin/update/delta"
	getResult   = thermoTopic + "twin/get/result"
	stateResult = thermoTopic + "state/update/result"
	membership  = "$hw/events/node/edge-1/membership/"
)

func TestEngine(t *testing.T) {
	tests := []struct {
		name string
		// setup is applied at t0 without checking its output.
		setup []Input
		steps []step
	}{
		{
			name: "new device, unchanged and changed desired values",
			steps: []step{
				{t0, upsertThermo, "" +
					`publish ` + membership + `updated {"event_id":"twin-1","timestamp":1718000001000,"added_devices":[{"id":"default/thermo","name":"thermo","state":"unknown","twin":{` + others + `,"temperature":` + tempDesired + `}}],"removed_devices":[]}` + "\n" +
					`publish ` + document + ` {"event_id":"twin-2","timestamp":1718000001000,"twin":{"temperature":{"last":null,"current":` + tempDesired + `}}}` + "\n" +
					`publish ` + delta + ` {"event_id":"twin-3","timestamp":1718000001000,"twin":{` + others + `,"temperature":` + tempDesired + `},"delta":{"temperature":"25"}}` + "\n"},
				// The same device again (a resync): nothing to do.
				{t1, upsertThermo, ""},
				{t2, DeviceUpserted{Device: thermo, Model: thermoModel, Desired: map[string]string{"temperature": "26"}, Version: 4}, "" +
					`publish ` + document + ` {"event_id":"twin-4","timestamp":1718000003000,"twin":{"temperature":{"last":` + tempDesired + `,"current":{"expected":{"value":"26","metadata":{"timestamp":1718000003000}},"metadata":{"type":"float"},"expected_version":{"cloud":4,"edge":0}}}}}` + "\n" +
					`publish ` + delta + ` {"event_id":"twin-5","timestamp":1718000003000,"twin":{` + others + `,"temperature":{"expected":{"value":"26","metadata":{"timestamp":1718000003000}},"metadata":{"type":"float"},"expected_version":{"cloud":4,"edge":0}}},"delta":{"temperature":"26"}}` + "\n"},
				{t3, upsertThermo, "err upsert device default/thermo: version 3 older than 4, ignored\n"},
			},
		},
		{
			name: "bad desired values are ignored, the device is added",
			steps: []step{
				{t0, DeviceUpserted{Device: thermo, Model: thermoModel, Version: 1,
					Desired: map[string]string{"humidity": "5", "nope": "1", "temperature": "200"}}, "" +
					`publish ` + membership + `updated {"event_id":"twin-1","timestamp":1718000001000,"added_devices":[{"id":"default/thermo","name":"thermo","state":"unknown","twin":{` + others + `,"temperature":{"metadata":{"type":"float"}}}}],"removed_devices":[]}` + "\n" +
					"err upsert device default/thermo: " +
					"property \"humidity\" is ReadOnly: desired value ignored\n" +
					"property \"nope\" is not in the model: desired value ignored\n" +
					"property \"temperature\": desired value 200 is above the maximum 125: ignored\n"},
				{t1, DeviceUpserted{Device: thermo, Model: Model{Properties: []Property{{Name: "x", Type: "LONG", Access: ReadWrite}}}},
					"err upsert device default/thermo: model: property \"x\": type \"LONG\" is none of INT, FLOAT, DOUBLE, STRING, BOOLEAN, BYTES\n"},
			},
		},
		{
			name:  "mapper report from peers.md, then status",
			setup: []Input{upsertThermo},
			steps: []step{
				{t1, TwinUpdate{Device: thermo, Msg: decoded(t, peersTwinUpdate)}, "" +
					`publish ` + updResult + ` {"event_id":"e1","timestamp":1718000002000,"twin":{"temperature":` + tempPeers + `}}` + "\n" +
					`publish ` + document + ` {"event_id":"e1","timestamp":1718000002000,"twin":{"temperature":{"last":` + tempDesired + `,"current":` + tempPeers + `}}}` + "\n" +
					`publish ` + delta + ` {"event_id":"twin-4","timestamp":1718000002000,"twin":{` + others + `,"temperature":` + tempPeers + `},"delta":{"temperature":"25"}}` + "\n" +
					"after save\n"},
				{t2, Flush{}, `status default/thermo state="" lastOnline=0 temperature=23.5@1718000000000` + "\n"},
				{t3, Flush{}, ""},
			},
		},
		{
			name:  "reports reaching the desired value end the delta; status is coalesced per property",
			setup: []Input{upsertThermo},
			steps: []step{
				{t1, TwinUpdate{Device: thermo, Msg: report("a", "temperature", "24")}, "" +
					`publish ` + updResult + ` {"event_id":"a","timestamp":1718000002000,"twin":{"temperature":{"expected":{"value":"25","metadata":{"timestamp":1718000001000}},"actual":{"value":"24","metadata":{"timestamp":1718000002000}},"metadata":{"type":"float"},"expected_version":{"cloud":3,"edge":0},"actual_version":{"cloud":0,"edge":1}}}}` + "\n" +
					`publish ` + document + ` {"event_id":"a","timestamp":1718000002000,"twin":{"temperature":{"last":` + tempDesired + `,"current":{"expected":{"value":"25","metadata":{"timestamp":1718000001000}},"actual":{"value":"24","metadata":{"timestamp":1718000002000}},"metadata":{"type":"float"},"expected_version":{"cloud":3,"edge":0},"actual_version":{"cloud":0,"edge":1}}}}}` + "\n" +
					`publish ` + delta + ` {"event_id":"twin-4","timestamp":1718000002000,"twin":{` + others + `,"temperature":{"expected":{"value":"25","metadata":{"timestamp":1718000001000}},"actual":{"value":"24","metadata":{"timestamp":1718000002000}},"metadata":{"type":"float"},"expected_version":{"cloud":3,"edge":0},"actual_version":{"cloud":0,"edge":1}}},"delta":{"temperature":"25"}}` + "\n" +
					"after save\n"},
				{t2, TwinUpdate{Device: thermo, Msg: report("b", "temperature", "25", "humidity", "40")}, "" +
					`publish ` + updResult + ` {"event_id":"b","timestamp":1718000003000,"twin":{"humidity":{"actual":{"value":"40","metadata":{"timestamp":1718000003000}},"metadata":{"type":"int"},"actual_version":{"cloud":0,"edge":1}},"temperature":{"expected":{"value":"25","metadata":{"timestamp":1718000001000}},"actual":{"value":"25","metadata":{"timestamp":1718000003000}},"metadata":{"type":"float"},"expected_version":{"cloud":3,"edge":0},"actual_version":{"cloud":0,"edge":2}}}}` + "\n" +
					`publish ` + document + ` {"event_id":"b","timestamp":1718000003000,"twin":{"humidity":{"last":null,"current":{"actual":{"value":"40","metadata":{"timestamp":1718000003000}},"metadata":{"type":"int"},"actual_version":{"cloud":0,"edge":1}}},"temperature":{"last":{"expected":{"value":"25","metadata":{"timestamp":1718000001000}},"actual":{"value":"24","metadata":{"timestamp":1718000002000}},"metadata":{"type":"float"},"expected_version":{"cloud":3,"edge":0},"actual_version":{"cloud":0,"edge":1}},"current":{"expected":{"value":"25","metadata":{"timestamp":1718000001000}},"actual":{"value":"25","metadata":{"timestamp":1718000003000}},"metadata":{"type":"float"},"expected_version":{"cloud":3,"edge":0},"actual_version":{"cloud":0,"edge":2}}}}}` + "\n" +
					"after save\n"},
				{t3, Flush{}, `status default/thermo state="" lastOnline=0 humidity=40@1718000003000 temperature=25@1718000003000` + "\n"},
			},
		},
		{
			name:  "bad reports get 400 and change nothing",
			setup: []Input{upsertThermo},
			steps: []step{
				{t1, TwinUpdate{Device: thermo, Msg: report("x1", "temperature", "hot")},
					rejected(updResult, "x1", t1, 400, `property "temperature": actual value "hot" is not a finite FLOAT`)},
				{t1, TwinUpdate{Device: thermo, Msg: report("x2", "temperature", "130")},
					rejected(updResult, "x2", t1, 400, `property "temperature": actual value 130 is above the maximum 125`)},
				{t1, TwinUpdate{Device: thermo, Msg: report("x3", "temperature", "NaN")},
					rejected(updResult, "x3", t1, 400, `property "temperature": actual value "NaN" is not a finite FLOAT`)},
				{t1, TwinUpdate{Device: thermo, Msg: report("x4", "humidity", "-1")},
					rejected(updResult, "x4", t1, 400, `property "humidity": actual value -1 is below the minimum 0`)},
				{t1, TwinUpdate{Device: thermo, Msg: report("x5", "humidity", "4.5")},
					rejected(updResult, "x5", t1, 400, `property "humidity": actual value "4.5" is not an INT`)},
				{t1, TwinUpdate{Device: thermo, Msg: report("x6", "on", "yes")},
					rejected(updResult, "x6", t1, 400, `property "on": actual value "yes" is not a BOOLEAN (true or false)`)},
				{t1, TwinUpdate{Device: thermo, Msg: report("x7", "pressure", "1")},
					rejected(updResult, "x7", t1, 400, `property "pressure" is not in the device model`)},
				{t1, TwinUpdate{Device: thermo, Msg: expect("x8", "humidity", "5")},
					rejected(updResult, "x8", t1, 400, `property "humidity" is ReadOnly: its expected value cannot be set`)},
				{t1, TwinUpdate{Device: thermo, Msg: expect("x9", "temperature", "-41")},
					rejected(updResult, "x9", t1, 400, `property "temperature": expected value -41 is below the minimum -40`)},
				// One bad property refuses the whole update.
				{t1, TwinUpdate{Device: thermo, Msg: report("x10", "temperature", "20", "on", "1")},
					rejected(updResult, "x10", t1, 400, `property "on": actual value "1" is not a BOOLEAN (true or false)`)},
				{t1, TwinUpdate{Device: thermo, Msg: mqtt.TwinUpdate{BaseMessage: mqtt.BaseMessage{EventID: "x11"}}},
					rejected(updResult, "x11", t1, 400, `update has no twin`)},
				{t1, TwinUpdate{Device: ghost, Msg: report("x12", "temperature", "20")},
					rejected("$hw/events/device/default/ghost/twin/update/result", "x12", t1, 404, `device default/ghost not found`)},
				// Nothing changed: the twin is as the cloud set it, no status.
				{t2, TwinGet{Device: thermo, EventID: "g"},
					`publish ` + getResult + ` {"event_id":"g","timestamp":1718000003000,"twin":{` + others + `,"temperature":` + tempDesired + `}}` + "\n"},
				{t2, Flush{}, ""},
			},
		},
		{
			name:  "expected set at the edge on a ReadWrite property, then replaced by the cloud",
			setup: []Input{upsertThermo},
			steps: []step{
				{t1, TwinUpdate{Device: thermo, Msg: expect("s", "label", "hello world")}, "" +
					`publish ` + updResult + ` {"event_id":"s","timestamp":1718000002000,"twin":{"label":{"expected":{"value":"hello world","metadata":{"timestamp":1718000002000}},"metadata":{"type":"string"},"expected_version":{"cloud":0,"edge":1}}}}` + "\n" +
					`publish ` + document + ` {"event_id":"s","timestamp":1718000002000,"twin":{"label":{"last":null,"current":{"expected":{"value":"hello world","metadata":{"timestamp":1718000002000}},"metadata":{"type":"string"},"expected_version":{"cloud":0,"edge":1}}}}}` + "\n" +
					`publish ` + delta + ` {"event_id":"twin-4","timestamp":1718000002000,"twin":{"humidity":{"metadata":{"type":"int"}},"label":{"expected":{"value":"hello world","metadata":{"timestamp":1718000002000}},"metadata":{"type":"string"},"expected_version":{"cloud":0,"edge":1}},"on":{"metadata":{"type":"boolean"}},"temperature":` + tempDesired + `},"delta":{"label":"hello world","temperature":"25"}}` + "\n" +
					"after save\n"},
				{t1, Flush{}, ""},
				{t2, upsertThermo, "" +
					`publish ` + document + ` {"event_id":"twin-5","timestamp":1718000003000,"twin":{"label":{"last":{"expected":{"value":"hello world","metadata":{"timestamp":1718000002000}},"metadata":{"type":"string"},"expected_version":{"cloud":0,"edge":1}},"current":null}}}` + "\n" +
					`publish ` + delta + ` {"event_id":"twin-6","timestamp":1718000003000,"twin":{` + others + `,"temperature":` + tempDesired + `},"delta":{"temperature":"25"}}` + "\n"},
			},
		},
		{
			name:  "twin get",
			setup: []Input{upsertThermo, TwinUpdate{Device: thermo, Msg: decoded(t, peersTwinUpdate)}},
			steps: []step{
				{t1, TwinGet{Device: thermo, EventID: "e2"},
					`publish ` + getResult + ` {"event_id":"e2","timestamp":1718000002000,"twin":{` + others + `,"temperature":` + tempPeers + `}}` + "\n"},
				{t1, TwinGet{Device: ghost, EventID: "e3"},
					rejected("$hw/events/device/default/ghost/twin/get/result", "e3", t1, 404, "device default/ghost not found")},
			},
		},
		{
			name:  "state update",
			setup: []Input{upsertThermo},
			steps: []step{
				{t1, StateUpdate{Device: thermo, EventID: "s1", State: "online"},
					`publish ` + stateResult + ` {"event_id":"s1","timestamp":1718000002000,"state":"online"}` + "\n" +
						"after save\n"},
				{t2, StateUpdate{Device: thermo, EventID: "s2", State: "online"},
					`publish ` + stateResult + ` {"event_id":"s2","timestamp":1718000003000,"state":"online"}` + "\n"},
				{t2, StateUpdate{Device: thermo, EventID: "s3", State: "sleepy"},
					rejected(stateResult, "s3", t2, 400, `state "sleepy" is none of ok, online, offline, unhealthy, unknown`)},
				{t2, StateUpdate{Device: ghost, EventID: "s4", State: "ok"},
					rejected("$hw/events/device/default/ghost/state/update/result", "s4", t2, 404, `device default/ghost not found`)},
				{t3, StateUpdate{Device: thermo, EventID: "s5", State: "offline"},
					`publish ` + stateResult + ` {"event_id":"s5","timestamp":1718000004000,"state":"offline"}` + "\n" +
						"after save\n"},
				// Coalesced: the latest state, and when it last went online.
				{t3, Flush{}, `status default/thermo state="offline" lastOnline=1718000002000` + "\n"},
				{t3, Flush{}, ""},
			},
		},
		{
			name: "membership get lists the node's devices sorted",
			setup: []Input{
				upsertThermo,
				DeviceUpserted{Device: lamp, Model: Model{Properties: []Property{{Name: "switch", Type: TypeBoolean, Access: ReadWrite}}}, Version: 1},
				StateUpdate{Device: lamp, State: "ok"},
			},
			steps: []step{
				{t1, MembershipGet{EventID: "m1"},
					`publish ` + membership + `get/result {"event_id":"m1","timestamp":1718000002000,"devices":[` +
						`{"id":"default/lamp","name":"lamp","state":"ok","twin":{"switch":{"metadata":{"type":"boolean"}}}},` +
						`{"id":"default/thermo","name":"thermo","state":"unknown","twin":{` + others + `,"temperature":` + tempDesired + `}}]}` + "\n"},
			},
		},
		{
			name:  "device removed: membership updated, pending status dropped",
			setup: []Input{upsertThermo, TwinUpdate{Device: thermo, Msg: decoded(t, peersTwinUpdate)}},
			steps: []step{
				{t1, DeviceRemoved{Device: thermo},
					`publish ` + membership + `updated {"event_id":"twin-5","timestamp":1718000002000,"added_devices":[],"removed_devices":[{"id":"default/thermo","name":"thermo"}]}` + "\n"},
				{t1, Flush{}, ""},
				{t2, DeviceRemoved{Device: thermo}, ""},
				{t2, MembershipGet{EventID: "m"}, `publish ` + membership + `get/result {"event_id":"m","timestamp":1718000003000,"devices":[]}` + "\n"},
			},
		},
		{
			name:  "requests that did not decode get 400",
			setup: []Input{upsertThermo},
			steps: []step{
				{t1, BadRequest{Topic: mqtt.DeviceTopic(mqtt.KindTwinUpdate, thermo), Err: errors.New("decode twin update: malformed payload: unexpected EOF")},
					rejected(updResult, "", t1, 400, "decode twin update: malformed payload: unexpected EOF")},
				{t1, BadRequest{Topic: mqtt.NodeTopic(mqtt.KindMembershipGet, "edge-1"), Err: errors.New("bad")},
					rejected(membership+"get/result", "", t1, 400, "bad")},
				{t1, BadRequest{Topic: mqtt.DeviceTopic(mqtt.KindTwinUpdateDelta, thermo), Err: errors.New("bad")},
					"err bad request on " + delta + ": bad\n"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := New("edge-1")
			for _, in := range tt.setup {
				if out := e.Step(time.UnixMilli(t0), in); out.Err != nil {
					t.Fatalf("setup %T: %v", in, out.Err)
				}
			}
			for i, s := range tt.steps {
				got := render(e.Step(time.UnixMilli(s.at), s.in))
				if got != s.want {
					t.Errorf("step %d (%T):\n got:\n%s\nwant:\n%s", i, s.in, got, s.want)
				}
			}
		})
	}
}

// BenchmarkTwinUpdate measures the engine alone on a mapper's report of one
// property: validation, the state change and the encoding of result,
// document and delta.
func BenchmarkTwinUpdate(b *testing.B) {
	e := New("edge-1")
	e.Step(time.UnixMilli(t0), upsertThermo)
	ins := [2]Input{
		TwinUpdate{Device: thermo, Msg: decoded(b, peersTwinUpdate)},
		TwinUpdate{Device: thermo, Msg: report("r", "temperature", "24.5")},
	}
	now := time.UnixMilli(t1)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if out := e.Step(now, ins[i&1]); out.Err != nil {
			b.Fatal(out.Err)
		}
	}
}

func TestModelChange(t *testing.T) {
	e := New("edge-1")
	for _, in := range []Input{upsertThermo, TwinUpdate{Device: thermo, Msg: decoded(t, peersTwinUpdate)}, TwinUpdate{Device: thermo, Msg: report("h", "humidity", "40")}} {
		if out := e.Step(time.UnixMilli(t0), in); out.Err != nil {
			t.Fatal(out.Err)
		}
	}
	// temperature becomes DOUBLE (its values are dropped), label goes.
	changed := DeviceUpserted{Device: thermo, Version: 4, Desired: map[string]string{"temperature": "25"}, Model: Model{Properties: []Property{
		{Name: "temperature", Type: TypeDouble, Access: ReadWrite},
		{Name: "humidity", Type: TypeInt, Access: ReadOnly},
		{Name: "on", Type: TypeBoolean, Access: ReadWrite},
	}}}
	const (
		hum   = `{"actual":{"value":"40","metadata":{"timestamp":1718000001000}},"metadata":{"type":"int"},"actual_version":{"cloud":0,"edge":1}}`
		tempD = `{"expected":{"value":"25","metadata":{"timestamp":1718000002000}},"metadata":{"type":"double"},"expected_version":{"cloud":4,"edge":0}}`
	)
	steps := []step{
		{t1, changed, "" +
			`publish ` + document + ` {"event_id":"twin-6","timestamp":1718000002000,"twin":{"temperature":{"last":null,"current":` + tempD + `}}}` + "\n" +
			`publish ` + delta + ` {"event_id":"twin-7","timestamp":1718000002000,"twin":{"humidity":` + hum + `,"on":{"metadata":{"type":"boolean"}},"temperature":` + tempD + `},"delta":{"temperature":"25"}}` + "\n"},
		// The pending temperature report went with its type; humidity stays.
		{t1, Flush{}, `status default/thermo state="" lastOnline=0 humidity=40@1718000001000` + "\n"},
		{t2, TwinUpdate{Device: thermo, Msg: report("l", "label", "x")},
			rejected(updResult, "l", t2, 400, `property "label" is not in the device model`)},
	}
	for i, s := range steps {
		if got := render(e.Step(time.UnixMilli(s.at), s.in)); got != s.want {
			t.Errorf("step %d (%T):\n got:\n%s\nwant:\n%s", i, s.in, got, s.want)
		}
	}
}

func TestModelValidate(t *testing.T) {
	tests := []struct {
		p    []Property
		want string
	}{
		{[]Property{{Name: "a", Type: TypeInt, Access: ReadWrite}, {Name: "a", Type: TypeInt, Access: ReadOnly}}, `model: property "a" appears twice`},
		{[]Property{{Name: "a b", Type: TypeInt, Access: ReadWrite}}, `model: invalid property name "a b": character ' ' not in [A-Za-z0-9-_.,:/@#]`},
		{[]Property{{Name: "a", Type: TypeInt, Access: "WriteOnly"}}, `model: property "a": access mode "WriteOnly" is neither ReadWrite nor ReadOnly`},
		{[]Property{{Name: "a", Type: TypeString, Access: ReadWrite, Max: bound(1)}}, `model: property "a": minimum or maximum on a STRING property`},
		{[]Property{{Name: "a", Type: TypeDouble, Access: ReadWrite, Min: bound(2), Max: bound(1)}}, `model: property "a": minimum 2 above maximum 1`},
		{[]Property{{Name: "a", Type: TypeBytes, Access: ReadOnly}, {Name: "b", Type: TypeInt, Access: ReadWrite, Min: bound(1), Max: bound(1)}}, ""},
	}
	for _, tt := range tests {
		err := Model{Properties: tt.p}.Validate()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("Validate(%+v) = %q, want %q", tt.p, got, tt.want)
		}
	}
}
