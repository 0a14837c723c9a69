package protocol

import (
	"bytes"
	"errors"
	"testing"

	"github.com/fxamacker/cbor/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// canonical encodes frames with sorted map keys, so that two equal frames
// give equal bytes whatever the order of their maps (NodeStatus.Labels).
var canonical = func() cbor.EncMode {
	m, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err)
	}
	return m
}()

// seedFrames is one frame of each message type, as the peers send them.
func seedFrames(t testing.TB) []*Frame {
	ns := &corev1.NodeStatus{
		Capacity:   corev1.ResourceList{corev1.ResourcePods: resource.MustParse("110"), corev1.ResourceCPU: resource.MustParse("4")},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Unix(1763776000, 0)}},
		NodeInfo:   corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "arm64", KubeletVersion: "v1.31.4"},
	}
	nsb, err := EncodeNodeStatus(ns)
	if err != nil {
		t.Fatal(err)
	}
	psb, err := EncodePodStatus(&typicalPod().Status)
	if err != nil {
		t.Fatal(err)
	}
	podb, err := EncodePod(typicalPod())
	if err != nil {
		t.Fatal(err)
	}
	return []*Frame{
		{Hello: &Hello{ProtocolVersion: Version, MinVersion: MinVersion, NodeName: "store-0421-pi", Agent: "tether-edgecore/v0.3.0 (f3f7b30)",
			Inventory: []ObjectRef{{Kind: KindPod, UID: "5f0c2a1e-8d3b-4c6a-9e7f-1b2c3d4e5f60", ResourceVersion: "1048576"}, {Kind: KindSecret, UID: "u2"}}}},
		{Welcome: &Welcome{ProtocolVersion: Version, HeartbeatInterval: 30000, SessionTimeout: 75000, MaxFrameSize: MaxFrameSize}},
		podFrame(t),
		{Seq: 2, Delete: &Delete{Kind: KindSecret, UID: "u2", Namespace: "retail", Name: "pos-key"}},
		{Ack: &Ack{Seqs: []uint64{1, 2, 3}, Rejected: []Rejection{{Seq: 4, Reason: "decode pod: unexpected EOF"}}}},
		{Heartbeat: &Heartbeat{Time: 1763776000123}},
		{ResyncDone: &ResyncDone{Upserts: 12, Deletes: 1, Bytes: 48213}},
		{Seq: 9, NodeStatus: &NodeStatus{Labels: map[string]string{"tether.io/site": "store-0421", "kubernetes.io/arch": "arm64"}, Status: nsb}},
		{Seq: 10, PodStatus: &PodStatus{UID: "5f0c2a1e", Namespace: "retail", Name: "pos-terminal-7c9f8d6b5-x2kqz", Status: psb}},
		{Seq: 11, PodTerminated: &PodTerminated{UID: "5f0c2a1e", Namespace: "retail", Name: "pos-terminal-7c9f8d6b5-x2kqz"}},
		{Seq: 12, Event: &Event{InvolvedKind: "Pod", Namespace: "retail", Name: "pos", UID: "5f0c2a1e", Type: "Warning",
			Reason: "BackOff", Message: "Back-off restarting failed container", Count: 3, FirstTime: 1, LastTime: 2,
			FieldPath: "spec.containers{pos}"}},
		{Error: &Error{Code: ErrorUnknownMessage, Message: "frame holds no known message type", Seq: 5}},
		{Seq: 13, MirrorPod: &MirrorPod{Namespace: "kube-system", Name: "pos-store-0421-pi", Pod: podb}},
		{Seq: 14, MirrorPod: &MirrorPod{Namespace: "kube-system", Name: "pos-store-0421-pi", Delete: true}},
		{Seq: 15, DeviceStatus: &DeviceStatus{UID: "d", Namespace: "plant", Name: "thermo", State: "online", LastOnline: 5,
			Twins: []DeviceTwin{{Name: "humidity", Value: "40", Timestamp: 3}, {Name: "temp", Value: "21.5", ObservedDesired: new("22")}}}},
		{Seq: 16, Upsert: &Upsert{Object: Object{Kind: KindDevice, UID: "d", Namespace: "plant", Name: "thermo", ResourceVersion: "7",
			Data: []byte(`{"apiVersion":"devices.tether.io/v1beta1","kind":"Device","metadata":{"name":"thermo"}}`)}}},
		{CertRequest: &CertRequest{CSR: []byte("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n")}},
		{CertIssued: &CertIssued{Certificate: []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")}},
		{AccessReview: &AccessReview{ID: 1, Namespace: "store", Pod: "pos", PodUID: "u", ServiceAccount: "reader",
			Checks: []AccessCheck{{Verb: "list", Resource: "pods", Namespace: "store"}, {Verb: "get", Resource: "nodes"}}}},
		{AccessReviewResult: &AccessReviewResult{ID: 1, Allowed: []bool{true, false}}},
		{AccessReviewResult: &AccessReviewResult{ID: 2, Error: "pod store/pos is not bound to node edge-1"}},
		{APIRequest: &APIRequest{ID: 1, Namespace: "store", Pod: "pos", PodUID: "u", ServiceAccount: "writer", Method: "POST",
			Path: "/api/v1/namespaces/store/configmaps", Query: "fieldManager=pos", ContentType: "application/json",
			Body: []byte(`{"metadata":{"name":"x"}}`)}},
		{APIResponse: &APIResponse{ID: 1, Status: 201, ContentType: "application/json", Warnings: []string{"299 - x"},
			Body: []byte(`{"kind":"ConfigMap"}`)}},
	}
}

// FuzzDecode checks Decode against hostile frames: it never returns a frame
// that fails Validate; an accepted frame encodes (within MaxFrameSize) and
// decodes again to an equal frame; a frame of an unknown type comes back
// with only its Seq.
func FuzzDecode(f *testing.F) {
	for _, fr := range seedFrames(f) {
		b, err := Encode(fr)
		if err != nil {
			f.Fatalf("encode %s: %v", fr.Type(), err)
		}
		f.Add(b)
	}
	unknown, _ := cbor.Marshal(map[int]any{0: 5, 99: map[int]any{1: "x"}})
	f.Add(unknown)
	f.Add([]byte{0xa2, 0x06, 0xa0, 0x06, 0xa0}) // a duplicate key
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		fr, err := Decode(in)
		if err != nil {
			switch {
			case errors.Is(err, ErrUnknownMessage):
				if fr == nil || fr.count() != 0 {
					t.Fatalf("unknown message: frame %+v", fr)
				}
			case fr != nil:
				t.Fatalf("error %v with a frame %+v", err, fr)
			}
			return
		}
		if err := fr.Validate(); err != nil {
			t.Fatalf("Decode accepted a frame that fails Validate: %v", err)
		}
		b, err := Encode(fr)
		if err != nil {
			t.Fatalf("accepted %s frame does not encode: %v", fr.Type(), err)
		}
		if len(b) > MaxFrameSize {
			t.Fatalf("accepted %s frame encodes to %d bytes", fr.Type(), len(b))
		}
		again, err := Decode(b)
		if err != nil {
			t.Fatalf("re-encoded %s frame does not decode: %v", fr.Type(), err)
		}
		want, err1 := canonical.Marshal(fr)
		got, err2 := canonical.Marshal(again)
		if err1 != nil || err2 != nil || !bytes.Equal(want, got) {
			t.Fatalf("decode, encode, decode changed the frame:\n%x\n%x (%v, %v)", want, got, err1, err2)
		}
	})
}

