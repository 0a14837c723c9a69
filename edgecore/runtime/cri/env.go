package cri

import (
	"fmt"
	"math"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// configError is a problem with what a container refers to (a missing
// ConfigMap, Secret or key); the container waits with
// CreateContainerConfigError until it is fixed.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func configErrorf(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...)}
}

// podEnv resolves what a pod refers to during one sync: objects are read
// once per sync.
type podEnv struct {
	objs     Objects
	pod      *corev1.Pod
	podIP    string
	podIPs   []string
	hostIP   string
	nodeName string
	nodeCPU  resource.Quantity // allocatable, for resourceFieldRef without a limit
	nodeMem  resource.Quantity

	// inCluster, if set, is the in-cluster API the pod is given.
	inCluster *InClusterAPI

	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	services   []envVar // the service variables, once read
	servicesOK bool
}

// serviceVars are the kubelet's service environment variables
// (FOO_SERVICE_HOST, FOO_PORT_80_TCP, ...) for the Services of the pod's
// namespace that have a cluster IP, unless the pod turns its service links
// off. The in-cluster API's KUBERNETES_* variables (inCluster) come after
// them and win.
func (e *podEnv) serviceVars() ([]envVar, error) {
	if e.servicesOK {
		return e.services, nil
	}
	if l := e.pod.Spec.EnableServiceLinks; l != nil && !*l {
		e.servicesOK = true
		return nil, nil
	}
	svcs, err := e.objs.Services(e.pod.Namespace)
	if err != nil {
		return nil, err
	}
	e.services, e.servicesOK = serviceEnv(svcs), true
	return e.services, nil
}

