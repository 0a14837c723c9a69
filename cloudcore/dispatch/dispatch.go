// Package dispatch decides which Kubernetes objects each edge node holds: the
// pods bound to it, the configmaps and secrets those pods use, the Devices
// (devices.tether.io) whose spec.nodeName is the node and the DeviceModels
// those devices refer to. It keeps client-go informers and answers the hub's
// questions from their caches; it keeps no per-node state of its own, so it
// cannot drift from the cluster.
//
// Only edge nodes hold anything: a node whose Node is missing or lacks
// EdgeRoleLabel has an empty desired set, whatever is bound to it, so a
// kubelet's node name gets none of its pods, secrets or configmaps. Objects
// that only mirror pods reference are never sent: a mirror pod is the edge's
// own report of a static pod, and must not pull anything down (the node
// authorizer of Kubernetes likewise ignores mirror pods' references).
//
// When an object changes, dispatch tells the hub which nodes are affected
// (Notifier); the hub then compares the node's desired set (Desired) with
// what the node acknowledged and sends the difference. A Device moved to
// another node notifies both nodes: the old one no longer has it in its
// desired set, so the hub deletes it there. A DeviceModel change notifies
// every node with a device of that model.
//
// Services and EndpointSlices of the namespaces the node's pods run in are
// sent too, the slices filtered to the endpoints the node can reach (see
// services.go); only to an edge whose session speaks protocol version 4.
//
// A pod's version, as the hub and the edge compare it, is its sync version
// (podVersions): it changes with what the edge uses, not with the status the
// edge itself reports, so a status write does not send the pod back down.
//
// Devices and DeviceModels travel as JSON (apiVersion and kind set). Their
// version, as the hub and the edge compare it, is metadata.generation, not
// resourceVersion: the API server bumps the generation only when the spec
// changes, so the status the edge reports and cloudcore writes into a Device
// does not send the Device back down.
//
// When the device CRDs are not served (not installed, or not readable by
// cloudcore), pods are dispatched as usual, no device is sent or deleted
// (Serves is false for the device kinds) and dispatch checks again every
// Config.DevicePoll.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/protocol"
)

// EdgeRoleLabel marks the nodes Tether manages.
const EdgeRoleLabel = "node-role.kubernetes.io/edge"

const (
	indexNode = "node"
	indexRefs = "refs"
)

// Notifier is told which nodes' desired sets may have changed.
type Notifier interface {
	NodeChanged(node string)
}

// Dispatcher watches the cluster and computes each edge node's desired set.
type Dispatcher struct {
	log       *slog.Logger
	factory   informers.SharedInformerFactory
	podsInf   cache.SharedIndexInformer
	cmInf     cache.SharedIndexInformer
	secInf    cache.SharedIndexInformer
	nodeInf   cache.SharedIndexInformer
	pods      corelisters.PodLister
	cms       corelisters.ConfigMapLister
	secrets   corelisters.SecretLister
	nodes     corelisters.NodeLister
	svcInf    cache.SharedIndexInformer
	sliceInf  cache.SharedIndexInformer
	svcs      corelisters.ServiceLister
	slices    discoverylisters.EndpointSliceLister
	notifier  Notifier
	sliceVers sliceVersions
	dev       *devices
	podVers   podVersions

	factories []informers.SharedInformerFactory
}

// Config configures a Dispatcher. A zero field takes its default.
type Config struct {
	// Resync is the informers' resync period (default 0: none).
	Resync time.Duration
	// DevicePoll is how often dispatch checks whether devices.tether.io
	// is served, when it was not at Start (default 30s).
	DevicePoll time.Duration
}

func (c *Config) validate() error {
	if c.Resync < 0 || c.DevicePoll < 0 {
		return fmt.Errorf("dispatch: resync %s and device poll %s: want neither negative", c.Resync, c.DevicePoll)
	}
	if c.DevicePoll == 0 {
		c.DevicePoll = 30 * time.Second
	}
	return nil
}

// New builds a Dispatcher that reads core objects through client and
// Devices and DeviceModels through devices, a client of NewDevicesClient.
// The notifier may be set later with SetNotifier, but before Start.
func New(client kubernetes.Interface, devices rest.Interface, cfg Config, log *slog.Logger) (*Dispatcher, error) {
	if devices == nil {
		return nil, errors.New("dispatch: no devices client")
	}
	return newDispatcher(client, restDeviceSource(devices), cfg, log)
}

