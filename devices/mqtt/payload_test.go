package mqtt

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// peersTwinUpdate is the twin/update of a KubeEdge mapper (peers.md §1).
const peersTwinUpdate = `{"event_id":"e1","timestamp":1718000000000,"twin":{"temperature":{"actual":{"value":"23.5","metadata":{"timestamp":1718000000000}},"metadata":{"type":"float"}}}}`

func TestDecodeTwinUpdatePeers(t *testing.T) {
	m, err := DecodeTwinUpdate([]byte(peersTwinUpdate))
	if err != nil {
		t.Fatal(err)
	}
	if m.EventID != "e1" || m.Timestamp != 1718000000000 || len(m.Twin) != 1 {
		t.Fatalf("got %+v", m)
	}
	tw := m.Twin["temperature"]
	if tw == nil || tw.Actual == nil || *tw.Actual.Value != "23.5" || tw.Actual.Metadata.Timestamp != 1718000000000 ||
		tw.Metadata.Type != "float" || tw.Expected != nil {
		t.Fatalf("got twin %+v", tw)
	}
	// Re-encoding gives the same bytes: field names and order match.
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != peersTwinUpdate {
		t.Errorf("re-encoded\n%s\nwant\n%s", b, peersTwinUpdate)
	}
}

func TestDecodeTwinUpdateRejects(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    error
		reason  string
	}{
		{"not JSON", `{"event_id":`, ErrMalformed, "unexpected EOF"},
		{"array", `[]`, ErrMalformed, "cannot unmarshal array"},
		{"unknown field", `{"event_id":"e","timestamp":1,"twin":{"t":{"actual":{"value":"1"}}},"extra":1}`, ErrMalformed, `unknown field "extra"`},
		{"unknown twin field", `{"event_id":"e","timestamp":1,"twin":{"t":{"actual":{"value":"1","unit":"C"}}}}`, ErrMalformed, `unknown field "unit"`},
		{"trailing data", `{"event_id":"e","timestamp":1,"twin":{"t":{"actual":{"value":"1"}}}} {}`, ErrMalformed, "data after the JSON object"},
		{"no twin", `{"event_id":"e","timestamp":1}`, ErrMalformed, "no twin"},
		{"null property", `{"event_id":"e","timestamp":1,"twin":{"t":null}}`, ErrMalformed, `property "t" is null`},
		{"no value", `{"event_id":"e","timestamp":1,"twin":{"t":{"actual":{"metadata":{"timestamp":1}}}}}`, ErrMalformed, `actual has no value`},
		{"neither", `{"event_id":"e","timestamp":1,"twin":{"t":{"metadata":{"type":"int"}}}}`, ErrMalformed, "neither expected nor actual"},
		{"value is a number", `{"event_id":"e","timestamp":1,"twin":{"t":{"actual":{"value":1}}}}`, ErrMalformed, "cannot unmarshal number"},
		{"name with space", `{"event_id":"e","timestamp":1,"twin":{"a b":{"actual":{"value":"1"}}}}`, ErrName, `character ' '`},
		{"empty name", `{"event_id":"e","timestamp":1,"twin":{"":{"actual":{"value":"1"}}}}`, ErrName, "length 0"},
		{"long name", `{"event_id":"e","timestamp":1,"twin":{"` + strings.Repeat("n", 128) + `":{"actual":{"value":"1"}}}}`, ErrName, "length 128"},
		{"long value", `{"event_id":"e","timestamp":1,"twin":{"t":{"expected":{"value":"` + strings.Repeat("v", 512) + `"}}}}`, ErrValue, "512 bytes"},
		{"too large", `{"event_id":"` + strings.Repeat("x", MaxPayloadBytes) + `"}`, ErrTooLarge, "limit 65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeTwinUpdate([]byte(tt.payload))
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("err = %v, want %v containing %q", err, tt.want, tt.reason)
			}
		})
	}
}

