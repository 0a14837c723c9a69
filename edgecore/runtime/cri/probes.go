package cri

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tether-edge/tether/edgecore/events"
)

type probeKind int

const (
	probeLiveness probeKind = iota
	probeReadiness
	probeStartup
)

func (k probeKind) String() string {
	return [...]string{"liveness", "readiness", "startup"}[k]
}

// title is the kind as the kubelet's Unhealthy events name it.
func (k probeKind) title() string {
	return [...]string{"Liveness", "Readiness", "Startup"}[k]
}

type probeResult int

const (
	resultUnknown probeResult = iota
	resultSuccess
	resultFailure
)

// initialResult is a probe's result before it ran on a container: live,
// not ready, not started.
func initialResult(k probeKind) probeResult {
	switch k {
	case probeLiveness:
		return resultSuccess
	case probeReadiness:
		return resultFailure
	}
	return resultUnknown
}

func hasProbes(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		if c.LivenessProbe != nil || c.ReadinessProbe != nil || c.StartupProbe != nil {
			return true
		}
	}
	return false
}

// prober runs a pod's probes: one goroutine per container and kind, all
// ended and joined by stop. SyncPod tells it which container of each name
// runs (setTarget) and reads the results (result).
type prober struct {
	r      *Runtime
	pod    *corev1.Pod
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex
	// targets by container name; guarded by mu.
	targets map[string]probeTarget
	// results by container name and kind; guarded by mu.
	results map[probeKey]*probeState
}

type probeKey struct {
	container string
	kind      probeKind
}

// probeTarget is the running container a name's probes go to.
type probeTarget struct {
	id      string
	started time.Time
	podIP   string
}

// probeState is one probe's state for one container (by ID).
type probeState struct {
	id     string
	result probeResult
	last   probeResult // of the last run
	run    int         // how many runs in a row gave last
	// onHold: a liveness or startup failure was published; nothing more
	// until the container is replaced.
	onHold bool
}

func (r *Runtime) newProber(pod *corev1.Pod) *prober {
	ctx, cancel := context.WithCancel(r.bg)
	p := &prober{r: r, pod: pod, cancel: cancel, targets: map[string]probeTarget{}, results: map[probeKey]*probeState{}}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for kind, probe := range map[probeKind]*corev1.Probe{probeLiveness: c.LivenessProbe,
			probeReadiness: c.ReadinessProbe, probeStartup: c.StartupProbe} {
			if probe == nil {
				continue
			}
			p.wg.Add(1)
			go p.work(ctx, c, kind, probe)
		}
	}
	return p
}

// stop ends the probes and waits for them.
func (p *prober) stop() {
	p.cancel()
	p.wg.Wait()
}

func (p *prober) setTarget(name string, t probeTarget) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.targets[name] = t
}

// result is the probe's result for the container with id (its initial
// result if it did not run on it yet). A nil prober has initial results.
func (p *prober) result(name, id string, kind probeKind) probeResult {
	if p == nil {
		return initialResult(kind)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.results[probeKey{name, kind}]
	if st == nil || st.id != id {
		return initialResult(kind)
	}
	return st.result
}

func (p *prober) work(ctx context.Context, c *corev1.Container, kind probeKind, probe *corev1.Probe) {
	defer p.wg.Done()
	period := time.Duration(max(probe.PeriodSeconds, 1)) * time.Second
	// Spread the pod's probes over the first period.
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Duration(rand.Int64N(int64(period) / 4))):
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		p.once(ctx, c, kind, probe)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// once runs the probe if it is due and records the result.
func (p *prober) once(ctx context.Context, c *corev1.Container, kind probeKind, probe *corev1.Probe) {
	key := probeKey{c.Name, kind}
	p.mu.Lock()
	tgt := p.targets[c.Name]
	if tgt.id == "" {
		p.mu.Unlock()
		return
	}
	st := p.results[key]
	if st == nil || st.id != tgt.id {
		st = &probeState{id: tgt.id, result: initialResult(kind)}
		p.results[key] = st
	}
	skip := st.onHold || (kind == probeStartup && st.result == resultSuccess)
	if kind != probeStartup && c.StartupProbe != nil {
		sst := p.results[probeKey{c.Name, probeStartup}]
		skip = skip || sst == nil || sst.id != tgt.id || sst.result != resultSuccess
	}
	p.mu.Unlock()
	if skip || time.Since(tgt.started) < time.Duration(probe.InitialDelaySeconds)*time.Second {
		return
	}
	timeout := time.Duration(max(probe.TimeoutSeconds, 1)) * time.Second
	err := p.r.runProbe(ctx, p.pod, c, tgt, probe.ProbeHandler, timeout)
	if ctx.Err() != nil {
		return
	}
	res := resultSuccess
	if err != nil {
		res = resultFailure
		// Every failed run, as the kubelet: the correlator counts them.
		p.r.event(p.pod, c.Name, events.Warning, events.Unhealthy, "%s probe failed: %v", kind.title(), err)
	}
	p.mu.Lock()
	if p.results[key] != st {
		p.mu.Unlock()
		return // the container changed meanwhile
	}
	if st.last == res {
		st.run++
	} else {
		st.last, st.run = res, 1
	}
	threshold := int(max(probe.SuccessThreshold, 1))
	if res == resultFailure {
		threshold = int(probe.FailureThreshold)
		if threshold <= 0 {
			threshold = 3
		}
	}
	changed := false
	if st.run >= threshold && st.result != res {
		st.result, changed = res, true
		if res == resultFailure && kind != probeReadiness {
			st.onHold = true
		}
	}
	p.mu.Unlock()
	if changed {
		attrs := []any{slog.String("pod", p.pod.Namespace+"/"+p.pod.Name), slog.String("container", c.Name),
			slog.String("probe", kind.String()), slog.Bool("success", res == resultSuccess)}
		if err != nil {
			attrs = append(attrs, slog.Any("err", err))
		}
		p.r.log.Info("probe result changed", attrs...)
		p.r.notify()
	}
}

// runProbe runs one probe handler against the container; nil is success.
func (r *Runtime) runProbe(ctx context.Context, pod *corev1.Pod, c *corev1.Container, tgt probeTarget,
	h corev1.ProbeHandler, timeout time.Duration) error {
	switch {
	case h.Exec != nil:
		return r.execAction(ctx, tgt.id, h.Exec.Command, timeout)
	case h.HTTPGet != nil:
		return httpGet(ctx, c, tgt.podIP, h.HTTPGet, timeout)
	case h.TCPSocket != nil:
		host := h.TCPSocket.Host
		if host == "" {
			host = tgt.podIP
		}
		port, err := resolvePort(c, h.TCPSocket.Port)
		if err != nil {
			return err
		}
		d := net.Dialer{Timeout: timeout}
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case h.GRPC != nil:
		return grpcHealth(ctx, tgt.podIP, h.GRPC, timeout)
	}
	return errors.New("probe has no handler")
}

// runHandler runs a lifecycle hook (postStart, preStop).
func (r *Runtime) runHandler(ctx context.Context, pod *corev1.Pod, c *corev1.Container, id string,
	h *corev1.LifecycleHandler, timeout time.Duration) error {
	switch {
	case h.Exec != nil:
		return r.execAction(ctx, id, h.Exec.Command, timeout)
	case h.HTTPGet != nil:
		ip := ""
		if st, err := r.podIP(ctx, pod); err == nil {
			ip = st
		}
		return httpGet(ctx, c, ip, h.HTTPGet, timeout)
	case h.TCPSocket != nil:
		return errors.New("tcpSocket lifecycle hooks are not supported")
	case h.Sleep != nil:
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
			return nil
		}
	}
	return errors.New("hook has no handler")
}

