package mapper

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/devices/modbus"
	"github.com/tether-edge/tether/devices/mqtt"
)

func testLogger() *slog.Logger {
	if os.Getenv("TETHER_MAPPER_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// published is one message a Publisher was given.
type published struct {
	topic   mqtt.Topic
	payload []byte
	at      time.Time
}

// recorder is a Publisher that records what it is given; down makes it fail
// as a publisher without a broker connection.
type recorder struct {
	ch   chan published
	down atomic.Bool
}

func newRecorder() *recorder { return &recorder{ch: make(chan published, 4096)} }

func (r *recorder) Publish(topic string, payload []byte) error {
	if r.down.Load() {
		return errNotConnected
	}
	t, err := mqtt.ParseTopic(topic)
	if err != nil {
		return err
	}
	select {
	case r.ch <- published{topic: t, payload: payload, at: time.Now()}:
	default:
		return fmt.Errorf("recorder full")
	}
	return nil
}

// next returns the first message that matches, skipping others, within
// the deadline.
func (r *recorder) next(t testing.TB, what string, match func(published) bool) published {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case p := <-r.ch:
			if match(p) {
				return p
			}
		case <-deadline:
			t.Fatalf("no message: %s", what)
		}
	}
}

// actual matches a twin/update of device id reporting property=value.
func actual(id mqtt.DeviceID, prop, value string) func(published) bool {
	return func(p published) bool {
		if p.topic.Kind != mqtt.KindTwinUpdate || p.topic.Device != id {
			return false
		}
		u, err := mqtt.DecodeTwinUpdate(p.payload)
		if err != nil {
			panic(err)
		}
		tw := u.Twin[prop]
		return tw != nil && tw.Actual != nil && *tw.Actual.Value == value
	}
}

func state(id mqtt.DeviceID, s string) func(published) bool {
	return func(p published) bool {
		if p.topic.Kind != mqtt.KindStateUpdate || p.topic.Device != id {
			return false
		}
		u, err := mqtt.DecodeStateUpdate(p.payload)
		if err != nil {
			panic(err)
		}
		return u.State == s
	}
}

