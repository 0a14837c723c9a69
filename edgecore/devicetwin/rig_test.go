package devicetwin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	devicesapi "github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/devices/broker"
	"github.com/tether-edge/tether/devices/broker/mosquittotest"
	"github.com/tether-edge/tether/devices/mqtt"
	"github.com/tether-edge/tether/devices/twin"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// The helpers here run one twin component on a real bbolt store against a
// real broker, with real MQTT clients playing devices. The integration
// tests share them.

const node = "edge-1"

// wait bounds every wait for something the component should do: long, so
// that a loaded machine does not fail the tests.
const wait = 30 * time.Second

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("TETHER_TEST_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With(slog.String("test", t.Name()))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func openStore(t testing.TB) *store.DB {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// The credentials of the rig's broker: the component and the test devices
// (which also watch everything under $hw/events/) use them.
const (
	testUser = "edge"
	testPass = "s3cret"
)

// startBroker runs an embedded broker on addr ("127.0.0.1:0" for a free
// port) until stop is called or the test ends.
func startBroker(t testing.TB, addr string) (b *broker.Broker, stop func()) {
	t.Helper()
	b, err := broker.New(broker.Config{Addr: addr, Users: []broker.User{{Name: testUser, Password: testPass, Role: broker.RoleEdge}},
		Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("broker: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return b, stop
}

// component is a running Twin.
type component struct {
	tw     *Twin
	queued atomic.Int64
	cancel context.CancelFunc
	done   chan error
}

// startTwin runs a Twin on db against the broker at url until stop.
func startTwin(t testing.TB, db *store.DB, url string, tweak func(*Config)) *component {
	t.Helper()
	cfg := Config{NodeName: node, BrokerURL: url, Username: testUser, Password: testPass, ReportInterval: 20 * time.Millisecond, FlushDelay: 5 * time.Millisecond,
		ReconnectMax: time.Second, Logger: testLogger(t)}
	if tweak != nil {
		tweak(&cfg)
	}
	c := &component{done: make(chan error, 1)}
	tw, err := New(cfg, db, func() { c.queued.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	c.tw = tw
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() { c.done <- tw.Start(ctx) }()
	t.Cleanup(c.stop)
	return c
}

func (c *component) stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	<-c.done
	c.cancel = nil
}

// device is an MQTT client playing devices and apps: it records every
// message under $hw/events/ and publishes with pub.
type device struct {
	t   testing.TB
	rec *mosquittotest.Recorder
	// pub publishes one message, QoS 1.
	pub func(topic, payload string) error
	seq atomic.Int64
}

// expect waits for the next message on topic that match accepts (messages
// before it on the topic are skipped) and returns it decoded.
func (d *device) expect(topic string, match func(map[string]any) bool) map[string]any {
	d.t.Helper()
	var m map[string]any
	var bad error
	_, ok := d.rec.Next(topic, wait, func(p []byte) bool {
		m = nil
		if err := json.Unmarshal(p, &m); err != nil {
			bad = fmt.Errorf("%s: payload %q: %w", topic, p, err)
			return true
		}
		return match == nil || match(m)
	})
	if bad != nil {
		d.t.Fatal(bad)
	}
	if !ok {
		d.t.Fatalf("no matching message on %s within %s", topic, wait)
	}
	return m
}

// seen reports whether a message on topic holds s.
func (d *device) seen(topic, s string) bool { return d.rec.Seen(topic, s) }

// connectDevice is a device on a paho client.
func connectDevice(t testing.TB, url, id string) *device {
	t.Helper()
	d := &device{t: t, rec: mosquittotest.NewRecorder()}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(testUser).SetPassword(testPass).SetAutoReconnect(true).
		SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(time.Second).
		SetOnConnectHandler(func(c paho.Client) {
			c.Subscribe("$hw/events/#", 1, func(_ paho.Client, m paho.Message) { d.rec.Add(m.Topic(), m.Payload()) }).WaitTimeout(wait)
		})
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("device client: connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	d.pub = func(topic, payload string) error {
		tok := c.Publish(topic, 1, false, payload)
		if !tok.WaitTimeout(wait) {
			return fmt.Errorf("publish %s: timed out", topic)
		}
		return tok.Error()
	}
	return d
}

func (d *device) publish(topic, payload string) {
	d.t.Helper()
	if err := d.pub(topic, payload); err != nil {
		d.t.Fatalf("publish %s: %v", topic, err)
	}
}

func eventID(id string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["event_id"] == id }
}

// request publishes payload (with "%s" replaced by a fresh event id) on
// the request topic and returns the result the edge publishes for it.
func (d *device) request(topic, payload string) map[string]any {
	d.t.Helper()
	id := fmt.Sprintf("e%d", d.seq.Add(1))
	d.publish(topic, strings.ReplaceAll(payload, "%s", id))
	return d.expect(topic+"/result", eventID(id))
}

// waitReady asks for the membership until the edge answers, so that the
// component is known to be subscribed.
func (d *device) waitReady() {
	d.t.Helper()
	topic := "$hw/events/node/" + node + "/membership/get"
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		id := fmt.Sprintf("ready%d", d.seq.Add(1))
		// Errors are retried: the client may be reconnecting.
		d.pub(topic, `{"event_id":"`+id+`","timestamp":0}`)
		for until := time.Now().Add(500 * time.Millisecond); time.Now().Before(until); time.Sleep(20 * time.Millisecond) {
			if d.seen(topic+"/result", `"event_id":"`+id+`"`) {
				return
			}
		}
	}
	d.t.Fatalf("the edge did not answer membership/get within %s", wait)
}

// Objects in the store, as the agent writes them.

var thermoModel = &devicesapi.DeviceModel{
	ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "thermometer"},
	Spec: devicesapi.DeviceModelSpec{Protocol: "modbus", Properties: []devicesapi.ModelProperty{
		{Name: "temperature", Type: devicesapi.TypeFloat, AccessMode: devicesapi.ReadWrite, Minimum: "-40", Maximum: "125"},
		{Name: "humidity", Type: devicesapi.TypeInt, AccessMode: devicesapi.ReadOnly, Minimum: "0", Maximum: "100"},
		{Name: "label", Type: devicesapi.TypeString, AccessMode: devicesapi.ReadWrite},
	}},
}

// thermoDevice is a device of thermoModel with a desired temperature;
// temperature and humidity go to the cloud, label does not.
func thermoDevice(name, desired string, gen int64) *devicesapi.Device {
	d := &devicesapi.Device{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Generation: gen},
		Spec: devicesapi.DeviceSpec{DeviceModelRef: &devicesapi.DeviceModelRef{Name: "thermometer"}, NodeName: node,
			Properties: []devicesapi.DeviceProperty{
				{Name: "temperature", ReportToCloud: true},
				{Name: "humidity", ReportToCloud: true},
				{Name: "label"},
			}},
	}
	if desired != "" {
		d.Spec.Properties[0].Desired = devicesapi.TwinProperty{Value: desired}
	}
	return d
}

var rvSeq atomic.Int64

// storeOp is one commit of the agent: objects put and objects deleted.
type storeOp struct {
	put []*protocol.Object
	del []protocol.ObjectRef
}

// apply commits op to db and returns the refs of what it touched.
func (op storeOp) apply(t testing.TB, db *store.DB) []protocol.ObjectRef {
	t.Helper()
	var refs []protocol.ObjectRef
	err := db.Update(func(tx *store.Tx) error {
		for _, r := range op.del {
			if _, err := tx.DeleteObject(r.Kind, r.UID); err != nil {
				return err
			}
			refs = append(refs, r)
		}
		for _, o := range op.put {
			if err := tx.PutObject(o); err != nil {
				return err
			}
			refs = append(refs, o.Ref())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return refs
}

// object is v, a *devicesapi.Device or *devicesapi.DeviceModel, as the
// agent stores it, with resourceVersion rv. Its UID is uid, else v's,
// else "uid-<kind>-<name>".
func object(t testing.TB, v any, uid string, rv int64) *protocol.Object {
	t.Helper()
	var kind protocol.Kind
	var meta metav1.ObjectMeta
	switch v := v.(type) {
	case *devicesapi.DeviceModel:
		kind, meta = protocol.KindDeviceModel, v.ObjectMeta
	case *devicesapi.Device:
		kind, meta = protocol.KindDevice, v.ObjectMeta
	default:
		t.Fatalf("object %T", v)
	}
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if uid == "" {
		uid = string(meta.UID)
	}
	if uid == "" {
		uid = "uid-" + kind.String() + "-" + meta.Name
	}
	return &protocol.Object{Kind: kind, UID: uid, Namespace: meta.Namespace, Name: meta.Name,
		ResourceVersion: strconv.FormatInt(rv, 10), Data: data}
}

// putObjects writes objects to the store as the agent does and tells the
// component which (ObjectsCommitted).
func putObjects(t testing.TB, db *store.DB, c *component, objs ...any) {
	t.Helper()
	var op storeOp
	for _, v := range objs {
		op.put = append(op.put, object(t, v, "", rvSeq.Add(1)))
	}
	refs := op.apply(t, db)
	if c != nil {
		c.tw.ObjectsCommitted(refs)
	}
}

func deleteObject(t testing.TB, db *store.DB, c *component, kind protocol.Kind, uid string) {
	t.Helper()
	c.tw.ObjectsCommitted(storeOp{del: []protocol.ObjectRef{{Kind: kind, UID: uid}}}.apply(t, db))
}

// outbox returns the DeviceStatus entries queued in the outbox, by key.
func outbox(t testing.TB, db *store.DB) map[string]*protocol.DeviceStatus {
	t.Helper()
	out := map[string]*protocol.DeviceStatus{}
	err := db.View(func(tx *store.Tx) error {
		return tx.Outbox(0, func(it store.OutboxItem) bool {
			f, err := protocol.Decode(it.Frame)
			if err != nil {
				t.Fatalf("outbox %s: %v", it.Key, err)
			}
			if f.DeviceStatus != nil {
				out[it.Key] = f.DeviceStatus
			}
			return true
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// savedTwin returns the twin the store holds for the device with uid.
func savedTwin(t testing.TB, db *store.DB, uid string) *twin.Saved {
	t.Helper()
	var s *twin.Saved
	if err := db.View(func(tx *store.Tx) (err error) { s, err = tx.Twin(uid); return err }); err != nil {
		t.Fatal(err)
	}
	return s
}

// eventually polls cond until it holds or wait passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func devTopic(name, suffix string) string {
	return mqtt.DevicePrefix + "default/" + name + "/" + suffix
}

func twinOf(m map[string]any, prop string) map[string]any {
	tw, _ := m["twin"].(map[string]any)
	p, _ := tw[prop].(map[string]any)
	return p
}

func actualOf(m map[string]any, prop string) any {
	a, _ := twinOf(m, prop)["actual"].(map[string]any)
	return a["value"]
}
