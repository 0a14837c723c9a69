// Package kubeletserver is the edge's kubelet API, the part the API server
// uses: /containerLogs, /exec, /attach, /portForward, /pods, /healthz, and
// (when given a handler) /stats/summary and /metrics/resource. Nothing
// listens on a port: the server is served on the streams the hub opens
// through the node's tunnel (a streams.Listener), and locally by
// `edgecore ctl` on a root-only unix socket.
//
// Trust: a request arriving on a tunnel stream was authenticated and
// authorized by cloudcore (the API server's kubelet client identity and a
// SubjectAccessReview, as a kubelet does); the node's side only serves the
// pods it holds (its store and static pods). Exec, attach and port-forward
// ask containerd (CRI) for a streaming URL on loopback and proxy the
// upgraded connection to it, as the kubelet does.
package kubeletserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Runtime is what the server needs of the container runtime (the CRI
// runtime is one).
type Runtime interface {
	// ContainerLog returns the log file of the pod's container (previous:
	// of the attempt before the newest) and the newest container's ID.
	ContainerLog(ctx context.Context, uid types.UID, container string, previous bool) (path, id string, err error)
	// ContainerRunning reports whether the container runs.
	ContainerRunning(ctx context.Context, id string) (bool, error)
	ExecURL(ctx context.Context, uid types.UID, container string, cmd []string, stdin, stdout, stderr, tty bool) (string, error)
	AttachURL(ctx context.Context, uid types.UID, container string, stdin, stdout, stderr, tty bool) (string, error)
	PortForwardURL(ctx context.Context, uid types.UID, ports []int32) (string, error)
}

// Pods are the pods the node holds.
type Pods interface {
	// Pod returns the pod namespace/name the node runs, or nil.
	Pod(namespace, name string) (*corev1.Pod, error)
	// List returns every pod the node runs.
	List() ([]*corev1.Pod, error)
}

// Config configures the Server.
type Config struct {
	// NodeName is the node's name.
	NodeName string
	// Pods are the node's pods. Required.
	Pods Pods
	// Runtime runs them; nil (the fake runtime) answers 501 to logs, exec,
	// attach and port-forward.
	Runtime Runtime
	// Stats, if set, serves /stats/summary and /metrics/resource (and what
	// is under them); nil answers 404.
	Stats http.Handler
	// Logger is where the server logs (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.NodeName == "" {
		return errors.New("kubeletserver: NodeName is empty")
	}
	if c.Pods == nil {
		return errors.New("kubeletserver: no Pods")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Server serves the kubelet API.
type Server struct {
	cfg Config
	mux *http.ServeMux
}

// New builds a Server.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	s.mux.HandleFunc("GET /pods", s.pods)
	s.mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", s.containerLogs)
	for _, m := range []string{"GET", "POST"} {
		s.mux.HandleFunc(m+" /exec/{ns}/{pod}/{container}", s.exec)
		s.mux.HandleFunc(m+" /exec/{ns}/{pod}/{uid}/{container}", s.exec)
		s.mux.HandleFunc(m+" /attach/{ns}/{pod}/{container}", s.attach)
		s.mux.HandleFunc(m+" /attach/{ns}/{pod}/{uid}/{container}", s.attach)
		s.mux.HandleFunc(m+" /portForward/{ns}/{pod}", s.portForward)
		s.mux.HandleFunc(m+" /portForward/{ns}/{pod}/{uid}", s.portForward)
	}
	stats := cfg.Stats
	if stats == nil {
		stats = http.NotFoundHandler()
	}
	s.mux.Handle("/stats/", stats)
	s.mux.Handle("/metrics/resource", stats)
	s.mux.Handle("/metrics/resource/", stats)
	return s, nil
}

// SetPods replaces the Pods New was given; call it before Serve.
func (s *Server) SetPods(p Pods) { s.cfg.Pods = p }

// ServeHTTP serves one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Serve serves ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second, MaxHeaderBytes: 64 << 10,
		ErrorLog:    slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		srv.Close()
		return nil
	}
}

// pod finds the pod of the request and, if the path names one, checks its
// UID. It answers the error itself and returns nil then.
func (s *Server) pod(w http.ResponseWriter, r *http.Request) *corev1.Pod {
	ns, name := r.PathValue("ns"), r.PathValue("pod")
	p, err := s.cfg.Pods.Pod(ns, name)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return nil
	}
	if p == nil {
		http.Error(w, fmt.Sprintf("pod %s/%s not found on node %s", ns, name, s.cfg.NodeName), http.StatusNotFound)
		return nil
	}
	if uid := r.PathValue("uid"); uid != "" && types.UID(uid) != p.UID {
		http.Error(w, fmt.Sprintf("pod %s/%s has UID %s, not %s", ns, name, p.UID, uid), http.StatusNotFound)
		return nil
	}
	return p
}