func newDispatcher(client kubernetes.Interface, src deviceSource, cfg Config, log *slog.Logger) (*Dispatcher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	resync := cfg.Resync
	d := &Dispatcher{log: log}
	d.factory = informers.NewSharedInformerFactory(client, resync)
	// Only pods bound to a node: pending pods have nowhere to go yet.
	podFactory := informers.NewSharedInformerFactoryWithOptions(client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermNotEqualSelector("spec.nodeName", "").String()
		}))
	d.podsInf = podFactory.Core().V1().Pods().Informer()
	if err := d.podsInf.AddIndexers(cache.Indexers{indexNode: podNodeIndex, indexRefs: podRefsIndex}); err != nil {
		return nil, fmt.Errorf("pod indexers: %w", err)
	}
	d.pods = corelisters.NewPodLister(d.podsInf.GetIndexer())
	d.cmInf = d.factory.Core().V1().ConfigMaps().Informer()
	d.cms = d.factory.Core().V1().ConfigMaps().Lister()
	d.secInf = d.factory.Core().V1().Secrets().Informer()
	d.secrets = d.factory.Core().V1().Secrets().Lister()
	d.nodeInf = d.factory.Core().V1().Nodes().Informer()
	d.nodes = d.factory.Core().V1().Nodes().Lister()
	d.svcInf = d.factory.Core().V1().Services().Informer()
	d.svcs = d.factory.Core().V1().Services().Lister()
	d.sliceInf = d.factory.Discovery().V1().EndpointSlices().Informer()
	if err := d.sliceInf.AddIndexers(cache.Indexers{indexService: sliceServiceIndex}); err != nil {
		return nil, fmt.Errorf("endpointslice indexers: %w", err)
	}
	d.slices = d.factory.Discovery().V1().EndpointSlices().Lister()
	d.factories = []informers.SharedInformerFactory{d.factory, podFactory}
	var err error
	if d.dev, err = newDevices(src, resync, cfg.DevicePoll, log); err != nil {
		return nil, err
	}
	return d, nil
}

// SetNotifier sets who hears about changes. Call it before Start.
func (d *Dispatcher) SetNotifier(n Notifier) { d.notifier = n }

// Start runs the informers until ctx ends. It returns once the caches are
// synced (or with an error if they cannot be); Ready reports the same.
func (d *Dispatcher) Start(ctx context.Context) error {
	if d.notifier == nil {
		return errors.New("dispatch: no notifier")
	}
	handler := func(kind protocol.Kind) cache.ResourceEventHandlerFuncs {
		return cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { d.changed(kind, obj) },
			UpdateFunc: func(old, obj any) { d.changed(kind, old); d.changed(kind, obj) },
			DeleteFunc: func(obj any) { d.changed(kind, obj) },
		}
	}
	if _, err := d.podsInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { d.changed(protocol.KindPod, obj) },
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*corev1.Pod)
			p, ok2 := obj.(*corev1.Pod)
			if ok1 && ok2 && o.Spec.NodeName == p.Spec.NodeName && d.podVers.get(o) == d.podVers.get(p) {
				return // status only: not sent to the edge
			}
			d.changed(protocol.KindPod, old)
			d.changed(protocol.KindPod, obj)
		},
		DeleteFunc: func(obj any) {
			p := obj
			if t, ok := p.(cache.DeletedFinalStateUnknown); ok {
				p = t.Obj
			}
			if p, ok := p.(*corev1.Pod); ok {
				d.podVers.forget(p)
			}
			d.changed(protocol.KindPod, obj)
		},
	}); err != nil {
		return fmt.Errorf("dispatch: add handler: %w", err)
	}
	for kind, inf := range map[protocol.Kind]cache.SharedIndexInformer{
		protocol.KindConfigMap: d.cmInf, protocol.KindSecret: d.secInf} {
		if _, err := inf.AddEventHandler(handler(kind)); err != nil {
			return fmt.Errorf("dispatch: add handler: %w", err)
		}
	}
	// A Service or an EndpointSlice concerns the nodes running pods in its
	// namespace; they compare versions and send only what changed.
	nsHandler := cache.ResourceEventHandlerFuncs{
		AddFunc:    d.namespaceChanged,
		UpdateFunc: func(_, obj any) { d.namespaceChanged(obj) },
		DeleteFunc: d.namespaceChanged,
	}
	if _, err := d.svcInf.AddEventHandler(nsHandler); err != nil {
		return fmt.Errorf("dispatch: add handler: %w", err)
	}
	if _, err := d.sliceInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    d.namespaceChanged,
		UpdateFunc: d.sliceChanged,
		DeleteFunc: func(obj any) {
			e := obj
			if t, ok := e.(cache.DeletedFinalStateUnknown); ok {
				e = t.Obj
			}
			if e, ok := e.(*discoveryv1.EndpointSlice); ok {
				d.sliceVers.forget(string(e.UID))
			}
			d.namespaceChanged(obj)
		},
	}); err != nil {
		return fmt.Errorf("dispatch: add handler: %w", err)
	}
	// A Node that becomes an edge node (created at join, or labelled) or
	// stops being one (deleted, which revokes it, or unlabelled) changes
	// its desired set from nothing to everything or back.
	if _, err := d.nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if isEdge(obj) {
				d.notifyNode(obj)
			}
		},
		UpdateFunc: func(old, obj any) {
			if isEdge(old) != isEdge(obj) {
				d.notifyNode(obj)
			}
			if site(old) != site(obj) {
				d.siteChanged()
			}
		},
		DeleteFunc: func(obj any) {
			if isEdge(obj) {
				d.notifyNode(obj)
			}
		},
	}); err != nil {
		return fmt.Errorf("dispatch: add handler: %w", err)
	}
	if _, err := d.dev.devInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { d.deviceChanged(nil, obj) },
		UpdateFunc: d.deviceChanged,
		DeleteFunc: func(obj any) { d.deviceChanged(nil, obj) },
	}); err != nil {
		return fmt.Errorf("dispatch: add handler: %w", err)
	}
	if _, err := d.dev.modelInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: d.modelChanged,
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*api.DeviceModel)
			m, ok2 := obj.(*api.DeviceModel)
			if ok1 && ok2 && o.ResourceVersion != m.ResourceVersion && o.Generation == m.Generation {
				return // metadata only: not sent to the edge
			}
			d.modelChanged(obj)
		},
		DeleteFunc: d.modelChanged,
	}); err != nil {
		return fmt.Errorf("dispatch: add handler: %w", err)
	}
	for _, f := range d.factories {
		f.Start(ctx.Done())
	}
	for _, f := range d.factories {
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return fmt.Errorf("dispatch: %v cache did not sync: %w", typ, ctx.Err())
			}
		}
	}
	// The node cache is synced: a late start of the device informers can
	// tell every edge node.
	if err := d.dev.start(ctx, d.devicesAvailable); err != nil {
		return err
	}
	d.log.Info("dispatch caches synced", slog.Bool("devices", d.dev.available.Load()))
	return nil
}

