//go:build integration

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/edgecore/agent"
)

// The rebalancing figures TestReplicaRebalance derives its bound from.
const (
	// rebalancePoll is how often a replica asks its peers their loads
	// (hub.Config.RebalancePoll's default); rebalanceLand how long after
	// a move the mover counts the session as still landing (the hub's
	// landTime): it waits for peers' figures taken that much later
	// before it moves more.
	rebalancePoll = 2 * time.Second
	rebalanceLand = 2 * time.Second
	// rebalanceRate is cloudcore's default rebalanceRate (sessions sent
	// away per second per replica).
	rebalanceRate = 20
	// rebalanceSettleE2E is the test's rebalanceSettle (15s by default):
	// nothing moves for that long after the set of replicas changed.
	rebalanceSettleE2E = 3 * time.Second
	// rebalanceDrain is the test's drainTime (5s by default).
	rebalanceDrain = 2 * time.Second
)

// TestReplicaRebalance: three cloudcore binaries that know each other as
// peers (peerAddr and peers, as the simulator's replicas; the manifests
// find them through the peer Service) behind the test's TCP load
// balancer, and 30 light edges (edgecore in this process, the
// in-memory runtime, no metaserver, broker or kubelet socket: a hollow
// node's configuration) reaching them through it. One replica is stopped
// with SIGTERM: its edges move to the other two. It is started again with
// none, and must get its share back from the others' rebalancing: within
// the bound derived below, every replica holds its share within the slack
// (ceil(edges/replicas) ± max(2, 5%)), and then nothing moves for three
// peer polls (no flapping). Throughout, every Node stays Ready (its Ready
// condition's last transition is before the stop), every edge has its
// session back, and a pod created on each node when the first move is seen
// runs. The moves the edges saw (their sessions opened) are the sessions
// the stopped replica held, then the sum of the replicas'
// tether_hub_rebalanced_sessions_total, scraped from their /metrics.
func TestReplicaRebalance(t *testing.T) {
	const (
		replicas = 3
		edges    = 30
		stopped  = replicas - 1
	)
	dir := t.TempDir()
	var peers, health []string
	for range replicas {
		peers, health = append(peers, freeAddr(t)), append(health, freeAddr(t))
	}
	rs := startReplicas(t, dir, replicas, func(i int, cfg *cloudcore.Config) {
		cfg.PeerAddr, cfg.Peers = peers[i], slices.Concat(peers[:i], peers[i+1:])
		cfg.HealthAddr = health[i]
		cfg.RebalanceSettle = metav1.Duration{Duration: rebalanceSettleE2E}
		cfg.DrainTime = metav1.Duration{Duration: rebalanceDrain}
		// Every connection through the test's load balancer comes from
		// 127.0.0.1, as behind a TCP proxy: the per-address limits (32
		// connections, 4/s) are raised as cloudcore's doc says. With them,
		// the joins' idle keep-alive connections and the sessions filled
		// the 32, and the stopped replica's edges were refused for 20 s,
		// until the idle ones timed out.
		cfg.MaxConnsPerIP, cfg.AcceptRatePerIP, cfg.AcceptBurstPerIP = 1000, 1000, 1000
	})
	for i := range replicas {
		waitReplicaReady(t, rs, i, health[i])
	}
	ns := namespace(t)
	var es []*edge
	for i := range edges {
		name := fmt.Sprintf("e2e-rebal-%02d", i)
		e := newEdgeVia(t, rs.addr, joinString(t, name, rs.ca.Cert), name)
		e.tweak = hollowEdge
		es = append(es, e)
	}
	for _, e := range es {
		e.start()
	}
	for _, e := range es {
		waitNodeReady(t, e.name, corev1.ConditionTrue, time.Minute)
	}
	m := &rebalanceWatch{t: t, rs: rs, edges: es}

	// Even and quiet before the stop (the load balancer spread the edges;
	// the replicas may have evened them out already).
	start := m.waitEven("at start", time.Minute)
	allReady := time.Now()
	t.Logf("at start: sessions %v, rebalanced %v", start.sessions, start.rebalanced)

	// SIGTERM: the replica drains; its edges move to the others.
	before := start
	stopAt := time.Now()
	rs.procs[stopped].stop()
	var moved rebalanceSample
	eventually(t, time.Minute, "the stopped replica's edges served by the others", func() (bool, error) {
		moved = m.sample()
		return moved.connected == edges && moved.total() == edges, fmt.Errorf("%d edges connected, sessions %v",
			moved.connected, moved.sessions)
	})
	t.Logf("replica %d stopped (SIGTERM) with %d sessions: all %d edges served again %s after the signal, sessions %v",
		stopped, before.sessions[stopped], edges, time.Since(stopAt).Round(time.Millisecond), moved.sessions)
	if d := moved.edgeSessions - before.edgeSessions; d != before.sessions[stopped] {
		t.Errorf("the edges opened %d sessions after the stop, want the %d the stopped replica held", d, before.sessions[stopped])
	}

	// The bound. share and slack as the Rebalancer computes them; the two
	// replicas left hold about edges/(replicas-1) each, excess over the
	// share each. A round: each sends its excess away at rebalanceRate,
	// waits rebalanceLand for them to land and a poll for figures that
	// show it. A moved edge lands on the returned replica with probability
	// 1/replicas (the load balancer turns over all of them), so its
	// deficit shrinks by that factor per round until it is within slack.
	share := (edges + replicas - 1) / replicas
	slack := max(2, share/20)
	excess := float64(edges)/float64(replicas-1) - float64(share)
	rounds := int(math.Ceil(math.Log(float64(share)/float64(slack)) / math.Log(float64(replicas)/float64(replicas-1))))
	round := rebalanceLand + rebalancePoll + time.Duration(excess/rebalanceRate*float64(time.Second)) + agent.ShutdownJitter
	bound := rebalancePoll + rebalanceSettleE2E + time.Duration(rounds)*round
	t.Logf("bound after the replica is ready again: poll %s + settle %s + %d rounds x %s = %s (share %d, slack %d)",
		rebalancePoll, rebalanceSettleE2E, rounds, round, bound, share, slack)

	startAt := time.Now()
	rs.procs[stopped].start()
	waitReplicaReady(t, rs, stopped, health[stopped])
	readyAt := time.Now()
	base := m.sample() // the returned replica's counter starts at 0
	var first, last time.Time
	var pods []string
	quiet := 3 * rebalancePoll
	var end rebalanceSample
	deadline := readyAt.Add(bound + quiet + rebalancePoll)
	for prev := base; ; prev = end {
		end = m.sample()
		if end.moves() != prev.moves() {
			last = end.at
			if first.IsZero() {
				first = end.at
				// Pods created while edges move: each must run.
				for _, e := range es {
					p := barePod(ns, "during-"+e.name, e.name)
					if _, err := client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
						t.Fatal(err)
					}
					pods = append(pods, p.Name)
				}
			}
		}
		settled := !last.IsZero() && end.at.Sub(last) >= quiet
		if settled && end.even(share, slack, edges) {
			break
		}
		if end.at.After(deadline) {
			t.Fatalf("not even and quiet %s after replica %d was ready again (bound %s, then %s without moves): "+
				"sessions %v, rebalanced %v (first move %s, last %s after ready), %d edges connected",
				end.at.Sub(readyAt).Round(time.Millisecond), stopped, bound, quiet, end.sessions, end.rebalanced,
				sinceOr(first, readyAt), sinceOr(last, readyAt), end.connected)
		}
	}
	moves := end.moves() - base.moves()
	t.Logf("replica %d back: ready %s after its start; first move %s, last move %s after ready (bound %s); "+
		"%d moves, sessions %v, rebalanced %v; no move in the %s after",
		stopped, readyAt.Sub(startAt).Round(time.Millisecond), first.Sub(readyAt).Round(time.Millisecond),
		last.Sub(readyAt).Round(time.Millisecond), bound, moves, end.sessions, end.rebalanced, end.at.Sub(last).Round(time.Millisecond))
	if d := last.Sub(readyAt); d > bound {
		t.Errorf("the last move %s after the replica was ready, want within %s", d, bound)
	}
	// Each move is a session the edges opened again, and no other was.
	if d := end.edgeSessions - base.edgeSessions; d != moves {
		t.Errorf("the edges opened %d sessions while the replicas rebalanced; tether_hub_rebalanced_sessions_total says %d moves", d, moves)
	}
	if moves < share-slack {
		t.Errorf("%d moves: the returned replica needs at least %d", moves, share-slack)
	}

	// Every Node stayed Ready, and every pod created during the moves runs.
	nodes, err := client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, n := range nodes.Items {
		if !strings.HasPrefix(n.Name, "e2e-rebal-") {
			continue
		}
		seen++
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && (c.Status != corev1.ConditionTrue || c.LastTransitionTime.After(allReady)) {
				t.Errorf("node %s: Ready=%s since %s, want True since before the stop (%s)", n.Name, c.Status,
					c.LastTransitionTime.Format(time.RFC3339), allReady.Format(time.RFC3339))
			}
		}
	}
	if seen != edges {
		t.Errorf("%d Nodes of the test's edges, want %d", seen, edges)
	}
	// The longest from a pod's creation to its Ready condition (the API
	// server's times, in seconds).
	var slowest time.Duration
	eventually(t, time.Minute, "the pods created during the moves Running", func() (bool, error) {
		slowest = 0
		for _, name := range pods {
			p, err := client.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if p.Status.Phase != corev1.PodRunning {
				return false, fmt.Errorf("pod %s %s", name, p.Status.Phase)
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					slowest = max(slowest, c.LastTransitionTime.Sub(p.CreationTimestamp.Time))
				}
			}
		}
		return true, nil
	})
	t.Logf("%d pods created at the first move, one a node: all Running, Ready within %s of their creation (API server times, 1 s resolution)", len(pods), slowest)
}

