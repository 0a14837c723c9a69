package simulator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/tether-edge/tether/cloudcore/hub"
	"github.com/tether-edge/tether/cloudcore/status"
)

// AddNodes makes n more hollow nodes, not started, and returns their
// indexes.
func (s *Sim) AddNodes(n int) []int { return s.fleet.add(n) }

// Connect starts the nodes in sel (nil: every node not running) at rate
// nodes a second (0: Config.ConnectRate), after enrolling those that are
// not (Enroll). Their links connect in the background; WaitConnected waits
// for them.
func (s *Sim) Connect(ctx context.Context, sel []int, rate float64) (started int, err error) {
	if sel == nil {
		sel = allNodes(s.fleet.size())
	}
	if rate <= 0 {
		rate = s.cfg.ConnectRate
	}
	more := 0
	s.fleet.each(sel, func(v nodeView) {
		if !v.running {
			more++
		}
	})
	if err := s.checkFileLimit(more); err != nil {
		return 0, err
	}
	if _, err := s.Enroll(ctx, sel); err != nil {
		return 0, err
	}
	if s.connectStart.IsZero() {
		s.connectStart = time.Now()
	}
	t0 := time.Now()
	for _, i := range sel {
		running := false
		s.fleet.each([]int{i}, func(v nodeView) { running = v.running })
		if running {
			continue
		}
		if err := sleepUntil(ctx, t0.Add(time.Duration(float64(started)/rate*float64(time.Second)))); err != nil {
			return started, err
		}
		if err := s.fleet.start(s.ctx, i); err != nil {
			return started, err
		}
		started++
	}
	return started, nil
}

// checkFileLimit fails if starting more nodes would run this process out
// of file descriptors: each running node holds its store and its socket
// open, and cloudcore in this process the other end of the socket.
func (s *Sim) checkFileLimit(more int) error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return nil
	}
	perNode := 2
	if s.cloudHere() {
		perNode = 3
	}
	running := int(s.countNodes(nil, func(v nodeView) bool { return v.running }))
	const reserve = 64 // informers, the API server, logs, pprof
	if need := (running+more)*perNode + reserve; uint64(need) > l.Cur {
		return fmt.Errorf("%d running nodes need about %d file descriptors (%d each and %d more), over this process's limit of %d "+
			"(RLIMIT_NOFILE; raising it needs CAP_SYS_RESOURCE): at most %d nodes here",
			running+more, need, perNode, reserve, l.Cur, (int(l.Cur)-reserve)/perNode)
	}
	return nil
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}

// ConnectResult is what WaitConnected saw.
type ConnectResult struct {
	// Nodes is the number of running nodes with a healthy link (not cut),
	// Connected how many had a session and Registered how many had a Node
	// in the API server (made when the node was enrolled) when
	// WaitConnected returned.
	Nodes, Connected, Registered int
	// ConnectTime runs from the first Connect after the previous
	// WaitConnected (once its nodes were enrolled) until every node had a
	// session.
	ConnectTime time.Duration
	// Memory is this process's memory per node afterwards.
	Memory Memory
}

// WaitConnected waits until every running node whose link is not cut has a
// session with the hub and a Node in the API server, or ctx ends; then it
// measures memory per node.
func (s *Sim) WaitConnected(ctx context.Context) (ConnectResult, error) {
	start := s.connectStart
	if start.IsZero() {
		start = time.Now()
	}
	var r ConnectResult
	err := poll(ctx, 100*time.Millisecond, func() bool {
		r.Nodes, r.Connected, r.Registered = 0, 0, 0
		s.fleet.each(nil, func(v nodeView) {
			if !v.running || v.cut {
				return
			}
			r.Nodes++
			if v.state.Connected {
				r.Connected++
			}
			if s.registered(v.name) {
				r.Registered++
			}
		})
		if r.Connected == r.Nodes && r.ConnectTime == 0 {
			r.ConnectTime = time.Since(start)
		}
		return r.Connected == r.Nodes && r.Registered == r.Nodes
	})
	if err != nil {
		return r, fmt.Errorf("wait connected: %d/%d connected, %d/%d registered: %w", r.Connected, r.Nodes, r.Registered, r.Nodes, err)
	}
	s.connectStart = time.Time{}
	if s.memBase != nil && r.Nodes > 0 {
		m := sampleMemory()
		s.memory = m.perNode(*s.memBase, s.fleet.size(), s.cloudHere())
		r.Memory = s.memory
	}
	s.connects = append(s.connects, r)
	return r, nil
}

