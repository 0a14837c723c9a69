package simulator

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/cloudcore/certs"
	"github.com/tether-edge/tether/cloudcore/enroll"
	"github.com/tether-edge/tether/cloudcore/hub"
	"github.com/tether-edge/tether/controlplane"
	"github.com/tether-edge/tether/edgecore"
)

// SimLabel is on every hollow node's Node and every pod the simulator
// creates; its value is the run's Name.
const SimLabel = "tether.io/sim"

// Config configures a Sim. Zero values take the defaults validate fills in.
type Config struct {
	// Name names the run: nodes are <Name>-<index>, pods live in namespace
	// Name. Default "sim-" and six random hex digits. It must be a DNS
	// label.
	Name string
	// Dir holds the nodes' stores (Dir/nodes/<node>/edge.db), the
	// cloudcore binary's configuration and log and, if the Sim starts one,
	// the control plane. Default: a new directory in /dev/shm (tmpfs:
	// bbolt's fsyncs cost nothing) or, where there is none, in
	// os.TempDir(); a directory the Sim made is removed by Close.
	Dir string

	// Kubeconfig reaches the API server. Its cluster needs a controller
	// manager (service accounts, node lifecycle) and should have a
	// scheduler. Empty: the Sim starts etcd, kube-apiserver,
	// kube-controller-manager and kube-scheduler (package controlplane)
	// in Dir/controlplane, with binaries from BinDir.
	Kubeconfig string
	// BinDir holds the Kubernetes binaries (see controlplane.Options).
	BinDir string

	// CloudcoreBinary, if set, runs cloudcore as its own process from this
	// binary, so that its memory and CPU are its own (CloudProc); empty
	// runs it in this process, where HubStats can read its hub.
	CloudcoreBinary string
	// Replicas, if more than 1, runs that many cloudcore processes
	// (CloudcoreBinary is required) against the one API server, and the
	// nodes reach them as through a TCP load balancer: each dial picks a
	// replica that accepts. KillReplica stops one (SIGTERM or SIGKILL) and
	// measures its nodes' reconnect to the others.
	Replicas int
	// Hub, if set, is a hub that runs already, another Sim's (each prints
	// its hub's URL and CA Secret at start): the nodes connect to it, and
	// no cloudcore is started. It lets two processes hold more nodes than
	// one process's file descriptors allow. restart-hub and the hub's
	// figures are then the other Sim's business; MarkStorm and
	// WaitResynced measure this Sim's share of a storm.
	Hub *HubConfig

	// Cloud is cloudcore's configuration; the Sim sets Kubeconfig,
	// ListenAddr (a loopback port kept across restarts), Listener and
	// Logger. HeartbeatInterval, LeaseDuration, KubeQPS and the rest are
	// as given here (zero: cloudcore's defaults). Namespace and CASecret
	// name the Secret of cloudcore's CA (default tether-system/tether-ca),
	// which the Sim creates, with the namespace, if it is missing, and
	// enrolls its nodes with.
	Cloud cloudcore.Config

	// The hollow nodes' timers (zero: edgecore's defaults: reconnect
	// back-off 1s to 60s, node status every minute, pod resync every 10s).
	ReconnectInitial   time.Duration
	ReconnectMax       time.Duration
	NodeStatusInterval time.Duration
	PodResyncInterval  time.Duration

	// CloudNamespace is the network namespace cloudcore runs in: the hub
	// listens there and the cloudcore binary runs there. NodeNamespace is
	// the one the hollow nodes dial from (their wires count and cut on top
	// of it). Default: this process's own. A *netns.Namespace (package
	// simulator/netns) is one: two namespaces joined by an emulated link
	// put the nodes' traffic across it.
	CloudNamespace Namespace
	NodeNamespace  Namespace
	// HubHost is the IP address the hub listens on in CloudNamespace and
	// the nodes dial; it goes into the hub's certificate. Default
	// 127.0.0.1; required with CloudNamespace (a namespace's loopback is
	// its own).
	HubHost string

	// ConnectRate is how many nodes Connect starts per second when its
	// caller gives no rate (default 200).
	ConnectRate float64

	// Progress, if set, receives a line every ProgressInterval (default 5s)
	// and the summary at Close.
	Progress         io.Writer
	ProgressInterval time.Duration

	// Edge, if set, adjusts hollow node i's edgecore configuration before
	// the node starts (each start: Connect, RebootOffline). Hollow nodes
	// run without metaserver, static pods and devices; this is where a
	// scenario turns devices on for some of them (an MQTT broker each, or
	// one external broker for all). It must leave RuntimeImpl and
	// Cloud.Dialer (the node's certificate and wire) alone.
	Edge func(i int, cfg *edgecore.Config)
	// Commands adds scenario commands to the built-in ones (see Exec): the
	// place for device commands (device updates through MQTT, twin checks).
	Commands map[string]Command

	// Log receives the warnings and errors of the hollow nodes, cloudcore
	// (in this process) and the control plane. Default: discarded (they
	// are counted either way).
	Log slog.Handler
}

