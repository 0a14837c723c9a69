package svcproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// newNetNS opens a new, empty network namespace for the test (root only)
// and returns its file descriptor. The rules go there, never into the
// host's.
func newNetNS(tb testing.TB) int {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("nftables needs root")
	}
	fdc, errc := make(chan int), make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		fd, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		fdc <- fd
	}()
	select {
	case err := <-errc:
		tb.Fatalf("new network namespace: %v", err)
		return 0
	case fd := <-fdc:
		tb.Cleanup(func() { unix.Close(fd) })
		return fd
	}
}

// manyServices is a ruleset of n Services, one port each, with 3
// endpoints.
func manyServices(n int) Ruleset {
	rs := Ruleset{ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12")}
	for i := range n {
		p := ServicePort{Service: fmt.Sprintf("ns/svc-%d", i), ClusterIP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}),
			Proto: TCP, Port: 80}
		for j := range 3 {
			p.Endpoints = append(p.Endpoints, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, byte(i % 250), byte(j + 2)}), 8080))
		}
		if i%10 == 0 {
			p.NodePort = uint16(30000 + i)
		}
		rs.Ports = append(rs.Ports, p)
	}
	return rs
}

// The kernel takes the ruleset, replaces it whole on the next Apply, and
// Remove deletes the table.
func TestKernelApply(t *testing.T) {
	k := Kernel{Table: "tether-test", NetNS: newNetNS(t)}
	if ok, err := k.Exists(); err != nil || ok {
		t.Fatalf("before: exists %v, %v", ok, err)
	}
	rs := manyServices(3)
	rs.Ports = append(rs.Ports, ServicePort{Service: "ns/empty", ClusterIP: netip.MustParseAddr("10.96.9.9"), Proto: UDP, Port: 53})
	if err := k.Apply(rs); err != nil {
		t.Fatal(err)
	}
	got, err := k.Rules()
	if err != nil {
		t.Fatal(err)
	}
	// services: a rule per port with endpoints; nodeports: svc-0's;
	// svc-i: the mark and 3 endpoints; no chain for "empty".
	want := map[string]int{"prerouting": 2, "output": 2, "postrouting": 1, "reject-prerouting": 2, "reject-output": 2,
		"services": 3, "nodeports": 1, "svc-0": 4, "svc-1": 4, "svc-2": 4}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rules per chain:\n got %v\nwant %v", got, want)
	}
	rs.Ports = rs.Ports[:1]
	if err := k.Apply(rs); err != nil {
		t.Fatal(err)
	}
	got, err = k.Rules()
	if err != nil {
		t.Fatal(err)
	}
	if got["services"] != 1 || got["nodeports"] != 1 || got["svc-1"] != 0 || len(got) != 8 {
		t.Fatalf("after replacing: %v", got)
	}
	if err := k.Remove(); err != nil {
		t.Fatal(err)
	}
	if ok, err := k.Exists(); err != nil || ok {
		t.Fatalf("after Remove: exists %v, %v", ok, err)
	}
	if err := k.Remove(); err != nil {
		t.Fatalf("Remove of no table: %v", err)
	}
}

// BenchmarkApply1000 applies a ruleset of 1,000 Services (3 endpoints
// each, a tenth with a node port) in one batch, replacing the previous.
func BenchmarkApply1000(b *testing.B) {
	k := Kernel{Table: "tether-bench", NetNS: newNetNS(b)}
	rs := manyServices(1000)
	b.ResetTimer()
	for b.Loop() {
		if err := k.Apply(rs); err != nil {
			b.Fatal(err)
		}
	}
}

