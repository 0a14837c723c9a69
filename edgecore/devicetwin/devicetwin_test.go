package devicetwin

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/devices/mqtt"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

const (
	uidThermo  = "uid-Device-thermo"
	keyThermo  = "device/" + uidThermo
	membership = "$hw/events/node/" + node + "/membership/updated"
)

// setup runs a component with the thermometer model and device "thermo"
// (desired temperature 22) in its store, over an embedded broker, and a
// device client that saw the membership and the delta.
func setup(t *testing.T) (*store.DB, *component, *device, string) {
	db := openStore(t)
	b, _ := startBroker(t, "127.0.0.1:0")
	putObjects(t, db, nil, thermoModel, thermoDevice("thermo", "22", 1))
	d := connectDevice(t, b.URL(), "dev")
	c := startTwin(t, db, b.URL(), nil)
	d.waitReady()
	return db, c, d, b.URL()
}

// TestStoreToMQTT: the devices of the store are announced when the
// component connects (membership/updated and the delta of the desired
// values), and a device added later gets its own membership/updated and
// delta; a device whose model is missing waits for it.
func TestStoreToMQTT(t *testing.T) {
	db, c, d, _ := setup(t)
	m := d.expect(membership, nil)
	added, _ := m["added_devices"].([]any)
	if len(added) != 1 || added[0].(map[string]any)["id"] != "default/thermo" {
		t.Fatalf("membership %v", m)
	}
	delta := d.expect(devTopic("thermo", "twin/update/delta"), nil)
	if got := delta["delta"]; !reflect.DeepEqual(got, map[string]any{"temperature": "22"}) {
		t.Fatalf("delta %v", delta)
	}

	// A device whose model is not there yet waits.
	lamp := thermoDevice("lamp", "", 1)
	lamp.Spec.DeviceModelRef.Name = "lamp-model"
	putObjects(t, db, c, lamp)
	res := d.request(devTopic("lamp", "twin/get"), `{"event_id":"%s","timestamp":0}`)
	if res["code"] != float64(404) {
		t.Fatalf("twin/get of a device without its model: %v", res)
	}
	model := *thermoModel
	model.Name = "lamp-model"
	putObjects(t, db, c, &model)
	m = d.expect(membership, nil)
	if added, _ := m["added_devices"].([]any); len(added) != 1 || added[0].(map[string]any)["id"] != "default/lamp" {
		t.Fatalf("membership after the model came %v", m)
	}

	// A desired value changed by the cloud: a new delta.
	putObjects(t, db, c, thermoDevice("thermo", "23.5", 2))
	delta = d.expect(devTopic("thermo", "twin/update/delta"), nil)
	if got := delta["delta"]; !reflect.DeepEqual(got, map[string]any{"temperature": "23.5"}) {
		t.Fatalf("delta after the cloud's change %v", delta)
	}

	// The device goes: membership removed, twin deleted.
	res = d.request(devTopic("thermo", "twin/update"), `{"event_id":"%s","timestamp":0,"twin":{"humidity":{"actual":{"value":"40"}}}}`)
	if _, failed := res["code"]; failed {
		t.Fatal(res)
	}
	eventually(t, "twin saved", func() bool { return savedTwin(t, db, uidThermo) != nil })
	deleteObject(t, db, c, protocol.KindDevice, uidThermo)
	m = d.expect(membership, func(m map[string]any) bool { r, _ := m["removed_devices"].([]any); return len(r) == 1 })
	if m["removed_devices"].([]any)[0].(map[string]any)["id"] != "default/thermo" {
		t.Fatalf("membership after delete %v", m)
	}
	eventually(t, "twin deleted", func() bool { return savedTwin(t, db, uidThermo) == nil })
}

