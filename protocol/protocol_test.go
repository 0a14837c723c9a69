package protocol

import (
	"encoding/json"
	"errors"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// typicalPod is a pod as a Deployment makes it after admission: two
// containers, env, a configMap volume, the projected service-account volume,
// resources, probes and a full status.
func typicalPod() *corev1.Pod {
	now := metav1.Unix(1763776000, 0)
	t := true
	ctr := func(name, image string) corev1.Container {
		return corev1.Container{
			Name: name, Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
			Command: []string{"/bin/sh", "-c"}, Args: []string{"exec /app/server --port=8080"},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
			Env: []corev1.EnvVar{
				{Name: "STORE_ID", Value: "store-0421"},
				{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
			},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
			},
			VolumeMounts: []corev1.VolumeMount{
				{Name: "config", MountPath: "/etc/app"},
				{Name: "kube-api-access-x7k2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
			},
			LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080), Scheme: corev1.URISchemeHTTP}},
				InitialDelaySeconds: 5, TimeoutSeconds: 1, PeriodSeconds: 10, SuccessThreshold: 1, FailureThreshold: 3},
			TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: corev1.TerminationMessageReadFile,
		}
	}
	exp := int64(3607)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "pos-terminal-7c9f8d6b5-x2kqz", GenerateName: "pos-terminal-7c9f8d6b5-", Namespace: "retail",
			UID: "5f0c2a1e-8d3b-4c6a-9e7f-1b2c3d4e5f60", ResourceVersion: "1048576", CreationTimestamp: now,
			Labels: map[string]string{"app": "pos-terminal", "pod-template-hash": "7c9f8d6b5"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "pos-terminal-7c9f8d6b5",
				UID: "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9", Controller: &t, BlockOwnerDeletion: &t}},
		},
		Spec: corev1.PodSpec{
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "pos-config"}}}},
				{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &exp}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				}}}},
			},
			Containers:    []corev1.Container{ctr("server", "registry.local/pos/server:1.4.2"), ctr("sidecar", "registry.local/pos/sync:0.9.0")},
			RestartPolicy: corev1.RestartPolicyAlways, DNSPolicy: corev1.DNSClusterFirst,
			ServiceAccountName: "default", NodeName: "store-0421-pi", SchedulerName: "default-scheduler",
			NodeSelector: map[string]string{"node-role.kubernetes.io/edge": ""},
			Tolerations: []corev1.Toleration{
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
			},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, HostIP: "192.168.7.21", PodIP: "10.88.0.14", StartTime: &now,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			},
			ContainerStatuses: []corev1.ContainerStatus{
				{Name: "server", Ready: true, Image: "registry.local/pos/server:1.4.2", ImageID: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
					ContainerID: "containerd://4e07408562bedb8b60ce05c1decfe3ad16b72230967de01f640b7e4729b49fce", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}},
			},
			QOSClass: corev1.PodQOSBurstable,
		},
	}
}

func podFrame(t testing.TB) *Frame {
	p := typicalPod()
	data, err := EncodePod(p)
	if err != nil {
		t.Fatal(err)
	}
	return &Frame{Seq: 7, Upsert: &Upsert{Object: Object{Kind: KindPod, UID: string(p.UID), Namespace: p.Namespace,
		Name: p.Name, ResourceVersion: p.ResourceVersion, Data: data}}}
}

