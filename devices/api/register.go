package api

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of the device resources.
const GroupName = "devices.tether.io"

// Version is the API version of the types in this package.
const Version = "v1beta1"

// SchemeGroupVersion is the group and version of the types in this package.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: Version}

// The resources (plural names in URLs) and kinds.
const (
	DeviceModelsResource = "devicemodels"
	DevicesResource      = "devices"
	DeviceModelKind      = "DeviceModel"
	DeviceKind           = "Device"
)

// Resource returns the GroupResource of a resource of this group, for
// apierrors and REST mappers.
func Resource(resource string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(resource).GroupResource()
}

var (
	// SchemeBuilder registers the types with a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme registers DeviceModel, Device, their lists and the
	// metav1 options types under SchemeGroupVersion.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(SchemeGroupVersion,
		&DeviceModel{}, &DeviceModelList{},
		&Device{}, &DeviceList{},
	)
	metav1.AddToGroupVersion(scheme, SchemeGroupVersion)
	return nil
}