// TestGoodUpdate: a report gets a result, a document, and a DeviceStatus
// in the outbox with the reported values of the reportToCloud properties.
func TestGoodUpdate(t *testing.T) {
	db, c, d, _ := setup(t)
	res := d.request(devTopic("thermo", "twin/update"),
		`{"event_id":"%s","timestamp":1718000000000,"twin":{"temperature":{"actual":{"value":"21.5","metadata":{"timestamp":1718000000000}},"metadata":{"type":"float"}},"label":{"actual":{"value":"kitchen"}}}}`)
	if _, failed := res["code"]; failed || actualOf(res, "temperature") != "21.5" {
		t.Fatalf("result %v", res)
	}
	doc := d.expect(devTopic("thermo", "twin/update/document"), eventID(res["event_id"].(string)))
	cur, _ := twinOf(doc, "temperature")["current"].(map[string]any)
	if a, _ := cur["actual"].(map[string]any); a["value"] != "21.5" {
		t.Fatalf("document %v", doc)
	}
	// The delta still says 22: the device has not reached it.
	if delta := d.expect(devTopic("thermo", "twin/update/delta"), func(m map[string]any) bool { return actualOf(m, "temperature") == "21.5" }); !reflect.DeepEqual(delta["delta"], map[string]any{"temperature": "22"}) {
		t.Fatalf("delta %v", delta)
	}
	var ds *protocol.DeviceStatus
	eventually(t, "DeviceStatus queued", func() bool { ds = outbox(t, db)[keyThermo]; return ds != nil })
	want := &protocol.DeviceStatus{UID: uidThermo, Namespace: "default", Name: "thermo", State: "unknown",
		Twins: []protocol.DeviceTwin{{Name: "temperature", Value: "21.5", Timestamp: 1718000000000, ObservedDesired: ptr("22")}}}
	if !reflect.DeepEqual(ds, want) {
		t.Fatalf("DeviceStatus\n got %+v\nwant %+v", ds, want)
	}
	eventually(t, "the agent told of the outbox change", func() bool { return c.queued.Load() > 0 })
	s := savedTwin(t, db, uidThermo)
	if s == nil || len(s.Props) != 2 || s.Props[0].Name != "label" || s.Props[0].Actual.Value != "kitchen" {
		t.Fatalf("saved twin %+v", s)
	}

	// A report of a property that does not go to the cloud is saved, but
	// queues no new status.
	before := outbox(t, db)
	d.request(devTopic("thermo", "twin/update"), `{"event_id":"%s","timestamp":0,"twin":{"label":{"actual":{"value":"hall"}}}}`)
	eventually(t, "label saved", func() bool { return savedTwin(t, db, uidThermo).Props[0].Actual.Value == "hall" })
	if after := outbox(t, db); !reflect.DeepEqual(after, before) {
		t.Errorf("outbox changed by a label report: %+v", after[keyThermo])
	}

	// State: online, with the time it went online.
	res = d.request(devTopic("thermo", "state/update"), `{"event_id":"%s","timestamp":0,"state":"online"}`)
	if res["state"] != "online" {
		t.Fatalf("state result %v", res)
	}
	eventually(t, "state queued", func() bool { ds = outbox(t, db)[keyThermo]; return ds.State == "online" })
	if ds.LastOnline == 0 || len(ds.Twins) != 1 {
		t.Errorf("DeviceStatus after state %+v", ds)
	}
}

func ptr(s string) *string { return &s }

