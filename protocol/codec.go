package protocol

import (
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/fxamacker/cbor/v2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.EncOptions{}.EncMode()
	if err != nil {
		panic(fmt.Sprintf("protocol: cbor encoder options: %v", err))
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  16,
		MaxArrayElements: 1 << 20,
		MaxMapPairs:      1 << 16,
	}.DecMode()
	if err != nil {
		panic(fmt.Sprintf("protocol: cbor decoder options: %v", err))
	}
}

// ErrTooLarge is returned for a frame over MaxFrameSize.
var ErrTooLarge = errors.New("frame exceeds the maximum frame size")

// ErrRejected marks a message its receiver will never apply (bad content, a
// write the API server refused for good). It travels as an Ack.Rejected
// entry; the sender must not send the message again unchanged.
var ErrRejected = errors.New("rejected")

// ErrUnknownMessage is returned by Decode for a frame that holds no message of
// a type this build knows.
var ErrUnknownMessage = errors.New("frame holds no known message type")

// Encode validates f and returns its wire encoding. It fails for an invalid
// frame and for one larger than MaxFrameSize.
func Encode(f *Frame) ([]byte, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	b, err := encMode.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("encode frame: %w", err)
	}
	if len(b) > MaxFrameSize {
		return nil, fmt.Errorf("%s frame of %d bytes: %w", f.Type(), len(b), ErrTooLarge)
	}
	return b, nil
}

// Decode parses and validates one frame. Errors wrap ErrTooLarge or
// ErrUnknownMessage where those apply. With ErrUnknownMessage it also returns
// the frame, holding only its Seq, so that the receiver can name the message
// it cannot take in its Error (and the sender stop sending it).
func Decode(b []byte) (*Frame, error) { return decode(decMode, b) }

func decode(dm cbor.DecMode, b []byte) (*Frame, error) {
	if len(b) > MaxFrameSize {
		return nil, fmt.Errorf("frame of %d bytes: %w", len(b), ErrTooLarge)
	}
	f := new(Frame)
	if err := dm.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("decode frame: %w", err)
	}
	if err := f.Validate(); err != nil {
		if errors.Is(err, ErrUnknownMessage) {
			return &Frame{Seq: f.Seq}, err
		}
		return nil, err
	}
	return f, nil
}

// helloModes are the decoders of DecodeHello, by their array limit.
var helloModes sync.Map // int → cbor.DecMode

// DecodeHello is Decode for the first frame of a session, which the hub
// reads before it knows the node: an array of more than maxInventory
// elements (the Hello's inventory) is refused with an error wrapping
// ErrTooLarge while the frame is checked, before anything of it is
// decoded. The check stops at the array's header, which holds its length:
// a 2 MiB Hello of 233,000 refs costs a pass over its first bytes and a few
// small allocations, not the 29 MiB and seconds of CPU of decoding and
// keeping the refs.
func DecodeHello(b []byte, maxInventory int) (*Frame, error) {
	limit := max(maxInventory, 16) // cbor's least limit; the caller checks the length too
	dm, ok := helloModes.Load(limit)
	if !ok {
		m, err := cbor.DecOptions{
			DupMapKey:        cbor.DupMapKeyEnforcedAPF,
			IndefLength:      cbor.IndefLengthForbidden,
			TagsMd:           cbor.TagsForbidden,
			MaxNestedLevels:  16,
			MaxArrayElements: limit,
			MaxMapPairs:      1 << 16,
		}.DecMode()
		if err != nil {
			return nil, fmt.Errorf("hello decoder: %w", err)
		}
		dm, _ = helloModes.LoadOrStore(limit, m)
	}
	f, err := decode(dm.(cbor.DecMode), b)
	var tooMany *cbor.MaxArrayElementsError
	if errors.As(err, &tooMany) {
		return nil, fmt.Errorf("the Hello lists more than %d objects: %w", maxInventory, ErrTooLarge)
	}
	return f, err
}

// Type names the message in f, for logs and metrics; "" if none is set.
func (f *Frame) Type() string {
	m := f.message()
	if m == nil {
		return ""
	}
	return reflect.TypeOf(m).Elem().Name()
}

// message returns the one message set in f, or nil. It fails the frame
// validation (by returning nil) when more than one is set.
func (f *Frame) message() validator {
	var set []validator
	add := func(ok bool, v validator) {
		if ok {
			set = append(set, v)
		}
	}
	add(f.Hello != nil, f.Hello)
	add(f.Welcome != nil, f.Welcome)
	add(f.Upsert != nil, f.Upsert)
	add(f.Delete != nil, f.Delete)
	add(f.Ack != nil, f.Ack)
	add(f.Heartbeat != nil, f.Heartbeat)
	add(f.ResyncDone != nil, f.ResyncDone)
	add(f.NodeStatus != nil, f.NodeStatus)
	add(f.PodStatus != nil, f.PodStatus)
	add(f.PodTerminated != nil, f.PodTerminated)
	add(f.Event != nil, f.Event)
	add(f.Error != nil, f.Error)
	add(f.MirrorPod != nil, f.MirrorPod)
	add(f.DeviceStatus != nil, f.DeviceStatus)
	add(f.CertRequest != nil, f.CertRequest)
	add(f.CertIssued != nil, f.CertIssued)
	add(f.StreamOpen != nil, f.StreamOpen)
	add(f.StreamData != nil, f.StreamData)
	add(f.StreamCredit != nil, f.StreamCredit)
	add(f.StreamClose != nil, f.StreamClose)
	add(f.AccessReview != nil, f.AccessReview)
	add(f.AccessReviewResult != nil, f.AccessReviewResult)
	add(f.APIRequest != nil, f.APIRequest)
	add(f.APIResponse != nil, f.APIResponse)
	if len(set) != 1 {
		return nil
	}
	return set[0]
}

