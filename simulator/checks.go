package simulator

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/tether-edge/tether/cloudcore/dispatch"
)

// unit says how a metric's value is written and compared.
type unit int

const (
	count    unit = iota // an integer
	duration             // a time.Duration, in nanoseconds
	bitRate              // bits a second
	byteSize             // bytes
)

// metric is a figure an expectation can check.
type metric struct {
	unit unit
	// read returns the figure now, over the nodes in sel (nil: every
	// node) where the figure is per node.
	read func(s *Sim, sel []int) (float64, error)
	doc  string
}

// metrics are the figures `expect` checks.
var metrics = map[string]metric{
	"connected": {count, func(s *Sim, sel []int) (float64, error) {
		return s.countNodes(sel, func(v nodeView) bool { return v.running && v.state.Connected }), nil
	}, "nodes with a session"},
	"registered": {count, func(s *Sim, sel []int) (float64, error) {
		return s.countNodes(sel, func(v nodeView) bool { return s.registered(v.name) }), nil
	}, "nodes with a Node in the API server (registered when enrolled)"},
	"enrolled": {count, func(s *Sim, sel []int) (float64, error) {
		return s.countNodes(sel, func(v nodeView) bool { return v.enrolled }), nil
	}, "nodes with a client certificate"},
	"running-nodes": {count, func(s *Sim, sel []int) (float64, error) {
		return s.countNodes(sel, func(v nodeView) bool { return v.running }), nil
	}, "nodes whose edgecore runs"},
	"pods": {count, func(s *Sim, sel []int) (float64, error) {
		return s.countPods(sel, func(*corev1.Pod) bool { return true }), nil
	}, "pods in the API server"},
	"pods-running": {count, func(s *Sim, sel []int) (float64, error) {
		return s.countPods(sel, func(p *corev1.Pod) bool {
			return p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning
		}), nil
	}, "pods Running in the API server, not being deleted"},
	"pods-terminating": {count, func(s *Sim, sel []int) (float64, error) {
		return s.countPods(sel, func(p *corev1.Pod) bool { return p.DeletionTimestamp != nil }), nil
	}, "pods being deleted (waiting for their node)"},
	"pods-quiet": {duration, func(s *Sim, _ []int) (float64, error) {
		return float64(s.rec.quiet(s.start)), nil
	}, "time since the API server last changed a pod of the run (pods-quiet>=5s: settled)"},
	"pods-held": {count, func(s *Sim, sel []int) (float64, error) {
		return s.sumNodes(sel, func(v nodeView) (int, error) {
			h, err := heldPods(v.ec.DB)
			return len(h), err
		})
	}, "pods in the running nodes' stores"},
	"pods-unsynced": {count, func(s *Sim, sel []int) (float64, error) {
		n, err := s.unsynced(sel)
		return float64(n), err
	}, "pods a running node lacks, holds in an old version, or holds though the API server does not"},
	"edge-running": {count, func(s *Sim, sel []int) (float64, error) {
		return s.sumNodes(sel, func(v nodeView) (int, error) {
			uids, err := v.rt.Pods(context.Background())
			return len(uids), err
		})
	}, "pods the running nodes' runtimes run"},
	"node-failures": {count, func(s *Sim, _ []int) (float64, error) {
		return float64(s.fleet.failed.Load()), nil
	}, "edgecores that stopped with an error"},
	"log-errors": {count, func(s *Sim, _ []int) (float64, error) {
		return float64(s.logs.errors.Load()), nil
	}, "error records logged by the nodes and cloudcore (in this process)"},
	"log-warnings": {count, func(s *Sim, _ []int) (float64, error) {
		return float64(s.logs.warns.Load()), nil
	}, "warning records logged"},
	"resync-upserts": {count, resync(func(u, _ int, _ int64) float64 { return float64(u) }),
		"upserts of the connected nodes' last resyncs"},
	"resync-deletes": {count, resync(func(_, d int, _ int64) float64 { return float64(d) }),
		"deletes of the connected nodes' last resyncs"},
	"resync-messages": {count, resync(func(u, d int, _ int64) float64 { return float64(u + d) }),
		"object messages of the connected nodes' last resyncs"},
	"resync-bytes": {byteSize, resync(func(_, _ int, b int64) float64 { return float64(b) }),
		"bytes of the connected nodes' last resyncs"},
	"hub-resync-messages": {count, func(s *Sim, _ []int) (float64, error) {
		st, ok := s.HubStats()
		if !ok {
			return 0, errors.New("no hub stats: cloudcore does not run in this process")
		}
		return float64(st.ResyncMessages), nil
	}, "object messages the running hub sent in resyncs since it started"},
	"dispatch-p50":     {duration, latency(func(s *Sim) Latency { return s.Dispatch() }, 50), "dispatch time, median"},
	"dispatch-p99":     {duration, latency(func(s *Sim) Latency { return s.Dispatch() }, 99), "dispatch time, 99th percentile"},
	"dispatch-samples": {count, latency(func(s *Sim) Latency { return s.Dispatch() }, 0), "pods with a dispatch time"},
	"running-p50":      {duration, latency(func(s *Sim) Latency { return s.CreateToRunning() }, 50), "create to Running, median"},
	"running-p99":      {duration, latency(func(s *Sim) Latency { return s.CreateToRunning() }, 99), "create to Running, 99th percentile"},
	"running-samples":  {count, latency(func(s *Sim) Latency { return s.CreateToRunning() }, 0), "pods with a create to Running time"},
	"failover-p50": {duration, failover(func(f Failover) float64 { return float64(f.P50) }),
		"the last kill-replica: its nodes' reconnect time from the signal, median"},
	"failover-p99": {duration, failover(func(f Failover) float64 { return float64(f.P99) }),
		"the last kill-replica: its nodes' reconnect time from the signal, 99th percentile"},
	"failover-lost": {count, failover(func(f Failover) float64 { return float64(f.Nodes - f.Back) }),
		"the last kill-replica: its nodes not back on another replica"},
	"storm-time": {duration, func(s *Sim, _ []int) (float64, error) {
		if len(s.storms) == 0 {
			return 0, errors.New("no storm measured (restart-hub, wait-resynced)")
		}
		return float64(s.storms[len(s.storms)-1].Took), nil
	}, "the last storm's time from the hub's return until every node resynced"},
	"idle-up-bps": {bitRate, func(s *Sim, _ []int) (float64, error) {
		if len(s.idles) == 0 {
			return 0, errors.New("no idle window measured (idle)")
		}
		return s.idles[len(s.idles)-1].UpBitsPerSecond, nil
	}, "the last idle window's uplink per node"},
	"idle-down-bps": {bitRate, func(s *Sim, _ []int) (float64, error) {
		if len(s.idles) == 0 {
			return 0, errors.New("no idle window measured (idle)")
		}
		return s.idles[len(s.idles)-1].DownBitsPerSecond, nil
	}, "the last idle window's downlink per node"},
	"rss-per-node": {byteSize, func(s *Sim, _ []int) (float64, error) {
		if s.memory.Nodes == 0 {
			return 0, errors.New("memory not measured (wait-connected)")
		}
		return s.memory.RSSPerNode, nil
	}, "this process's resident memory per node at the last wait-connected"},
}

