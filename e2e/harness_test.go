//go:build integration

// Package e2e runs cloudcore and edgecore, in this process, against a real
// control plane (etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler started by package controlplane). Build tag: integration.
package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/cloudcore/dispatch"
	"github.com/tether-edge/tether/cloudcore/jointoken"
	"github.com/tether-edge/tether/controlplane"
	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/edgecore/join"
	"github.com/tether-edge/tether/edgecore/runtime/cri"
	"github.com/tether-edge/tether/edgecore/runtime/cri/critest"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/edgecore/svcproxy"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

var (
	cp     *controlplane.ControlPlane
	client kubernetes.Interface
	// egressSocket is the API server's egress proxy (cloudcore's kubelet
	// proxy), served by the cloud of the test that needs it
	// (startStreamCloud).
	egressSocket string
)

// Timers shortened for tests: the node lifecycle controller marks a node
// NotReady 10s after its lease stops being renewed; the hub renews leases
// every 2s (LeaseDuration/4) from heartbeats sent every second.
const (
	nodeMonitorGrace = 10 * time.Second
	heartbeat        = time.Second
	leaseDuration    = 8 * time.Second
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tether-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	egressSocket = filepath.Join(dir, "egress.sock")
	cp, err = controlplane.Start(ctx, controlplane.Options{
		Dir:                    filepath.Join(dir, "cp"),
		EgressSocket:           egressSocket,
		AggregationLayer:       true, // kubectl top (top_test.go)
		WithControllerManager:  true,
		WithScheduler:          true,
		NodeMonitorPeriod:      time.Second,
		NodeMonitorGracePeriod: nodeMonitorGrace,
		Logger:                 slog.New(slog.NewTextHandler(io.Discard, nil)),
		// Pods tolerate an unreachable or not-ready node for 5s, not 300s,
		// before the taint-eviction controller evicts them (autonomy_test.go).
		APIServerArgs: []string{
			fmt.Sprintf("--default-not-ready-toleration-seconds=%d", tolerationSecondsE2E),
			fmt.Sprintf("--default-unreachable-toleration-seconds=%d", tolerationSecondsE2E),
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start control plane:", err)
		return 1
	}
	defer cp.Stop()
	client, err = kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := cp.WaitForDefaultServiceAccount(ctx, "default"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	code := m.Run()
	removeBinaries()
	if err := stopContainerd(); err != nil {
		fmt.Fprintln(os.Stderr, "stop containerd:", err)
		code = 1
	}
	return code
}

// The private containerd of the tests that run edges with the CRI runtime
// (critest: its own socket, root, CNI network and locally built images),
// started by the first such test and stopped by TestMain.
var (
	ctdOnce sync.Once
	ctd     *critest.Containerd
	ctdErr  error
)

// criCgroupParent is the parent of the CRI edges' pod cgroups, removed by
// stopContainerd.
const criCgroupParent = "/tether-e2e"

// containerd returns the private containerd, starting it on first use.
func containerd(t *testing.T) *critest.Containerd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the CRI runtime needs root to run containerd")
	}
	ctdOnce.Do(func() {
		start := time.Now()
		ctd, ctdErr = critest.Start(context.Background(), critest.Options{StartTimeout: 3 * time.Minute, NoRegistry: true})
		if ctdErr == nil {
			fmt.Printf("private containerd at %s ready in %s (subnet %s)\n", ctd.Endpoint,
				time.Since(start).Round(time.Millisecond), ctd.Subnet)
		}
	})
	if ctdErr != nil {
		t.Fatal(ctdErr)
	}
	return ctd
}

// stopContainerd stops the private containerd, if a test started it, and
// removes the parent of the pod cgroups.
func stopContainerd() error {
	if ctd == nil {
		return nil
	}
	err := ctd.Stop()
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	for _, e := range entries { // cgroup v1: one hierarchy per controller
		os.Remove(filepath.Join("/sys/fs/cgroup", e.Name(), criCgroupParent))
	}
	os.Remove(filepath.Join("/sys/fs/cgroup", criCgroupParent))
	return err
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		level := slog.LevelInfo
		if os.Getenv("TETHER_E2E_DEBUG") != "" {
			level = slog.LevelDebug
		}
		return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: level}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// cloud is a cloudcore running in this process on a fixed loopback address,
// so that it can be stopped and started again where edges expect it.
type cloud struct {
	t      *testing.T
	addr   string
	tweak  func(*cloudcore.Config)
	cc     *cloudcore.CloudCore
	cancel context.CancelFunc
	done   chan error
}

func startCloud(t *testing.T) *cloud {
	t.Helper()
	return startCloudWith(t, nil)
}

// startCloudWith starts a cloudcore whose configuration tweak changes.
func startCloudWith(t *testing.T, tweak func(*cloudcore.Config)) *cloud {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cloud{t: t, addr: ln.Addr().String(), tweak: tweak}
	c.start(ln)
	t.Cleanup(c.stop)
	return c
}

func (c *cloud) start(ln net.Listener) {
	c.t.Helper()
	if ln == nil {
		var err error
		for i := 0; i < 50; i++ { // the old socket may linger a moment
			if ln, err = net.Listen("tcp", c.addr); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			c.t.Fatal(err)
		}
	}
	cfg := cloudcore.Config{
		Kubeconfig:        cp.Kubeconfig(),
		HeartbeatInterval: metav1.Duration{Duration: heartbeat},
		LeaseDuration:     metav1.Duration{Duration: leaseDuration},
		Listener:          ln,
		HealthAddr:        "127.0.0.1:0", // tests run side by side
		Logger:            testLogger(c.t).With(slog.String("side", "cloud")),
	}
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	cc, err := cloudcore.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cc, c.cancel, c.done = cc, cancel, make(chan error, 1)
	go func() { c.done <- cc.Run(ctx) }()
}

func (c *cloud) stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	if err := <-c.done; err != nil && !errors.Is(err, context.Canceled) {
		c.t.Errorf("cloudcore: %v", err)
	}
	c.cancel = nil
}

