package svcproxy

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"testing"

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
	// services: a rule per port with endpoints, one more for svc-0's
	// nodePort; svc-i: the mark and 3 endpoints; no chain for "empty".
	want := map[string]int{"prerouting": 1, "output": 1, "postrouting": 1, "reject-prerouting": 2, "reject-output": 2,
		"services": 4, "svc-0": 4, "svc-1": 4, "svc-2": 4}
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
	if got["services"] != 2 || got["svc-1"] != 0 || len(got) != 7 {
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