// inNetNS runs f on a thread in the network namespace fd (the thread is
// thrown away after).
func inNetNS(t *testing.T, fd int, f func() error) {
	t.Helper()
	errc := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// A UDP client of a Service keeps its conntrack entry to the endpoint it
// got; when that endpoint goes from the ruleset, ForgetUDP deletes the
// entry (and only that one), so the next datagram is routed anew.
func TestForgetUDP(t *testing.T) {
	fd := newNetNS(t)
	k := Kernel{Table: "tether-test", NetNS: fd}
	// In the namespace, the host's traffic to the ClusterIP is DNATed to
	// loopback addresses (the engine would refuse those as endpoints; the
	// kernel takes them, and nothing leaves the namespace).
	svc := netip.MustParseAddrPort("10.96.0.53:53")
	ep1, ep2 := netip.MustParseAddrPort("127.0.0.5:5353"), netip.MustParseAddrPort("127.0.0.6:5353")
	one := func(ep netip.AddrPort) Ruleset {
		return Ruleset{ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12"), Ports: []ServicePort{
			{Service: "ns/dns", ClusterIP: svc.Addr(), Proto: UDP, Port: svc.Port(), Endpoints: []netip.AddrPort{ep}},
			{Service: "ns/tcp", ClusterIP: svc.Addr(), Proto: TCP, Port: svc.Port(), Endpoints: []netip.AddrPort{ep}}}}
	}
	if err := k.Apply(one(ep1)); err != nil {
		t.Fatal(err)
	}
	send := func() {
		inNetNS(t, fd, func() error {
			for _, args := range [][]string{{"link", "set", "lo", "up"}, {"route", "replace", "10.96.0.0/12", "dev", "lo"}} {
				if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
					return fmt.Errorf("ip %v: %v: %s", args, err, out)
				}
			}
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(svc))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("query"))
			return err
		})
	}
	send()
	flows := func() []string {
		c, err := conntrack.Dial(&netlink.Config{NetNS: fd})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fs, err := c.Dump(nil)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, f := range fs {
			if f.TupleOrig.Proto.Protocol == 17 {
				out = append(out, fmt.Sprintf("%s:%d>%s:%d", f.TupleOrig.IP.DestinationAddress, f.TupleOrig.Proto.DestinationPort,
					f.TupleReply.IP.SourceAddress, f.TupleReply.Proto.SourcePort))
			}
		}
		return out
	}
	if got := flows(); fmt.Sprint(got) != "[10.96.0.53:53>127.0.0.5:5353]" {
		t.Fatalf("before: %v", got)
	}
	// The TCP port losing its endpoint too is no UDP business.
	stale := StaleUDP(one(ep1), one(ep2))
	if fmt.Sprint(stale) != "[{10.96.0.53:53 127.0.0.5:5353}]" {
		t.Fatalf("stale: %v", stale)
	}
	if err := k.Apply(one(ep2)); err != nil {
		t.Fatal(err)
	}
	// Another endpoint's entry is kept.
	if n, err := k.ForgetUDP([]Stale{{svc, ep2}}); err != nil || n != 0 {
		t.Fatalf("forget another endpoint: %d, %v", n, err)
	}
	if n, err := k.ForgetUDP(stale); err != nil || n != 1 {
		t.Fatalf("forget: %d, %v", n, err)
	}
	if got := flows(); got != nil {
		t.Fatalf("after: %v", got)
	}
	send()
	if got := flows(); fmt.Sprint(got) != "[10.96.0.53:53>127.0.0.6:5353]" {
		t.Fatalf("the next datagram: %v", got)
	}
}

// nsThread is a thread in a network namespace of its own, kept until the
// test ends, that runs functions.
type nsThread struct {
	tid int
	do  chan func()
}

func newNSThread(t *testing.T) *nsThread {
	n := &nsThread{do: make(chan func())}
	errc := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		n.tid = unix.Gettid()
		errc <- nil
		for f := range n.do {
			f()
		}
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(n.do) })
	return n
}

func (n *nsThread) run(f func()) {
	done := make(chan struct{})
	n.do <- func() { f(); close(done) }
	<-done
}

func ipCommands(cmds ...[]string) error {
	for _, args := range cmds {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %v: %s", args, err, out)
		}
	}
	return nil
}

// dial connects to addr and returns what it reads, or "refused".
func dial(addr string) string {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		if errors.Is(err, unix.ECONNREFUSED) {
			return "refused"
		}
		return err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return string(b) + " " + err.Error()
	}
	return string(b)
}

