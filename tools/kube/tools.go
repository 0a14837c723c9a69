//go:build tools

// Package kube pins the Kubernetes control plane binaries that Tether's demo
// and integration tests run against. It is a separate module so that the
// main go.mod does not carry k8s.io/kubernetes.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