func TestRoundTrip(t *testing.T) {
	frames := []*Frame{
		{Hello: &Hello{ProtocolVersion: Version, MinVersion: MinVersion, NodeName: "edge-1",
			Inventory: []ObjectRef{{Kind: KindPod, UID: "u1", ResourceVersion: "5"}}}},
		{Welcome: &Welcome{ProtocolVersion: 1, HeartbeatInterval: 10000, SessionTimeout: 30000, MaxFrameSize: MaxFrameSize}},
		podFrame(t),
		{Seq: 2, Delete: &Delete{Kind: KindSecret, UID: "u2", Namespace: "ns", Name: "s"}},
		{Ack: &Ack{Seqs: []uint64{1, 2}, Rejected: []Rejection{{Seq: 3, Reason: "bad"}}}},
		{Heartbeat: &Heartbeat{Time: 1}},
		{ResyncDone: &ResyncDone{Upserts: 1}},
		{Seq: 9, NodeStatus: &NodeStatus{Labels: map[string]string{"a": "b"}, Status: []byte{1}}},
		{Seq: 10, PodStatus: &PodStatus{UID: "u", Namespace: "n", Name: "p", Status: []byte{1}}},
		{Seq: 11, PodTerminated: &PodTerminated{UID: "u", Namespace: "n", Name: "p"}},
		{Seq: 12, Event: &Event{InvolvedKind: "Pod", Namespace: "n", Name: "p", Type: "Warning", Reason: "Failed",
			FieldPath: "spec.containers{c}"}},
		{Error: &Error{Code: ErrorVersion, Message: "no"}},
		{Seq: 13, MirrorPod: &MirrorPod{Namespace: "n", Name: "p-edge", Pod: []byte{1}}},
		{Seq: 14, MirrorPod: &MirrorPod{Namespace: "n", Name: "p-edge", Delete: true}},
		{Seq: 15, DeviceStatus: &DeviceStatus{UID: "d", Namespace: "n", Name: "thermo", State: "online", LastOnline: 5,
			Twins: []DeviceTwin{{Name: "humidity", Value: "40", Timestamp: 3}, {Name: "temp", Value: "21.5", ObservedDesired: new("22")}}}},
		{Seq: 16, Upsert: &Upsert{Object: Object{Kind: KindDevice, UID: "d", Namespace: "n", Name: "thermo", ResourceVersion: "7", Data: []byte("{}")}}},
	}
	for _, f := range frames {
		b, err := Encode(f)
		if err != nil {
			t.Fatalf("encode %s: %v", f.Type(), err)
		}
		g, err := Decode(b)
		if err != nil {
			t.Fatalf("decode %s: %v", f.Type(), err)
		}
		if g.Type() != f.Type() || g.Seq != f.Seq {
			t.Fatalf("round trip of %s gave %s seq %d", f.Type(), g.Type(), g.Seq)
		}
	}
	got, _ := Decode(must(Encode(podFrame(t))))
	p, err := DecodePod(got.Upsert.Object.Data)
	if err != nil {
		t.Fatal(err)
	}
	if p.Spec.Containers[1].Image != "registry.local/pos/sync:0.9.0" || p.Status.PodIP != "10.88.0.14" {
		t.Fatalf("pod did not survive the round trip: %+v", p.Spec.Containers[1])
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestDecodeRefuses(t *testing.T) {
	// A frame from a newer peer that holds only a message type we do not know.
	unknown, err := cbor.Marshal(map[int]any{0: 5, 99: map[int]any{1: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	two, _ := cbor.Marshal(map[int]any{6: map[int]any{}, 7: map[int]any{}})
	noSeq, _ := cbor.Marshal(map[int]any{4: map[int]any{1: 1, 2: "u"}})
	badKind, _ := cbor.Marshal(map[int]any{0: 1, 4: map[int]any{1: 42, 2: "u"}})
	badNode, _ := cbor.Marshal(map[int]any{1: map[int]any{1: 1, 2: 1, 3: "Not_A_Node"}})
	dup := []byte{0xa2, 0x06, 0xa0, 0x06, 0xa0} // {6: {}, 6: {}}
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"garbage", []byte("{\"hello\":1}"), "decode frame"},
		{"empty", nil, "decode frame"},
		{"unknown type", unknown, ErrUnknownMessage.Error()},
		{"two messages", two, "2 messages"},
		{"delete without seq", noSeq, "needs a Seq"},
		{"unknown kind", badKind, "unknown kind 42"},
		{"bad node name", badNode, "node name"},
		{"unsorted twins", must(encMode.Marshal(&Frame{Seq: 1, DeviceStatus: &DeviceStatus{UID: "u", Namespace: "n", Name: "d",
			Twins: []DeviceTwin{{Name: "b"}, {Name: "a"}}}})), "not after"},
		{"twin without name", must(encMode.Marshal(&Frame{Seq: 1, DeviceStatus: &DeviceStatus{UID: "u", Namespace: "n", Name: "d",
			Twins: []DeviceTwin{{Value: "1"}}}})), "name is empty"},
		{"event field path too long", must(encMode.Marshal(&Frame{Seq: 1, Event: &Event{InvolvedKind: "Pod", Namespace: "n",
			Name: "p", Type: "Normal", Reason: "Started", FieldPath: strings.Repeat("x", MaxEventFieldPath+1)}})), "field path"},
		{"event count negative", must(encMode.Marshal(&Frame{Seq: 1, Event: &Event{InvolvedKind: "Pod", Namespace: "n",
			Name: "p", Type: "Normal", Reason: "Started", Count: -1}})), "negative"},
		{"duplicate key", dup, "duplicate"},
		{"too large", make([]byte, MaxFrameSize+1), ErrTooLarge.Error()},
	}
	for _, c := range cases {
		_, err := Decode(c.b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
	}
	if _, err := Decode(unknown); !errors.Is(err, ErrUnknownMessage) {
		t.Errorf("unknown type: %v does not wrap ErrUnknownMessage", err)
	}
}

func TestEncodeRefusesOversize(t *testing.T) {
	f := podFrame(t)
	f.Upsert.Object.Data = make([]byte, MaxFrameSize)
	if _, err := Encode(f); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if _, err := Encode(&Frame{}); !errors.Is(err, ErrUnknownMessage) {
		t.Fatalf("empty frame: got %v", err)
	}
}

// jsonFrame is the same upsert with the pod as JSON, for BenchmarkCodec.
type jsonFrame struct {
	Seq    uint64 `json:"seq"`
	Upsert struct {
		Kind            string      `json:"kind"`
		UID             string      `json:"uid"`
		Namespace       string      `json:"namespace"`
		Name            string      `json:"name"`
		ResourceVersion string      `json:"resourceVersion"`
		Object          *corev1.Pod `json:"object"`
	} `json:"upsert"`
}

func BenchmarkCodec(b *testing.B) {
	p := typicalPod()
	b.Run("json", func(b *testing.B) {
		var f jsonFrame
		f.Seq = 7
		f.Upsert.Kind, f.Upsert.UID, f.Upsert.Namespace, f.Upsert.Name, f.Upsert.ResourceVersion, f.Upsert.Object =
			"Pod", string(p.UID), p.Namespace, p.Name, p.ResourceVersion, p
		var n int
		b.ReportAllocs()
		for b.Loop() {
			data, err := json.Marshal(&f)
			if err != nil {
				b.Fatal(err)
			}
			n = len(data)
			var g jsonFrame
			if err := json.Unmarshal(data, &g); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n), "bytes/frame")
	})
	b.Run("cbor+protobuf", func(b *testing.B) {
		var n int
		b.ReportAllocs()
		for b.Loop() {
			data, err := EncodePod(p)
			if err != nil {
				b.Fatal(err)
			}
			wire, err := Encode(&Frame{Seq: 7, Upsert: &Upsert{Object: Object{Kind: KindPod, UID: string(p.UID),
				Namespace: p.Namespace, Name: p.Name, ResourceVersion: p.ResourceVersion, Data: data}}})
			if err != nil {
				b.Fatal(err)
			}
			n = len(wire)
			g, err := Decode(wire)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := DecodePod(g.Upsert.Object.Data); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n), "bytes/frame")
	})
}

// Services and EndpointSlices travel as their protobuf encodings, in kinds
// 6 and 7 that peers know from version 4; every kind is in Kinds once,
// valid and named.
func TestServiceKinds(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "u"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	node := "edge-1"
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", UID: "e"},
		AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.5"}, NodeName: &node}}}
	sb, err := EncodeService(svc)
	if err != nil {
		t.Fatal(err)
	}
	eb, err := EncodeEndpointSlice(es)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []Object{{Kind: KindService, UID: "u", Namespace: "shop", Name: "web", ResourceVersion: "1", Data: sb},
		{Kind: KindEndpointSlice, UID: "e", Namespace: "shop", Name: "web-1", ResourceVersion: "e1.x", Data: eb}} {
		wire, err := Encode(&Frame{Seq: 1, Upsert: &Upsert{Object: o}})
		if err != nil {
			t.Fatal(err)
		}
		f, err := Decode(wire)
		if err != nil || f.Upsert.Object.Kind != o.Kind {
			t.Fatalf("%s: %v %+v", o.Kind, err, f)
		}
	}
	if s, err := DecodeService(sb); err != nil || s.Spec.ClusterIP != "10.96.0.10" {
		t.Fatalf("service: %v %+v", err, s)
	}
	if e, err := DecodeEndpointSlice(eb); err != nil || *e.Endpoints[0].NodeName != node {
		t.Fatalf("endpointslice: %v %+v", err, e)
	}
	if _, err := DecodeEndpointSlice([]byte{0xff, 0xff}); err == nil {
		t.Fatal("garbage decoded as an endpointslice")
	}
	seen := map[Kind]bool{}
	for _, k := range Kinds {
		if seen[k] || !k.Valid() || strings.HasPrefix(k.String(), "Kind(") || k.Since() > Version {
			t.Errorf("kind %d: duplicate %v valid %v name %s since %d", k, seen[k], k.Valid(), k, k.Since())
		}
		seen[k] = true
	}
	if KindService.Since() != 4 || KindEndpointSlice.Since() != 4 || KindDevice.Since() != 1 || Kind(8).Valid() {
		t.Fatal("Since or Valid")
	}
}

// A Hello that lists Services apart (NewInventory) still decodes as the
// Hello of a version 3 build, which knows neither the field nor the kinds,
// and passes that build's validation: an edge that holds Services can
// still connect to an older hub.
func TestNewInventoryIgnoredByOlderPeers(t *testing.T) {
	old, newer := SplitInventory([]ObjectRef{{Kind: KindPod, UID: "p"}, {Kind: KindService, UID: "s"},
		{Kind: KindEndpointSlice, UID: "e"}, {Kind: KindSecret, UID: "x"}})
	if len(old) != 2 || len(newer) != 2 || old[0].UID != "p" || newer[1].UID != "e" {
		t.Fatalf("split %v %v", old, newer)
	}
	wire, err := Encode(&Frame{Hello: &Hello{ProtocolVersion: Version, MinVersion: 1, NodeName: "edge-1",
		Inventory: old, NewInventory: newer}})
	if err != nil {
		t.Fatal(err)
	}
	// The Hello of a version 3 build: fields 1 to 5.
	type helloV3 struct {
		ProtocolVersion uint32      `cbor:"1,keyasint"`
		MinVersion      uint32      `cbor:"2,keyasint"`
		NodeName        string      `cbor:"3,keyasint"`
		Inventory       []ObjectRef `cbor:"4,keyasint,omitempty"`
		Agent           string      `cbor:"5,keyasint,omitempty"`
	}
	var f struct {
		Hello *helloV3 `cbor:"1,keyasint,omitempty"`
	}
	if err := decMode.Unmarshal(wire, &f); err != nil || f.Hello == nil || len(f.Hello.Inventory) != 2 {
		t.Fatalf("as a version 3 Hello: %v %+v", err, f.Hello)
	}
	for _, r := range f.Hello.Inventory {
		if r.Kind.Since() > OldKindsVersion {
			t.Fatalf("Inventory lists %s, which a version 3 hub refuses", r.Kind)
		}
	}
	g, err := Decode(wire)
	if err != nil || len(g.Hello.NewInventory) != 2 {
		t.Fatalf("as a version 4 Hello: %v %+v", err, g)
	}
	bad, _ := encMode.Marshal(&Frame{Hello: &Hello{ProtocolVersion: Version, MinVersion: 1, NodeName: "edge-1",
		NewInventory: []ObjectRef{{Kind: 42, UID: "u"}}}})
	if _, err := Decode(bad); err == nil || !strings.Contains(err.Error(), "newInventory[0]") {
		t.Fatalf("unknown kind in NewInventory: %v", err)
	}
}

// DecodeHello refuses a Hello whose inventory is over the limit at the
// inventory's header, before decoding it: the audit's 2 MiB Hello of
// 233,000 refs costs under 2 KiB instead of the 13 MiB that Decode
// allocates for it. Under the limit it decodes as Decode does.
func TestDecodeHelloInventoryLimit(t *testing.T) {
	inv := make([]ObjectRef, 233_000)
	for i := range inv {
		inv[i] = ObjectRef{Kind: KindPod, UID: strconv.FormatInt(int64(i), 36)}
	}
	b, err := Encode(&Frame{Hello: &Hello{ProtocolVersion: Version, MinVersion: 1, NodeName: "n1", Inventory: inv}})
	if err != nil {
		t.Fatal(err)
	}
	allocated := func(f func()) uint64 {
		var a, z runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&a)
		f()
		runtime.ReadMemStats(&z)
		return z.TotalAlloc - a.TotalAlloc
	}
	var herr error
	refused := allocated(func() { _, herr = DecodeHello(b, 20000) })
	if !errors.Is(herr, ErrTooLarge) || !strings.Contains(herr.Error(), "more than 20000") {
		t.Fatalf("DecodeHello: %v, want ErrTooLarge, more than 20000", herr)
	}
	// Decode allocates about 13 MiB for it (go test without -race).
	t.Logf("Hello of %d bytes, %d refs: refused with %d bytes allocated", len(b), len(inv), refused)
	if refused > 64<<10 {
		t.Errorf("refusing the Hello allocated %d bytes, want under 64 KiB", refused)
	}

	small := &Frame{Hello: &Hello{ProtocolVersion: Version, MinVersion: 1, NodeName: "n1", Inventory: inv[:20000]}}
	f, err := DecodeHello(must(Encode(small)), 20000)
	if err != nil || !reflect.DeepEqual(f, small) {
		t.Fatalf("a Hello at the limit: %v", err)
	}
	if _, err := DecodeHello(must(Encode(&Frame{Hello: &Hello{ProtocolVersion: Version, MinVersion: 1, NodeName: "n1",
		Inventory: inv[:3]}})), 2); err != nil {
		t.Fatalf("a limit under cbor's least (16) leaves the check to the caller: %v", err)
	}
}

// Welcome.ReconnectMax (version 5) is a field an older edge skips: the
// Welcome of a version 5 hub decodes as a version 4 build's Welcome, and a
// version 5 edge reads the field back. A negative or absurd one is refused.
func TestWelcomeReconnectMax(t *testing.T) {
	wire, err := Encode(&Frame{Welcome: &Welcome{ProtocolVersion: Version, HeartbeatInterval: 30000,
		SessionTimeout: 75000, MaxFrameSize: MaxFrameSize, ReconnectMax: 10000}})
	if err != nil {
		t.Fatal(err)
	}
	type welcomeV4 struct {
		ProtocolVersion   uint32   `cbor:"1,keyasint"`
		HeartbeatInterval Duration `cbor:"2,keyasint"`
		SessionTimeout    Duration `cbor:"3,keyasint"`
		MaxFrameSize      uint32   `cbor:"4,keyasint"`
	}
	var f struct {
		Welcome *welcomeV4 `cbor:"2,keyasint,omitempty"`
	}
	if err := decMode.Unmarshal(wire, &f); err != nil || f.Welcome == nil || f.Welcome.SessionTimeout != 75000 {
		t.Fatalf("as a version 4 Welcome: %v %+v", err, f.Welcome)
	}
	g, err := Decode(wire)
	if err != nil || g.Welcome.ReconnectMax.D() != 10*time.Second {
		t.Fatalf("as a version 5 Welcome: %v %+v", err, g)
	}
	for _, d := range []Duration{-1, DurationOf(2 * time.Hour)} {
		bad, _ := encMode.Marshal(&Frame{Welcome: &Welcome{ProtocolVersion: Version, HeartbeatInterval: 30000,
			SessionTimeout: 75000, MaxFrameSize: MaxFrameSize, ReconnectMax: d}})
		if _, err := Decode(bad); err == nil || !strings.Contains(err.Error(), "reconnect max") {
			t.Errorf("reconnect max %d: %v", d, err)
		}
	}
}

func TestAccessReviewLimits(t *testing.T) {
	ok := AccessReview{ID: 1, Namespace: "store", Pod: "pos", PodUID: "u", ServiceAccount: "reader",
		Checks: []AccessCheck{{Verb: "list", Resource: "pods", Namespace: "store"}}}
	if err := (&Frame{AccessReview: &ok}).Validate(); err != nil {
		t.Fatal(err)
	}
	many := ok
	many.Checks = make([]AccessCheck, MaxAccessChecks+1)
	for i := range many.Checks {
		many.Checks[i] = ok.Checks[0]
	}
	long := ok
	long.Checks = []AccessCheck{{Verb: "get", Resource: "pods", Name: strings.Repeat("x", 254)}}
	noPod := ok
	noPod.PodUID = ""
	for name, f := range map[string]*Frame{
		"too many checks":   {AccessReview: &many},
		"long name":         {AccessReview: &long},
		"no pod uid":        {AccessReview: &noPod},
		"with a seq":        {Seq: 3, AccessReview: &ok},
		"answers and error": {AccessReviewResult: &AccessReviewResult{ID: 1, Allowed: []bool{true}, Error: "x"}},
		"neither":           {AccessReviewResult: &AccessReviewResult{ID: 1}},
		"too many answers":  {AccessReviewResult: &AccessReviewResult{ID: 1, Allowed: make([]bool, MaxAccessChecks+1)}},
	} {
		if err := f.Validate(); err == nil {
			t.Errorf("%s: valid", name)
		}
	}
}

func TestStatusOrder(t *testing.T) {
	for _, c := range []struct {
		a, b   StatusOrder
		before bool
	}{
		{StatusOrder{Epoch: 1, Seq: 5}, StatusOrder{Epoch: 1, Seq: 6}, true},
		{StatusOrder{Epoch: 1, Seq: 6}, StatusOrder{Epoch: 1, Seq: 6}, false},
		{StatusOrder{Epoch: 1, Seq: 7}, StatusOrder{Epoch: 1, Seq: 6}, false},
		// A new store's first report is newer than any of the old store's.
		{StatusOrder{Epoch: 1, Seq: 1 << 60}, StatusOrder{Epoch: 2, Seq: 1}, true},
		{StatusOrder{Epoch: 2, Seq: 1}, StatusOrder{Epoch: 1, Seq: 1 << 60}, false},
	} {
		if got := c.a.Before(c.b); got != c.before {
			t.Errorf("%+v.Before(%+v) = %v, want %v", c.a, c.b, got, c.before)
		}
	}
	if !(StatusOrder{}).IsZero() || (StatusOrder{Seq: 1}).IsZero() {
		t.Error("IsZero")
	}
}
