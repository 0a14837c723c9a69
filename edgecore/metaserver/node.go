package metaserver

import (
	"crypto/sha1"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// EdgeRoleLabel marks the Nodes of edge nodes (the cloud sets it on the
// Nodes it registers; see cloudcore/status).
const EdgeRoleLabel = "node-role.kubernetes.io/edge"

// nodeUID is a stable UID for the node's Node: the edge does not know the
// UID the API server gave it.
func nodeUID(name string) types.UID {
	h := sha1.Sum([]byte("tether.io/node/" + name))
	h[6] = h[6]&0x0f | 0x50 // a version 5 (name-based) UUID
	h[8] = h[8]&0x3f | 0x80
	return types.UID(fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16]))
}

// buildNode returns the node's Node as the edge describes itself: the labels
// it asks for with the kubelet's defaults and the edge role, and its status
// now. A condition that did not change keeps its transition time from prev.
func buildNode(name string, asked map[string]string, status *corev1.NodeStatus, prev *corev1.Node, now time.Time) *corev1.Node {
	labels := make(map[string]string, len(asked)+4)
	for k, v := range asked {
		labels[k] = v
	}
	setDefault := func(k, v string) {
		if _, ok := labels[k]; !ok && v != "" {
			labels[k] = v
		}
	}
	setDefault(corev1.LabelHostname, name)
	setDefault(corev1.LabelOSStable, status.NodeInfo.OperatingSystem)
	setDefault(corev1.LabelArchStable, status.NodeInfo.Architecture)
	labels[EdgeRoleLabel] = ""
	created := metav1.NewTime(now.Truncate(time.Second))
	if prev != nil {
		created = prev.CreationTimestamp
		for i, c := range status.Conditions {
			for _, p := range prev.Status.Conditions {
				if p.Type == c.Type && p.Status == c.Status {
					status.Conditions[i].LastTransitionTime = p.LastTransitionTime
				}
			}
		}
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: nodeUID(name), Labels: labels, CreationTimestamp: created},
		Status:     *status,
	}
}
