package dispatch

import (
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/tether-edge/tether/protocol"
)

// Services and their EndpointSlices.
//
// A node holds the Services of every namespace one of its pods (not a
// mirror pod: the edge creates those itself, and must not pull anything
// down with one) runs in, and the EndpointSlices of those Services
// (discovery.k8s.io/v1, matched by the kubernetes.io/service-name label),
// filtered to the endpoints it can reach:
//
//   - an endpoint whose nodeName is the node itself, always;
//   - with the annotation tether.io/endpoints: site on the Service, also an
//     endpoint whose node carries the same non-empty tether.io/site label as
//     the node (the nodes of one store, one LAN);
//   - nothing else: an endpoint on a cloud node or at another site is
//     unreachable from an edge box whose only way out is the tunnel.
//
// An unknown value of the annotation counts as the default (the node only).
// A filtered slice keeps its ports and metadata; it may hold no endpoint.
// Its version is a hash of the filtered slice (sliceVersions), so that it
// changes when, and only when, what the node holds changes: an endpoint
// elsewhere becoming ready does not send the slice down again.
const (
	// EndpointsAnnotation on a Service says which endpoints of it an edge
	// node holds besides its own: "site" (see SiteLabel) or "node".
	EndpointsAnnotation = "tether.io/endpoints"
	// SiteLabel on a Node names the site (store, plant) the node is at.
	SiteLabel = "tether.io/site"

	indexService = "service"
)

// endpointsMode is the value of EndpointsAnnotation that widens the filter.
const endpointsSite = "site"

// sliceServiceIndex indexes EndpointSlices by namespace/service name.
func sliceServiceIndex(obj any) ([]string, error) {
	e, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	svc := e.Labels[discoveryv1.LabelServiceName]
	if svc == "" {
		return nil, nil
	}
	return []string{e.Namespace + "/" + svc}, nil
}

// nodeNamespaces lists the namespaces node's pods (not mirror pods) run in.
func (d *Dispatcher) nodeNamespaces(node string) []string {
	objs, err := d.podsInf.GetIndexer().ByIndex(indexNode, node)
	if err != nil {
		return nil
	}
	var nss []string
	for _, o := range objs {
		p := o.(*corev1.Pod)
		if !IsMirrorPod(p) && !slices.Contains(nss, p.Namespace) {
			nss = append(nss, p.Namespace)
		}
	}
	slices.Sort(nss)
	return nss
}

// nodeRunsIn reports whether node has a pod (not a mirror pod) in ns.
func (d *Dispatcher) nodeRunsIn(node, ns string) bool {
	return slices.Contains(d.nodeNamespaces(node), ns)
}

// desiredServices appends the Services and filtered EndpointSlices node
// should hold: all Services first, then all slices.
func (d *Dispatcher) desiredServices(node string, dst []protocol.Object) []protocol.Object {
	site := d.nodeSite(node)
	var slicesOut []protocol.Object
	for _, ns := range d.nodeNamespaces(node) {
		svcs, err := d.svcs.Services(ns).List(everything)
		if err != nil {
			continue
		}
		slices.SortFunc(svcs, func(a, b *corev1.Service) int { return strings.Compare(a.Name, b.Name) })
		for _, s := range svcs {
			dst = append(dst, protocol.Object{Kind: protocol.KindService, UID: string(s.UID), Namespace: ns,
				Name: s.Name, ResourceVersion: s.ResourceVersion})
			objs, err := d.sliceInf.GetIndexer().ByIndex(indexService, ns+"/"+s.Name)
			if err != nil {
				continue
			}
			for _, o := range objs {
				e := o.(*discoveryv1.EndpointSlice)
				keep := d.reachable(node, site, s, e)
				slicesOut = append(slicesOut, protocol.Object{Kind: protocol.KindEndpointSlice, UID: string(e.UID),
					Namespace: ns, Name: e.Name, ResourceVersion: d.sliceVers.get(node, e, keep)})
			}
		}
	}
	return append(dst, slicesOut...)
}

