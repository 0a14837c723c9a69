package metaserver

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"

	devicesapi "github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

func testModel(ns, name string) *devicesapi.DeviceModel {
	return &devicesapi.DeviceModel{
		TypeMeta:   metav1.TypeMeta{APIVersion: devicesapi.SchemeGroupVersion.String(), Kind: devicesapi.DeviceModelKind},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-model-" + ns + "-" + name)},
		Spec: devicesapi.DeviceModelSpec{Protocol: "modbus", Properties: []devicesapi.ModelProperty{
			{Name: "temperature", Type: devicesapi.TypeFloat, AccessMode: devicesapi.ReadOnly},
			{Name: "setpoint", Type: devicesapi.TypeFloat, AccessMode: devicesapi.ReadWrite, Minimum: "5", Maximum: "30"},
		}},
	}
}

func testDevice(ns, name, model, setpoint string) *devicesapi.Device {
	return &devicesapi.Device{
		TypeMeta:   metav1.TypeMeta{APIVersion: devicesapi.SchemeGroupVersion.String(), Kind: devicesapi.DeviceKind},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-dev-" + ns + "-" + name), Labels: map[string]string{"room": "1"}},
		Spec: devicesapi.DeviceSpec{
			DeviceModelRef: &devicesapi.DeviceModelRef{Name: model},
			NodeName:       node,
			Protocol:       devicesapi.ProtocolConfig{ProtocolName: "modbus", ConfigData: devicesapi.ConfigData{"ip": "127.0.0.1", "port": float64(502)}},
			Properties: []devicesapi.DeviceProperty{{Name: "setpoint", Desired: devicesapi.TwinProperty{Value: setpoint},
				Visitors: devicesapi.VisitorConfig{ProtocolName: "modbus", ConfigData: devicesapi.ConfigData{"register": "HoldingRegister", "offset": float64(1)}}}},
		},
	}
}

