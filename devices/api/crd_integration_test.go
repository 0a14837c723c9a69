//go:build integration

package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/controlplane"
	"github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/manifests/crds"
)

// A KubeEdge v1beta1 model and device, written as in KubeEdge's docs, with
// only apiVersion changed. pushMethod is a KubeEdge field Tether does not
// declare: the API server prunes it.
const (
	exampleModel = `
apiVersion: devices.tether.io/v1beta1
kind: DeviceModel
metadata:
  name: temperature-model
spec:
  protocol: modbus
  properties:
  - name: temperature
    description: temperature in degree celsius
    type: INT
    accessMode: ReadWrite
    minimum: "-40"
    maximum: "125"
    unit: Celsius
  - name: temperature-enable
    description: enable data collection of the temperature sensor
    type: BOOLEAN
    accessMode: ReadWrite
  - name: firmware
    type: STRING
    accessMode: ReadOnly
`
	exampleDevice = `
apiVersion: devices.tether.io/v1beta1
kind: Device
metadata:
  name: temperature-sensor
  labels:
    model: temperature-model
spec:
  deviceModelRef:
    name: temperature-model
  nodeName: edge-node-1
  protocol:
    protocolName: modbus
    configData:
      ip: 192.168.1.33
      port: 502
      slaveID: 1
      tcp: {keepAlive: true}
  properties:
  - name: temperature
    collectCycle: 2000
    reportCycle: 5000
    reportToCloud: true
    desired:
      value: "25"
      metadata:
        type: int
    visitors:
      protocolName: modbus
      configData:
        register: HoldingRegister
        offset: 2
        limit: 1
        scale: 0.1
        isSwap: true
        isRegisterSwap: true
    pushMethod:
      mqtt:
        address: tcp://127.0.0.1:1883
        topic: temperature
        qos: 0
  - name: temperature-enable
    desired:
      value: "true"
    visitors:
      protocolName: modbus
      configData: {register: CoilRegister, offset: 3, limit: 1}
`
)

// TestCRDs applies manifests/crds to a real API server and checks that the
// KubeEdge example is accepted as is, bad specs are refused with a message
// naming the field, the status subresource works and the printer columns
// show.
func TestCRDs(t *testing.T) {
	ctx := t.Context()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	began := time.Now()
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: t.TempDir(), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cp.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	t.Logf("control plane (etcd, kube-apiserver) ready in %s", time.Since(began).Round(time.Millisecond))
	cfg := cp.RESTConfig()

	// Apply the CRDs and wait until they are served.
	ext, err := apiextensions.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	all, err := crds.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, crd := range all {
		if _, err := ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create CRD %s: %v", crd.Name, err)
		}
	}
	for _, crd := range all {
		waitEstablished(t, ext, crd.Name)
	}

	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const ns = "devices-test"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	warnings := &warningRecorder{}
	rc := restClient(t, cfg, warnings)

	// The KubeEdge example, sent as the user wrote it.
	var model api.DeviceModel
	if err := rc.Post().Namespace(ns).Resource(api.DeviceModelsResource).
		Body(yamlToJSON(t, exampleModel)).Do(ctx).Into(&model); err != nil {
		t.Fatalf("create model: %v", err)
	}
	if got := model.Property("firmware"); got == nil || got.AccessMode != api.ReadOnly || model.Spec.Properties[0].Minimum != "-40" {
		t.Errorf("model as stored: %+v", model.Spec)
	}
	var dev api.Device
	if err := rc.Post().Namespace(ns).Resource(api.DevicesResource).
		Body(yamlToJSON(t, exampleDevice)).Do(ctx).Into(&dev); err != nil {
		t.Fatalf("create device: %v", err)
	}
	if errs := api.ValidateDevice(&dev, &model); len(errs) != 0 {
		t.Errorf("ValidateDevice(example) = %v", errs.ToAggregate())
	}
	checkExampleDevice(t, &dev)
	// The field Tether does not declare is dropped, with a warning (what
	// kubectl apply prints).
	if got := warnings.take(); len(got) != 1 || !strings.Contains(got[0], `unknown field "spec.properties[0].pushMethod"`) {
		t.Errorf("warnings creating the example device = %q, want one on pushMethod", got)
	}
	raw, err := rc.Get().Namespace(ns).Resource(api.DevicesResource).Name(dev.Name).DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "pushMethod") {
		t.Errorf("stored device still has pushMethod: %s", raw)
	}

	// A model with a defaulted accessMode.
	var defaulted api.DeviceModel
	if err := rc.Post().Namespace(ns).Resource(api.DeviceModelsResource).Body(yamlToJSON(t, `
apiVersion: devices.tether.io/v1beta1
kind: DeviceModel
metadata: {name: defaulted}
spec:
  properties: [{name: p, type: DOUBLE}]
`)).Do(ctx).Into(&defaulted); err != nil {
		t.Fatalf("create model: %v", err)
	}
	if got := defaulted.Spec.Properties[0].AccessMode; got != api.ReadWrite {
		t.Errorf("accessMode not set = %q, want the default ReadWrite", got)
	}

	t.Run("refused", func(t *testing.T) { testRefused(t, rc, ns) })
	t.Run("status", func(t *testing.T) { testStatus(t, rc, ns) })
	t.Run("table", func(t *testing.T) { testTable(t, rc, ns) })
}

