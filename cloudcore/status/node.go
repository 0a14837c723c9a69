package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/client-go/kubernetes"

	"github.com/tether-edge/tether/protocol"
)

// EdgeRoleLabel marks the Nodes of edge nodes. RegisterNode sets it; the
// Writer writes nothing for a node whose Node lacks it, and never removes or
// changes it.
const EdgeRoleLabel = "node-role.kubernetes.io/edge"

// RegisterNode creates the Node of a joining edge node, with the labels of
// NodeLabels(name, asked), and returns it. A Node of that name that exists
// and carries EdgeRoleLabel is returned as it is (a join retried); one that
// exists without it is refused with ErrNotEdgeNode: a join never takes over
// a kubelet's node. Labels asked for that the edge may not set are dropped
// (EdgeMaySet tells which).
//
// The Node is created without status: the edge's first NodeStatus writes
// it. Until then the API server's admission keeps the node.kubernetes.io/
// not-ready taint on it.
//
// A Node it creates carries annotations; an existing one is returned
// without them (the caller updates it if it must).
func RegisterNode(ctx context.Context, client kubernetes.Interface, name string, asked, annotations map[string]string) (*corev1.Node, error) {
	if err := protocol.ValidateNodeName(name); err != nil {
		return nil, fmt.Errorf("register node: %w", err)
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: NodeLabels(name, asked), Annotations: annotations}}
	created, err := client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err == nil {
		return created, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("register node %s: %w", name, err)
	}
	cur, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("register node %s: get: %w", name, err)
	}
	if _, ok := cur.Labels[EdgeRoleLabel]; !ok {
		return nil, fmt.Errorf("register node %s: it exists without the %s label: %w", name, EdgeRoleLabel, ErrNotEdgeNode)
	}
	if cur.DeletionTimestamp != nil {
		return nil, fmt.Errorf("register node %s: it is being deleted; join again once it is gone", name)
	}
	return cur, nil
}

// NodeLabels returns the labels of a new edge Node: those of asked that an
// edge may set (EdgeMaySet), kubernetes.io/hostname set to node unless
// asked, and EdgeRoleLabel. The join code creates Nodes with them
// (RegisterNode).
func NodeLabels(node string, asked map[string]string) map[string]string {
	labels, _ := wantedLabels(node, asked, nil)
	labels[EdgeRoleLabel] = ""
	return labels
}

// wantedLabels returns the labels the edge asks for and may set, with the
// kubelet's well-known ones it did not set (hostname, and os and arch from
// status if given), and the keys of asked it may not set, sorted.
func wantedLabels(node string, asked map[string]string, status *corev1.NodeStatus) (labels map[string]string, dropped []string) {
	labels = make(map[string]string, len(asked)+4)
	for k, v := range asked {
		if !EdgeMaySet(k) {
			dropped = append(dropped, k)
			continue
		}
		labels[k] = v
	}
	slices.Sort(dropped)
	setDefault := func(k, v string) {
		if _, ok := labels[k]; !ok && v != "" {
			labels[k] = v
		}
	}
	setDefault(corev1.LabelHostname, node)
	if status != nil {
		setDefault(corev1.LabelOSStable, status.NodeInfo.OperatingSystem)
		setDefault(corev1.LabelArchStable, status.NodeInfo.Architecture)
	}
	return labels, dropped
}