// putCustom stores device resources as the agent does: JSON data, the
// cloud's resourceVersion bumped by each put.
func (f *fixture) putCustom(objs ...interface {
	metav1.Object
	runtime.Object
}) {
	f.t.Helper()
	err := f.db.Update(func(tx *store.Tx) error {
		for _, o := range objs {
			rv, _ := strconv.Atoi(o.GetResourceVersion())
			o.SetResourceVersion(strconv.Itoa(rv + 1))
			kind := protocol.KindDevice
			if _, ok := o.(*devicesapi.DeviceModel); ok {
				kind = protocol.KindDeviceModel
			}
			data, err := json.Marshal(o)
			if err != nil {
				return err
			}
			if err := tx.PutObject(&protocol.Object{Kind: kind, UID: string(o.GetUID()), Namespace: o.GetNamespace(),
				Name: o.GetName(), ResourceVersion: o.GetResourceVersion(), Data: data}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func TestDevicesGetList(t *testing.T) {
	f := newFixture(t, Config{})
	f.putCustom(testModel("home", "thermostat"), testDevice("home", "t1", "thermostat", "21"),
		testDevice("home", "t2", "thermostat", "22"), testDevice("lab", "t3", "thermostat", "19"))
	f.sync()

	var rl metav1.APIResourceList
	if code := f.get("/apis/devices.tether.io/v1beta1", &rl); code != 200 || rl.GroupVersion != "devices.tether.io/v1beta1" || len(rl.APIResources) != 3 {
		t.Fatalf("resource list: %d %+v", code, rl)
	}
	var g metav1.APIGroup
	if code := f.get("/apis/devices.tether.io", &g); code != 200 || g.Name != "devices.tether.io" || g.Kind != "APIGroup" {
		t.Fatalf("group: %d %+v", code, g)
	}

	var d devicesapi.Device
	if code := f.get("/apis/devices.tether.io/v1beta1/namespaces/home/devices/t1", &d); code != 200 || d.Kind != "Device" ||
		d.APIVersion != "devices.tether.io/v1beta1" || d.ResourceVersion == "" || d.Spec.Properties[0].Desired.Value != "21" ||
		d.Spec.Protocol.ConfigData["ip"] != "127.0.0.1" {
		t.Fatalf("get device: %d %+v", code, d)
	}
	if code := f.get("/apis/devices.tether.io/v1beta1/namespaces/home/devices/t1/status", &d); code != 200 || d.Name != "t1" {
		t.Fatalf("get device status: %d", code)
	}
	var m devicesapi.DeviceModel
	if code := f.get("/apis/devices.tether.io/v1beta1/namespaces/home/devicemodels/thermostat", &m); code != 200 || m.Kind != "DeviceModel" ||
		len(m.Spec.Properties) != 2 || m.Spec.Protocol != "modbus" {
		t.Fatalf("get model: %d %+v", code, m)
	}

	devNames := func(l *devicesapi.DeviceList) string {
		s := ""
		for _, d := range l.Items {
			if d.Kind != "Device" || d.APIVersion != "devices.tether.io/v1beta1" {
				t.Errorf("list item %s without its kind: %+v", d.Name, d.TypeMeta)
			}
			s += d.Namespace + "/" + d.Name + " "
		}
		return s
	}
	for _, c := range []struct{ path, want string }{
		{"/apis/devices.tether.io/v1beta1/devices", "home/t1 home/t2 lab/t3 "},
		{"/apis/devices.tether.io/v1beta1/namespaces/home/devices", "home/t1 home/t2 "},
		{"/apis/devices.tether.io/v1beta1/devices?fieldSelector=metadata.name%3Dt3", "lab/t3 "},
		{"/apis/devices.tether.io/v1beta1/devices?labelSelector=room%3D1", "home/t1 home/t2 lab/t3 "},
	} {
		var l devicesapi.DeviceList
		if code := f.get(c.path, &l); code != 200 || devNames(&l) != c.want || l.Kind != "DeviceList" ||
			l.APIVersion != "devices.tether.io/v1beta1" || l.ResourceVersion == "" {
			t.Errorf("%s: %d %q (%+v), want %q", c.path, code, devNames(&l), l.TypeMeta, c.want)
		}
	}

	for _, c := range []struct {
		method, path string
		code         int
	}{
		// As the API server: custom resources select by name and namespace only.
		{"GET", "/apis/devices.tether.io/v1beta1/devices?fieldSelector=spec.nodeName%3D" + node, 400},
		{"GET", "/apis/devices.tether.io/v1beta1/namespaces/home/devices/nope", 404},
		{"GET", "/apis/devices.tether.io/v1beta1/pods", 404},
		{"GET", "/api/v1/devices", 404},
		{"GET", "/apis/devices.tether.io/v1/devices", 404},
		{"PATCH", "/apis/devices.tether.io/v1beta1/namespaces/home/devices/t1/status", 405},
	} {
		var st metav1.Status
		if code := f.request(c.method, c.path, "", &st); code != c.code || int(st.Code) != c.code {
			t.Errorf("%s %s: %d %+v, want %d", c.method, c.path, code, st, c.code)
		}
	}
}

// deviceClient is a client-go REST client of the device group, as a mapper
// builds it.
func deviceClient(t *testing.T, host string) *rest.RESTClient {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := devicesapi.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	cfg := &rest.Config{Host: host, APIPath: "/apis", ContentConfig: rest.ContentConfig{
		GroupVersion:         &devicesapi.SchemeGroupVersion,
		NegotiatedSerializer: serializer.NewCodecFactory(scheme).WithoutConversion(),
	}}
	c, err := rest.RESTClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// client-go's discovery, REST client and informer work against the device
// group: an informer sees devices added, changed and deleted in the store.
func TestDevicesClientGo(t *testing.T) {
	f := newFixture(t, Config{})
	f.putCustom(testModel("home", "thermostat"), testDevice("home", "t1", "thermostat", "21"))
	f.sync()
	srv := httptest.NewServer(withToken(f.s.Handler(), nodeToken))
	t.Cleanup(srv.Close)

	dc, err := discovery.NewDiscoveryClientForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	rl, err := dc.ServerResourcesForGroupVersion("devices.tether.io/v1beta1")
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, r := range rl.APIResources {
		found[r.Name] = true
	}
	if !found["devices"] || !found["devicemodels"] || !found["devices/status"] {
		t.Fatalf("discovery: %+v", rl.APIResources)
	}

	rc := deviceClient(t, srv.URL)
	var ml devicesapi.DeviceModelList
	if err := rc.Get().Resource("devicemodels").Do(t.Context()).Into(&ml); err != nil || len(ml.Items) != 1 {
		t.Fatalf("list models: %v %+v", err, ml)
	}

	events := make(chan string, 16)
	_, informer := toolscache.NewInformerWithOptions(toolscache.InformerOptions{
		ListerWatcher: toolscache.NewListWatchFromClient(rc, "devices", metav1.NamespaceAll, fields.Everything()),
		ObjectType:    &devicesapi.Device{},
		Handler: toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(o any) { events <- "add " + o.(*devicesapi.Device).Name },
			UpdateFunc: func(_, o any) {
				d := o.(*devicesapi.Device)
				events <- "update " + d.Name + " " + d.Spec.Properties[0].Desired.Value
			},
			DeleteFunc: func(o any) {
				if d, ok := o.(*devicesapi.Device); ok {
					events <- "delete " + d.Name
				} else {
					events <- "delete (tombstone)"
				}
			},
		},
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go informer.Run(ctx.Done())
	next := func(want string) {
		t.Helper()
		select {
		case got := <-events:
			if got != want {
				t.Fatalf("informer event %q, want %q", got, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no informer event, want %q", want)
		}
	}
	next("add t1")

	d := testDevice("home", "t1", "thermostat", "23")
	d.ResourceVersion = "1"
	f.putCustom(d, testDevice("home", "t2", "thermostat", "20"))
	f.s.ObjectsChanged(nil, nil)
	f.sync()
	got := map[string]bool{}
	for range 2 {
		select {
		case e := <-events:
			got[e] = true
		case <-time.After(30 * time.Second):
			t.Fatalf("informer events %v, want two", got)
		}
	}
	if !got["update t1 23"] || !got["add t2"] {
		t.Fatalf("informer events %v", got)
	}
	f.del(protocol.KindDevice, "uid-dev-home-t1")
	f.sync()
	next("delete t1")
}