// TestBadRequests: each bad request gets a 400 result, and nothing changes:
// the saved twin and the outbox stay as they were.
func TestBadRequests(t *testing.T) {
	db, _, d, _ := setup(t)
	d.request(devTopic("thermo", "twin/update"), `{"event_id":"%s","timestamp":0,"twin":{"temperature":{"actual":{"value":"20"}}}}`)
	var twinBefore any
	eventually(t, "first report saved and queued", func() bool {
		s := savedTwin(t, db, uidThermo)
		twinBefore = s
		return s != nil && outbox(t, db)[keyThermo] != nil && len(s.Props) == 1 && s.Props[0].Actual != nil
	})
	outboxBefore := outbox(t, db)

	big := `{"event_id":"%s","timestamp":0,"twin":{"label":{"actual":{"value":"` + strings.Repeat("x", 500) + `"}}},"pad":"` + strings.Repeat("y", mqtt.MaxPayloadBytes) + `"}`
	for _, c := range []struct{ name, payload, reason string }{
		{"malformed JSON", `{"event_id":"%s","twin":{`, "malformed payload"},
		{"unknown property", `{"event_id":"%s","timestamp":0,"twin":{"pressure":{"actual":{"value":"1"}}}}`, `property "pressure" is not in the device model`},
		{"wrong type", `{"event_id":"%s","timestamp":0,"twin":{"humidity":{"actual":{"value":"4.5"}}}}`, `is not an INT`},
		{"out of range", `{"event_id":"%s","timestamp":0,"twin":{"temperature":{"actual":{"value":"126"}}}}`, `above the maximum 125`},
		{"expected on ReadOnly", `{"event_id":"%s","timestamp":0,"twin":{"humidity":{"expected":{"value":"5"}}}}`, `ReadOnly`},
		{"one bad of two", `{"event_id":"%s","timestamp":0,"twin":{"temperature":{"actual":{"value":"21"}},"humidity":{"actual":{"value":"-1"}}}}`, `below the minimum 0`},
		{"oversize payload", big, "payload too large"},
	} {
		id := "bad-" + strings.ReplaceAll(c.name, " ", "-")
		d.publish(devTopic("thermo", "twin/update"), strings.ReplaceAll(c.payload, "%s", id))
		// A payload that did not decode has no event id to echo.
		match := eventID(id)
		if c.name == "malformed JSON" || c.name == "oversize payload" {
			match = func(m map[string]any) bool { r, _ := m["reason"].(string); return strings.Contains(r, c.reason) }
		}
		res := d.expect(devTopic("thermo", "twin/update/result"), match)
		if res["code"] != float64(400) || !strings.Contains(res["reason"].(string), c.reason) {
			t.Errorf("%s: result %v, want code 400 and a reason with %q", c.name, res, c.reason)
		}
	}
	// A good request after them all: its result proves the bad ones were
	// handled, and it changes only what it reads.
	res := d.request(devTopic("thermo", "twin/get"), `{"event_id":"%s","timestamp":0}`)
	if actualOf(res, "temperature") != "20" || actualOf(res, "humidity") != nil {
		t.Errorf("twin after bad requests %v", res)
	}
	time.Sleep(100 * time.Millisecond) // a few flush intervals: nothing may be written
	if got := savedTwin(t, db, uidThermo); !reflect.DeepEqual(got, twinBefore) {
		t.Errorf("saved twin changed by bad requests:\n got %+v\nwant %+v", got, twinBefore)
	}
	if got := outbox(t, db); !reflect.DeepEqual(got, outboxBefore) {
		t.Errorf("outbox changed by bad requests: %+v", got)
	}
}

// TestRestartKeepsTwin: after a restart of the component on the same store,
// the reported values, the state and an expected value set at the edge are
// there, and nothing new is queued.
func TestRestartKeepsTwin(t *testing.T) {
	db, c, d, url := setup(t)
	d.request(devTopic("thermo", "twin/update"), `{"event_id":"%s","timestamp":0,"twin":{"temperature":{"actual":{"value":"19"}},"humidity":{"actual":{"value":"55"}},"label":{"expected":{"value":"attic"}}}}`)
	d.request(devTopic("thermo", "state/update"), `{"event_id":"%s","timestamp":0,"state":"online"}`)
	before := d.request(devTopic("thermo", "twin/get"), `{"event_id":"%s","timestamp":0}`)
	eventually(t, "state queued", func() bool { ds := outbox(t, db)[keyThermo]; return ds != nil && ds.State == "online" })
	c.stop()
	saved := savedTwin(t, db, uidThermo)
	outboxBefore := outbox(t, db)

	startTwin(t, db, url, nil)
	d.waitReady()
	after := d.request(devTopic("thermo", "twin/get"), `{"event_id":"%s","timestamp":0}`)
	delete(before, "event_id")
	delete(before, "timestamp")
	delete(after, "event_id")
	delete(after, "timestamp")
	if !reflect.DeepEqual(after, before) {
		t.Errorf("twin after restart:\n%v\nbefore:\n%v", after, before)
	}
	m := d.expect(membership, func(m map[string]any) bool {
		a, _ := m["added_devices"].([]any)
		return len(a) == 1 && a[0].(map[string]any)["state"] == "online"
	})
	if m == nil {
		t.Fatal("no membership")
	}
	// The restored delta has the edge's expected label.
	delta := d.expect(devTopic("thermo", "twin/update/delta"), func(m map[string]any) bool { return actualOf(m, "humidity") == "55" })
	if !reflect.DeepEqual(delta["delta"], map[string]any{"temperature": "22", "label": "attic"}) {
		t.Errorf("delta after restart %v", delta)
	}
	time.Sleep(100 * time.Millisecond)
	if got := savedTwin(t, db, uidThermo); !reflect.DeepEqual(got, saved) {
		t.Errorf("saved twin after restart:\n got %+v\nwant %+v", got, saved)
	}
	if got := outbox(t, db); !reflect.DeepEqual(got, outboxBefore) {
		t.Errorf("outbox after restart: %+v", got)
	}
}

