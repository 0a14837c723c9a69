// Package protocol is the typed, versioned wire protocol between cloudcore and
// edgecore. It holds only types, their validation, the frame codec and the
// protocol Version; it imports nothing else of Tether.
//
// # Transport
//
// One websocket per edge node, opened by the edge over TLS to the cloud hub,
// authenticated by the node's client certificate (issued at join; the node
// name is its common name, system:node:<name>). Since version 2 the hub
// refuses a Hello that names another node than the certificate.
// Every websocket message is a binary message holding exactly one Frame, at
// most MaxFrameSize bytes; both sides refuse larger frames (the reader sets
// its read limit, the writer checks before sending).
//
// # Session
//
//  1. The edge sends Hello: protocol version, node name and its inventory
//     (kind, UID and resourceVersion of every object it holds).
//  2. The hub answers Welcome (negotiated version and timers) or Error, then
//     closes.
//  3. The hub sends the difference between what the node should hold and the
//     inventory: Upsert for objects that are new or changed, Delete for
//     objects that are gone. When nothing changed it sends no object message
//     at all. Then ResyncDone, with the counts, once all of them are acked.
//  4. From then on the hub sends Upsert and Delete as the cluster changes; the
//     edge sends NodeStatus, PodStatus, PodTerminated, MirrorPod,
//     DeviceStatus and Event from its persistent outbox, and Heartbeat on a
//     timer.
//
// # Delivery and ordering
//
// Frames that carry a Seq are acknowledged with Ack by the receiver once the
// message is durable (the edge: after its bbolt commit; the hub: after the
// API server accepted the write). Sequence numbers of the two directions are
// independent. Downstream numbers restart with each session; upstream numbers
// come from the edge's outbox and grow for the life of its store.
//
// Downstream delivery is level-based: the hub keeps, per node, the set of
// objects the node should hold and the version the node last acknowledged,
// and sends whatever differs. A newer version of an object therefore replaces
// an older one that was not sent yet, and an object that is unacknowledged
// after a while is sent again at its then current version. The version of a
// core object is its resourceVersion; that of a DeviceModel or Device is its
// metadata.generation, so that the status the edge itself reports does not
// send the object back down; that of a pod or an EndpointSlice is a hash of
// what the edge holds (a slice is filtered per node). Within one batch the hub sends upserts in the
// order of Kinds (configmaps and secrets, device models, devices, services
// and endpoint slices, then pods:
// what is referred to before what refers to it) and deletes in the reverse
// order. Nothing else about the order of different objects is promised.
//
// Upstream delivery is at-least-once and coalesced per object at the edge: a
// newer status of a pod replaces an older unsent one. The edge sends its
// outbox in Seq order. Handlers must be idempotent.
//
// Since version 8 the edge's reports are ordered across sessions and hub
// replicas: the outbox's Seq grows as long as the edge's store lives, and
// Hello.StoreEpoch, larger for each new store, names the store
// (StatusOrder). A hub writes a node or pod status only if its order is
// newer than the one recorded with the object, so that a replica the edge
// has left cannot write an older status after another replica wrote a
// newer one.
//
// Byte streams (version 3, streams.go) ride the same session for the API
// server's requests to the node's kubelet API: not acknowledged, flow
// controlled per stream by credits, and ended with the session.
//
// The API relay (version 7, relay.go) carries the writes of the edge's pods
// to the API server: APIRequest up, APIResponse down, matched by ID, not
// acknowledged (a request whose session ends is the pod's to retry).
//
// # Encoding
//
// Frames are CBOR (RFC 8949) with integer keys; Kubernetes objects inside
// them are the Kubernetes protobuf encoding of the k8s.io/api type named by
// their Kind. Measured with BenchmarkCodec on a typical Deployment pod (two
// containers, env, a configMap and a projected service-account volume,
// resources, probes, full status), encode plus decode of one Upsert frame,
// on this project's 2-core machine (go1.26, another build running beside it):
//
//	encoding                        bytes   encode+decode   allocs
//	JSON frame, pod as JSON         3,797   87-95 µs        253
//	CBOR frame, pod as protobuf     1,913   24-26 µs        200
//
// CBOR with protobuf is half the size and 3.5 times cheaper than JSON,
// carries byte strings without base64, and keeps Kubernetes objects in the
// encoding the API server itself speaks to kubelets. The figures are
// regenerated with `go test -run '^$' -bench Codec ./protocol`.
package protocol
