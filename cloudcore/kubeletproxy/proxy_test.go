package kubeletproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/pki"
)

// fakeNodes knows edge-1 (streams fail with err) and edge-2 (served by h).
type fakeNodes struct {
	err error
	h   http.Handler
}

func (fakeNodes) IsEdgeNode(n string) bool { return n == "edge-1" || n == "edge-2" }

func (f fakeNodes) OpenStream(n string) (net.Conn, error) {
	if n == "edge-1" {
		return nil, f.err
	}
	a, b := net.Pipe()
	go http.Serve(&oneConnListener{c: b, done: make(chan struct{})}, f.h)
	return a, nil
}

// allowAll authenticates anyone presenting a header, and allows user "ok".
type headerAuth struct{}

func (headerAuth) Authenticate(_ context.Context, r *http.Request) (*User, error) {
	if u := r.Header.Get("X-Test-User"); u != "" {
		return &User{Name: u}, nil
	}
	return nil, errors.New("nobody")
}

func (headerAuth) Authorize(_ context.Context, u *User, a Attributes) (bool, string, error) {
	return u.Name == "ok", "", nil
}

func startProxy(t *testing.T, cfg Config) (string, *x509.CertPool) {
	t.Helper()
	ca, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Certs = NodeCerts(ca, time.Hour)
	cfg.Auth = headerAuth{}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	return ln.Addr().String(), roots
}

// connectTo sends CONNECT target and returns the status line and the
// connection.
func connectTo(t *testing.T, addr, target string, extra string) (string, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", target, target, extra)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err.Error(), nil
	}
	return resp.Status, c
}

func request(t *testing.T, c net.Conn, roots *x509.CertPool, node, user string) (int, string) {
	t.Helper()
	tc := tls.Client(c, &tls.Config{RootCAs: roots, ServerName: node})
	req, _ := http.NewRequest("GET", "https://"+node+"/containerLogs/ns/p/c", nil)
	if user != "" {
		req.Header.Set("X-Test-User", user)
	}
	if err := req.Write(tc); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestProxyAnswersAsTheNodeAfterAuthorizing(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			http.Error(w, "credentials leaked to the edge", 500)
			return
		}
		fmt.Fprint(w, "logs of "+r.URL.Path)
	})
	addr, roots := startProxy(t, Config{Nodes: fakeNodes{h: ok}})
	for _, c := range []struct {
		user string
		code int
		body string
	}{
		{"ok", 200, "logs of /containerLogs/ns/p/c"},
		{"", 401, "Unauthorized"},
		{"someone", 403, "Forbidden (user=someone, verb=get, resource=nodes, subresource=proxy)"},
	} {
		status, conn := connectTo(t, addr, "edge-2:10250", "")
		if status != "200 Connection established" {
			t.Fatalf("CONNECT: %s", status)
		}
		code, body := request(t, conn, roots, "edge-2", c.user)
		if code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("user %q: %d %q, want %d %q", c.user, code, body, c.code, c.body)
		}
	}
}

func TestProxyTellsAnOldEdgeApart(t *testing.T) {
	addr, roots := startProxy(t, Config{Nodes: fakeNodes{err: errors.New("edge too old: its edgecore does not carry streams")}})
	_, conn := connectTo(t, addr, "edge-1:10250", "")
	code, body := request(t, conn, roots, "edge-1", "ok")
	if code != 502 || !strings.Contains(body, "edge too old") {
		t.Fatalf("old edge: %d %q, want 502 edge too old", code, body)
	}
}

func TestProxyIsNoOpenRelay(t *testing.T) {
	addr, _ := startProxy(t, Config{Nodes: fakeNodes{}, MaxConnsPerNode: 1, MaxHeaderBytes: 1024})
	for target, want := range map[string]string{
		"edge-2:22":       "403",
		"10.0.0.1:443":    "403", // DirectDial off
		"worker-1:10250":  "403",
		"no-port":         "400",
		"edge-2:99999999": "400",
	} {
		if status, _ := connectTo(t, addr, target, ""); !strings.HasPrefix(status, want) {
			t.Errorf("CONNECT %s: %s, want %s", target, status, want)
		}
	}
	// Oversized header (past MaxHeaderBytes and the 4 KiB net/http adds):
	// refused, not read on.
	if status, _ := connectTo(t, addr, "edge-2:10250", "X-Big: "+strings.Repeat("a", 16<<10)+"\r\n"); !strings.HasPrefix(status, "431") {
		t.Errorf("oversized header: %s, want 431", status)
	}
	// One CONNECT per node at once here: the second is refused.
	if status, _ := connectTo(t, addr, "edge-2:10250", ""); status != "200 Connection established" {
		t.Fatalf("first CONNECT: %s", status)
	}
	if status, _ := connectTo(t, addr, "edge-2:10250", ""); !strings.HasPrefix(status, "429") {
		t.Errorf("second CONNECT to the node: %s, want 429", status)
	}
	// Plain requests are not served.
	c, _ := net.Dial("tcp", addr)
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 405 {
		t.Errorf("GET: %v %v, want 405", resp, err)
	}
}

func TestAttributesFollowTheKubelet(t *testing.T) {
	for path, want := range map[string]string{
		"/containerLogs/a/b/c": "proxy", "/exec/a/b/c": "proxy", "/stats/summary": "stats",
		"/metrics/resource": "metrics", "/logs/syslog": "log", "/spec/": "spec", "/pods": "proxy",
		"/statsx": "proxy",
	} {
		r, _ := http.NewRequest("POST", "https://n"+path, nil)
		if a := attributesOf(r, "n"); a.Subresource != want || a.Verb != "create" {
			t.Errorf("%s: %+v, want subresource %s, verb create", path, a, want)
		}
	}
}
