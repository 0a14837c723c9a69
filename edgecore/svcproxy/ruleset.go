// Package svcproxy routes the node's traffic to Services: a connection
// from a pod of the node (or from the host) to a ClusterIP:port reaches a
// ready endpoint the node holds, with the cloud reachable or not.
//
// It has two parts. Rules is a pure engine: the store's Services and the
// node's filtered EndpointSlices in, the desired Ruleset out (plus the
// objects it skipped, and why). Proxy is the IO shell: an agent Observer
// that rebuilds the Ruleset after each commit touching Services or
// EndpointSlices, after a change of the statuses the node reports of its
// pods, and at start, and applies it (when it changed) to the kernel in ONE
// nftables batch (github.com/google/nftables: netlink, no nft or iptables
// binary) that deletes and re-creates its own table, "inet tether". A
// batch is atomic: no packet ever sees half a ruleset, and whatever a
// previous run left (a Service deleted while edgecore was down) is gone
// with the first batch. Nothing outside that table is touched; Remove
// (edgecore reset) deletes it. When a UDP Service port loses an endpoint,
// the conntrack entries that send its clients there are deleted
// (github.com/ti-mo/conntrack), so their next datagram picks a live
// endpoint (TCP connections to a gone endpoint fail and are made anew).
//
// The endpoints that are pods of this node take their address and
// readiness from what the node reports of them now, not from the cloud's
// slice: after a reboot with the cloud away, the pods run again at new
// addresses that only the node knows.
//
// # The ruleset
//
//   - chain services (nat, jumped to from prerouting for the traffic of
//     Config.Sources, the pod network, and from output for the host's):
//     one rule per ClusterIP, protocol and
//     port with a ready endpoint, "goto" a chain per Service port whose
//     rules pick an endpoint at random (numgen random, each endpoint
//     equally likely) and DNAT to it. The nat hooks see the first packet
//     of a connection only; conntrack translates the rest, so a rule
//     check per Service costs at connection setup only. A host of the LAN
//     that routes the service range to the node is not a source: its
//     packets to ClusterIPs are rejected like any other of the range
//     (with no Sources, any source is one, as with kube-proxy).
//   - NodePort, opt-in per Service (annotation tether.io/nodeport: "true"
//     on a Service of type NodePort or LoadBalancer): chain nodeports,
//     jumped to from prerouting and output for any source, sends the
//     Service's nodePort on every local address of the node (fib daddr
//     type local) to the Service's chain, so a store's LAN reaches it. Off by default:
//     the LAN sees nothing it was not offered.
//   - postrouting (nat): a connection DNATed from the service range is
//     masqueraded. That makes a pod reaching itself through its Service
//     (hairpin) work, and pod-to-pod replies on the same bridge pass
//     conntrack even where br_netfilter is not loaded; the endpoint sees
//     the node's bridge address as the source (kube-proxy's masqueradeAll).
//   - the default/kubernetes Service (Input.APIService, its ClusterIP:443)
//     goes to the in-cluster API at the edge (Input.APIServer, the
//     metaserver's pod listener on the node), not to the cloud's API
//     servers its endpoints name: pods keep the cluster's
//     KUBERNETES_SERVICE_HOST and reach the edge, online or not. The
//     DNATed packets are delivered locally (no masquerade), so the
//     listener sees the pod's address.
//   - reject (filter, prerouting and output, after the DNAT): any packet
//     still addressed to the service range (Config.ServiceCIDR) is
//     rejected (TCP reset, ICMP port unreachable otherwise): a Service
//     with no ready endpoint here, a ClusterIP of a Service the node does
//     not hold, an unallocated address. Traffic for a ClusterIP never
//     leaves by the default route.
//
// # What is skipped (and logged)
//
// A Service's ClusterIP outside the service range is not routed (a forged
// or misconfigured Service must not capture other addresses of the node's
// traffic); IPv6 ClusterIPs are not routed yet. An EndpointSlice with an
// address that is not an IPv4 address a pod may have (unspecified,
// loopback, link-local, multicast, or inside the service range) or a port
// outside 1..65535 is skipped whole: it is not what the API server
// validates, so none of it is trusted. Endpoints whose Ready condition is
// false are left out (nil counts as ready, as the API says).
//
// # Cost
//
// Computing the Ruleset of 1,000 Services takes about 3 ms, applying it
// (one batch of ~6,000 netlink messages: 1,000 chains, their rules, the
// kernel's acknowledgements) 120-230 ms on a shared 2-core box
// (BenchmarkRules1000, BenchmarkApply1000 as root). A change rebuilds the
// whole table; a ruleset equal to the last one applied is not applied.
package svcproxy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// NodePortAnnotation set to "true" on a Service of type NodePort or
// LoadBalancer opens its nodePorts on the edge node.
const NodePortAnnotation = "tether.io/nodeport"

