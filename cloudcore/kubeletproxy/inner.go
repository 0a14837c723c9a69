package kubeletproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"
)

// inner serves the requests of one CONNECTed connection to node.
type inner struct {
	p    *Proxy
	node string
	// wg counts the handlers running.
	wg sync.WaitGroup
}

// Attributes is what a request asks of a node, in the kubelet's terms.
type Attributes struct {
	// Verb is get, create, update, patch or delete (from the method).
	Verb string
	// Subresource of nodes: proxy, log, stats, metrics, spec, checkpoint,
	// configz, healthz, pods.
	Subresource string
	Node        string
	Path        string
}

// attributesOf maps a request the way the kubelet's server does
// (pkg/kubelet/server/auth.go): nodes/proxy unless a more precise
// subresource covers the path.
func attributesOf(r *http.Request, node string) Attributes {
	verb := map[string]string{"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
		"DELETE": "delete"}[r.Method]
	sub := "proxy"
	under := func(p string) bool { return r.URL.Path == p || strings.HasPrefix(r.URL.Path, p+"/") }
	switch {
	case under("/stats"):
		sub = "stats"
	case under("/metrics"):
		sub = "metrics"
	case under("/logs"):
		sub = "log"
	case under("/spec"):
		sub = "spec"
	case under("/checkpoint"):
		sub = "checkpoint"
	}
	return Attributes{Verb: verb, Subresource: sub, Node: node, Path: r.URL.Path}
}

func (in *inner) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	in.wg.Add(1)
	defer in.wg.Done()
	p := in.p
	user, err := p.cfg.Auth.Authenticate(r.Context(), r)
	if err != nil || user == nil {
		p.stats.Unauthenticated.Add(1)
		msg := "Unauthorized"
		if err != nil {
			msg += ": " + err.Error()
		}
		p.log.Info("kubelet proxy: request refused: not authenticated", slog.String("node", in.node),
			slog.String("path", r.URL.Path), slog.String("reason", msg))
		http.Error(w, msg, http.StatusUnauthorized)
		return
	}
	attrs := attributesOf(r, in.node)
	if attrs.Verb == "" {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ok, reason, err := p.cfg.Auth.Authorize(r.Context(), user, attrs)
	if err != nil {
		p.log.Warn("kubelet proxy: authorization failed", slog.String("node", in.node), slog.Any("err", err))
		http.Error(w, "authorization failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if !ok {
		p.stats.Forbidden.Add(1)
		msg := fmt.Sprintf("Forbidden (user=%s, verb=%s, resource=nodes, subresource=%s)", user.Name, attrs.Verb,
			attrs.Subresource)
		if reason != "" {
			msg += ": " + reason
		}
		http.Error(w, msg, http.StatusForbidden)
		return
	}
	// The caller's credentials stay here: the edge trusts the tunnel.
	r.Header.Del("Authorization")
	r.Header.Del("Proxy-Authorization")
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = in.node
			pr.Out.Host = in.node
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				c, err := p.cfg.Nodes.OpenStream(in.node)
				if err == nil {
					p.stats.Streams.Add(1)
				}
				return c, err
			},
			DisableKeepAlives:      true,
			DisableCompression:     true,
			ResponseHeaderTimeout:  time.Minute,
			MaxResponseHeaderBytes: 64 << 10,
		},
		FlushInterval: -1,
		ErrorLog:      slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			var oe *net.OpError
			if errors.As(err, &oe) && oe.Err != nil {
				err = oe.Err
			}
			http.Error(w, fmt.Sprintf("node %s: %v", in.node, err), statusFor(err))
		},
	}
	rp.ServeHTTP(w, r)
}
