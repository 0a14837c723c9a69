//go:build integration

package devicetwin

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/devices/broker"
	"github.com/tether-edge/tether/devices/broker/mosquittotest"
	"github.com/tether-edge/tether/devices/mqtt"
	"github.com/tether-edge/tether/protocol"
)

// These tests run the component against Debian's Mosquitto and against the
// embedded broker, each requiring a username and password, and play the
// devices with mosquitto_pub and mosquitto_sub (package mosquitto-clients).

// auth sets the credentials env wants in a Config.
func auth(env *mosquittotest.Broker) func(*Config) {
	return func(c *Config) { c.Username, c.Password = env.User, env.Pass }
}

// startEmbedded runs the embedded broker with a username and password.
func startEmbedded(t *testing.T) *mosquittotest.Broker {
	t.Helper()
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", Users: []broker.User{{Name: "edge", Password: "s3cret", Role: broker.RoleEdge}},
		Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	host, port, _ := net.SplitHostPort(b.Addr())
	return &mosquittotest.Broker{Host: host, Port: port, User: "edge", Pass: "s3cret"}
}

// outsideDevice is a device played by mosquitto_sub (every message under
// $hw/events/) and mosquitto_pub (each publication).
func outsideDevice(t *testing.T, env *mosquittotest.Broker) *device {
	t.Helper()
	d := &device{t: t, rec: mosquittotest.NewRecorder()}
	mosquittotest.Subscribe(t, env, "$hw/events/#", d.rec)
	d.pub = func(topic, payload string) error { return mosquittotest.Publish(t, env, topic, payload) }
	return d
}

func TestMosquitto(t *testing.T) { scenario(t, mosquittotest.Start(t)) }

func TestEmbeddedBroker(t *testing.T) { scenario(t, startEmbedded(t)) }