// Proto is an IP protocol number as nftables' meta l4proto holds it.
type Proto uint8

// The protocols a Service port may have.
const (
	TCP  Proto = 6
	UDP  Proto = 17
	SCTP Proto = 132
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// Ruleset is what the kernel should hold.
type Ruleset struct {
	// ServiceCIDR is the range rejected unless DNATed.
	ServiceCIDR netip.Prefix
	// Sources are the networks whose traffic (prerouting) may use
	// ClusterIPs; none: any. The host's own traffic always may.
	Sources []netip.Prefix
	// Ports are the Service ports, sorted by Service, then port.
	Ports []ServicePort
}

// ServicePort is one port of one Service.
type ServicePort struct {
	// Service is "<namespace>/<name>", Name the port's name ("" if
	// unnamed).
	Service, Name string
	ClusterIP     netip.Addr
	Proto         Proto
	Port          uint16
	// NodePort is the node port opened for it (0: none).
	NodePort uint16
	// Endpoints are the ready endpoints, sorted; none: the port is
	// rejected.
	Endpoints []netip.AddrPort
}

// Skipped is an object, or part of one, left out of the Ruleset.
type Skipped struct {
	// Object is "service <ns>/<name>" or "endpointslice <ns>/<name>".
	Object string
	Reason string
}

// Input is what a Ruleset is made of.
type Input struct {
	// ServiceCIDR is the service range.
	ServiceCIDR netip.Prefix
	// Sources are the networks that may use ClusterIPs (Ruleset.Sources).
	Sources []netip.Prefix
	// NodeName is the node's name.
	NodeName string
	// Services and Slices are the store's whole content of both kinds.
	Services []*corev1.Service
	Slices   []*discoveryv1.EndpointSlice
	// Pods are the statuses the node reports of its own pods, by UID.
	Pods map[string]LocalPod
	// APIService and APIServer, if valid, route the default/kubernetes
	// Service, APIService (its ClusterIP, port 443), to APIServer, the
	// in-cluster API at the edge (the metaserver's pod listener): pods
	// keep the cluster's KUBERNETES_SERVICE_HOST. The store's
	// default/kubernetes Service, whose endpoints are the cloud's API
	// servers, is not routed then. APIService must be in the service
	// range and APIServer outside it (else both are skipped).
	APIService, APIServer netip.AddrPort
}

// KubernetesService is the Service the in-cluster API takes over.
const KubernetesService = "default/kubernetes"

// LocalPod is what the node knows of one of its pods now.
type LocalPod struct {
	// IP is the pod's address; invalid while it has none.
	IP    netip.Addr
	Ready bool
}

// Rules computes the Ruleset of in.
//
// An endpoint that is a pod of this node (its nodeName is the node's, its
// targetRef a Pod) takes its address and readiness from in.Pods, not from
// the slice: after a reboot with the cloud away, the node's pods run
// again at new addresses the cloud's slices do not know yet. Such an
// endpoint whose pod has no status or no address here is left out.
func Rules(in Input) (Ruleset, []Skipped) {
	cidr, services, slices_ := in.ServiceCIDR, in.Services, in.Slices
	rs := Ruleset{ServiceCIDR: cidr.Masked()}
	for _, p := range in.Sources {
		if p.Addr().Is4() {
			rs.Sources = append(rs.Sources, p.Masked())
		}
	}
	var skipped []Skipped
	// Ready endpoints by service "<ns>/<name>", then port name and protocol.
	type portKey struct {
		name  string
		proto Proto
	}
	eps := map[string]map[portKey][]netip.AddrPort{}
	for _, es := range slices_ {
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		if es.AddressType != discoveryv1.AddressTypeIPv4 {
			continue // IPv6 and FQDN slices: not routed
		}
		what := "endpointslice " + es.Namespace + "/" + es.Name
		addrs, ports, err := checkSlice(in, es)
		if err != nil {
			skipped = append(skipped, Skipped{what, err.Error()})
			continue
		}
		key := es.Namespace + "/" + svc
		if eps[key] == nil {
			eps[key] = map[portKey][]netip.AddrPort{}
		}
		for _, p := range ports {
			for _, a := range addrs {
				ap := netip.AddrPortFrom(a, p.port)
				k := portKey{p.name, p.proto}
				if !slices.Contains(eps[key][k], ap) {
					eps[key][k] = append(eps[key][k], ap)
				}
			}
		}
	}
	api := in.APIService.IsValid() && in.APIServer.IsValid()
	if api {
		what := "service " + KubernetesService + " (the in-cluster API)"
		switch {
		case !in.APIService.Addr().Is4() || !cidr.Contains(in.APIService.Addr()):
			skipped = append(skipped, Skipped{what, fmt.Sprintf("%s is outside the service range %s", in.APIService.Addr(), cidr)})
			api = false
		case !in.APIServer.Addr().Is4() || !endpointAddr(cidr, in.APIServer.Addr()) || in.APIServer.Port() == 0:
			skipped = append(skipped, Skipped{what, fmt.Sprintf("%s may not be an endpoint", in.APIServer)})
			api = false
		default:
			rs.Ports = append(rs.Ports, ServicePort{Service: KubernetesService, Name: "https", ClusterIP: in.APIService.Addr(),
				Proto: TCP, Port: in.APIService.Port(), Endpoints: []netip.AddrPort{in.APIServer}})
		}
	}
	for _, s := range services {
		if api && s.Namespace+"/"+s.Name == KubernetesService {
			continue // the in-cluster API at the edge, above
		}
		if api && s.Spec.ClusterIP == in.APIService.Addr().String() {
			skipped = append(skipped, Skipped{"service " + s.Namespace + "/" + s.Name,
				fmt.Sprintf("clusterIP %s is the kubernetes Service's", s.Spec.ClusterIP)})
			continue
		}
		if s.Spec.Type == corev1.ServiceTypeExternalName || s.Spec.ClusterIP == corev1.ClusterIPNone || s.Spec.ClusterIP == "" {
			continue // no ClusterIP to route
		}
		key := s.Namespace + "/" + s.Name
		what := "service " + key
		ip, err := netip.ParseAddr(s.Spec.ClusterIP)
		if err != nil {
			skipped = append(skipped, Skipped{what, fmt.Sprintf("clusterIP %q is not an IP address", s.Spec.ClusterIP)})
			continue
		}
		if !ip.Is4() {
			skipped = append(skipped, Skipped{what, fmt.Sprintf("clusterIP %s: IPv6 Services are not routed", ip)})
			continue
		}
		if !cidr.Contains(ip) {
			skipped = append(skipped, Skipped{what, fmt.Sprintf("clusterIP %s is outside the service range %s", ip, cidr)})
			continue
		}
		nodePorts := s.Annotations[NodePortAnnotation] == "true" &&
			(s.Spec.Type == corev1.ServiceTypeNodePort || s.Spec.Type == corev1.ServiceTypeLoadBalancer)
		for _, p := range s.Spec.Ports {
			proto, ok := protoOf(p.Protocol)
			if !ok || p.Port < 1 || p.Port > 65535 {
				skipped = append(skipped, Skipped{what, fmt.Sprintf("port %q: protocol %q, port %d not routed", p.Name, p.Protocol, p.Port)})
				continue
			}
			sp := ServicePort{Service: key, Name: p.Name, ClusterIP: ip, Proto: proto, Port: uint16(p.Port)}
			if nodePorts && p.NodePort >= 1 && p.NodePort <= 65535 {
				sp.NodePort = uint16(p.NodePort)
			}
			sp.Endpoints = slices.Clone(eps[key][portKey{p.Name, proto}])
			slices.SortFunc(sp.Endpoints, func(a, b netip.AddrPort) int { return a.Compare(b) })
			rs.Ports = append(rs.Ports, sp)
		}
	}
	slices.SortFunc(rs.Ports, func(a, b ServicePort) int {
		return cmp.Or(strings.Compare(a.Service, b.Service), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto))
	})
	slices.SortFunc(skipped, func(a, b Skipped) int {
		return cmp.Or(strings.Compare(a.Object, b.Object), strings.Compare(a.Reason, b.Reason))
	})
	return rs, skipped
}