// hasContainer reports whether the pod has a container (or init or
// ephemeral container) named name, answering 404 if not.
func hasContainer(w http.ResponseWriter, p *corev1.Pod, name string) bool {
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		if c.Name == name {
			return true
		}
	}
	for _, c := range p.Spec.EphemeralContainers {
		if c.Name == name {
			return true
		}
	}
	http.Error(w, fmt.Sprintf("container %s is not valid for pod %s", name, p.Name), http.StatusNotFound)
	return false
}

func (s *Server) runtime(w http.ResponseWriter) bool {
	if s.cfg.Runtime == nil {
		http.Error(w, "the node's container runtime does not serve logs or streams", http.StatusNotImplemented)
		return false
	}
	return true
}

func (s *Server) pods(w http.ResponseWriter, r *http.Request) {
	list, err := s.cfg.Pods.List()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out := corev1.PodList{}
	out.APIVersion, out.Kind = "v1", "PodList"
	for _, p := range list {
		out.Items = append(out.Items, *p)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(&out)
}

func (s *Server) containerLogs(w http.ResponseWriter, r *http.Request) {
	if !s.runtime(w) {
		return
	}
	p := s.pod(w, r)
	if p == nil {
		return
	}
	name := r.PathValue("container")
	if !hasContainer(w, p, name) {
		return
	}
	opts, err := parseLogOptions(r.URL.Query(), time.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	previous := r.URL.Query().Get("previous") == "true" || r.URL.Query().Get("previous") == "1"
	path, id, err := s.cfg.Runtime.ContainerLog(r.Context(), p.UID, name, previous)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	if previous {
		opts.Follow = false // a terminated container's file does not grow
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	flush := func() { rc.Flush() }
	running := func() bool {
		ok, err := s.cfg.Runtime.ContainerRunning(r.Context(), id)
		return err == nil && ok
	}
	if err := writeLogs(r.Context(), path, opts, w, flush, running); err != nil {
		s.cfg.Logger.Debug("container logs ended", slog.String("pod", p.Namespace+"/"+p.Name), slog.Any("err", err))
	}
}

// streamFlags reads the kubelet's stream query: input, output, error, tty
// ("1" or "true").
func streamFlags(q url.Values) (stdin, stdout, stderr, tty bool) {
	on := func(k string) bool { v := q.Get(k); return v == "1" || v == "true" }
	return on("input"), on("output"), on("error"), on("tty")
}

func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	if !s.runtime(w) {
		return
	}
	p := s.pod(w, r)
	if p == nil || !hasContainer(w, p, r.PathValue("container")) {
		return
	}
	q := r.URL.Query()
	cmd := q["command"]
	if len(cmd) == 0 {
		http.Error(w, "no command given", http.StatusBadRequest)
		return
	}
	stdin, stdout, stderr, tty := streamFlags(q)
	if tty {
		stderr = false // one stream with a terminal, as the kubelet does
	}
	u, err := s.cfg.Runtime.ExecURL(r.Context(), p.UID, r.PathValue("container"), cmd, stdin, stdout, stderr, tty)
	s.proxyStream(w, r, u, err)
}

func (s *Server) attach(w http.ResponseWriter, r *http.Request) {
	if !s.runtime(w) {
		return
	}
	p := s.pod(w, r)
	if p == nil || !hasContainer(w, p, r.PathValue("container")) {
		return
	}
	stdin, stdout, stderr, tty := streamFlags(r.URL.Query())
	if tty {
		stderr = false
	}
	u, err := s.cfg.Runtime.AttachURL(r.Context(), p.UID, r.PathValue("container"), stdin, stdout, stderr, tty)
	s.proxyStream(w, r, u, err)
}

func (s *Server) portForward(w http.ResponseWriter, r *http.Request) {
	if !s.runtime(w) {
		return
	}
	p := s.pod(w, r)
	if p == nil {
		return
	}
	var ports []int32
	for _, v := range r.URL.Query()["port"] {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			http.Error(w, fmt.Sprintf("port %q: want 1 to 65535", v), http.StatusBadRequest)
			return
		}
		ports = append(ports, int32(n))
	}
	u, err := s.cfg.Runtime.PortForwardURL(r.Context(), p.UID, ports)
	s.proxyStream(w, r, u, err)
}

// proxyStream proxies the request, upgrade included, to containerd's
// streaming URL.
func (s *Server) proxyStream(w http.ResponseWriter, r *http.Request, rawURL string, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	target, err := url.Parse(rawURL)
	if err != nil || target.Host == "" {
		http.Error(w, fmt.Sprintf("container runtime gave a bad streaming URL %q", rawURL), http.StatusInternalServerError)
		return
	}
	if !loopback(target.Hostname()) {
		http.Error(w, "container runtime's streaming server is not on loopback", http.StatusInternalServerError)
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = target
			pr.Out.Host = target.Host
		},
		FlushInterval: -1,
		ErrorLog:      slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
	}
	rp.ServeHTTP(w, r)
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
