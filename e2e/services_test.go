//go:build integration

package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/edgecore/nodestatus"
	"github.com/tether-edge/tether/protocol"
)

// manualSlice is an EndpointSlice of service that no controller manages
// (the Services have no selector), with one ready endpoint per address on
// the node named after it ("10.244.1.5@node").
func manualSlice(ns, name, service string, port int32, endpoints ...string) *discoveryv1.EndpointSlice {
	pn, proto := "http", corev1.ProtocolTCP
	e := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
		Labels: map[string]string{discoveryv1.LabelServiceName: service, discoveryv1.LabelManagedBy: "e2e.tether.io"}},
		AddressType: discoveryv1.AddressTypeIPv4, Ports: []discoveryv1.EndpointPort{{Name: &pn, Port: &port, Protocol: &proto}}}
	for _, ep := range endpoints {
		var addr, node string
		fmt.Sscanf(ep, "%s", &addr)
		for i := range ep {
			if ep[i] == '@' {
				addr, node = ep[:i], ep[i+1:]
			}
		}
		ready := true
		e.Endpoints = append(e.Endpoints, discoveryv1.Endpoint{Addresses: []string{addr}, NodeName: &node,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	return e
}

// lookupA asks the resolver at addr for name's A records; "NXDOMAIN" or
// the addresses, sorted.
func lookupA(t *testing.T, addr *net.UDPAddr, name string) (string, time.Duration) {
	t.Helper()
	c, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: 4242, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	b, _ := m.Pack()
	start := time.Now()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("resolver: %v", err)
	}
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	if m.RCode == dnsmessage.RCodeNameError {
		return "NXDOMAIN", took
	}
	var out []string
	for _, a := range m.Answers {
		if r, ok := a.Body.(*dnsmessage.AResource); ok {
			out = append(out, netip.AddrFrom4(r.A).String())
		}
	}
	sort.Strings(out)
	return fmt.Sprint(out), took
}

// Services and EndpointSlices reach the edge filtered to the node's own
// endpoints; the edge's resolver answers their names from the store with
// the cloud cut; a Service deleted while the edge was away is gone, from
// the store and from DNS, after it reconnects.
func TestServicesReachEdgeFiltered(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := newEdge(t, c, "e2e-svc")
	e.dns = edgecore.DNSConfig{Enable: true, Addr: "127.0.0.1:0", Upstreams: []string{"127.0.0.1:9"}}
	e.start()
	waitNodeReady(t, e.name, corev1.ConditionTrue, 30*time.Second)
	// A pod of the edge in ns: the node holds ns's Services.
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), barePod(ns, "client", e.name), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	web, err := client.CoreV1().Services(ns).Create(t.Context(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Services(ns).Create(t.Context(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "http", Port: 5432}}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*discoveryv1.EndpointSlice{
		manualSlice(ns, "web-1", "web", 8080, "10.244.1.5@"+e.name, "10.244.2.5@elsewhere"),
		manualSlice(ns, "db-1", "db", 5432, "10.244.1.6@"+e.name, "10.244.2.6@elsewhere"),
	} {
		if _, err := client.DiscoveryV1().EndpointSlices(ns).Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// At the edge: both Services, and each slice with the endpoint on this
	// node only.
	endpointsAt := func(name string) []string {
		o := e.byName(protocol.KindEndpointSlice, ns, name)
		if o == nil {
			return nil
		}
		s, err := protocol.DecodeEndpointSlice(o.Data)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, ep := range s.Endpoints {
			out = append(out, ep.Addresses...)
		}
		return out
	}
	eventually(t, 30*time.Second, "services and filtered slices at the edge", func() (bool, error) {
		return e.byName(protocol.KindService, ns, "web") != nil && e.byName(protocol.KindService, ns, "db") != nil &&
			slices.Equal(endpointsAt("web-1"), []string{"10.244.1.5"}) &&
			slices.Equal(endpointsAt("db-1"), []string{"10.244.1.6"}), nil
	})
	r := e.ec.Resolver
	webName, dbName := "web."+ns+".svc.cluster.local.", "db."+ns+".svc.cluster.local."
	eventually(t, 10*time.Second, "the resolver answers", func() (bool, error) {
		got, _ := lookupA(t, r.Addr(), webName)
		return got == "["+web.Spec.ClusterIP+"]", fmt.Errorf("web: %s", got)
	})

	// An endpoint change in the API server reaches the edge's DNS answers.
	// The resolver rebuilds its table per commit: db's may come a moment
	// after web's.
	eventually(t, 10*time.Second, "headless db answers the endpoint on this node", func() (bool, error) {
		got, _ := lookupA(t, r.Addr(), dbName)
		return got == "[10.244.1.6]", fmt.Errorf("db: %s", got)
	})
	db1, err := client.DiscoveryV1().EndpointSlices(ns).Get(t.Context(), "db-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready, node := true, e.name
	db1.Endpoints = append(db1.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.244.1.7"}, NodeName: &node,
		Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	changed := time.Now()
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Update(t.Context(), db1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		if got, _ := lookupA(t, r.Addr(), dbName); got == "[10.244.1.6 10.244.1.7]" {
			break
		}
		if time.Since(changed) > 30*time.Second {
			t.Fatal("a new endpoint of db did not reach the edge's DNS")
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("endpoint change in the API server to the edge's DNS answer: %s", time.Since(changed).Round(time.Millisecond))

	// The cloud is cut: answers come from the store. db is deleted
	// meanwhile.
	e.link.Cut()
	if err := client.CoreV1().Services(ns).Delete(t.Context(), "db", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.DiscoveryV1().EndpointSlices(ns).Delete(t.Context(), "db-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var lat []time.Duration
	for range 200 {
		got, took := lookupA(t, r.Addr(), webName)
		if got != "["+web.Spec.ClusterIP+"]" {
			t.Fatalf("web with the cloud cut: %s", got)
		}
		lat = append(lat, took)
	}
	slices.Sort(lat)
	t.Logf("DNS answers from the store with the cloud cut: p50 %s p99 %s (%d queries, one socket each)",
		lat[len(lat)/2], lat[len(lat)*99/100], len(lat))
	if got, _ := lookupA(t, r.Addr(), dbName); got != "[10.244.1.6 10.244.1.7]" {
		t.Fatalf("headless db with the cloud cut: %s, want the endpoints on this node", got)
	}
	if got, _ := lookupA(t, r.Addr(), "nope."+ns+".svc.cluster.local."); got != "NXDOMAIN" {
		t.Fatalf("unknown service: %s", got)
	}

	// Reconnected: db is gone from the store and from DNS.
	e.link.Heal()
	eventually(t, 30*time.Second, "db gone from the edge after reconnect", func() (bool, error) {
		return e.byName(protocol.KindService, ns, "db") == nil && e.byName(protocol.KindEndpointSlice, ns, "db-1") == nil, nil
	})
	eventually(t, 10*time.Second, "db gone from DNS", func() (bool, error) {
		got, _ := lookupA(t, r.Addr(), dbName)
		return got == "NXDOMAIN", fmt.Errorf("db: %s", got)
	})
	if got, _ := lookupA(t, r.Addr(), webName); got != "["+web.Spec.ClusterIP+"]" {
		t.Fatalf("web after reconnect: %s", got)
	}
}

// A pod in containerd with dnsPolicy ClusterFirst (the default) resolves a
// Service name through the edge's resolver, which cri.clusterDNS names for
// it, and keeps resolving it with the cloud cut; an outside name fails
// cleanly (the test's upstream is a closed loopback port: no traffic leaves
// the machine, and no ClusterIP is ever called).
func TestCRIPodResolvesService(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := newCRIEdge(t, c, "e2e-cri-dns")
	ip := nodestatus.FirstIPv4()
	if ip == "" {
		t.Skip("no non-loopback IPv4 address for the resolver")
	}
	e.dns = edgecore.DNSConfig{Enable: true, Addr: net.JoinHostPort(ip, "53"), Upstreams: []string{"127.0.0.1:9"},
		Allowed: []string{containerd(t).Subnet}}
	e.start()
	web, err := client.CoreV1().Services(ns).Create(t.Context(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := criPod(t, ns, "asker", e.name, `while true; do echo "round"; nslookup web.`+ns+`.svc.cluster.local; nslookup outside.example.org; sleep 0.5; done`)
	p = createPod(t, p)
	p = waitPod(t, ns, p.Name, 90*time.Second, "Running and Ready", runningAndReady)
	log := e.logFile(p, 0)
	waitFileHolds(t, log, "Address: "+web.Spec.ClusterIP, 30*time.Second)
	// The pod's resolv.conf names the edge's resolver.
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "Server:") || !strings.Contains(string(b), ip) {
		t.Errorf("nslookup did not ask %s: %s", ip, tailString(string(b), 500))
	}

	e.link.Cut()
	cutAt := len(b)
	eventually(t, 30*time.Second, "the pod resolves web with the cloud cut", func() (bool, error) {
		b, err := os.ReadFile(log)
		if err != nil || len(b) < cutAt {
			return false, err
		}
		after := string(b[cutAt:])
		return strings.Count(after, "Address: "+web.Spec.ClusterIP) >= 2, fmt.Errorf("after the cut: %q", tailString(after, 300))
	})
	if st := e.ec.Resolver.Stats(); st.Answered == 0 || st.NotAllowed != 0 {
		t.Errorf("resolver stats %+v", st)
	} else {
		t.Logf("resolver stats %+v", st)
	}
}
