#!/usr/bin/env bash
# Writes go.mod for the tools module that builds the Kubernetes control plane binaries.
# k8s.io/kubernetes replaces its staging modules with local paths, so each one is
# replaced here with the published v0.Y.Z that matches the pinned v1.Y.Z.
set -euo pipefail
KUBE_VERSION=${KUBE_VERSION:-v1.31.4}
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"
cd "$(dirname "$0")"
{
  echo "module github.com/tether-edge/tether/tools/kube"
  echo
  echo "go 1.23"
  echo
  echo "require k8s.io/kubernetes ${KUBE_VERSION}"
  echo
  echo "replace ("
  for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
    cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
    cri-client csi-translation-lib dynamic-resource-allocation endpointslice kms kube-aggregator \
    kube-controller-manager kube-proxy kube-scheduler kubectl kubelet legacy-cloud-providers metrics \
    mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller; do
    echo "	k8s.io/$m => k8s.io/$m ${STAGING_VERSION}"
  done
  echo ")"
} > go.mod
