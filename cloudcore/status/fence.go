package status

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/tether-edge/tether/protocol"
)

// The fence keeps a status from going back when two replicas write the
// same node's reports: replica A holds the node's session, the link dies
// without A noticing (a half-open connection, a partition), the edge
// reconnects to replica B and reports newer statuses, which B writes; A
// still holds an older report of the node, queued or waiting for a retry,
// and would write it after B's until it notices the session ended
// (SessionEnded; up to the hub's SessionTimeout).
//
// Every report of an edge of protocol version 8 or newer comes with its
// order (protocol.StatusOrder: the epoch of the edge's store and the Seq its
// outbox gave the report; a newer report of an object always has a larger
// one). The writer records the order of the report that last wrote a pod's
// or a Node's status in the object itself, in FenceAnnotation (a Device's
// in its status.reportOrder, as the API server keeps a custom resource's
// metadata on a status write), in the same patch as the status, with the
// resourceVersion it read as a precondition: the check "this report is newer than the recorded one" and the write are
// one compare-and-swap. A report whose order is not newer is dropped as
// stale (Stats.Stale; acknowledged to the edge, which has sent a newer one);
// on a conflict (the object changed since it was read: a newer report
// written by another replica, or any other write such as a label or another
// controller's condition) the writer reads the object again from the API
// server, not the cache, which may lag, and decides anew, at most
// fenceAttempts times before it retries later like any failed write.
//
// A report whose status is the one the object has already but whose order
// is newer still writes the annotation (Stats.FenceOnly): otherwise an
// older, different report of a replica left behind would find the older
// order recorded and be written. Unless the recorded report is the edge's
// previous one of the same pod (PodStatus.Prev, same epoch): then no report
// lies between the two, and the write is spared. That is the case of the
// statuses the edge reports again after every reconnect, which would
// otherwise cost a write per pod at each one.
//
// Who can move the fence: an edge only on its own pods and Node (ownPod and
// edgeNode are checked first), so a huge Seq from an edge blocks only its
// own later reports. A user who may patch a pod (or a Node) may edit the
// annotation: a value larger than the edge's orders freezes the status the
// edge reports for that object (each report is dropped as stale) until the
// annotation is removed or lowered; removing it lifts the fence until the
// next write records it again. That right already lets the user delete the
// pod or relabel it out of its Services; it gives no way to write a status.
// A value that does not parse (malformed, or longer than maxFenceLen) is
// taken as no fence, and the next write replaces it: a bad annotation never
// wedges the writer.

// FenceAnnotation records, on a pod or a Node, the order of the edge's
// report that last wrote its status: "<store epoch>:<seq>", in decimal.
const FenceAnnotation = "tether.io/status-seq"

// fenceAttempts bounds the reads and patches of one fenced write when the
// object keeps changing under it.
const fenceAttempts = 4

// maxFenceLen is the longest FenceAnnotation value parsed: two 20-digit
// numbers and the colon.
const maxFenceLen = 41

// formatFence returns the FenceAnnotation value of o.
func formatFence(o protocol.StatusOrder) string {
	return strconv.FormatUint(o.Epoch, 10) + ":" + strconv.FormatUint(o.Seq, 10)
}

// parseFence parses a FenceAnnotation value.
func parseFence(v string) (protocol.StatusOrder, error) {
	if len(v) > maxFenceLen {
		return protocol.StatusOrder{}, fmt.Errorf("%d bytes, more than %d", len(v), maxFenceLen)
	}
	e, s, ok := strings.Cut(v, ":")
	if !ok {
		return protocol.StatusOrder{}, fmt.Errorf("%q has no colon", v)
	}
	epoch, err := strconv.ParseUint(e, 10, 64)
	if err != nil {
		return protocol.StatusOrder{}, fmt.Errorf("epoch: %w", err)
	}
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return protocol.StatusOrder{}, fmt.Errorf("seq: %w", err)
	}
	return protocol.StatusOrder{Epoch: epoch, Seq: seq}, nil
}

// recordedFence returns the order v records (FenceAnnotation's value, or a
// Device's status.reportOrder); ok is false if there is none (v empty) or
// it does not parse (taken as none, logged).
func (w *Writer) recordedFence(v string, object string) (o protocol.StatusOrder, ok bool) {
	if v == "" {
		return o, false
	}
	o, err := parseFence(v)
	if err != nil {
		w.log.Info("status fence annotation does not parse: taken as none, the next write replaces it",
			slog.String("object", object), slog.Any("error", err))
		return protocol.StatusOrder{}, false
	}
	return o, true
}

// fencedPatch adds to a strategic merge patch the resourceVersion
// precondition rv and FenceAnnotation set to o.
func fencedPatch(patch []byte, rv string, o protocol.StatusOrder) ([]byte, error) {
	var p map[string]any
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, fmt.Errorf("fenced patch: %w", err)
	}
	meta, _ := p["metadata"].(map[string]any)
	if meta == nil {
		meta = map[string]any{}
		p["metadata"] = meta
	}
	meta["resourceVersion"] = rv
	meta["annotations"] = map[string]string{FenceAnnotation: formatFence(o)}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("fenced patch: %w", err)
	}
	return b, nil
}
