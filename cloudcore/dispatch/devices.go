package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/protocol"
)

const indexModel = "model"

// NewDevicesClient returns a REST client of the devices.tether.io/v1beta1
// group that decodes into the typed objects of package devices/api. The
// dispatcher lists and watches through it; the status writer writes Device
// status through it.
func NewDevicesClient(cfg *rest.Config) (rest.Interface, error) {
	scheme := runtime.NewScheme()
	if err := api.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("devices client: %w", err)
	}
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &api.SchemeGroupVersion
	c.APIPath = "/apis"
	c.ContentType = runtime.ContentTypeJSON
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("devices client: %w", err)
	}
	return rc, nil
}

// deviceSource is where the device informers read from: list-watchers of
// Devices and DeviceModels in all namespaces, and a probe that tells whether
// the API server serves both resources (their CRDs are installed and the
// client may list them).
type deviceSource struct {
	devices, models cache.ListerWatcher
	// probe returns nil if both resources can be listed, an error for which
	// errNotServed holds if they are missing or forbidden, or another error.
	probe func(ctx context.Context) error
}

// errNotServed marks a probe failure that waiting may cure: the CRDs are
// not installed yet, or the client may not list the resources.
var errNotServed = errors.New("devices.tether.io is not served")

// restDeviceSource lists and watches through c, a client of NewDevicesClient.
func restDeviceSource(c rest.Interface) deviceSource {
	return deviceSource{
		devices: cache.NewListWatchFromClient(c, api.DevicesResource, metav1.NamespaceAll, fields.Everything()),
		models:  cache.NewListWatchFromClient(c, api.DeviceModelsResource, metav1.NamespaceAll, fields.Everything()),
		probe: func(ctx context.Context) error {
			for _, res := range []string{api.DeviceModelsResource, api.DevicesResource} {
				err := c.Get().Resource(res).VersionedParams(&metav1.ListOptions{Limit: 1}, metav1.ParameterCodec).
					Do(ctx).Error()
				switch {
				case apierrors.IsNotFound(err):
					return fmt.Errorf("%w: %s: the CRD is not installed (%w)", errNotServed, res, err)
				case apierrors.IsForbidden(err):
					return fmt.Errorf("%w: %s: cloudcore may not list it (%w)", errNotServed, res, err)
				case err != nil:
					return fmt.Errorf("list %s: %w", res, err)
				}
			}
			return nil
		},
	}
}

// devices holds the informers of Devices and DeviceModels. They run only
// once the API server serves both resources: cloudcore installs the CRDs at
// start unless told not to, and without them it keeps dispatching pods and
// checks again every poll interval.
type devices struct {
	src  deviceSource
	poll time.Duration
	log  *slog.Logger

	devInf   cache.SharedIndexInformer
	modelInf cache.SharedIndexInformer

	// probed is set once Start knows whether the resources are served;
	// servedAtStart is set before it if they are, and Start then waits for
	// the informers.
	probed, servedAtStart atomic.Bool
	// available is set once the informers synced: from then on Desired's
	// devices and models are complete and the hub may delete those a node
	// holds that are not desired.
	available atomic.Bool
	// wg counts the informers' and the poller's goroutines.
	wg sync.WaitGroup
}

func newDevices(src deviceSource, resync, poll time.Duration, log *slog.Logger) (*devices, error) {
	dv := &devices{src: src, poll: poll, log: log}
	dv.devInf = cache.NewSharedIndexInformerWithOptions(src.devices, &api.Device{}, cache.SharedIndexInformerOptions{
		ResyncPeriod: resync,
		Indexers: cache.Indexers{
			cache.NamespaceIndex: cache.MetaNamespaceIndexFunc,
			indexNode:            deviceNodeIndex,
			indexModel:           deviceModelIndex,
		},
	})
	dv.modelInf = cache.NewSharedIndexInformerWithOptions(src.models, &api.DeviceModel{}, cache.SharedIndexInformerOptions{
		ResyncPeriod: resync,
	})
	for res, inf := range map[string]cache.SharedIndexInformer{api.DevicesResource: dv.devInf, api.DeviceModelsResource: dv.modelInf} {
		// Nothing at the edge or in the status writer reads managedFields:
		// do not keep them.
		if err := inf.SetTransform(stripManagedFields); err != nil {
			return nil, fmt.Errorf("device informer transform: %w", err)
		}
		if err := inf.SetWatchErrorHandler(func(_ *cache.Reflector, err error) {
			log.Warn("list or watch failed, retrying", slog.String("resource", res), slog.Any("err", err))
		}); err != nil {
			return nil, fmt.Errorf("device informer error handler: %w", err)
		}
	}
	return dv, nil
}