// Namespace is a network namespace, as package simulator/netns makes
// them (*netns.Namespace).
type Namespace interface {
	// Listen opens a listener in the namespace (net.Listen's arguments).
	Listen(network, addr string) (net.Listener, error)
	// DialContext opens a TCP connection to an ip:port from the namespace.
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	// Command returns a command that runs a program in the namespace.
	Command(ctx context.Context, name string, args ...string) *exec.Cmd
}

// hostNamespace is this process's own network namespace.
type hostNamespace struct{}

func (hostNamespace) Listen(network, addr string) (net.Listener, error) {
	return net.Listen(network, addr)
}

func (hostNamespace) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

func (hostNamespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

// HubConfig is a running hub to join.
type HubConfig struct {
	// URL is the hub's wss:// URL.
	URL string
	// Namespace and CASecret name the Secret of the hub's CA, in the
	// cluster of Config.Kubeconfig (default tether-system/tether-ca,
	// cloudcore's default): the joined Sim trusts the hub with it and
	// enrolls its nodes with it, as the hub's own Sim does.
	Namespace string `json:",omitempty"`
	CASecret  string `json:",omitempty"`
}

func (c *Config) validate() error {
	if c.Name == "" {
		b := make([]byte, 3)
		rand.Read(b)
		c.Name = "sim-" + hex.EncodeToString(b)
	}
	if len(c.Name) > 40 {
		return fmt.Errorf("name: %q is longer than 40 characters", c.Name)
	}
	for i, r := range c.Name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' && i > 0 && i < len(c.Name)-1) {
			return fmt.Errorf("name: %q is not a DNS label (lower case letters, digits, inner '-')", c.Name)
		}
	}
	if c.CloudcoreBinary != "" {
		if _, err := os.Stat(c.CloudcoreBinary); err != nil {
			return fmt.Errorf("cloudcoreBinary: %w", err)
		}
	}
	if c.Hub != nil {
		u, err := url.Parse(c.Hub.URL)
		if err != nil || u.Scheme != "wss" || u.Host == "" {
			return fmt.Errorf("hub.url: %q is not a URL like wss://127.0.0.1:10000/v1/connect", c.Hub.URL)
		}
		h := *c.Hub // the defaults go into a copy of the caller's
		c.Hub = &h
		if c.Hub.Namespace == "" {
			c.Hub.Namespace = certs.DefaultNamespace
		}
		if c.Hub.CASecret == "" {
			c.Hub.CASecret = certs.DefaultCASecret
		}
		if c.CloudcoreBinary != "" {
			return errors.New("hub and cloudcoreBinary: a Sim joins a hub or runs its own cloudcore, not both")
		}
		if c.CloudNamespace != nil || c.HubHost != "" {
			return errors.New("hub and cloudNamespace or hubHost: a Sim that joins a hub runs none (the hub's URL says where it is)")
		}
	}
	if c.HubHost != "" {
		if a, err := netip.ParseAddr(c.HubHost); err != nil || a.Zone() != "" {
			return fmt.Errorf("hubHost: %q is not an IP address", c.HubHost)
		}
	} else if c.CloudNamespace != nil {
		return errors.New("hubHost: required with cloudNamespace: the nodes cannot reach the loopback of cloudcore's namespace")
	} else if c.Hub == nil {
		c.HubHost = "127.0.0.1"
	}
	if c.Cloud.Namespace == "" {
		c.Cloud.Namespace = certs.DefaultNamespace
	}
	if c.Cloud.CASecret == "" {
		c.Cloud.CASecret = certs.DefaultCASecret
	}
	if c.CloudNamespace == nil {
		c.CloudNamespace = hostNamespace{}
	}
	if c.NodeNamespace == nil {
		c.NodeNamespace = hostNamespace{}
	}
	for name, d := range map[string]time.Duration{"reconnectInitial": c.ReconnectInitial, "reconnectMax": c.ReconnectMax,
		"nodeStatusInterval": c.NodeStatusInterval, "podResyncInterval": c.PodResyncInterval,
		"progressInterval": c.ProgressInterval} {
		if d < 0 {
			return fmt.Errorf("%s: %s is negative", name, d)
		}
	}
	if c.ConnectRate < 0 {
		return fmt.Errorf("connectRate: %g is negative", c.ConnectRate)
	}
	if c.Replicas < 0 || c.Replicas > 1 && (c.CloudcoreBinary == "" || c.Hub != nil) {
		return fmt.Errorf("replicas: %d: want 0 or more, and more than 1 only with CloudcoreBinary and no Hub", c.Replicas)
	}
	if c.ConnectRate == 0 {
		c.ConnectRate = 200
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = 5 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError + 100})
	}
	return nil
}