func checkExampleDevice(t *testing.T, dev *api.Device) {
	t.Helper()
	if dev.Spec.DeviceModelRef == nil || dev.Spec.DeviceModelRef.Name != "temperature-model" || dev.Spec.NodeName != "edge-node-1" {
		t.Errorf("device spec: %+v", dev.Spec)
	}
	// Through apimachinery's serializer whole numbers decode as int64
	// (through encoding/json, as float64).
	if got := dev.Spec.Protocol.ConfigData["port"]; got != int64(502) {
		t.Errorf("protocol.configData.port = %#v, want 502", got)
	}
	if tcp, _ := dev.Spec.Protocol.ConfigData["tcp"].(map[string]any); tcp["keepAlive"] != true {
		t.Errorf("protocol.configData.tcp = %#v, want keepAlive true (free-form nested fields kept)", dev.Spec.Protocol.ConfigData["tcp"])
	}
	if len(dev.Spec.Properties) != 2 {
		t.Fatalf("properties: %+v", dev.Spec.Properties)
	}
	p := dev.Spec.Properties[0]
	if p.Name != "temperature" || p.CollectCycle != 2000 || p.ReportCycle != 5000 || !p.ReportToCloud ||
		p.Desired.Value != "25" || p.Desired.Metadata["type"] != "int" ||
		p.Visitors.ProtocolName != "modbus" || p.Visitors.ConfigData["scale"] != 0.1 {
		t.Errorf("properties[0]: %+v", p)
	}
}

