package enroll

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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
}

func (r *KubeNodes) Get(ctx context.Context, name string, live bool) (*corev1.Node, error) {
	if !live && r.Lister != nil {
		return r.Lister.Get(name)
	}
	return r.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
}

// Register creates the Node of a joining edge node with its identity, or
// records the new identity on the Node of one that joins again.
func (r *KubeNodes) Register(ctx context.Context, name, id string) error {
	nodes := r.Client.CoreV1().Nodes()
	// The labels of a kubelet's registration that an edge may have (the
	// edge adds the ones it asks for with its first NodeStatus).
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        name,
		Labels:      status.NodeLabels(name, nil),
		Annotations: map[string]string{AnnotationIdentity: id},
	}}
	_, err := nodes.Create(ctx, n, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	// Joining again: only an edge node's identity is replaced (the caller
	// checked; the patch checks again through its precondition).
	cur, err := nodes.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if _, edge := cur.Labels[EdgeRoleLabel]; !edge {
		return fmt.Errorf("node %s is not an edge node", name)
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": cur.ResourceVersion,
		"annotations":     map[string]string{AnnotationIdentity: id},
	}})
	if err != nil {
		return err
	}
	_, err = nodes.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}
