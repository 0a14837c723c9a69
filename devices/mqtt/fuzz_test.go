package mqtt

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzDecodeTwinUpdate checks the twin/update decoder: it refuses payloads
// over MaxPayloadBytes, its errors wrap one of its sentinels, and what it
// accepts holds only valid names and values and survives a JSON round trip.
func FuzzDecodeTwinUpdate(f *testing.F) {
	for _, s := range []string{
		peersTwinUpdate,
		`{"event_id":"e2","timestamp":1718000000001,"twin":{"setpoint":{"expected":{"value":"22","metadata":{"timestamp":1}},"optional":false,"metadata":{"type":"int"},"expected_version":{"cloud":3,"edge":0}}}}`,
		`{"event_id":"","timestamp":0,"twin":{"A-z_0.9,:/@#":{"actual":{"value":"hello world"},"actual_version":{"cloud":0,"edge":7}},"t":{"expected":{"value":""}}}}`,
		`{"event_id":"e","timestamp":1,"twin":{"t":null}}`,
		`{"event_id":"e","timestamp":1,"twin":{"t":{"actual":{"value":"1"}}}} {}`,
		`[]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := DecodeTwinUpdate(in)
		if err != nil {
			if !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrName) && !errors.Is(err, ErrValue) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		if len(in) > MaxPayloadBytes {
			t.Fatalf("accepted %d bytes, over the limit of %d", len(in), MaxPayloadBytes)
		}
		if len(m.Twin) == 0 {
			t.Fatal("accepted an update with no twin")
		}
		for name, tw := range m.Twin {
			if ValidateName(name) != nil || tw == nil || tw.Expected == nil && tw.Actual == nil {
				t.Fatalf("accepted property %q: %+v", name, tw)
			}
			for _, v := range []*TwinValue{tw.Expected, tw.Actual} {
				if v != nil && (v.Value == nil || len(*v.Value) >= MaxValueBytes) {
					t.Fatalf("accepted property %q with value %+v", name, v)
				}
			}
		}
		// What the edge accepted it can send back: the encoding decodes
		// again to the same update (JSON may grow, by escapes: no limit).
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		var again TwinUpdate
		if err := json.Unmarshal(b, &again); err != nil {
			t.Fatal(err)
		}
		if b2, _ := json.Marshal(again); string(b2) != string(b) {
			t.Fatalf("round trip changed the update:\n%s\n%s", b, b2)
		}
	})
}

// FuzzDecodeStateUpdate checks the state/update decoder and DecodeBase:
// the size limit, wrapped errors, and only the documented states.
func FuzzDecodeStateUpdate(f *testing.F) {
	for _, s := range []string{
		`{"event_id":"e3","timestamp":5,"state":"online"}`,
		`{"event_id":"e4","timestamp":1718000000000,"state":"unhealthy"}`,
		`{"event_id":"e","timestamp":1,"state":"on fire"}`,
		`{"event_id":"e","timestamp":1}`,
		`{"event_id":"g1","timestamp":1718000000000}`,
		`{"event_id":"e","timestamp":1.5}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := DecodeStateUpdate(in)
		if err == nil {
			if len(in) > MaxPayloadBytes || !ValidState(m.State) {
				t.Fatalf("accepted %d bytes with state %q", len(in), m.State)
			}
		} else if !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		if _, err := DecodeBase(in); err == nil && len(in) > MaxPayloadBytes {
			t.Fatalf("DecodeBase accepted %d bytes", len(in))
		} else if err != nil && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("DecodeBase: error wraps no sentinel: %v", err)
		}
	})
}

// FuzzParseTopic checks ParseTopic: an accepted topic prints back to the
// same string and parses again to the same Topic; its segments are valid;
// a device → edge topic matches exactly one of the edge's subscriptions,
// and a topic the edge publishes matches none (the edge never hears
// itself).
func FuzzParseTopic(f *testing.F) {
	dev := DeviceID{Namespace: "default", Name: "thermo-1"}
	for k := KindTwinUpdate; k < numKinds; k++ {
		switch {
		case k.IsDevice():
			f.Add(DeviceTopic(k, dev).String())
		case k.IsNode():
			f.Add(NodeTopic(k, "edge-1").String())
		}
	}
	for _, s := range []string{
		"$hw/events/connected/mapper-7", "$hw/events/disconnected/mapper-7", "$hw/events/upload/a/b/c",
		"$hw/events/device/+/thermo/twin/update", "$hw/events/device/default/twin/update", "$hw/events/node/edge-1/",
		FilterTwin, FilterUpload, "",
	} {
		f.Add(s)
	}
	toEdge := map[Kind]bool{KindTwinUpdate: true, KindTwinGet: true, KindStateUpdate: true, KindMembershipGet: true, KindUpload: true}
	fromEdge := map[Kind]bool{KindTwinUpdateResult: true, KindTwinUpdateDelta: true, KindTwinUpdateDocument: true,
		KindTwinGetResult: true, KindStateUpdateResult: true, KindDeviceUpdated: true,
		KindMembershipGetResult: true, KindMembershipUpdated: true}
	f.Fuzz(func(t *testing.T, s string) {
		tp, err := ParseTopic(s)
		if err != nil {
			if !errors.Is(err, ErrUnknownTopic) {
				t.Fatalf("error does not wrap ErrUnknownTopic: %v", err)
			}
			return
		}
		if tp.Kind == KindInvalid || tp.Kind >= numKinds {
			t.Fatalf("accepted %q as kind %v", s, tp.Kind)
		}
		if got := tp.String(); got != s {
			t.Fatalf("ParseTopic(%q).String() = %q", s, got)
		}
		again, err := ParseTopic(tp.String())
		if err != nil || again != tp {
			t.Fatalf("ParseTopic(%q) = %+v, then %+v, %v", s, tp, again, err)
		}
		if tp.Kind.IsDevice() && tp.Device.Validate() != nil || tp.Kind.IsNode() && validSegment(tp.Node) != nil {
			t.Fatalf("accepted %q with bad segments: %+v", s, tp)
		}
		if strings.ContainsAny(tp.Client+tp.Path, "+#\x00") {
			t.Fatalf("accepted %q with a wildcard: %+v", s, tp)
		}
		n := 0
		for _, filter := range EdgeSubscriptions() {
			if Match(filter, s) {
				n++
			}
		}
		if toEdge[tp.Kind] && n != 1 || fromEdge[tp.Kind] && n != 0 {
			t.Fatalf("%v topic %q matches %d of the edge's subscriptions", tp.Kind, s, n)
		}
	})
}
