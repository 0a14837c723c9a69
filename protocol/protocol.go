package protocol

import (
	"fmt"
	"time"
)

// Version is the protocol version this build speaks.
//
// History (bump it when a change means an older peer would misread a frame;
// adding an optional field or a new message type that older peers may ignore
// does not need a bump):
//
//	1 (2026-11-22): Hello, Welcome, Upsert, Delete, Ack, Heartbeat,
//	  ResyncDone, NodeStatus, PodStatus, PodTerminated, Event, Error;
//	  MirrorPod added later without a bump (a hub that does not know it
//	  answers ErrorUnknownMessage and the edge keeps it queued); then kinds
//	  DeviceModel and Device and the DeviceStatus message, also without a
//	  bump (an edge that does not know a kind rejects the Upsert in its Ack,
//	  and the hub does not send it again unchanged).
//	2 (2026-12-06): per-node identity. The edge authenticates with its
//	  client certificate, not a bearer token, and Hello.NodeName must be the
//	  node the certificate names (ErrorUnauthorized otherwise).
//	  CertRequest (edge) and CertIssued (hub) renew the client certificate
//	  in the session; an edge sends CertRequest only when the Welcome says
//	  2 or more, so a version 1 hub never sees one. A Seq'd message answered
//	  ErrorUnknownMessage is not sent again in that session. Error codes
//	  Revoked and Expired.
//	3 (2026-12-06): byte streams to the edge's kubelet API (kubectl logs,
//	  exec, attach, port-forward, the node proxy): StreamOpen (hub),
//	  StreamData, StreamCredit and StreamClose (either side). The hub opens
//	  streams only to an edge that said 3 or more in its Hello; to an
//	  older one the API server's request gets 502 "edge too old".
//	4 (2026-12-06): kinds Service and EndpointSlice. The hub sends them
//	  only in a session whose version is 4 or more (Kind.Since): an older
//	  edge would reject every one in its Ack and hold nothing of them, but
//	  would also count them as rejections in its logs at every change. An
//	  EndpointSlice is the node's filtered copy (see KindEndpointSlice).
//	  The edge lists the objects of these kinds it holds in
//	  Hello.NewInventory, which older hubs ignore, not in Inventory, which
//	  they would refuse.
//	5 (2026-12-06): fast reconnect without a herd. Welcome.ReconnectMax is
//	  the longest an edge should wait between attempts to reach the hub
//	  while it is unreachable (the hub sizes it to its fleet and the rate
//	  of sessions it takes); the hub sets it only for an edge that said 5
//	  or more in its Hello, and an edge reads it only from a Welcome that
//	  says 5 or more. An Error ShuttingDown from a hub of version 5 or more
//	  means "reconnect now, elsewhere": the hub closes its sessions one by
//	  one over a few seconds when it stops, so the edge need not wait.
//	6 (2026-12-06): AccessReview (edge) and AccessReviewResult (hub): the
//	  edge's in-cluster API asks whether a service account of one of its
//	  pods may read a resource, and caches the answers for when the cloud
//	  is away. An edge sends AccessReview only to a hub that welcomed it
//	  with 6 or more; a hub answers only in a session of 6 or more.
//	7 (2026-12-06): APIRequest (edge) and APIResponse (hub): a write of a
//	  pod to the in-cluster API at the edge, relayed to the API server
//	  with a token of the pod's own service account (relay.go). An edge
//	  sends APIRequest only to a hub that welcomed it with 7 or more (to
//	  an older one the pod gets 503 "the cloud's hub is too old"); a hub
//	  answers only in a session of 7 or more.
//	8 (2026-12-06): Hello.StoreEpoch, the epoch of the edge's store: with
//	  the Seq of an upstream frame it orders the edge's reports across
//	  sessions, replicas and store resets (StatusOrder). The hub writes a
//	  NodeStatus or PodStatus only if its order is newer than the one
//	  recorded on the object, so that a late write of a replica the edge
//	  left cannot take a status back. The hub fences only in a session of
//	  8 or more; an older edge's Hello has no epoch and its reports are
//	  written unfenced, as before. The same for DeviceStatus.
//	  PodStatus.Prev and DeviceStatus.Prev, the Seq of the previous
//	  report of the object, spare the hub a write of the fence alone when a
//	  report repeats the pod's status (as after every reconnect).
const Version uint32 = 8