// serviceEnv is the kubelet's envvars.FromServices, in service name order.
func serviceEnv(svcs []*corev1.Service) []envVar {
	svcs = slices.Clone(svcs)
	slices.SortFunc(svcs, func(a, b *corev1.Service) int { return strings.Compare(a.Name, b.Name) })
	var out []envVar
	for _, svc := range svcs {
		ip := svc.Spec.ClusterIP
		if ip == "" || ip == corev1.ClusterIPNone || len(svc.Spec.Ports) == 0 {
			continue
		}
		prefix := strings.ToUpper(strings.ReplaceAll(svc.Name, "-", "_"))
		out = append(out, envVar{prefix + "_SERVICE_HOST", ip},
			envVar{prefix + "_SERVICE_PORT", strconv.Itoa(int(svc.Spec.Ports[0].Port))})
		for _, p := range svc.Spec.Ports {
			if p.Name != "" {
				out = append(out, envVar{prefix + "_SERVICE_PORT_" + strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")), strconv.Itoa(int(p.Port))})
			}
		}
		for i, p := range svc.Spec.Ports {
			proto := string(p.Protocol)
			if proto == "" {
				proto = string(corev1.ProtocolTCP)
			}
			hostPort := net.JoinHostPort(ip, strconv.Itoa(int(p.Port)))
			url := strings.ToLower(proto) + "://" + hostPort
			if i == 0 {
				out = append(out, envVar{prefix + "_PORT", url})
			}
			pp := fmt.Sprintf("%s_PORT_%d_%s", prefix, p.Port, strings.ToUpper(proto))
			out = append(out, envVar{pp, url}, envVar{pp + "_PROTO", strings.ToLower(proto)},
				envVar{pp + "_PORT", strconv.Itoa(int(p.Port))}, envVar{pp + "_ADDR", ip})
		}
	}
	return out
}

// serviceEnv is the kubelet's variables of the "kubernetes" Service,
// pointing at the in-cluster API at the edge. They come first: the
// container's own env and envFrom override them, as with the kubelet.
func (ic *InClusterAPI) serviceEnv() []envVar {
	host, port := ic.Host, strconv.Itoa(ic.Port)
	addr := "tcp://" + net.JoinHostPort(host, port)
	pre := "KUBERNETES_PORT_" + port + "_TCP"
	return []envVar{{"KUBERNETES_SERVICE_HOST", host}, {"KUBERNETES_SERVICE_PORT", port},
		{"KUBERNETES_SERVICE_PORT_HTTPS", port}, {"KUBERNETES_PORT", addr}, {pre, addr},
		{pre + "_PROTO", "tcp"}, {pre + "_PORT", port}, {pre + "_ADDR", host}}
}

func (e *podEnv) configMap(name string, optional *bool) (*corev1.ConfigMap, error) {
	cm, ok := e.configMaps[name]
	if !ok {
		var err error
		cm, err = e.objs.ConfigMap(e.pod.Namespace, name)
		if err != nil {
			return nil, err
		}
		if e.configMaps == nil {
			e.configMaps = map[string]*corev1.ConfigMap{}
		}
		e.configMaps[name] = cm
	}
	if cm == nil && (optional == nil || !*optional) {
		return nil, configErrorf("configmap %q not found", name)
	}
	return cm, nil
}

func (e *podEnv) secret(name string, optional *bool) (*corev1.Secret, error) {
	s, ok := e.secrets[name]
	if !ok {
		var err error
		s, err = e.objs.Secret(e.pod.Namespace, name)
		if err != nil {
			return nil, err
		}
		if e.secrets == nil {
			e.secrets = map[string]*corev1.Secret{}
		}
		e.secrets[name] = s
	}
	if s == nil && (optional == nil || !*optional) {
		return nil, configErrorf("secret %q not found", name)
	}
	return s, nil
}

// envVar is one resolved variable.
type envVar struct{ name, value string }

// containerEnv resolves c's environment as the kubelet does: the service
// variables, then envFrom, then env in order, each value expanded with $(VAR) over the variables
// defined before it. Later definitions replace earlier ones.
func (e *podEnv) containerEnv(c *corev1.Container) ([]envVar, error) {
	var vars []envVar
	index := map[string]int{}
	set := func(name, value string) {
		if i, ok := index[name]; ok {
			vars[i].value = value
			return
		}
		index[name] = len(vars)
		vars = append(vars, envVar{name, value})
	}
	lookup := func(name string) (string, bool) {
		if i, ok := index[name]; ok {
			return vars[i].value, true
		}
		return "", false
	}
	// The service variables first: what the container defines replaces
	// them, and may refer to them. The in-cluster API's KUBERNETES_*
	// variables replace those of a "kubernetes" Service the store holds.
	svcVars, err := e.serviceVars()
	if err != nil {
		return nil, err
	}
	for _, v := range svcVars {
		set(v.name, v.value)
	}
	if e.inCluster != nil {
		for _, v := range e.inCluster.serviceEnv() {
			set(v.name, v.value)
		}
	}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, err := e.configMap(from.ConfigMapRef.Name, from.ConfigMapRef.Optional)
			if err != nil {
				return nil, err
			}
			if cm == nil {
				continue
			}
			for _, k := range sortedKeys(cm.Data) {
				set(from.Prefix+k, cm.Data[k])
			}
		case from.SecretRef != nil:
			s, err := e.secret(from.SecretRef.Name, from.SecretRef.Optional)
			if err != nil {
				return nil, err
			}
			if s == nil {
				continue
			}
			for _, k := range sortedKeys(s.Data) {
				set(from.Prefix+k, string(s.Data[k]))
			}
		}
	}
	for _, v := range c.Env {
		if v.ValueFrom == nil {
			set(v.Name, expand(v.Value, lookup))
			continue
		}
		value, ok, err := e.valueFrom(c, v.ValueFrom)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", v.Name, err)
		}
		if ok {
			set(v.Name, value)
		}
	}
	return vars, nil
}

