package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Component names a control plane process. The value is the binary's name
// and the base name of its log file.
type Component string

// The components, in start order.
const (
	Etcd              Component = "etcd"
	APIServer         Component = "kube-apiserver"
	ControllerManager Component = "kube-controller-manager"
	Scheduler         Component = "kube-scheduler"
)

var startOrder = []Component{Etcd, APIServer, ControllerManager, Scheduler}

// ServiceClusterIPRange is the apiserver's --service-cluster-ip-range.
const ServiceClusterIPRange = "10.96.0.0/12"

// Options configures Start. The zero value of each field except Dir is a
// working default.
type Options struct {
	// Dir holds everything the control plane writes: etcd data (Dir/etcd),
	// certificates and keys (Dir/pki), kubeconfigs, and one log per
	// component (Dir/logs/<component>.log). It is created if missing. Start
	// clears what a previous run left there, and refuses a Dir that another
	// running control plane holds. Required.
	Dir string

	// BinDir holds kube-apiserver, kube-controller-manager and
	// kube-scheduler. Empty means $TETHER_BIN_DIR, else bin/ at the root of
	// the repository containing the working directory, else the directory
	// of the running executable.
	BinDir string

	// EtcdPath is the etcd binary. Empty means etcd on $PATH, else
	// /usr/bin/etcd.
	EtcdPath string

	// WithControllerManager starts kube-controller-manager. Without it no
	// ServiceAccount is created, so pods cannot be created; nothing marks a
	// silent node NotReady; namespaces never finish deleting. Start then
	// also waits for the default ServiceAccount of the default namespace.
	WithControllerManager bool

	// WithScheduler starts kube-scheduler.
	WithScheduler bool

	// NodeMonitorPeriod is kube-controller-manager's --node-monitor-period,
	// how often it checks node heartbeats. Zero keeps its default (5s).
	NodeMonitorPeriod time.Duration

	// NodeMonitorGracePeriod is kube-controller-manager's
	// --node-monitor-grace-period, how long a node may stay silent before it
	// is marked NotReady. Zero keeps its default (40s). It must be larger
	// than NodeMonitorPeriod.
	NodeMonitorGracePeriod time.Duration

	// EgressSocket, if set, is the unix socket of the API server's egress
	// proxy for its "cluster" traffic (kubelets, pods, services): Start
	// writes an EgressSelectorConfiguration (HTTPConnect over that socket)
	// and passes --egress-selector-config-file. Tether's cloudcore serves
	// it (Config.KubeletProxySocket) so that kubectl logs, exec, attach and
	// port-forward reach edge nodes through their tunnels. The socket need
	// not exist yet: the API server dials it per connection.
	EgressSocket string

	// AggregationLayer turns on the API server's aggregation layer as
	// kubeadm does: a front-proxy CA of its own, the API server's client
	// certificate to aggregated API servers (--proxy-client-cert-file, name
	// FrontProxyClientUser), the --requestheader-* flags that aggregated
	// API servers read from kube-system/extension-apiserver-authentication,
	// and --enable-aggregator-routing (the API server dials an APIService's
	// endpoint address, not its Service's cluster IP: there is no
	// kube-proxy). StartMetricsServer needs it. With EgressSocket set, the
	// API server dials aggregated API servers through that egress proxy
	// too (cloudcore dials them directly).
	AggregationLayer bool

	// APIServerArgs, ControllerManagerArgs and SchedulerArgs are appended
	// to the flags Start passes; a later flag overrides an earlier one.
	APIServerArgs         []string
	ControllerManagerArgs []string
	SchedulerArgs         []string

	// StartTimeout bounds how long Start (and StartComponent) wait for the
	// components to become healthy. Zero means 3 minutes.
	StartTimeout time.Duration

	// StopTimeout is how long Stop waits after SIGTERM before it sends
	// SIGKILL, per component. Zero means 15 seconds.
	StopTimeout time.Duration

	// Logger receives progress and unexpected exits. Nil means slog.Default().
	Logger *slog.Logger
}