func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

func deviceNodeIndex(obj any) ([]string, error) {
	d, ok := obj.(*api.Device)
	if !ok || d.Spec.NodeName == "" {
		return nil, nil
	}
	return []string{d.Spec.NodeName}, nil
}

func deviceModelIndex(obj any) ([]string, error) {
	d, ok := obj.(*api.Device)
	if !ok || d.Spec.DeviceModelRef == nil || d.Spec.DeviceModelRef.Name == "" {
		return nil, nil
	}
	return []string{d.Namespace + "/" + d.Spec.DeviceModelRef.Name}, nil
}

// start runs the informers if the resources are served, and waits for their
// caches; otherwise it starts a poller that runs them once they are.
// onAvailable is called once they synced, from whichever goroutine.
func (dv *devices) start(ctx context.Context, onAvailable func()) error {
	err := dv.src.probe(ctx)
	if err == nil {
		dv.servedAtStart.Store(true)
		dv.probed.Store(true)
		dv.run(ctx)
		if !cache.WaitForCacheSync(ctx.Done(), dv.devInf.HasSynced, dv.modelInf.HasSynced) {
			return fmt.Errorf("dispatch: device caches did not sync: %w", ctx.Err())
		}
		dv.available.Store(true)
		onAvailable()
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("dispatch: %w", ctx.Err())
	}
	dv.probed.Store(true)
	dv.log.Warn("devices are not dispatched until devices.tether.io is served; checking again periodically",
		slog.Duration("every", dv.poll), slog.Any("err", err))
	dv.wg.Go(func() {
		t := time.NewTicker(dv.poll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := dv.src.probe(ctx); err != nil {
				if ctx.Err() == nil {
					dv.log.Debug("devices.tether.io still not served", slog.Any("err", err))
				}
				continue
			}
			dv.log.Info("devices.tether.io is served: starting the device informers")
			dv.run(ctx)
			if !cache.WaitForCacheSync(ctx.Done(), dv.devInf.HasSynced, dv.modelInf.HasSynced) {
				return
			}
			dv.available.Store(true)
			onAvailable()
			return
		}
	})
	return nil
}

func (dv *devices) run(ctx context.Context) {
	for _, inf := range []cache.SharedIndexInformer{dv.devInf, dv.modelInf} {
		dv.wg.Go(func() { inf.Run(ctx.Done()) })
	}
}

// ready reports whether the device caches are as ready as Start promised:
// synced if the resources were served at Start, anything otherwise.
func (dv *devices) ready() bool {
	return dv.probed.Load() && (!dv.servedAtStart.Load() || dv.available.Load())
}

func (dv *devices) device(ns, name string) (*api.Device, error) {
	obj, ok, err := dv.devInf.GetIndexer().GetByKey(ns + "/" + name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, apierrors.NewNotFound(api.Resource(api.DevicesResource), name)
	}
	return obj.(*api.Device), nil
}

func (dv *devices) model(ns, name string) (*api.DeviceModel, error) {
	obj, ok, err := dv.modelInf.GetIndexer().GetByKey(ns + "/" + name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, apierrors.NewNotFound(api.Resource(api.DeviceModelsResource), name)
	}
	return obj.(*api.DeviceModel), nil
}

// version is the version of a Device or DeviceModel as the hub and the edge
// see it: its metadata.generation, which the API server bumps on every
// change of the spec but not on status or metadata writes. So the status
// the edge reports, written to the Device, does not send the Device back
// down to the edge.
func version(generation int64) string {
	return strconv.FormatInt(generation, 10)
}

// ErrDevicesNotServed is the error of Device and DeviceModel while the
// device informers do not run (devices.tether.io is not served yet).
var ErrDevicesNotServed = errors.New("dispatch: devices.tether.io is not served yet")

// Device returns the cached Device. The error is NotFound (apierrors) if it
// does not exist, ErrDevicesNotServed if the device caches have not synced.
// The caller must not modify the Device.
func (d *Dispatcher) Device(namespace, name string) (*api.Device, error) {
	if !d.dev.available.Load() {
		return nil, ErrDevicesNotServed
	}
	return d.dev.device(namespace, name)
}

// DeviceModel returns the cached DeviceModel, with the errors of Device.
func (d *Dispatcher) DeviceModel(namespace, name string) (*api.DeviceModel, error) {
	if !d.dev.available.Load() {
		return nil, ErrDevicesNotServed
	}
	return d.dev.model(namespace, name)
}