// Shutdown waits for the informers' goroutines after ctx of Start ended.
func (d *Dispatcher) Shutdown() {
	for _, f := range d.factories {
		f.Shutdown()
	}
	d.dev.wg.Wait()
}

// Ready reports whether every cache has synced. The device caches count
// only if devices.tether.io was served at Start.
func (d *Dispatcher) Ready() bool {
	return d.podsInf.HasSynced() && d.cmInf.HasSynced() && d.secInf.HasSynced() && d.nodeInf.HasSynced() &&
		d.svcInf.HasSynced() && d.sliceInf.HasSynced() && d.dev.ready()
}

// Serves reports whether Desired lists every object of kind a node should
// hold. It is false for the device kinds until their caches synced; the hub
// then deletes no object of those kinds from a node.
func (d *Dispatcher) Serves(kind protocol.Kind) bool {
	switch kind {
	case protocol.KindPod, protocol.KindConfigMap, protocol.KindSecret, protocol.KindService, protocol.KindEndpointSlice:
		return true
	case protocol.KindDevice, protocol.KindDeviceModel:
		return d.dev.available.Load()
	}
	return false
}

// Pods and Nodes expose the listers for the status writer.
func (d *Dispatcher) Pods() corelisters.PodLister   { return d.pods }
func (d *Dispatcher) Nodes() corelisters.NodeLister { return d.nodes }

// IsEdgeNode reports whether node exists in the informer cache and carries
// the edge role label. Desired lists nothing for other nodes.
func (d *Dispatcher) IsEdgeNode(node string) bool {
	n, err := d.nodes.Get(node)
	if err != nil {
		return false
	}
	_, ok := n.Labels[EdgeRoleLabel]
	return ok
}

// site returns the SiteLabel of obj, a Node or its tombstone.
func site(obj any) string {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if n, ok := obj.(*corev1.Node); ok {
		return n.Labels[SiteLabel]
	}
	return ""
}

var everything = labels.Everything()

// isEdge reports whether obj is a Node with EdgeRoleLabel.
func isEdge(obj any) bool {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	n, ok := obj.(*corev1.Node)
	if !ok {
		return false
	}
	_, ok = n.Labels[EdgeRoleLabel]
	return ok
}

