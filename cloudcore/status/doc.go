// Package status is the cloud hub's upstream writer: it writes what edge nodes
// report (node status, pod status, pod terminations, events, heartbeats,
// mirror pods and device status) to the Kubernetes API server.
//
// The hub hands every decoded message to a Writer and goes on at once. The
// Writer keeps at most one pending message per object (a Node's status, a
// pod's status, a pod's termination, a Node's Lease, a Device's status): a
// newer message replaces an older one that was not written yet, and the
// callbacks of both run after the one write. Keys wait in a client-go
// workqueue, which a fixed number of workers drain, so that a thousand nodes
// reporting at once cost at most Config.Workers requests in flight, on top of
// the client's own QPS limit. A key is never written by two workers at once,
// so the messages of one object are written in the order they came, newest
// last. Failed writes that may succeed later (timeouts, 429, 5xx, and 403,
// which RBAC still propagating or a webhook that is down answers for a
// while) are retried with exponential back-off and given up after
// Config.MaxRetries; the edge sends a message given up again later. Only
// refusals that cannot change (Invalid, BadRequest, an object that is gone
// or not the node's) reject a message for good. When a node's session on
// this replica ends (SessionEnded), its messages not written yet are given
// up and a write in progress is not retried: the edge sends them again to
// the replica it reaches next, and one written here later could land after
// a newer one written there and take the object back. SessionEnded cannot
// help while this replica has not noticed the session is gone (a half-open
// connection): pod and node statuses with an order (an edge of protocol 8
// or newer) are fenced instead (fence.go): each write records its order in
// FenceAnnotation with a resourceVersion precondition, and a report not
// newer than the recorded one is dropped as stale.
//
// Writes follow the kubelet where it has a rule: strategic-merge patches of
// status computed as a two-way merge from the status in the informer cache,
// the pod UID as a precondition, deletions with a zero grace period, Leases in
// kube-node-lease owned by their Node. Like the kubelet, which compares
// the Node with its own status at every sync, the Writer writes a connected
// node's last reported conditions back when the node lifecycle controller
// has marked them Unknown (its Lease lapsed while the hub was away or its
// writes lagged): at the node's next heartbeat, fenced with the report's
// order (repair.go), instead of leaving the Node NotReady until the edge's
// next unchanged report, up to five minutes later.
//
// The Writer is the node authorizer and NodeRestriction of edge nodes: the
// node a message comes with is the authenticated identity of its session,
// and it writes only its own objects. Only an edge node writes anything: its
// Node must exist and carry EdgeRoleLabel (checked in the informer cache,
// and in the API server on a cache miss), or every message, heartbeats
// included, is refused; so a kubelet's node name gets no pod status, no
// Lease, nothing. The Writer creates no Node: RegisterNode does at join,
// with the labels of NodeLabels, and a deleted Node (which revokes the node)
// is not brought back by a late NodeStatus. NodeStatus adds only labels the
// edge may set (EdgeMaySet, NodeRestriction's rule) that the Node lacks. An
// edge node writes its own Node and Lease, the status of pods bound to it,
// the status of Devices whose spec.nodeName is it, events about those three
// and mirror pods of the shapes NodeRestriction allows a kubelet
// (checkMirrorPod: no secrets, configmaps, service account, claims,
// projected or ephemeral volumes, only its own node, an allowed namespace).
// Each refusal is answered with ErrRejected and a reason the edge can read,
// logged and counted by reason (Refusal, Stats.Refused), and writes nothing.
//
// A Device's status is replaced whole by a JSON merge patch of the status
// subresource, with the resourceVersion it was compared with as the
// precondition (a UID in the patch would be ignored for a custom resource's
// status), and not written at all when it would not change. The Writer
// remembers its last write of each Device until the informer cache shows
// it, so a report equal to a stale cached status is still written.
package status