// Sim is a running simulation: the control plane, one cloudcore and a
// fleet of hollow edge nodes. Its methods are meant to be called by one
// goroutine at a time (a scenario runs one command after another); the
// progress reporter reads alongside.
type Sim struct {
	cfg     Config
	dir     string
	madeDir bool
	start   time.Time

	// ctx bounds the nodes and the informers; cancel ends them.
	ctx    context.Context
	cancel context.CancelFunc

	cp       *controlplane.ControlPlane // nil if Kubeconfig was given
	rest     *rest.Config
	client   kubernetes.Interface
	pods     cache.SharedIndexInformer
	nodesReg cache.SharedIndexInformer // the run's Nodes, metadata only

	// enroller gives the hollow nodes their identity; roots verify the
	// hub.
	enroller *enroll.Service
	roots    *x509.CertPool

	cloud    cloud
	hubPtr   atomic.Pointer[hub.Hub] // the running in-process hub, if any
	cloudPid atomic.Int64            // the running cloudcore process, if any

	fleet *fleet
	rec   *recorder
	logs  logCounter
	log   *slog.Logger

	progressStop func()
	closed       bool // Close ran
	// outMu serializes the lines written to Config.Progress.
	outMu sync.Mutex

	// Scenario state, owned by the caller's goroutine.
	podSeq       int             // pods created so far, for names
	connectStart time.Time       // start of the Connect not yet waited for
	memBase      *memSample      // before the first node started
	memory       Memory          // per-node memory at the last WaitConnected
	enrollments  []Enrollment    // each Enroll that enrolled nodes
	connects     []ConnectResult // each WaitConnected
	storm        *stormState     // the last RestartHub
	storms       []Storm         // each WaitResynced
	failovers    []Failover      // each KillReplica
	balances     []Balance       // each WaitBalanced
	idles        []Bandwidth     // each Idle
	mu           sync.Mutex      // guards lastCheck
	lastCheck    string          // the last failed expectation, for the summary
}

