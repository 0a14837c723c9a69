package status

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"

	"github.com/tether-edge/tether/devices/api"
)

// Lister is where the Writer reads the current objects it diffs against and
// checks ownership with. Every method returns an error for which
// apierrors.IsNotFound is true when the object does not exist. The Writer
// does not modify the objects returned.
type Lister interface {
	Pod(namespace, name string) (*corev1.Pod, error)
	Node(name string) (*corev1.Node, error)
	DeviceLister
}

// DeviceLister reads Devices and DeviceModels.
type DeviceLister interface {
	Device(namespace, name string) (*api.Device, error)
	DeviceModel(namespace, name string) (*api.DeviceModel, error)
}

// InformerLister is a Lister reading informer caches.
func InformerLister(pods corelisters.PodLister, nodes corelisters.NodeLister, devices DeviceLister) Lister {
	return informerLister{pods: pods, nodes: nodes, DeviceLister: devices}
}

type informerLister struct {
	pods  corelisters.PodLister
	nodes corelisters.NodeLister
	DeviceLister
}

func (l informerLister) Pod(namespace, name string) (*corev1.Pod, error) {
	return l.pods.Pods(namespace).Get(name)
}

func (l informerLister) Node(name string) (*corev1.Node, error) {
	return l.nodes.Get(name)
}

// DeviceClient writes the status subresource of Devices.
type DeviceClient interface {
	// PatchDeviceStatus applies a JSON merge patch to the status
	// subresource of the Device and returns the Device as written.
	PatchDeviceStatus(ctx context.Context, namespace, name string, patch []byte) (*api.Device, error)
	// GetDevice reads the Device from the API server (after a conflict).
	GetDevice(ctx context.Context, namespace, name string) (*api.Device, error)
}

// RESTDeviceClient is a DeviceClient writing through c, a REST client of the
// devices.tether.io/v1beta1 group that decodes into package devices/api
// (dispatch.NewDevicesClient).
func RESTDeviceClient(c rest.Interface) DeviceClient { return restDevices{c} }

type restDevices struct{ c rest.Interface }

func (r restDevices) PatchDeviceStatus(ctx context.Context, namespace, name string, patch []byte) (*api.Device, error) {
	dev := new(api.Device)
	err := r.c.Patch(types.MergePatchType).Namespace(namespace).Resource(api.DevicesResource).Name(name).
		SubResource("status").Body(patch).Do(ctx).Into(dev)
	if err != nil {
		return nil, err
	}
	return dev, nil
}

func (r restDevices) GetDevice(ctx context.Context, namespace, name string) (*api.Device, error) {
	dev := new(api.Device)
	if err := r.c.Get().Namespace(namespace).Resource(api.DevicesResource).Name(name).Do(ctx).Into(dev); err != nil {
		return nil, err
	}
	return dev, nil
}
