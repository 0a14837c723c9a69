package svcproxy

import (
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
)

// Stale is a UDP Service port's endpoint a new ruleset dropped. A UDP
// "connection" has no end: without this, conntrack keeps sending a
// client's datagrams to the endpoint that went (for as long as the client
// keeps talking) instead of a new one.
type Stale struct {
	// Service is the ClusterIP and port the client sent to.
	Service netip.AddrPort
	// Endpoint is where conntrack sends them.
	Endpoint netip.AddrPort
}

// StaleUDP lists the endpoints of UDP Service ports in old that are not
// in new (a port or Service gone drops all of its endpoints).
func StaleUDP(old, new Ruleset) []Stale {
	type key struct {
		svc netip.AddrPort
		ep  netip.AddrPort
	}
	kept := map[key]bool{}
	for _, p := range new.Ports {
		if p.Proto != UDP {
			continue
		}
		for _, ep := range p.Endpoints {
			kept[key{netip.AddrPortFrom(p.ClusterIP, p.Port), ep}] = true
		}
	}
	var out []Stale
	for _, p := range old.Ports {
		if p.Proto != UDP {
			continue
		}
		svc := netip.AddrPortFrom(p.ClusterIP, p.Port)
		for _, ep := range p.Endpoints {
			if !kept[key{svc, ep}] {
				out = append(out, Stale{svc, ep})
			}
		}
	}
	return out
}

// ForgetUDP deletes the conntrack entries of the stale pairs: UDP, sent
// to the Service's ClusterIP and port, answered by the endpoint. It
// returns how many it deleted.
func (k Kernel) ForgetUDP(stale []Stale) (int, error) {
	if len(stale) == 0 {
		return 0, nil
	}
	cfg := &netlink.Config{}
	if k.NetNS != 0 {
		cfg.NetNS = k.NetNS
	}
	c, err := conntrack.Dial(cfg)
	if err != nil {
		return 0, fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		return 0, fmt.Errorf("conntrack: dump: %w", err)
	}
	want := map[Stale]bool{}
	for _, s := range stale {
		want[s] = true
	}
	n := 0
	for _, f := range flows {
		const udp = 17
		if f.TupleOrig.Proto.Protocol != udp {
			continue
		}
		s := Stale{
			Service:  netip.AddrPortFrom(f.TupleOrig.IP.DestinationAddress.Unmap(), f.TupleOrig.Proto.DestinationPort),
			Endpoint: netip.AddrPortFrom(f.TupleReply.IP.SourceAddress.Unmap(), f.TupleReply.Proto.SourcePort),
		}
		if !want[s] {
			continue
		}
		if err := c.Delete(f); err != nil {
			return n, fmt.Errorf("conntrack: delete: %w", err)
		}
		n++
	}
	return n, nil
}
