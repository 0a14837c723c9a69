// Package kubeletproxy lets the API server reach edge nodes' kubelet API
// (kubectl logs, exec, attach, port-forward, the node proxy) through their
// tunnel sessions, with no port opened at the edge. It is the HTTP CONNECT
// proxy of the API server's egress selector (--egress-selector-config-file,
// egress "cluster", proxyProtocol HTTPConnect): the API server asks it for
// "<node name>:10250" (the node's Hostname address and kubelet port, which
// edgecore reports), so nodes are told apart by name, never by address: many
// stores may use the same private addresses.
//
// For an edge node, the proxy answers the CONNECT itself: it terminates TLS
// with a serving certificate for the node name (issued by cloudcore's CA),
// authenticates each request as a kubelet does (a client certificate of the
// cluster's client CA, from the ConfigMap
// kube-system/extension-apiserver-authentication, or a bearer token through
// a TokenReview), authorizes it with a SubjectAccessReview of the kubelet's
// mapping (nodes/proxy, nodes/log, nodes/stats, nodes/metrics, ...), and
// only then opens a stream to the node (hub.OpenStream) and forwards the
// request, upgrades included. An unauthenticated request gets 401 and never
// reaches the edge.
//
// Any other target (a pod, a service, a webhook, a node that is not an
// edge node) is dialed directly when Config.DirectDial is set (the API
// server routes all its "cluster" traffic through its egress proxy), and
// refused otherwise. The listener must therefore be reachable by the API
// server alone: a unix socket of mode 0600 (cloudcore next to the API
// server), which is what Socket makes.
//
// Limits: CONNECTs in flight per node and in total, new CONNECTs per second
// per node, header sizes and times; the hub caps the streams per node and
// in total.
package kubeletproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/tether-edge/tether/protocol"
)

// Nodes are the edge nodes and their sessions (the hub and the dispatcher).
type Nodes interface {
	// IsEdgeNode reports whether node is an edge node this cloudcore
	// knows.
	IsEdgeNode(node string) bool
	// OpenStream opens a byte stream to node's kubelet API.
	OpenStream(node string) (net.Conn, error)
}

// Config configures the Proxy.
type Config struct {
	// Nodes routes to edge nodes. Required.
	Nodes Nodes
	// Certs issues the TLS certificate the proxy serves for a node name.
	// Required.
	Certs func(node string) (*tls.Certificate, error)
	// Auth authenticates and authorizes the API server's requests.
	// Required.
	Auth Authorizer
	// KubeletPort is the only port taken for an edge node (default
	// protocol.KubeletPort).
	KubeletPort int
	// DirectDial dials targets that are not edge nodes directly (the API
	// server's other "cluster" traffic: pods, services, webhooks, nodes
	// with a kubelet of their own). Off, they are refused (403).
	DirectDial bool
	// MaxConnsPerNode is the most CONNECTs open to one node at once
	// (default 64), MaxConns in total (default 2,048), and ConnectRate and
	// ConnectBurst the new CONNECTs per second per node (defaults 100 and
	// 200: each kubectl logs or exec is one). Past them, 429.
	MaxConnsPerNode int
	MaxConns        int
	ConnectRate     float64
	ConnectBurst    int
	// HeaderTimeout bounds the reading of a request header, CONNECT or
	// inner (default 10s); MaxHeaderBytes its size (default 16 KiB).
	HeaderTimeout  time.Duration
	MaxHeaderBytes int
	// Logger is where the proxy logs (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Nodes == nil || c.Certs == nil || c.Auth == nil {
		return errors.New("kubeletproxy: Nodes, Certs and Auth are required")
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.KubeletPort, protocol.KubeletPort)
	def(&c.MaxConnsPerNode, 64)
	def(&c.MaxConns, 2048)
	def(&c.ConnectBurst, 200)
	def(&c.MaxHeaderBytes, 16<<10)
	if c.ConnectRate == 0 {
		c.ConnectRate = 100
	}
	if c.HeaderTimeout == 0 {
		c.HeaderTimeout = 10 * time.Second
	}
	if c.MaxConnsPerNode < 1 || c.MaxConns < 1 || c.ConnectRate < 0 || c.ConnectBurst < 1 || c.MaxHeaderBytes < 1024 ||
		c.HeaderTimeout < 0 || c.KubeletPort < 1 || c.KubeletPort > 65535 {
		return fmt.Errorf("kubeletproxy: bad limits in %+v", *c)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Proxy is the CONNECT proxy.
type Proxy struct {
	cfg   Config
	log   *slog.Logger
	total atomic.Int64
	stats Stats

	mu sync.Mutex
	// nodes holds each node's CONNECTs in flight and rate; guarded by mu.
	// An entry goes when its last CONNECT ends.
	nodes map[string]*nodeLimit
}

type nodeLimit struct {
	open int
	rate *rate.Limiter
}

// Stats count what the proxy did.
type Stats struct {
	Connects, Refused, Limited, Unauthenticated, Forbidden, Streams, Direct atomic.Int64
}

// New builds a Proxy.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Proxy{cfg: cfg, log: cfg.Logger, nodes: map[string]*nodeLimit{}}, nil
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() *Stats { return &p.stats }

// Serve serves CONNECTs on ln until ctx ends.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: p, ReadHeaderTimeout: p.cfg.HeaderTimeout, MaxHeaderBytes: p.cfg.MaxHeaderBytes,
		ErrorLog:    slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	p.log.Info("kubelet proxy listening", slog.String("addr", ln.Addr().String()))
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("kubelet proxy: %w", err)
	case <-ctx.Done():
		srv.Close()
		return nil
	}
}