// FuzzDecodeStatuses checks the protobuf decoders of what edges send up
// (NodeStatus, PodStatus, MirrorPod): no panic, and what they accept
// re-encodes to bytes that decode and encode to the same bytes (the
// generated encoders sort map keys, so equal objects give equal bytes).
func FuzzDecodeStatuses(f *testing.F) {
	for _, fr := range seedFrames(f) {
		switch {
		case fr.NodeStatus != nil:
			f.Add(byte(0), fr.NodeStatus.Status)
		case fr.PodStatus != nil:
			f.Add(byte(1), fr.PodStatus.Status)
		case fr.MirrorPod != nil && len(fr.MirrorPod.Pod) > 0:
			f.Add(byte(2), fr.MirrorPod.Pod)
		}
	}
	f.Add(byte(0), []byte{})
	f.Fuzz(func(t *testing.T, which byte, in []byte) {
		type proto interface {
			Marshal() ([]byte, error)
			Unmarshal([]byte) error
		}
		var a, b proto
		switch which % 3 {
		case 0:
			a, b = new(corev1.NodeStatus), new(corev1.NodeStatus)
		case 1:
			a, b = new(corev1.PodStatus), new(corev1.PodStatus)
		case 2:
			a, b = new(corev1.Pod), new(corev1.Pod)
		}
		if err := a.Unmarshal(in); err != nil {
			return
		}
		out, err := a.Marshal()
		if err != nil {
			t.Fatalf("accepted object does not encode: %v", err)
		}
		if err := b.Unmarshal(out); err != nil {
			t.Fatalf("re-encoded object does not decode: %v", err)
		}
		again, err := b.Marshal()
		if err != nil || !bytes.Equal(out, again) {
			t.Fatalf("decode, encode, decode changed the object: %x, then %x (%v)", out, again, err)
		}
	})
}
