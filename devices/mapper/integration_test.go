//go:build integration

package mapper

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/devices/broker/mosquittotest"
	"github.com/tether-edge/tether/devices/modbus"
	"github.com/tether-edge/tether/devices/modbus/modbustest"
	"github.com/tether-edge/tether/devices/mqtt"
)

// mosquitto is Debian's broker, which the tests reach with
// mosquitto_sub and mosquitto_pub.
type mosquitto struct{ *mosquittotest.Broker }

// subscribe records every device message on the broker with mosquitto_sub
// (an outside client).
func (m mosquitto) subscribe(t *testing.T) *recorder {
	t.Helper()
	rec := newRecorder()
	cmd := exec.Command(mosquittotest.LookPath(t, "mosquitto_sub"), append(m.ClientArgs(), "-t", "$hw/events/device/#", "-v", "-q", "1")...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			topic, payload, _ := strings.Cut(sc.Text(), " ")
			rec.Publish(topic, []byte(payload))
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		<-done
		if t.Failed() {
			t.Logf("mosquitto_sub: %s", stderr.String())
		}
	})
	// mosquitto_sub has subscribed once a retained or new message can
	// reach it; publish a probe until it comes back.
	deadline := time.Now().Add(30 * time.Second)
	for {
		m.publish(t, "$hw/events/device/probe/probe/updated", `{"event_id":"probe","timestamp":1,"attributes":{}}`)
		select {
		case <-rec.ch:
			return rec
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto_sub receives nothing: %s", stderr.String())
		}
	}
}

func (m mosquitto) publish(t *testing.T, topic, payload string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, mosquittotest.LookPath(t, "mosquitto_pub"), append(m.ClientArgs(), "-q", "1", "-t", topic, "-m", payload)...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
}

// pymodbusThermostat describes the pymodbus device (see
// modbustest/pymodbus_device.py) as a thermostat: input register 3 (1003)
// is the temperature in tenths, holding register 5 (50) the setpoint in
// tenths, coil 1 (off) the power.
func pymodbusThermostat(addr string) (*api.DeviceModel, *api.Device) {
	host, port, _ := net.SplitHostPort(addr)
	model := thermostatModel()
	model.Spec.Properties = append(model.Spec.Properties, api.ModelProperty{Name: "power", Type: api.TypeBoolean, AccessMode: api.ReadWrite})
	d := thermostat("py", host, 0)
	d.Spec.Protocol.ConfigData["port"] = port // quoted, as KubeEdge YAML often has it
	d.Spec.Properties = []api.DeviceProperty{
		{Name: "temperature", CollectCycle: 200, Visitors: visitor("register", "InputRegister", "offset", float64(3), "scale", 0.1)},
		{Name: "setpoint", CollectCycle: 200, Visitors: visitor("register", "HoldingRegister", "offset", float64(5), "scale", 0.1)},
		{Name: "power", CollectCycle: 200, Visitors: visitor("register", "CoilRegister", "offset", float64(1))},
	}
	return model, d
}

// The mapper between Mosquitto and pymodbus: a delta published on MQTT by
// an outside client changes the device's register, the reported value
// follows on twin/update; the device killed, the state goes offline.
func TestMapperMosquittoPymodbus(t *testing.T) {
	mq := mosquitto{mosquittotest.Start(t)}
	py := modbustest.Start(t, 0)
	e := startEdge(t, mq.URL())
	rec := mq.subscribe(t)

	model, d := pymodbusThermostat(py.Addr)
	e.put(t, model, d)
	m, err := New(Config{NodeName: "edge-1", Metaserver: "http://" + e.ms.Addr(), MetaserverTokenFile: e.tokenFile, BrokerURL: mq.URL(),
		Username: mq.User, Password: mq.Pass, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	id := mqtt.DeviceID{Namespace: "home", Name: "py"}
	rec.next(t, "state online", state(id, mqtt.StateOnline))
	rec.next(t, "temperature 100.3", actual(id, "temperature", "100.3"))
	rec.next(t, "setpoint 5", actual(id, "setpoint", "5"))

	check, err := modbus.NewClient(modbus.ClientConfig{Addr: py.Addr, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()

	var lat []time.Duration
	for i, sp := range []string{"23.5", "19", "21.2"} {
		sent := time.Now()
		mq.publish(t, mqtt.DeviceTopic(mqtt.KindTwinUpdateDelta, id).String(),
			fmt.Sprintf(`{"event_id":"d%d","timestamp":%d,"twin":{},"delta":{"setpoint":%q,"power":"true"}}`, i, sent.UnixMilli(), sp))
		rec.next(t, "setpoint "+sp, actual(id, "setpoint", sp))
		lat = append(lat, time.Since(sent))
		regs, err := check.ReadHoldingRegisters(t.Context(), 1, 5, 1)
		want := modbusTenths(sp)
		if err != nil || regs[0] != want {
			t.Fatalf("setpoint register on pymodbus: %v %v, want %d", regs, err, want)
		}
	}
	if coils, err := check.ReadCoils(t.Context(), 1, 1, 1); err != nil || !coils[0] {
		t.Fatalf("power coil on pymodbus: %v %v", coils, err)
	}
	t.Logf("delta published with mosquitto_pub to the reported value seen by mosquitto_sub: %v (includes starting mosquitto_pub)", lat)

	// The device dies: the mapper reports it offline.
	py.Stop()
	rec.next(t, "state offline", state(id, mqtt.StateOffline))
}

func modbusTenths(s string) uint16 {
	var f float64
	fmt.Sscan(s, &f)
	return uint16(int16(f*10 + 0.5))
}
