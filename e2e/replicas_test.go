//go:build integration

package e2e

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
)

// testLB is a TCP load balancer in front of cloudcore replicas, as a
// Service's would be: each connection goes to the next backend in turn
// that accepts it (a stopped replica refuses: the next one is tried), and
// both ends are closed together.
type testLB struct {
	t        *testing.T
	ln       net.Listener
	backends []string

	mu sync.Mutex
	// next is the backend the next connection tries first; guarded by mu.
	next int
	// open are the relayed connections: their backend, when they were
	// made and when the backend last sent something; guarded by mu.
	open map[net.Conn]*lbConn
	// avoided are the backends new connections do not go to; guarded by
	// mu.
	avoided map[int]bool
}

type lbConn struct {
	backend int
	at      time.Time
	active  atomic.Int64 // Unix nanoseconds
	// dead: the connection is black-holed (blackhole): bytes either way
	// are dropped, and neither end is closed by the other's closing.
	dead atomic.Bool
}

// avoid keeps new connections off backend i (on) or lets them go there
// again.
func (lb *testLB) avoid(i int, on bool) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.avoided[i] = on
}

// blackhole drops from now on every byte of the open connections to
// backend i, both ways, as a partition or a dead link would, without
// closing them: the backend notices only by its own timeout (a half-open
// connection).
func (lb *testLB) blackhole(i int) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for _, o := range lb.open {
		if o.backend == i {
			o.dead.Store(true)
		}
	}
}

// pipe copies src to dst until either fails, dropping what it reads once
// o is dead; active, if not nil, notes when bytes went through.
func pipe(dst io.Writer, src io.Reader, o *lbConn, active *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !o.dead.Load() {
			if active != nil {
				active.Store(time.Now().UnixNano())
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func newTestLB(t *testing.T, backends []string) *testLB {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lb := &testLB{t: t, ln: ln, backends: backends, open: map[net.Conn]*lbConn{}, avoided: map[int]bool{}}
	go lb.serve()
	t.Cleanup(func() { ln.Close() })
	return lb
}

func (lb *testLB) addr() string { return lb.ln.Addr().String() }

func (lb *testLB) serve() {
	for {
		c, err := lb.ln.Accept()
		if err != nil {
			return
		}
		go lb.relay(c)
	}
}

func (lb *testLB) relay(c net.Conn) {
	defer c.Close()
	lb.mu.Lock()
	first := lb.next
	lb.next = (lb.next + 1) % len(lb.backends)
	avoided := map[int]bool{}
	for i, on := range lb.avoided {
		avoided[i] = on
	}
	lb.mu.Unlock()
	var b net.Conn
	backend := -1
	for k := range lb.backends {
		i := (first + k) % len(lb.backends)
		if avoided[i] {
			continue
		}
		var err error
		if b, err = net.DialTimeout("tcp", lb.backends[i], time.Second); err == nil {
			backend = i
			break
		}
	}
	if backend < 0 {
		return
	}
	defer b.Close()
	o := &lbConn{backend: backend, at: time.Now()}
	lb.mu.Lock()
	lb.open[c] = o
	lb.mu.Unlock()
	defer func() {
		lb.mu.Lock()
		delete(lb.open, c)
		lb.mu.Unlock()
	}()
	done := make(chan struct{}, 2)
	go func() { pipe(b, c, o, nil); done <- struct{}{} }()
	go func() { pipe(c, b, o, &o.active); done <- struct{}{} }()
	<-done
	if o.dead.Load() {
		<-done // half-open: each end stays until it gives up itself
	}
}

// session returns the backend of the edge's session, and when its
// connection was made: the oldest connection made after since, on which
// the backend sent something a second or more after it was made and within
// the last two seconds (the hub's heartbeat answers; an idle keep-alive
// connection left by the join answered once, at its start: within two
// seconds of the join it looked like a session and the test stopped the
// wrong replica); -1 if none.
func (lb *testLB) session(since time.Time) (int, time.Time) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	best, at := -1, time.Time{}
	for _, o := range lb.open {
		active := time.Unix(0, o.active.Load())
		if o.at.After(since) && active.Sub(o.at) >= time.Second &&
			time.Since(active) < 2*time.Second && (best < 0 || o.at.Before(at)) {
			best, at = o.backend, o.at
		}
	}
	return best, at
}

// apiProxy relays a cloudcore's connections to the API server. Paused, it
// holds what the cloudcore sends (its requests hang, as behind a slow link
// or a partition) and lets it through when resumed: a write the cloudcore
// sent before it lost its edge then lands late.
type apiProxy struct {
	ln     net.Listener
	target string

	mu sync.Mutex
	// resumed is nil while not paused, else closed on resume; guarded by
	// mu.
	resumed chan struct{}
}

func newAPIProxy(t *testing.T, target string) *apiProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &apiProxy{ln: ln, target: target}
	t.Cleanup(func() { p.resume(); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.relay(c)
		}
	}()
	return p
}

func (p *apiProxy) relay(c net.Conn) {
	defer c.Close()
	b, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		return
	}
	defer b.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(c, b); done <- struct{}{} }()
	go func() {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				p.gate()
				if _, werr := b.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	<-done
}

