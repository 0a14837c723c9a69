package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

// MetricsServerComponent names metrics-server's process and log
// (Dir/logs/metrics-server.log).
const MetricsServerComponent Component = "metrics-server"

// The objects StartMetricsServer makes, named as in metrics-server's own
// manifests (manifests/base of sigs.k8s.io/metrics-server).
const (
	metricsNamespace   = "kube-system"
	metricsName        = "metrics-server"
	metricsAPIService  = "v1beta1.metrics.k8s.io"
	metricsServicePort = 443
)

var apiServiceGVR = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

// MetricsServerOptions configures StartMetricsServer.
type MetricsServerOptions struct {
	// Address is the IP metrics-server listens on and the address of the
	// Endpoints of Service kube-system/metrics-server, which the API
	// server's aggregator dials. It may not be loopback, link-local or
	// unspecified: the API server refuses such endpoints. On one host,
	// give it an address of its own on a local interface (e.g. one of
	// 192.0.2.0/24 on a bridge made for it). Required.
	Address string

	// Port is metrics-server's secure port. Zero picks a free one.
	Port int

	// Path is the metrics-server binary. Empty means metrics-server in
	// Options.BinDir (make kube-binaries builds it there).
	Path string

	// Args are appended to its flags: how it reaches kubelets
	// (--kubelet-port, --kubelet-certificate-authority,
	// --kubelet-preferred-address-types), which nodes it scrapes
	// (--node-selector), --metric-resolution. A later flag overrides an
	// earlier one.
	Args []string

	// Env is added to its environment: HTTPS_PROXY to reach edge nodes'
	// kubelet API through cloudcore's kubelet proxy (kubeletProxyAddr),
	// with NO_PROXY listing the API server's address (127.0.0.1).
	Env []string

	// TokenTTL is the lifetime of its ServiceAccount token. Zero means 7
	// days; it is not renewed.
	TokenTTL time.Duration
}

func (o *MetricsServerOptions) validate(binDirOpt string) error {
	ip := net.ParseIP(o.Address)
	if ip == nil {
		return fmt.Errorf("metrics-server: address %q is not an IP", o.Address)
	}
	if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast() {
		return fmt.Errorf("metrics-server: address %s: the API server refuses loopback, link-local, multicast and unspecified endpoints", ip)
	}
	if o.Port < 0 || o.Port > 65535 || o.TokenTTL < 0 {
		return fmt.Errorf("metrics-server: bad port %d or token TTL %s", o.Port, o.TokenTTL)
	}
	if o.TokenTTL == 0 {
		o.TokenTTL = 7 * 24 * time.Hour
	}
	if o.Path == "" {
		dir, err := binDir(binDirOpt)
		if err != nil {
			return fmt.Errorf("metrics-server: %w", err)
		}
		o.Path = filepath.Join(dir, "metrics-server")
	}
	if st, err := os.Stat(o.Path); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("metrics-server: %s is not an executable: run `make kube-binaries`", o.Path)
	}
	return nil
}

// MetricsServer is a metrics-server that StartMetricsServer runs as the
// cluster's resource metrics API (metrics.k8s.io, what kubectl top reads).
type MetricsServer struct {
	cp   *ControlPlane
	proc *process
	url  string
}

