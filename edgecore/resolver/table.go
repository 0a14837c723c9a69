package resolver

import (
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// table is the resolver's view of the store: every Service the node holds,
// with the ready endpoints of its filtered slices. It is built whole and
// never changed after: readers share it without locks.
type table struct {
	// services by "<name>.<namespace>", lower case.
	services map[string]*service
}

type service struct {
	// addrs answer A and AAAA: the ClusterIPs, or for a headless Service
	// the ready endpoints' addresses (the node's filtered slices: only
	// endpoints it can reach).
	addrs []netip.Addr
	// external is the target of an ExternalName Service, with a trailing
	// dot; "" otherwise.
	external string
	// headless is a Service without a ClusterIP.
	headless bool
	ports    []port
}

type port struct {
	name, proto string
	port        uint16
}

// buildTable reads the Services and EndpointSlices of the store. An object
// that does not decode is skipped (the agent checked it before storing it).
func buildTable(tx *store.Tx) (*table, error) {
	t := &table{services: map[string]*service{}}
	err := tx.ForEachObject(protocol.KindService, func(o *protocol.Object) error {
		s, err := protocol.DecodeService(o.Data)
		if err != nil {
			return nil
		}
		e := &service{}
		switch {
		case s.Spec.Type == corev1.ServiceTypeExternalName:
			if s.Spec.ExternalName != "" {
				e.external = strings.ToLower(strings.TrimSuffix(s.Spec.ExternalName, ".")) + "."
			}
		case s.Spec.ClusterIP != corev1.ClusterIPNone:
			ips := s.Spec.ClusterIPs
			if len(ips) == 0 && s.Spec.ClusterIP != "" {
				ips = []string{s.Spec.ClusterIP}
			}
			for _, ip := range ips {
				if a, err := netip.ParseAddr(ip); err == nil {
					e.addrs = append(e.addrs, a)
				}
			}
			for _, p := range s.Spec.Ports {
				proto := strings.ToLower(string(p.Protocol))
				if proto == "" {
					proto = "tcp" // the API server's default
				}
				if p.Name != "" && p.Port > 0 && p.Port < 65536 {
					e.ports = append(e.ports, port{strings.ToLower(p.Name), proto, uint16(p.Port)})
				}
			}
		default:
			e.headless = true // its addresses and ports are the slices', below
		}
		t.services[strings.ToLower(s.Name+"."+s.Namespace)] = e
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = tx.ForEachObject(protocol.KindEndpointSlice, func(o *protocol.Object) error {
		es, err := protocol.DecodeEndpointSlice(o.Data)
		if err != nil {
			return nil
		}
		e := t.services[strings.ToLower(es.Labels[discoveryv1.LabelServiceName]+"."+es.Namespace)]
		if e == nil || !e.headless {
			return nil
		}
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil && !slices.Contains(e.addrs, ip) {
					e.addrs = append(e.addrs, ip)
				}
			}
		}
		for _, p := range es.Ports {
			if p.Name == nil || *p.Name == "" || p.Port == nil || *p.Port <= 0 || *p.Port > 65535 {
				continue
			}
			proto := "tcp"
			if p.Protocol != nil {
				proto = strings.ToLower(string(*p.Protocol))
			}
			pe := port{strings.ToLower(*p.Name), proto, uint16(*p.Port)}
			if !slices.Contains(e.ports, pe) {
				e.ports = append(e.ports, pe)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, e := range t.services {
		slices.SortFunc(e.addrs, func(a, b netip.Addr) int { return a.Compare(b) })
	}
	return t, nil
}
