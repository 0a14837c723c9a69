//go:build integration

package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tether-edge/tether/controlplane"
	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/edgecore/nodestatus"
	"github.com/tether-edge/tether/edgecore/svcproxy"
)

// blackholeServices makes the service range a blackhole route on the host
// while the test runs, so that a ClusterIP nothing routes is dropped here
// and never leaves by the default route. Its own metric, so that another
// program's route of the same range is neither refused nor removed; when
// the route is there already (another test of this kind running at the
// same time, e.g. a conformance run), it is left as it is, to its owner.
func blackholeServices(t *testing.T) {
	t.Helper()
	args := []string{"route", "add", "blackhole", controlplane.ServiceClusterIPRange, "metric", "4217"}
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		if strings.Contains(string(out), "File exists") {
			t.Logf("the service range is a blackhole route already (another test's): left to it")
			return
		}
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	t.Cleanup(func() {
		args[1] = "del"
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	})
}

// endpointsOf is what the edge's proxy last applied for the Service
// "<ns>/<name>": its ports' endpoints.
func endpointsOf(e *edge, service string) []string {
	rs, _ := e.ec.Proxy.Last()
	var out []string
	for _, p := range rs.Ports {
		if p.Service == service {
			for _, ep := range p.Endpoints {
				out = append(out, ep.String())
			}
		}
	}
	return out
}