func (o *Options) validate() error {
	if o.Dir == "" {
		return errors.New("options: Dir is required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return fmt.Errorf("options: %w", err)
	}
	o.Dir = dir
	if o.NodeMonitorPeriod < 0 || o.NodeMonitorGracePeriod < 0 || o.StartTimeout < 0 || o.StopTimeout < 0 {
		return errors.New("options: durations must not be negative")
	}
	if o.NodeMonitorPeriod > 0 && o.NodeMonitorGracePeriod > 0 && o.NodeMonitorGracePeriod <= o.NodeMonitorPeriod {
		return fmt.Errorf("options: NodeMonitorGracePeriod (%s) must be larger than NodeMonitorPeriod (%s)",
			o.NodeMonitorGracePeriod, o.NodeMonitorPeriod)
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 3 * time.Minute
	}
	if o.StopTimeout == 0 {
		o.StopTimeout = 15 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// ControlPlane is a running control plane. Its methods are safe for
// concurrent use.
type ControlPlane struct {
	opts Options
	log  *slog.Logger
	bins map[Component]string
	pki  *pki
	lock *os.File // flock on Dir/.lock while we run

	// Ports, picked by Start.
	etcdClientPort, etcdPeerPort, apiPort, kcmPort, schedulerPort int

	done     chan struct{} // closed at the first unexpected exit
	doneOnce sync.Once
	errMu    sync.Mutex
	err      error // guarded by errMu: the first unexpected exit

	mu      sync.Mutex             // guards procs and stopped
	procs   map[Component]*process // running components
	stopped bool
}

// Start starts etcd, kube-apiserver and, if asked, kube-controller-manager
// and kube-scheduler, and returns once all are healthy and the admin
// kubeconfig is written. ctx bounds the start only; the processes run until
// Stop. On error nothing is left running.
func Start(ctx context.Context, opts Options) (*ControlPlane, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	began := time.Now()
	bins, err := findBinaries(opts.BinDir, opts.EtcdPath)
	if err != nil {
		return nil, err
	}
	cp := &ControlPlane{
		opts:  opts,
		log:   opts.Logger.With(slog.String("dir", opts.Dir)),
		bins:  bins,
		procs: map[Component]*process{},
		done:  make(chan struct{}),
	}
	if err := cp.prepareDir(); err != nil {
		cp.unlock()
		return nil, err
	}

	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	const attempts = 3
	for attempt := 1; ; attempt++ {
		err = cp.startAll(ctx)
		if err == nil {
			break
		}
		cp.stopAll()
		if !errors.Is(err, errPortInUse) || attempt == attempts {
			cp.unlock()
			return nil, err
		}
		cp.log.Warn("port taken while starting, retrying with new ports", slog.Any("err", err))
	}
	cp.log.Info("control plane ready",
		slog.String("url", cp.URL()), slog.String("kubeconfig", cp.Kubeconfig()),
		slog.Duration("took", time.Since(began)))
	return cp, nil
}

// prepareDir locks Dir, clears the state of a previous run and writes fresh
// keys and certificates.
func (cp *ControlPlane) prepareDir() error {
	dir := cp.opts.Dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("lock dir: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return fmt.Errorf("lock dir: %s is in use by another control plane: %w", dir, err)
	}
	cp.lock = lock

	// Only the paths we own: Dir may be a directory the caller uses for more.
	for _, name := range []string{"etcd", "pki", "logs", "certs", "kubeconfig",
		"kube-controller-manager.kubeconfig", "kube-scheduler.kubeconfig"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("clear previous run: %w", err)
		}
	}
	for _, name := range []string{"logs", "certs"} {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			return fmt.Errorf("create dir: %w", err)
		}
	}
	cp.pki, err = writePKI(filepath.Join(dir, "pki"),
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.IPv4(10, 96, 0, 1)},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"})
	if err != nil {
		return fmt.Errorf("write pki: %w", err)
	}
	if cp.opts.AggregationLayer {
		if err := cp.pki.writeFrontProxy(filepath.Join(dir, "pki")); err != nil {
			return fmt.Errorf("write pki: %w", err)
		}
	}
	return nil
}

// startAll picks ports and starts the enabled components in order.
func (cp *ControlPlane) startAll(ctx context.Context) error {
	ports, err := freePorts(5)
	if err != nil {
		return err
	}
	cp.etcdClientPort, cp.etcdPeerPort, cp.apiPort, cp.kcmPort, cp.schedulerPort =
		ports[0], ports[1], ports[2], ports[3], ports[4]

	for _, c := range []Component{ControllerManager, Scheduler} {
		if err := cp.writeComponentKubeconfig(c); err != nil {
			return err
		}
	}
	for _, c := range []Component{Etcd, APIServer} {
		if err := cp.startComponent(ctx, c); err != nil {
			return err
		}
	}
	if err := cp.bindKubeletClient(ctx); err != nil {
		return err
	}
	// The controller manager and the scheduler do not depend on each other:
	// start both, then wait for both.
	var later []Component
	if cp.opts.WithControllerManager {
		later = append(later, ControllerManager)
	}
	if cp.opts.WithScheduler {
		later = append(later, Scheduler)
	}
	errs := make(chan error, len(later))
	for _, c := range later {
		go func() { errs <- cp.startComponent(ctx, c) }()
	}
	for range later {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	if err != nil {
		return err
	}
	if cp.opts.WithControllerManager {
		if err := cp.WaitForDefaultServiceAccount(ctx, metav1.NamespaceDefault); err != nil {
			return err
		}
	}
	return writeKubeconfig(cp.Kubeconfig(), cp.URL(), cp.pki.caPEM, adminUser, cp.pki.tokens[adminUser])
}

// StartComponent starts a component that is not running, for example the
// controller manager after StopComponent, and waits until it is healthy. It
// reuses the component's port and keys, and appends to its log.
func (cp *ControlPlane) StartComponent(ctx context.Context, c Component) error {
	ctx, cancel := context.WithTimeout(ctx, cp.opts.StartTimeout)
	defer cancel()
	return cp.startComponent(ctx, c)
}

func (cp *ControlPlane) startComponent(ctx context.Context, c Component) error {
	args, err := cp.args(c)
	if err != nil {
		return err
	}
	cp.mu.Lock()
	if cp.stopped {
		cp.mu.Unlock()
		return errors.New("start component: control plane is stopped")
	}
	if p, ok := cp.procs[c]; ok && !p.exited() {
		cp.mu.Unlock()
		return fmt.Errorf("start component: %s is already running", c)
	}
	began := time.Now()
	p, err := startProcess(c, cp.bins[c], args, cp.LogPath(c), cp.onExit)
	if err != nil {
		cp.mu.Unlock()
		return err
	}
	cp.procs[c] = p
	cp.mu.Unlock()

	if err := cp.waitHealthy(ctx, p); err != nil {
		return err
	}
	p.healthy.Store(true)
	cp.log.Info("component ready", slog.String("component", string(c)),
		slog.Int("pid", p.pid()), slog.Duration("took", time.Since(began)))
	return nil
}

// onExit records an exit that Stop or StopComponent did not ask for, of a
// component that had been healthy (a failed start is reported by Start).
func (cp *ControlPlane) onExit(p *process) {
	if p.stopping.Load() || !p.healthy.Load() {
		return
	}
	err := p.exitError()
	cp.log.Error("component exited unexpectedly", slog.String("component", string(p.component)),
		slog.Int("pid", p.pid()), slog.Any("err", p.waitErr), slog.String("log", p.logPath))
	cp.doneOnce.Do(func() {
		cp.errMu.Lock()
		cp.err = err
		cp.errMu.Unlock()
		close(cp.done)
	})
}

// Done is closed when a component exits without Stop or StopComponent
// having asked it to. Err then says which and why.
func (cp *ControlPlane) Done() <-chan struct{} { return cp.done }

// Err returns the first unexpected exit of a component, or nil.
func (cp *ControlPlane) Err() error {
	cp.errMu.Lock()
	defer cp.errMu.Unlock()
	return cp.err
}

// StopComponent stops one component (SIGTERM, then SIGKILL after
// Options.StopTimeout). Stopping a component that is not running is a no-op.
func (cp *ControlPlane) StopComponent(c Component) error {
	cp.mu.Lock()
	p, ok := cp.procs[c]
	delete(cp.procs, c)
	cp.mu.Unlock()
	if !ok {
		return nil
	}
	p.stop(cp.opts.StopTimeout, cp.log)
	return nil
}

// Stop stops every component in reverse start order and releases Dir. It
// returns once no child process is left. Calling it again is a no-op.
func (cp *ControlPlane) Stop() error {
	cp.mu.Lock()
	if cp.stopped {
		cp.mu.Unlock()
		return nil
	}
	cp.stopped = true
	cp.mu.Unlock()
	killed := cp.stopAll()
	cp.unlock()
	if len(killed) > 0 {
		return fmt.Errorf("stop: %v did not exit within %s of SIGTERM and were killed", killed, cp.opts.StopTimeout)
	}
	return nil
}

// stopAll stops the running components in reverse start order and returns
// those that needed SIGKILL.
func (cp *ControlPlane) stopAll() (killed []Component) {
	// metrics-server (StartMetricsServer) first: it uses the API server.
	order := []Component{MetricsServerComponent}
	for i := len(startOrder) - 1; i >= 0; i-- {
		order = append(order, startOrder[i])
	}
	for _, c := range order {
		cp.mu.Lock()
		p, ok := cp.procs[c]
		delete(cp.procs, c)
		cp.mu.Unlock()
		if ok && p.stop(cp.opts.StopTimeout, cp.log) {
			killed = append(killed, c)
		}
	}
	return killed
}

func (cp *ControlPlane) unlock() {
	if cp.lock != nil {
		cp.lock.Close() // closing the descriptor releases the flock
		cp.lock = nil
	}
}

// Kubeconfig returns the path of the admin kubeconfig (Dir/kubeconfig).
func (cp *ControlPlane) Kubeconfig() string { return filepath.Join(cp.opts.Dir, "kubeconfig") }

// URL returns the apiserver's URL, https://127.0.0.1:<port>.
func (cp *ControlPlane) URL() string {
	return "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(cp.apiPort))
}

// CACert returns the PEM certificate of the CA that signed the apiserver's
// serving certificate.
func (cp *ControlPlane) CACert() []byte { return append([]byte(nil), cp.pki.caPEM...) }

// RESTConfig returns a new admin (system:masters) client config. Its QPS
// and Burst are raised above client-go's defaults to suit tests.
func (cp *ControlPlane) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            cp.URL(),
		BearerToken:     cp.pki.tokens[adminUser],
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.CACert()},
		QPS:             100,
		Burst:           200,
	}
}

