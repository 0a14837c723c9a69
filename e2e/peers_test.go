//go:build integration

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/cloudcore/kubeletproxy"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

func listenTCP(t *testing.T, ip string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestKubeletProxyAcrossReplicas: two cloudcore replicas against one API
// server; the edge's session is on replica B, the API server's egress
// socket on replica A, which finds B through a headless Service's
// EndpointSlices. kubectl logs and exec (and client-go's GetLogs and
// exec) reach the edge pod through A, which finds B among its peers and
// relays the stream through B's peer listener (mutual TLS, peer
// certificates of the shared CA). B's peer listener refuses an edge node's
// certificate, a peer-named certificate of another CA and no certificate
// in the handshake; a true peer asking for a node B does not hold gets
// 404, for a bad node name 400. The time to the first log byte through
// the peer and without it (each replica's TCP kubelet proxy) is logged.
func TestKubeletProxyAcrossReplicas(t *testing.T) {
	needKubectl(t)
	// The replicas' peer listeners on an address of this host that an
	// EndpointSlice may hold (not loopback).
	addr := hostAddress(t)
	lnA, lnB := listenTCP(t, addr), listenTCP(t, addr)
	tcpA := "127.0.0.1:" + strconv.Itoa(freePort(t))
	tcpB := "127.0.0.1:" + strconv.Itoa(freePort(t))
	// A finds B through a headless Service's EndpointSlices (as in
	// manifests/cloudcore: both replicas listed, A skips itself), B has A
	// in a static list.
	a := startStreamCloud(t, func(cfg *cloudcore.Config) {
		cfg.PeerListener, cfg.PeerService, cfg.KubeletProxyAddr = lnA, "tether-peers-e2e", tcpA
	})
	b := startCloudWith(t, func(cfg *cloudcore.Config) {
		cfg.PeerListener, cfg.Peers, cfg.KubeletProxyAddr = lnB, []string{lnA.Addr().String()}, tcpB
	})
	peerService(t, "tether-system", "tether-peers-e2e", addr, lnA.Addr().(*net.TCPAddr).Port, lnB.Addr().(*net.TCPAddr).Port)
	node := "str-peer"
	startStreamEdge(t, b, node)
	ns := namespace(t)
	runningPod(t, criPod(t, ns, "talker", node, talker))

	// kubectl logs and exec, through A.
	out := mustKubectl(t, nil, "logs", "-n", ns, "talker")
	if !strings.HasPrefix(out, "line-1\nline-2\nline-3\n") {
		t.Fatalf("kubectl logs through replica A: %q", out)
	}
	out = mustKubectl(t, strings.NewReader("hello via a peer\n"), "exec", "-i", "-n", ns, "talker", "--", "cat")
	if out != "hello via a peer\n" {
		t.Fatalf("kubectl exec -i cat through replica A: %q", out)
	}
	// client-go: GetLogs and exec.
	rc, err := client.CoreV1().Pods(ns).GetLogs("talker", &corev1.PodLogOptions{TailLines: ptrTo(int64(1))}).Stream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := io.ReadAll(rc)
	rc.Close()
	if !strings.HasPrefix(string(logs), "line-") {
		t.Fatalf("GetLogs through replica A: %q", logs)
	}
	req := client.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name("talker").SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "main", Command: []string{"echo", "x"}, Stdout: true, Stderr: true},
			scheme.ParameterCodec)
	ex, err := remotecommand.NewSPDYExecutor(cp.RESTConfig(), "POST", req.URL())
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := ex.StreamWithContext(t.Context(), remotecommand.StreamOptions{Stdout: &stdout, Stderr: &stderr}); err != nil || stdout.String() != "x\n" {
		t.Fatalf("exec echo x through replica A: %v %q %q", err, stdout.String(), stderr.String())
	}
	if f, s := a.cc.Peers.Forwarded.Load(), b.cc.Peers.Served.Load(); f < 4 || s < 4 {
		t.Fatalf("streams forwarded by A %d, served by B %d: want each request through the peer", f, s)
	}
	// The same in each replica's metrics, lint-clean.
	for name, c := range map[string]*cloud{"forwarded": a, "served": b} {
		if v := peerStreams(t, c, name); v < 4 {
			t.Errorf("tether_peer_streams_total{direction=%q}: %v, want at least 4", name, v)
		}
		if problems, err := testutil.GatherAndLint(c.cc.Metrics(), "tether_peer_streams_total", "tether_peer_requests_refused_total"); err != nil || len(problems) > 0 {
			t.Errorf("promlint: %v %v", problems, err)
		}
	}

	// The time to the first log byte: through A and its peer B, and
	// through B itself (each replica's TCP kubelet proxy, the admin's
	// token).
	const runs = 100
	firstByte := func(proxy string) []time.Duration {
		var d []time.Duration
		for range runs {
			start := time.Now()
			conn, err := connectVia(t.Context(), "tcp", proxy, node+":"+strconv.Itoa(protocol.KubeletPort))
			if err != nil {
				t.Fatal(err)
			}
			tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}) // timing only; the chain is checked elsewhere
			fmt.Fprintf(tc, "GET /containerLogs/%s/talker/main?tailLines=1 HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n",
				ns, node, cp.RESTConfig().BearerToken)
			buf := make([]byte, 12)
			if _, err := io.ReadFull(tc, buf); err != nil || string(buf) != "HTTP/1.1 200" {
				t.Fatalf("logs through %s: %v %q", proxy, err, buf)
			}
			d = append(d, time.Since(start))
			tc.Close()
		}
		return d
	}
	viaPeer, direct := firstByte(tcpA), firstByte(tcpB)
	t.Logf("kubelet proxy, logs first byte over %d runs: through a peer p50 %s p99 %s; on the replica with the session p50 %s p99 %s",
		runs, pct(viaPeer, 50), pct(viaPeer, 99), pct(direct, 50), pct(direct, 99))

	// The attackers, at B's peer listener.
	peerReq := func(cert *tls.Certificate, node string) (int, error) {
		tc := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		conn, err := (&tls.Dialer{Config: tc}).DialContext(t.Context(), "tcp", lnB.Addr().String())
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: peer\r\nTether-Node: %s\r\nContent-Length: 0\r\n\r\n", kubeletproxy.PeerPath, node)
		buf := make([]byte, 12)
		if _, err := io.ReadFull(conn, buf); err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimPrefix(string(buf), "HTTP/1.1 "))
	}
	pair := func(certPEM, keyPEM []byte) *tls.Certificate {
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}
	ca := a.cc.CA
	peerCert := pair(must2(ca.IssuePeer(time.Hour)))
	if code, err := peerReq(peerCert, node); code != 101 {
		t.Fatalf("a true peer asking B for %s: %d %v, want 101", node, code, err)
	}
	if code, err := peerReq(peerCert, "no-such-node"); code != 404 {
		t.Fatalf("a true peer asking B for a node it does not hold: %d %v, want 404", code, err)
	}
	if code, err := peerReq(peerCert, "Bad_Name/.."); code != 400 {
		t.Fatalf("a true peer asking for a bad node name: %d %v, want 400", code, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	nodePEM, err := ca.IssueNode(&key.PublicKey, node, "some-identity", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.KeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("not-the-tether-ca")
	if err != nil {
		t.Fatal(err)
	}
	for name, cert := range map[string]*tls.Certificate{
		"an edge node's certificate of the shared CA": pair(nodePEM, keyPEM),
		"a peer certificate of another CA":            pair(must2(other.IssuePeer(time.Hour))),
		"a client certificate of the shared CA":       pair(must2(ca.IssueClient(pki.PeerCommonName, []string{pki.PeerOrganization, "x"}, time.Hour))),
		"no certificate":                              nil,
	} {
		if code, err := peerReq(cert, node); err == nil {
			t.Errorf("%s at B's peer listener: %d, want the handshake refused", name, code)
		}
	}
	if a.cc.Peers.Refused.Load() != 0 || b.cc.Peers.Refused.Load() != 1 {
		t.Errorf("peer requests refused by A %d, by B %d (the bad name)", a.cc.Peers.Refused.Load(), b.cc.Peers.Refused.Load())
	}
}

// peerService makes a headless Service without selector and one
// EndpointSlice per port (replicas on one host differ by port only), each
// with ip and the port named "peer".
func peerService(t *testing.T, ns, name, ip string, ports ...int) {
	t.Helper()
	ctx := t.Context()
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "peer", Port: 10002}}}}
	if _, err := client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.CoreV1().Services(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
		client.DiscoveryV1().EndpointSlices(ns).DeleteCollection(context.Background(), metav1.DeleteOptions{},
			metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
	})
	for i, p := range ports {
		es := &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, i), Namespace: ns,
				Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}}},
			Ports:       []discoveryv1.EndpointPort{{Name: ptrTo("peer"), Port: ptrTo(int32(p))}},
		}
		if _, err := client.DiscoveryV1().EndpointSlices(ns).Create(ctx, es, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// peerStreams reads tether_peer_streams_total{direction} of a replica's
// metrics (-1 if absent).
func peerStreams(t *testing.T, c *cloud, direction string) float64 {
	mfs, err := c.cc.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if mf.GetName() == "tether_peer_streams_total" && l.GetName() == "direction" && l.GetValue() == direction {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return -1
}

func must2(a, b []byte, err error) ([]byte, []byte) {
	if err != nil {
		panic(err)
	}
	return a, b
}

func ptrTo[T any](v T) *T { return &v }
