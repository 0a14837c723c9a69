package metaserver

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	devicesapi "github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/edgecore/accessreview"
	"github.com/tether-edge/tether/protocol"
)

// object is what every served type is.
type object interface {
	metav1.Object
	runtime.Object
}

// resource describes one resource the metaserver serves.
type resource struct {
	gv         schema.GroupVersion
	name       string // plural, as in paths: "pods"
	singular   string
	kind       string
	namespaced bool
	shortNames []string
	categories []string
	// status says the resource has a status subresource (GET only here).
	status bool
	// custom marks a custom resource: the API server gives each item of
	// its lists a kind and apiVersion, as the metaserver does.
	custom bool
	// store is the store's kind holding the objects, or 0 when they do not
	// come from the store.
	store protocol.Kind
	// decode parses an object as the store holds it: the Kubernetes
	// protobuf encoding for core types, JSON for custom resources. Empty
	// data decodes to an empty object.
	decode func([]byte) (object, error)
	// fields returns the object's fields a field selector may name, as the
	// API server has them for the resource.
	fields func(object) fields.Set
	// fieldNames lists the keys fields returns, sorted.
	fieldNames []string
}

const (
	resPods       = "pods"
	resConfigMaps = "configmaps"
	resSecrets    = "secrets"
	resServices   = "services"
	// resEndpointSlices are the node's filtered copies (see
	// cloudcore/dispatch): only the endpoints it can reach.
	resEndpointSlices = "endpointslices"
	resNodes          = "nodes"
	resDevices        = devicesapi.DevicesResource
	resDeviceModels   = devicesapi.DeviceModelsResource
)

// coreGV is the core group's version; devicesGV Tether's device resources.
var (
	coreGV      = schema.GroupVersion{Version: "v1"}
	devicesGV   = devicesapi.SchemeGroupVersion
	discoveryGV = discoveryv1.SchemeGroupVersion
)

func metaFields(o object, namespaced bool) fields.Set {
	s := fields.Set{"metadata.name": o.GetName()}
	if namespaced {
		s["metadata.namespace"] = o.GetNamespace()
	}
	return s
}

func decodeAs[T any, P interface {
	*T
	object
	Unmarshal([]byte) error
}](kind string) func([]byte) (object, error) {
	return func(b []byte) (object, error) {
		p := P(new(T))
		if err := p.Unmarshal(b); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kind, err)
		}
		return p, nil
	}
}

// decodeJSON decodes a custom resource as the store holds it (JSON).
func decodeJSON[T any, P interface {
	*T
	object
}](kind string) func([]byte) (object, error) {
	return func(b []byte) (object, error) {
		p := P(new(T))
		if len(b) == 0 {
			return p, nil
		}
		if err := json.Unmarshal(b, p); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kind, err)
		}
		return p, nil
	}
}

