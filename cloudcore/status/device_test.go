package status

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/protocol"
)

// fakeDevices plays the API server for Devices (DeviceClient) and an
// informer cache of it (DeviceLister). The cache follows the server at once
// unless lagging is set; then it shows what it held when lagging was set
// until catchUp.
type fakeDevices struct {
	mu      sync.Mutex
	devices map[string]*api.Device // the server's; guarded by mu
	models  map[string]*api.DeviceModel
	cache   map[string]*api.Device // the cache's while lagging; guarded by mu
	lagging bool
	rv      int
	patches [][]byte
	gets    int
	// hook, if set, runs before each patch; an error fails the patch.
	hook func(n int) error
}

func newFakeDevices() *fakeDevices {
	return &fakeDevices{devices: map[string]*api.Device{}, models: map[string]*api.DeviceModel{}}
}

func (f *fakeDevices) add(objs ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, o := range objs {
		f.rv++
		switch o := o.(type) {
		case *api.Device:
			o.ResourceVersion = strconv.Itoa(f.rv)
			f.devices[o.Namespace+"/"+o.Name] = o
		case *api.DeviceModel:
			o.ResourceVersion = strconv.Itoa(f.rv)
			f.models[o.Namespace+"/"+o.Name] = o
		}
	}
}

// lag freezes the cache as it is.
func (f *fakeDevices) lag() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lagging = true
	f.cache = map[string]*api.Device{}
	for k, d := range f.devices {
		f.cache[k] = d.DeepCopy()
	}
}

func (f *fakeDevices) catchUp() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lagging, f.cache = false, nil
}

func (f *fakeDevices) Device(namespace, name string) (*api.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	src := f.devices
	if f.lagging {
		src = f.cache
	}
	if d, ok := src[namespace+"/"+name]; ok {
		return d.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(api.Resource(api.DevicesResource), name)
}

func (f *fakeDevices) DeviceModel(namespace, name string) (*api.DeviceModel, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m, ok := f.models[namespace+"/"+name]; ok {
		return m.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(api.Resource(api.DeviceModelsResource), name)
}

// touch is a write of someone else to the Device's spec: a new
// resourceVersion, the same status.
func (f *fakeDevices) touch(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	d := f.devices[devNS+"/"+name].DeepCopy()
	d.ResourceVersion = strconv.Itoa(f.rv)
	f.devices[devNS+"/"+name] = d
}

func (f *fakeDevices) GetDevice(_ context.Context, namespace, name string) (*api.Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets++
	if d, ok := f.devices[namespace+"/"+name]; ok {
		return d.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(api.Resource(api.DevicesResource), name)
}

func (f *fakeDevices) numGets() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gets
}

// PatchDeviceStatus applies the Writer's patches, which replace the whole
// status and carry a resourceVersion precondition.
func (f *fakeDevices) PatchDeviceStatus(_ context.Context, namespace, name string, patch []byte) (*api.Device, error) {
	f.mu.Lock()
	n := len(f.patches) + 1
	f.patches = append(f.patches, patch)
	hook := f.hook
	f.mu.Unlock()
	if hook != nil {
		if err := hook(n); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.devices[namespace+"/"+name]
	if !ok {
		return nil, apierrors.NewNotFound(api.Resource(api.DevicesResource), name)
	}
	var p struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
		Status api.DeviceStatus `json:"status"`
	}
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if p.Metadata.ResourceVersion != d.ResourceVersion {
		return nil, apierrors.NewConflict(api.Resource(api.DevicesResource), name,
			errors.New("the object has been modified; please apply your changes to the latest version and try again"))
	}
	f.rv++
	d = d.DeepCopy()
	d.Status, d.ResourceVersion = p.Status, strconv.Itoa(f.rv)
	f.devices[namespace+"/"+name] = d
	return d.DeepCopy(), nil
}

func (f *fakeDevices) numPatches() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.patches)
}

func (f *fakeDevices) lastPatch() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return string(f.patches[len(f.patches)-1])
}

func (f *fakeDevices) server(name string) *api.Device {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.devices[devNS+"/"+name].DeepCopy()
}

const devNS = "plant"

