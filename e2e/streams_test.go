//go:build integration

package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/controlplane"
	"github.com/tether-edge/tether/edgecore/ctl"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

// The tests of this file reach edge pods the way a user does, with the real
// kubectl: the API server's egress selector sends its kubelet connections
// to cloudcore's kubelet proxy on egressSocket, which carries them through
// the node's tunnel to edgecore's kubelet API (package kubeletproxy).

// startStreamCloud starts a cloudcore serving the API server's egress
// proxy on egressSocket.
func startStreamCloud(t *testing.T, tweak func(*cloudcore.Config)) *cloud {
	t.Helper()
	return startCloudWith(t, func(cfg *cloudcore.Config) {
		os.Remove(egressSocket)
		ln, err := net.Listen("unix", egressSocket)
		if err != nil {
			t.Fatal(err)
		}
		cfg.KubeletProxyListener = ln
		if tweak != nil {
			tweak(cfg)
		}
	})
}

func needKubectl(t *testing.T) {
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Skip("kubectl is not installed")
	}
}

// kubectl runs kubectl as the admin with stdin (may be nil) and returns its
// combined output.
func kubectl(t *testing.T, stdin io.Reader, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", cp.Kubeconfig()}, args...)...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustKubectl(t *testing.T, stdin io.Reader, args ...string) string {
	t.Helper()
	out, err := kubectl(t, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// startKubectl starts a long-running kubectl (logs -f, attach,
// port-forward); its stdout lines arrive on the channel. It is killed at
// cleanup.
func startKubectl(t *testing.T, stdin io.Reader, args ...string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", cp.Kubeconfig()}, args...)...)
	cmd.Stdin = stdin
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines
}

// waitLine waits for a line matching re.
func waitLine(t *testing.T, lines <-chan string, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.After(timeout)
	var seen []string
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("kubectl ended before a line matching %s; it wrote %q", re, seen)
			}
			seen = append(seen, l)
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-deadline:
			t.Fatalf("no line matching %s in %s; seen %q", re, timeout, seen)
		}
	}
}

func startStreamEdge(t *testing.T, c *cloud, name string) *edge {
	t.Helper()
	e := newCRIEdge(t, c, name)
	e.start()
	waitNodeReady(t, name, corev1.ConditionTrue, time.Minute)
	return e
}

func runningPod(t *testing.T, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	createPod(t, p)
	return waitPod(t, p.Namespace, p.Name, 2*time.Minute, "running", func(p *corev1.Pod) (bool, error) {
		if p.Status.Phase != corev1.PodRunning {
			return false, fmt.Errorf("not Running")
		}
		return true, nil
	})
}

const talker = `for i in 1 2 3; do echo line-$i; done; i=4; while true; do echo line-$i; i=$((i+1)); sleep 0.3; done`

