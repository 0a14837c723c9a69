package enroll

import (
	"context"
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/tether-edge/tether/cloudcore/status"
)

// KubeNodes is Nodes over the API server and, if Lister is set, a Node
// cache.
type KubeNodes struct {
	Client kubernetes.Interface
	Lister corelisters.NodeLister
	// Labels are put on every Node registered, as an edge's asked-for
	// labels are (status.NodeLabels): the simulator marks its runs' Nodes.
	Labels map[string]string
}

func (r *KubeNodes) Get(ctx context.Context, name string, live bool) (*corev1.Node, error) {
	if !live && r.Lister != nil {
		return r.Lister.Get(name)
	}
	return r.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
}

// Register creates the Node of a joining edge node with its identity
// (status.RegisterNode, which refuses a kubelet's Node), or records the new
// identity, and Labels, on the Node of one that joins again.
func (r *KubeNodes) Register(ctx context.Context, name, id string) error {
	n, err := status.RegisterNode(ctx, r.Client, name, r.Labels, map[string]string{AnnotationIdentity: id})
	if err != nil {
		return err
	}
	if n.Annotations[AnnotationIdentity] == id {
		return nil // created with it
	}
	labels := map[string]string{}
	for k, v := range r.Labels {
		if status.EdgeMaySet(k) {
			labels[k] = v
		}
	}
	meta := map[string]any{"resourceVersion": n.ResourceVersion, "annotations": map[string]string{AnnotationIdentity: id}}
	if len(labels) > 0 {
		meta["labels"] = labels
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return err
	}
	_, err = r.Client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}