func (s *Sim) registered(node string) bool {
	_, ok, _ := s.nodesReg.GetStore().GetByKey(node)
	return ok
}

// poll calls cond every interval until it is true or ctx ends.
func poll(ctx context.Context, interval time.Duration, cond func() bool) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Memory is this process's memory divided among the hollow nodes: what grew
// from before the first node started until after WaitConnected.
type Memory struct {
	Nodes int
	// RSSPerNode is resident memory, HeapPerNode the Go heap in use and
	// StackPerNode goroutine stacks, in bytes per node.
	RSSPerNode, HeapPerNode, StackPerNode float64
	// GoroutinesPerNode is the goroutines per node.
	GoroutinesPerNode float64
	// CloudInProcess says cloudcore ran in this process, so its share
	// (sessions, informers) is in the figures.
	CloudInProcess bool
}

func (m Memory) String() string {
	if m.Nodes == 0 {
		return "not measured"
	}
	where := "cloudcore in its own process"
	if m.CloudInProcess {
		where = "cloudcore's share included: it runs in this process"
	}
	return fmt.Sprintf("%.1f KiB RSS, %.1f KiB heap, %.1f KiB stacks, %.1f goroutines per node over %d nodes (%s)",
		m.RSSPerNode/1024, m.HeapPerNode/1024, m.StackPerNode/1024, m.GoroutinesPerNode, m.Nodes, where)
}

type memSample struct {
	rss, heap, stacks int64
	goroutines        int
}

func sampleMemory() memSample {
	heap, stacks, g := goMemory()
	ps, _ := ReadProc(0)
	return memSample{rss: ps.RSS, heap: heap, stacks: stacks, goroutines: g}
}

func (m memSample) perNode(base memSample, nodes int, cloudHere bool) Memory {
	n := float64(nodes)
	return Memory{Nodes: nodes, RSSPerNode: float64(m.rss-base.rss) / n, HeapPerNode: float64(m.heap-base.heap) / n,
		StackPerNode: float64(m.stacks-base.stacks) / n, GoroutinesPerNode: float64(m.goroutines-base.goroutines) / n,
		CloudInProcess: cloudHere}
}

// PodSpec is the pod the simulator creates: bound to its node (no
// scheduler), one container, 30s grace period so that deleting it goes
// through the edge.
func (s *Sim) podSpec(name, node string) *corev1.Pod {
	grace := int64(30)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.cfg.Name, Name: name, Labels: map[string]string{SimLabel: s.cfg.Name}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: &grace,
			AutomountServiceAccountToken:  new(bool),
			Containers:                    []corev1.Container{{Name: "main", Image: "tether.io/sim-hollow:1"}},
		},
	}
}

// createWorkers is how many create or delete calls run at once.
const createWorkers = 16

// CreatePods creates n pods at rate a second (0: as fast as the API server
// takes them), spread round-robin over the nodes in sel (nil: every node).
func (s *Sim) CreatePods(ctx context.Context, n int, rate float64, sel []int) (created int, err error) {
	if sel == nil {
		sel = allNodes(s.fleet.size())
	}
	if len(sel) == 0 {
		return 0, errors.New("create pods: no nodes")
	}
	names := make([]string, len(sel))
	for k, i := range sel {
		names[k] = s.fleet.node(i).name
	}
	first := s.podSeq
	s.podSeq += n
	return paced(ctx, n, rate, func(ctx context.Context, k int) error {
		p := s.podSpec(fmt.Sprintf("%s-p%06d", s.cfg.Name, first+k), names[k%len(names)])
		t := time.Now()
		got, err := s.client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create pod %s: %w", p.Name, err)
		}
		s.rec.created(got.UID, t, time.Now())
		return nil
	})
}

