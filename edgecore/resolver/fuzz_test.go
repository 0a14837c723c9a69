package resolver

import (
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzAnswer feeds arbitrary packets to the answer engine: it must never
// panic, never answer a response, and keep every UDP answer within 1232
// bytes.
func FuzzAnswer(f *testing.F) {
	f.Add(query("web.shop.svc.cluster.local.", dnsmessage.TypeA))
	f.Add(query("_http._tcp.web.shop.svc.cluster.local.", dnsmessage.TypeSRV))
	f.Add(query("many.shop.svc.cluster.local.", dnsmessage.TypeALL))
	f.Add(query("example.org.", dnsmessage.TypeAAAA))
	f.Add([]byte{0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0xc0, 0x0c})
	t := &table{services: map[string]*service{
		"web.shop":  {addrs: []netip.Addr{netip.MustParseAddr("10.96.0.10")}, ports: []port{{"http", "tcp", 80}}},
		"ext.shop":  {external: "db.example.org."},
		"many.shop": {headless: true},
	}}
	for i := range 300 {
		m := t.services["many.shop"]
		m.addrs = append(m.addrs, netip.AddrFrom4([4]byte{10, 244, byte(i / 250), byte(i%250 + 1)}), netip.MustParseAddr("fd00::1"))
	}
	f.Fuzz(func(tt *testing.T, q []byte) {
		for _, tcp := range []bool{false, true} {
			v, resp := answer(t, "cluster.local.", q, tcp)
			if len(q) >= 3 && q[2]&0x80 != 0 && v != drop {
				tt.Fatalf("answered a response: %v", v)
			}
			if v == reply && !tcp && len(resp) > maxUDPAnswer {
				tt.Fatalf("UDP answer of %d bytes", len(resp))
			}
			if v == reply {
				var m dnsmessage.Message
				if err := m.Unpack(resp); err != nil {
					tt.Fatalf("answer does not parse: %v", err)
				}
			}
		}
	})
}
