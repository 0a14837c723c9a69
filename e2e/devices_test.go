//go:build integration

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"

	devicesapi "github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/devices/broker/mosquittotest"
	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// Device twins through the whole stack: Device and DeviceModel in the API
// server, cloudcore dispatching them, edgecore serving their twins on an
// MQTT broker (its embedded one, or Debian's Mosquitto), mosquitto_pub and
// mosquitto_sub playing the device, and the reported values coming back
// into the Device's status.

var (
	deviceGVR = schema.GroupVersionResource{Group: devicesapi.GroupName, Version: devicesapi.Version, Resource: devicesapi.DevicesResource}
	modelGVR  = schema.GroupVersionResource{Group: devicesapi.GroupName, Version: devicesapi.Version, Resource: devicesapi.DeviceModelsResource}
)

func dynClient(t *testing.T) dynamic.Interface {
	t.Helper()
	c, err := dynamic.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// applyObject creates obj (a *devicesapi.Device or *devicesapi.DeviceModel)
// in the API server, as kubectl apply of a new object does.
func applyObject(t *testing.T, dc dynamic.Interface, obj runtime.Object) {
	t.Helper()
	var gvr schema.GroupVersionResource
	var ns string
	switch o := obj.(type) {
	case *devicesapi.Device:
		gvr, ns = deviceGVR, o.Namespace
		o.TypeMeta = metav1.TypeMeta{APIVersion: devicesapi.SchemeGroupVersion.String(), Kind: devicesapi.DeviceKind}
	case *devicesapi.DeviceModel:
		gvr, ns = modelGVR, o.Namespace
		o.TypeMeta = metav1.TypeMeta{APIVersion: devicesapi.SchemeGroupVersion.String(), Kind: devicesapi.DeviceModelKind}
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	// cloudcore installs the CRDs when it starts: the API server may not
	// serve them yet.
	eventually(t, time.Minute, "create "+gvr.Resource, func() (bool, error) {
		_, err := dc.Resource(gvr).Namespace(ns).Create(t.Context(), &unstructured.Unstructured{Object: u}, metav1.CreateOptions{})
		if apierrors.IsNotFound(err) {
			return false, err
		}
		if err != nil {
			t.Fatalf("create %s: %v", gvr.Resource, err)
		}
		return true, nil
	})
}

func getDevice(t *testing.T, dc dynamic.Interface, ns, name string) (*devicesapi.Device, error) {
	u, err := dc.Resource(deviceGVR).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return toDevice(u)
}

func toDevice(u *unstructured.Unstructured) (*devicesapi.Device, error) {
	d := new(devicesapi.Device)
	return d, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, d)
}

// reportedTwin is the reported value of prop in the Device's status.
func reportedTwin(d *devicesapi.Device, prop string) (string, bool) {
	for _, tw := range d.Status.Twins {
		if tw.PropertyName == prop {
			return tw.Reported.Value, true
		}
	}
	return "", false
}

// A thermometer model and device, as a user would write them.
func e2eThermometer(ns, node, name, desired string) (*devicesapi.DeviceModel, *devicesapi.Device) {
	model := &devicesapi.DeviceModel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "thermometer"},
		Spec: devicesapi.DeviceModelSpec{Protocol: "modbus", Properties: []devicesapi.ModelProperty{
			{Name: "temperature", Type: devicesapi.TypeFloat, AccessMode: devicesapi.ReadWrite, Minimum: "-40", Maximum: "125"},
			{Name: "humidity", Type: devicesapi.TypeInt, AccessMode: devicesapi.ReadOnly, Minimum: "0", Maximum: "100"},
		}}}
	dev := &devicesapi.Device{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: devicesapi.DeviceSpec{DeviceModelRef: &devicesapi.DeviceModelRef{Name: "thermometer"}, NodeName: node,
			Properties: []devicesapi.DeviceProperty{
				{Name: "temperature", ReportToCloud: true, Desired: devicesapi.TwinProperty{Value: desired}},
				{Name: "humidity", ReportToCloud: true},
			}}}
	return model, dev
}