// hollowEdge makes an edge as light as the simulator's hollow nodes: no
// metaserver, MQTT broker, node events or kubelet socket, no static pods,
// and quiet logs (there are many).
func hollowEdge(cfg *edgecore.Config) {
	off := false
	cfg.MetaServer = edgecore.MetaServerConfig{Enable: &off}
	cfg.Devices = edgecore.DevicesConfig{Enable: &off}
	cfg.NodeEvents = &off
	cfg.KubeletSocket = "-"
	cfg.StaticPodPath = edgecore.NoStaticPods
	cfg.Logger = slog.New(slog.DiscardHandler)
}

// waitReplicaReady waits for replica i's /readyz on its health address.
func waitReplicaReady(t *testing.T, rs *replicaSet, i int, health string) {
	t.Helper()
	eventually(t, time.Minute, fmt.Sprintf("replica %d ready", i), func() (bool, error) {
		rs.alive()
		resp, err := http.Get("http://" + health + "/readyz")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Errorf("/readyz: %s", resp.Status)
	})
}

// rebalanceWatch samples the replicas' metrics and the edges' links.
type rebalanceWatch struct {
	t     *testing.T
	rs    *replicaSet
	edges []*edge
	hc    *http.Client
	// last is when sample last scraped: samples are paced at
	// sampleEvery, under the replicas' /metrics rate (5/s).
	last time.Time
}

