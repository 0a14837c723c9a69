package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	fcache "k8s.io/client-go/tools/cache/testing"

	"github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/protocol"
)

// recorder is a Notifier that keeps the nodes it was told about.
type recorder struct {
	mu    sync.Mutex
	nodes []string // guarded by mu
	ch    chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 1)} }

func (r *recorder) NodeChanged(node string) {
	r.mu.Lock()
	r.nodes = append(r.nodes, node)
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

// waitFor waits until the recorded nodes include all of want, and returns
// and forgets everything recorded so far.
func (r *recorder) waitFor(t *testing.T, want ...string) []string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		got := r.nodes
		ok := true
		for _, w := range want {
			ok = ok && slices.Contains(got, w)
		}
		if ok {
			r.nodes = nil
			r.mu.Unlock()
			return got
		}
		r.mu.Unlock()
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("nodes %v notified, want %v", got, want)
		}
	}
}

type fakeSources struct {
	devices, models *fcache.FakeControllerSource
	served          atomic.Bool
}

func (f *fakeSources) source() deviceSource {
	return deviceSource{devices: f.devices, models: f.models, probe: func(context.Context) error {
		if !f.served.Load() {
			return fmt.Errorf("%w: test", errNotServed)
		}
		return nil
	}}
}

const ns = "plant"

func dev(name, uid, node, model string, generation int64) *api.Device {
	return &api.Device{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid), Generation: generation,
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: api.DeviceSpec{NodeName: node, DeviceModelRef: &api.DeviceModelRef{Name: model},
			Properties: []api.DeviceProperty{{Name: "temperature", Desired: api.TwinProperty{Value: "25"}}}},
	}
}

func model(name string, generation int64) *api.DeviceModel {
	return &api.DeviceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), Generation: generation},
		Spec:       api.DeviceModelSpec{Properties: []api.ModelProperty{{Name: "temperature", Type: api.TypeInt}}},
	}
}

func edgeNode(name string, edge bool) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if edge {
		n.Labels = map[string]string{EdgeRoleLabel: ""}
	}
	return n
}

func startDispatcher(t *testing.T, src *fakeSources, objs ...runtime.Object) (*Dispatcher, *recorder) {
	t.Helper()
	d, rec, _ := startDispatcherClient(t, src, objs...)
	return d, rec
}

// startDispatcherClient starts a Dispatcher over a fake clientset holding
// edge nodes a and b, the non-edge node cloud, and objs.
func startDispatcherClient(t *testing.T, src *fakeSources, objs ...runtime.Object) (*Dispatcher, *recorder, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset(append([]runtime.Object{edgeNode("a", true), edgeNode("b", true), edgeNode("cloud", false)}, objs...)...)
	d, err := newDispatcher(client, src.source(), Config{DevicePoll: 20 * time.Millisecond},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	d.SetNotifier(rec)
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(func() { cancel(); d.Shutdown() })
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return d, rec, client
}

// desired lists Desired(node) as "Kind/name@version".
func desired(d *Dispatcher, node string) []string {
	var out []string
	for _, o := range d.Desired(node, nil) {
		v := o.ResourceVersion
		if o.Kind == protocol.KindPod && strings.HasPrefix(v, podVersionPrefix) {
			v = "" // a hash: TestPodStatusNotSentDown checks it
		}
		out = append(out, fmt.Sprintf("%s/%s@%s", o.Kind, o.Name, v))
	}
	return out
}

func checkDesired(t *testing.T, d *Dispatcher, node string, want ...string) {
	t.Helper()
	got := desired(d, node)
	// Devices come in index order; models and devices are each a block.
	sortBlock := func(s []string) {
		slices.SortStableFunc(s, func(a, b string) int {
			ka, kb := strings.SplitN(a, "/", 2)[0], strings.SplitN(b, "/", 2)[0]
			if ka != kb {
				return 0
			}
			return strings.Compare(a, b)
		})
	}
	sortBlock(got)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("Desired(%s) = %v, want %v", node, got, want)
	}
}