// TestOfflineCoalesces: with the cloud away nothing drains the outbox;
// many reports of two devices leave one entry per device with the latest
// value of each property.
func TestOfflineCoalesces(t *testing.T) {
	db, c, d, _ := setup(t)
	putObjects(t, db, c, thermoDevice("thermo2", "", 1))
	d.expect(membership, func(m map[string]any) bool {
		a, _ := m["added_devices"].([]any)
		return len(a) == 1 && a[0].(map[string]any)["name"] == "thermo2"
	})
	for i := 0; i < 50; i++ {
		for _, name := range []string{"thermo", "thermo2"} {
			p := `{"event_id":"%s","timestamp":0,"twin":{"temperature":{"actual":{"value":"` + itoa(i) + `"}}}}`
			if i%2 == 0 {
				p = `{"event_id":"%s","timestamp":0,"twin":{"humidity":{"actual":{"value":"` + itoa(i) + `"}}}}`
			}
			d.publish(devTopic(name, "twin/update"), strings.ReplaceAll(p, "%s", name+itoa(i)))
		}
	}
	d.expect(devTopic("thermo2", "twin/update/result"), eventID("thermo249"))
	d.expect(devTopic("thermo", "twin/update/result"), eventID("thermo49"))
	var ob map[string]*protocol.DeviceStatus
	eventually(t, "latest values queued", func() bool {
		ob = outbox(t, db)
		for _, ds := range ob {
			if len(ds.Twins) != 2 || ds.Twins[1].Value != "49" {
				return false
			}
		}
		return len(ob) == 2
	})
	for key, ds := range ob {
		want := []protocol.DeviceTwin{{Name: "humidity", Value: "48"}, {Name: "temperature", Value: "49"}}
		if ds.Name == "thermo" {
			want[1].ObservedDesired = ptr("22")
		}
		for i := range ds.Twins {
			ds.Twins[i].Timestamp = 0
		}
		if key != "device/uid-Device-"+ds.Name || !reflect.DeepEqual(ds.Twins, want) {
			t.Errorf("%s: %+v, want %+v", key, ds.Twins, want)
		}
	}
	var n int
	db.View(func(tx *store.Tx) error { n = tx.OutboxLen(); return nil })
	if n != 2 {
		t.Errorf("outbox holds %d entries, want 2", n)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestBrokerRestart: the embedded broker goes away and comes back on the
// same address: the component reconnects, subscribes again and serves
// requests. (That it republishes the membership on each connection is seen
// in TestStoreToMQTT, where the first connection announces the device; after
// a restart of the broker a device client cannot be sure to subscribe before
// the component is back.)
func TestBrokerRestart(t *testing.T) {
	db := openStore(t)
	b, stop := startBroker(t, "127.0.0.1:0")
	addr := b.Addr()
	putObjects(t, db, nil, thermoModel, thermoDevice("thermo", "22", 1))
	c := startTwin(t, db, b.URL(), nil)
	d := connectDevice(t, b.URL(), "dev")
	d.waitReady()
	stop()
	eventually(t, "the component sees the broker gone", func() bool { return !c.tw.client.IsConnectionOpen() })
	b2, _ := startBroker(t, addr)
	d2 := connectDevice(t, b2.URL(), "dev2")
	d2.waitReady()
	res := d2.request(devTopic("thermo", "twin/update"), `{"event_id":"%s","timestamp":0,"twin":{"temperature":{"actual":{"value":"22"}}}}`)
	if _, failed := res["code"]; failed || actualOf(res, "temperature") != "22" {
		t.Fatalf("after the broker restart: %v", res)
	}
}

// TestCredentials: against a broker that wants a username and password,
// the component with them works.
func TestCredentials(t *testing.T) {
	// Covered end to end by the integration tests against Mosquitto; here
	// only the configuration checks.
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{NodeName: node, BrokerURL: "tcp://127.0.0.1:1883", Password: "p"}, "password without a username"},
		{Config{NodeName: node, BrokerURL: "ws://127.0.0.1:8883"}, `scheme "ws"`},
		{Config{NodeName: node, BrokerURL: "ssl://127.0.0.1:8883"}, "TLS configuration is required"},
		{Config{NodeName: node, BrokerURL: "tcp://127.0.0.1:1883", TLS: &tls.Config{}}, "TLS configuration is required"},
		{Config{NodeName: node, BrokerURL: "tcp://127.0.0.1"}, "want host and port"},
		{Config{NodeName: node, BrokerURL: "tcp://u:p@127.0.0.1:1883"}, "credentials go in username"},
		{Config{NodeName: "Bad_Node", BrokerURL: "tcp://127.0.0.1:1883"}, "node"},
		{Config{NodeName: node, BrokerURL: "tcp://127.0.0.1:1883", ReconnectMax: time.Millisecond}, "reconnectMax"},
	} {
		if _, err := New(c.cfg, nil, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error with %q", c.cfg, err, c.want)
		}
	}
}

