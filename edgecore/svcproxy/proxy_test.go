package svcproxy

import (
	"bytes"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

func put(t *testing.T, db *store.DB, objs ...metav1.Object) {
	t.Helper()
	err := db.Update(func(tx *store.Tx) error {
		for _, m := range objs {
			po := protocol.Object{UID: string(m.GetUID()), Namespace: m.GetNamespace(), Name: m.GetName(), ResourceVersion: "1"}
			var err error
			switch o := m.(type) {
			case *corev1.Service:
				po.Kind = protocol.KindService
				po.Data, err = protocol.EncodeService(o)
			case *discoveryv1.EndpointSlice:
				po.Kind = protocol.KindEndpointSlice
				po.Data, err = protocol.EncodeEndpointSlice(o)
			}
			if err != nil {
				return err
			}
			if err := tx.PutObject(&po); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func service(name, ip string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID("svc-" + name)},
		Spec: corev1.ServiceSpec{ClusterIP: ip, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
}

// slice of service with endpoints "addr" (the slice's data) or
// "addr@uid" (a pod of node edge-1).
func slice(name, svc string, endpoints ...string) *discoveryv1.EndpointSlice {
	pn, pp := "http", int32(8080)
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID("es-" + name),
		Labels: map[string]string{discoveryv1.LabelServiceName: svc}}, AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: &pn, Port: &pp}}}
	for _, e := range endpoints {
		addr, uid, local := strings.Cut(e, "@")
		ep := discoveryv1.Endpoint{Addresses: []string{addr}}
		if local {
			node := "edge-1"
			ep.NodeName, ep.TargetRef = &node, &corev1.ObjectReference{Kind: "Pod", UID: types.UID(uid)}
		}
		es.Endpoints = append(es.Endpoints, ep)
	}
	return es
}

// podStatuses is what the pods manager reports (pods.Reported).
type podStatuses struct {
	mu sync.Mutex
	m  map[string][]byte
	c  chan struct{}
}

func (p *podStatuses) PodStatus(uid string) ([]byte, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.m[uid]
	return b, ok
}

func (p *podStatuses) Watch() <-chan struct{} { return p.c }

func (p *podStatuses) set(t *testing.T, uid, ip string) {
	b, err := protocol.EncodePodStatus(&corev1.PodStatus{PodIP: ip,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}})
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.m[uid] = b
	p.mu.Unlock()
	select {
	case p.c <- struct{}{}:
	default:
	}
}

// syncedLog is a log buffer written by the proxy's goroutine.
type syncedLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The proxy in its network namespace, on a real store: at start it
// replaces what a previous run left (a Service deleted meanwhile), skips
// and logs a malformed slice, follows the store's changes and the node's
// pods' addresses.
func TestProxy(t *testing.T) {
	k := Kernel{Table: "tether-test", NetNS: newNetNS(t)}
	// A previous run's table: Service "old" since deleted.
	stale := Ruleset{ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12"), Ports: []ServicePort{{Service: "shop/old",
		ClusterIP: netip.MustParseAddr("10.96.0.99"), Proto: TCP, Port: 80,
		Endpoints: []netip.AddrPort{netip.MustParseAddrPort("10.88.0.99:8080")}}}}
	if err := k.Apply(stale); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	bad := slice("bad-1", "bad", "10.88.0.7")
	bad.Endpoints[0].Addresses[0] = "10.88.0.300"
	put(t, db, service("web", "10.96.0.10"), slice("web-1", "web", "10.88.0.5", "10.88.0.2@u-b1"),
		service("bad", "10.96.0.11"), bad)
	pods := &podStatuses{m: map[string][]byte{}, c: make(chan struct{}, 1)}
	var log syncedLog
	p, err := New(Config{ServiceCIDR: netip.MustParsePrefix("10.96.0.0/12"), NodeName: "edge-1", Pods: pods, Kernel: k,
		Logger: slog.New(slog.NewTextHandler(&log, nil))}, db)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Start(t.Context()) }()
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	wait := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			rs, _ := p.Last()
			if rs.String() == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("ruleset:\n%s\nwant:\n%s", rs, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// b1 has no status yet: not an endpoint; "old" is gone; "bad" has no
	// endpoint (its slice is skipped): rejected.
	wait(`reject ip daddr 10.96.0.0/12
shop/bad:http 10.96.0.11:80 tcp -> reject (no endpoint)
shop/web:http 10.96.0.10:80 tcp -> random 10.88.0.5:8080
`)
	if !strings.Contains(log.String(), `msg="service rules: skipped" object="endpointslice shop/bad-1" reason="address \"10.88.0.300\" is not an IPv4 address"`) {
		t.Errorf("log: %s", log.String())
	}
	if got, err := k.Rules(); err != nil || got["services"] != 1 || got["svc-0"] != 0 || got["svc-1"] != 2 {
		t.Errorf("kernel: %v, %v", got, err)
	}
	// b1 runs, at an address of its own.
	pods.set(t, "u-b1", "10.88.0.12")
	wait(`reject ip daddr 10.96.0.0/12
shop/bad:http 10.96.0.11:80 tcp -> reject (no endpoint)
shop/web:http 10.96.0.10:80 tcp -> random 10.88.0.5:8080 10.88.0.12:8080
`)
	// The store changes: the bad slice is replaced by a good one.
	put(t, db, slice("bad-1", "bad", "10.88.0.7"))
	p.ObjectsChanged(map[protocol.Kind]bool{protocol.KindEndpointSlice: true}, nil)
	wait(`reject ip daddr 10.96.0.0/12
shop/bad:http 10.96.0.11:80 tcp -> random 10.88.0.7:8080
shop/web:http 10.96.0.10:80 tcp -> random 10.88.0.5:8080 10.88.0.12:8080
`)
	// A status change that changes no rule applies nothing.
	_, applies := p.Last()
	pods.set(t, "u-other", "10.88.0.13")
	time.Sleep(50 * time.Millisecond)
	if _, n := p.Last(); n != applies {
		t.Errorf("%d applies after an unrelated change, want %d", n, applies)
	}
}