// joinToken creates a one-use join token for node (any node if empty), as
// `cloudcore token create` does.
func (c *cloud) joinToken(node string) string {
	c.t.Helper()
	return joinString(c.t, node, c.cc.CA.Cert)
}

// joinString creates a one-use join token for node (any node if empty) and
// returns it with the pin of ca, as `cloudcore token create` prints it.
func joinString(t *testing.T, node string, ca *x509.Certificate) string {
	t.Helper()
	tok, err := jointoken.Create(t.Context(), client, jointoken.Options{TTL: time.Hour, Uses: 1, Node: node}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return jointoken.JoinString(tok, pki.Hash(ca))
}

// edge is an edgecore running in this process, reaching its cloud through a
// link that the test can cut.
type edge struct {
	t    *testing.T
	name string
	dir  string
	link *cutLink
	// caFile and credsFile are what edgecore join wrote.
	caFile, credsFile string
	// cri, if set, runs the edge's pods in containerd (newCRIEdge).
	cri *cri.Config
	// devices is the edge's devices config; start gives an embedded broker
	// a free port unless addr is set (1883 may be taken on the machine).
	devices edgecore.DevicesConfig
	// dns is the edge's resolver config (off unless a test sets it).
	dns edgecore.DNSConfig
	// tweak, if set, edits the configuration start builds.
	tweak  func(*edgecore.Config)
	ec     *edgecore.EdgeCore
	cancel context.CancelFunc
	done   chan error
}

func startEdge(t *testing.T, c *cloud, name string) *edge {
	t.Helper()
	e := newEdge(t, c, name)
	e.start()
	return e
}

// newEdge prepares an edge without starting it, for tests that set up its
// directory or cut its link first. It joins through its link with a join
// token, as `edgecore join` does.
func newEdge(t *testing.T, c *cloud, name string) *edge {
	t.Helper()
	return newEdgeVia(t, c.addr, c.joinToken(name), name)
}

// newEdgeVia is newEdge for a hub at addr (a cloudcore binary, or a load
// balancer in front of replicas), joining with token (joinString).
func newEdgeVia(t *testing.T, addr, token, name string) *edge {
	t.Helper()
	e := &edge{t: t, name: name, dir: t.TempDir(), link: newCutLink(t, addr)}
	res, err := join.Join(t.Context(), join.Options{Cloud: e.link.addr(), Token: token, NodeName: name,
		ConfigPath: filepath.Join(e.dir, "joined.yaml")})
	if err != nil {
		t.Fatalf("join %s: %v", name, err)
	}
	e.caFile, e.credsFile = res.CAFile, res.CredentialsFile
	t.Cleanup(e.stop)
	return e
}

// criBackoff bounds the CRI edges' restart and pull back-off: short, so
// that restarts are seen within a test, but long enough to be observed.
var criBackoff = struct{ initial, max time.Duration }{2 * time.Second, 8 * time.Second}

// newCRIEdge prepares an edge, without starting it, whose pods run in the
// private containerd: volumes under its dir, container logs under
// dir/logs. At cleanup, after the edge stopped, every pod it made in
// containerd is killed, so the tests' pods do not outlive them. containerd
// is shared; each edge's runtime touches only the pods labelled with its
// node name.
func newCRIEdge(t *testing.T, c *cloud, name string) *edge {
	t.Helper()
	ctd := containerd(t)
	var e *edge
	// The test's temporary directory is removed at cleanup after the pods
	// are killed (their tmpfs volumes are mounted below it): its removal
	// is registered at the test's first TempDir call, which must come
	// before this. newEdge's would come after it when nothing in the test
	// made one before.
	t.TempDir()
	// Registered before newEdge's e.stop, so it runs after it.
	t.Cleanup(func() {
		if e != nil {
			killCRIPods(t, *e.cri)
		}
	})
	e = newEdge(t, c, name)
	e.cri = &cri.Config{
		NodeName:       name, // edgecore sets it too; killCRIPods needs it
		Endpoint:       ctd.Endpoint,
		PauseImage:     ctd.PauseImage,
		RootDir:        e.dir,
		PodLogDir:      filepath.Join(e.dir, "logs"),
		CgroupParent:   criCgroupParent,
		BackoffInitial: metav1.Duration{Duration: criBackoff.initial},
		BackoffMax:     metav1.Duration{Duration: criBackoff.max},
	}
	return e
}

// killCRIPods kills every pod the edge of cfg.NodeName made in the private
// containerd.
func killCRIPods(t *testing.T, cfg cri.Config) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := cri.New(ctx, cfg, noObjects{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Errorf("kill CRI pods: %v", err)
		return
	}
	defer r.Close()
	uids, err := r.Pods(ctx)
	if err != nil {
		t.Errorf("kill CRI pods: %v", err)
	}
	for _, uid := range uids {
		if err := r.KillPod(ctx, uid, 0); err != nil {
			t.Errorf("kill CRI pod %s: %v", uid, err)
		}
	}
}

// noObjects is a cri.Objects with no configmaps or secrets: killing pods
// needs none.
type noObjects struct{}

func (noObjects) ConfigMap(ns, name string) (*corev1.ConfigMap, error) {
	return nil, fmt.Errorf("configmap %s/%s: none while killing pods", ns, name)
}

func (noObjects) Services(ns string) ([]*corev1.Service, error) { return nil, nil }

func (noObjects) Secret(ns, name string) (*corev1.Secret, error) {
	return nil, fmt.Errorf("secret %s/%s: none while killing pods", ns, name)
}

// cloudConfig is the cloud part of the edge's configuration.
func (e *edge) cloudConfig() edgecore.CloudConfig {
	return edgecore.CloudConfig{URL: "wss://" + e.link.addr() + "/v1/connect", CAFile: e.caFile,
		CredentialsFile: e.credsFile}
}

func (e *edge) start() {
	e.t.Helper()
	cfg := edgecore.Config{
		NodeName:          e.name,
		Cloud:             e.cloudConfig(),
		DataDir:           e.dir,
		NodeIP:            "127.0.0.1",
		ReconnectInitial:  metav1.Duration{Duration: 200 * time.Millisecond},
		ReconnectMax:      metav1.Duration{Duration: 2 * time.Second},
		PodResyncInterval: metav1.Duration{Duration: 2 * time.Second},
		StaticPodPath:     filepath.Join(e.dir, "manifests"),
		MetaServer:        edgecore.MetaServerConfig{Addr: "127.0.0.1:0"}, // a port per edge
		Devices:           e.devices,
		DNS:               e.dns,
		// A table per edge: edges of one test run side by side.
		Services: edgecore.ServicesConfig{Table: e.nftTable()},
		Logger:   testLogger(e.t).With(slog.String("side", "edge")),
	}
	// The in-memory runtime unless the test gave a containerd: asked
	// for by name, since cri is the default.
	cfg.Runtime = "fake"
	if e.cri != nil {
		cfg.Runtime, cfg.CRI = "cri", *e.cri
	}
	if m := &cfg.Devices.MQTT; m.Broker != edgecore.BrokerExternal && m.Addr == "" {
		m.Addr = "127.0.0.1:0"
	}
	if e.tweak != nil {
		e.tweak(&cfg)
	}
	ec, err := edgecore.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.ec, e.cancel, e.done = ec, cancel, make(chan error, 1)
	go func() { e.done <- ec.Run(ctx) }()
}

// nftTable is the edge's nftables table, if it routes Services.
func (e *edge) nftTable() string {
	return fmt.Sprintf("tether-e2e-%x", sha256.Sum256([]byte(e.name)))[:24]
}

func (e *edge) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	if err := <-e.done; err != nil && !errors.Is(err, context.Canceled) {
		e.t.Errorf("edgecore %s: %v", e.name, err)
	}
	if e.ec.Proxy != nil {
		if err := (svcproxy.Kernel{Table: e.nftTable()}).Remove(); err != nil {
			e.t.Errorf("edgecore %s: %v", e.name, err)
		}
	}
	e.ec.Close()
	e.cancel = nil
}