// scenario runs the twin component against the broker env, with
// mosquitto_pub and mosquitto_sub as the devices.
func scenario(t *testing.T, env *mosquittotest.Broker) {
	db := openStore(t)
	putObjects(t, db, nil, thermoModel, thermoDevice("thermo", "22", 1))
	d := outsideDevice(t, env) // subscribed before the edge connects
	c := startTwin(t, db, env.URL(), auth(env))

	// The store's device is announced, with the delta of its desired value.
	m := d.expect(membership, nil)
	if a, _ := m["added_devices"].([]any); len(a) != 1 || a[0].(map[string]any)["id"] != "default/thermo" {
		t.Fatalf("membership %v", m)
	}
	if delta := d.expect(devTopic("thermo", "twin/update/delta"), nil); !reflect.DeepEqual(delta["delta"], map[string]any{"temperature": "22"}) {
		t.Fatalf("delta %v", delta)
	}
	d.waitReady()
	// A device the cloud sends later.
	putObjects(t, db, c, thermoDevice("thermo2", "30", 1))
	m = d.expect(membership, func(m map[string]any) bool { a, _ := m["added_devices"].([]any); return len(a) == 1 })
	if m["added_devices"].([]any)[0].(map[string]any)["id"] != "default/thermo2" {
		t.Fatalf("membership %v", m)
	}
	if delta := d.expect(devTopic("thermo2", "twin/update/delta"), nil); !reflect.DeepEqual(delta["delta"], map[string]any{"temperature": "30"}) {
		t.Fatalf("delta of thermo2 %v", delta)
	}

	t.Run("good update", func(t *testing.T) {
		d.t = t
		res := d.request(devTopic("thermo", "twin/update"),
			`{"event_id":"%s","timestamp":1718000000000,"twin":{"temperature":{"actual":{"value":"21.5","metadata":{"timestamp":1718000000000}},"metadata":{"type":"float"}}}}`)
		if _, failed := res["code"]; failed || actualOf(res, "temperature") != "21.5" {
			t.Fatalf("result %v", res)
		}
		doc := d.expect(devTopic("thermo", "twin/update/document"), eventID(res["event_id"].(string)))
		if cur, _ := twinOf(doc, "temperature")["current"].(map[string]any); cur["actual"].(map[string]any)["value"] != "21.5" {
			t.Fatalf("document %v", doc)
		}
		var ds *protocol.DeviceStatus
		eventually(t, "DeviceStatus queued", func() bool { ds = outbox(t, db)[keyThermo]; return ds != nil })
		want := []protocol.DeviceTwin{{Name: "temperature", Value: "21.5", Timestamp: 1718000000000, ObservedDesired: ptr("22")}}
		if !reflect.DeepEqual(ds.Twins, want) {
			t.Fatalf("DeviceStatus %+v", ds)
		}
	})

	t.Run("bad requests change nothing", func(t *testing.T) {
		d.t = t
		twinBefore, outboxBefore := savedTwin(t, db, uidThermo), outbox(t, db)
		big := `{"event_id":"big","timestamp":0,"twin":{"temperature":{"actual":{"value":"1"}}},"pad":"` + strings.Repeat("y", mqtt.MaxPayloadBytes) + `"}`
		for _, c := range []struct{ name, payload, reason string }{
			{"malformed", `{"event_id":"m","twin":{`, "malformed payload"},
			{"unknown property", `{"event_id":"u","timestamp":0,"twin":{"pressure":{"actual":{"value":"1"}}}}`, `property "pressure" is not in the device model`},
			{"wrong type", `{"event_id":"w","timestamp":0,"twin":{"humidity":{"actual":{"value":"4.5"}}}}`, "is not an INT"},
			{"out of range", `{"event_id":"o","timestamp":0,"twin":{"temperature":{"actual":{"value":"-41"}}}}`, "below the minimum -40"},
			{"oversize", big, "payload too large"},
		} {
			d.publish(devTopic("thermo", "twin/update"), c.payload)
			res := d.expect(devTopic("thermo", "twin/update/result"), func(m map[string]any) bool {
				r, _ := m["reason"].(string)
				return strings.Contains(r, c.reason)
			})
			if res["code"] != float64(400) {
				t.Errorf("%s: %v, want code 400", c.name, res)
			}
		}
		// A get after them proves they were all handled.
		if res := d.request(devTopic("thermo", "twin/get"), `{"event_id":"%s","timestamp":0}`); actualOf(res, "temperature") != "21.5" {
			t.Errorf("twin after bad requests %v", res)
		}
		time.Sleep(100 * time.Millisecond) // several flush intervals
		if got := savedTwin(t, db, uidThermo); !reflect.DeepEqual(got, twinBefore) {
			t.Errorf("saved twin changed:\n got %+v\nwant %+v", got, twinBefore)
		}
		if got := outbox(t, db); !reflect.DeepEqual(got, outboxBefore) {
			t.Errorf("outbox changed: %+v", got)
		}
	})

	t.Run("offline reports coalesce", func(t *testing.T) {
		d.t = t
		// Nothing drains the outbox: the cloud is away.
		for i := 0; i < 20; i++ {
			for _, name := range []string{"thermo", "thermo2"} {
				prop := "temperature"
				if i%2 == 0 {
					prop = "humidity"
				}
				d.publish(devTopic(name, "twin/update"), fmt.Sprintf(`{"event_id":"%s-%d","timestamp":0,"twin":{%q:{"actual":{"value":"%d"}}}}`, name, i, prop, i))
			}
		}
		d.expect(devTopic("thermo", "twin/update/result"), eventID("thermo-19"))
		d.expect(devTopic("thermo2", "twin/update/result"), eventID("thermo2-19"))
		var ob map[string]*protocol.DeviceStatus
		eventually(t, "the latest values queued", func() bool {
			ob = outbox(t, db)
			n := 0
			for _, ds := range ob {
				if len(ds.Twins) == 2 && ds.Twins[1].Value == "19" {
					n++
				}
			}
			return n == 2
		})
		if len(ob) != 2 {
			t.Errorf("outbox has %d device entries, want 2", len(ob))
		}
		for key, ds := range ob {
			if key != "device/uid-Device-"+ds.Name || ds.Twins[0].Name != "humidity" || ds.Twins[0].Value != "18" ||
				ds.Twins[1].Name != "temperature" || ds.Twins[1].Value != "19" {
				t.Errorf("%s: %+v", key, ds.Twins)
			}
		}
	})

	t.Run("restart keeps reported values", func(t *testing.T) {
		d.t = t
		before := d.request(devTopic("thermo2", "twin/get"), `{"event_id":"%s","timestamp":0}`)
		c.stop()
		startTwin(t, db, env.URL(), auth(env))
		d.waitReady()
		after := d.request(devTopic("thermo2", "twin/get"), `{"event_id":"%s","timestamp":0}`)
		if !reflect.DeepEqual(before["twin"], after["twin"]) || actualOf(after, "temperature") != "19" {
			t.Errorf("twin after restart:\n%v\nbefore:\n%v", after["twin"], before["twin"])
		}
	})
}