// notifyNode tells the node obj (a Node or its tombstone) names.
func (d *Dispatcher) notifyNode(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if n, ok := obj.(*corev1.Node); ok {
		d.notifier.NodeChanged(n.Name)
	}
}

func (d *Dispatcher) changed(kind protocol.Kind, obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	switch kind {
	case protocol.KindPod:
		if p, ok := obj.(*corev1.Pod); ok && p.Spec.NodeName != "" {
			d.notifier.NodeChanged(p.Spec.NodeName)
		}
	case protocol.KindConfigMap, protocol.KindSecret:
		m, ok := obj.(interface {
			GetNamespace() string
			GetName() string
		})
		if !ok {
			return
		}
		users, err := d.podsInf.GetIndexer().ByIndex(indexRefs, refKey(kind, m.GetNamespace(), m.GetName()))
		if err != nil {
			d.log.Error("pods by reference", slog.Any("err", err))
			return
		}
		seen := map[string]bool{}
		for _, u := range users {
			node := u.(*corev1.Pod).Spec.NodeName
			if !seen[node] {
				seen[node] = true
				d.notifier.NodeChanged(node)
			}
		}
	}
}

// Desired appends to dst every object node should hold now, with Data unset,
// in the order of protocol.Kinds (configmaps and secrets, device models,
// devices, pods), and returns it. A node that is not an edge node (no Node in
// the cache, or one without EdgeRoleLabel) should hold nothing: dst is
// returned as it is, and none of its pods, secrets, configmaps or devices is
// looked at. A Node created after the session asked is announced by the
// node informer (NodeChanged), so the hub asks again.
//
// A mirror pod is listed, but nothing it references is: mirror pods are
// created by edges, and a reference in one must not pull a configmap or a
// secret down to the node. Only pods the API server's scheduler or users
// bound to the node do.
func (d *Dispatcher) Desired(node string, dst []protocol.Object) []protocol.Object {
	if !d.IsEdgeNode(node) {
		d.log.Debug("desired set of a node that is not an edge node is empty", slog.String("node", node))
		return dst
	}
	objs, err := d.podsInf.GetIndexer().ByIndex(indexNode, node)
	if err != nil {
		d.log.Error("pods by node", slog.String("node", node), slog.Any("err", err))
		return dst
	}
	pods := make([]protocol.Object, 0, len(objs))
	seen := map[string]bool{}
	for _, o := range objs {
		p := o.(*corev1.Pod)
		pods = append(pods, protocol.Object{Kind: protocol.KindPod, UID: string(p.UID), Namespace: p.Namespace,
			Name: p.Name, ResourceVersion: d.podVers.get(p)})
		if IsMirrorPod(p) {
			continue
		}
		for _, r := range PodRefs(p) {
			k := refKey(r.Kind, p.Namespace, r.Name)
			if seen[k] {
				continue
			}
			seen[k] = true
			if o, ok := d.lookup(r.Kind, p.Namespace, r.Name); ok {
				dst = append(dst, o)
			}
		}
	}
	dst = d.desiredDevices(node, dst)
	dst = d.desiredServices(node, dst)
	return append(dst, pods...)
}

func (d *Dispatcher) lookup(kind protocol.Kind, ns, name string) (protocol.Object, bool) {
	switch kind {
	case protocol.KindConfigMap:
		if c, err := d.cms.ConfigMaps(ns).Get(name); err == nil {
			return protocol.Object{Kind: kind, UID: string(c.UID), Namespace: ns, Name: name, ResourceVersion: c.ResourceVersion}, true
		}
	case protocol.KindSecret:
		if s, err := d.secrets.Secrets(ns).Get(name); err == nil {
			return protocol.Object{Kind: kind, UID: string(s.UID), Namespace: ns, Name: name, ResourceVersion: s.ResourceVersion}, true
		}
	}
	return protocol.Object{}, false
}