func resync(f func(upserts, deletes int, bytes int64) float64) func(*Sim, []int) (float64, error) {
	return func(s *Sim, sel []int) (float64, error) {
		var u, d int
		var b int64
		s.fleet.each(sel, func(v nodeView) {
			if r := v.state.LastResync; v.running && v.state.Connected && r != nil {
				u += int(r.Upserts)
				d += int(r.Deletes)
				b += int64(r.Bytes)
			}
		})
		return f(u, d, b), nil
	}
}

func latency(get func(*Sim) Latency, p int) func(*Sim, []int) (float64, error) {
	return func(s *Sim, _ []int) (float64, error) {
		l := get(s)
		switch p {
		case 0:
			return float64(l.Samples), nil
		case 50:
			return float64(l.P50), nil
		}
		return float64(l.P99), nil
	}
}

func (s *Sim) countNodes(sel []int, ok func(nodeView) bool) float64 {
	n := 0
	s.fleet.each(sel, func(v nodeView) {
		if ok(v) {
			n++
		}
	})
	return float64(n)
}

// sumNodes adds f over the running nodes in sel.
func (s *Sim) sumNodes(sel []int, f func(nodeView) (int, error)) (float64, error) {
	sum := 0
	var errs []error
	s.fleet.each(sel, func(v nodeView) {
		if !v.running {
			return
		}
		n, err := f(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", v.name, err))
		}
		sum += n
	})
	return float64(sum), errors.Join(errs...)
}