// LogPath returns the path of a component's log file.
func (cp *ControlPlane) LogPath(c Component) string {
	return filepath.Join(cp.opts.Dir, "logs", string(c)+".log")
}

// Pids returns the process id of each running component.
func (cp *ControlPlane) Pids() map[Component]int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	pids := map[Component]int{}
	for c, p := range cp.procs {
		if !p.exited() {
			pids[c] = p.pid()
		}
	}
	return pids
}

// WaitForDefaultServiceAccount waits until the controller manager has
// created the "default" ServiceAccount in namespace ns; pods cannot be
// created there before. It needs the controller manager to be running.
func (cp *ControlPlane) WaitForDefaultServiceAccount(ctx context.Context, ns string) error {
	cs, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		return fmt.Errorf("wait for service account: %w", err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) && ctx.Err() == nil {
			cp.log.Debug("get service account", slog.String("namespace", ns), slog.Any("err", err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for service account %s/default: %w (last error: %v)", ns, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// egressArgs writes the egress selector configuration, if asked for, and
// returns its flag.
func (cp *ControlPlane) egressArgs() []string {
	if cp.opts.EgressSocket == "" {
		return nil
	}
	path := filepath.Join(cp.opts.Dir, "pki", "egress-selector.yaml")
	conf := fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: %s
`, cp.opts.EgressSocket)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		cp.log.Error("write egress selector configuration", slog.Any("err", err))
		return nil
	}
	return []string{"--egress-selector-config-file=" + path}
}

// aggregationArgs are the API server's flags of the aggregation layer, if
// asked for.
func (cp *ControlPlane) aggregationArgs() []string {
	if !cp.opts.AggregationLayer {
		return nil
	}
	return []string{
		"--requestheader-client-ca-file=" + cp.pki.frontProxyCA,
		"--requestheader-allowed-names=" + FrontProxyClientUser,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + cp.pki.frontProxyCert,
		"--proxy-client-key-file=" + cp.pki.frontProxyKey,
		"--enable-aggregator-routing=true",
	}
}

// bindKubeletClient lets the API server's kubelet client identity use the
// kubelet API (ClusterRole system:kubelet-api-admin), as kubeadm does: a
// kubelet (or cloudcore's kubelet proxy) authorizes its requests with a
// SubjectAccessReview.
func (cp *ControlPlane) bindKubeletClient(ctx context.Context) error {
	cs, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		return err
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tether:kube-apiserver-kubelet-client"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: KubeletClientUser}},
	}
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("bind the kubelet client: %w", err)
	}
	return nil
}

// IssueClientCert issues a client certificate of the cluster's client CA
// for user in groups (tests: a caller of the kubelet API).
func (cp *ControlPlane) IssueClientCert(user string, groups []string) (certPEM, keyPEM []byte, err error) {
	return cp.pki.ca.IssueClient(user, groups, 24*time.Hour)
}

// args returns the command line of a component.
func (cp *ControlPlane) args(c Component) ([]string, error) {
	dir := cp.opts.Dir
	port := func(p int) string { return strconv.Itoa(p) }
	etcdClient := "http://127.0.0.1:" + port(cp.etcdClientPort)
	etcdPeer := "http://127.0.0.1:" + port(cp.etcdPeerPort)
	switch c {
	case Etcd:
		return []string{
			"--name=tether",
			"--data-dir=" + filepath.Join(dir, "etcd"),
			"--listen-client-urls=" + etcdClient,
			"--advertise-client-urls=" + etcdClient,
			"--listen-peer-urls=" + etcdPeer,
			"--initial-advertise-peer-urls=" + etcdPeer,
			"--initial-cluster=tether=" + etcdPeer,
			"--initial-cluster-state=new",
			"--logger=zap",
			"--log-outputs=stderr",
			"--log-level=warn",
		}, nil
	case APIServer:
		return append([]string{
			"--etcd-servers=" + etcdClient,
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			"--secure-port=" + port(cp.apiPort),
			"--cert-dir=" + filepath.Join(dir, "certs", string(c)),
			"--tls-cert-file=" + cp.pki.serverCert,
			"--tls-private-key-file=" + cp.pki.serverKey,
			"--client-ca-file=" + cp.pki.caCert,
			"--token-auth-file=" + cp.pki.tokenFile,
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + cp.pki.saPub,
			"--service-account-signing-key-file=" + cp.pki.saKey,
			"--service-cluster-ip-range=" + ServiceClusterIPRange,
			"--allow-privileged=true",
			// The "kubernetes" Endpoints may not hold a loopback address.
			"--endpoint-reconciler-type=none",
			"--profiling=false",
			// Its identity to kubelets (and to cloudcore's kubelet proxy).
			"--kubelet-client-certificate=" + cp.pki.kubeletCert,
			"--kubelet-client-key=" + cp.pki.kubeletKey,
		}, slices.Concat(cp.egressArgs(), cp.aggregationArgs(), cp.opts.APIServerArgs)...), nil
	case ControllerManager:
		kc := cp.componentKubeconfig(c)
		args := []string{
			"--kubeconfig=" + kc,
			"--authentication-kubeconfig=" + kc,
			"--authorization-kubeconfig=" + kc,
			// The apiserver has no request-header (front proxy) CA to look up.
			"--authentication-skip-lookup=true",
			"--bind-address=127.0.0.1",
			"--secure-port=" + port(cp.kcmPort),
			"--cert-dir=" + filepath.Join(dir, "certs", string(c)),
			"--service-account-private-key-file=" + cp.pki.saKey,
			"--root-ca-file=" + cp.pki.caCert,
			"--cluster-signing-cert-file=" + cp.pki.caCert,
			"--cluster-signing-key-file=" + cp.pki.caKey,
			"--use-service-account-credentials=true",
			"--controllers=*",
			"--leader-elect=false",
			"--profiling=false",
		}
		if d := cp.opts.NodeMonitorPeriod; d > 0 {
			args = append(args, "--node-monitor-period="+d.String())
		}
		if d := cp.opts.NodeMonitorGracePeriod; d > 0 {
			args = append(args, "--node-monitor-grace-period="+d.String())
		}
		return append(args, cp.opts.ControllerManagerArgs...), nil
	case Scheduler:
		kc := cp.componentKubeconfig(c)
		return append([]string{
			"--kubeconfig=" + kc,
			"--authentication-kubeconfig=" + kc,
			"--authorization-kubeconfig=" + kc,
			// The apiserver has no request-header (front proxy) CA to look up.
			"--authentication-skip-lookup=true",
			"--bind-address=127.0.0.1",
			"--secure-port=" + port(cp.schedulerPort),
			"--cert-dir=" + filepath.Join(dir, "certs", string(c)),
			"--leader-elect=false",
			"--profiling=false",
		}, cp.opts.SchedulerArgs...), nil
	}
	return nil, fmt.Errorf("unknown component %q", c)
}

func (cp *ControlPlane) componentKubeconfig(c Component) string {
	return filepath.Join(cp.opts.Dir, string(c)+".kubeconfig")
}

func (cp *ControlPlane) writeComponentKubeconfig(c Component) error {
	user := map[Component]string{ControllerManager: controllerManagerUser, Scheduler: schedulerUser}[c]
	return writeKubeconfig(cp.componentKubeconfig(c), cp.URL(), cp.pki.caPEM, user, cp.pki.tokens[user])
}

// writeKubeconfig writes a kubeconfig with one cluster, user and context.
// It writes a temporary file and renames it, so a reader that waits for the
// file never sees half of it.
func writeKubeconfig(path, server string, caPEM []byte, user, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["tether"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["tether"] = &clientcmdapi.Context{Cluster: "tether", AuthInfo: user}
	cfg.CurrentContext = "tether"
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// waitHealthy polls the component's health endpoint until it answers 200,
// the process exits, or ctx ends.
func (cp *ControlPlane) waitHealthy(ctx context.Context, p *process) error {
	var (
		url    string
		client = &http.Client{Timeout: 5 * time.Second}
		tr     = &http.Transport{DisableKeepAlives: true}
		token  string
	)
	client.Transport = tr
	switch p.component {
	case Etcd:
		url = fmt.Sprintf("http://127.0.0.1:%d/health", cp.etcdClientPort)
	case APIServer:
		url = cp.URL() + "/readyz"
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(cp.pki.caPEM)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
		token = cp.pki.tokens[adminUser]
	case ControllerManager, Scheduler:
		port := cp.kcmPort
		if p.component == Scheduler {
			port = cp.schedulerPort
		}
		url = fmt.Sprintf("https://127.0.0.1:%d/healthz", port)
		// Their serving certificates are self-signed at start; only the
		// answer matters here.
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}

	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		last = probe(ctx, client, url, token)
		if last == nil {
			return nil
		}
		select {
		case <-p.done:
			if p.portInUse() {
				return fmt.Errorf("start %s: %w: %w", p.component, errPortInUse, p.exitError())
			}
			return fmt.Errorf("start %s: %w", p.component, p.exitError())
		case <-ctx.Done():
			return fmt.Errorf("start %s: not healthy: %w (last probe: %v; log: %s)", p.component, ctx.Err(), last, p.logPath)
		case <-tick.C:
		}
	}
}

func probe(ctx context.Context, client *http.Client, url, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, body)
	}
	return nil
}

// freePorts returns n distinct loopback ports that were free a moment ago.
// A port can still be taken before the component binds it; Start retries
// when that happens.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
