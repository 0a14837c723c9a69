package metaserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/tether-edge/tether/edgecore/accessreview"
	"github.com/tether-edge/tether/edgecore/satoken"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// InClusterConfig configures the in-cluster listener: the Kubernetes API
// the node's pods reach with client-go's rest.InClusterConfig().
type InClusterConfig struct {
	// Addr is the TLS address, ip:port, on the pod network's side of the
	// node (the address the resolver serves pods on); pods get it as
	// KUBERNETES_SERVICE_HOST and _PORT.
	Addr string
	// Certificate is the listener's serving certificate, for Addr's IP and
	// the kubernetes.default.svc names, issued by the CA of the pods'
	// ca.crt (satoken.Credentials.ServingCert).
	Certificate tls.Certificate
	// Allowed are the source networks served (the pod network); other
	// connections get 403. Required.
	Allowed []netip.Prefix
	// Tokens verifies the pods' service-account tokens (required).
	Tokens TokenVerifier
	// Authorizer decides what a pod's service account may read (required).
	Authorizer Authorizer
	// Writes, if set, relays the pods' writes to the cloud
	// (*apirelay.Relay is one); nil refuses them (405, 503 with the cloud
	// away).
	Writes Writer
	// Rate and Burst bound the requests per second of one pod (default
	// 50, burst 100); beyond them a request gets 429 (Retry-After: 1).
	// Watches count once, when opened.
	Rate  float64
	Burst int
}

// TokenVerifier verifies a pod's service-account token (*satoken.Issuer is
// one).
type TokenVerifier interface {
	Verify(tok string, now time.Time) (*satoken.Claims, error)
}

// Writer relays a write of a pod to the cloud and returns the answer
// (never nil): the API server's, or a refusal (503 with the cloud away).
type Writer interface {
	Write(ctx context.Context, pod satoken.Pod, r *protocol.APIRequest) *protocol.APIResponse
}

// Authorizer decides for a service account (*accessreview.Cache is one).
type Authorizer interface {
	Authorize(ctx context.Context, pod satoken.Pod, check protocol.AccessCheck) accessreview.Decision
	// Online reports whether the cloud is reachable (writes get 503 when
	// not).
	Online() bool
}

// MaxHeaderBytes bounds the request headers on the in-cluster listener: a
// token is at most satoken.MaxTokenSize (4 KiB); larger headers get 431.
const MaxHeaderBytes = 16 << 10

func (c *InClusterConfig) validate() error {
	ap, err := netip.ParseAddrPort(c.Addr)
	if err != nil {
		return fmt.Errorf("metaserver: in-cluster addr: %w", err)
	}
	if ap.Addr().IsUnspecified() {
		return fmt.Errorf("metaserver: in-cluster addr %s: an address on the pod network, not all interfaces", c.Addr)
	}
	if len(c.Certificate.Certificate) == 0 {
		return errors.New("metaserver: in-cluster: no serving certificate")
	}
	if len(c.Allowed) == 0 {
		return errors.New("metaserver: in-cluster: no allowed source networks")
	}
	if c.Tokens == nil || c.Authorizer == nil {
		return errors.New("metaserver: in-cluster: no token verifier or authorizer")
	}
	if c.Rate < 0 || c.Burst < 0 {
		return errors.New("metaserver: in-cluster: negative rate or burst")
	}
	if c.Rate == 0 {
		c.Rate = 50
	}
	if c.Burst == 0 {
		c.Burst = 100
	}
	return nil
}

// podGuard authenticates a pod by its service-account token: the token
// verifies (the node's key, not expired, this node) and names a pod the node
// holds, with the same namespace, name and service account. The caller is a
// Client with no resources of its own: each read is authorized
// (authorizePod).
func (s *Server) podGuard(h func(w http.ResponseWriter, r *http.Request, c *Client)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.fromPodNetwork(r) {
			s.refused.Add(1)
			writeStatus(w, apierrors.NewForbidden(schema.GroupResource{}, "",
				errors.New("the in-cluster API at the edge serves the node's pods only")))
			return
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		var claims *satoken.Claims
		var err error
		if !ok {
			err = errors.New("no bearer token")
		} else if claims, err = s.cfg.InCluster.Tokens.Verify(tok, time.Now()); err == nil {
			err = s.podHeld(claims)
		}
		if err != nil {
			s.refused.Add(1)
			s.log.Info("in-cluster request refused", "remote", r.RemoteAddr, "reason", err.Error())
			writeStatus(w, &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure,
				Code: http.StatusUnauthorized, Reason: metav1.StatusReasonUnauthorized,
				Message: "the edge's in-cluster API needs the pod's service-account token: " + err.Error()}})
			return
		}
		if !s.podLimiter(claims.UID).Allow() {
			s.throttled.Add(1)
			w.Header().Set("Retry-After", "1")
			writeStatus(w, apierrors.NewTooManyRequests(
				fmt.Sprintf("pod %s/%s is over %v requests per second to the edge's in-cluster API",
					claims.Namespace, claims.Name, s.cfg.InCluster.Rate), 1))
			return
		}
		h(w, r, &Client{Name: claims.User(), Resources: []string{}, pod: &claims.Pod})
	}
}

