package cloudcore

import (
	"context"
	"fmt"

	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/tether-edge/tether/protocol"
)

// accessReviewer answers the edges' AccessReviews (hub.AccessReviewer) for
// the in-cluster API at the edge: one SubjectAccessReview per check, for the
// service account of a pod bound to the asking node. As the node authorizer
// lets a kubelet act only for its own pods, a node asks only about the
// service account of a pod bound to it: the pod (from the dispatcher's
// cache) must be on the node, with the UID and service account named.
//
// Cost: a review is at most protocol.MaxAccessChecks SubjectAccessReviews;
// an edge asks one review per service account of its pods per refresh
// (edgecore's metaserver.Config.ReviewRefresh, default 10m), and the hub
// answers one at a time per node, paced by the node's upstream rate.
type accessReviewer struct {
	client kubernetes.Interface
	pods   corelisters.PodLister
}

func (a *accessReviewer) Review(ctx context.Context, node string, r *protocol.AccessReview) ([]bool, error) {
	p, err := a.pods.Pods(r.Namespace).Get(r.Pod)
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", r.Namespace, r.Pod, err)
	}
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	switch {
	case p.Spec.NodeName != node:
		return nil, fmt.Errorf("pod %s/%s is not bound to node %s", r.Namespace, r.Pod, node)
	case string(p.UID) != r.PodUID:
		return nil, fmt.Errorf("pod %s/%s has another UID", r.Namespace, r.Pod)
	case sa != r.ServiceAccount:
		return nil, fmt.Errorf("pod %s/%s runs as service account %q, not %q", r.Namespace, r.Pod, sa, r.ServiceAccount)
	}
	user := "system:serviceaccount:" + r.Namespace + ":" + sa
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + r.Namespace, "system:authenticated"}
	out := make([]bool, len(r.Checks))
	for i, c := range r.Checks {
		sar, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: groups,
				ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: c.Verb, Group: c.Group,
					Resource: c.Resource, Namespace: c.Namespace, Name: c.Name}}}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("subject access review: %w", err)
		}
		out[i] = sar.Status.Allowed
	}
	return out, nil
}