// ServeHTTP answers one CONNECT.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		http.Error(w, "this is an HTTP CONNECT proxy for the API server's egress", http.StatusMethodNotAllowed)
		return
	}
	p.stats.Connects.Add(1)
	host, portStr, err := net.SplitHostPort(r.Host)
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil || port < 1 || port > 65535 {
		p.stats.Refused.Add(1)
		http.Error(w, fmt.Sprintf("CONNECT target %q: want host:port", r.Host), http.StatusBadRequest)
		return
	}
	edge := p.cfg.Nodes.IsEdgeNode(host)
	switch {
	case edge && port != p.cfg.KubeletPort:
		p.stats.Refused.Add(1)
		http.Error(w, fmt.Sprintf("edge node %s: only its kubelet port %d is reachable", host, p.cfg.KubeletPort),
			http.StatusForbidden)
		return
	case !edge && !p.cfg.DirectDial:
		p.stats.Refused.Add(1)
		http.Error(w, fmt.Sprintf("%s is not an edge node", host), http.StatusForbidden)
		return
	}
	key := host
	if !edge {
		key = "" // direct dials share one limit entry
	}
	if msg := p.acquire(key); msg != "" {
		p.stats.Limited.Add(1)
		http.Error(w, msg, http.StatusTooManyRequests)
		return
	}
	defer p.release(key)
	if edge {
		p.serveEdge(w, r, host)
		return
	}
	p.serveDirect(w, r)
}

// acquire takes a CONNECT slot for key, or says why not.
func (p *Proxy) acquire(key string) string {
	if p.total.Add(1) > int64(p.cfg.MaxConns) {
		p.total.Add(-1)
		return fmt.Sprintf("too many connections through the proxy (at most %d)", p.cfg.MaxConns)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.nodes[key]
	if l == nil {
		l = &nodeLimit{rate: rate.NewLimiter(rate.Limit(p.cfg.ConnectRate), p.cfg.ConnectBurst)}
		p.nodes[key] = l
	}
	if key != "" && l.open >= p.cfg.MaxConnsPerNode {
		p.total.Add(-1)
		return fmt.Sprintf("too many connections to node %s (at most %d)", key, p.cfg.MaxConnsPerNode)
	}
	if key != "" && !l.rate.Allow() {
		p.total.Add(-1)
		return fmt.Sprintf("too many new connections to node %s (at most %g/s)", key, p.cfg.ConnectRate)
	}
	l.open++
	return ""
}

func (p *Proxy) release(key string) {
	p.total.Add(-1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.nodes[key]; l != nil {
		l.open--
		if l.open <= 0 && l.rate.Tokens() >= float64(p.cfg.ConnectBurst) {
			delete(p.nodes, key)
		}
	}
}

// hijack takes the connection and answers the CONNECT with 200.
func hijack(w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, nil, err
	}
	c.SetDeadline(time.Time{})
	if _, err := rw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		c.Close()
		return nil, nil, err
	}
	if err := rw.Flush(); err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, rw, nil
}