// mqttDevice plays devices and apps with mosquitto_sub (every message under
// $hw/events/) and mosquitto_pub.
type mqttDevice struct {
	t   *testing.T
	ep  *mosquittotest.Broker
	rec *mosquittotest.Recorder
}

func startMQTTDevice(t *testing.T, ep *mosquittotest.Broker) *mqttDevice {
	t.Helper()
	d := &mqttDevice{t: t, ep: ep, rec: mosquittotest.NewRecorder()}
	mosquittotest.Subscribe(t, ep, "$hw/events/#", d.rec)
	return d
}

func (d *mqttDevice) publish(topic, payload string) {
	d.t.Helper()
	if err := mosquittotest.Publish(d.t, d.ep, topic, payload); err != nil {
		d.t.Fatal(err)
	}
}

// expect returns the next payload on topic that match accepts, waiting up
// to a minute.
func (d *mqttDevice) expect(topic string, match func(string) bool) string {
	d.t.Helper()
	p, ok := d.rec.Next(topic, time.Minute, func(p []byte) bool { return match(string(p)) })
	if !ok {
		d.t.Fatalf("no matching message on %s within a minute", topic)
	}
	return string(p)
}

// queuedDeviceStatus is the DeviceStatus of device ns/name in the edge's
// outbox, or nil.
func queuedDeviceStatus(tx *store.Tx, ns, name string) (*protocol.DeviceStatus, error) {
	var ds *protocol.DeviceStatus
	var derr error
	err := tx.Outbox(0, func(it store.OutboxItem) bool {
		f, err := protocol.Decode(it.Frame)
		if err != nil {
			derr = err
			return false
		}
		if f.DeviceStatus != nil && f.DeviceStatus.Namespace == ns && f.DeviceStatus.Name == name {
			ds = f.DeviceStatus
		}
		return true
	})
	if err == nil {
		err = derr
	}
	return ds, err
}

func has(s string) func(string) bool { return func(p string) bool { return strings.Contains(p, s) } }

// deltaOf decodes the delta of a twin/update/delta payload.
func deltaOf(t *testing.T, p string) map[string]string {
	var m struct {
		Delta map[string]string `json:"delta"`
	}
	if err := json.Unmarshal([]byte(p), &m); err != nil {
		t.Fatalf("delta %q: %v", p, err)
	}
	return m.Delta
}

func TestDevicesEmbeddedBroker(t *testing.T) { devicesScenario(t, false) }

func TestDevicesMosquitto(t *testing.T) { devicesScenario(t, true) }

