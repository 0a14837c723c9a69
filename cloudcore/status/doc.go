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
// last. Failed writes that may succeed later are retried with exponential
// back-off and given up after Config.MaxRetries.
//
// Writes follow the kubelet where it has a rule: strategic-merge patches of
// status computed as a two-way merge from the status in the informer cache,
// the pod UID as a precondition, deletions with a zero grace period, Leases in
// kube-node-lease owned by their Node. A node writes only its own objects: its
// own Node, pods bound to it, events about those, Devices whose
// spec.nodeName is the node.
//
// A Device's status is replaced whole by a JSON merge patch of the status
// subresource, with the resourceVersion it was compared with as the
// precondition (a UID in the patch would be ignored for a custom resource's
// status), and not written at all when it would not change. The Writer
// remembers its last write of each Device until the informer cache shows
// it, so a report equal to a stale cached status is still written.
package status