// serveEdge serves the kubelet API of an edge node on the CONNECTed
// connection: TLS, then HTTP requests, each authorized before it is
// forwarded through a stream to the node.
func (p *Proxy) serveEdge(w http.ResponseWriter, r *http.Request, node string) {
	cert, err := p.cfg.Certs(node)
	if err != nil {
		p.log.Error("serving certificate for node", slog.String("node", node), slog.Any("err", err))
		http.Error(w, "no serving certificate for the node", http.StatusInternalServerError)
		return
	}
	c, rw, err := hijack(w)
	if err != nil {
		return
	}
	raw := newBufferedConn(c, rw.Reader)
	tc := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{*cert}, ClientAuth: tls.RequestClientCert,
		MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
	ln := newOneConnListener(tc)
	in := &inner{p: p, node: node}
	srv := &http.Server{Handler: in, ReadHeaderTimeout: p.cfg.HeaderTimeout,
		MaxHeaderBytes: 64 << 10, IdleTimeout: 90 * time.Second,
		ErrorLog:    slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return r.Context() },
		ConnState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed || st == http.StateHijacked {
				ln.Close()
			}
		}}
	srv.Serve(ln)
	// A hijacked (upgraded) connection outlives Serve: wait for its
	// handler.
	in.wg.Wait()
}

// serveDirect splices the CONNECT to its target, for the API server's
// traffic to anything but an edge node.
func (p *Proxy) serveDirect(w http.ResponseWriter, r *http.Request) {
	d := net.Dialer{Timeout: 10 * time.Second}
	up, err := d.DialContext(r.Context(), "tcp", r.Host)
	if err != nil {
		http.Error(w, "dial "+r.Host+": "+err.Error(), http.StatusBadGateway)
		return
	}
	p.stats.Direct.Add(1)
	c, rw, err := hijack(w)
	if err != nil {
		up.Close()
		return
	}
	splice(newBufferedConn(c, rw.Reader), up)
}

// splice copies both ways until either side ends, then closes both.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	a.Close()
	b.Close()
	<-done
}

// bufferedConn reads first what the CONNECT's reader buffered, then from
// the connection itself: reading on through the server's reader would
// cancel the CONNECT's context at the first read error (a deadline the
// inner server sets).
type bufferedConn struct {
	net.Conn
	pre []byte
}

func newBufferedConn(c net.Conn, r *bufio.Reader) *bufferedConn {
	pre, _ := r.Peek(r.Buffered())
	return &bufferedConn{Conn: c, pre: append([]byte(nil), pre...)}
}

func (c *bufferedConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// oneConnListener accepts one connection, then blocks until closed. The
// connection is handed as it is: http.Server sees a *tls.Conn only so.
type oneConnListener struct {
	c     net.Conn
	once  sync.Once
	taken atomic.Bool
	done  chan struct{}
}

func newOneConnListener(c net.Conn) *oneConnListener {
	return &oneConnListener{c: c, done: make(chan struct{})}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if l.taken.CompareAndSwap(false, true) {
		return l.c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }

// statusFor maps an OpenStream error to the HTTP status the API server
// gets.
func statusFor(err error) int {
	switch {
	case strings.Contains(err.Error(), "stream limit"):
		return http.StatusTooManyRequests
	default:
		return http.StatusBadGateway
	}
}