type slicePort struct {
	name  string
	proto Proto
	port  uint16
}

// checkSlice returns the ready addresses and the ports of es, or why the
// slice is not to be trusted.
func checkSlice(in Input, es *discoveryv1.EndpointSlice) ([]netip.Addr, []slicePort, error) {
	var ports []slicePort
	for _, p := range es.Ports {
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		if p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
			return nil, nil, fmt.Errorf("port %q: not in 1..65535", name)
		}
		proto := TCP
		if p.Protocol != nil {
			var ok bool
			if proto, ok = protoOf(*p.Protocol); !ok {
				return nil, nil, fmt.Errorf("port %q: protocol %q", name, *p.Protocol)
			}
		}
		ports = append(ports, slicePort{name, proto, uint16(*p.Port)})
	}
	var addrs []netip.Addr
	for _, ep := range es.Endpoints {
		for _, s := range ep.Addresses {
			a, err := netip.ParseAddr(s)
			if err != nil || !a.Is4() {
				return nil, nil, fmt.Errorf("address %q is not an IPv4 address", s)
			}
			if !endpointAddr(in.ServiceCIDR, a) {
				return nil, nil, fmt.Errorf("address %s may not be an endpoint", a)
			}
		}
		if in.NodeName != "" && ep.NodeName != nil && *ep.NodeName == in.NodeName && ep.TargetRef != nil &&
			ep.TargetRef.Kind == "Pod" && ep.TargetRef.UID != "" {
			// A pod of this node: as it is now.
			if p, ok := in.Pods[string(ep.TargetRef.UID)]; ok && p.Ready && p.IP.Is4() && endpointAddr(in.ServiceCIDR, p.IP) {
				addrs = append(addrs, p.IP)
			}
			continue
		}
		if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
			continue
		}
		for _, s := range ep.Addresses {
			addrs = append(addrs, netip.MustParseAddr(s)) // checked above
		}
	}
	return addrs, ports, nil
}

