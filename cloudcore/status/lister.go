package status

import (
	corev1 "k8s.io/api/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// Lister is where the Writer reads the current objects it diffs against and
// checks ownership with. Both methods return an error for which
// apierrors.IsNotFound is true when the object does not exist. The Writer
// does not modify the objects returned.
type Lister interface {
	Pod(namespace, name string) (*corev1.Pod, error)
	Node(name string) (*corev1.Node, error)
}

// InformerLister is a Lister reading informer caches.
func InformerLister(pods corelisters.PodLister, nodes corelisters.NodeLister) Lister {
	return informerLister{pods: pods, nodes: nodes}
}

type informerLister struct {
	pods  corelisters.PodLister
	nodes corelisters.NodeLister
}

func (l informerLister) Pod(namespace, name string) (*corev1.Pod, error) {
	return l.pods.Pods(namespace).Get(name)
}

func (l informerLister) Node(name string) (*corev1.Node, error) {
	return l.nodes.Get(name)
}