// Traffic through the rules, in a namespace of its own: a ClusterIP and an
// opted-in node port reach the endpoint; a Service with no endpoint and an
// address of the range no Service has are refused at once (TCP reset),
// not sent on by the route (here: a veth pair in the namespace, whose
// other end drops them: no forwarding).
// The endpoint is the namespace's own address. A client in a second
// namespace (a host of the LAN routing the service range to the node)
// reaches the node port, but ClusterIPs only once its network is one of
// the Sources.
func TestKernelTraffic(t *testing.T) {
	fd := newNetNS(t)
	k := Kernel{Table: "tether-test", NetNS: fd}
	var ln net.Listener
	inNetNS(t, fd, func() error {
		for _, args := range [][]string{{"link", "set", "lo", "up"}, {"link", "add", "v0", "type", "veth", "peer", "name", "v1"},
			{"addr", "add", "10.88.0.1/24", "dev", "v0"}, {"link", "set", "v0", "up"}, {"link", "set", "v1", "up"},
			{"route", "replace", "10.96.0.0/12", "dev", "v0"}} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("ip %v: %v: %s", args, err, out)
			}
		}
		var err error
		ln, err = net.Listen("tcp", "10.88.0.1:8080")
		return err
	})
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	rs := Ruleset{ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12"), Ports: []ServicePort{
		{Service: "ns/web", ClusterIP: netip.MustParseAddr("10.96.0.10"), Proto: TCP, Port: 80, NodePort: 30080,
			Endpoints: []netip.AddrPort{netip.MustParseAddrPort("10.88.0.1:8080")}},
		{Service: "ns/empty", ClusterIP: netip.MustParseAddr("10.96.0.11"), Proto: TCP, Port: 80}}}
	if err := k.Apply(rs); err != nil {
		t.Fatal(err)
	}
	call := func(addr string) string {
		var out string
		inNetNS(t, fd, func() error {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				if errors.Is(err, unix.ECONNREFUSED) {
					out = "refused"
				} else {
					out = err.Error()
				}
				return nil
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * time.Second))
			b, err := io.ReadAll(c)
			out = string(b)
			if err != nil {
				out += " " + err.Error()
			}
			return nil
		})
		return out
	}
	for addr, want := range map[string]string{"10.96.0.10:80": "hello", "10.88.0.1:30080": "hello",
		"10.96.0.11:80": "refused", "10.96.0.77:80": "refused", "10.96.0.10:81": "refused"} {
		got := call(addr)
		t.Logf("%s: %s", addr, got)
		if got != want {
			t.Errorf("%s: %s, want %s", addr, got, want)
		}
	}

	lan := newNSThread(t)
	inNetNS(t, fd, func() error {
		return ipCommands([]string{"link", "add", "c0", "type", "veth", "peer", "name", "c1"},
			[]string{"link", "set", "c1", "netns", fmt.Sprint(lan.tid)},
			[]string{"addr", "add", "10.77.0.1/24", "dev", "c0"}, []string{"link", "set", "c0", "up"})
	})
	var err error
	lan.run(func() {
		err = ipCommands([]string{"link", "set", "lo", "up"}, []string{"addr", "add", "10.77.0.2/24", "dev", "c1"},
			[]string{"link", "set", "c1", "up"}, []string{"route", "add", "default", "via", "10.77.0.1"})
	})
	if err != nil {
		t.Fatal(err)
	}
	fromLAN := func(addr string) (out string) {
		lan.run(func() { out = dial(addr) })
		return out
	}
	rs.Sources = []netip.Prefix{netip.MustParsePrefix("10.88.0.0/16")}
	if err := k.Apply(rs); err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{"10.96.0.10:80": "refused", "10.88.0.1:30080": "hello", "10.88.0.1:8080": "hello"} {
		if got := fromLAN(addr); got != want {
			t.Errorf("from the LAN, not a source: %s: %s, want %s", addr, got, want)
		}
	}
	if got := call("10.96.0.10:80"); got != "hello" {
		t.Errorf("from the host: %s", got)
	}
	rs.Sources = append(rs.Sources, netip.MustParsePrefix("10.77.0.0/24"))
	if err := k.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if got := fromLAN("10.96.0.10:80"); got != "hello" {
		t.Errorf("from the LAN, a source: %s", got)
	}
}