func TestDesiredDevices(t *testing.T) {
	src := &fakeSources{devices: fcache.NewFakeControllerSource(), models: fcache.NewFakeControllerSource()}
	src.served.Store(true)
	src.models.Add(model("thermo", 1))
	src.models.Add(model("valve", 3))
	src.devices.Add(dev("t1", "uid-t1", "a", "thermo", 1))
	src.devices.Add(dev("t2", "uid-t2", "a", "thermo", 2))
	src.devices.Add(dev("v1", "uid-v1", "b", "valve", 1))
	src.devices.Add(dev("x1", "uid-x1", "a", "missing", 1))
	d, rec := startDispatcher(t, src)
	if !d.Ready() || !d.Serves(protocol.KindDevice) || !d.Serves(protocol.KindDeviceModel) {
		t.Fatal("not ready or not serving devices after Start")
	}
	rec.waitFor(t, "a", "b")

	// Models first, each once; a device whose model is missing is listed.
	checkDesired(t, d, "a", "DeviceModel/thermo@1", "Device/t1@1", "Device/t2@2", "Device/x1@1")
	checkDesired(t, d, "b", "DeviceModel/valve@3", "Device/v1@1")
	checkDesired(t, d, "cloud")

	// The data is the object's JSON with apiVersion and kind, without
	// managedFields; the version is the generation.
	o := protocol.Object{Kind: protocol.KindDevice, UID: "uid-t2", Namespace: ns, Name: "t2"}
	if ok, err := d.Encode("", &o); !ok || err != nil {
		t.Fatalf("Encode t2: %v %v", ok, err)
	}
	var got api.Device
	if err := json.Unmarshal(o.Data, &got); err != nil {
		t.Fatal(err)
	}
	if got.APIVersion != "devices.tether.io/v1beta1" || got.Kind != "Device" || got.UID != "uid-t2" ||
		got.Spec.Properties[0].Desired.Value != "25" || o.ResourceVersion != "2" || strings.Contains(string(o.Data), "managedFields") {
		t.Fatalf("Encode t2: version %s, data %s", o.ResourceVersion, o.Data)
	}
	m := protocol.Object{Kind: protocol.KindDeviceModel, UID: "uid-thermo", Namespace: ns, Name: "thermo"}
	if ok, err := d.Encode("", &m); !ok || err != nil || !strings.Contains(string(m.Data), `"kind":"DeviceModel"`) {
		t.Fatalf("Encode thermo: %v %v %s", ok, err, m.Data)
	}
	if ok, _ := d.Encode("", &protocol.Object{Kind: protocol.KindDevice, UID: "other-uid", Namespace: ns, Name: "t2"}); ok {
		t.Fatal("Encode of a device with another UID succeeded")
	}
	if c, err := d.Device(ns, "t1"); err != nil || c.Spec.NodeName != "a" {
		t.Fatalf("Device(t1) = %v, %v", c, err)
	}

	// A move notifies both nodes; the device and its model go with it.
	src.devices.Modify(dev("t1", "uid-t1", "b", "thermo", 2))
	rec.waitFor(t, "a", "b")
	checkDesired(t, d, "a", "DeviceModel/thermo@1", "Device/t2@2", "Device/x1@1")
	checkDesired(t, d, "b", "DeviceModel/thermo@1", "DeviceModel/valve@3", "Device/t1@2", "Device/v1@1")

	// A status write (same generation) notifies nobody: the next change's
	// notification is the only one.
	st := dev("v1", "uid-v1", "b", "valve", 1)
	st.Status.State = api.StateOnline
	src.devices.Modify(st)
	src.devices.Modify(dev("x1", "uid-x1", "a", "missing", 2))
	if got := rec.waitFor(t, "a"); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("notified %v, want only a (status-only update of v1 on b)", got)
	}

	// A change of a model's metadata only (same generation) notifies
	// nobody: the next model change's notification is the only one.
	labelled := model("thermo", 1)
	labelled.Labels = map[string]string{"site": "s1"}
	src.models.Modify(labelled)
	src.models.Modify(model("valve", 4))
	if got := rec.waitFor(t, "b"); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("notified %v, want only b (metadata-only update of thermo, used on a and b)", got)
	}
	// A model change notifies every node with a device of it.
	src.models.Modify(model("thermo", 2))
	if got := rec.waitFor(t, "a", "b"); len(got) != 2 {
		t.Fatalf("notified %v, want a and b once", got)
	}
	checkDesired(t, d, "b", "DeviceModel/thermo@2", "DeviceModel/valve@4", "Device/t1@2", "Device/v1@1")

	// The missing model appears: its devices' node hears of it.
	src.models.Add(model("missing", 1))
	rec.waitFor(t, "a")
	checkDesired(t, d, "a", "DeviceModel/missing@1", "DeviceModel/thermo@2", "Device/t2@2", "Device/x1@2")

	// Deletions.
	src.devices.Delete(dev("t2", "uid-t2", "a", "thermo", 2))
	rec.waitFor(t, "a")
	checkDesired(t, d, "a", "DeviceModel/missing@1", "Device/x1@2")
	src.models.Delete(model("valve", 4))
	rec.waitFor(t, "b")
	checkDesired(t, d, "b", "DeviceModel/thermo@2", "Device/t1@2", "Device/v1@1")
	if ok, err := d.Encode("", &protocol.Object{Kind: protocol.KindDevice, UID: "uid-t2", Namespace: ns, Name: "t2"}); ok || err != nil {
		t.Fatalf("Encode of a deleted device: %v, %v", ok, err)
	}
}