// valueFrom resolves one env source; ok is false when an optional source is
// missing and the variable is left out.
func (e *podEnv) valueFrom(c *corev1.Container, from *corev1.EnvVarSource) (string, bool, error) {
	switch {
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		cm, err := e.configMap(ref.Name, ref.Optional)
		if err != nil || cm == nil {
			return "", false, err
		}
		if v, ok := cm.Data[ref.Key]; ok {
			return v, true, nil
		}
		if v, ok := cm.BinaryData[ref.Key]; ok {
			return string(v), true, nil
		}
		if ref.Optional != nil && *ref.Optional {
			return "", false, nil
		}
		return "", false, configErrorf("configmap %q has no key %q", ref.Name, ref.Key)
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		s, err := e.secret(ref.Name, ref.Optional)
		if err != nil || s == nil {
			return "", false, err
		}
		if v, ok := s.Data[ref.Key]; ok {
			return string(v), true, nil
		}
		if v, ok := s.StringData[ref.Key]; ok {
			return v, true, nil
		}
		if ref.Optional != nil && *ref.Optional {
			return "", false, nil
		}
		return "", false, configErrorf("secret %q has no key %q", ref.Name, ref.Key)
	case from.FieldRef != nil:
		v, err := e.fieldValue(from.FieldRef.FieldPath)
		return v, err == nil, err
	case from.ResourceFieldRef != nil:
		v, err := e.resourceValue(c, from.ResourceFieldRef)
		return v, err == nil, err
	}
	return "", false, configErrorf("empty valueFrom")
}

// fieldValue is the downward API's value of a pod field.
func (e *podEnv) fieldValue(path string) (string, error) {
	p := e.pod
	if k, ok := subscript(path, "metadata.labels"); ok {
		return p.Labels[k], nil
	}
	if k, ok := subscript(path, "metadata.annotations"); ok {
		return p.Annotations[k], nil
	}
	switch path {
	case "metadata.name":
		return p.Name, nil
	case "metadata.namespace":
		return p.Namespace, nil
	case "metadata.uid":
		return string(p.UID), nil
	case "metadata.labels":
		return formatMap(p.Labels), nil
	case "metadata.annotations":
		return formatMap(p.Annotations), nil
	case "spec.nodeName":
		if p.Spec.NodeName != "" {
			return p.Spec.NodeName, nil
		}
		return e.nodeName, nil
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName, nil
	case "status.hostIP":
		return e.hostIP, nil
	case "status.hostIPs":
		return e.hostIP, nil
	case "status.podIP":
		return e.podIP, nil
	case "status.podIPs":
		return strings.Join(e.podIPs, ","), nil
	}
	return "", configErrorf("unsupported fieldRef %q", path)
}

// subscript parses `prefix['key']`.
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok || !strings.HasSuffix(rest, "']") {
		return "", false
	}
	return strings.TrimSuffix(rest, "']"), true
}

// formatMap formats labels or annotations as the downward API does: one
// key="value" line each, sorted.
func formatMap(m map[string]string) string {
	var b strings.Builder
	for i, k := range sortedKeys(m) {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(k + "=" + strconv.Quote(m[k]))
	}
	return b.String()
}

// resourceValue is the downward API's value of a container resource: the
// limit (or, without one, the node's allocatable) or the request, divided by
// the divisor and rounded up.
func (e *podEnv) resourceValue(c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	if ref.ContainerName != "" && ref.ContainerName != c.Name {
		if other := findContainer(e.pod, ref.ContainerName); other != nil {
			c = other
		} else {
			return "", configErrorf("resourceFieldRef: no container %q", ref.ContainerName)
		}
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") {
		return "", configErrorf("unsupported resourceFieldRef %q", ref.Resource)
	}
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, set := list[corev1.ResourceName(name)]
	if !set && kind == "limits" {
		switch corev1.ResourceName(name) {
		case corev1.ResourceCPU:
			q, set = e.nodeCPU, true
		case corev1.ResourceMemory:
			q, set = e.nodeMem, true
		}
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if !set {
		return "0", nil
	}
	if corev1.ResourceName(name) == corev1.ResourceCPU {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(divisor.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(divisor.Value()))), 10), nil
}

func findContainer(p *corev1.Pod, name string) *corev1.Container {
	for i := range p.Spec.Containers {
		if p.Spec.Containers[i].Name == name {
			return &p.Spec.Containers[i]
		}
	}
	for i := range p.Spec.InitContainers {
		if p.Spec.InitContainers[i].Name == name {
			return &p.Spec.InitContainers[i]
		}
	}
	return nil
}

// expand replaces $(VAR) in s with lookup's values as Kubernetes does:
// undefined references stay as written and $$ escapes a $.
func expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