// nodeSite returns node's SiteLabel, "" if none.
func (d *Dispatcher) nodeSite(node string) string {
	n, err := d.nodes.Get(node)
	if err != nil {
		return ""
	}
	return n.Labels[SiteLabel]
}

// reachable returns the indexes of e's endpoints that node (at site) may
// hold, by the filter of the package comment.
func (d *Dispatcher) reachable(node, site string, svc *corev1.Service, e *discoveryv1.EndpointSlice) []int {
	bySite := site != "" && svc.Annotations[EndpointsAnnotation] == endpointsSite
	var keep []int
	for i, ep := range e.Endpoints {
		if ep.NodeName == nil || *ep.NodeName == "" {
			continue
		}
		on := *ep.NodeName
		if on == node || (bySite && d.nodeSite(on) == site) {
			keep = append(keep, i)
		}
	}
	return keep
}

// filterSlice returns a copy of e holding only the endpoints keep names,
// without resourceVersion and managedFields (its version is sliceVersion).
func filterSlice(e *discoveryv1.EndpointSlice, keep []int) *discoveryv1.EndpointSlice {
	c := *e
	c.ResourceVersion = ""
	c.ManagedFields = nil
	c.Endpoints = make([]discoveryv1.Endpoint, 0, len(keep))
	for _, i := range keep {
		c.Endpoints = append(c.Endpoints, e.Endpoints[i])
	}
	return &c
}

// sliceVersionPrefix starts every filtered slice's version.
const sliceVersionPrefix = "e1."

// sliceVersion hashes the protobuf encoding of the filtered slice (the
// generated code is deterministic).
func sliceVersion(f *discoveryv1.EndpointSlice) string {
	b, err := f.Marshal()
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return sliceVersionPrefix + base64.RawURLEncoding.EncodeToString(sum[:16])
}

// SliceVersion is the version of e filtered for node with the endpoints keep
// names, as the hub sends it and the edge holds it.
func SliceVersion(e *discoveryv1.EndpointSlice, keep []int) string {
	return sliceVersion(filterSlice(e, keep))
}

// sliceVersions caches the filtered slices' versions by slice UID and node:
// the filter is cheap, the encoding and hash are not, and Desired runs at
// every change of the node's set. An entry is valid while the slice's
// resourceVersion and the kept endpoints are the same.
type sliceVersions struct {
	mu sync.Mutex
	// m is guarded by mu: slice UID -> node -> entry.
	m map[string]map[string]sliceVersionEntry
}

type sliceVersionEntry struct {
	sig, v string
}

func sliceSig(e *discoveryv1.EndpointSlice, keep []int) string {
	var b strings.Builder
	b.WriteString(e.ResourceVersion)
	for _, i := range keep {
		b.WriteByte(',')
		b.WriteString(strconv.Itoa(i))
	}
	return b.String()
}

func (sv *sliceVersions) get(node string, e *discoveryv1.EndpointSlice, keep []int) string {
	sig := sliceSig(e, keep)
	uid := string(e.UID)
	sv.mu.Lock()
	if en, ok := sv.m[uid][node]; ok && en.sig == sig {
		sv.mu.Unlock()
		return en.v
	}
	sv.mu.Unlock()
	v := SliceVersion(e, keep)
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.m == nil {
		sv.m = map[string]map[string]sliceVersionEntry{}
	}
	if sv.m[uid] == nil {
		sv.m[uid] = map[string]sliceVersionEntry{}
	}
	sv.m[uid][node] = sliceVersionEntry{sig: sig, v: v}
	return v
}

// forget drops the entries of a deleted slice.
func (sv *sliceVersions) forget(uid string) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	delete(sv.m, uid)
}