// startModbus runs our Modbus server as a thermostat on addr ("" for a free
// port) until stop is called or the test ends.
func startModbus(t testing.TB, addr string) (s *modbus.Server, stop func()) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	s, err := modbus.NewServer(modbus.ServerConfig{Addr: addr, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Start(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	select {
	case <-s.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	s.SetInputRegisters(0, 215)           // temperature 21.5
	s.SetHoldingRegisters(1, 200, 2)      // setpoint 20.0, mode 2
	s.SetHoldingRegisters(10, 'h'<<8|'i') // label "hi"
	return s, stop
}

func portOf(t testing.TB, addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// runOwner runs an owner for node edge-1 until the test ends.
func runOwner(t *testing.T, pub Publisher) chan<- event {
	events := make(chan event)
	o := newOwner("edge-1", testDefaults, pub, testLogger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		o.run(ctx, events)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return events
}

func TestMapperReadsWritesAndReportsState(t *testing.T) {
	dev, stopDev := startModbus(t, "")
	rec := newRecorder()
	events := runOwner(t, rec)
	id := mqtt.DeviceID{Namespace: "home", Name: "t1"}

	d := thermostat("t1", "127.0.0.1", portOf(t, dev.Addr()))
	events <- deviceEvent{key: "home/t1", device: d}
	// No model yet: nothing is served.
	events <- modelEvent{key: "home/thermostat", model: thermostatModel()}

	rec.next(t, "state online", state(id, mqtt.StateOnline))
	p := rec.next(t, "temperature 21.5", actual(id, "temperature", "21.5"))
	u, _ := mqtt.DecodeTwinUpdate(p.payload)
	for name, want := range map[string]string{"setpoint": "20", "heating": "false", "mode": "2", "label": "hi"} {
		tw := u.Twin[name]
		if tw == nil || *tw.Actual.Value != want || tw.Actual.Metadata.Timestamp == 0 {
			t.Errorf("%s: %+v, want %s", name, tw, want)
		}
	}
	if u.Twin["temperature"].Metadata.Type != "float" || u.Twin["heating"].Metadata.Type != "boolean" {
		t.Errorf("type metadata: %+v %+v", u.Twin["temperature"].Metadata, u.Twin["heating"].Metadata)
	}

	// The device changes: the next report follows.
	dev.SetInputRegisters(0, 0xFFFF-29) // -3.0
	rec.next(t, "temperature -3", actual(id, "temperature", "-3"))

	// A delta: the registers change, and the reported value follows.
	sent := time.Now()
	events <- deltaEvent{id: id, delta: map[string]string{"setpoint": "23.5", "heating": "true", "temperature": "99", "mode": "70000"}}
	rec.next(t, "setpoint 23.5", actual(id, "setpoint", "23.5"))
	t.Logf("delta to reported value: %v", time.Since(sent))
	if got := dev.HoldingRegisters(1, 1)[0]; got != 235 {
		t.Fatalf("setpoint register %d, want 235", got)
	}
	if !dev.Coils(0, 1)[0] {
		t.Fatal("heating coil not set")
	}
	// temperature is ReadOnly, mode 70000 does not fit a uint16: neither is written.
	if got := dev.HoldingRegisters(2, 1)[0]; got != 2 {
		t.Fatalf("mode register %d", got)
	}
	// A desired value written as "21.50" is reported as given while the
	// register holds what it became, so the edge's delta ends.
	events <- deltaEvent{id: id, delta: map[string]string{"setpoint": "21.50"}}
	rec.next(t, "setpoint 21.50", actual(id, "setpoint", "21.50"))
	rec.next(t, "setpoint 21.50 again at the next read", actual(id, "setpoint", "21.50"))
	// Changed on the device: reported as read.
	dev.SetHoldingRegisters(1, 180)
	rec.next(t, "setpoint 18", actual(id, "setpoint", "18"))

	// The device goes away: offline; back on the same port: online.
	addr := dev.Addr()
	stopDev()
	rec.next(t, "state offline", state(id, mqtt.StateOffline))
	dev, _ = startModbus(t, addr)
	rec.next(t, "state online again", state(id, mqtt.StateOnline))

	// A new desired value while the broker is away is written; the report
	// is published once the broker is back, with the state (resend).
	rec.down.Store(true)
	events <- deltaEvent{id: id, delta: map[string]string{"setpoint": "25"}}
	deadline := time.Now().Add(20 * time.Second)
	for dev.HoldingRegisters(1, 1)[0] != 250 {
		if time.Now().After(deadline) {
			t.Fatal("setpoint not written while the broker is away")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rec.down.Store(false)
	events <- connectedEvent{}
	rec.next(t, "state after reconnect", state(id, mqtt.StateOnline))
	rec.next(t, "setpoint 25 after reconnect", actual(id, "setpoint", "25"))

	// The device moves to another node: no longer served.
	moved := d.DeepCopy()
	moved.Spec.NodeName = "edge-2"
	events <- deviceEvent{key: "home/t1", device: moved}
	events <- connectedEvent{} // a barrier: the owner handled the move
	drain(rec)
	time.Sleep(300 * time.Millisecond) // three collect cycles
	select {
	case p := <-rec.ch:
		t.Fatalf("published for a device of another node: %s %s", p.topic, p.payload)
	default:
	}
}

func drain(r *recorder) {
	for {
		select {
		case <-r.ch:
		default:
			return
		}
	}
}

// A change of the Device or its model restarts its worker with the new
// configuration; a bad visitor loses its property only; a deleted model
// stops the device.
func TestMapperFollowsChanges(t *testing.T) {
	dev, _ := startModbus(t, "")
	rec := newRecorder()
	events := runOwner(t, rec)
	id := mqtt.DeviceID{Namespace: "home", Name: "t1"}
	d := thermostat("t1", "127.0.0.1", portOf(t, dev.Addr()))
	events <- modelEvent{key: "home/thermostat", model: thermostatModel()}
	events <- deviceEvent{key: "home/t1", device: d}
	rec.next(t, "temperature 21.5", actual(id, "temperature", "21.5"))

	// The temperature moves to input register 5, scaled by 0.01.
	dev.SetInputRegisters(5, 2150)
	d2 := d.DeepCopy()
	d2.Spec.Properties[0].Visitors.ConfigData["offset"] = float64(5)
	d2.Spec.Properties[0].Visitors.ConfigData["scale"] = 0.001
	events <- deviceEvent{key: "home/t1", device: d2}
	rec.next(t, "temperature 2.15", actual(id, "temperature", "2.15"))

	// A bad visitor: that property is no longer read, the others are.
	d3 := d2.DeepCopy()
	d3.Spec.Properties[1].Visitors.ConfigData["register"] = "Nope"
	events <- deviceEvent{key: "home/t1", device: d3}
	events <- connectedEvent{}
	drain(rec)
	for range 5 {
		p := rec.next(t, "a twin update", func(p published) bool { return p.topic.Kind == mqtt.KindTwinUpdate })
		u, _ := mqtt.DecodeTwinUpdate(p.payload)
		if u.Twin["setpoint"] != nil {
			t.Fatalf("setpoint still read: %s", p.payload)
		}
	}

	// The model goes: the device is no longer served.
	events <- modelEvent{key: "home/thermostat"}
	events <- connectedEvent{}
	drain(rec)
	time.Sleep(300 * time.Millisecond)
	select {
	case p := <-rec.ch:
		t.Fatalf("published without a model: %s %s", p.topic, p.payload)
	default:
	}
}

// Properties on other slave ids and a device that answers with
// exceptions: the device stays online, the property is not reported.
func TestMapperExceptions(t *testing.T) {
	s, err := modbus.NewServer(modbus.ServerConfig{Addr: "127.0.0.1:0", UnitID: 1, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start(t.Context())
	<-s.Ready()
	s.SetInputRegisters(0, 100)
	rec := newRecorder()
	events := runOwner(t, rec)
	id := mqtt.DeviceID{Namespace: "home", Name: "t1"}
	d := thermostat("t1", "127.0.0.1", portOf(t, s.Addr()))
	d.Spec.Properties = d.Spec.Properties[:2]
	d.Spec.Properties[1].Visitors.ConfigData["slaveID"] = float64(9) // the server answers 0x0B
	events <- modelEvent{key: "home/thermostat", model: thermostatModel()}
	events <- deviceEvent{key: "home/t1", device: d}
	rec.next(t, "state online", state(id, mqtt.StateOnline))
	for range 3 {
		p := rec.next(t, "a twin update", func(p published) bool { return p.topic.Kind == mqtt.KindTwinUpdate })
		u, _ := mqtt.DecodeTwinUpdate(p.payload)
		if u.Twin["setpoint"] != nil || u.Twin["temperature"] == nil {
			t.Fatalf("update %s", p.payload)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("t"), 0o600); err != nil {
		t.Fatal(err)
	}
	ok := Config{NodeName: "edge-1", MetaserverTokenFile: tok}
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	if ok.Metaserver != DefaultMetaserver || ok.BrokerURL != DefaultBrokerURL || ok.ClientID != "tether-modbus-mapper-edge-1" ||
		ok.CollectCycle != time.Second || ok.Timeout != time.Second || ok.Logger == nil {
		t.Fatalf("defaults: %+v", ok)
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "nodeName: required"},
		{Config{NodeName: "e", MetaserverTokenFile: tok + ".missing"}, "metaserverTokenFile"},
		{Config{NodeName: "Edge_1", MetaserverTokenFile: tok}, `nodeName "Edge_1"`},
		{Config{NodeName: "e", MetaserverTokenFile: tok, Metaserver: "https://127.0.0.1:10550"}, "metaserver"},
		{Config{NodeName: "e", MetaserverTokenFile: tok, Metaserver: "127.0.0.1:10550"}, "metaserver"},
		{Config{NodeName: "e", MetaserverTokenFile: tok, BrokerURL: "ws://127.0.0.1:1883"}, `brokerURL: "ws://127.0.0.1:1883": scheme "ws"`},
		{Config{NodeName: "e", MetaserverTokenFile: tok, BrokerURL: "tcp://127.0.0.1"}, "want host and port"},
		{Config{NodeName: "e", MetaserverTokenFile: tok, BrokerURL: "tcp://u:p@127.0.0.1:1883"}, "credentials go in username and password"},
		{Config{NodeName: "e", MetaserverTokenFile: tok, Password: "x"}, "password: set without a username"},
		{Config{NodeName: "e", MetaserverTokenFile: tok, CollectCycle: time.Millisecond}, "collectCycle 1ms: want at least 10ms"},
		{Config{NodeName: "e", MetaserverTokenFile: tok, Timeout: -1}, "timeout"},
	} {
		if err := tc.cfg.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// The payloads the worker publishes decode with the edge's strict decoders.
func TestPayloadsDecodeStrictly(t *testing.T) {
	dev, _ := startModbus(t, "")
	rec := newRecorder()
	events := runOwner(t, rec)
	events <- modelEvent{key: "home/thermostat", model: thermostatModel()}
	events <- deviceEvent{key: "home/t1", device: thermostat("t1", "127.0.0.1", portOf(t, dev.Addr()))}
	for range 4 {
		p := rec.next(t, "a message", func(published) bool { return true })
		var err error
		switch p.topic.Kind {
		case mqtt.KindTwinUpdate:
			_, err = mqtt.DecodeTwinUpdate(p.payload)
		case mqtt.KindStateUpdate:
			_, err = mqtt.DecodeStateUpdate(p.payload)
		default:
			err = fmt.Errorf("unexpected topic %s", p.topic)
		}
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		json.Unmarshal(p.payload, &m)
		if m["event_id"] == "" || m["timestamp"] == nil {
			t.Fatalf("no event id or timestamp: %s", p.payload)
		}
	}
	_ = api.TypeInt
}