// New starts the control plane (unless cfg.Kubeconfig is given) and
// cloudcore, and returns a Sim with no nodes yet.
func New(ctx context.Context, cfg Config) (*Sim, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("simulator: config: %w", err)
	}
	raiseFileLimit()
	s := &Sim{cfg: cfg, dir: cfg.Dir, start: time.Now(), rec: newRecorder()}
	s.log = newCountingLogger(&s.logs, cfg.Log)
	if s.dir == "" {
		base := os.TempDir()
		if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
			base = "/dev/shm"
		}
		d, err := os.MkdirTemp(base, "tether-"+cfg.Name+"-")
		if err != nil {
			return nil, fmt.Errorf("simulator: %w", err)
		}
		s.dir, s.madeDir = d, true
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()
	if err := s.startKube(ctx); err != nil {
		return nil, err
	}
	if err := s.startEnroll(ctx); err != nil {
		return nil, err
	}
	if err := s.startCloud(ctx); err != nil {
		return nil, err
	}
	labels := map[string]string{SimLabel: cfg.Name}
	s.fleet = &fleet{cfg: fleetConfig{
		prefix:             cfg.Name,
		dir:                filepath.Join(s.dir, "nodes"),
		url:                s.cloud.url(),
		roots:              s.roots,
		enroll:             s.enroller.Direct,
		labels:             labels,
		reconnectInitial:   cfg.ReconnectInitial,
		reconnectMax:       cfg.ReconnectMax,
		nodeStatusInterval: cfg.NodeStatusInterval,
		podResyncInterval:  cfg.PodResyncInterval,
		log:                s.log.With(slog.String("side", "edge")),
		committed:          s.rec.committed,
		dial:               s.nodeDial(),
		edge:               cfg.Edge,
	}}
	if cfg.Progress != nil {
		h := s.Hub()
		s.note("hub %s, its CA in Secret %s/%s, kubeconfig %s (another tether-sim joins with --join-hub, --ca-secret and --kubeconfig)",
			h.URL, h.Namespace, h.CASecret, s.cfg.Kubeconfig)
		s.progressStop = s.startProgress(cfg.Progress, cfg.ProgressInterval)
	}
	ok = true
	return s, nil
}

// raiseFileLimit lifts this process's open file limit as far as it may go:
// each hollow node holds a socket and its store open, and cloudcore in the
// same process the other end of each socket.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return
	}
	want := syscall.Rlimit{Cur: 1 << 20, Max: 1 << 20}
	if want.Max < l.Max {
		want = l
	}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) != nil { // not root: as far as the hard limit
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func (s *Sim) startKube(ctx context.Context) error {
	var err error
	if s.cfg.Kubeconfig == "" {
		s.cp, err = controlplane.Start(ctx, controlplane.Options{
			Dir:                   filepath.Join(s.dir, "controlplane"),
			BinDir:                s.cfg.BinDir,
			WithControllerManager: true,
			WithScheduler:         true,
			// An API server holding thousands of nodes takes longer than
			// the default 15s to stop.
			StopTimeout: time.Minute,
			Logger:      slog.New(s.cfg.Log),
			// Room for thousands of nodes' leases and statuses.
			APIServerArgs: []string{"--max-requests-inflight=2000", "--max-mutating-requests-inflight=1000"},
		})
		if err != nil {
			return fmt.Errorf("simulator: control plane: %w", err)
		}
		s.cfg.Kubeconfig = s.cp.Kubeconfig()
		s.rest = s.cp.RESTConfig()
	} else if s.rest, err = clientcmd.BuildConfigFromFlags("", s.cfg.Kubeconfig); err != nil {
		return fmt.Errorf("simulator: kubeconfig: %w", err)
	}
	s.rest.QPS, s.rest.Burst = 2000, 4000
	s.rest.UserAgent = "tether-sim"
	if s.client, err = kubernetes.NewForConfig(s.rest); err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	meta, err := metadata.NewForConfig(s.rest)
	if err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	ns := s.cfg.Name
	if err := s.createNamespace(ctx, ns); err != nil {
		return err
	}
	if err := s.waitServiceAccount(ctx, ns); err != nil {
		return err
	}

	pf := informers.NewSharedInformerFactoryWithOptions(s.client, 0, informers.WithNamespace(ns))
	s.pods = pf.Core().V1().Pods().Informer()
	s.pods.SetTransform(func(o any) (any, error) {
		if p, ok := o.(*corev1.Pod); ok {
			p.ManagedFields = nil
		}
		return o, nil
	})
	observe := func(o any) {
		if p, ok := o.(*corev1.Pod); ok {
			s.rec.observed(p)
		}
	}
	s.pods.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: observe,
		UpdateFunc: func(_, o any) { observe(o) }, DeleteFunc: func(any) { s.rec.deleted() }})
	mf := metadatainformer.NewFilteredSharedInformerFactory(meta, 0, "", func(o *metav1.ListOptions) {
		o.LabelSelector = SimLabel + "=" + s.cfg.Name
	})
	s.nodesReg = mf.ForResource(corev1.SchemeGroupVersion.WithResource("nodes")).Informer()
	pf.Start(s.ctx.Done())
	mf.Start(s.ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), s.pods.HasSynced, s.nodesReg.HasSynced) {
		return fmt.Errorf("simulator: informers not synced: %w", ctx.Err())
	}
	return nil
}

