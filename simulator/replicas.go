package simulator

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/cloudcore/hub"
)

// replicaCloud is Config.Replicas cloudcore processes against one API
// server, each on its own loopback port, and the nodes reach them as
// through a TCP load balancer in front of a Service: each dial picks a
// replica at random among those that accept, and tries the next one when
// a replica refuses. The balancing is done in the node's dial (no relay
// process in between, so a hollow node still costs no goroutine); each
// node's wire remembers the replica it reached. The replicas share the CA
// (its Secret) and elect one leader.
type replicaCloud struct {
	replicas []*processCloud
	// netDial opens the nodes' connections (Config.NodeNamespace).
	netDial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu sync.Mutex
	// down marks the replicas KillReplica stopped; guarded by mu. Their
	// ports refuse, as a Service's endpoints drop a pod that is gone.
	down map[int]bool
}

// newReplicaCloud makes n replicas of cfg, each with a port and a
// directory (dir/cloudcore-<i>) of its own. They drain for
// cfg.DrainTime when stopped with SIGTERM (default cloudcore's, 5s).
func newReplicaCloud(cfg cloudcore.Config, n int, binary, dir, host string, ns Namespace,
	roots *x509.CertPool) (*replicaCloud, error) {
	if cfg.DrainTime.Duration == 0 {
		cfg.DrainTime.Duration = 5 * time.Second
	}
	rc := &replicaCloud{down: map[int]bool{}}
	// Each replica serves its peers (kubelet streams, and its load for
	// rebalancing) on a port of its own, and knows the others'.
	peers := make([]string, n)
	for i := range n {
		addr, err := fixedPort(ns, "127.0.0.1")
		if err != nil {
			return nil, fmt.Errorf("pick a replica's peer port: %w", err)
		}
		peers[i] = addr
	}
	for i := range n {
		cfg := cfg
		cfg.PeerAddr = peers[i]
		cfg.Peers = slices.Concat(peers[:i], peers[i+1:])
		base, err := newCloudBase(cfg, filepath.Join(dir, "cloudcore-"+strconv.Itoa(i)), host, ns, roots)
		if err != nil {
			return nil, err
		}
		rc.replicas = append(rc.replicas, &processCloud{cloudBase: base, binary: binary})
	}
	return rc, nil
}

func (c *replicaCloud) start(ctx context.Context) error {
	errs := make([]error, len(c.replicas))
	var wg sync.WaitGroup
	for i, r := range c.replicas {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = r.start(ctx) }()
	}
	wg.Wait()
	c.mu.Lock()
	clear(c.down)
	c.mu.Unlock()
	return errors.Join(errs...)
}

func (c *replicaCloud) stop() error {
	errs := make([]error, len(c.replicas))
	var wg sync.WaitGroup
	for i, r := range c.replicas {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = r.stop() }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *replicaCloud) hub() *hub.Hub { return nil }

// pid is the first replica's.
func (c *replicaCloud) pid() int { return c.replicas[0].pid() }

// url is the first replica's: every replica's certificate names the same
// loopback address, and the nodes' dial (dial) picks the replica whatever
// the port.
func (c *replicaCloud) url() string { return c.replicas[0].url() }