func TestLimitsAccept(t *testing.T) {
	name := strings.Repeat("n", MaxNameBytes-1)
	value := strings.Repeat("v", MaxValueBytes-1)
	p := `{"event_id":"e","timestamp":1,"twin":{"` + name + `":{"actual":{"value":"` + value + `"}},"A-z_0.9,:/@#":{"actual":{"value":"hello world"}}}}`
	if _, err := DecodeTwinUpdate([]byte(p)); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeStateUpdate(t *testing.T) {
	m, err := DecodeStateUpdate([]byte(`{"event_id":"e3","timestamp":5,"state":"online"}`))
	if err != nil || m != (StateUpdate{BaseMessage{"e3", 5}, "online"}) {
		t.Fatalf("got %+v, %v", m, err)
	}
	if _, err := DecodeStateUpdate([]byte(`{"event_id":"e3","timestamp":5,"state":"sleepy"}`)); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad state: err = %v", err)
	}
}

func TestDecodeBase(t *testing.T) {
	m, err := DecodeBase([]byte(`{"event_id":"e2","timestamp":7}`))
	if err != nil || m != (BaseMessage{"e2", 7}) {
		t.Fatalf("got %+v, %v", m, err)
	}
	if _, err := DecodeBase([]byte(`{"event_id":"e2","twin":{}}`)); !errors.Is(err, ErrMalformed) {
		t.Errorf("unknown field: err = %v", err)
	}
}

// TestEncode checks the field names of the payloads the edge sends.
func TestEncode(t *testing.T) {
	v := "25"
	yes := true
	tests := []struct {
		payload any
		want    string
	}{
		{ErrorResult{BaseMessage{"e1", 1}, 400, "bad"}, `{"event_id":"e1","timestamp":1,"code":400,"reason":"bad"}`},
		{TwinDelta{BaseMessage{"e", 1}, map[string]*MsgTwin{"t": {Expected: &TwinValue{Value: &v}}}, map[string]string{"t": "25"}},
			`{"event_id":"e","timestamp":1,"twin":{"t":{"expected":{"value":"25"}}},"delta":{"t":"25"}}`},
		{TwinDocument{BaseMessage{"e", 1}, map[string]*TwinDoc{"t": {Current: &MsgTwin{Optional: &yes, ExpectedVersion: &TwinVersion{2, 1}}}}},
			`{"event_id":"e","timestamp":1,"twin":{"t":{"last":null,"current":{"optional":true,"expected_version":{"cloud":2,"edge":1}}}}}`},
		{DeviceUpdated{BaseMessage{"e", 1}, map[string]*MsgAttr{"k": {Value: "v", Optional: &yes, Metadata: &TypeMetadata{"string"}}}},
			`{"event_id":"e","timestamp":1,"attributes":{"k":{"value":"v","optional":true,"metadata":{"type":"string"}}}}`},
		{MembershipGetResult{BaseMessage{"e", 1}, []Device{{ID: "ns/d", Name: "d", State: "online"}}},
			`{"event_id":"e","timestamp":1,"devices":[{"id":"ns/d","name":"d","state":"online"}]}`},
		{MembershipUpdated{BaseMessage{"e", 1}, []Device{}, []Device{{ID: "ns/d", Name: "d"}}},
			`{"event_id":"e","timestamp":1,"added_devices":[],"removed_devices":[{"id":"ns/d","name":"d"}]}`},
		{LifecycleEvent{"connected", 9}, `{"event_type":"connected","timestamp":9}`},
		{DataUpdate{BaseMessage{"e", 1}, map[string]*DataValue{"p1": {"123", &DataMetadata{2, "int"}}}},
			`{"event_id":"e","timestamp":1,"data":{"p1":{"value":"123","metadata":{"timestamp":2,"type":"int"}}}}`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.payload)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tt.want {
			t.Errorf("%T:\n got %s\nwant %s", tt.payload, b, tt.want)
		}
	}
}