// endpointAddr says whether a may be an endpoint: not an address of the
// service range, nor one no pod may have.
func endpointAddr(cidr netip.Prefix, a netip.Addr) bool {
	return !(a.IsUnspecified() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() ||
		a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || cidr.Contains(a))
}

func protoOf(p corev1.Protocol) (Proto, bool) {
	switch p {
	case corev1.ProtocolTCP, "":
		return TCP, true
	case corev1.ProtocolUDP:
		return UDP, true
	case corev1.ProtocolSCTP:
		return SCTP, true
	}
	return 0, false
}

// String renders the Ruleset in the spirit of `nft list table`, one line
// per rule, for tests and logs.
func (rs Ruleset) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "reject ip daddr %s\n", rs.ServiceCIDR)
	if len(rs.Sources) > 0 {
		fmt.Fprintf(&b, "clusterIPs from %v and the host\n", rs.Sources)
	}
	for _, p := range rs.Ports {
		name := p.Service
		if p.Name != "" {
			name += ":" + p.Name
		}
		if len(p.Endpoints) == 0 {
			fmt.Fprintf(&b, "%s %s:%d %s -> reject (no endpoint)\n", name, p.ClusterIP, p.Port, p.Proto)
			continue
		}
		eps := make([]string, len(p.Endpoints))
		for i, e := range p.Endpoints {
			eps[i] = e.String()
		}
		fmt.Fprintf(&b, "%s %s:%d %s -> random %s", name, p.ClusterIP, p.Port, p.Proto, strings.Join(eps, " "))
		if p.NodePort != 0 {
			fmt.Fprintf(&b, " (nodePort %d)", p.NodePort)
		}
		b.WriteString("\n")
	}
	return b.String()
}