// objects returns what the edge store holds of kind, by UID.
func (e *edge) objects(kind protocol.Kind) map[string]*protocol.Object {
	out := map[string]*protocol.Object{}
	err := e.ec.DB.View(func(tx *store.Tx) error {
		return tx.ForEachObject(kind, func(o *protocol.Object) error {
			out[o.UID] = o
			return nil
		})
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// byName finds an object of kind in the edge store by namespace and name.
func (e *edge) byName(kind protocol.Kind, ns, name string) *protocol.Object {
	var o *protocol.Object
	err := e.ec.DB.View(func(tx *store.Tx) (err error) {
		o, err = tx.ObjectByName(kind, ns, name)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return o
}

// cutLink is a TCP relay between an edge and its hub that a test can cut,
// as a WAN link goes down: open connections are dropped and new ones
// refused until Heal.
type cutLink struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool       // guarded by mu
	conns []net.Conn // guarded by mu
}

func newCutLink(t *testing.T, target string) *cutLink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &cutLink{t: t, ln: ln, target: target}
	go l.serve()
	t.Cleanup(func() { ln.Close(); l.Cut() })
	return l
}

func (l *cutLink) addr() string { return l.ln.Addr().String() }

func (l *cutLink) serve() {
	for {
		in, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.cut {
			l.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", l.target)
		if err != nil {
			l.mu.Unlock()
			in.Close()
			continue
		}
		l.conns = append(l.conns, in, out)
		l.mu.Unlock()
		go func() { io.Copy(out, in); out.Close() }()
		go func() { io.Copy(in, out); in.Close() }()
	}
}

// Cut drops every connection and refuses new ones.
func (l *cutLink) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cut = true
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

// Heal lets connections through again.
func (l *cutLink) Heal() {
	l.mu.Lock()
	l.cut = false
	l.mu.Unlock()
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, lastErr)
}

func namespace(t *testing.T) string {
	t.Helper()
	ns, err := client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	// Pods need the namespace's default service account (made by the
	// controller manager).
	if err := cp.WaitForDefaultServiceAccount(t.Context(), ns.Name); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// waitNodeReady waits for the edge's Node to be Ready.
func waitNodeReady(t *testing.T, name string, want corev1.ConditionStatus, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "node "+name+" Ready="+string(want), func() (bool, error) {
		n, err := client.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == want, fmt.Errorf("Ready=%s", c.Status)
			}
		}
		return false, errors.New("no Ready condition")
	})
}

// barePod is a pod bound straight to node, without the scheduler.
func barePod(ns, name, node string) *corev1.Pod {
	grace := int64(0)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: &grace,
			AutomountServiceAccountToken:  new(bool),
			Containers:                    []corev1.Container{{Name: "main", Image: "busybox:e2e", Command: []string{"sleep", "3600"}}},
		},
	}
}