// MinVersion is the oldest protocol version this build still speaks.
const MinVersion uint32 = 1

// MaxFrameSize is the largest encoded frame either side sends or accepts, in
// bytes. Kubernetes keeps no object larger than 1.5 MiB in etcd, so every
// object fits with room for the envelope.
const MaxFrameSize = 2 << 20

// Kind names the type of a Kubernetes object carried in Upsert and Delete.
type Kind uint8

// Kinds of objects the hub sends to the edge. The numbers are on the wire:
// never reuse one.
const (
	KindPod       Kind = 1
	KindConfigMap Kind = 2
	KindSecret    Kind = 3
	// KindDeviceModel and KindDevice are the devices.tether.io/v1beta1
	// custom resources; their Data is JSON (custom resources have no
	// protobuf encoding).
	KindDeviceModel Kind = 4
	KindDevice      Kind = 5
	// KindService is a core/v1 Service of a namespace the node runs pods
	// in. Since version 4.
	KindService Kind = 6
	// KindEndpointSlice is a discovery.k8s.io/v1 EndpointSlice of such a
	// Service, filtered for the node: it holds only the endpoints the node
	// can reach (cloudcore's dispatch package says which), and its
	// ResourceVersion is a hash of that content, not the API server's.
	// Since version 4.
	KindEndpointSlice Kind = 7
)

// Since returns the oldest protocol version whose peers know k. The hub
// sends an object of k only in a session of that version or newer.
func (k Kind) Since() uint32 {
	switch k {
	case KindService, KindEndpointSlice:
		return 4
	}
	return 1
}

// Kinds lists every known Kind in the order the hub sends upserts: objects
// that others refer to come first.
var Kinds = []Kind{KindConfigMap, KindSecret, KindDeviceModel, KindDevice, KindService, KindEndpointSlice, KindPod}