// maxLimiters bounds the table of per-pod limiters; when full it starts
// again empty (a node runs at most a few hundred pods).
const maxLimiters = 4096

// podLimiter returns the rate limiter of the pod uid.
func (s *Server) podLimiter(uid string) *rate.Limiter {
	s.limMu.Lock()
	defer s.limMu.Unlock()
	l := s.limiters[uid]
	if l == nil {
		if s.limiters == nil || len(s.limiters) >= maxLimiters {
			s.limiters = map[string]*rate.Limiter{}
		}
		l = rate.NewLimiter(rate.Limit(s.cfg.InCluster.Rate), s.cfg.InCluster.Burst)
		s.limiters[uid] = l
	}
	return l
}

// Throttled counts the pods' requests refused with 429.
func (s *Server) Throttled() int64 { return s.throttled.Load() }

// fromPodNetwork reports whether r comes from an allowed network.
func (s *Server) fromPodNetwork(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range s.cfg.InCluster.Allowed {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// podHeld checks that the token's pod is one the node holds, as the token
// says: a token of a deleted pod, or of a pod whose service account
// changed, is refused.
func (s *Server) podHeld(c *satoken.Claims) error {
	var p *corev1.Pod
	err := s.db.View(func(tx *store.Tx) error {
		o, err := tx.Object(protocol.KindPod, c.UID)
		if err != nil || o == nil {
			return err
		}
		p, err = protocol.DecodePod(o.Data)
		return err
	})
	if err != nil {
		return fmt.Errorf("read pod: %w", err)
	}
	sa := ""
	if p != nil {
		if sa = p.Spec.ServiceAccountName; sa == "" {
			sa = "default"
		}
	}
	if p == nil || p.Namespace != c.Namespace || p.Name != c.Name || sa != c.ServiceAccount || p.Spec.NodeName != s.cfg.NodeName {
		return fmt.Errorf("pod %s/%s (uid %s) with service account %q is not a pod of node %s",
			c.Namespace, c.Name, c.UID, c.ServiceAccount, s.cfg.NodeName)
	}
	return nil
}

// authorizePod asks the Authorizer whether the pod's service account may
// read req, and answers 403 if not.
func (s *Server) authorizePod(w http.ResponseWriter, r *http.Request, c *Client, req *request) bool {
	verb := "list"
	switch {
	case req.watch:
		verb = "watch"
	case req.name != "":
		verb = "get"
	}
	check := protocol.AccessCheck{Verb: verb, Group: req.res.gv.Group, Resource: req.res.name,
		Namespace: req.namespace, Name: req.name}
	if req.watch {
		check.Name = ""
	}
	d := s.cfg.InCluster.Authorizer.Authorize(r.Context(), *c.pod, check)
	if d.Allowed {
		return true
	}
	s.refused.Add(1)
	what := verb + " " + req.res.name
	if req.namespace != "" {
		what += " in namespace " + req.namespace
	} else if req.res.namespaced {
		what += " across namespaces"
	}
	writeStatus(w, apierrors.NewForbidden(schema.GroupResource{Group: req.res.gv.Group, Resource: req.res.name}, req.name,
		fmt.Errorf("%s may not %s: %s", c.Name, what, d.Reason)))
	return false
}

// InClusterAddr is the in-cluster listener's address once it listens, ""
// before or without one.
func (s *Server) InClusterAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inClusterAddr
}

// WritesRelayed counts the writes of pods relayed to the cloud and
// answered (by the API server or the hub).
func (s *Server) WritesRelayed() int64 { return s.writesRelayed.Load() }

// WritesRefused counts the writes of pods refused with 503 while the cloud
// was unreachable.
func (s *Server) WritesRefused() int64 { return s.writesRefused.Load() }

// serveInCluster listens on the in-cluster address and serves until ctx
// ends; errc gets the end of Serve. A failure to listen is returned (the
// caller retries).
func (s *Server) serveInCluster(ctx context.Context, errc chan<- error) (*http.Server, error) {
	ic := s.cfg.InCluster
	ln, err := net.Listen("tcp", ic.Addr)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.inClusterAddr = ln.Addr().String()
	s.mu.Unlock()
	srv := &http.Server{
		Handler:           s.handler(s.podGuard),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    MaxHeaderBytes,
		IdleTimeout:       2 * time.Minute,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{ic.Certificate}, MinVersion: tls.VersionTLS12,
			NextProtos: []string{"h2", "http/1.1"}},
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    s.errorLog(),
	}
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	s.log.Info("metaserver in-cluster listener", "addr", ln.Addr().String())
	return srv, nil
}