const sampleEvery = 300 * time.Millisecond

// rebalanceSample is what the replicas said and the edges held at one time.
type rebalanceSample struct {
	at time.Time
	// sessions and rebalanced are each replica's tether_hub_sessions and
	// tether_hub_rebalanced_sessions_total (0 for one that is stopped).
	sessions, rebalanced []int
	// connected counts the edges with a session; edgeSessions sums the
	// sessions each edge opened since its start.
	connected, edgeSessions int
}

func (s rebalanceSample) total() int { return sum(s.sessions) }
func (s rebalanceSample) moves() int { return sum(s.rebalanced) }

// even says every edge is served and each replica holds share ± slack.
func (s rebalanceSample) even(share, slack, edges int) bool {
	if s.connected != edges || s.total() != edges {
		return false
	}
	for _, n := range s.sessions {
		if n < share-slack || n > share+slack {
			return false
		}
	}
	return true
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// sinceOr is t's offset from origin, or "none" if t is zero.
func sinceOr(t, origin time.Time) string {
	if t.IsZero() {
		return "none"
	}
	return t.Sub(origin).Round(time.Millisecond).String()
}

// sample scrapes each running replica's /metrics (on its hub listener, as
// Prometheus does, with the admin's token) and reads each edge's link.
func (m *rebalanceWatch) sample() rebalanceSample {
	m.t.Helper()
	time.Sleep(time.Until(m.last.Add(sampleEvery)))
	m.last = time.Now()
	s := rebalanceSample{at: m.last}
	for i, p := range m.rs.procs {
		var sessions, rebalanced int
		if p.p != nil {
			v := m.scrape(i, "tether_hub_sessions", "tether_hub_rebalanced_sessions_total")
			sessions, rebalanced = int(v[0]), int(v[1])
		}
		s.sessions, s.rebalanced = append(s.sessions, sessions), append(s.rebalanced, rebalanced)
	}
	for _, e := range m.edges {
		st := e.ec.Agent.State()
		if st.Connected {
			s.connected++
		}
		s.edgeSessions += st.Sessions
	}
	return s
}

// scrape reads the named unlabelled metrics of replica i.
func (m *rebalanceWatch) scrape(i int, names ...string) []float64 {
	m.t.Helper()
	if m.hc == nil {
		roots := x509.NewCertPool()
		roots.AddCert(m.rs.ca.Cert)
		m.hc = &http.Client{Timeout: 5 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	}
	req, _ := http.NewRequestWithContext(m.t.Context(), http.MethodGet, "https://"+m.rs.addrs[i]+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+cp.RESTConfig().BearerToken)
	resp, err := m.hc.Do(req)
	if err != nil {
		m.t.Fatalf("replica %d /metrics: %v", i, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		m.t.Fatalf("replica %d /metrics: %s %s", i, resp.Status, body)
	}
	families, err := new(expfmt.TextParser).TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		m.t.Fatalf("replica %d /metrics: %v", i, err)
	}
	out := make([]float64, len(names))
	for k, name := range names {
		f := families[name]
		if f == nil || len(f.Metric) != 1 {
			m.t.Fatalf("replica %d /metrics: no single %s", i, name)
		}
		switch mt := f.Metric[0]; {
		case mt.Gauge != nil:
			out[k] = mt.Gauge.GetValue()
		case mt.Counter != nil:
			out[k] = mt.Counter.GetValue()
		}
	}
	return out
}

// waitEven waits until every edge is served, each replica holds its share
// within the slack, and no session moved for three peer polls.
func (m *rebalanceWatch) waitEven(what string, timeout time.Duration) rebalanceSample {
	m.t.Helper()
	n := len(m.edges)
	share := (n + len(m.rs.procs) - 1) / len(m.rs.procs)
	slack := max(2, share/20)
	var s rebalanceSample
	since := time.Time{}
	last := -1
	eventually(m.t, timeout, what+": edges served, replicas even and quiet", func() (bool, error) {
		s = m.sample()
		if !s.even(share, slack, n) || s.moves() != last {
			since, last = s.at, s.moves()
			return false, fmt.Errorf("sessions %v, rebalanced %v, %d edges connected", s.sessions, s.rebalanced, s.connected)
		}
		return s.at.Sub(since) >= 3*rebalancePoll, nil
	})
	return s
}
