package svcproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Kernel handles rulesets in one nftables table.
type Kernel struct {
	// Table is the name of the inet table (default "tether").
	Table string
	// NetNS, if not 0, is an open network namespace file the rules go
	// into (tests); default the calling process's.
	NetNS int
}

func (k Kernel) conn() (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(bigBuffers)}
	if k.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(k.NetNS))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

// bufferSize bounds a batch (sent in one message) and its acknowledgements:
// 1,000 Services take about 1.5 MB. Set with SO_SNDBUFFORCE and
// SO_RCVBUFFORCE (the caller has CAP_NET_ADMIN, or no rule could be
// changed), so net.core.wmem_max does not cap it; the kernel allocates as
// a batch needs, not up front.
const bufferSize = 64 << 20

func bigBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, bufferSize); serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bufferSize)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("netlink buffers: %w", err)
	}
	return nil
}

func (k Kernel) table() *nftables.Table {
	name := k.Table
	if name == "" {
		name = "tether"
	}
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: name}
}

// Apply replaces the table with rs in one batch: the table is added (so
// that deleting it cannot fail), deleted, and built again. The kernel
// applies the batch whole or not at all.
func (k Kernel) Apply(rs Ruleset) error {
	c, err := k.conn()
	if err != nil {
		return err
	}
	t := k.table()
	c.AddTable(t)
	c.DelTable(t)
	t = c.AddTable(t)
	build(c, t, rs)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: apply table inet %s: %w", t.Name, err)
	}
	return nil
}

// Remove deletes the table; a missing one is no error.
func (k Kernel) Remove() error {
	c, err := k.conn()
	if err != nil {
		return err
	}
	t := k.table()
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: delete table inet %s: %w", t.Name, err)
	}
	return nil
}

// Exists says whether the table is there.
func (k Kernel) Exists() (bool, error) {
	c, err := k.conn()
	if err != nil {
		return false, err
	}
	_, err = c.ListTableOfFamily(k.table().Name, nftables.TableFamilyINet)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return err == nil, err
}

// Rules counts the rules of each chain of the table (tests).
func (k Kernel) Rules() (map[string]int, error) {
	c, err := k.conn()
	if err != nil {
		return nil, err
	}
	t := k.table()
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, ch := range chains {
		if ch.Table.Name != t.Name {
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nil, err
		}
		out[ch.Name] = len(rules)
	}
	return out, nil
}

// Registers.
const (
	reg1 = 1
	reg2 = 2
)

// ctMarkBit marks a connection DNATed here, for the masquerade.
const ctMarkBit = 0x00400000

// build adds rs's chains and rules to the batch.
func build(c *nftables.Conn, t *nftables.Table, rs Ruleset) {
	accept := nftables.ChainPolicyAccept
	hook := func(name string, typ nftables.ChainType, h *nftables.ChainHook, prio int32) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: h,
			Priority: nftables.ChainPriorityRef(nftables.ChainPriority(prio)), Policy: &accept})
	}
	services := c.AddChain(&nftables.Chain{Name: "services", Table: t})
	nodeports := c.AddChain(&nftables.Chain{Name: "nodeports", Table: t})
	ipv4 := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.NFPROTO_IPV4}},
	}
	jump := func(ch *nftables.Chain, match ...expr.Any) []expr.Any {
		e := append(ipv4[:len(ipv4):len(ipv4)], match...)
		return append(e, &expr.Verdict{Kind: expr.VerdictJump, Chain: ch.Name})
	}
	// DNAT at dstnat priority: the sources' traffic in prerouting, the
	// host's in output; node ports for anyone.
	pre := hook("prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, -100)
	if len(rs.Sources) == 0 {
		c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: jump(services)})
	}
	for _, src := range rs.Sources {
		c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: jump(services,
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: prefixMask(src), Xor: be32(0)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: src.Addr().AsSlice()})})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: jump(nodeports)})
	out := hook("output", nftables.ChainTypeNAT, nftables.ChainHookOutput, -100)
	c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: jump(services)})
	c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: jump(nodeports)})
	// Masquerade what was DNATed here.
	c.AddRule(&nftables.Rule{Table: t, Chain: hook("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, 100),
		Exprs: []expr.Any{
			&expr.Ct{Key: expr.CtKeyMARK, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: be32(ctMarkBit), Xor: be32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: be32(0)},
			&expr.Masq{},
		}})
	// Reject what is still addressed to the service range after the DNAT.
	cidr := rs.ServiceCIDR
	reject := func(ch *nftables.Chain) {
		match := append(ipv4[:len(ipv4):len(ipv4)],
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: prefixMask(cidr), Xor: be32(0)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: cidr.Addr().AsSlice()},
		)
		tcp := append(match[:len(match):len(match)],
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Reject{Type: unix.NFT_REJECT_TCP_RST})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: tcp})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(match[:len(match):len(match)],
			&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH})})
	}
	reject(hook("reject-prerouting", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, -90))
	reject(hook("reject-output", nftables.ChainTypeFilter, nftables.ChainHookOutput, -90))

	for i, p := range rs.Ports {
		if len(p.Endpoints) == 0 {
			continue // rejected above
		}
		svc := c.AddChain(&nftables.Chain{Name: "svc-" + strconv.Itoa(i), Table: t})
		l4 := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{byte(p.Proto)}},
		}
		dport := func(port uint16) []expr.Any {
			return []expr.Any{
				&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: be16(port)},
			}
		}
		to := &expr.Verdict{Kind: expr.VerdictGoto, Chain: svc.Name}
		e := []expr.Any{
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: p.ClusterIP.AsSlice()},
		}
		e = append(append(append(e, l4...), dport(p.Port)...), to)
		c.AddRule(&nftables.Rule{Table: t, Chain: services, Exprs: e})
		if p.NodePort != 0 {
			e := []expr.Any{&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ne32(unix.RTN_LOCAL)}}
			e = append(append(append(e, l4...), dport(p.NodePort)...), to)
			c.AddRule(&nftables.Rule{Table: t, Chain: nodeports, Exprs: e})
		}
		// Mark the connection for the masquerade, then pick an endpoint:
		// endpoint i of n is taken with probability 1/(n-i) if none
		// before it was, so each with probability 1/n.
		c.AddRule(&nftables.Rule{Table: t, Chain: svc, Exprs: []expr.Any{
			&expr.Ct{Key: expr.CtKeyMARK, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: be32(^uint32(ctMarkBit)), Xor: be32(ctMarkBit)},
			&expr.Ct{Key: expr.CtKeyMARK, Register: reg1, SourceRegister: true},
		}})
		n := len(p.Endpoints)
		for j, ep := range p.Endpoints {
			var e []expr.Any
			if left := n - j; left > 1 {
				e = append(e, &expr.Numgen{Register: reg1, Modulus: uint32(left), Type: unix.NFT_NG_RANDOM},
					&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ne32(0)})
			}
			e = append(e,
				&expr.Immediate{Register: reg1, Data: ep.Addr().AsSlice()},
				&expr.Immediate{Register: reg2, Data: be16(ep.Port())},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: reg1, RegProtoMin: reg2, Specified: true})
			c.AddRule(&nftables.Rule{Table: t, Chain: svc, Exprs: e})
		}
	}
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// ne32 is v in host order, as nftables keeps numgen's and fib's results.
func ne32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

func prefixMask(p netip.Prefix) []byte {
	return be32(^uint32(0) << (32 - p.Bits()))
}