// testRefused sends bad specs and checks the API server refuses each with
// a message naming the field, and that the Go validation refuses the same
// field where the spec decodes into the Go types.
func testRefused(t *testing.T, rc *rest.RESTClient, ns string) {
	modelWith := func(props string) string {
		return "apiVersion: devices.tether.io/v1beta1\nkind: DeviceModel\nmetadata: {name: bad}\nspec:\n  protocol: modbus\n  properties:\n" + props
	}
	deviceWith := func(spec string) string {
		return "apiVersion: devices.tether.io/v1beta1\nkind: Device\nmetadata: {name: bad}\nspec:\n" + spec
	}
	tests := []struct {
		name     string
		resource string
		yaml     string
		want     []string // substrings of the API server's message
		goField  string   // the field ValidateDeviceModel or ValidateDevice names; "" to skip
	}{{
		name: "property type not in enum", resource: api.DeviceModelsResource,
		yaml: modelWith("  - {name: t, type: LONG}"),
		want: []string{`spec.properties[0].type`, `Unsupported value: "LONG"`, `"INT"`}, goField: "spec.properties[0].type",
	}, {
		name: "lower-case property type", resource: api.DeviceModelsResource,
		yaml: modelWith("  - {name: t, type: int}"),
		want: []string{`spec.properties[0].type`, `Unsupported value: "int"`}, goField: "spec.properties[0].type",
	}, {
		name: "bad accessMode", resource: api.DeviceModelsResource,
		yaml: modelWith("  - {name: t, type: INT, accessMode: WriteOnly}"),
		want: []string{`spec.properties[0].accessMode`, `Unsupported value: "WriteOnly"`, `"ReadOnly"`}, goField: "spec.properties[0].accessMode",
	}, {
		name: "property without type", resource: api.DeviceModelsResource,
		yaml: modelWith("  - {name: t}"),
		want: []string{`spec.properties[0].type: Required value`}, goField: "spec.properties[0].type",
	}, {
		name: "property without name", resource: api.DeviceModelsResource,
		yaml: modelWith("  - {type: INT}"),
		want: []string{`spec.properties[0].name: Required value`}, goField: "spec.properties[0].name",
	}, {
		name: "bad property name", resource: api.DeviceModelsResource,
		yaml: modelWith("  - {name: 'temp erature', type: INT}"),
		want: []string{`spec.properties[0].name`, `should match`}, goField: "spec.properties[0].name",
	}, {
		name: "duplicate property", resource: api.DeviceModelsResource,
		yaml: modelWith("  - {name: t, type: INT}\n  - {name: t, type: FLOAT}"),
		want: []string{`spec.properties[1]`, `Duplicate value`}, goField: "spec.properties[1].name",
	}, {
		name: "minimum not a number", resource: api.DeviceModelsResource,
		yaml: modelWith("  - {name: t, type: INT, minimum: ten}"),
		want: []string{`spec.properties[0].minimum`, `should match`}, goField: "spec.properties[0].minimum",
	}, {
		name: "minimum above maximum", resource: api.DeviceModelsResource,
		yaml: modelWith("  - {name: t, type: INT, minimum: '10', maximum: '1'}"),
		want: []string{`spec.properties[0]`, `minimum must not be more than maximum`}, goField: "spec.properties[0].minimum",
	}, {
		name: "bounds on a string", resource: api.DeviceModelsResource,
		yaml: modelWith("  - {name: t, type: STRING, maximum: '1'}"),
		want: []string{`spec.properties[0]`, `minimum and maximum apply only to INT, FLOAT and DOUBLE`}, goField: "spec.properties[0].maximum",
	}, {
		name: "missing deviceModelRef", resource: api.DevicesResource,
		yaml: deviceWith("  nodeName: edge-node-1"),
		want: []string{`spec.deviceModelRef: Required value`}, goField: "spec.deviceModelRef",
	}, {
		name: "missing spec", resource: api.DevicesResource,
		yaml: "apiVersion: devices.tether.io/v1beta1\nkind: Device\nmetadata: {name: bad}",
		want: []string{`spec: Required value`},
	}, {
		name: "deviceModelRef without name", resource: api.DevicesResource,
		yaml: deviceWith("  deviceModelRef: {}"),
		want: []string{`spec.deviceModelRef.name: Required value`}, goField: "spec.deviceModelRef.name",
	}, {
		name: "bad nodeName", resource: api.DevicesResource,
		yaml: deviceWith("  deviceModelRef: {name: m}\n  nodeName: Edge_1"),
		want: []string{`spec.nodeName`, `should match`}, goField: "spec.nodeName",
	}, {
		name: "desired without value", resource: api.DevicesResource,
		yaml: deviceWith("  deviceModelRef: {name: m}\n  properties:\n  - {name: t, desired: {metadata: {a: b}}}"),
		want: []string{`spec.properties[0].desired.value: Required value`},
	}, {
		name: "negative reportCycle", resource: api.DevicesResource,
		yaml: deviceWith("  deviceModelRef: {name: m}\n  properties:\n  - {name: t, reportCycle: -1}"),
		want: []string{`spec.properties[0].reportCycle`, `should be greater than or equal to 0`}, goField: "spec.properties[0].reportCycle",
	}, {
		name: "configData not an object", resource: api.DevicesResource,
		yaml: deviceWith("  deviceModelRef: {name: m}\n  protocol: {protocolName: modbus, configData: [1, 2]}"),
		want: []string{`spec.protocol.configData`, `must be of type object`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := yamlToJSON(t, tt.yaml)
			err := rc.Post().Namespace(ns).Resource(tt.resource).Body(body).Do(t.Context()).Error()
			if err == nil {
				t.Fatalf("created %s, want it refused", tt.resource)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("err = %v, want 422 Invalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q does not contain %q", err.Error(), w)
				}
			}
			t.Logf("refused: %v", err)
			if tt.goField == "" {
				return
			}
			var msg string
			switch tt.resource {
			case api.DeviceModelsResource:
				var m api.DeviceModel
				if err := json.Unmarshal(body, &m); err != nil {
					t.Fatal(err)
				}
				msg = fmt.Sprint(api.ValidateDeviceModel(&m).ToAggregate())
			default:
				var d api.Device
				if err := json.Unmarshal(body, &d); err != nil {
					t.Fatal(err)
				}
				msg = fmt.Sprint(api.ValidateDevice(&d, nil).ToAggregate())
			}
			if !strings.Contains(msg, tt.goField+":") {
				t.Errorf("Go validation = %q, want an error on %s", msg, tt.goField)
			}
		})
	}
}