// dial opens a connection to a replica: a random one among those not
// marked down, then the others in turn when one refuses. The connection
// says which replica it reached (replicaConn).
func (c *replicaCloud) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	c.mu.Lock()
	var up []int
	for i := range c.replicas {
		if !c.down[i] {
			up = append(up, i)
		}
	}
	c.mu.Unlock()
	if len(up) == 0 {
		return nil, errors.New("simulator: no replica up")
	}
	first := rand.N(len(up))
	var errs []error
	for k := range up {
		i := up[(first+k)%len(up)]
		r := c.replicas[i]
		conn, err := c.netDial(ctx, network, r.address)
		if err == nil {
			return &replicaConn{Conn: conn, replica: i}, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// replicaConn is a connection to replica.
type replicaConn struct {
	net.Conn
	replica int
}

// kill stops replica i with sig: SIGTERM (a graceful stop: it drains, then
// exits; SIGKILL after a minute) or SIGKILL. It returns once the process
// exited.
func (c *replicaCloud) kill(i int, sig syscall.Signal) error {
	if i < 0 || i >= len(c.replicas) {
		return fmt.Errorf("replica %d: there are %d", i, len(c.replicas))
	}
	r := c.replicas[i]
	if r.proc == nil {
		return fmt.Errorf("replica %d is not running", i)
	}
	switch sig {
	case syscall.SIGTERM:
		r.stop() // SIGTERM, a minute's grace
	case syscall.SIGKILL:
		_ = syscall.Kill(-r.proc.Pid(), syscall.SIGKILL)
		<-r.proc.Done()
		r.proc.Stop(0) // reaps and sweeps the group
		r.proc = nil
	default:
		return fmt.Errorf("signal %s: want SIGTERM or SIGKILL", sig)
	}
	c.mu.Lock()
	c.down[i] = true
	c.mu.Unlock()
	return nil
}

// restart starts replica i again.
func (c *replicaCloud) restart(ctx context.Context, i int) error {
	if i < 0 || i >= len(c.replicas) {
		return fmt.Errorf("replica %d: there are %d", i, len(c.replicas))
	}
	if err := c.replicas[i].start(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	delete(c.down, i)
	c.mu.Unlock()
	return nil
}

// Failover is the reconnect of the nodes a replica held when it stopped.
type Failover struct {
	// Replica is the one stopped, Signal how.
	Replica int
	Signal  string
	// Nodes is how many running, uncut nodes it held; Back how many of
	// them had a new session on another replica, resynced, at the end.
	Nodes, Back int
	// P50, P99 and Max are the time from the signal until each node's new
	// session was resynced (sampled every 50 ms); Stopped is how long the
	// replica took to exit after the signal.
	P50, P99, Max, Stopped time.Duration
	// Spread is the time between the first node back and the last.
	Spread time.Duration
	// GapP50, GapP99 and GapMax are each node's own time without a
	// session: from when it was first seen off its old session (sampled
	// every 50 ms: 0 means it came back within one sample) until its new
	// one was resynced. A drained node is served until its turn.
	GapP50, GapP99, GapMax time.Duration
}

func (f Failover) String() string {
	return fmt.Sprintf("replica %d %s: %d/%d nodes back on another replica, from the signal p50 %s p99 %s max %s "+
		"(spread %s; exited %s after the signal); each node without a session p50 %s p99 %s max %s",
		f.Replica, f.Signal, f.Back, f.Nodes, roundDur(f.P50), roundDur(f.P99), roundDur(f.Max), roundDur(f.Spread),
		roundDur(f.Stopped), roundDur(f.GapP50), roundDur(f.GapP99), roundDur(f.GapMax))
}

// KillReplica stops replica i with sig (SIGTERM or SIGKILL) and waits until
// every node it held is resynced on another replica, or ctx ends. The
// replica stays down until StartReplica.
func (s *Sim) KillReplica(ctx context.Context, i int, sig syscall.Signal) (Failover, error) {
	rc, ok := s.cloud.(*replicaCloud)
	if !ok {
		return Failover{}, errors.New("kill-replica: the Sim runs one cloudcore (Config.Replicas)")
	}
	r := Failover{Replica: i, Signal: sig.String()}
	before := map[int]int{}
	s.fleet.each(nil, func(v nodeView) {
		if v.running && !v.cut && v.state.Connected && v.replica == i {
			before[v.index] = v.state.Sessions
		}
	})
	r.Nodes = len(before)
	t0 := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- rc.kill(i, sig) }()
	sel := make([]int, 0, len(before))
	for n := range before {
		sel = append(sel, n)
	}
	back, gone := map[int]time.Duration{}, map[int]time.Duration{}
	var killErr error
	exited := false
	err := poll(ctx, 50*time.Millisecond, func() bool {
		if !exited {
			select {
			case killErr = <-stopped:
				exited, r.Stopped = true, time.Since(t0)
			default:
			}
		}
		now := time.Since(t0)
		s.fleet.each(sel, func(v nodeView) {
			if _, ok := back[v.index]; ok {
				return
			}
			if _, ok := gone[v.index]; !ok && (!v.state.Connected || v.state.Sessions > before[v.index]) {
				gone[v.index] = now
			}
			if v.state.Connected && v.state.Sessions > before[v.index] && v.state.LastResync != nil && v.replica != i {
				back[v.index] = now
			}
		})
		return exited && len(back) == len(before)
	})
	if !exited {
		killErr = <-stopped
		r.Stopped = time.Since(t0)
	}
	r.Back = len(back)
	ds := make([]time.Duration, 0, len(back))
	for _, d := range back {
		ds = append(ds, d)
	}
	slices.Sort(ds)
	if n := len(ds); n > 0 {
		r.P50, r.P99, r.Max = ds[(n-1)*50/100], ds[(n-1)*99/100], ds[n-1]
		r.Spread = ds[n-1] - ds[0]
	}
	gaps := make([]time.Duration, 0, len(back))
	for n, d := range back {
		gaps = append(gaps, d-gone[n])
	}
	slices.Sort(gaps)
	if n := len(gaps); n > 0 {
		r.GapP50, r.GapP99, r.GapMax = gaps[(n-1)*50/100], gaps[(n-1)*99/100], gaps[n-1]
	}
	s.failovers = append(s.failovers, r)
	if killErr != nil {
		return r, killErr
	}
	if err != nil {
		return r, fmt.Errorf("kill-replica: %d/%d back: %w", r.Back, r.Nodes, err)
	}
	return r, nil
}

// StartReplica starts replica i again after KillReplica.
func (s *Sim) StartReplica(ctx context.Context, i int) error {
	rc, ok := s.cloud.(*replicaCloud)
	if !ok {
		return errors.New("start-replica: the Sim runs one cloudcore (Config.Replicas)")
	}
	return rc.restart(ctx, i)
}

// ReplicaNodes counts the connected nodes on each replica.
func (s *Sim) ReplicaNodes() []int {
	rc, ok := s.cloud.(*replicaCloud)
	if !ok {
		return nil
	}
	n := make([]int, len(rc.replicas))
	s.fleet.each(nil, func(v nodeView) {
		if v.state.Connected && v.replica >= 0 && v.replica < len(n) {
			n[v.replica]++
		}
	})
	return n
}

// Balance is how the replicas' nodes evened out after one came back.
type Balance struct {
	// Even is from the command's start until no replica held more than
	// its share ceil(total/replicas) plus the hub's slack (the larger of
	// 2 and 5% of the share) nor less than the share minus twice it;
	// Settled until the last node moved (started a new session) before
	// Quiet passed with none moving and the replicas even; Nodes the
	// nodes per replica then; Moved how many moves there were, and
	// MovedAfterEven how many of them came after Even (the hub sends
	// sessions away down to the share, not only to share+slack).
	Even, Settled, Quiet  time.Duration
	Nodes                 []int
	Moved, MovedAfterEven int
}

func (b Balance) String() string {
	return fmt.Sprintf("replicas even %s after the command, the last move %s after it (%d moves, %d after even; none in the %s after): nodes per replica %v",
		roundDur(b.Even), roundDur(b.Settled), b.Moved, b.MovedAfterEven, roundDur(b.Quiet), b.Nodes)
}

// WaitBalanced waits until the nodes are spread evenly over the replicas
// that are up and none moved for quiet (see Balance), or ctx ends: moves
// that never stop (replicas trading nodes back and forth) fail it.
func (s *Sim) WaitBalanced(ctx context.Context, quiet time.Duration) (Balance, error) {
	rc, ok := s.cloud.(*replicaCloud)
	if !ok {
		return Balance{}, errors.New("wait-balanced: the Sim runs one cloudcore (Config.Replicas)")
	}
	t0 := time.Now()
	b := Balance{Quiet: quiet}
	sessions := map[int]int{}
	s.fleet.each(nil, func(v nodeView) { sessions[v.index] = v.state.Sessions })
	var even, lastMove time.Time
	err := poll(ctx, 100*time.Millisecond, func() bool {
		now := time.Now()
		s.fleet.each(nil, func(v nodeView) {
			if v.state.Sessions > sessions[v.index] {
				b.Moved++
				if !even.IsZero() {
					b.MovedAfterEven++
				}
				lastMove = now
			}
			sessions[v.index] = v.state.Sessions
		})
		all := s.ReplicaNodes()
		rc.mu.Lock()
		var up []int
		total := 0
		for i, n := range all {
			total += n
			if !rc.down[i] {
				up = append(up, n)
			}
		}
		rc.mu.Unlock()
		b.Nodes = all
		if len(up) == 0 {
			return false
		}
		share := (total + len(up) - 1) / len(up)
		slack := max(2, share/20)
		for _, n := range up {
			if n > share+slack || n < share-2*slack {
				even = time.Time{}
				return false
			}
		}
		if even.IsZero() {
			even = now
			b.Even = now.Sub(t0)
		}
		return now.Sub(even) >= quiet && now.Sub(lastMove) >= quiet
	})
	if !lastMove.IsZero() {
		b.Settled = lastMove.Sub(t0)
	}
	if err != nil {
		return b, fmt.Errorf("wait-balanced: nodes per replica %v after %s, %d moves: %w", b.Nodes, roundDur(time.Since(t0)), b.Moved, err)
	}
	return b, nil
}