// devicesScenario: a DeviceModel and Device applied in the API server reach
// the edge, which announces the device and the delta of its desired value
// on MQTT; a value published on twin/update reaches the Device's status;
// with the cloud link cut, reports are kept and reach the status after the
// link heals, and a desired value changed meanwhile arrives as a delta.
func devicesScenario(t *testing.T, mosquitto bool) {
	ns := namespace(t)
	c := startCloud(t)
	node := "e2e-dev-embedded"
	if mosquitto {
		node = "e2e-dev-mosquitto"
	}
	e := newEdge(t, c, node)
	var ep *mosquittotest.Broker
	if mosquitto {
		ep = mosquittotest.Start(t)
		e.devices = edgecore.DevicesConfig{MQTT: edgecore.MQTTConfig{Broker: edgecore.BrokerExternal, URL: ep.URL(),
			Username: ep.User, Password: ep.Pass}}
	} else {
		e.devices = edgecore.DevicesConfig{MQTT: edgecore.MQTTConfig{Username: "edge", Password: "s3cret"}}
	}
	e.start()
	if !mosquitto {
		host, port, _ := net.SplitHostPort(e.ec.Broker.Addr())
		ep = &mosquittotest.Broker{Host: host, Port: port, User: "edge", Pass: "s3cret"}
	}
	d := startMQTTDevice(t, ep)
	dc := dynClient(t)

	model, dev := e2eThermometer(ns, node, "thermo", "22")
	applyObject(t, dc, model)
	applyObject(t, dc, dev)
	membership := "$hw/events/node/" + node + "/membership/updated"
	d.expect(membership, has(`"id":"`+ns+`/thermo"`))
	prefix := "$hw/events/device/" + ns + "/thermo/"
	if delta := deltaOf(t, d.expect(prefix+"twin/update/delta", has(`"delta"`))); !reflect.DeepEqual(delta, map[string]string{"temperature": "22"}) {
		t.Fatalf("delta %v", delta)
	}

	// A report reaches the Device's status.
	d.publish(prefix+"twin/update", `{"event_id":"r1","timestamp":1718000000000,"twin":{"temperature":{"actual":{"value":"21.5","metadata":{"timestamp":1718000000000}},"metadata":{"type":"float"}}}}`)
	if r := d.expect(prefix+"twin/update/result", has(`"event_id":"r1"`)); strings.Contains(r, `"code"`) {
		t.Fatalf("result %s", r)
	}
	eventually(t, time.Minute, "reported 21.5 in the API server", func() (bool, error) {
		got, err := getDevice(t, dc, ns, "thermo")
		if err != nil {
			return false, err
		}
		v, _ := reportedTwin(got, "temperature")
		return v == "21.5", fmt.Errorf("status %+v", got.Status)
	})

	// The link goes down: reports are kept, a desired value changes in the
	// API server.
	e.link.Cut()
	eventually(t, time.Minute, "edge disconnected", func() (bool, error) { return !e.ec.Agent.State().Connected, nil })
	for i, v := range []string{"23", "23.5", "24"} {
		d.publish(prefix+"twin/update", fmt.Sprintf(`{"event_id":"off%d","timestamp":0,"twin":{"temperature":{"actual":{"value":%q}}}}`, i, v))
	}
	d.publish(prefix+"twin/update", `{"event_id":"off-h","timestamp":0,"twin":{"humidity":{"actual":{"value":"41"}}}}`)
	d.publish(prefix+"state/update", `{"event_id":"off-s","timestamp":0,"state":"online"}`)
	d.expect(prefix+"state/update/result", has(`"event_id":"off-s"`))
	got, err := getDevice(t, dc, ns, "thermo")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := reportedTwin(got, "temperature"); v != "21.5" {
		t.Fatalf("the status changed with the link cut: %+v", got.Status)
	}
	idx := slices.IndexFunc(got.Spec.Properties, func(p devicesapi.DeviceProperty) bool { return p.Name == "temperature" })
	patch := fmt.Sprintf(`[{"op":"replace","path":"/spec/properties/%d/desired/value","value":"25"}]`, idx)
	if _, err := dc.Resource(deviceGVR).Namespace(ns).Patch(t.Context(), "thermo", "application/json-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// The edge keeps what it got: the reports are saved in its store.
	eventually(t, time.Minute, "reports queued at the edge", func() (bool, error) {
		var ds *protocol.DeviceStatus
		err := e.ec.DB.View(func(tx *store.Tx) (err error) { ds, err = queuedDeviceStatus(tx, ns, "thermo"); return err })
		return ds != nil && ds.State == "online" && len(ds.Twins) == 2 && ds.Twins[1].Value == "24", err
	})

	e.link.Heal()
	eventually(t, 2*time.Minute, "the reports made while cut in the API server", func() (bool, error) {
		got, err := getDevice(t, dc, ns, "thermo")
		if err != nil {
			return false, err
		}
		temp, _ := reportedTwin(got, "temperature")
		hum, _ := reportedTwin(got, "humidity")
		return temp == "24" && hum == "41" && got.Status.State == "online" && got.Status.LastOnlineTime != "",
			fmt.Errorf("status %+v", got.Status)
	})
	if delta := deltaOf(t, d.expect(prefix+"twin/update/delta", has(`"delta":{"temperature":"25"}`))); delta["temperature"] != "25" {
		t.Fatalf("delta after heal %v", delta)
	}
	// The device reaches the new desired value; the status says so, with the
	// desired value it had seen.
	d.publish(prefix+"twin/update", `{"event_id":"r2","timestamp":0,"twin":{"temperature":{"actual":{"value":"25"}}}}`)
	eventually(t, time.Minute, "reported 25 in the API server", func() (bool, error) {
		got, err := getDevice(t, dc, ns, "thermo")
		if err != nil {
			return false, err
		}
		for _, tw := range got.Status.Twins {
			if tw.PropertyName == "temperature" {
				return tw.Reported.Value == "25" && tw.ObservedDesired.Value == "25", fmt.Errorf("twin %+v", tw)
			}
		}
		return false, fmt.Errorf("status %+v", got.Status)
	})
}

// TestDevicesLag measures, with 1,000 devices on one edge (embedded
// broker), the time from a device's report (a paho client publishes one
// twin/update per device) to its value in the Device's status in the API
// server (seen through a watch), and the twin updates per second the edge
// answers meanwhile: once with every device reporting at once, once with
// 50 reports a second. It also logs when the edge had queued every status
// (an upper bound: a status acknowledged before its watch event is counted
// late). The figures are logged; the test fails only if a report is lost.
func TestDevicesLag(t *testing.T) {
	const n = 1000
	ns := namespace(t)
	c := startCloud(t)
	e := newEdge(t, c, "e2e-dev-lag")
	e.start()
	dc := dynClient(t)
	model, _ := e2eThermometer(ns, e.name, "x", "")
	applyObject(t, dc, model)
	start := time.Now()
	for i := range n {
		_, dev := e2eThermometer(ns, e.name, fmt.Sprintf("d%04d", i), "")
		applyObject(t, dc, dev)
	}
	t.Logf("created %d Devices in %s", n, time.Since(start).Round(time.Millisecond))
	eventually(t, 5*time.Minute, "every device at the edge", func() (bool, error) {
		return len(e.objects(protocol.KindDevice)) == n, nil
	})
	t.Logf("all %d Devices at the edge %s after the first create", n, time.Since(start).Round(time.Millisecond))

	// As a mapper would: with the mappers' credentials edgecore made.
	pw, err := os.ReadFile(edgecore.MapperPasswordFile(e.dir))
	if err != nil {
		t.Fatal(err)
	}
	pc := paho.NewClient(paho.NewClientOptions().AddBroker(e.ec.Broker.URL()).SetClientID("lag").
		SetUsername(edgecore.MapperUsername).SetPassword(strings.TrimSpace(string(pw))))
	if tok := pc.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pc.Disconnect(100)
	var mu sync.Mutex
	results := 0 // twin/update results received, guarded by mu
	var lastResult time.Time
	tok := pc.Subscribe("$hw/events/device/"+ns+"/+/twin/update/result", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(string(m.Payload()), `"code"`) {
			t.Errorf("refused: %s", m.Payload())
		}
		results++
		lastResult = time.Now()
	})
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	// Each device is served once its model and it reached the engine:
	// ask the last one until it answers.
	eventually(t, time.Minute, "the last device served", func() (bool, error) {
		got := make(chan struct{}, 1)
		topic := "$hw/events/device/" + ns + fmt.Sprintf("/d%04d/twin/get", n-1)
		pc.Subscribe(topic+"/result", 1, func(_ paho.Client, m paho.Message) {
			if !strings.Contains(string(m.Payload()), `"code"`) {
				select {
				case got <- struct{}{}:
				default:
				}
			}
		}).WaitTimeout(10 * time.Second)
		pc.Publish(topic, 1, false, `{"event_id":"ready","timestamp":0}`).WaitTimeout(10 * time.Second)
		select {
		case <-got:
			return true, nil
		case <-time.After(time.Second):
			return false, nil
		}
	})

	// round publishes one report of value per device, every, and returns
	// each device's lag to the API server (through a watch), when every
	// update was answered and when the edge had queued every status.
	round := func(value string, every time.Duration) (lag []time.Duration, answered, queued time.Duration) {
		w, err := dc.Resource(deviceGVR).Namespace(ns).Watch(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		sent := make([]time.Time, n) // guarded by mu
		lag = make([]time.Duration, n)
		seen := 0
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ev := range w.ResultChan() {
				u, ok := ev.Object.(*unstructured.Unstructured)
				if ev.Type != watch.Modified || !ok {
					continue
				}
				d, err := toDevice(u)
				if err != nil {
					continue
				}
				i, err := strconv.Atoi(strings.TrimPrefix(d.Name, "d"))
				if err != nil || i >= n {
					continue
				}
				mu.Lock()
				if v, _ := reportedTwin(d, "temperature"); v == value && lag[i] == 0 && !sent[i].IsZero() {
					lag[i] = time.Since(sent[i])
					seen++
				}
				all := seen == n
				mu.Unlock()
				if all {
					return
				}
			}
		}()
		mu.Lock()
		base := results
		mu.Unlock()
		// How long until the edge's outbox holds every device's new value.
		queuedc := make(chan time.Duration, 1)
		first := time.Now()
		go func() {
			for time.Since(first) < 5*time.Minute {
				count := 0
				e.ec.DB.View(func(tx *store.Tx) error {
					return tx.Outbox(0, func(it store.OutboxItem) bool {
						if f, err := protocol.Decode(it.Frame); err == nil && f.DeviceStatus != nil && len(f.DeviceStatus.Twins) > 0 &&
							f.DeviceStatus.Twins[0].Value == value {
							count++
						}
						return true
					})
				})
				mu.Lock()
				acked := seen
				mu.Unlock()
				if count+acked >= n {
					queuedc <- time.Since(first)
					return
				}
				time.Sleep(100 * time.Millisecond) // each look decodes the whole outbox
			}
			queuedc <- -1
		}()
		next := time.Now()
		for i := range n {
			if every > 0 {
				time.Sleep(time.Until(next))
				next = next.Add(every)
			}
			topic := fmt.Sprintf("$hw/events/device/%s/d%04d/twin/update", ns, i)
			mu.Lock()
			sent[i] = time.Now()
			mu.Unlock()
			pc.Publish(topic, 1, false, fmt.Sprintf(`{"event_id":"lag%d","timestamp":0,"twin":{"temperature":{"actual":{"value":%q}}}}`, i, value))
		}
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("only %d of %d reports reached the API server", seen, n)
		}
		mu.Lock()
		if results-base != n {
			t.Errorf("%d updates answered, want %d", results-base, n)
		}
		answered = lastResult.Sub(first)
		mu.Unlock()
		return lag, answered, <-queuedc
	}
	report := func(what string, lag []time.Duration, answered, queued time.Duration) {
		sorted := slices.Clone(lag)
		slices.Sort(sorted)
		t.Logf("%s: %d twin updates answered in %s (%.0f/s); every status queued at the edge after %s; "+
			"device-to-API-server lag p50 %s, p90 %s, p99 %s, max %s",
			what, n, answered.Round(time.Millisecond), float64(n)/answered.Seconds(), queued.Round(time.Millisecond),
			sorted[n/2].Round(time.Millisecond), sorted[n*9/10].Round(time.Millisecond), sorted[n*99/100].Round(time.Millisecond),
			sorted[n-1].Round(time.Millisecond))
	}
	lag, answered, queued := round("20.5", 0)
	report("all devices at once", lag, answered, queued)
	lag, answered, queued = round("21.5", 20*time.Millisecond)
	report("50 reports/s", lag, answered, queued)
}