// testStatus writes the status through the status subresource and checks
// that each of spec and status is written only through its own endpoint.
func testStatus(t *testing.T, rc *rest.RESTClient, ns string) {
	ctx := t.Context()
	var dev api.Device
	if err := rc.Get().Namespace(ns).Resource(api.DevicesResource).Name("temperature-sensor").Do(ctx).Into(&dev); err != nil {
		t.Fatal(err)
	}
	dev.Status = api.DeviceStatus{
		State:          api.StateOnline,
		LastOnlineTime: "2025-06-10T08:00:00Z",
		Twins: []api.Twin{{
			PropertyName:    "temperature",
			Reported:        api.TwinProperty{Value: "24", Metadata: map[string]string{"timestamp": "1718000000000", "type": "int"}},
			ObservedDesired: api.TwinProperty{Value: "25", Metadata: map[string]string{"timestamp": "1717999990000"}},
		}},
	}
	dev.Spec.NodeName = "edge-node-2" // ignored by the status subresource
	var got api.Device
	if err := rc.Put().Namespace(ns).Resource(api.DevicesResource).Name(dev.Name).SubResource("status").
		Body(&dev).Do(ctx).Into(&got); err != nil {
		t.Fatalf("update status: %v", err)
	}
	if got.Status.State != api.StateOnline || len(got.Status.Twins) != 1 || got.Status.Twins[0].Reported.Value != "24" ||
		got.Status.Twins[0].ObservedDesired.Value != "25" || got.Status.LastOnlineTime != "2025-06-10T08:00:00Z" {
		t.Errorf("status after update: %+v", got.Status)
	}
	if got.Spec.NodeName != "edge-node-1" {
		t.Errorf("spec.nodeName = %q after a status update, want it unchanged", got.Spec.NodeName)
	}

	// A spec update through the main resource leaves the status alone.
	got.Spec.Properties[0].Desired.Value = "26"
	got.Status.State = api.StateOffline
	var after api.Device
	if err := rc.Put().Namespace(ns).Resource(api.DevicesResource).Name(dev.Name).
		Body(&got).Do(ctx).Into(&after); err != nil {
		t.Fatalf("update spec: %v", err)
	}
	if after.Spec.Properties[0].Desired.Value != "26" || after.Status.State != api.StateOnline {
		t.Errorf("after a spec update: desired %q, state %q; want 26, online",
			after.Spec.Properties[0].Desired.Value, after.Status.State)
	}

	// The status schema is checked too: twins are keyed by propertyName.
	after.Status.Twins = append(after.Status.Twins, after.Status.Twins[0])
	err := rc.Put().Namespace(ns).Resource(api.DevicesResource).Name(dev.Name).SubResource("status").
		Body(&after).Do(ctx).Error()
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "status.twins[1]") {
		t.Errorf("duplicate twin: err = %v, want Invalid naming status.twins[1]", err)
	}
}