func TestKubectlLogsAndExec(t *testing.T) {
	needKubectl(t)
	c := startStreamCloud(t, nil)
	node := "str-logs"
	startStreamEdge(t, c, node)
	ns := namespace(t)
	runningPod(t, criPod(t, ns, "talker", node, talker))

	// Plain logs, the start of them.
	out := mustKubectl(t, nil, "logs", "-n", ns, "talker")
	if !strings.HasPrefix(out, "line-1\nline-2\nline-3\n") {
		t.Fatalf("kubectl logs: %q, want it to start with line-1..3", out)
	}
	// --tail and --timestamps.
	out = mustKubectl(t, nil, "logs", "-n", ns, "talker", "--tail=2", "--timestamps")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	ts := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z line-\d+$`)
	if len(lines) != 2 || !ts.MatchString(lines[0]) || !ts.MatchString(lines[1]) {
		t.Fatalf("kubectl logs --tail=2 --timestamps: %q", out)
	}
	// --since: a window shorter than the pod's life skips line-1.
	time.Sleep(2 * time.Second)
	out = mustKubectl(t, nil, "logs", "-n", ns, "talker", "--since=1s")
	if strings.Contains(out, "line-1\n") || !strings.Contains(out, "line-") {
		t.Fatalf("kubectl logs --since=1s: %q", out)
	}
	// -f: lines written after the command started arrive.
	last := regexp.MustCompile(`line-(\d+)`).FindAllStringSubmatch(mustKubectl(t, nil, "logs", "-n", ns, "talker", "--tail=1"), -1)
	if len(last) != 1 {
		t.Fatal("no last line")
	}
	var n int
	fmt.Sscan(last[0][1], &n)
	follow := startKubectl(t, nil, "logs", "-f", "-n", ns, "talker", "--tail=1")
	waitLine(t, follow, regexp.MustCompile(fmt.Sprintf(`^line-%d$`, n+3)), 30*time.Second)

	// exec -i with stdin.
	out = mustKubectl(t, strings.NewReader("hello from stdin\n"), "exec", "-i", "-n", ns, "talker", "--", "cat")
	if out != "hello from stdin\n" {
		t.Fatalf("kubectl exec -i cat: %q", out)
	}
	// 3 MiB through stdin: twelve windows, credits flowing back.
	out = mustKubectl(t, strings.NewReader(strings.Repeat("x", 3<<20)), "exec", "-i", "-n", ns, "talker", "--", "wc", "-c")
	if strings.TrimSpace(out) != fmt.Sprint(3<<20) {
		t.Fatalf("kubectl exec -i wc -c of 3 MiB: %q", out)
	}
	// exec -it: a terminal both ways (kubectl wants one on its side too:
	// script(1) gives it a pseudo-terminal).
	if _, err := exec.LookPath("script"); err == nil {
		// An *os.File: the child holds it, no goroutine copies into it.
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer pr.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		cmd := exec.CommandContext(ctx, "script", "-qec", "kubectl --kubeconfig "+cp.Kubeconfig()+" exec -it -n "+ns+
			" talker -- sh -c 'test -t 0 && test -t 1 && echo is-a-tty; stty size'", "/dev/null")
		cmd.Stdin = pr
		cmd.WaitDelay = 5 * time.Second
		b, err := cmd.CombinedOutput()
		pw.Close()
		cancel()
		if err != nil || !strings.Contains(string(b), "is-a-tty") {
			t.Fatalf("kubectl exec -it: %v %q", err, b)
		}
	} else {
		t.Log("script(1) missing: exec -t not checked")
	}
	// The command's exit code comes back.
	_, err := kubectl(t, nil, "exec", "-n", ns, "talker", "--", "sh", "-c", "exit 3")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("kubectl exec exit 3: %v", err)
	}
}

func TestKubectlLogsPrevious(t *testing.T) {
	needKubectl(t)
	c := startStreamCloud(t, nil)
	node := "str-prev"
	startStreamEdge(t, c, node)
	ns := namespace(t)
	p := criPod(t, ns, "crasher", node,
		`n=$(cat /data/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/n; echo run-$n; sleep 1; exit 1`)
	p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	createPod(t, p)
	waitPod(t, ns, "crasher", 2*time.Minute, "restarted", func(p *corev1.Pod) (bool, error) {
		if rc := mainStatus(p).RestartCount; rc < 1 {
			return false, fmt.Errorf("restart count %d", rc)
		}
		return true, nil
	})
	var prev, cur string
	eventually(t, 30*time.Second, "previous and current logs", func() (bool, error) {
		var err error
		if prev, err = kubectl(t, nil, "logs", "-n", ns, "crasher", "--previous"); err != nil {
			return false, fmt.Errorf("%v: %s", err, prev)
		}
		if cur, err = kubectl(t, nil, "logs", "-n", ns, "crasher"); err != nil {
			return false, fmt.Errorf("%v: %s", err, cur)
		}
		var a, b int
		_, err1 := fmt.Sscanf(prev, "run-%d\n", &a)
		_, err2 := fmt.Sscanf(cur, "run-%d\n", &b)
		if err1 != nil || err2 != nil || b != a+1 {
			return false, fmt.Errorf("previous %q, current %q: want run-N and run-N+1", prev, cur)
		}
		return true, nil
	})
}

func TestKubectlAttachAndPortForward(t *testing.T) {
	needKubectl(t)
	c := startStreamCloud(t, nil)
	node := "str-attach"
	startStreamEdge(t, c, node)
	ns := namespace(t)

	a := criPod(t, ns, "reader", node, `while read l; do echo got-$l; done; sleep 3600`)
	a.Spec.Containers[0].Stdin = true
	runningPod(t, a)
	pr, pw := io.Pipe()
	defer pw.Close()
	attached := startKubectl(t, pr, "attach", "-i", "-n", ns, "reader")
	// Lines typed before the attach is up are lost: type until one comes
	// back.
	got := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			select {
			case <-got:
				return
			case <-time.After(500 * time.Millisecond):
				fmt.Fprintf(pw, "hello\n")
			}
		}
	}()
	waitLine(t, attached, regexp.MustCompile(`^got-hello$`), time.Minute)
	close(got)

	web := criPod(t, ns, "web", node, `mkdir -p /www && echo page-from-the-edge > /www/index.html && exec httpd -f -p 8080 -h /www`)
	runningPod(t, web)
	pf := startKubectl(t, nil, "port-forward", "-n", ns, "pod/web", ":8080")
	m := waitLine(t, pf, regexp.MustCompile(`^Forwarding from 127\.0\.0\.1:(\d+) -> 8080$`), time.Minute)
	var body []byte
	eventually(t, 30*time.Second, "a page through port-forward", func() (bool, error) {
		resp, err := http.Get("http://127.0.0.1:" + m[1] + "/index.html")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(resp.Body)
		return resp.StatusCode == 200, err
	})
	if string(body) != "page-from-the-edge\n" {
		t.Fatalf("page through port-forward: %q", body)
	}
}

// Stores use the same private addresses: nodes are routed by name.
func TestLogsOfTwoEdgesWithTheSameAddress(t *testing.T) {
	needKubectl(t)
	c := startStreamCloud(t, nil)
	ns := namespace(t)
	for _, node := range []string{"str-same-a", "str-same-b"} {
		startStreamEdge(t, c, node)
		runningPod(t, criPod(t, ns, "who-"+node, node, "echo I run on "+node+"; sleep 3600"))
	}
	var addrs []string
	for _, node := range []string{"str-same-a", "str-same-b"} {
		n, err := client.CoreV1().Nodes().Get(t.Context(), node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				addrs = append(addrs, a.Address)
			}
		}
	}
	if len(addrs) != 2 || addrs[0] != addrs[1] {
		t.Fatalf("InternalIPs %v: the test wants two nodes with the same one", addrs)
	}
	for _, node := range []string{"str-same-a", "str-same-b"} {
		if out := mustKubectl(t, nil, "logs", "-n", ns, "who-"+node); out != "I run on "+node+"\n" {
			t.Fatalf("logs of the pod on %s: %q", node, out)
		}
	}
}

// proxyClient is an HTTP client to node's kubelet API through the egress
// socket, as the API server reaches it, presenting cert (none if nil).
func proxyClient(t *testing.T, c *cloud, node string, port int, cert *tls.Certificate) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(c.cc.CA.Cert)
	tc := &tls.Config{RootCAs: roots, ServerName: node}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			conn, err := connect(ctx, fmt.Sprintf("%s:%d", node, port))
			if err != nil {
				return nil, err
			}
			tconn := tls.Client(conn, tc)
			if err := tconn.HandshakeContext(ctx); err != nil {
				conn.Close()
				return nil, err
			}
			return tconn, nil
		}}}
}

// connect opens a CONNECT tunnel through the egress socket.
func connect(ctx context.Context, target string) (net.Conn, error) {
	return connectVia(ctx, "unix", egressSocket, target)
}

// connectVia opens a CONNECT tunnel through the proxy at network, addr.
func connectVia(ctx context.Context, network, addr, target string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		conn.Close()
		return nil, fmt.Errorf("CONNECT %s: %s: %s", target, resp.Status, strings.TrimSpace(string(b)))
	}
	return conn, nil
}

func clusterCert(t *testing.T, user string, groups ...string) *tls.Certificate {
	t.Helper()
	c, k, err := cp.IssueClientCert(user, groups)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return &pair
}

func get(t *testing.T, hc *http.Client, path string) (int, string) {
	t.Helper()
	resp, err := hc.Get("https://node" + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestKubeletProxyRefusesStrangers(t *testing.T) {
	needKubectl(t)
	c := startStreamCloud(t, func(cfg *cloudcore.Config) { cfg.MaxStreamsPerNode = 2 })
	node := "str-auth"
	startStreamEdge(t, c, node)
	ns := namespace(t)
	runningPod(t, criPod(t, ns, "talker", node, talker))
	logs := "/containerLogs/" + ns + "/talker/main"

	// The API server's kubelet client identity: allowed (the control).
	apiserver := clusterCert(t, controlplane.KubeletClientUser)
	if code, body := get(t, proxyClient(t, c, node, protocol.KubeletPort, apiserver), "/healthz"); code != 200 || body != "ok" {
		t.Fatalf("healthz as the API server: %d %q", code, body)
	}
	// No client certificate: 401, before anything reaches the edge.
	before := c.cc.Hub.Stats().Streams
	if code, body := get(t, proxyClient(t, c, node, protocol.KubeletPort, nil), logs); code != 401 {
		t.Fatalf("logs without identity: %d %q, want 401", code, body)
	}
	// A certificate of another CA, naming the API server's user: 401.
	other, err := pki.NewCA("not-the-cluster")
	if err != nil {
		t.Fatal(err)
	}
	cp2, kp2, err := other.IssueClient(controlplane.KubeletClientUser, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := tls.X509KeyPair(cp2, kp2)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, proxyClient(t, c, node, protocol.KubeletPort, &forged), logs); code != 401 {
		t.Fatalf("logs with a forged identity: %d %q, want 401", code, body)
	}
	// A real user of the cluster without nodes/proxy: 403.
	if code, body := get(t, proxyClient(t, c, node, protocol.KubeletPort, clusterCert(t, "no-rights")), logs); code != 403 {
		t.Fatalf("logs by a user without nodes/proxy: %d %q, want 403", code, body)
	}
	if after := c.cc.Hub.Stats().Streams; after != before {
		t.Fatalf("refused requests opened %d streams to the edge", after-before)
	}
	// Only the kubelet port of an edge node.
	if _, err := connect(t.Context(), node+":22"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("CONNECT to port 22 of an edge node: %v, want 403", err)
	}
	// Through the API server: a user without nodes/proxy cannot use the
	// node proxy.
	out, err := kubectl(t, nil, "get", "--raw", "/api/v1/nodes/"+node+"/proxy/pods", "--as", "no-rights")
	if err == nil || !strings.Contains(out, "Forbidden") {
		t.Fatalf("node proxy as a user without rights: %v %q", err, out)
	}
	// With the node's name in the API server's DNS (here /etc/hosts, at an
	// address that is never dialed: TEST-NET-1), the admin's node proxy
	// request passes the API server's check and reaches the edge through
	// cloudcore, which routes by name.
	resolvableName(t, node)
	eventually(t, 30*time.Second, "the node proxy through the API server", func() (bool, error) {
		out, err := kubectl(t, nil, "get", "--raw", "/api/v1/nodes/"+node+"/proxy/pods")
		return err == nil && strings.Contains(out, `"name":"talker"`), nil
	})
	// The node proxy's paths, as the API server sends them.
	if code, body := get(t, proxyClient(t, c, node, protocol.KubeletPort, apiserver), "/pods"); code != 200 ||
		!strings.Contains(body, `"name":"talker"`) {
		t.Fatalf("/pods as the API server: %d %.200q", code, body)
	}

	// A flood of streams to one node stops at its cap (2 here): follows
	// hold their streams open.
	hc := proxyClient(t, c, node, protocol.KubeletPort, apiserver)
	var held []io.Closer
	for i := 0; i < 2; i++ {
		resp, err := hc.Get("https://node" + logs + "?follow=true&tailLines=1")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("follow %d: %v %v", i, err, resp)
		}
		held = append(held, resp.Body)
	}
	if code, body := get(t, hc, logs); code != http.StatusTooManyRequests || !strings.Contains(body, "stream limit") {
		t.Fatalf("third stream: %d %q, want 429 stream limit", code, body)
	}
	for _, b := range held {
		b.Close()
	}
	eventually(t, 10*time.Second, "streams freed", func() (bool, error) {
		code, body := get(t, hc, "/healthz")
		return code == 200, fmt.Errorf("%d %s", code, body)
	})
}

// edgecore ctl on the box: logs and exec with the cloud gone.
func TestEdgecoreCtlWithTheCloudGone(t *testing.T) {
	c := startStreamCloud(t, nil)
	node := "str-ctl"
	e := startStreamEdge(t, c, node)
	ns := namespace(t)
	runningPod(t, criPod(t, ns, "talker", node, talker))
	c.stop()

	sock := filepath.Join(e.dir, "kubelet.sock")
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("kubelet socket mode %v, want 0600", fi.Mode().Perm())
	}
	run := func(in string, args ...string) (string, error) {
		var out, errb strings.Builder
		err := ctl.Main(t.Context(), append([]string{"--socket", sock}, args...),
			ctl.IO{In: strings.NewReader(in), Out: &out, Err: &errb})
		return out.String() + errb.String(), err
	}
	out, err := run("", "logs", "-n", ns, "--tail", "-1", "talker")
	if err != nil || !strings.HasPrefix(out, "line-1\nline-2\nline-3\n") {
		t.Fatalf("ctl logs: %v %q", err, out)
	}
	out, err = run("typed on the box\n", "exec", "-n", ns, "-i", "talker", "--", "cat")
	if err != nil || out != "typed on the box\n" {
		t.Fatalf("ctl exec -i cat: %v %q", err, out)
	}
	_, err = run("", "exec", "-n", ns, "talker", "--", "sh", "-c", "exit 4")
	var ee *ctl.ExitError
	if !errors.As(err, &ee) || ee.Code != 4 {
		t.Fatalf("ctl exec exit 4: %v", err)
	}
	out, err = run("", "pods")
	if err != nil || !strings.Contains(out, "talker") {
		t.Fatalf("ctl pods: %v %q", err, out)
	}
	if _, err := run("", "logs", "-n", ns, "nosuchpod"); err == nil {
		t.Fatal("ctl logs of a pod not on the node: no error")
	}
}

// The TCP listener, for clients of their own (metrics-server through
// HTTPS_PROXY): edge nodes only, bearer tokens reviewed.
func TestKubeletProxyTCPForBearerTokens(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := startStreamCloud(t, func(cfg *cloudcore.Config) { cfg.KubeletProxyAddr = addr })
	node := "str-tcp"
	startStreamEdge(t, c, node)
	eventually(t, 10*time.Second, "the TCP proxy listening", func() (bool, error) {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err == nil, err
	})
	roots := x509.NewCertPool()
	roots.AddCert(c.cc.CA.Cert)
	do := func(token string) (int, string) {
		conn, err := connectVia(t.Context(), "tcp", addr, node+":10250")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				tc := tls.Client(conn, &tls.Config{RootCAs: roots, ServerName: node})
				return tc, tc.HandshakeContext(ctx)
			}}}
		req, _ := http.NewRequest("GET", "https://"+node+"/healthz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do(cp.RESTConfig().BearerToken); code != 200 || body != "ok" {
		t.Fatalf("healthz with the admin's token: %d %q", code, body)
	}
	if code, body := do("not-a-token"); code != 401 {
		t.Fatalf("healthz with a bad token: %d %q, want 401", code, body)
	}
	// Nothing but edge nodes: no open relay on a TCP port.
	if _, err := connectVia(t.Context(), "tcp", addr, "127.0.0.1:"+strings.Split(cp.URL(), ":")[2]); err == nil ||
		!strings.Contains(err.Error(), "403") {
		t.Fatalf("CONNECT to the API server through the TCP proxy: %v, want 403", err)
	}
}

// resolvableName makes name resolve in this host's /etc/hosts (which the
// API server's resolver reads) to 192.0.2.250, an address of TEST-NET-1
// that nothing dials (cloudcore routes edge nodes by name); the line is
// removed at the end of the test.
func resolvableName(t *testing.T, name string) {
	t.Helper()
	const hosts = "/etc/hosts"
	line := "192.0.2.250 " + name + " # tether-e2e\n"
	f, err := os.OpenFile(hosts, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("cannot add %s to %s: %v", name, hosts, err)
	}
	_, err = f.WriteString(line)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b, err := os.ReadFile(hosts)
		if err != nil {
			t.Error(err)
			return
		}
		if err := os.WriteFile(hosts, []byte(strings.Replace(string(b), line, "", 1)), 0o644); err != nil {
			t.Error(err)
		}
	})
}