func device(name, uid, node string) *api.Device {
	return &api.Device{
		ObjectMeta: metav1.ObjectMeta{Namespace: devNS, Name: name, UID: types.UID(uid), Generation: 1},
		Spec:       api.DeviceSpec{DeviceModelRef: &api.DeviceModelRef{Name: "thermometer"}, NodeName: node},
	}
}

func thermometer() *api.DeviceModel {
	return &api.DeviceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: devNS, Name: "thermometer", UID: "model-uid"},
		Spec: api.DeviceModelSpec{Protocol: "modbus", Properties: []api.ModelProperty{
			{Name: "temperature", Type: api.TypeInt, AccessMode: api.ReadWrite},
		}},
	}
}

func newDeviceWriter(t *testing.T, cfg Config, objs ...any) (*Writer, *fakeDevices) {
	t.Helper()
	w, _ := newWriter(t, cfg)
	devs := w.devices.(*fakeDevices)
	devs.add(objs...)
	return w, devs
}

func send(t *testing.T, w *Writer, node string, m *protocol.DeviceStatus) error {
	t.Helper()
	r := newResult(t)
	w.DeviceStatus(node, protocol.StatusOrder{}, m, r.done)
	return r.wait()
}

func TestDeviceStatus(t *testing.T) {
	w, devs := newDeviceWriter(t, Config{}, thermometer(), device("t1", "uid-1", edge1))
	start(t, w)
	desired := "25"
	const ts = 1718000000000
	msg := &protocol.DeviceStatus{UID: "uid-1", Namespace: devNS, Name: "t1", State: api.StateOnline, LastOnline: ts + 500,
		Twins: []protocol.DeviceTwin{
			{Name: "humidity", Value: "40", Timestamp: ts},
			{Name: "temperature", Value: "24", Timestamp: ts + 1, ObservedDesired: &desired},
		}}
	// The cache does not show the writer's writes until catchUp.
	devs.lag()
	if err := send(t, w, edge1, msg); err != nil {
		t.Fatal(err)
	}
	got := devs.server("t1").Status
	want := api.DeviceStatus{State: api.StateOnline, LastOnlineTime: "2024-06-10T06:13:20Z", Twins: []api.Twin{
		{PropertyName: "humidity", Reported: api.TwinProperty{Value: "40", Metadata: map[string]string{"timestamp": "1718000000000"}}},
		{PropertyName: "temperature",
			Reported:        api.TwinProperty{Value: "24", Metadata: map[string]string{"timestamp": "1718000000001", "type": "int"}},
			ObservedDesired: api.TwinProperty{Value: "25"}},
	}}
	if g, _ := json.Marshal(got); string(g) != string(must(json.Marshal(want))) {
		t.Fatalf("status\n%s\nwant\n%s", g, must(json.Marshal(want)))
	}
	if p := devs.lastPatch(); !strings.Contains(p, `"resourceVersion":"2"`) {
		t.Fatalf("patch %s has no resourceVersion precondition", p)
	}

	// The same report again: no write, although the cache still shows the
	// status from before the first write.
	if err := send(t, w, edge1, msg); err != nil {
		t.Fatal(err)
	}
	if n := devs.numPatches(); n != 1 {
		t.Fatalf("%d patches after an identical report, want 1", n)
	}
	// A report equal to what the stale cache shows is still written: the
	// API server holds something else.
	empty := &protocol.DeviceStatus{UID: "uid-1", Namespace: devNS, Name: "t1"}
	if err := send(t, w, edge1, empty); err != nil {
		t.Fatal(err)
	}
	if n, st := devs.numPatches(), devs.server("t1").Status; n != 2 || st.State != "" || st.Twins != nil || st.LastOnlineTime != "" {
		t.Fatalf("%d patches, status %+v: want 2 and an empty status", n, st)
	}
	if p := devs.lastPatch(); !strings.Contains(p, `"state":null`) || !strings.Contains(p, `"twins":null`) {
		t.Fatalf("patch %s does not clear state and twins", p)
	}
	// Once the cache caught up, it is the reference again.
	devs.catchUp()
	if err := send(t, w, edge1, empty); err != nil {
		t.Fatal(err)
	}
	if n := devs.numPatches(); n != 2 {
		t.Fatalf("%d patches, want 2", n)
	}
	if s := w.Stats(); s.DeviceStatuses != 2 || s.DeviceUnchanged != 2 || s.Unchanged != 2 || s.Rejected != 0 {
		t.Fatalf("stats %+v", s)
	}
	if n := devs.numGets(); n != 0 {
		t.Fatalf("%d live reads, want none", n)
	}
	w.forgetDeviceWrites()
	if n := len(w.devWrites); n != 0 {
		t.Fatalf("%d device writes remembered after the cache caught up", n)
	}
}