// testTable reads devices and models as kubectl get does, as a Table, and
// checks the printer columns.
func testTable(t *testing.T, rc *rest.RESTClient, ns string) {
	devices := getTable(t, rc, ns, api.DevicesResource)
	want := []string{"Name", "Node", "Model", "State", "Age"}
	checkColumns(t, devices, want)
	row := findRow(t, devices, "temperature-sensor")
	for i, w := range []string{"temperature-sensor", "edge-node-1", "temperature-model", api.StateOnline} {
		if row.Cells[i] != w {
			t.Errorf("devices row cell %s = %v, want %q", want[i], row.Cells[i], w)
		}
	}

	models := getTable(t, rc, ns, api.DeviceModelsResource)
	checkColumns(t, models, []string{"Name", "Protocol", "Age"})
	if row := findRow(t, models, "temperature-model"); row.Cells[1] != "modbus" {
		t.Errorf("devicemodels row = %v, want protocol modbus", row.Cells)
	}
}

func getTable(t *testing.T, rc *rest.RESTClient, ns, resource string) *metav1.Table {
	t.Helper()
	raw, err := rc.Get().Namespace(ns).Resource(resource).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(t.Context())
	if err != nil {
		t.Fatalf("get %s as table: %v", resource, err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	if table.Kind != "Table" {
		t.Fatalf("get %s as table: got kind %q", resource, table.Kind)
	}
	return &table
}

func checkColumns(t *testing.T, table *metav1.Table, want []string) {
	t.Helper()
	var got []string
	for _, c := range table.ColumnDefinitions {
		got = append(got, c.Name)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("columns = %v, want %v (kubectl shows them upper-cased)", got, want)
	}
}

func findRow(t *testing.T, table *metav1.Table, name string) metav1.TableRow {
	t.Helper()
	for _, r := range table.Rows {
		if len(r.Cells) > 0 && r.Cells[0] == name {
			return r
		}
	}
	t.Fatalf("no row %q in %+v", name, table.Rows)
	return metav1.TableRow{}
}

func waitEstablished(t *testing.T, ext apiextensions.Interface, name string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true,
		func(ctx context.Context) (bool, error) {
			crd, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextensionsv1.NamesAccepted && c.Status == apiextensionsv1.ConditionFalse {
					return false, fmt.Errorf("names not accepted: %s", c.Message)
				}
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
	if err != nil {
		t.Fatalf("CRD %s established: %v", name, err)
	}
}

// restClient returns a typed REST client for the group, built on the
// package's AddToScheme.
func restClient(t *testing.T, cfg *rest.Config, warnings rest.WarningHandler) *rest.RESTClient {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := api.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &api.SchemeGroupVersion
	c.APIPath = "/apis"
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	c.WarningHandler = warnings
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// warningRecorder keeps the API server's warnings (Warning headers).
type warningRecorder struct {
	mu   sync.Mutex
	msgs []string // guarded by mu
}

func (w *warningRecorder) HandleWarningHeader(code int, agent, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

// take returns the warnings received since the last call.
func (w *warningRecorder) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	msgs := w.msgs
	w.msgs = nil
	return msgs
}

func yamlToJSON(t *testing.T, y string) []byte {
	t.Helper()
	b, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