// DeletePods deletes n of the pods on the nodes in sel (nil: every node)
// that are not being deleted already (n < 0: all of them), at rate a
// second, gracefully: each goes once its node reported it stopped.
func (s *Sim) DeletePods(ctx context.Context, n int, rate float64, sel []int) (deleted int, err error) {
	var on map[string]bool
	if sel != nil {
		on = map[string]bool{}
		for _, i := range sel {
			on[s.fleet.node(i).name] = true
		}
	}
	// From the API server, not the informer, which may not have seen the
	// latest pods yet.
	list, err := s.client.CoreV1().Pods(s.cfg.Name).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, fmt.Errorf("list pods: %w", err)
	}
	var names []string
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil && (on == nil || on[p.Spec.NodeName]) {
			names = append(names, p.Name)
		}
	}
	slices.Sort(names)
	if n >= 0 && n < len(names) {
		names = names[:n]
	}
	return paced(ctx, len(names), rate, func(ctx context.Context, k int) error {
		err := s.client.CoreV1().Pods(s.cfg.Name).Delete(ctx, names[k], metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete pod %s: %w", names[k], err)
		}
		return nil
	})
}

// paced calls do(k) for k in [0, n) at rate calls a second (0: no pacing)
// with createWorkers calls at a time. It returns how many succeeded and the
// first error; it goes on after errors.
func paced(ctx context.Context, n int, rate float64, do func(ctx context.Context, k int) error) (int, error) {
	work := make(chan int)
	var (
		ok       atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range min(createWorkers, max(n, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				if err := do(ctx, k); err != nil {
					errOnce.Do(func() { firstErr = err })
					continue
				}
				ok.Add(1)
			}
		}()
	}
	t0 := time.Now()
	var err error
	for k := range n {
		if rate > 0 {
			if err = sleepUntil(ctx, t0.Add(time.Duration(float64(k)/rate*float64(time.Second)))); err != nil {
				break
			}
		}
		select {
		case work <- k:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if err != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	if err == nil {
		err = firstErr
	}
	return int(ok.Load()), err
}

// Cut cuts the links of the nodes in sel (nil: every node): their
// connections close and dials fail until Heal.
func (s *Sim) Cut(sel []int) int {
	if sel == nil {
		sel = allNodes(s.fleet.size())
	}
	for _, i := range sel {
		s.fleet.node(i).wire.setCut(true)
	}
	return len(sel)
}

// Heal heals the links of the nodes in sel (nil: every node that is cut).
func (s *Sim) Heal(sel []int) int {
	if sel == nil {
		s.fleet.each(nil, func(v nodeView) {
			if v.cut {
				sel = append(sel, v.index)
			}
		})
	}
	for _, i := range sel {
		s.fleet.node(i).wire.setCut(false)
	}
	return len(sel)
}

// RebootOffline reboots the nodes in sel with their links cut: edgecore
// stops, its store stays, and it starts again with an empty runtime (the
// machine's containers went with the reboot) and no cloud. Heal brings the
// cloud back.
func (s *Sim) RebootOffline(ctx context.Context, sel []int) error {
	for _, i := range sel {
		s.fleet.node(i).wire.setCut(true)
		if err := s.fleet.stop(i); err != nil {
			return err
		}
		if err := s.fleet.start(s.ctx, i); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// stormState is the start of a reconnect storm.
type stormState struct {
	// stopped is when the hub was stopped, starting when it was started
	// again (zero in a joined Sim), ready when it answered.
	stopped, starting, ready time.Time
	before                   map[int]int // running, uncut node -> sessions before the restart
	up, down                 int64       // wire bytes of all nodes when the hub was stopped
	dials, unanswered        int64       // connections of those nodes so far, then
	// cpu is the CPU time used so far, when the hub answered again: by
	// this process, by cloudcore's (if it runs as one) and by the machine.
	cpu cpuMark
}

// cpuMark is a reading of CPU times.
type cpuMark struct {
	sim, cloud time.Duration
	cloudPid   int
	busy, all  int64 // the machine's jiffies, /proc/stat
}

// readCPU reads the CPU times of this process, cloudcore's and the machine.
func (s *Sim) readCPU() cpuMark {
	var m cpuMark
	if ps, err := ReadProc(0); err == nil {
		m.sim = ps.CPU
	}
	if ps, err := s.CloudProc(); err == nil {
		m.cloud, m.cloudPid = ps.CPU, ps.Pid
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
		for i, v := range f[1:] {
			n, _ := strconv.ParseInt(v, 10, 64)
			m.all += n
			if i != 3 && i != 4 { // idle, iowait
				m.busy += n
			}
		}
	}
	return m
}

// Storm is a reconnect storm: the hub restarted and every node reconnected.
type Storm struct {
	// Nodes is how many running, uncut nodes had to reconnect; Resynced
	// how many had reconnected and finished their resync at the end.
	Nodes, Resynced int
	// Down is how long the hub was away: from its stop until it accepted
	// the first node again (or answered its health check, if that was
	// earlier). Took is the time from then until every node was resynced
	// (or the wait gave up), to a tenth of a second.
	Down, Took time.Duration
	// Upserts, Deletes and Bytes add up what the hub reported in each
	// node's ResyncDone: the object messages of the resyncs and their size.
	Upserts, Deletes int
	Bytes            int64
	// WireUp and WireDown are every node's link bytes (TLS records:
	// handshakes, Hello and its inventory, resync, heartbeats) from the
	// hub's stop until the end.
	WireUp, WireDown int64
	// Each is the nodes' times from Back until each was seen resynced (to
	// the 0.1 s the wait polls at), Dials the connections the hub accepted
	// from them meanwhile (the outage's and those it shed included), and
	// Unanswered those of them it closed before sending a byte (its accept
	// limits, before the TLS handshake).
	Each              Latency
	Dials, Unanswered int64
	// APIReady is how long after Back every edge Node in the API (the other
	// Sims' too) was Ready with its Lease renewed since Back: what
	// Kubernetes sees of the fleet's return (WaitReady; 0: not measured);
	// APIConditions and APILeases when the first of the two was true of
	// every Node. APINodes is how many Nodes that was.
	APIReady, APIConditions, APILeases time.Duration
	APINodes                           int
	// Hub is the restarted hub's counters at the end, when cloudcore runs
	// in this process.
	Hub *hub.StatsSnapshot
	// Back and End are the moments Took runs between, on the machine's
	// clock, to join the storms of Sims in other processes that share the
	// hub.
	Back, End time.Time
	// SimCPU and CloudCPU are the CPU time this process and cloudcore's
	// (when it runs as one) used from the hub's return to End; Busy the
	// share of the machine's CPU time busy meanwhile (all processes, 1 =
	// every core busy throughout) and Cores its cores. In a Sim that
	// joined another's hub they run from MarkStorm (the outage included),
	// and CloudCPU is not known.
	SimCPU, CloudCPU time.Duration
	Busy             float64
	Cores            int
}

func (st Storm) String() string {
	s := fmt.Sprintf("%d/%d nodes resynced in %s after %s down (back %s, end %s); each node %s; %d connections (%d closed unanswered); resync %d upserts %d deletes %d bytes; link %d B up %d B down",
		st.Resynced, st.Nodes, roundDur(st.Took), roundDur(st.Down), st.Back.Format("15:04:05.000"), st.End.Format("15:04:05.000"),
		st.Each, st.Dials, st.Unanswered, st.Upserts, st.Deletes, st.Bytes, st.WireUp, st.WireDown)
	if st.APIReady > 0 {
		s += fmt.Sprintf("; in the API every Node (%d) Ready with its Lease renewed %s after the return (Ready %s, Leases %s)",
			st.APINodes, roundDur(st.APIReady), roundDur(st.APIConditions), roundDur(st.APILeases))
	}
	if st.Hub != nil {
		s += fmt.Sprintf("; hub %d resync messages %d resync bytes %d TLS resumed %d shed", st.Hub.ResyncMessages, st.Hub.ResyncBytes,
			st.Hub.TLSResumed, st.Hub.Shed)
	}
	if st.Cores > 0 {
		cloud := "cloudcore " + roundDur(st.CloudCPU).String()
		if st.CloudCPU == 0 {
			cloud = "cloudcore not here"
		}
		s += fmt.Sprintf("; CPU meanwhile: %s, simulator %s, machine %.0f%% busy of %d cores",
			cloud, roundDur(st.SimCPU), st.Busy*100, st.Cores)
	}
	return s
}

// RestartHub stops cloudcore, waits down, and starts it again; every
// connected node loses its session. WaitResynced measures the storm that
// follows.
func (s *Sim) RestartHub(ctx context.Context, down time.Duration) error {
	if _, joined := s.cloud.(*joinedCloud); joined {
		return fmt.Errorf("restart-hub: %w", errJoined)
	}
	st := s.markStorm()
	if err := s.cloudStop(); err != nil {
		return err
	}
	if err := sleepUntil(ctx, time.Now().Add(down)); err != nil {
		return err
	}
	st.starting = time.Now()
	if err := s.cloudStart(ctx); err != nil {
		return err
	}
	st.ready = time.Now()
	st.cpu = s.readCPU()
	return nil
}

// MarkStorm is RestartHub for a Sim that joined another's hub (Config.Hub):
// the other Sim is about to restart it. WaitResynced then measures this
// Sim's nodes' storm, from the first of them that the hub accepts again.
func (s *Sim) MarkStorm() { s.markStorm().cpu = s.readCPU() }

// markStorm notes each node's sessions and the links' bytes now: the start
// of a storm.
func (s *Sim) markStorm() *stormState {
	st := &stormState{before: map[int]int{}}
	s.fleet.each(nil, func(v nodeView) {
		if v.running && !v.cut {
			st.before[v.index] = v.state.Sessions
			st.dials += v.dials
			st.unanswered += v.unanswered
		}
	})
	st.up, st.down = s.wireTotals()
	st.stopped = time.Now()
	s.storm = st
	return st
}

// WireTotals returns every node's link bytes so far (TLS records), up
// (edge to cloud) and down.
func (s *Sim) WireTotals() (up, down int64) { return s.wireTotals() }

func (s *Sim) wireTotals() (up, down int64) {
	s.fleet.each(nil, func(v nodeView) { up += v.up; down += v.down })
	return up, down
}

// WaitResynced waits until every node that was connected before the last
// RestartHub (or MarkStorm), and still runs with its link up, has a new
// session whose resync is done, or ctx ends.
func (s *Sim) WaitResynced(ctx context.Context) (Storm, error) {
	st := s.storm
	_, joined := s.cloud.(*joinedCloud)
	if st == nil || st.ready.IsZero() && !joined {
		return Storm{}, errors.New("wait resynced: no restart-hub before")
	}
	var (
		r Storm
		// The hub's return: the first node it accepted, or its answering
		// the health check if earlier. A joined Sim knows only the former.
		back = st.ready
	)
	if back.IsZero() {
		back = time.Now().Add(24 * time.Hour)
	}
	sel := make([]int, 0, len(st.before))
	for i := range st.before {
		sel = append(sel, i)
	}
	seen := make(map[int]time.Time, len(sel)) // node -> when first seen resynced
	count := func() bool {
		r = Storm{}
		now := time.Now()
		s.fleet.each(sel, func(v nodeView) {
			// A node that reached the old hub while it stopped is not the
			// new one's return.
			if v.connectedAt.After(st.stopped) && v.connectedAt.After(st.starting) && v.connectedAt.Before(back) {
				back = v.connectedAt
			}
			if !v.running || v.cut {
				return
			}
			r.Nodes++
			if v.state.Connected && v.state.Sessions > st.before[v.index] && v.state.LastResync != nil {
				r.Resynced++
				if _, ok := seen[v.index]; !ok {
					seen[v.index] = now
				}
				r.Upserts += int(v.state.LastResync.Upserts)
				r.Deletes += int(v.state.LastResync.Deletes)
				r.Bytes += int64(v.state.LastResync.Bytes)
			}
		})
		return r.Resynced == r.Nodes
	}
	err := poll(ctx, 100*time.Millisecond, count)
	r.End = time.Now()
	if back.After(r.End) { // no node came back
		back = r.End
	}
	r.Back, r.Down, r.Took = back, back.Sub(st.stopped), r.End.Sub(back)
	each := make([]time.Duration, 0, len(seen))
	for _, t := range seen {
		each = append(each, max(t.Sub(back), 0))
	}
	r.Each = Summarize(each)
	s.fleet.each(sel, func(v nodeView) { r.Dials += v.dials; r.Unanswered += v.unanswered })
	r.Dials -= st.dials
	r.Unanswered -= st.unanswered
	up, down := s.wireTotals()
	r.WireUp, r.WireDown = up-st.up, down-st.down
	if !st.ready.IsZero() || joined {
		end := s.readCPU()
		r.SimCPU, r.Cores = end.sim-st.cpu.sim, runtime.NumCPU()
		if end.cloudPid == st.cpu.cloudPid {
			r.CloudCPU = end.cloud - st.cpu.cloud
		}
		if d := end.all - st.cpu.all; d > 0 {
			r.Busy = float64(end.busy-st.cpu.busy) / float64(d)
		}
	}
	if hs, ok := s.HubStats(); ok {
		r.Hub = &hs
	}
	s.storms = append(s.storms, r)
	if err != nil {
		return r, fmt.Errorf("wait resynced: %d/%d: %w", r.Resynced, r.Nodes, err)
	}
	return r, nil
}

// WaitReady waits until every edge Node in the API (those of other Sims
// sharing the cluster too) is Ready with its Lease renewed, or ctx ends.
// After a storm not measured so far (WaitResynced), the Lease must have
// been renewed since the storm's Back, and the time from Back is recorded
// in the storm; otherwise within the last 40 s (the Lease's duration): the
// fleet is registered and running, as before a storm is worth measuring.
// It watches Nodes and Leases and looks every second.
func (s *Sim) WaitReady(ctx context.Context) (Storm, error) {
	// ref is when the durations run from: the storm's Back, or now.
	st, ref, what := &Storm{}, time.Now(), "the wait began"
	since := func() time.Time { return time.Now().Add(-40 * time.Second) }
	if n := len(s.storms); n > 0 && s.storms[n-1].APIReady == 0 {
		st, ref, what = &s.storms[n-1], s.storms[n-1].Back, "the hub's return"
		since = func() time.Time { return ref.Truncate(time.Microsecond) }
	}
	// Watched, not listed at every poll: a list of 10,000 Nodes a second
	// would cost the API server more than the fleet's return does.
	rc := rest.CopyConfig(s.rest)
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return *st, fmt.Errorf("wait ready: %w", err)
	}
	nodeInf := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = status.EdgeRoleLabel
	})).Core().V1().Nodes().Informer()
	leaseInf := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(corev1.NamespaceNodeLease)).Coordination().V1().Leases().Informer()
	ictx, stop := context.WithCancel(ctx)
	defer stop()
	go nodeInf.Run(ictx.Done())
	go leaseInf.Run(ictx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), nodeInf.HasSynced, leaseInf.HasSynced) {
		return *st, fmt.Errorf("wait ready: Nodes and Leases not listed: %w", ctx.Err())
	}
	var ready, total int
	var noted time.Time
	err = poll(ctx, time.Second, func() bool {
		renewed, after := map[string]bool{}, since()
		for _, o := range leaseInf.GetStore().List() {
			l := o.(*coordinationv1.Lease)
			if rt := l.Spec.RenewTime; rt != nil && !rt.Time.Before(after) {
				renewed[l.Name] = true
			}
		}
		var nodes []*corev1.Node
		for _, o := range nodeInf.GetStore().List() {
			nodes = append(nodes, o.(*corev1.Node))
		}
		var conds, leased int
		ready, total = 0, len(nodes)
		for _, n := range nodes {
			cond := false
			for _, c := range n.Status.Conditions {
				cond = cond || c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
			}
			if cond {
				conds++
			}
			if renewed[n.Name] {
				leased++
			}
			if cond && renewed[n.Name] {
				ready++
			}
		}
		if time.Since(noted) >= 10*time.Second {
			s.note("in the API %s after %s: %d/%d Nodes Ready, %d with their Lease renewed",
				roundDur(time.Since(ref)), what, conds, total, leased)
			noted = time.Now()
		}
		if total > 0 && conds == total && st.APIConditions == 0 {
			st.APIConditions = time.Since(ref)
		}
		if total > 0 && leased == total && st.APILeases == 0 {
			st.APILeases = time.Since(ref)
		}
		return total > 0 && ready == total
	})
	if err != nil {
		return *st, fmt.Errorf("wait ready: %d/%d Nodes Ready with their Lease renewed: %w", ready, total, err)
	}
	st.APIReady, st.APINodes = time.Since(ref), total
	return *st, nil
}