// gate waits while p is paused.
func (p *apiProxy) gate() {
	p.mu.Lock()
	ch := p.resumed
	p.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

func (p *apiProxy) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed == nil {
		p.resumed = make(chan struct{})
	}
}

func (p *apiProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.resumed != nil {
		close(p.resumed)
		p.resumed = nil
	}
}

// proxiedKubeconfig writes, at path, the kubeconfig of the test's API
// server with its address replaced by a new apiProxy's, and returns the
// proxy.
func proxiedKubeconfig(t *testing.T, path string) *apiProxy {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(cp.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	var p *apiProxy
	for _, c := range cfg.Clusters {
		u, err := url.Parse(c.Server)
		if err != nil {
			t.Fatal(err)
		}
		if p == nil {
			p = newAPIProxy(t, u.Host)
		}
		u.Host = p.ln.Addr().String()
		c.Server = u.String()
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReplicaKill: three cloudcore binaries against the one API server, an
// edgecore binary reaching them through a TCP load balancer, pods created
// and deleted, pod statuses and the mapper's device reports flowing. The
// replica serving the edge is stopped, by SIGTERM (it drains: the edge is
// told to go, and reconnects at once) and by SIGKILL in turn, and started
// again. Each time the edge must be served by another replica within
// failoverBound, and at the end (settle) no acknowledged report is lost, no
// reported value went back, every pod the churn left is Running in the API
// server and held by the edge, and no other. Every write of the pods and of
// the Node during the test is watched (statusWrites): none may change
// nothing or take a status back.
func TestReplicaKill(t *testing.T) {
	const failoverBound = 10 * time.Second // SIGTERM: drainTime (5s) and a reconnect
	rounds := 4
	if v, err := strconv.Atoi(os.Getenv("TETHER_REPLICA_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	r := newReplicaRig(t, "e2e-replicas", 3)
	sw := watchStatusWrites(t, r.ns, r.node)
	m := newCrashMapper(t, r)
	w := watchReported(t, r)
	// The churn's pods restart their containers every second (the fake
	// runtime's), so each reports a new status at every pod resync (2s),
	// during the kills too; the first five live through the whole test.
	const kept = 5
	churn, stopChurn := startChurn(t, r, func(c *podChurn) { c.restartEvery, c.keep = "1s", kept })
	stats := crashStats{rounds: rounds}
	pc := m.connect(0)
	stop := make(chan struct{})
	reporting := make(chan struct{})
	go func() { defer close(reporting); m.run(pc, stop) }()

	var took []time.Duration
	since := time.Time{}
	for round := 1; round <= rounds; round++ {
		var serving int
		eventually(t, time.Minute, fmt.Sprintf("round %d: the edge's session on a replica", round), func() (bool, error) {
			serving, _ = r.lb.session(since)
			return serving >= 0, nil
		})
		time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Millisecond) // statuses and reports flow
		p := r.replicas[serving]
		sig := "SIGTERM"
		killed := time.Now()
		if round%2 == 0 {
			sig = "SIGKILL"
			p.kill()
		} else {
			p.stop() // returns once it exited: drained
		}
		var back int
		var at time.Time
		eventually(t, time.Minute, fmt.Sprintf("round %d: the edge served by another replica after %s", round, sig), func() (bool, error) {
			back, at = r.lb.session(killed)
			return back >= 0 && back != serving, nil
		})
		// session needs the connection a second old: it was made at at.
		d := at.Sub(killed)
		took = append(took, d)
		t.Logf("round %d: replica %d stopped with %s; the edge's new session on replica %d %s after the signal",
			round, serving, sig, back, d.Round(time.Millisecond))
		if d > failoverBound {
			t.Errorf("round %d: the edge was served again %s after %s, want within %s", round, d, sig, failoverBound)
		}
		if err := r.edge.alive(); err != nil {
			t.Fatal(err)
		}
		p.start()
		since = killed
	}
	halfOpen(t, r, since)
	close(stop)
	<-reporting
	// No pod stuck Pending: settle checks every pod the churn left is
	// Running, the reports and the stores.
	eventually(t, time.Minute, "no pod Pending", func() (bool, error) {
		list, err := client.CoreV1().Pods(r.ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodPending {
				return false, fmt.Errorf("pod %s Pending", p.Name)
			}
		}
		return true, nil
	})
	r.settle(m, pc, churn, stopChurn, w, &stats)
	writes, podWrites, nodeWrites := sw.check(t)
	t.Logf("status writes watched: %d writes, %d changed a pod's status, %d the Node's; none went back or changed nothing",
		writes, podWrites, nodeWrites)
	// The statuses did change, many times each, across the kills.
	churn.mu.Lock()
	var keptChanges []int
	for i := 1; i <= kept; i++ {
		keptChanges = append(keptChanges, sw.statuses(churn.live[fmt.Sprintf("c%04d", i)]))
	}
	churn.mu.Unlock()
	t.Logf("statuses written of each of the %d pods that lived through the test: %v", kept, keptChanges)
	for i, n := range keptChanges {
		if n < 2*rounds {
			t.Errorf("pod c%04d: %d statuses written over %d rounds, want %d or more: the ordering was not exercised", i+1, n, rounds, 2*rounds)
		}
	}
	for _, p := range r.replicas {
		p.stop()
	}
	stale, totals := fenceFigures(t, r.replicas)
	t.Logf("the fence: status reports dropped as stale (replica logs), by kind: %v; stopped writers' totals (SIGKILLed processes left out): %s",
		stale, totals)
	slices.Sort(took)
	t.Logf("replica failover: the edge's new session after the signal, over %d rounds: %v", rounds, took)
}

// halfOpen is the round where a replica does not see its edge go: the
// API server stops taking the serving replica A's requests (held by its
// apiProxy) while the edge reports new statuses to it, then the edge's
// connection to A is black-holed (half-open: each side notices only by its
// own timeout). The edge reconnects to another replica, B, which writes the
// statuses A held and newer ones; then A's held requests reach the API
// server, after B's writes. Without the status fence, those older statuses
// would land over B's newer ones (statusWrites would see them go back);
// with it, A's writes fail their resourceVersion precondition and A drops
// its reports as stale.
func halfOpen(t *testing.T, r *crashRig, since time.Time) {
	t.Helper()
	var serving int
	eventually(t, time.Minute, "half-open round: the edge's session on a replica", func() (bool, error) {
		serving, _ = r.lb.session(since)
		return serving >= 0, nil
	})
	api := r.apis[serving]
	api.pause()
	defer api.resume()
	// The pods restart every second and resync every two: A gets new
	// statuses and cannot write them.
	time.Sleep(2500 * time.Millisecond)
	r.lb.avoid(serving, true)
	defer r.lb.avoid(serving, false)
	cut := time.Now()
	r.lb.blackhole(serving)
	var back int
	var at time.Time
	eventually(t, time.Minute, "half-open round: the edge served by another replica", func() (bool, error) {
		back, at = r.lb.session(cut)
		return back >= 0 && back != serving, nil
	})
	t.Logf("half-open round: replica %d's API requests held and the edge's link to it black-holed; the edge's new session on replica %d %s after the cut",
		serving, back, at.Sub(cut).Round(time.Millisecond))
	// B writes what the edge reports again and newer statuses; A's held
	// requests go through after (within A's WriteTimeout, 10s, of the
	// first held).
	time.Sleep(2 * time.Second)
	api.resume()
	time.Sleep(2 * time.Second)
	if err := r.replicas[serving].alive(); err != nil {
		t.Fatal(err)
	}
}

// fenceFigures reads the replicas' logs: the stale reports dropped (each
// logged), and the totals each writer logged when it stopped.
func fenceFigures(t *testing.T, replicas []*binProc) (stale map[string]int, totals string) {
	t.Helper()
	stale = map[string]int{}
	var sum [5]int
	names := []string{"pod_statuses", "node_statuses", "stale", "fence_conflicts", "fence_only"}
	for _, p := range replicas {
		b, err := os.ReadFile(p.logFile)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			for _, k := range []string{"pod", "node", "device"} {
				if strings.Contains(line, "stale "+k+" status dropped") {
					stale[k]++
				}
			}
			if !strings.Contains(line, "status writer stopped") {
				continue
			}
			for i, n := range names {
				_, v, ok := strings.Cut(line, " "+n+"=")
				if !ok {
					continue
				}
				v, _, _ = strings.Cut(v, " ")
				k, _ := strconv.Atoi(v)
				sum[i] += k
			}
		}
	}
	var b strings.Builder
	for i, n := range names {
		fmt.Fprintf(&b, "%s=%d ", n, sum[i])
	}
	return stale, strings.TrimSpace(b.String())
}
