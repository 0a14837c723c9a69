// Package api holds the device resources of group devices.tether.io, version
// v1beta1: DeviceModel (what a kind of device offers: typed properties) and
// Device (one device: its model, the edge node it is attached to, how to
// reach it, the desired values of its properties, and in its status the
// values the device reported).
//
// The shape is that of KubeEdge's devices.kubeedge.io/v1beta1, field for
// field and with the same JSON names, so a user's KubeEdge device YAML
// carries over with only apiVersion changed. Fields KubeEdge has and Tether
// does not yet use (methods, pushMethod) are not declared: the API server
// prunes them.
//
// The CustomResourceDefinitions are in manifests/crds (package crds embeds
// them). Their OpenAPI schema refuses what ValidateDeviceModel and
// ValidateDevice refuse, so the API server rejects a bad spec at kubectl
// apply, with a message naming the field, and the edge, which reuses these
// helpers (ModelProperty.ValidateValue on every twin update), applies the
// same rules. Tests in manifests/crds check that the schema and these types
// agree field for field and limit for limit; crd_integration_test.go
// (build tag integration) applies the CRDs to a real API server.
//
// The package imports nothing of Tether's and only apimachinery of
// Kubernetes, so both cloudcore and edgecore can use it.
package api