// StartMetricsServer runs metrics-server as an aggregated API server of
// the control plane, with the rights its upstream manifests give it and no
// more: ServiceAccount kube-system/metrics-server, ClusterRole
// system:metrics-server (get nodes/metrics, read pods and nodes), the
// auth-delegator binding (it authenticates and authorizes its callers
// with TokenReviews and SubjectAccessReviews) and the
// extension-apiserver-authentication-reader Role (it reads the API
// server's front-proxy CA there and takes X-Remote-User only from the API
// server's front-proxy client certificate). Its serving certificate is
// issued by the cluster's CA for metrics-server.kube-system.svc, which
// the APIService v1beta1.metrics.k8s.io carries as its caBundle. It
// returns once metrics-server answers /livez; the APIService turns
// Available once the API server reaches it (through the egress proxy, if
// any). Stop, or the control plane's Stop, ends it.
//
// It needs Options.AggregationLayer. Users read metrics with the
// ClusterRole system:aggregated-metrics-reader (aggregated into view,
// edit and admin).
func (cp *ControlPlane) StartMetricsServer(ctx context.Context, o MetricsServerOptions) (*MetricsServer, error) {
	if !cp.opts.AggregationLayer {
		return nil, errors.New("metrics-server: the control plane runs without Options.AggregationLayer")
	}
	if err := o.validate(cp.opts.BinDir); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cp.opts.StartTimeout)
	defer cancel()
	if o.Port == 0 {
		ports, err := freePorts(1)
		if err != nil {
			return nil, err
		}
		o.Port = ports[0]
	}
	cs, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cp.RESTConfig())
	if err != nil {
		return nil, err
	}
	if err := applyMetricsRBAC(ctx, cs); err != nil {
		return nil, err
	}
	dir := filepath.Join(cp.opts.Dir, "metrics-server")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("metrics-server: %w", err)
	}
	kubeconfig, err := cp.metricsKubeconfig(ctx, cs, dir, o.TokenTTL)
	if err != nil {
		return nil, err
	}
	ip := net.ParseIP(o.Address)
	host := metricsName + "." + metricsNamespace + ".svc"
	certPEM, keyPEM, err := cp.pki.ca.IssueServer(metricsName, []string{host, host + ".cluster.local"}, []net.IP{ip}, 365*24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("metrics-server: serving certificate: %w", err)
	}
	certFile, keyFile := filepath.Join(dir, "serving.crt"), filepath.Join(dir, "serving.key")
	for path, b := range map[string][]byte{certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("metrics-server: %w", err)
		}
	}
	args := append([]string{
		"--bind-address=" + o.Address,
		"--secure-port=" + strconv.Itoa(o.Port),
		"--tls-cert-file=" + certFile,
		"--tls-private-key-file=" + keyFile,
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--kubelet-preferred-address-types=Hostname,InternalIP",
		"--metric-resolution=15s",
		"--profiling=false",
	}, o.Args...)
	cp.mu.Lock()
	if cp.stopped {
		cp.mu.Unlock()
		return nil, errors.New("metrics-server: control plane is stopped")
	}
	if old, ok := cp.procs[MetricsServerComponent]; ok && !old.exited() {
		cp.mu.Unlock()
		return nil, errors.New("metrics-server: already running")
	}
	p, err := startProcessEnv(MetricsServerComponent, o.Path, args, o.Env, cp.LogPath(MetricsServerComponent), nil)
	if err == nil {
		cp.procs[MetricsServerComponent] = p
	}
	cp.mu.Unlock()
	if err != nil {
		return nil, err
	}
	ms := &MetricsServer{cp: cp, proc: p, url: "https://" + net.JoinHostPort(o.Address, strconv.Itoa(o.Port))}
	if err := ms.waitLive(ctx); err != nil {
		ms.proc.stop(cp.opts.StopTimeout, cp.log)
		return nil, err
	}
	if err := registerMetricsAPI(ctx, cs, dyn, ip, o.Port, cp.pki.caPEM); err != nil {
		ms.proc.stop(cp.opts.StopTimeout, cp.log)
		return nil, err
	}
	cp.log.Info("metrics-server running", slog.String("url", ms.url), slog.Int("pid", p.pid()))
	return ms, nil
}

// URL is metrics-server's own address, https://<Address>:<Port>.
func (ms *MetricsServer) URL() string { return ms.url }

// Exited reports whether metrics-server's process has ended.
func (ms *MetricsServer) Exited() bool { return ms.proc.exited() }

// Stop removes the APIService (an unavailable aggregated API fails the
// API server's discovery and holds namespaces in Terminating), the
// Service and its Endpoints, then stops metrics-server. The RBAC objects
// stay.
func (ms *MetricsServer) Stop(ctx context.Context) error {
	var errs []error
	if dyn, err := dynamic.NewForConfig(ms.cp.RESTConfig()); err != nil {
		errs = append(errs, err)
	} else if err := dyn.Resource(apiServiceGVR).Delete(ctx, metricsAPIService, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("delete APIService: %w", err))
	}
	if cs, err := kubernetes.NewForConfig(ms.cp.RESTConfig()); err != nil {
		errs = append(errs, err)
	} else {
		if err := cs.CoreV1().Services(metricsNamespace).Delete(ctx, metricsName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete Service: %w", err))
		}
		if err := cs.CoreV1().Endpoints(metricsNamespace).Delete(ctx, metricsName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete Endpoints: %w", err))
		}
	}
	ms.cp.mu.Lock()
	if ms.cp.procs[MetricsServerComponent] == ms.proc {
		delete(ms.cp.procs, MetricsServerComponent)
	}
	ms.cp.mu.Unlock()
	ms.proc.stop(ms.cp.opts.StopTimeout, ms.cp.log)
	return errors.Join(errs...)
}

// waitLive polls /livez (always allowed, no credentials) until it answers
// 200, the process exits, or ctx ends.
func (ms *MetricsServer) waitLive(ctx context.Context) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ms.cp.pki.caPEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil,
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: metricsName + "." + metricsNamespace + ".svc"}}}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if last = probe(ctx, client, ms.url+"/livez", ""); last == nil {
			return nil
		}
		select {
		case <-ms.proc.done:
			return fmt.Errorf("start metrics-server: %w", ms.proc.exitError())
		case <-ctx.Done():
			return fmt.Errorf("start metrics-server: not live: %w (last probe: %v; log: %s)", ctx.Err(), last, ms.proc.logPath)
		case <-tick.C:
		}
	}
}

