//go:build integration

package cloudcore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/tether-edge/tether/cloudcore/dispatch"
	"github.com/tether-edge/tether/cloudcore/status"
	"github.com/tether-edge/tether/controlplane"
	"github.com/tether-edge/tether/devices/api"
	manifests "github.com/tether-edge/tether/manifests/cloudcore"
	"github.com/tether-edge/tether/manifests/crds"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

const (
	// cloudcoreUser is the ServiceAccount of manifests/cloudcore.
	cloudcoreUser = manifests.ServiceAccount
	devNS         = "plant"
)

// TestDevices runs cloudcore against a real API server, as the
// ServiceAccount of manifests/cloudcore/rbac.yaml: a cloudcore told to skip
// the CRDs runs without them; another installs them; both then dispatch a
// Device and its model to the Device's node, follow it to another node,
// and write the status its node reports, once.
func TestDevices(t *testing.T) {
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	admin := cp.RESTConfig()
	client, err := kubernetes.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	applyRBAC(t, client)

	// Without rights on CRDs, the installer says what is missing.
	nobody := rest.CopyConfig(admin)
	nobody.Impersonate = rest.ImpersonationConfig{UserName: "nobody"}
	err = installCRDs(ctx, apiextensions.NewForConfigOrDie(nobody), log)
	if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "skipCRDInstall") ||
		!strings.Contains(err.Error(), "customresourcedefinitions") {
		t.Fatalf("install without rights: %v, want forbidden, naming the resource and skipCRDInstall", err)
	}

	kubeconfig := writeKubeconfig(t, cp, cloudcoreUser)
	// A cloudcore that leaves the CRDs to the operator runs without them.
	skipper := runCloudcore(t, Config{Kubeconfig: kubeconfig, SkipCRDInstall: true,
		DeviceCRDPoll: metav1.Duration{Duration: 200 * time.Millisecond}, Logger: log.With("cloudcore", "skipper")})
	if skipper.Dispatcher.Serves(protocol.KindDevice) {
		t.Fatal("serves devices without the CRDs")
	}
	// One that installs them.
	began := time.Now()
	cc := runCloudcore(t, Config{Kubeconfig: kubeconfig, Logger: log.With("cloudcore", "installer")})
	t.Logf("cloudcore installed the CRDs and synced its caches in %s", time.Since(began).Round(time.Millisecond))
	ext := apiextensions.NewForConfigOrDie(admin)
	all, err := crds.CRDs()
	if err != nil {
		t.Fatal(err)
	}
	rvs := map[string]string{}
	for _, want := range all {
		got, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, want.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("CRD %s after cloudcore started: %v", want.Name, err)
		}
		rvs[got.Name] = got.ResourceVersion
	}
	if !cc.Dispatcher.Serves(protocol.KindDevice) || !cc.Dispatcher.Serves(protocol.KindDeviceModel) {
		t.Fatal("the installing cloudcore does not serve devices")
	}
	poll(t, "the skipping cloudcore to find the CRDs", func() bool { return skipper.Dispatcher.Serves(protocol.KindDevice) })
	t.Logf("the cloudcore without CRDs served devices %s after the other one started (poll 200ms)", time.Since(began).Round(time.Millisecond))
	// Installing again writes nothing.
	if err := installCRDs(ctx, ext, log); err != nil {
		t.Fatal(err)
	}
	for name, rv := range rvs {
		got, _ := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
		if got.ResourceVersion != rv {
			t.Errorf("CRD %s rewritten by a second install: resourceVersion %s -> %s", name, rv, got.ResourceVersion)
		}
	}

	// The nodes join (the Node is created, as cloudcore's ServiceAccount)
	// and edge-a reports its status.
	for _, n := range []string{"edge-a", "edge-b"} {
		key, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cc.Enroll.Direct(ctx, n, &key.PublicKey); err != nil {
			t.Fatalf("enroll %s: %v", n, err)
		}
	}
	sendOK(t, func(done func(error)) { cc.Status.NodeStatus("edge-a", protocol.StatusOrder{}, nodeStatusMsg(t), done) })
	cc.Status.Heartbeat("edge-a")
	poll(t, "the node lease", func() bool { return cc.Status.Stats().LeaseCreates == 1 })

	// A model and a device of node edge-a.
	dc, err := dispatch.NewDevicesClient(admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: devNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var model api.DeviceModel
	if err := dc.Post().Namespace(devNS).Resource(api.DeviceModelsResource).Body(&api.DeviceModel{
		TypeMeta:   metav1.TypeMeta{APIVersion: api.SchemeGroupVersion.String(), Kind: api.DeviceModelKind},
		ObjectMeta: metav1.ObjectMeta{Name: "thermometer"},
		Spec: api.DeviceModelSpec{Protocol: "modbus", Properties: []api.ModelProperty{
			{Name: "temperature", Type: api.TypeInt}, {Name: "firmware", Type: api.TypeString, AccessMode: api.ReadOnly}}},
	}).Do(ctx).Into(&model); err != nil {
		t.Fatalf("create model: %v", err)
	}
	var dev api.Device
	if err := dc.Post().Namespace(devNS).Resource(api.DevicesResource).Body(&api.Device{
		TypeMeta:   metav1.TypeMeta{APIVersion: api.SchemeGroupVersion.String(), Kind: api.DeviceKind},
		ObjectMeta: metav1.ObjectMeta{Name: "t1"},
		Spec: api.DeviceSpec{DeviceModelRef: &api.DeviceModelRef{Name: "thermometer"}, NodeName: "edge-a",
			Properties: []api.DeviceProperty{{Name: "temperature", Desired: api.TwinProperty{Value: "25"}, ReportToCloud: true}}},
	}).Do(ctx).Into(&dev); err != nil {
		t.Fatalf("create device: %v", err)
	}
	for _, c := range []*CloudCore{cc, skipper} {
		poll(t, "the device in Desired(edge-a)", func() bool {
			return slices.Equal(desired(c, "edge-a"), []string{"DeviceModel/thermometer@1", "Device/t1@1"})
		})
	}
	o := protocol.Object{Kind: protocol.KindDevice, UID: string(dev.UID), Namespace: devNS, Name: "t1"}
	if ok, err := cc.Dispatcher.Encode("", &o); !ok || err != nil ||
		!bytes.Contains(o.Data, []byte(`"apiVersion":"devices.tether.io/v1beta1"`)) || !bytes.Contains(o.Data, []byte(`"kind":"Device"`)) {
		t.Fatalf("Encode device: %v %v %s", ok, err, o.Data)
	}

	// Moved to edge-b.
	dev.Spec.NodeName = "edge-b"
	began = time.Now()
	if err := dc.Put().Namespace(devNS).Resource(api.DevicesResource).Name("t1").Body(&dev).Do(ctx).Into(&dev); err != nil {
		t.Fatalf("move device: %v", err)
	}
	poll(t, "the device to move to edge-b", func() bool {
		return len(desired(cc, "edge-a")) == 0 &&
			slices.Equal(desired(cc, "edge-b"), []string{"DeviceModel/thermometer@1", "Device/t1@2"})
	})
	t.Logf("move: update to Desired(edge-b) in %s", time.Since(began).Round(time.Millisecond))

	// Its node reports its status; the old node may not.
	observed := "25"
	report := &protocol.DeviceStatus{UID: string(dev.UID), Namespace: devNS, Name: "t1", State: api.StateOnline,
		LastOnline: 1718000000000, Twins: []protocol.DeviceTwin{
			{Name: "firmware", Value: "1.2.0", Timestamp: 1717999990000},
			{Name: "temperature", Value: "24", Timestamp: 1718000000000, ObservedDesired: &observed}}}
	if err := send(t, func(done func(error)) { cc.Status.DeviceStatus("edge-a", protocol.StatusOrder{}, report, done) }); !errors.Is(err, status.ErrRejected) ||
		!strings.Contains(err.Error(), `attached to node "edge-b"`) {
		t.Fatalf("report from the old node: %v, want a rejection", err)
	}
	began = time.Now()
	sendOK(t, func(done func(error)) { cc.Status.DeviceStatus("edge-b", protocol.StatusOrder{}, report, done) })
	t.Logf("device status written in %s", time.Since(began).Round(time.Microsecond))
	var got api.Device
	if err := dc.Get().Namespace(devNS).Resource(api.DevicesResource).Name("t1").Do(ctx).Into(&got); err != nil {
		t.Fatal(err)
	}
	st := got.Status
	if st.State != api.StateOnline || st.LastOnlineTime != "2024-06-10T06:13:20Z" || len(st.Twins) != 2 ||
		st.Twins[1].PropertyName != "temperature" || st.Twins[1].Reported.Value != "24" ||
		st.Twins[1].Reported.Metadata["timestamp"] != "1718000000000" || st.Twins[1].Reported.Metadata["type"] != "int" ||
		st.Twins[1].ObservedDesired.Value != "25" || st.Twins[0].Reported.Metadata["type"] != "string" {
		t.Fatalf("status %+v", st)
	}
	// The same report again: no write, at once (the cache may not show the
	// first write yet) and once the cache caught up.
	sendOK(t, func(done func(error)) { cc.Status.DeviceStatus("edge-b", protocol.StatusOrder{}, report, done) })
	poll(t, "the cache to show the status", func() bool {
		c, err := cc.Dispatcher.Device(devNS, "t1")
		return err == nil && c.ResourceVersion == got.ResourceVersion
	})
	sendOK(t, func(done func(error)) { cc.Status.DeviceStatus("edge-b", protocol.StatusOrder{}, report, done) })
	var again api.Device
	if err := dc.Get().Namespace(devNS).Resource(api.DevicesResource).Name("t1").Do(ctx).Into(&again); err != nil {
		t.Fatal(err)
	}
	if again.ResourceVersion != got.ResourceVersion {
		t.Errorf("resourceVersion %s -> %s after identical reports", got.ResourceVersion, again.ResourceVersion)
	}
	if s := cc.Status.Stats(); s.DeviceStatuses != 1 || s.DeviceUnchanged != 2 || s.Rejected != 1 || s.GivenUp != 0 {
		t.Errorf("stats %+v: want 1 device status write, 2 unchanged, 1 rejected", s)
	}
	// The status write did not change the device's version: nothing goes
	// back down to the node.
	if d := desired(cc, "edge-b"); !slices.Equal(d, []string{"DeviceModel/thermometer@1", "Device/t1@2"}) {
		t.Errorf("Desired(edge-b) after the status write = %v", d)
	}

	// Fenced reports (protocol 8): the API server keeps the order in the
	// status (the CRD has the field), and an older report is dropped.
	fenced := *report
	fenced.Twins = []protocol.DeviceTwin{{Name: "temperature", Value: "26", Timestamp: 1718000001000}}
	sendOK(t, func(done func(error)) {
		cc.Status.DeviceStatus("edge-b", protocol.StatusOrder{Epoch: 3, Seq: 10}, &fenced, done)
	})
	late := fenced
	late.Twins = []protocol.DeviceTwin{{Name: "temperature", Value: "23", Timestamp: 1717999999000}}
	sendOK(t, func(done func(error)) {
		cc.Status.DeviceStatus("edge-b", protocol.StatusOrder{Epoch: 3, Seq: 9}, &late, done)
	})
	var fencedDev api.Device
	if err := dc.Get().Namespace(devNS).Resource(api.DevicesResource).Name("t1").Do(ctx).Into(&fencedDev); err != nil {
		t.Fatal(err)
	}
	if st := fencedDev.Status; st.ReportOrder != "3:10" || len(st.Twins) != 1 || st.Twins[0].Reported.Value != "26" {
		t.Fatalf("status %+v: want the report of order 3:10, recorded", st)
	}
	if s := cc.Status.Stats(); s.Stale != 1 {
		t.Errorf("stats %+v: want the late report dropped as stale", s)
	}

	// The precondition: the API server refuses a status patch over another
	// version (the first one of the Device).
	_, err = status.RESTDeviceClient(dc).PatchDeviceStatus(ctx, devNS, "t1",
		[]byte(`{"metadata":{"resourceVersion":"`+dev.ResourceVersion+`"},"status":{"state":"offline"}}`))
	if !apierrors.IsConflict(err) {
		t.Errorf("status patch over resourceVersion %s: %v, want Conflict", dev.ResourceVersion, err)
	}
	// A UID in the patch is no precondition for a custom resource's status:
	// the API server keeps the stored metadata. (Why the Writer uses the
	// resourceVersion.)
	if _, err := status.RESTDeviceClient(dc).PatchDeviceStatus(ctx, devNS, "t1",
		[]byte(`{"metadata":{"uid":"not-the-uid"},"status":{}}`)); err != nil {
		t.Errorf("status patch naming another uid: %v; if the API server refuses it now, the uid could be a precondition too", err)
	}

	// Deleted: gone from its node.
	if err := dc.Delete().Namespace(devNS).Resource(api.DevicesResource).Name("t1").Do(ctx).Error(); err != nil {
		t.Fatal(err)
	}
	poll(t, "the device to leave edge-b", func() bool { return len(desired(cc, "edge-b")) == 0 })
}