func (k Kind) String() string {
	switch k {
	case KindPod:
		return "Pod"
	case KindConfigMap:
		return "ConfigMap"
	case KindSecret:
		return "Secret"
	case KindDeviceModel:
		return "DeviceModel"
	case KindDevice:
		return "Device"
	case KindService:
		return "Service"
	case KindEndpointSlice:
		return "EndpointSlice"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Valid reports whether k is a kind this build knows.
func (k Kind) Valid() bool {
	return k >= KindPod && k <= KindEndpointSlice
}

// ObjectRef identifies one version of one object. The edge lists what it holds
// as ObjectRefs in Hello.
type ObjectRef struct {
	Kind            Kind   `cbor:"1,keyasint"`
	UID             string `cbor:"2,keyasint"`
	ResourceVersion string `cbor:"3,keyasint,omitempty"`
}

// Object is one Kubernetes object sent down to the edge.
type Object struct {
	Kind            Kind   `cbor:"1,keyasint"`
	UID             string `cbor:"2,keyasint"`
	Namespace       string `cbor:"3,keyasint,omitempty"`
	Name            string `cbor:"4,keyasint"`
	ResourceVersion string `cbor:"5,keyasint"`
	// Data is the Kubernetes protobuf encoding of the k8s.io/api type named
	// by Kind (see EncodePod and friends); for DeviceModel and Device, the
	// JSON of the devices.tether.io/v1beta1 object.
	Data []byte `cbor:"6,keyasint"`
}

// Ref returns the ObjectRef of o.
func (o *Object) Ref() ObjectRef {
	return ObjectRef{Kind: o.Kind, UID: o.UID, ResourceVersion: o.ResourceVersion}
}

// Frame is one websocket message. Exactly one of the message fields is set.
// A frame whose only message is of a type this build does not know decodes
// with no message set, and the receiver answers it with ErrorUnknownMessage.
type Frame struct {
	// Seq numbers a message that the receiver acknowledges. Zero means the
	// message is not acknowledged (Hello, Welcome, Ack, Heartbeat,
	// ResyncDone, Error).
	Seq uint64 `cbor:"0,keyasint,omitempty"`

	Hello         *Hello         `cbor:"1,keyasint,omitempty"`
	Welcome       *Welcome       `cbor:"2,keyasint,omitempty"`
	Upsert        *Upsert        `cbor:"3,keyasint,omitempty"`
	Delete        *Delete        `cbor:"4,keyasint,omitempty"`
	Ack           *Ack           `cbor:"5,keyasint,omitempty"`
	Heartbeat     *Heartbeat     `cbor:"6,keyasint,omitempty"`
	ResyncDone    *ResyncDone    `cbor:"7,keyasint,omitempty"`
	NodeStatus    *NodeStatus    `cbor:"8,keyasint,omitempty"`
	PodStatus     *PodStatus     `cbor:"9,keyasint,omitempty"`
	PodTerminated *PodTerminated `cbor:"10,keyasint,omitempty"`
	Event         *Event         `cbor:"11,keyasint,omitempty"`
	Error         *Error         `cbor:"12,keyasint,omitempty"`
	MirrorPod     *MirrorPod     `cbor:"13,keyasint,omitempty"`
	DeviceStatus  *DeviceStatus  `cbor:"14,keyasint,omitempty"`
	// Since version 2.
	CertRequest *CertRequest `cbor:"15,keyasint,omitempty"`
	CertIssued  *CertIssued  `cbor:"16,keyasint,omitempty"`
	// Since version 3 (streams.go).
	StreamOpen   *StreamOpen   `cbor:"17,keyasint,omitempty"`
	StreamData   *StreamData   `cbor:"18,keyasint,omitempty"`
	StreamCredit *StreamCredit `cbor:"19,keyasint,omitempty"`
	StreamClose  *StreamClose  `cbor:"20,keyasint,omitempty"`
	// Since version 6.
	AccessReview       *AccessReview       `cbor:"21,keyasint,omitempty"`
	AccessReviewResult *AccessReviewResult `cbor:"22,keyasint,omitempty"`
	// Since version 7 (relay.go).
	APIRequest  *APIRequest  `cbor:"23,keyasint,omitempty"`
	APIResponse *APIResponse `cbor:"24,keyasint,omitempty"`
}

// Hello is the first frame of a session, sent by the edge.
type Hello struct {
	// ProtocolVersion is the newest version the edge speaks; MinVersion the
	// oldest.
	ProtocolVersion uint32 `cbor:"1,keyasint"`
	MinVersion      uint32 `cbor:"2,keyasint"`
	// NodeName is the Kubernetes name of the edge node.
	NodeName string `cbor:"3,keyasint"`
	// Inventory lists every object the edge holds in its store, so that the
	// hub sends only the difference.
	Inventory []ObjectRef `cbor:"4,keyasint,omitempty"`
	// Agent names the edge software and its build ("tether-edgecore/<module
	// version> (<vcs revision>)"), for logs.
	Agent string `cbor:"5,keyasint,omitempty"`
	// NewInventory lists the objects the edge holds of kinds newer than
	// version 3 (Kind.Since above 3: Service, EndpointSlice), apart from
	// Inventory: a hub of version 3 or older refuses a Hello whose
	// Inventory names a kind it does not know, and ignores this field (it
	// then neither sends nor deletes such objects). Since version 4.
	NewInventory []ObjectRef `cbor:"6,keyasint,omitempty"`
	// StoreEpoch names the edge's store: a number chosen when the store
	// file was made, larger than that of any store the node had before
	// (see StatusOrder). The Seq of every upstream frame comes from the
	// store's outbox, which numbers its entries with a counter that only
	// grows while the file lives; a new store (the old one lost or moved
	// aside as corrupt) starts its counter again, in a new epoch. Zero:
	// none (an edge of version 7 or older). Since version 8.
	StoreEpoch uint64 `cbor:"7,keyasint,omitempty"`
}

// StatusOrderSince is the protocol version whose Hello carries StoreEpoch:
// the hub fences the reports of a session of this version or newer.
const StatusOrderSince = 8

// StatusOrder orders an edge's reports about one object: Epoch is the
// Hello's StoreEpoch, Seq the frame's. Of two reports about the same object
// from the same node, the one with the larger order is the newer: within a
// store the outbox gives a newer report a larger Seq (a report replaces the
// older one of its object with a new Seq), and a new store has a larger
// epoch. The zero StatusOrder is no order: the report is not fenced.
type StatusOrder struct {
	Epoch uint64
	Seq   uint64
}

// IsZero reports whether o is no order.
func (o StatusOrder) IsZero() bool { return o.Epoch == 0 && o.Seq == 0 }

// Before reports whether o is older than p.
func (o StatusOrder) Before(p StatusOrder) bool {
	return o.Epoch < p.Epoch || o.Epoch == p.Epoch && o.Seq < p.Seq
}

// OldKindsVersion is the newest version whose Hello lists every held object
// in Inventory; objects of later kinds go in Hello.NewInventory.
const OldKindsVersion = 3

// SplitInventory splits refs into those for Hello.Inventory and those for
// Hello.NewInventory.
func SplitInventory(refs []ObjectRef) (old, newer []ObjectRef) {
	for _, r := range refs {
		if r.Kind.Since() > OldKindsVersion {
			newer = append(newer, r)
		} else {
			old = append(old, r)
		}
	}
	return old, newer
}

// Welcome accepts a Hello. Sent by the hub, once.
type Welcome struct {
	ProtocolVersion uint32 `cbor:"1,keyasint"`
	// HeartbeatInterval is how often the edge sends Heartbeat. The hub closes
	// a session it hears nothing on for SessionTimeout.
	HeartbeatInterval Duration `cbor:"2,keyasint"`
	SessionTimeout    Duration `cbor:"3,keyasint"`
	// MaxFrameSize is the hub's frame limit; the edge sends nothing larger.
	MaxFrameSize uint32 `cbor:"4,keyasint"`
	// ReconnectMax is the longest the edge should wait between two
	// attempts to reach the hub once the session ends (its back-off's cap;
	// each delay drawn at random below it). The hub sizes it to the
	// sessions it holds and the rate at which it takes new ones, so that
	// its whole fleet, coming back together after an outage, arrives no
	// faster than it can take. Zero: the edge's own setting. Since version
	// 5.
	ReconnectMax Duration `cbor:"5,keyasint,omitempty"`
}

// ReconnectMaxSince is the protocol version that carries
// Welcome.ReconnectMax and gives Error ShuttingDown its "reconnect now"
// meaning.
const ReconnectMaxSince = 5

// Upsert creates or replaces an object at the edge. Sent by the hub, with a
// Seq; the edge acks it after committing the object to its store. An Upsert
// never carries an older ResourceVersion of an object than one the edge
// acknowledged in the same session.
type Upsert struct {
	Object Object `cbor:"1,keyasint"`
}

// Delete removes an object from the edge. Sent by the hub, with a Seq, when the
// object is gone from the API server or no longer belongs to the node.
type Delete struct {
	Kind      Kind   `cbor:"1,keyasint"`
	UID       string `cbor:"2,keyasint"`
	Namespace string `cbor:"3,keyasint,omitempty"`
	Name      string `cbor:"4,keyasint,omitempty"`
}

// Ack acknowledges frames by Seq. Sent by either side; a receiver may batch
// several sequence numbers into one Ack.
type Ack struct {
	Seqs []uint64 `cbor:"1,keyasint,omitempty"`
	// Rejected lists messages the receiver will never apply (bad content, a
	// write the API server refused for good). They count as delivered: the
	// sender must not resend them unchanged.
	Rejected []Rejection `cbor:"2,keyasint,omitempty"`
}

// Rejection is one message that was received but refused.
type Rejection struct {
	Seq    uint64 `cbor:"1,keyasint"`
	Reason string `cbor:"2,keyasint"`
}

// Heartbeat keeps the session alive. The edge sends one every
// Welcome.HeartbeatInterval (cloudcore's default 30s: each costs an idle
// edge about 150 bytes up); the hub answers each with a Heartbeat and resets
// its session timeout. The node's Lease does not wait for heartbeats: the
// hub renews it while the session lasts.
type Heartbeat struct {
	// Time is the sender's clock, in milliseconds since the epoch.
	Time int64 `cbor:"1,keyasint,omitempty"`
}

// ResyncDone tells the edge that the hub finished the resync that followed
// Hello and the edge acknowledged all of it. Sent once per session.
type ResyncDone struct {
	Upserts uint32 `cbor:"1,keyasint"`
	Deletes uint32 `cbor:"2,keyasint"`
	Bytes   uint64 `cbor:"3,keyasint"`
}

// NodeStatus reports the node's status. Sent by the edge, with a Seq, when it
// changes and at least every node status report interval. The Node object
// was created when the node joined; a NodeStatus for a Node that no longer
// exists (deleted, which revokes the node) is rejected.
type NodeStatus struct {
	// Labels are the labels the edge asks for on its Node. The hub adds
	// those an edge may set (the kubelet's rules) that the Node lacks, and
	// never removes or changes the edge role label.
	Labels map[string]string `cbor:"1,keyasint,omitempty"`
	// Status is the Kubernetes protobuf encoding of a k8s.io/api/core/v1
	// NodeStatus.
	Status []byte `cbor:"2,keyasint"`
}

// PodStatus reports the status of one pod. Sent by the edge, with a Seq.
type PodStatus struct {
	UID       string `cbor:"1,keyasint"`
	Namespace string `cbor:"2,keyasint"`
	Name      string `cbor:"3,keyasint"`
	// Status is the Kubernetes protobuf encoding of a k8s.io/api/core/v1
	// PodStatus.
	Status []byte `cbor:"4,keyasint"`
	// Prev is the Seq of the edge's previous report of this pod from the
	// same store (zero: none, or not known). A hub that finds Prev recorded
	// as the pod's last written report and the status unchanged needs no
	// write: no other report of the pod lies between the two (see
	// StatusOrder). Since version 8.
	Prev uint64 `cbor:"5,keyasint,omitempty"`
}

// PodTerminated tells the hub that every container of a pod marked for
// deletion has stopped, so the pod can be removed from the API server.
// Sent by the edge, with a Seq.
type PodTerminated struct {
	UID       string `cbor:"1,keyasint"`
	Namespace string `cbor:"2,keyasint"`
	Name      string `cbor:"3,keyasint"`
}

// Event is a Kubernetes event about an object of the node. Sent by the edge,
// with a Seq. An Event sent again about the same thing (same involved object
// and field path, type, reason, message and FirstTime) with a higher Count
// or a later LastTime updates the Event written for the first one: the edge
// aggregates repeats as the kubelet's event correlator does.
type Event struct {
	// InvolvedKind is the Kubernetes kind of the object ("Pod", "Node").
	InvolvedKind string `cbor:"1,keyasint"`
	Namespace    string `cbor:"2,keyasint,omitempty"`
	Name         string `cbor:"3,keyasint"`
	UID          string `cbor:"4,keyasint,omitempty"`
	// Type is "Normal" or "Warning".
	Type    string `cbor:"5,keyasint"`
	Reason  string `cbor:"6,keyasint"`
	Message string `cbor:"7,keyasint,omitempty"`
	Count   int32  `cbor:"8,keyasint,omitempty"`
	// FirstTime and LastTime are milliseconds since the epoch.
	FirstTime int64 `cbor:"9,keyasint,omitempty"`
	LastTime  int64 `cbor:"10,keyasint,omitempty"`
	// FieldPath names the part of the object the event is about, as the
	// kubelet's involvedObject.fieldPath does: "spec.containers{web}" for a
	// container of a pod. Optional (added 2026-12-06 without a bump: an
	// older hub ignores it).
	FieldPath string `cbor:"11,keyasint,omitempty"`
}

// MirrorPod asks the hub to make the API server's mirror of one of the edge's
// static pods match the edge (create it, replace it when its config hash
// changed) or, with Delete, to remove it. Sent by the edge, with a Seq,
// whenever the node's static pods change and once per session.
type MirrorPod struct {
	Namespace string `cbor:"1,keyasint"`
	Name      string `cbor:"2,keyasint"`
	// Pod is the Kubernetes protobuf encoding of the mirror pod to create:
	// spec.nodeName set to the node and the kubernetes.io/config.mirror
	// annotation set to the static pod's config hash. Empty with Delete.
	Pod    []byte `cbor:"3,keyasint,omitempty"`
	Delete bool   `cbor:"4,keyasint,omitempty"`
}

// DeviceStatus reports what the edge's twin holds of one device: the latest
// reported value of every property the device reported, and its state. Sent
// by the edge, with a Seq, after reported values or the state changed. It
// always carries the whole reported set, never a delta, so that a newer
// DeviceStatus queued at the edge can replace an older unsent one (the
// outbox coalesces per device) without losing a property.
type DeviceStatus struct {
	UID       string `cbor:"1,keyasint"`
	Namespace string `cbor:"2,keyasint"`
	Name      string `cbor:"3,keyasint"`
	// Twins are sorted by Name; names are unique.
	Twins []DeviceTwin `cbor:"4,keyasint,omitempty"`
	// State is the device's state as its mapper reported it ("online",
	// "offline", "ok", "unhealthy", "unknown"); empty if never reported.
	State string `cbor:"5,keyasint,omitempty"`
	// LastOnline is when the device last reported itself online, in
	// milliseconds since the epoch; 0 if never.
	LastOnline int64 `cbor:"6,keyasint,omitempty"`
	// Prev is the Seq of the edge's previous report of this device from the
	// same store (zero: none, or not known), as PodStatus.Prev. Since
	// version 8.
	Prev uint64 `cbor:"7,keyasint,omitempty"`
}

// DeviceTwin is the reported side of one property of a device.
type DeviceTwin struct {
	Name  string `cbor:"1,keyasint"`
	Value string `cbor:"2,keyasint"`
	// Timestamp of the value, in milliseconds since the epoch.
	Timestamp int64 `cbor:"3,keyasint,omitempty"`
	// ObservedDesired is the desired value the edge held for the property
	// when the value was reported; nil if it held none.
	ObservedDesired *string `cbor:"4,keyasint,omitempty"`
}

// CertRequest asks the hub for a new client certificate for the node of the
// session, for the public key of the enclosed certificate request (PEM).
// Sent by the edge, without a Seq, when its certificate has used 70-90% of
// its life, only to a hub that welcomed it with version 2 or more. The hub
// answers CertIssued, or Error (not fatal) if it refuses; the edge asks again
// later if neither came.
type CertRequest struct {
	CSR []byte `cbor:"1,keyasint"`
}

// CertIssued carries a client certificate (PEM) issued for the node of the
// session, for the key of its last CertRequest. Sent by the hub, without a
// Seq. The edge uses it from its next connection on.
type CertIssued struct {
	Certificate []byte `cbor:"1,keyasint"`
}

// AccessReviewSince is the protocol version that carries AccessReview and
// AccessReviewResult.
const AccessReviewSince = 6

// MaxAccessChecks is the most checks one AccessReview carries.
const MaxAccessChecks = 64

// AccessReview asks the hub whether the service account of a pod bound to
// the node of the session may do each of Checks, as the cluster's
// authorizers answer a SubjectAccessReview for it. Sent by the edge, without
// a Seq, one at a time (the next after the answer, or after a timeout), only
// to a hub that welcomed it with version 6 or more. The hub answers an
// AccessReviewResult with the same ID; it refuses (Error set) a pod that is
// not bound to the node or whose UID or service account differ, as the
// node authorizer refuses a node the service accounts of other nodes' pods.
type AccessReview struct {
	ID             uint64        `cbor:"1,keyasint"`
	Namespace      string        `cbor:"2,keyasint"`
	Pod            string        `cbor:"3,keyasint"`
	PodUID         string        `cbor:"4,keyasint"`
	ServiceAccount string        `cbor:"5,keyasint"`
	Checks         []AccessCheck `cbor:"6,keyasint"`
}

// AccessCheck is one question of an AccessReview: may the service account
// do Verb on Resource (of Group) in Namespace ("" for all namespaces or a
// cluster-scoped resource), on the object Name ("" for any).
type AccessCheck struct {
	Verb      string `cbor:"1,keyasint"`
	Group     string `cbor:"2,keyasint,omitempty"`
	Resource  string `cbor:"3,keyasint"`
	Namespace string `cbor:"4,keyasint,omitempty"`
	Name      string `cbor:"5,keyasint,omitempty"`
}

// AccessReviewResult answers the AccessReview of the same ID: Allowed holds
// one answer per check, in order, or Error says why the review was refused
// (then Allowed is empty). Sent by the hub, without a Seq.
type AccessReviewResult struct {
	ID      uint64 `cbor:"1,keyasint"`
	Allowed []bool `cbor:"2,keyasint,omitempty"`
	Error   string `cbor:"3,keyasint,omitempty"`
}

// ErrorCode classifies an Error.
type ErrorCode uint16

// Error codes. The numbers are on the wire: never reuse one.
const (
	// ErrorBadFrame: the frame could not be decoded or failed validation.
	ErrorBadFrame ErrorCode = 1
	// ErrorUnknownMessage: the frame holds no message type the receiver knows.
	ErrorUnknownMessage ErrorCode = 2
	// ErrorVersion: no protocol version both sides speak. Fatal.
	ErrorVersion ErrorCode = 3
	// ErrorUnauthorized: the node may not connect or may not send this. Fatal.
	ErrorUnauthorized ErrorCode = 4
	// ErrorUnexpected: a valid message at the wrong point of the session.
	ErrorUnexpected ErrorCode = 5
	// ErrorTooLarge: a frame over MaxFrameSize, or a Hello whose inventory
	// lists more objects than the hub takes. Fatal.
	ErrorTooLarge ErrorCode = 6
	// ErrorReplaced: a newer session of the same node took over. Fatal.
	ErrorReplaced ErrorCode = 7
	// ErrorShuttingDown: the sender is stopping. Fatal; reconnect later.
	ErrorShuttingDown ErrorCode = 8
	// ErrorRevoked: the node's identity was revoked (its Node deleted or
	// joined again). Fatal; the node must join again with a new token.
	// Since version 2.
	ErrorRevoked ErrorCode = 9
	// ErrorCertificate: a CertRequest was refused. Not fatal. Since version 2.
	ErrorCertificate ErrorCode = 10
)

func (c ErrorCode) String() string {
	switch c {
	case ErrorBadFrame:
		return "BadFrame"
	case ErrorUnknownMessage:
		return "UnknownMessage"
	case ErrorVersion:
		return "Version"
	case ErrorUnauthorized:
		return "Unauthorized"
	case ErrorUnexpected:
		return "Unexpected"
	case ErrorTooLarge:
		return "TooLarge"
	case ErrorReplaced:
		return "Replaced"
	case ErrorShuttingDown:
		return "ShuttingDown"
	case ErrorRevoked:
		return "Revoked"
	case ErrorCertificate:
		return "Certificate"
	}
	return fmt.Sprintf("ErrorCode(%d)", uint16(c))
}

// Error reports a problem with the session or with one frame. Sent by either
// side. After a fatal code the sender closes the session.
type Error struct {
	Code    ErrorCode `cbor:"1,keyasint"`
	Message string    `cbor:"2,keyasint"`
	// Seq is the Seq of the frame the error is about, if it had one.
	Seq uint64 `cbor:"3,keyasint,omitempty"`
}

// Fatal reports whether the session ends after this error.
func (e *Error) Fatal() bool {
	switch e.Code {
	case ErrorBadFrame, ErrorUnknownMessage, ErrorUnexpected, ErrorCertificate:
		return false
	}
	return true
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Duration is a time.Duration on the wire, in milliseconds.
type Duration int64

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) * time.Millisecond }

// DurationOf converts a time.Duration to a Duration.
func DurationOf(d time.Duration) Duration { return Duration(d / time.Millisecond) }