// writeNodeStatus adds the labels the edge asks for and the Node lacks,
// then patches the Node's status. cur is the Node as cached, an edge node's
// (edgeNode). With an order (o not zero) the status write is fenced
// (fence.go).
func (w *Writer) writeNodeStatus(ctx context.Context, cur *corev1.Node, o protocol.StatusOrder, m *protocol.NodeStatus) error {
	if m == nil || len(m.Status) == 0 {
		return reject(errors.New("node status is empty"))
	}
	status, err := protocol.DecodeNodeStatus(m.Status)
	if err != nil {
		return reject(err)
	}
	fenced := !o.IsZero()
	if fenced {
		// Labels are added only once: a stale report adds none.
		if rec, ok := w.recordedFence(cur.Annotations[FenceAnnotation], "node/"+cur.Name); ok && !rec.Before(o) {
			w.nodeStale(cur.Name, o, rec)
			return nil
		}
	}
	updated, err := w.addNodeLabels(ctx, cur, m.Labels, status)
	if err != nil {
		return err
	}
	if updated != nil {
		cur = updated
	}
	for attempt := 1; ; attempt++ {
		if fenced {
			if rec, ok := w.recordedFence(cur.Annotations[FenceAnnotation], "node/"+cur.Name); ok && !rec.Before(o) {
				w.nodeStale(cur.Name, o, rec)
				return nil
			}
		}
		patch, err := nodeStatusPatch(&cur.Status, status.DeepCopy())
		if err != nil {
			return reject(err)
		}
		changed := string(patch) != "{}"
		if !changed && !fenced {
			w.stats.unchanged.Add(1)
			w.remember(cur.Name, status, o)
			return nil
		}
		var again bool
		if cur, again, err = w.patchNodeStatus(ctx, cur, patch, o, attempt); again {
			continue
		}
		if err != nil {
			return err
		}
		if changed {
			w.stats.nodeStatuses.Add(1)
		} else {
			w.stats.fenceOnly.Add(1)
		}
		w.remember(cur.Name, status, o)
		return nil
	}
}