type validator interface{ validate() error }

// Validate checks that f holds exactly one message and that the message is
// well formed.
func (f *Frame) Validate() error {
	m := f.message()
	if m == nil {
		if f.count() == 0 {
			return ErrUnknownMessage
		}
		return fmt.Errorf("frame holds %d messages, want 1", f.count())
	}
	needSeq := f.Upsert != nil || f.Delete != nil || f.NodeStatus != nil || f.PodStatus != nil ||
		f.PodTerminated != nil || f.Event != nil || f.MirrorPod != nil || f.DeviceStatus != nil
	if needSeq && f.Seq == 0 {
		return fmt.Errorf("%s needs a Seq", f.Type())
	}
	if !needSeq && f.Seq != 0 {
		return fmt.Errorf("%s carries a Seq", f.Type())
	}
	if err := m.validate(); err != nil {
		return fmt.Errorf("%s: %w", f.Type(), err)
	}
	return nil
}

func (f *Frame) count() int {
	n := 0
	for _, set := range []bool{f.Hello != nil, f.Welcome != nil, f.Upsert != nil, f.Delete != nil,
		f.Ack != nil, f.Heartbeat != nil, f.ResyncDone != nil, f.NodeStatus != nil, f.PodStatus != nil,
		f.PodTerminated != nil, f.Event != nil, f.Error != nil, f.MirrorPod != nil,
		f.DeviceStatus != nil, f.CertRequest != nil, f.CertIssued != nil, f.StreamOpen != nil,
		f.StreamData != nil, f.StreamCredit != nil, f.StreamClose != nil, f.AccessReview != nil,
		f.AccessReviewResult != nil, f.APIRequest != nil, f.APIResponse != nil} {
		if set {
			n++
		}
	}
	return n
}

// EncodePod returns the Kubernetes protobuf encoding of p.
func EncodePod(p *corev1.Pod) ([]byte, error) { return p.Marshal() }

// DecodePod parses the Kubernetes protobuf encoding of a pod.
func DecodePod(b []byte) (*corev1.Pod, error) {
	p := new(corev1.Pod)
	if err := p.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("decode pod: %w", err)
	}
	return p, nil
}

// EncodeConfigMap returns the Kubernetes protobuf encoding of c.
func EncodeConfigMap(c *corev1.ConfigMap) ([]byte, error) { return c.Marshal() }

// DecodeConfigMap parses the Kubernetes protobuf encoding of a configmap.
func DecodeConfigMap(b []byte) (*corev1.ConfigMap, error) {
	c := new(corev1.ConfigMap)
	if err := c.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("decode configmap: %w", err)
	}
	return c, nil
}

// EncodeSecret returns the Kubernetes protobuf encoding of s.
func EncodeSecret(s *corev1.Secret) ([]byte, error) { return s.Marshal() }

// DecodeSecret parses the Kubernetes protobuf encoding of a secret.
func DecodeSecret(b []byte) (*corev1.Secret, error) {
	s := new(corev1.Secret)
	if err := s.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("decode secret: %w", err)
	}
	return s, nil
}

// EncodePodStatus returns the Kubernetes protobuf encoding of s.
func EncodePodStatus(s *corev1.PodStatus) ([]byte, error) { return s.Marshal() }

// DecodePodStatus parses the Kubernetes protobuf encoding of a pod status.
func DecodePodStatus(b []byte) (*corev1.PodStatus, error) {
	s := new(corev1.PodStatus)
	if err := s.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("decode pod status: %w", err)
	}
	return s, nil
}

// EncodeNodeStatus returns the Kubernetes protobuf encoding of s.
func EncodeNodeStatus(s *corev1.NodeStatus) ([]byte, error) { return s.Marshal() }

// DecodeNodeStatus parses the Kubernetes protobuf encoding of a node status.
func DecodeNodeStatus(b []byte) (*corev1.NodeStatus, error) {
	s := new(corev1.NodeStatus)
	if err := s.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("decode node status: %w", err)
	}
	return s, nil
}

// EncodeService returns the Kubernetes protobuf encoding of s.
func EncodeService(s *corev1.Service) ([]byte, error) { return s.Marshal() }

// DecodeService parses the Kubernetes protobuf encoding of a service.
func DecodeService(b []byte) (*corev1.Service, error) {
	s := new(corev1.Service)
	if err := s.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("decode service: %w", err)
	}
	return s, nil
}

// EncodeEndpointSlice returns the Kubernetes protobuf encoding of e.
func EncodeEndpointSlice(e *discoveryv1.EndpointSlice) ([]byte, error) { return e.Marshal() }

// DecodeEndpointSlice parses the Kubernetes protobuf encoding of an
// endpoint slice.
func DecodeEndpointSlice(b []byte) (*discoveryv1.EndpointSlice, error) {
	e := new(discoveryv1.EndpointSlice)
	if err := e.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("decode endpointslice: %w", err)
	}
	return e, nil
}