// TestStopWithoutBroker: a component that never reached its broker has
// still loaded and saved its devices, and stops at once.
func TestStopWithoutBroker(t *testing.T) {
	db := openStore(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "tcp://" + ln.Addr().String()
	ln.Close() // nothing listens on url now
	putObjects(t, db, nil, thermoModel, thermoDevice("thermo", "22", 1))
	c := startTwin(t, db, url, nil)
	time.Sleep(200 * time.Millisecond)
	done := make(chan struct{})
	go func() { c.stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("Start did not return")
	}
	// The upsert at start was saved.
	if s := savedTwin(t, db, uidThermo); s == nil || s.Version != 1 || s.Props[0].Expected.Value != "22" {
		t.Errorf("saved twin %+v", s)
	}
}

// TestDeviceNotServed: a Device for another node, or with an invalid spec,
// is not served until the store holds a good one.
func TestDeviceNotServed(t *testing.T) {
	db, c, d, _ := setup(t)
	other := thermoDevice("lamp", "", 1)
	other.Spec.NodeName = "edge-2"
	putObjects(t, db, c, other)
	if res := d.request(devTopic("lamp", "twin/get"), `{"event_id":"%s","timestamp":0}`); res["code"] != float64(404) {
		t.Fatalf("device of another node served: %v", res)
	}
	bad := thermoDevice("lamp", "", 1)
	bad.Spec.DeviceModelRef = nil
	putObjects(t, db, c, bad)
	if res := d.request(devTopic("lamp", "twin/get"), `{"event_id":"%s","timestamp":0}`); res["code"] != float64(404) {
		t.Fatalf("device without a model reference served: %v", res)
	}
	putObjects(t, db, c, thermoDevice("lamp", "", 1))
	eventually(t, "lamp served", func() bool {
		return d.request(devTopic("lamp", "twin/get"), `{"event_id":"%s","timestamp":0}`)["code"] == nil
	})
}