// Bandwidth is link traffic per node over a window.
type Bandwidth struct {
	// Nodes is how many nodes were connected at both ends of the window.
	Nodes  int
	Window time.Duration
	// UpBitsPerSecond (edge to cloud) and DownBitsPerSecond are per node,
	// counted as TLS records (websocket frames plus TLS overhead; no TCP/IP
	// headers).
	UpBitsPerSecond, DownBitsPerSecond float64
}

func (b Bandwidth) String() string {
	return fmt.Sprintf("%.1f bit/s up, %.1f bit/s down per node (%d nodes, %s)",
		b.UpBitsPerSecond, b.DownBitsPerSecond, b.Nodes, roundDur(b.Window))
}

// Idle measures the traffic of the connected nodes over d, with nothing
// changing (the caller makes sure of that).
func (s *Sim) Idle(ctx context.Context, d time.Duration) (Bandwidth, error) {
	type counts struct{ up, down int64 }
	snap := func() map[int]counts {
		m := map[int]counts{}
		s.fleet.each(nil, func(v nodeView) {
			if v.running && v.state.Connected {
				m[v.index] = counts{v.up, v.down}
			}
		})
		return m
	}
	t0, a := time.Now(), snap()
	if err := sleepUntil(ctx, t0.Add(d)); err != nil {
		return Bandwidth{}, err
	}
	t1, b := time.Now(), snap()
	var r Bandwidth
	r.Window = t1.Sub(t0)
	var up, down int64
	for i, x := range b {
		if y, ok := a[i]; ok {
			r.Nodes++
			up += x.up - y.up
			down += x.down - y.down
		}
	}
	if r.Nodes > 0 {
		secs := r.Window.Seconds()
		r.UpBitsPerSecond = float64(up*8) / secs / float64(r.Nodes)
		r.DownBitsPerSecond = float64(down*8) / secs / float64(r.Nodes)
	}
	s.idles = append(s.idles, r)
	return r, nil
}