// Encode fills o.Data with the current version of the object o names (by
// kind, namespace, name and UID) as node holds it (an EndpointSlice is
// filtered for node), updating o.ResourceVersion to the version encoded. ok
// is false if the object was deleted or replaced.
func (d *Dispatcher) Encode(node string, o *protocol.Object) (ok bool, err error) {
	var (
		uid, rv string
		data    []byte
	)
	switch o.Kind {
	case protocol.KindPod:
		var p *corev1.Pod
		if p, err = d.pods.Pods(o.Namespace).Get(o.Name); err == nil {
			uid, rv = string(p.UID), d.podVers.get(p)
			data, err = protocol.EncodePod(p)
		}
	case protocol.KindConfigMap:
		var c *corev1.ConfigMap
		if c, err = d.cms.ConfigMaps(o.Namespace).Get(o.Name); err == nil {
			uid, rv = string(c.UID), c.ResourceVersion
			data, err = protocol.EncodeConfigMap(c)
		}
	case protocol.KindSecret:
		var s *corev1.Secret
		if s, err = d.secrets.Secrets(o.Namespace).Get(o.Name); err == nil {
			uid, rv = string(s.UID), s.ResourceVersion
			data, err = protocol.EncodeSecret(s)
		}
	case protocol.KindDevice, protocol.KindDeviceModel:
		uid, rv, data, err = d.encodeDevice(o)
	case protocol.KindService, protocol.KindEndpointSlice:
		uid, rv, data, err = d.encodeService(node, o)
	default:
		return false, fmt.Errorf("encode: unknown kind %d", o.Kind)
	}
	if apierrors.IsNotFound(err) || (err == nil && uid != o.UID) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("encode %s %s/%s: %w", o.Kind, o.Namespace, o.Name, err)
	}
	o.ResourceVersion, o.Data = rv, data
	return true, nil
}

func podNodeIndex(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.NodeName == "" {
		return nil, nil
	}
	return []string{p.Spec.NodeName}, nil
}

// podRefsIndex indexes pods by the configmaps and secrets they reference;
// mirror pods are left out, as Desired ignores their references.
func podRefsIndex(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || IsMirrorPod(p) {
		return nil, nil
	}
	refs := PodRefs(p)
	keys := make([]string, len(refs))
	for i, r := range refs {
		keys[i] = refKey(r.Kind, p.Namespace, r.Name)
	}
	return keys, nil
}

func refKey(kind protocol.Kind, ns, name string) string {
	return kind.String() + "/" + ns + "/" + name
}

// IsMirrorPod reports whether p is a mirror pod: an edge's (or a kubelet's)
// copy of a static pod, marked with the kubernetes.io/config.mirror
// annotation.
func IsMirrorPod(p *corev1.Pod) bool {
	_, ok := p.Annotations[corev1.MirrorPodAnnotationKey]
	return ok
}

// Ref names a configmap or secret in the pod's namespace.
type Ref struct {
	Kind protocol.Kind
	Name string
}

// PodRefs lists, without duplicates, the configmaps and secrets p uses:
// volumes (also projected), env, envFrom and image pull secrets, in init,
// regular and ephemeral containers.
func PodRefs(p *corev1.Pod) []Ref {
	var refs []Ref
	seen := map[Ref]bool{}
	add := func(k protocol.Kind, name string) {
		r := Ref{k, name}
		if name != "" && !seen[r] {
			seen[r] = true
			refs = append(refs, r)
		}
	}
	for _, v := range p.Spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			add(protocol.KindConfigMap, v.ConfigMap.Name)
		case v.Secret != nil:
			add(protocol.KindSecret, v.Secret.SecretName)
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil {
					add(protocol.KindConfigMap, s.ConfigMap.Name)
				}
				if s.Secret != nil {
					add(protocol.KindSecret, s.Secret.Name)
				}
			}
		}
	}
	env := func(envFrom []corev1.EnvFromSource, envs []corev1.EnvVar) {
		for _, e := range envFrom {
			if e.ConfigMapRef != nil {
				add(protocol.KindConfigMap, e.ConfigMapRef.Name)
			}
			if e.SecretRef != nil {
				add(protocol.KindSecret, e.SecretRef.Name)
			}
		}
		for _, e := range envs {
			if e.ValueFrom == nil {
				continue
			}
			if e.ValueFrom.ConfigMapKeyRef != nil {
				add(protocol.KindConfigMap, e.ValueFrom.ConfigMapKeyRef.Name)
			}
			if e.ValueFrom.SecretKeyRef != nil {
				add(protocol.KindSecret, e.ValueFrom.SecretKeyRef.Name)
			}
		}
	}
	for _, c := range p.Spec.InitContainers {
		env(c.EnvFrom, c.Env)
	}
	for _, c := range p.Spec.Containers {
		env(c.EnvFrom, c.Env)
	}
	for _, c := range p.Spec.EphemeralContainers {
		env(c.EnvFrom, c.Env)
	}
	for _, s := range p.Spec.ImagePullSecrets {
		add(protocol.KindSecret, s.Name)
	}
	return refs
}
