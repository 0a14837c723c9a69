package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/tether-edge/tether/protocol"
)

// EdgeRoleLabel marks the Nodes of edge nodes. The Writer sets it on the
// Nodes it creates and writes the status of no Node without it.
const EdgeRoleLabel = "node-role.kubernetes.io/edge"

// writeNodeStatus creates the Node if it is missing, then patches its status.
func (w *Writer) writeNodeStatus(ctx context.Context, node string, m *protocol.NodeStatus) error {
	if m == nil || len(m.Status) == 0 {
		return reject(errors.New("node status is empty"))
	}
	status, err := protocol.DecodeNodeStatus(m.Status)
	if err != nil {
		return reject(err)
	}
	cur, err := w.lister.Node(node)
	if apierrors.IsNotFound(err) {
		cur, err = w.createNode(ctx, node, m.Labels, status)
	}
	if err != nil {
		return fmt.Errorf("node %s: %w", node, err)
	}
	if _, ok := cur.Labels[EdgeRoleLabel]; !ok {
		return reject(fmt.Errorf("node %s has no %s label: not an edge node", node, EdgeRoleLabel))
	}
	patch, err := nodeStatusPatch(&cur.Status, status)
	if err != nil {
		return reject(err)
	}
	if string(patch) == "{}" {
		w.stats.unchanged.Add(1)
		return nil
	}
	_, err = w.client.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return fmt.Errorf("patch node %s status: %w", node, err)
	}
	w.stats.nodeStatuses.Add(1)
	return nil
}

// createNode registers the node like the kubelet does, status included, and
// returns the Node as stored. A Node that exists already is returned as is.
func (w *Writer) createNode(ctx context.Context, node string, asked map[string]string, status *corev1.NodeStatus) (*corev1.Node, error) {
	labels, dropped := nodeLabels(node, asked, status)
	if len(dropped) > 0 {
		w.log.Warn("node labels dropped", slog.String("node", node), slog.Any("labels", dropped))
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: labels}, Status: *status}
	created, err := w.client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// The lister has not seen it yet.
		created, err = w.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("get: %w", err)
		}
		return created, nil
	}
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	w.stats.nodeCreates.Add(1)
	w.log.Info("node registered", slog.String("node", node), slog.String("uid", string(created.UID)))
	return created, nil
}

// nodeLabels returns the labels of a new Node: those the edge asked for and
// may set, the kubelet's well-known ones it did not set (hostname, os, arch)
// and EdgeRoleLabel. It also returns the keys it dropped.
func nodeLabels(node string, asked map[string]string, status *corev1.NodeStatus) (labels map[string]string, dropped []string) {
	labels = make(map[string]string, len(asked)+4)
	for k, v := range asked {
		if !edgeMaySet(k) {
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
	setDefault(corev1.LabelOSStable, status.NodeInfo.OperatingSystem)
	setDefault(corev1.LabelArchStable, status.NodeInfo.Architecture)
	labels[EdgeRoleLabel] = ""
	return labels, dropped
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

// edgeMaySet reports whether an edge node may set label key on its Node. The
// rule is NodeRestriction's for kubelets, so that an edge cannot, say, give
// itself a control-plane role to attract workloads meant for other nodes.
func edgeMaySet(key string) bool {
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