// podIP is the pod's IP, from its ready sandbox.
func (r *Runtime) podIP(ctx context.Context, pod *corev1.Pod) (string, error) {
	if pod.Spec.HostNetwork {
		return r.cfg.NodeIP, nil
	}
	sbs, err := r.listSandboxes(ctx, pod.UID)
	if err != nil {
		return "", err
	}
	for _, sb := range sbs {
		if sb.State != runtimeapi.PodSandboxState_SANDBOX_READY {
			continue
		}
		cctx, cancel := r.call(ctx)
		st, err := r.rs.PodSandboxStatus(cctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.Id})
		cancel()
		if err != nil {
			return "", err
		}
		return st.Status.GetNetwork().GetIp(), nil
	}
	return "", errors.New("no ready sandbox")
}

func (r *Runtime) execAction(ctx context.Context, id string, cmd []string, timeout time.Duration) error {
	secs := int64((timeout + time.Second - 1) / time.Second)
	cctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	resp, err := r.rs.ExecSync(cctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: secs})
	if err != nil {
		return fmt.Errorf("exec %v: %w", cmd, err)
	}
	if resp.ExitCode != 0 {
		out := resp.Stdout
		if len(resp.Stderr) > 0 {
			out = resp.Stderr
		}
		if len(out) > 256 {
			out = out[:256]
		}
		return fmt.Errorf("exec %v: exit code %d: %s", cmd, resp.ExitCode, out)
	}
	return nil
}

// resolvePort maps a port number or a container port's name.
func resolvePort(c *corev1.Container, p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("no port named %q in container %s", p.StrVal, c.Name)
}

func httpGet(ctx context.Context, c *corev1.Container, podIP string, a *corev1.HTTPGetAction, timeout time.Duration) error {
	host := a.Host
	if host == "" {
		host = podIP
	}
	port, err := resolvePort(c, a.Port)
	if err != nil {
		return err
	}
	scheme := "http"
	if a.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(port))}
	path := a.Path
	if path == "" {
		path = "/"
	}
	ref, err := url.Parse(path)
	if err != nil {
		return fmt.Errorf("probe path %q: %w", a.Path, err)
	}
	u = u.ResolveReference(ref)
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "kube-probe/1.31")
	req.Header.Set("Accept", "*/*")
	for _, h := range a.HTTPHeaders {
		if h.Name == "Host" {
			req.Host = h.Value
			continue
		}
		req.Header.Add(h.Name, h.Value)
	}
	client := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // probes do not verify, as the kubelet's
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 || req.URL.Hostname() != u.Hostname() {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with status %d", resp.StatusCode)
	}
	return nil
}

func grpcHealth(ctx context.Context, podIP string, a *corev1.GRPCAction, timeout time.Duration) error {
	conn, err := grpc.NewClient(net.JoinHostPort(podIP, strconv.Itoa(int(a.Port))),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	service := ""
	if a.Service != nil {
		service = *a.Service
	}
	resp, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return err
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("gRPC health: %s", resp.Status)
	}
	return nil
}