// createNamespace creates the Sim's namespace, or takes the one there. One
// still terminating (an earlier Sim of the same name just closed and
// deleted it) is waited for first: its default service account is gone
// and would not come back.
func (s *Sim) createNamespace(ctx context.Context, ns string) error {
	var failed error
	waited := false
	err := poll(ctx, 200*time.Millisecond, func() bool {
		_, err := s.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: ns, Labels: map[string]string{SimLabel: s.cfg.Name}}}, metav1.CreateOptions{})
		if err == nil {
			return true
		}
		if !apierrors.IsAlreadyExists(err) {
			failed = err
			return true
		}
		cur, err := s.client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		switch {
		case err == nil && cur.DeletionTimestamp == nil:
			return true
		case err != nil && !apierrors.IsNotFound(err):
			failed = err
			return true
		}
		waited = true
		return false
	})
	switch {
	case err != nil || (failed != nil && waited && ctx.Err() != nil): // cut short while waiting
		return fmt.Errorf("simulator: namespace %s is still terminating (an earlier run's): %w", ns, ctx.Err())
	case failed != nil:
		return fmt.Errorf("simulator: namespace %s: %w", ns, failed)
	}
	return nil
}

func (s *Sim) waitServiceAccount(ctx context.Context, ns string) error {
	var last error
	err := poll(ctx, 200*time.Millisecond, func() bool {
		_, last = s.client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return last == nil
	})
	if err != nil {
		return fmt.Errorf("simulator: service account %s/default (is kube-controller-manager running?): %w (last error: %v)",
			ns, err, last)
	}
	return nil
}

func (s *Sim) startCloud(ctx context.Context) error {
	cfg := s.cfg.Cloud
	cfg.Kubeconfig = s.cfg.Kubeconfig
	cfg.Logger = s.log.With(slog.String("side", "cloud"))
	if s.cfg.Hub != nil {
		s.cloud = &joinedCloud{hubURL: s.cfg.Hub.URL}
		return nil
	}
	base, err := newCloudBase(cfg, filepath.Join(s.dir, "cloudcore"), s.cfg.HubHost, s.cfg.CloudNamespace, s.roots)
	if err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	switch {
	case s.cfg.Replicas > 1:
		if s.cloud, err = newReplicaCloud(cfg, s.cfg.Replicas, s.cfg.CloudcoreBinary, s.dir, s.cfg.HubHost,
			s.cfg.CloudNamespace, s.roots); err != nil {
			return fmt.Errorf("simulator: %w", err)
		}
		s.cloud.(*replicaCloud).netDial = s.cfg.NodeNamespace.DialContext
	case s.cfg.CloudcoreBinary != "":
		s.cloud = &processCloud{cloudBase: base, binary: s.cfg.CloudcoreBinary}
	default:
		s.cloud = &inProcessCloud{cloudBase: base}
	}
	return s.cloudStart(ctx)
}