// encodeService fills o for a Service or a filtered EndpointSlice of node.
func (d *Dispatcher) encodeService(node string, o *protocol.Object) (uid, rv string, data []byte, err error) {
	switch o.Kind {
	case protocol.KindService:
		var s *corev1.Service
		if s, err = d.svcs.Services(o.Namespace).Get(o.Name); err != nil {
			return
		}
		data, err = protocol.EncodeService(s)
		return string(s.UID), s.ResourceVersion, data, err
	default:
		var e *discoveryv1.EndpointSlice
		if e, err = d.slices.EndpointSlices(o.Namespace).Get(o.Name); err != nil {
			return
		}
		svcName := e.Labels[discoveryv1.LabelServiceName]
		var s *corev1.Service
		if s, err = d.svcs.Services(o.Namespace).Get(svcName); err != nil {
			return // the Service went: a notification follows
		}
		keep := d.reachable(node, d.nodeSite(node), s, e)
		f := filterSlice(e, keep)
		data, err = protocol.EncodeEndpointSlice(f)
		return string(e.UID), d.sliceVers.get(node, e, keep), data, err
	}
}

// namespaceChanged tells every node with a pod (not a mirror pod) in ns.
func (d *Dispatcher) namespaceChanged(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, ok := obj.(interface{ GetNamespace() string })
	if !ok {
		return
	}
	pods, err := d.podsInf.GetIndexer().ByIndex(cache.NamespaceIndex, m.GetNamespace())
	if err != nil {
		d.log.Error("pods by namespace", slog.Any("err", err))
		return
	}
	seen := map[string]bool{}
	for _, o := range pods {
		p := o.(*corev1.Pod)
		if IsMirrorPod(p) || seen[p.Spec.NodeName] {
			continue
		}
		seen[p.Spec.NodeName] = true
		d.notifier.NodeChanged(p.Spec.NodeName)
	}
}

// sliceChanged tells the nodes an update of an EndpointSlice concerns. When
// only its endpoints changed (the common case: a pod became ready, one was
// replaced) and its Service keeps to the node-only filter, only the nodes
// named by an endpoint before or after hold a different copy: the others'
// copies lack those endpoints either way. Otherwise every node of the
// namespace is told.
func (d *Dispatcher) sliceChanged(old, obj any) {
	o, ok1 := old.(*discoveryv1.EndpointSlice)
	e, ok2 := obj.(*discoveryv1.EndpointSlice)
	if !ok1 || !ok2 || !onlyEndpointsDiffer(o, e) {
		d.namespaceChanged(obj)
		return
	}
	if s, err := d.svcs.Services(e.Namespace).Get(e.Labels[discoveryv1.LabelServiceName]); err != nil ||
		s.Annotations[EndpointsAnnotation] == endpointsSite {
		d.namespaceChanged(obj)
		return
	}
	seen := map[string]bool{}
	for _, eps := range [][]discoveryv1.Endpoint{o.Endpoints, e.Endpoints} {
		for _, ep := range eps {
			if ep.NodeName == nil || seen[*ep.NodeName] {
				continue
			}
			seen[*ep.NodeName] = true
			if d.nodeRunsIn(*ep.NodeName, e.Namespace) {
				d.notifier.NodeChanged(*ep.NodeName)
			}
		}
	}
}

// onlyEndpointsDiffer reports whether a and b differ in nothing a node's
// copy holds but their endpoints.
func onlyEndpointsDiffer(a, b *discoveryv1.EndpointSlice) bool {
	ca, cb := *a, *b
	ca.Endpoints, cb.Endpoints = nil, nil
	ca.ResourceVersion, cb.ResourceVersion = "", ""
	ca.ManagedFields, cb.ManagedFields = nil, nil
	ba, err1 := ca.Marshal()
	bb, err2 := cb.Marshal()
	return err1 == nil && err2 == nil && string(ba) == string(bb)
}

// siteChanged tells every edge node: the site of a node changed, and with it
// which endpoints the nodes of both sites hold.
func (d *Dispatcher) siteChanged() {
	ns, err := d.nodes.List(everything)
	if err != nil {
		return
	}
	for _, n := range ns {
		if _, ok := n.Labels[EdgeRoleLabel]; ok {
			d.notifier.NodeChanged(n.Name)
		}
	}
}