// countPods counts the run's pods (on the nodes in sel, if not nil) that
// pass ok.
func (s *Sim) countPods(sel []int, ok func(*corev1.Pod) bool) float64 {
	var on map[string]bool
	if sel != nil {
		on = map[string]bool{}
		s.fleet.each(sel, func(v nodeView) { on[v.name] = true })
	}
	n := 0
	for _, o := range s.pods.GetStore().List() {
		p := o.(*corev1.Pod)
		if (on == nil || on[p.Spec.NodeName]) && ok(p) {
			n++
		}
	}
	return float64(n)
}

// unsynced compares each running node's store with the API server: a pod
// bound to the node that it does not hold at the API server's version (its
// dispatch.PodVersion), and
// a pod it holds that the API server does not have there, count one each.
func (s *Sim) unsynced(sel []int) (int, error) {
	type apiPod struct{ uid, rv string }
	byNode := map[string][]apiPod{}
	where := map[string]string{} // uid -> node
	for _, o := range s.pods.GetStore().List() {
		p := o.(*corev1.Pod)
		if p.Spec.NodeName != "" {
			byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], apiPod{string(p.UID), dispatch.PodVersion(p)})
			where[string(p.UID)] = p.Spec.NodeName
		}
	}
	bad := 0
	_, err := s.sumNodes(sel, func(v nodeView) (int, error) {
		held, err := heldPods(v.ec.DB)
		if err != nil {
			return 0, err
		}
		for _, p := range byNode[v.name] {
			if held[p.uid] != p.rv {
				bad++
			}
		}
		for uid := range held {
			if where[uid] != v.name {
				bad++
			}
		}
		return 0, nil
	})
	return bad, err
}

// expectation is one metric compared with a value.
type expectation struct {
	name string
	m    metric
	op   string // "=", "<=", ">="
	want float64
	text string // the value as written
}

func (e expectation) holds(got float64) bool {
	switch e.op {
	case "<=":
		return got <= e.want
	case ">=":
		return got >= e.want
	}
	return got == e.want
}

func (e expectation) String() string { return e.name + e.op + e.text }