// patchNodeStatus patches cur's status with patch, the try attempt of a
// write. With an order (o not zero) the patch is fenced (fencedPatch); one
// that finds the Node changed since read (its resourceVersion precondition
// failed) before the last try reads it from the API server (the cache may
// lag) and returns it with again set: the caller decides anew.
func (w *Writer) patchNodeStatus(ctx context.Context, cur *corev1.Node, patch []byte, o protocol.StatusOrder, attempt int) (*corev1.Node, bool, error) {
	fenced := !o.IsZero()
	if fenced {
		var err error
		if patch, err = fencedPatch(patch, cur.ResourceVersion, o); err != nil {
			return cur, false, reject(err)
		}
	}
	_, err := w.client.CoreV1().Nodes().Patch(ctx, cur.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if fenced && attempt < fenceAttempts && apierrors.IsConflict(err) {
		w.stats.fenceConflicts.Add(1)
		name := cur.Name
		if cur, err = w.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err != nil {
			return nil, false, fmt.Errorf("get node %s: %w", name, err)
		}
		if _, ok := cur.Labels[EdgeRoleLabel]; !ok {
			return nil, false, refuse(RefusedNotEdgeNode, fmt.Errorf("node %s has no %s label: %w", name, EdgeRoleLabel, ErrNotEdgeNode))
		}
		return cur, true, nil
	}
	if err != nil {
		return cur, false, fmt.Errorf("patch node %s status: %w", cur.Name, err)
	}
	return cur, false, nil
}

// nodeStale counts a node status report dropped as stale: the Node records
// rec, not older than the report's order o.
func (w *Writer) nodeStale(node string, o, rec protocol.StatusOrder) {
	if o == rec {
		w.stats.unchanged.Add(1) // written already: a resend
		return
	}
	w.stats.stale.Add(1)
	w.log.Info("stale node status dropped: a newer report of the node was written", slog.String("node", node),
		slog.String("order", formatFence(o)), slog.String("recorded", formatFence(rec)))
}

// addNodeLabels adds to the Node the labels the edge asks for (with the
// well-known ones of its status) that it may set and the Node does not
// have. It changes no label the Node has, EdgeRoleLabel included, and sets
// none the edge may not set. The patch carries the cached resourceVersion as
// a precondition, so that a label set meanwhile by someone else is not
// overwritten: a conflict is retried once the cache caught up.
//
// It returns the Node as patched, or nil if it added no label.
func (w *Writer) addNodeLabels(ctx context.Context, cur *corev1.Node, asked map[string]string, status *corev1.NodeStatus) (*corev1.Node, error) {
	want, dropped := wantedLabels(cur.Name, asked, status)
	if len(dropped) > 0 {
		w.log.Debug("node labels the edge may not set ignored", slog.String("node", cur.Name), slog.Any("labels", dropped))
	}
	add := map[string]string{}
	for k, v := range want {
		if _, ok := cur.Labels[k]; !ok && k != EdgeRoleLabel {
			add[k] = v
		}
	}
	if len(add) == 0 {
		return nil, nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": cur.ResourceVersion, "labels": add}})
	if err != nil {
		return nil, reject(fmt.Errorf("node labels patch: %w", err))
	}
	n, err := w.client.CoreV1().Nodes().Patch(ctx, cur.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return nil, fmt.Errorf("patch node %s labels: %w", cur.Name, err)
	}
	w.stats.nodeLabelPatches.Add(1)
	w.log.Info("node labels added", slog.String("node", cur.Name), slog.Any("labels", slices.Sorted(maps.Keys(add))))
	return n, nil
}

// kubeletLabels are the labels in the Kubernetes namespaces that the
// NodeRestriction admission plugin lets a kubelet set on its Node.
var kubeletLabels = map[string]bool{
	corev1.LabelHostname:                true,
	corev1.LabelOSStable:                true,
	corev1.LabelArchStable:              true,
	"beta.kubernetes.io/os":             true,
	"beta.kubernetes.io/arch":           true,
	corev1.LabelInstanceType:            true,
	corev1.LabelInstanceTypeStable:      true,
	corev1.LabelFailureDomainBetaRegion: true,
	corev1.LabelFailureDomainBetaZone:   true,
	corev1.LabelTopologyRegion:          true,
	corev1.LabelTopologyZone:            true,
}

// EdgeMaySet reports whether an edge node may set label key on its Node. The
// rule is NodeRestriction's for kubelets, so that an edge cannot, say, give
// itself a control-plane role to attract workloads meant for other nodes:
// unprefixed keys and keys outside kubernetes.io and k8s.io may be set, and
// within them only the kubelet's well-known labels and the
// kubelet.kubernetes.io and node.kubernetes.io prefixes, never
// node-restriction.kubernetes.io (nor EdgeRoleLabel).
func EdgeMaySet(key string) bool {
	prefix, _, ok := strings.Cut(key, "/")
	if !ok {
		return true
	}
	in := func(domain string) bool { return prefix == domain || strings.HasSuffix(prefix, "."+domain) }
	switch {
	case in("node-restriction.kubernetes.io"):
		return false
	case !in("kubernetes.io") && !in("k8s.io"):
		return true
	case kubeletLabels[key]:
		return true
	}
	return in("kubelet.kubernetes.io") || in("node.kubernetes.io")
}

// nodeStatusPatch returns the strategic merge patch from old to the status the
// edge reported, the way the kubelet builds its node status patch. Fields the
// edge does not own are kept: conditions of types it did not report (set by
// other agents) and the volumes attached (set by the attach-detach
// controller). reported is modified.
func nodeStatusPatch(old, reported *corev1.NodeStatus) ([]byte, error) {
	for _, c := range old.Conditions {
		if !slices.ContainsFunc(reported.Conditions, func(n corev1.NodeCondition) bool { return n.Type == c.Type }) {
			reported.Conditions = append(reported.Conditions, c)
		}
	}
	reported.VolumesAttached = old.VolumesAttached

	oldJSON, err := json.Marshal(&corev1.Node{Status: *old})
	if err != nil {
		return nil, fmt.Errorf("node status patch: %w", err)
	}
	// Addresses are annotated patchStrategy=merge on type, which is wrong
	// when two share a type: replace the whole list instead, like the
	// kubelet does.
	replaceAddresses := len(old.Addresses) > 0 && !apiequality.Semantic.DeepEqual(old.Addresses, reported.Addresses)
	diff := *reported
	if replaceAddresses {
		diff.Addresses = nil
	}
	newJSON, err := json.Marshal(&corev1.Node{Status: diff})
	if err != nil {
		return nil, fmt.Errorf("node status patch: %w", err)
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(oldJSON, newJSON, corev1.Node{})
	if err != nil {
		return nil, fmt.Errorf("node status patch: %w", err)
	}
	if !replaceAddresses {
		return patch, nil
	}
	var p map[string]any
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, fmt.Errorf("node status patch: %w", err)
	}
	addrs := make([]any, 0, len(reported.Addresses)+1)
	for _, a := range reported.Addresses {
		addrs = append(addrs, a)
	}
	addrs = append(addrs, map[string]string{"$patch": "replace"})
	st, _ := p["status"].(map[string]any)
	if st == nil {
		st = make(map[string]any)
		p["status"] = st
	}
	st["addresses"] = addrs
	patch, err = json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("node status patch: %w", err)
	}
	return patch, nil
}