// waitSettled waits until the pods of ns stopped changing (cloud controllers
// such as the autonomy controller and the edges' status reports are done
// with them) and every edge holds the latest version of its pods.
func waitSettled(t *testing.T, ns string, edges ...*edge) {
	t.Helper()
	last := map[string]string{}
	stable := 0
	eventually(t, 30*time.Second, "pods settled and held at the edges", func() (bool, error) {
		pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		now := map[string]string{}
		for _, p := range pods.Items {
			now[p.Name] = p.ResourceVersion
		}
		same := len(now) == len(last)
		for k, v := range now {
			same = same && last[k] == v
		}
		last = now
		held := true
		for _, e := range edges {
			for _, p := range pods.Items {
				if p.Spec.NodeName != e.name {
					continue
				}
				if o := e.byName(protocol.KindPod, ns, p.Name); o == nil || o.ResourceVersion != dispatch.PodVersion(&p) {
					held = false
				}
			}
		}
		if same && held {
			stable++
		} else {
			stable = 0
		}
		return stable >= 10, nil // a second without change
	})
}

// enrollCert registers node directly (no join token) and returns its client
// certificate, for tests that speak the protocol by hand.
func enrollCert(t *testing.T, c *cloud, node string) *tls.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := c.cc.Enroll.Direct(t.Context(), node, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := pki.TLSPair(certPEM, key)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}