func desired(cc *CloudCore, node string) []string {
	var out []string
	for _, o := range cc.Dispatcher.Desired(node, nil) {
		out = append(out, o.Kind.String()+"/"+o.Name+"@"+o.ResourceVersion)
	}
	return out
}

// runCloudcore runs cloudcore until the test ends and returns once its
// caches are synced.
func runCloudcore(t *testing.T, cfg Config) *CloudCore {
	t.Helper()
	cc, _ := runStoppable(t, cfg)
	return cc
}

// runStoppable is runCloudcore that also returns a stop function (called
// at the end of the test if not before), which returns once cloudcore has
// stopped.
func runStoppable(t *testing.T, cfg Config) (*CloudCore, func()) {
	t.Helper()
	if cfg.Listener == nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Listener = ln
	}
	hln, err := net.Listen("tcp", "127.0.0.1:0") // a free port: tests run side by side
	if err != nil {
		t.Fatal(err)
	}
	cfg.HealthAddr = hln.Addr().String()
	hln.Close()
	cc, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cc.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("cloudcore: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	for deadline := time.Now().Add(time.Minute); !cc.Dispatcher.Ready(); time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("cloudcore stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("cloudcore not ready within a minute")
		}
	}
	// The health listener, not the tunnel, says so.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + cfg.HealthAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not ok within a minute: %v %v", resp, err)
		}
	}
	return cc, stop
}