// Dispatch summarizes the pods' dispatch times: from the pod being bound to
// a node (the simulator's informer seeing it so, or, for a pod created
// bound, its create call returning, whichever came first) to the node
// committing it.
func (s *Sim) Dispatch() Latency {
	d, _, _ := s.rec.samples()
	return Summarize(d)
}

// DispatchSamples returns the dispatch times themselves, and how many
// pods the edge committed before the simulator knew them bound (counted as
// zero).
func (s *Sim) DispatchSamples() (d []time.Duration, early int) {
	d, _, early = s.rec.samples()
	return d, early
}

// CreateToRunning summarizes the pods' times from the create call to the
// informer seeing them Running.
func (s *Sim) CreateToRunning() Latency {
	_, r, _ := s.rec.samples()
	return Summarize(r)
}

// CreateToRunningSamples returns those times themselves.
func (s *Sim) CreateToRunningSamples() []time.Duration {
	_, r, _ := s.rec.samples()
	return r
}

// ResetLatencies forgets the pods seen so far, so that the next figures
// cover only what follows.
func (s *Sim) ResetLatencies() { s.rec.reset() }

// Memory is the memory per node measured at the last WaitConnected.
func (s *Sim) Memory() Memory { return s.memory }

func allNodes(n int) []int {
	sel := make([]int, n)
	for i := range sel {
		sel[i] = i
	}
	return sel
}