// metricsKubeconfig writes a kubeconfig with a token of ServiceAccount
// kube-system/metrics-server (TokenRequest, ttl).
func (cp *ControlPlane) metricsKubeconfig(ctx context.Context, cs kubernetes.Interface, dir string, ttl time.Duration) (string, error) {
	secs := int64(ttl / time.Second)
	tr, err := cs.CoreV1().ServiceAccounts(metricsNamespace).CreateToken(ctx, metricsName,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("metrics-server: token: %w", err)
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(path, cp.URL(), cp.pki.caPEM, "system:serviceaccount:"+metricsNamespace+":"+metricsName, tr.Status.Token); err != nil {
		return "", err
	}
	return path, nil
}

// applyMetricsRBAC makes metrics-server's ServiceAccount and the roles and
// bindings of its upstream manifests (manifests/base/rbac.yaml).
func applyMetricsRBAC(ctx context.Context, cs kubernetes.Interface) error {
	sa := rbacv1.Subject{Kind: "ServiceAccount", Name: metricsName, Namespace: metricsNamespace}
	ref := func(kind, name string) rbacv1.RoleRef {
		return rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: kind, Name: name}
	}
	objs := []func() error{
		func() error {
			_, err := cs.CoreV1().ServiceAccounts(metricsNamespace).Create(ctx,
				&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: metricsName}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
				ObjectMeta: metav1.ObjectMeta{Name: "system:aggregated-metrics-reader", Labels: map[string]string{
					"rbac.authorization.k8s.io/aggregate-to-view":  "true",
					"rbac.authorization.k8s.io/aggregate-to-edit":  "true",
					"rbac.authorization.k8s.io/aggregate-to-admin": "true"}},
				Rules: []rbacv1.PolicyRule{{APIGroups: []string{"metrics.k8s.io"}, Resources: []string{"pods", "nodes"},
					Verbs: []string{"get", "list", "watch"}}},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
				ObjectMeta: metav1.ObjectMeta{Name: "system:metrics-server"},
				Rules: []rbacv1.PolicyRule{
					{APIGroups: []string{""}, Resources: []string{"nodes/metrics"}, Verbs: []string{"get"}},
					{APIGroups: []string{""}, Resources: []string{"pods", "nodes"}, Verbs: []string{"get", "list", "watch"}},
				},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.RbacV1().RoleBindings(metricsNamespace).Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "metrics-server-auth-reader"},
				RoleRef:    ref("Role", "extension-apiserver-authentication-reader"), Subjects: []rbacv1.Subject{sa},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "metrics-server:system:auth-delegator"},
				RoleRef:    ref("ClusterRole", "system:auth-delegator"), Subjects: []rbacv1.Subject{sa},
			}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "system:metrics-server"},
				RoleRef:    ref("ClusterRole", "system:metrics-server"), Subjects: []rbacv1.Subject{sa},
			}, metav1.CreateOptions{})
			return err
		},
	}
	for _, create := range objs {
		if err := create(); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("metrics-server: rbac: %w", err)
		}
	}
	return nil
}

// registerMetricsAPI makes Service kube-system/metrics-server (no
// selector), its Endpoints at ip:port, and APIService
// v1beta1.metrics.k8s.io with caBundle (replacing those of an earlier
// start).
func registerMetricsAPI(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, ip net.IP, port int, caPEM []byte) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: metricsName, Namespace: metricsNamespace},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "https", Port: metricsServicePort,
			Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(int32(port))}}},
	}
	if _, err := cs.CoreV1().Services(metricsNamespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("metrics-server: Service: %w", err)
	}
	ep := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Name: metricsName, Namespace: metricsNamespace},
		Subsets: []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: ip.String()}},
			Ports: []corev1.EndpointPort{{Name: "https", Port: int32(port), Protocol: corev1.ProtocolTCP}}}},
	}
	if err := cs.CoreV1().Endpoints(metricsNamespace).Delete(ctx, metricsName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("metrics-server: Endpoints: %w", err)
	}
	if _, err := cs.CoreV1().Endpoints(metricsNamespace).Create(ctx, ep, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("metrics-server: Endpoints: %w", err)
	}
	api := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata":   map[string]any{"name": metricsAPIService},
		"spec": map[string]any{
			"service":              map[string]any{"name": metricsName, "namespace": metricsNamespace, "port": int64(metricsServicePort)},
			"group":                "metrics.k8s.io",
			"version":              "v1beta1",
			"caBundle":             base64.StdEncoding.EncodeToString(caPEM),
			"groupPriorityMinimum": int64(100),
			"versionPriority":      int64(100),
		},
	}}
	apis := dyn.Resource(apiServiceGVR)
	if err := apis.Delete(ctx, metricsAPIService, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("metrics-server: APIService: %w", err)
	}
	if _, err := apis.Create(ctx, api, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("metrics-server: APIService: %w", err)
	}
	return nil
}