// Without the CRDs, Start returns ready, the device kinds are not served and
// Device fails; once they are served the informers start and every edge
// node is told.
func TestDevicesServedLater(t *testing.T) {
	src := &fakeSources{devices: fcache.NewFakeControllerSource(), models: fcache.NewFakeControllerSource()}
	src.models.Add(model("thermo", 1))
	src.devices.Add(dev("t1", "uid-t1", "a", "thermo", 1))
	d, rec := startDispatcher(t, src)
	rec.waitFor(t, "a", "b") // the edge Nodes added to the cache
	if !d.Ready() {
		t.Fatal("not ready without the device CRDs")
	}
	if d.Serves(protocol.KindDevice) || d.Serves(protocol.KindDeviceModel) || !d.Serves(protocol.KindPod) {
		t.Fatal("serves devices before their caches synced")
	}
	checkDesired(t, d, "a")
	if _, err := d.Device(ns, "t1"); err != ErrDevicesNotServed {
		t.Fatalf("Device before the CRDs: %v, want ErrDevicesNotServed", err)
	}
	src.served.Store(true)
	got := rec.waitFor(t, "a", "b")
	if slices.Contains(got, "cloud") {
		t.Fatalf("notified %v: the non-edge node too", got)
	}
	if !d.Serves(protocol.KindDevice) || !d.Ready() {
		t.Fatal("devices not served after the CRDs appeared")
	}
	checkDesired(t, d, "a", "DeviceModel/thermo@1", "Device/t1@1")
}

// BenchmarkDesired measures Desired for a node with 30 pods (each using a
// configmap and a secret) and 0 or 10 devices of 2 models: what every
// reconcile of a session costs.
func BenchmarkDesired(b *testing.B) {
	for _, devices := range []int{0, 10} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) {
			var objs []runtime.Object
			for i := range 30 {
				objs = append(objs, &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("p%d", i), UID: types.UID(fmt.Sprintf("p%d", i))},
					Spec: corev1.PodSpec{NodeName: "a", Volumes: []corev1.Volume{
						{VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}}},
						{VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}}}},
				})
			}
			objs = append(objs,
				&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cm", UID: "cm"}},
				&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "s", UID: "s"}})
			src := &fakeSources{devices: fcache.NewFakeControllerSource(), models: fcache.NewFakeControllerSource()}
			src.served.Store(true)
			src.models.Add(model("thermo", 1))
			src.models.Add(model("valve", 1))
			for i := range devices {
				m := "thermo"
				if i%2 == 1 {
					m = "valve"
				}
				src.devices.Add(dev(fmt.Sprintf("d%d", i), fmt.Sprintf("d%d", i), "a", m, 1))
			}
			d, err := newDispatcher(fake.NewClientset(objs...), src.source(), Config{}, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			d.SetNotifier(newRecorder())
			ctx, cancel := context.WithCancel(b.Context())
			defer func() { cancel(); d.Shutdown() }()
			if err := d.Start(ctx); err != nil {
				b.Fatal(err)
			}
			want := 32 + devices
			if devices > 0 {
				want += 2
			}
			for deadline := time.Now().Add(10 * time.Second); len(d.Desired("a", nil)) != want; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					b.Fatalf("Desired(a) has %d objects, want %d", len(d.Desired("a", nil)), want)
				}
			}
			buf := make([]protocol.Object, 0, want)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				buf = d.Desired("a", buf[:0])
			}
		})
	}
}