func TestDeviceStatusRejected(t *testing.T) {
	w, devs := newDeviceWriter(t, Config{}, thermometer(), device("t1", "uid-1", edge1), device("other", "uid-2", "edge-2"))
	start(t, w)
	long := strings.Repeat("x", api.MaxValueLength+1)
	for _, c := range []struct {
		name string
		m    *protocol.DeviceStatus
		want string
	}{
		{"another node's device", &protocol.DeviceStatus{UID: "uid-2", Namespace: devNS, Name: "other", State: "online"}, `attached to node "edge-2"`},
		{"replaced device", &protocol.DeviceStatus{UID: "uid-old", Namespace: devNS, Name: "t1", State: "online"}, "has uid uid-1"},
		{"gone", &protocol.DeviceStatus{UID: "uid-3", Namespace: devNS, Name: "gone", State: "online"}, "is gone"},
		{"bad twin name", &protocol.DeviceStatus{UID: "uid-1", Namespace: devNS, Name: "t1",
			Twins: []protocol.DeviceTwin{{Name: "temp erature", Value: "1"}}}, "twins[0]"},
		{"value too long", &protocol.DeviceStatus{UID: "uid-1", Namespace: devNS, Name: "t1",
			Twins: []protocol.DeviceTwin{{Name: "temperature", Value: long}}}, "twins[0] (temperature): value is 512 bytes"},
		{"observed desired too long", &protocol.DeviceStatus{UID: "uid-1", Namespace: devNS, Name: "t1",
			Twins: []protocol.DeviceTwin{{Name: "temperature", Value: "1", ObservedDesired: &long}}}, "observed desired value"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := send(t, w, edge1, c.m)
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a rejection saying %q", err, c.want)
			}
		})
	}
	if n := devs.numPatches(); n != 0 {
		t.Fatalf("%d patches, want none", n)
	}
	if s := w.Stats(); s.Rejected != 6 {
		t.Fatalf("stats %+v", s)
	}
}