// Pod A calls pod B through B's Service, by name (resolved by the edge's
// resolver) and by ClusterIP, on one edge node in containerd; with the
// cloud cut it still does; a second B becomes an endpoint; a ClusterIP
// with no endpoint, and an address of the range no Service has, are
// refused at once rather than routed; a Service deleted while the edge was
// away loses its rules at reconnect. Endpoint change in the API server to
// the rule in the kernel is measured.
func TestServiceRouting(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := newCRIEdge(t, c, "e2e-svcproxy")
	ip := nodestatus.FirstIPv4()
	if ip == "" {
		t.Skip("no non-loopback IPv4 address for the resolver")
	}
	blackholeServices(t)
	e.dns = edgecore.DNSConfig{Enable: true, Addr: net.JoinHostPort(ip, "53"), Upstreams: []string{"127.0.0.1:9"},
		Allowed: []string{containerd(t).Subnet}}
	e.start()
	if e.ec.Proxy == nil {
		t.Fatal("dns on with the cri runtime: the proxy should be on by default")
	}

	svc := func(name string, selector map[string]string) *corev1.Service {
		s, err := client.CoreV1().Services(ns).Create(t.Context(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Selector: selector,
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	b := svc("b", map[string]string{"app": "b"})
	empty := svc("empty", map[string]string{"app": "nobody"})
	server := func(name string) *corev1.Pod {
		p := criPod(t, ns, name, e.name, `exec nc -ll -p 8080 -e echo "hello from $(hostname)"`)
		p.Labels = map[string]string{"app": "b"}
		return createPod(t, p)
	}
	server("b1")
	waitPod(t, ns, "b1", 90*time.Second, "Running and Ready", runningAndReady)

	// A calls b by name (busybox nslookup asks the edge's resolver; the
	// image's static nc has no working name lookup of its own) and by
	// ClusterIP, then the ClusterIP of a Service with no endpoint and an
	// address of the range no Service has.
	const unallocated = "10.111.222.123"
	script := fmt.Sprintf(`while true; do
  ip=$(nslookup b.%s.svc.cluster.local 2>/dev/null | awk '/^Address/ {a=$NF} END {print a}')
  echo "name($ip): $(nc -w 2 "$ip" 80 </dev/null 2>&1)"
  echo "ip: $(nc -w 2 %s 80 </dev/null 2>&1)"
  echo "empty: $(nc -w 2 %s 80 </dev/null 2>&1)"
  echo "unallocated: $(nc -w 2 %s 80 </dev/null 2>&1)"
  sleep 0.3
done`, ns, b.Spec.ClusterIP, empty.Spec.ClusterIP, unallocated)
	// h calls its own Service, whose one endpoint it is (hairpin: the
	// proxy masquerades it, so the answer comes back through the node).
	h := svc("h", map[string]string{"app": "h"})
	hp := criPod(t, ns, "h", e.name, fmt.Sprintf(`nc -ll -p 8080 -e echo "hello from $(hostname)" &
while true; do echo "self: $(nc -w 2 %s 80 </dev/null 2>&1)"; sleep 0.5; done`, h.Spec.ClusterIP))
	hp.Labels = map[string]string{"app": "h"}
	hp = createPod(t, hp)
	a := createPod(t, criPod(t, ns, "a", e.name, script))
	a = waitPod(t, ns, "a", 90*time.Second, "Running and Ready", runningAndReady)
	log := e.logFile(a, 0)
	// logSince returns the log past offset.
	logSince := func(offset int) string {
		b, err := os.ReadFile(log)
		if err != nil || len(b) < offset {
			return ""
		}
		return string(b[offset:])
	}
	waitFileHolds(t, log, "name("+b.Spec.ClusterIP+"): hello from b1", 60*time.Second)
	waitFileHolds(t, log, "ip: hello from b1", 10*time.Second)
	refused := func(what, addr string) string {
		return fmt.Sprintf("%s: nc: can't connect to remote host (%s): Connection refused", what, addr)
	}
	waitFileHolds(t, log, refused("empty", empty.Spec.ClusterIP), 10*time.Second)
	waitFileHolds(t, log, refused("unallocated", unallocated), 10*time.Second)
	hp = waitPod(t, ns, "h", 90*time.Second, "Running and Ready", runningAndReady)
	waitFileHolds(t, e.logFile(hp, 0), "self: hello from h", 30*time.Second)

	// A Service the edge holds, with rules, to be deleted while it is away.
	svc("gone", nil)
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Create(t.Context(),
		manualSlice(ns, "gone-1", "gone", 8080, "10.244.3.3@"+e.name), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "gone's rule at the edge", func() (bool, error) {
		got := endpointsOf(e, ns+"/gone")
		return slices.Equal(got, []string{"10.244.3.3:8080"}), fmt.Errorf("endpoints %v", got)
	})

	// The cloud is cut: A still reaches b, by name and by ClusterIP.
	e.link.Cut()
	cutAt := len(logSince(0))
	eventually(t, 30*time.Second, "A calls b with the cloud cut", func() (bool, error) {
		after := logSince(cutAt)
		return strings.Count(after, "name("+b.Spec.ClusterIP+"): hello from b1") >= 2 &&
			strings.Count(after, "ip: hello from b1") >= 2, fmt.Errorf("after the cut: %q", tailString(after, 400))
	})
	if err := client.CoreV1().Services(ns).Delete(t.Context(), "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.DiscoveryV1().EndpointSlices(ns).Delete(t.Context(), "gone-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.link.Heal()
	eventually(t, 30*time.Second, "gone's rule gone after reconnect", func() (bool, error) {
		got := endpointsOf(e, ns+"/gone")
		return got == nil, fmt.Errorf("endpoints %v", got)
	})

	// Scale b: a second server pod becomes an endpoint, and A reaches it.
	server("b2")
	b2 := waitPod(t, ns, "b2", 90*time.Second, "Running and Ready", runningAndReady)
	eventually(t, 30*time.Second, "b2 an endpoint of b at the edge", func() (bool, error) {
		got := endpointsOf(e, ns+"/b")
		return slices.Contains(got, b2.Status.PodIP+":8080"), fmt.Errorf("endpoints %v", got)
	})
	waitFileHolds(t, log, "ip: hello from b2", 30*time.Second)

	// b1 deleted: its endpoint goes.
	if err := client.CoreV1().Pods(ns).Delete(t.Context(), "b1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "b1 no longer an endpoint", func() (bool, error) {
		got := endpointsOf(e, ns+"/b")
		return slices.Equal(got, []string{b2.Status.PodIP + ":8080"}), fmt.Errorf("endpoints %v", got)
	})

	// Endpoint change in the API server -> the rule in the kernel, on a
	// Service with a slice of its own (no controller), 20 times.
	svc("m", nil)
	slice := manualSlice(ns, "m-1", "m", 8080, "10.244.1.5@"+e.name)
	slice, err := client.DiscoveryV1().EndpointSlices(ns).Create(t.Context(), slice, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "m's endpoint at the edge", func() (bool, error) {
		return slices.Equal(endpointsOf(e, ns+"/m"), []string{"10.244.1.5:8080"}), nil
	})
	var lat []time.Duration
	for i := range 20 {
		addr := netip.AddrFrom4([4]byte{10, 244, 2, byte(10 + i)}).String()
		ready, node := true, e.name
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{addr}, NodeName: &node,
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
		start := time.Now()
		if slice, err = client.DiscoveryV1().EndpointSlices(ns).Update(t.Context(), slice, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		for !slices.Contains(endpointsOf(e, ns+"/m"), addr+":8080") {
			if time.Since(start) > 30*time.Second {
				t.Fatalf("endpoint %s did not reach the edge's rules", addr)
			}
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	t.Logf("endpoint change in the API server to the rule in the kernel: p50 %s p99 %s (%d changes)",
		lat[len(lat)/2].Round(100*time.Microsecond), lat[len(lat)*99/100].Round(100*time.Microsecond), len(lat))

	// The kernel's table agrees: one rule per routed port in services.
	rules, err := (svcproxy.Kernel{Table: e.nftTable()}).Rules()
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := e.ec.Proxy.Last()
	routed := 0
	for _, p := range rs.Ports {
		if len(p.Endpoints) > 0 {
			routed++
		}
	}
	if rules["services"] != routed || routed < 2 {
		t.Errorf("kernel: %v; ruleset: %s", rules, rs)
	}
}