// applyRBAC applies manifests/cloudcore: rbac.yaml and policy.yaml.
func applyRBAC(t *testing.T, client kubernetes.Interface) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := manifests.Apply(ctx, client); err != nil {
		t.Fatal(err)
	}
}

// writeKubeconfig writes a kubeconfig of the admin that acts as user.
func writeKubeconfig(t *testing.T, cp *controlplane.ControlPlane, user string) string {
	t.Helper()
	rc := cp.RESTConfig()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["cp"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	cfg.AuthInfos["as"] = &clientcmdapi.AuthInfo{Token: rc.BearerToken, Impersonate: user}
	cfg.Contexts["cp"] = &clientcmdapi.Context{Cluster: "cp", AuthInfo: "as"}
	cfg.CurrentContext = "cp"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func nodeStatusMsg(t *testing.T) *protocol.NodeStatus {
	t.Helper()
	res := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourcePods: resource.MustParse("110")}
	b, err := protocol.EncodeNodeStatus(&corev1.NodeStatus{Capacity: res, Allocatable: res,
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady"}}})
	if err != nil {
		t.Fatal(err)
	}
	return &protocol.NodeStatus{Status: b}
}

// send hands a message over and waits for its done.
func send(t *testing.T, write func(done func(error))) error {
	t.Helper()
	ch := make(chan error, 1)
	write(func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-time.After(time.Minute):
		t.Fatal("done not called within a minute")
		return nil
	}
}

func sendOK(t *testing.T, write func(done func(error))) {
	t.Helper()
	if err := send(t, write); err != nil {
		t.Fatal(err)
	}
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within a minute", what)
		}
	}
}

// startControlPlane starts a control plane for the test (stopped at its
// end) and returns it with an admin client.
func startControlPlane(t *testing.T, log *slog.Logger) (*controlplane.ControlPlane, *kubernetes.Clientset) {
	t.Helper()
	cp, err := controlplane.Start(t.Context(), controlplane.Options{Dir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	client, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	return cp, client
}