// resources are the served resources, by name (unique across the groups).
// Their field selectors are the API server's: for core types
// k8s.io/kubernetes/pkg/registry/core/*/strategy.go, for custom resources
// metadata.name and metadata.namespace (the CRDs declare no
// selectableFields).
var resources = func() map[string]*resource {
	rs := []*resource{
		{name: resPods, singular: "pod", kind: "Pod", namespaced: true, shortNames: []string{"po"}, status: true,
			store: protocol.KindPod, decode: decodeAs[corev1.Pod]("pod"),
			fields: func(o object) fields.Set {
				p := o.(*corev1.Pod)
				s := metaFields(o, true)
				s["spec.nodeName"] = p.Spec.NodeName
				s["spec.restartPolicy"] = string(p.Spec.RestartPolicy)
				s["spec.schedulerName"] = p.Spec.SchedulerName
				s["spec.serviceAccountName"] = p.Spec.ServiceAccountName
				s["spec.hostNetwork"] = strconv.FormatBool(p.Spec.HostNetwork)
				s["status.phase"] = string(p.Status.Phase)
				s["status.podIP"] = p.Status.PodIP
				s["status.nominatedNodeName"] = p.Status.NominatedNodeName
				return s
			}},
		{name: resConfigMaps, singular: "configmap", kind: "ConfigMap", namespaced: true, shortNames: []string{"cm"},
			store: protocol.KindConfigMap, decode: decodeAs[corev1.ConfigMap]("configmap"),
			fields: func(o object) fields.Set { return metaFields(o, true) }},
		{name: resSecrets, singular: "secret", kind: "Secret", namespaced: true,
			store: protocol.KindSecret, decode: decodeAs[corev1.Secret]("secret"),
			fields: func(o object) fields.Set {
				s := metaFields(o, true)
				s["type"] = string(o.(*corev1.Secret).Type)
				return s
			}},
		{name: resServices, singular: "service", kind: "Service", namespaced: true, shortNames: []string{"svc"},
			store: protocol.KindService, decode: decodeAs[corev1.Service]("service"),
			fields: func(o object) fields.Set {
				svc := o.(*corev1.Service)
				s := metaFields(o, true)
				s["spec.clusterIP"] = svc.Spec.ClusterIP
				s["spec.type"] = string(svc.Spec.Type)
				return s
			}},
		{gv: discoveryGV, name: resEndpointSlices, singular: "endpointslice", kind: "EndpointSlice", namespaced: true,
			store: protocol.KindEndpointSlice, decode: decodeAs[discoveryv1.EndpointSlice]("endpointslice"),
			fields: func(o object) fields.Set {
				s := metaFields(o, true)
				s["addressType"] = string(o.(*discoveryv1.EndpointSlice).AddressType)
				return s
			}},
		{name: resNodes, singular: "node", kind: "Node", shortNames: []string{"no"}, status: true,
			decode: decodeAs[corev1.Node]("node"),
			fields: func(o object) fields.Set {
				s := metaFields(o, false)
				s["spec.unschedulable"] = strconv.FormatBool(o.(*corev1.Node).Spec.Unschedulable)
				return s
			}},
		{gv: devicesGV, name: resDevices, singular: "device", kind: devicesapi.DeviceKind, namespaced: true,
			shortNames: []string{"dev"}, categories: []string{"tether", "tether-devices"}, status: true, custom: true,
			store: protocol.KindDevice, decode: decodeJSON[devicesapi.Device]("device"),
			fields: func(o object) fields.Set { return metaFields(o, true) }},
		{gv: devicesGV, name: resDeviceModels, singular: "devicemodel", kind: devicesapi.DeviceModelKind, namespaced: true,
			categories: []string{"tether", "tether-devices"}, custom: true,
			store: protocol.KindDeviceModel, decode: decodeJSON[devicesapi.DeviceModel]("devicemodel"),
			fields: func(o object) fields.Set { return metaFields(o, true) }},
	}
	m := map[string]*resource{}
	for _, r := range rs {
		if r.gv.Version == "" {
			r.gv = coreGV
		}
		empty, err := r.decode(nil)
		if err != nil {
			panic(err)
		}
		for k := range r.fields(empty) {
			r.fieldNames = append(r.fieldNames, k)
		}
		sort.Strings(r.fieldNames)
		m[r.name] = r
	}
	return m
}()

// groupVersion is one group version the metaserver serves.
type groupVersion struct {
	gv schema.GroupVersion
	// prefix is the path of its resources, with a trailing slash.
	prefix string
	// names lists its resources in the order discovery shows them.
	names []string
}

// groupVersions are the served group versions: the core group's under
// /api, the others under /apis.
var groupVersions = []*groupVersion{
	{gv: coreGV, prefix: "/api/v1/", names: []string{resConfigMaps, resNodes, resPods, resSecrets, resServices}},
	{gv: devicesGV, prefix: "/apis/" + devicesGV.String() + "/", names: []string{resDeviceModels, resDevices}},
	{gv: discoveryGV, prefix: "/apis/" + discoveryGV.String() + "/", names: []string{resEndpointSlices}},
}

// resourceNames lists every served resource.
var resourceNames = func() []string {
	var out []string
	for _, g := range groupVersions {
		out = append(out, g.names...)
	}
	return out
}()

// ServedResources are the resources served, for the access reviews of the
// in-cluster listener (accessreview.Config.Resources).
func ServedResources() []accessreview.Resource {
	var out []accessreview.Resource
	for _, name := range resourceNames {
		r := resources[name]
		out = append(out, accessreview.Resource{Group: r.gv.Group, Resource: r.name, Namespaced: r.namespaced})
	}
	return out
}
