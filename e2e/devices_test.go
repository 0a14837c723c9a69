//go:build integration

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
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