// nodeDial is how the nodes open connections: to a replica (Replicas),
// else in NodeNamespace to the address they dial.
func (s *Sim) nodeDial() func(ctx context.Context, network, addr string) (net.Conn, error) {
	if rc, ok := s.cloud.(*replicaCloud); ok {
		return rc.dial
	}
	return s.cfg.NodeNamespace.DialContext
}

// cloudHere says cloudcore runs in this process.
func (s *Sim) cloudHere() bool {
	_, ok := s.cloud.(*inProcessCloud)
	return ok
}

func (s *Sim) cloudStart(ctx context.Context) error {
	if err := s.cloud.start(ctx); err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	s.hubPtr.Store(s.cloud.hub())
	s.cloudPid.Store(int64(s.cloud.pid()))
	return nil
}

func (s *Sim) cloudStop() error {
	s.hubPtr.Store(nil)
	s.cloudPid.Store(0)
	if err := s.cloud.stop(); err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	return nil
}

// Name is the run's name (namespace, node name prefix, SimLabel value).
func (s *Sim) Name() string { return s.cfg.Name }

// Hub is the hub the nodes connect to, as another Sim joins it
// (Config.Hub).
func (s *Sim) Hub() HubConfig {
	if s.cfg.Hub != nil {
		return *s.cfg.Hub
	}
	return HubConfig{URL: s.cloud.url(), Namespace: s.cfg.Cloud.Namespace, CASecret: s.cfg.Cloud.CASecret}
}

// Client is a client of the API server.
func (s *Sim) Client() kubernetes.Interface { return s.client }

// Nodes is the number of hollow nodes made so far.
func (s *Sim) Nodes() int { return s.fleet.size() }

// NodeName is the name of node i.
func (s *Sim) NodeName(i int) string { return s.fleet.node(i).name }

// HubStats returns the hub's counters when cloudcore runs in this process
// (ok is false otherwise, or while it is stopped).
func (s *Sim) HubStats() (st hub.StatsSnapshot, ok bool) {
	h := s.hubPtr.Load()
	if h == nil {
		return st, false
	}
	return h.Stats(), true
}

// CloudPid is the pid of the cloudcore process, or 0 when cloudcore runs in
// this process or is stopped.
func (s *Sim) CloudPid() int { return int(s.cloudPid.Load()) }

// CloudProc reads the cloudcore process's memory and CPU time.
func (s *Sim) CloudProc() (ProcStat, error) {
	pid := s.CloudPid()
	if pid == 0 {
		return ProcStat{}, errors.New("cloudcore does not run as its own process (Config.CloudcoreBinary)")
	}
	return ReadProc(pid)
}

// Close stops the nodes, cloudcore and the control plane the Sim started,
// removes the run's namespace and Nodes from the API server and the
// directory the Sim made, and writes the summary to Progress. Later calls
// do nothing.
func (s *Sim) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if s.progressStop != nil {
		s.progressStop()
		s.progressStop = nil
		fmt.Fprint(s.cfg.Progress, s.Summary())
	}
	if s.fleet != nil {
		if err := s.fleet.stopAll(); err != nil {
			errs = append(errs, err)
		}
	}
	if _, joined := s.cloud.(*joinedCloud); s.cloud != nil && !joined {
		if err := s.cloudStop(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.client != nil && s.cp == nil { // a cluster that outlives the run
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := s.client.CoreV1().Namespaces().Delete(ctx, s.cfg.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete namespace: %w", err))
		}
		err = s.client.CoreV1().Nodes().DeleteCollection(ctx, metav1.DeleteOptions{},
			metav1.ListOptions{LabelSelector: SimLabel + "=" + s.cfg.Name})
		if err != nil {
			errs = append(errs, fmt.Errorf("delete nodes: %w", err))
		}
		cancel()
	}
	if s.cancel != nil {
		s.cancel()
	}
	if s.cp != nil {
		if err := s.cp.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.madeDir {
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