// cmdExpect checks metrics: expect pods-running=500 resync-bytes<=1000
// [within=60s] [stable=3s] [nodes=0-9]. With within, it waits until all
// hold or the time is up; with stable, they must hold that long without a
// break (a settled state, not a passing one).
func (s *Sim) cmdExpect(ctx context.Context, a *args) (string, error) {
	within, err := a.duration("within", 0)
	if err != nil {
		return "", err
	}
	stable, err := a.duration("stable", 0)
	if err != nil {
		return "", err
	}
	if stable > 0 && within < stable {
		return "", fmt.Errorf("stable=%s needs within= at least as long", stable)
	}
	sel, err := a.nodes(s, "nodes", nil)
	if err != nil {
		return "", err
	}
	var exps []expectation
	for i, x := range a.list {
		if a.used[i] {
			continue
		}
		a.used[i] = true
		e := expectation{name: x.Key, op: "="}
		if n, ok := strings.CutSuffix(x.Key, "<"); ok {
			e.name, e.op = n, "<="
		} else if n, ok := strings.CutSuffix(x.Key, ">"); ok {
			e.name, e.op = n, ">="
		}
		var ok bool
		if e.m, ok = metrics[e.name]; !ok {
			return "", fmt.Errorf("unknown metric %q (known: %s)", e.name, strings.Join(metricNames(), ", "))
		}
		if len(x.Vals) != 1 {
			return "", fmt.Errorf("%s: want one value", x.Key)
		}
		e.text = x.Vals[0]
		if e.want, err = parseValue(e.m.unit, e.text); err != nil {
			return "", fmt.Errorf("%s: %w", x.Key, err)
		}
		exps = append(exps, e)
	}
	if len(exps) == 0 {
		return "", errors.New("nothing to expect")
	}
	got := make([]float64, len(exps))
	errs := make([]error, len(exps))
	check := func() bool {
		all := true
		for i, e := range exps {
			got[i], errs[i] = e.m.read(s, sel)
			all = all && errs[i] == nil && e.holds(got[i])
		}
		return all
	}
	t0 := time.Now()
	wctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	unsettled := false // all held at the end, but not for stable
	if within > 0 {
		var since time.Time // when the metrics last began to hold
		err := poll(wctx, 250*time.Millisecond, func() bool {
			if !check() {
				since = time.Time{}
				return false
			}
			if since.IsZero() {
				since = time.Now()
			}
			return time.Since(since) >= stable
		})
		unsettled = err != nil && !since.IsZero()
	} else {
		check()
	}
	waited := time.Since(t0)
	var lines []string
	for i, e := range exps {
		switch {
		case errs[i] != nil:
			lines = append(lines, fmt.Sprintf("FAIL: %s: %v", e, errs[i]))
		case e.holds(got[i]) && unsettled:
			lines = append(lines, fmt.Sprintf("FAIL: %s held, but not for %s without a break within %s", e, stable, within))
		case e.holds(got[i]):
			lines = append(lines, "ok: "+e.String())
			s.note("expect %s: %s (after %s)", e, formatValue(e.m.unit, got[i]), roundDur(waited))
		default:
			l := fmt.Sprintf("FAIL: %s is %s, want %s%s", e.name, formatValue(e.m.unit, got[i]), e.op, e.text)
			if within > 0 {
				l += " within " + within.String()
			}
			lines = append(lines, l)
			s.mu.Lock()
			s.lastCheck = l
			s.mu.Unlock()
		}
	}
	return strings.Join(lines, "\n"), ctx.Err()
}

func metricNames() []string {
	names := make([]string, 0, len(metrics))
	for n := range metrics {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// MetricDocs describes the metrics expect knows, one line each.
func MetricDocs() string {
	var b strings.Builder
	for _, n := range metricNames() {
		fmt.Fprintf(&b, "  %-20s %s\n", n, metrics[n].doc)
	}
	return b.String()
}

func parseValue(u unit, v string) (float64, error) {
	switch u {
	case duration:
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration like 100ms", v)
		}
		return float64(d), nil
	case count:
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("%q is not an integer", v)
		}
		return float64(n), nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", v)
	}
	return f, nil
}

func formatValue(u unit, f float64) string {
	switch u {
	case duration:
		return roundDur(time.Duration(f)).String()
	case bitRate:
		return strconv.FormatFloat(f, 'f', 1, 64) + " bit/s"
	case byteSize:
		return strconv.FormatFloat(f, 'f', 0, 64) + " B"
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

// failover reads the last KillReplica's figures.
func failover(f func(Failover) float64) func(*Sim, []int) (float64, error) {
	return func(s *Sim, _ []int) (float64, error) {
		if len(s.failovers) == 0 {
			return 0, errors.New("no failover measured (kill-replica)")
		}
		return f(s.failovers[len(s.failovers)-1]), nil
	}
}