// deviceChanged tells the node of a Device about it. Status-only updates
// (the same generation) are not news to the node.
func (d *Dispatcher) deviceChanged(old, obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	dev, ok := obj.(*api.Device)
	if !ok {
		return
	}
	if o, ok := old.(*api.Device); ok {
		if o.ResourceVersion != dev.ResourceVersion && o.Generation == dev.Generation &&
			o.Spec.NodeName == dev.Spec.NodeName && modelName(o) == modelName(dev) {
			return
		}
		if o.Spec.NodeName != dev.Spec.NodeName && o.Spec.NodeName != "" {
			// Moved: the old node must drop it.
			d.notifier.NodeChanged(o.Spec.NodeName)
		}
	}
	if dev.Spec.NodeName != "" {
		d.notifier.NodeChanged(dev.Spec.NodeName)
	}
}

// modelChanged tells every node with a Device of the model.
func (d *Dispatcher) modelChanged(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, ok := obj.(*api.DeviceModel)
	if !ok {
		return
	}
	users, err := d.dev.devInf.GetIndexer().ByIndex(indexModel, m.Namespace+"/"+m.Name)
	if err != nil {
		d.log.Error("devices by model", slog.Any("err", err))
		return
	}
	var seen map[string]bool
	for _, u := range users {
		node := u.(*api.Device).Spec.NodeName
		if node == "" || seen[node] {
			continue
		}
		if seen == nil {
			seen = map[string]bool{}
		}
		seen[node] = true
		d.notifier.NodeChanged(node)
	}
}

// devicesAvailable tells every edge node to reconcile once the device
// caches synced after Start: nodes may hold devices deleted meanwhile.
func (d *Dispatcher) devicesAvailable() {
	nodes, err := d.nodes.List(labels.Everything())
	if err != nil {
		d.log.Error("list nodes", slog.Any("err", err))
		return
	}
	for _, n := range nodes {
		if _, ok := n.Labels[EdgeRoleLabel]; ok {
			d.notifier.NodeChanged(n.Name)
		}
	}
}

func modelName(dev *api.Device) string {
	if dev.Spec.DeviceModelRef == nil {
		return ""
	}
	return dev.Spec.DeviceModelRef.Name
}

// desiredDevices appends the DeviceModels and then the Devices of node to
// dst. A Device whose model does not exist (yet) is listed anyway: the edge
// holds it until its model arrives, and the model's creation notifies the
// node.
func (d *Dispatcher) desiredDevices(node string, dst []protocol.Object) []protocol.Object {
	objs, err := d.dev.devInf.GetIndexer().ByIndex(indexNode, node)
	if err != nil {
		d.log.Error("devices by node", slog.String("node", node), slog.Any("err", err))
		return dst
	}
	if len(objs) == 0 {
		return dst
	}
	first := len(dst)
	for _, o := range objs {
		dev := o.(*api.Device)
		name := modelName(dev)
		if name == "" {
			continue
		}
		dup := false
		for i := first; i < len(dst); i++ {
			if dst[i].Namespace == dev.Namespace && dst[i].Name == name {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		if m, err := d.dev.model(dev.Namespace, name); err == nil {
			dst = append(dst, protocol.Object{Kind: protocol.KindDeviceModel, UID: string(m.UID),
				Namespace: m.Namespace, Name: m.Name, ResourceVersion: version(m.Generation)})
		}
	}
	for _, o := range objs {
		dev := o.(*api.Device)
		dst = append(dst, protocol.Object{Kind: protocol.KindDevice, UID: string(dev.UID),
			Namespace: dev.Namespace, Name: dev.Name, ResourceVersion: version(dev.Generation)})
	}
	return dst
}

// encodeDevice returns the UID, version and JSON (apiVersion and kind set) of
// the cached Device or DeviceModel o names.
func (d *Dispatcher) encodeDevice(o *protocol.Object) (uid, rv string, data []byte, err error) {
	switch o.Kind {
	case protocol.KindDevice:
		dev, err := d.dev.device(o.Namespace, o.Name)
		if err != nil {
			return "", "", nil, err
		}
		c := *dev // shallow: only TypeMeta is set on the copy
		c.TypeMeta = metav1.TypeMeta{APIVersion: api.SchemeGroupVersion.String(), Kind: api.DeviceKind}
		data, err = json.Marshal(&c)
		return string(dev.UID), version(dev.Generation), data, err
	case protocol.KindDeviceModel:
		m, err := d.dev.model(o.Namespace, o.Name)
		if err != nil {
			return "", "", nil, err
		}
		c := *m
		c.TypeMeta = metav1.TypeMeta{APIVersion: api.SchemeGroupVersion.String(), Kind: api.DeviceModelKind}
		data, err = json.Marshal(&c)
		return string(m.UID), version(m.Generation), data, err
	}
	return "", "", nil, fmt.Errorf("encode: unknown kind %d", o.Kind)
}