// Reports of one device arriving while an older one is written are written
// after it, newest last; those between are coalesced.
func TestDeviceStatusNewestWins(t *testing.T) {
	w, devs := newDeviceWriter(t, Config{}, thermometer(), device("t1", "uid-1", edge1))
	entered, release := make(chan struct{}), make(chan struct{})
	devs.hook = func(n int) error {
		if n == 1 {
			close(entered)
			<-release
		}
		return nil
	}
	start(t, w)
	report := func(v string) *protocol.DeviceStatus {
		return &protocol.DeviceStatus{UID: "uid-1", Namespace: devNS, Name: "t1",
			Twins: []protocol.DeviceTwin{{Name: "temperature", Value: v}}}
	}
	rs := []*result{newResult(t), newResult(t), newResult(t)}
	w.DeviceStatus(edge1, protocol.StatusOrder{}, report("1"), rs[0].done)
	<-entered
	w.DeviceStatus(edge1, protocol.StatusOrder{}, report("2"), rs[1].done)
	w.DeviceStatus(edge1, protocol.StatusOrder{}, report("3"), rs[2].done)
	close(release)
	for _, r := range rs {
		if err := r.wait(); err != nil {
			t.Fatal(err)
		}
	}
	if n, v := devs.numPatches(), devs.server("t1").Status.Twins[0].Reported.Value; n != 2 || v != "3" {
		t.Fatalf("%d patches, temperature %s: want 2 patches and 3", n, v)
	}
	if s := w.Stats(); s.Coalesced != 1 || s.DeviceStatuses != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// A retryable failure is retried after a back-off; a newer report that
// arrives meanwhile is what the retry writes.
func TestDeviceStatusRetry(t *testing.T) {
	w, devs := newDeviceWriter(t, Config{RetryBaseDelay: 50 * time.Millisecond, RetryMaxDelay: 100 * time.Millisecond},
		thermometer(), device("t1", "uid-1", edge1))
	failed := make(chan struct{})
	devs.hook = func(n int) error {
		if n == 1 {
			defer close(failed)
			return apierrors.NewServiceUnavailable("etcd is slow")
		}
		return nil
	}
	start(t, w)
	r1, r2 := newResult(t), newResult(t)
	w.DeviceStatus(edge1, protocol.StatusOrder{}, &protocol.DeviceStatus{UID: "uid-1", Namespace: devNS, Name: "t1", State: "offline"}, r1.done)
	<-failed
	w.DeviceStatus(edge1, protocol.StatusOrder{}, &protocol.DeviceStatus{UID: "uid-1", Namespace: devNS, Name: "t1", State: "online"}, r2.done)
	for _, r := range []*result{r1, r2} {
		if err := r.wait(); err != nil {
			t.Fatal(err)
		}
	}
	if st := devs.server("t1").Status.State; st != "online" {
		t.Fatalf("state %q, want online", st)
	}
	if s := w.Stats(); s.Retries != 1 || s.DeviceStatuses != 1 || s.APIErrors != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// A patch over a version changed meanwhile (here, the spec) conflicts: the
// Writer compares with the live Device and writes at once, over its version.
func TestDeviceStatusConflict(t *testing.T) {
	w, devs := newDeviceWriter(t, Config{}, thermometer(), device("t1", "uid-1", edge1))
	start(t, w)
	devs.lag()
	devs.touch("t1")
	if err := send(t, w, edge1, &protocol.DeviceStatus{UID: "uid-1", Namespace: devNS, Name: "t1", State: "online"}); err != nil {
		t.Fatal(err)
	}
	if st := devs.server("t1").Status.State; st != "online" {
		t.Fatalf("state %q, want online", st)
	}
	if n, g, s := devs.numPatches(), devs.numGets(), w.Stats(); n != 2 || g != 1 || s.Retries != 0 || s.DeviceStatuses != 1 {
		t.Fatalf("%d patches, %d gets, stats %+v: want a conflict, a live read and a write, no back-off", n, g, s)
	}
	// Replaced by a Device of the same name on another node meanwhile:
	// rejected after the live read.
	devs.mu.Lock()
	devs.devices[devNS+"/t1"] = device("t1", "uid-new", "edge-2")
	devs.rv++
	devs.devices[devNS+"/t1"].ResourceVersion = strconv.Itoa(devs.rv)
	devs.mu.Unlock()
	err := send(t, w, edge1, &protocol.DeviceStatus{UID: "uid-1", Namespace: devNS, Name: "t1", State: "offline"})
	if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), `attached to node "edge-2"`) {
		t.Fatalf("report for a replaced device: %v, want a rejection", err)
	}
}

// When the cache shows a version after the Writer's last write (someone
// else wrote since), it cannot tell which is newer: a report equal to the
// cached status is checked against the live Device before it is skipped.
func TestDeviceStatusUnsure(t *testing.T) {
	w, devs := newDeviceWriter(t, Config{}, thermometer(), device("t1", "uid-1", edge1))
	start(t, w)
	devs.lag()
	online := &protocol.DeviceStatus{UID: "uid-1", Namespace: devNS, Name: "t1", State: "online"}
	if err := send(t, w, edge1, online); err != nil {
		t.Fatal(err)
	}
	devs.touch("t1")
	devs.catchUp() // shows the version after the write
	if err := send(t, w, edge1, online); err != nil {
		t.Fatal(err)
	}
	if n, g := devs.numPatches(), devs.numGets(); n != 1 || g != 1 {
		t.Fatalf("%d patches, %d gets: want the first write only, and one live read", n, g)
	}
	// Now the cache is the reference: no more reads.
	if err := send(t, w, edge1, online); err != nil {
		t.Fatal(err)
	}
	if n, g, s := devs.numPatches(), devs.numGets(), w.Stats(); n != 1 || g != 1 || s.DeviceUnchanged != 2 {
		t.Fatalf("%d patches, %d gets, stats %+v", n, g, s)
	}
}
