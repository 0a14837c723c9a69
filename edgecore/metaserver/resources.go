package metaserver

import (
	"fmt"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/tether-edge/tether/protocol"
)

// object is what every served type is.
type object interface {
	metav1.Object
	runtime.Object
}

// resource describes one resource of the core group the metaserver serves.
type resource struct {
	name       string // plural, as in paths: "pods"
	singular   string
	kind       string
	namespaced bool
	shortNames []string
	// store is the store's kind holding the objects, or 0 when they do not
	// come from the store.
	store protocol.Kind
	// decode parses an object's Kubernetes protobuf encoding.
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
	resNodes      = "nodes"
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

// resources are the served resources, by name. Their field selectors are the
// API server's (k8s.io/kubernetes/pkg/registry/core/*/strategy.go).
var resources = func() map[string]*resource {
	rs := []*resource{
		{name: resPods, singular: "pod", kind: "Pod", namespaced: true, shortNames: []string{"po"},
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
			decode: decodeAs[corev1.Service]("service"),
			fields: func(o object) fields.Set {
				svc := o.(*corev1.Service)
				s := metaFields(o, true)
				s["spec.clusterIP"] = svc.Spec.ClusterIP
				s["spec.type"] = string(svc.Spec.Type)
				return s
			}},
		{name: resNodes, singular: "node", kind: "Node", shortNames: []string{"no"},
			decode: decodeAs[corev1.Node]("node"),
			fields: func(o object) fields.Set {
				s := metaFields(o, false)
				s["spec.unschedulable"] = strconv.FormatBool(o.(*corev1.Node).Spec.Unschedulable)
				return s
			}},
	}
	m := map[string]*resource{}
	for _, r := range rs {
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

// resourceNames lists the served resources in the order discovery shows
// them.
var resourceNames = []string{resConfigMaps, resNodes, resPods, resSecrets, resServices}
