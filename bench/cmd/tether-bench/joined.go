package main

// A node count past what one process holds (its open file limit: two files
// a hollow node) spans simulator processes. The suite's own Sim, which runs
// cloudcore, holds the first nodes; joined processes hold the rest, each a
// simulator.Sim joined to the first one's hub (simulator.Config.Hub). A
// joined process is this binary run as `tether-bench joined-sim`: it reads
// its joinedConfig and then one joinedRequest a line (JSON) on stdin, and
// answers each with one joinedReply line on stdout; its progress goes to
// stderr, which is its log. End of input ends it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/tether-edge/tether/childproc"
	"github.com/tether-edge/tether/simulator"
	"github.com/tether-edge/tether/simulator/netns"
)

// joinedCommand is the first argument that makes this binary a joined
// simulator process.
const joinedCommand = "joined-sim"

// joinedConfig configures a joined process's Sim.
type joinedConfig struct {
	// Name is the Sim's name (its nodes' prefix and namespace); Dir holds
	// its nodes' stores.
	Name, Dir  string
	Kubeconfig string
	// Hub is the hub to join and the Secret of its CA, which the process
	// enrolls its nodes with.
	Hub simulator.HubConfig
	// Netns, if set, names the network namespace the nodes dial from.
	Netns string
	// Warnings is the file for the nodes' warnings.
	Warnings string
}

// The requests' operations.
const (
	opEnroll        = "enroll"         // to Nodes nodes, enrolled
	opGrow          = "grow"           // to Nodes nodes, started at Rate a second
	opWaitConnected = "wait-connected" // within Timeout
	opIdle          = "idle"           // traffic over Window
	opMarkStorm     = "mark-storm"     // the hub is about to restart
	opWaitResynced  = "wait-resynced"  // within Timeout
)

type joinedRequest struct {
	Op      string        `json:"op"`
	Nodes   int           `json:"nodes,omitempty"`
	Rate    float64       `json:"rate,omitempty"`
	Window  time.Duration `json:"window,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
}

// joinedReply is the answer to the configuration (Error only) or to a
// request: its figures, with Error when the operation failed (the figures
// then say how far it got).
type joinedReply struct {
	Error     string                   `json:"error,omitempty"`
	Enroll    *simulator.Enrollment    `json:"enroll,omitempty"`
	Connect   *simulator.ConnectResult `json:"connect,omitempty"`
	Bandwidth *simulator.Bandwidth     `json:"bandwidth,omitempty"`
	Storm     *simulator.Storm         `json:"storm,omitempty"`
}

// runJoined is the main of a joined process.
func runJoined(in io.Reader, out io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dec, enc := json.NewDecoder(in), json.NewEncoder(out)
	var cfg joinedConfig
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("joined-sim: configuration: %w", err)
	}
	sim, err := newJoinedSim(ctx, cfg)
	if err != nil {
		enc.Encode(joinedReply{Error: err.Error()})
		return err
	}
	defer sim.Close()
	if err := enc.Encode(joinedReply{}); err != nil {
		return err
	}
	// Requests are read on a goroutine of their own, so that a signal
	// ends the process while it waits for one.
	reqs := make(chan joinedRequest)
	readErr := make(chan error, 1)
	go func() {
		for {
			var r joinedRequest
			if err := dec.Decode(&r); err != nil {
				readErr <- err
				return
			}
			reqs <- r
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("joined-sim: request: %w", err)
		case r := <-reqs:
			if err := enc.Encode(serveJoined(ctx, sim, r)); err != nil {
				return err
			}
		}
	}
}

func newJoinedSim(ctx context.Context, cfg joinedConfig) (*simulator.Sim, error) {
	warnings, err := os.Create(cfg.Warnings)
	if err != nil {
		return nil, err
	}
	scfg := simulator.Config{
		Name:             cfg.Name,
		Dir:              cfg.Dir,
		Kubeconfig:       cfg.Kubeconfig,
		Hub:              &cfg.Hub,
		Progress:         os.Stderr,
		ProgressInterval: 10 * time.Second,
		Log:              slog.NewTextHandler(warnings, &slog.HandlerOptions{Level: slog.LevelWarn}),
	}
	if cfg.Netns != "" {
		ns, err := netns.Lookup(cfg.Netns)
		if err != nil {
			return nil, err
		}
		scfg.NodeNamespace = ns
	}
	return simulator.New(ctx, scfg)
}

// serveJoined carries out one request.
func serveJoined(ctx context.Context, sim *simulator.Sim, r joinedRequest) joinedReply {
	var (
		rep joinedReply
		err error
	)
	switch r.Op {
	case opEnroll:
		e, eerr := enrollTo(ctx, sim, r.Nodes)
		rep.Enroll, err = &e, eerr
	case opGrow:
		err = growTo(ctx, sim, r.Nodes, r.Rate)
	case opWaitConnected:
		tctx, cancel := context.WithTimeout(ctx, r.Timeout)
		c, werr := sim.WaitConnected(tctx)
		cancel()
		rep.Connect, err = &c, werr
	case opIdle:
		b, ierr := sim.Idle(ctx, r.Window)
		rep.Bandwidth, err = &b, ierr
	case opMarkStorm:
		sim.MarkStorm()
	case opWaitResynced:
		tctx, cancel := context.WithTimeout(ctx, r.Timeout)
		st, werr := sim.WaitResynced(tctx)
		cancel()
		rep.Storm, err = &st, werr
	default:
		err = fmt.Errorf("unknown operation %q", r.Op)
	}
	if err != nil {
		rep.Error = err.Error()
	}
	return rep
}

// enrollTo brings sim to n nodes and enrolls those that are not.
func enrollTo(ctx context.Context, sim *simulator.Sim, n int) (simulator.Enrollment, error) {
	if add := n - sim.Nodes(); add > 0 {
		sim.AddNodes(add)
	}
	return sim.Enroll(ctx, nil)
}

// growTo brings sim to n nodes and starts those that do not run, at rate
// a second (enrolling those that are not enrolled first).
func growTo(ctx context.Context, sim *simulator.Sim, n int, rate float64) error {
	if add := n - sim.Nodes(); add > 0 {
		sim.AddNodes(add)
	}
	_, err := sim.Connect(ctx, nil, rate)
	return err
}

// part is the share of the fleet one simulator process holds.
type part interface {
	// enroll brings the part to n nodes and enrolls them.
	enroll(ctx context.Context, n int) (simulator.Enrollment, error)
	// grow brings the part to n nodes, started at rate a second.
	grow(ctx context.Context, n int, rate float64) error
	waitConnected(ctx context.Context, timeout time.Duration) (simulator.ConnectResult, error)
	idle(ctx context.Context, window time.Duration) (simulator.Bandwidth, error)
	waitResynced(ctx context.Context, timeout time.Duration) (simulator.Storm, error)
}

// localPart is the suite's own Sim.
type localPart struct{ sim *simulator.Sim }

func (l localPart) enroll(ctx context.Context, n int) (simulator.Enrollment, error) {
	return enrollTo(ctx, l.sim, n)
}

func (l localPart) grow(ctx context.Context, n int, rate float64) error {
	return growTo(ctx, l.sim, n, rate)
}

func (l localPart) waitConnected(ctx context.Context, timeout time.Duration) (simulator.ConnectResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return l.sim.WaitConnected(ctx)
}

func (l localPart) idle(ctx context.Context, window time.Duration) (simulator.Bandwidth, error) {
	return l.sim.Idle(ctx, window)
}

func (l localPart) waitResynced(ctx context.Context, timeout time.Duration) (simulator.Storm, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return l.sim.WaitResynced(ctx)
}

// joinedProcess is a joined simulator process, driven over its stdin and
// stdout. Its methods are called by one goroutine at a time.
type joinedProcess struct {
	name    string
	proc    *childproc.Process
	in      *os.File // its stdin
	enc     *json.Encoder
	replies chan joinedReply // closed when its stdout ends
	// broken is set once the process is out of step (a reply not waited
	// for) or gone: every later call fails with it.
	broken error
}

// startJoined starts bin as a joined process with cfg, its log in logPath,
// and waits until its Sim runs.
func startJoined(ctx context.Context, bin string, cfg joinedConfig, logPath string) (*joinedProcess, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	cmd := exec.Command(bin, joinedCommand)
	cmd.Stdin, cmd.Stdout = inR, outW
	p, err := childproc.Start(cmd, childproc.Options{Log: logPath})
	// The child holds its ends now.
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	j := &joinedProcess{name: cfg.Name, proc: p, in: inW, enc: json.NewEncoder(inW), replies: make(chan joinedReply)}
	go func() {
		defer close(j.replies)
		defer outR.Close()
		dec := json.NewDecoder(outR)
		for {
			var r joinedReply
			if dec.Decode(&r) != nil {
				return
			}
			j.replies <- r
		}
	}()
	if err := j.enc.Encode(cfg); err != nil {
		j.close()
		return nil, fmt.Errorf("joined process %s: %w", cfg.Name, err)
	}
	if _, err := j.reply(ctx); err != nil {
		j.close()
		return nil, err
	}
	return j, nil
}

// call sends r and waits for its reply; the reply's figures come back with
// its error.
func (j *joinedProcess) call(ctx context.Context, r joinedRequest) (joinedReply, error) {
	if j.broken != nil {
		return joinedReply{}, j.broken
	}
	if err := j.enc.Encode(r); err != nil {
		j.broken = fmt.Errorf("joined process %s: %w", j.name, err)
		return joinedReply{}, j.broken
	}
	return j.reply(ctx)
}

func (j *joinedProcess) reply(ctx context.Context) (joinedReply, error) {
	select {
	case rep, ok := <-j.replies:
		if !ok {
			<-j.proc.Done()
			j.broken = fmt.Errorf("joined process %s exited (%v); see %s", j.name, j.proc.Err(), j.proc.Log())
			return rep, j.broken
		}
		if rep.Error != "" {
			return rep, fmt.Errorf("joined process %s: %s", j.name, rep.Error)
		}
		return rep, nil
	case <-ctx.Done():
		j.broken = fmt.Errorf("joined process %s: no reply: %w", j.name, ctx.Err())
		return joinedReply{}, j.broken
	}
}

// slack is what a joined process's reply may take past the time its
// operation was given.
const slack = time.Minute

// enrollTimeout bounds a joined process's enrollment.
const enrollTimeout = 10 * time.Minute

func (j *joinedProcess) enroll(ctx context.Context, n int) (simulator.Enrollment, error) {
	return ask(ctx, j, joinedRequest{Op: opEnroll, Nodes: n}, enrollTimeout,
		func(r joinedReply) *simulator.Enrollment { return r.Enroll })
}

func (j *joinedProcess) grow(ctx context.Context, n int, rate float64) error {
	_, err := j.call(ctx, joinedRequest{Op: opGrow, Nodes: n, Rate: rate})
	return err
}

// ask sends r, whose operation takes up to d, and returns the figure get
// takes from the reply.
func ask[T any](ctx context.Context, j *joinedProcess, r joinedRequest, d time.Duration, get func(joinedReply) *T) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d+slack)
	defer cancel()
	rep, err := j.call(ctx, r)
	var v T
	if p := get(rep); p != nil {
		v = *p
	}
	return v, err
}

func (j *joinedProcess) waitConnected(ctx context.Context, timeout time.Duration) (simulator.ConnectResult, error) {
	return ask(ctx, j, joinedRequest{Op: opWaitConnected, Timeout: timeout}, timeout,
		func(r joinedReply) *simulator.ConnectResult { return r.Connect })
}

func (j *joinedProcess) idle(ctx context.Context, window time.Duration) (simulator.Bandwidth, error) {
	return ask(ctx, j, joinedRequest{Op: opIdle, Window: window}, window,
		func(r joinedReply) *simulator.Bandwidth { return r.Bandwidth })
}

func (j *joinedProcess) markStorm(ctx context.Context) error {
	_, err := j.call(ctx, joinedRequest{Op: opMarkStorm})
	return err
}

func (j *joinedProcess) waitResynced(ctx context.Context, timeout time.Duration) (simulator.Storm, error) {
	return ask(ctx, j, joinedRequest{Op: opWaitResynced, Timeout: timeout}, timeout,
		func(r joinedReply) *simulator.Storm { return r.Storm })
}

// close ends the process's input, which makes it close its Sim (stopping
// its nodes, removing them and its namespace from the API server) and
// exit; after two minutes it is stopped.
func (j *joinedProcess) close() error {
	j.in.Close()
	select {
	case <-j.proc.Done():
	case <-time.After(2 * time.Minute):
	}
	j.proc.Stop(20 * time.Second)
	if err := j.proc.Err(); err != nil {
		return fmt.Errorf("joined process %s: %w; see %s", j.name, err, j.proc.Log())
	}
	return nil
}

// fleet is the hollow nodes of the suite across simulator processes: the
// first perProcess in the suite's own Sim (parts[0]), each next perProcess
// in a joined process, started when a node count first needs it.
type fleet struct {
	sim        *simulator.Sim
	parts      []part
	perProcess int
	// addPart starts the i-th part (from 1), a joined process.
	addPart func(ctx context.Context, i int) (part, error)
}

// share is how many of n nodes part i holds.
func share(n, perProcess, i int) int {
	return min(max(n-i*perProcess, 0), perProcess)
}

// processes is how many processes n nodes take.
func processes(n, perProcess int) int { return (n + perProcess - 1) / perProcess }

// part returns part i, starting it (a joined process) if it is the next.
func (f *fleet) part(ctx context.Context, i int) (part, error) {
	if i == len(f.parts) {
		p, err := f.addPart(ctx, i)
		if err != nil {
			return nil, fmt.Errorf("joined process %d: %w", i, err)
		}
		f.parts = append(f.parts, p)
	}
	return f.parts[i], nil
}

// enroll brings the fleet to n nodes, all enrolled, starting joined
// processes as needed. The parts enroll one after the other: the figures
// add up to the time n nodes took, with one process's workers at a time.
func (f *fleet) enroll(ctx context.Context, n int) (simulator.Enrollment, error) {
	var e simulator.Enrollment
	for i := range processes(n, f.perProcess) {
		p, err := f.part(ctx, i)
		if err != nil {
			return e, err
		}
		pe, err := p.enroll(ctx, share(n, f.perProcess, i))
		e.Nodes += pe.Nodes
		e.Took += pe.Took
		if err != nil {
			return e, err
		}
	}
	return e, nil
}

// grow brings the fleet to n nodes, starting joined processes as needed,
// one part after the other so that nodes start at rate a second in all.
func (f *fleet) grow(ctx context.Context, n int, rate float64) error {
	for i := range processes(n, f.perProcess) {
		p, err := f.part(ctx, i)
		if err != nil {
			return err
		}
		if err := p.grow(ctx, share(n, f.perProcess, i), rate); err != nil {
			return err
		}
	}
	return nil
}

// each runs do on every part at once and joins their errors.
func (f *fleet) each(do func(i int, p part) error) error {
	errs := make([]error, len(f.parts))
	var wg sync.WaitGroup
	for i, p := range f.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = do(i, p)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitConnected waits for every part's nodes: the nodes and connected
// counts add up, the time is the longest part's.
func (f *fleet) waitConnected(ctx context.Context, timeout time.Duration) (simulator.ConnectResult, error) {
	rs := make([]simulator.ConnectResult, len(f.parts))
	err := f.each(func(i int, p part) (err error) {
		rs[i], err = p.waitConnected(ctx, timeout)
		return err
	})
	var r simulator.ConnectResult
	for _, x := range rs {
		r.Nodes += x.Nodes
		r.Connected += x.Connected
		r.Registered += x.Registered
		r.ConnectTime = max(r.ConnectTime, x.ConnectTime)
	}
	return r, err
}

// idle measures every part over the same window: per-node figures
// weighted by the parts' nodes.
func (f *fleet) idle(ctx context.Context, window time.Duration) (simulator.Bandwidth, error) {
	bs := make([]simulator.Bandwidth, len(f.parts))
	err := f.each(func(i int, p part) (err error) {
		bs[i], err = p.idle(ctx, window)
		return err
	})
	var b simulator.Bandwidth
	for _, x := range bs {
		b.Nodes += x.Nodes
		b.Window = max(b.Window, x.Window)
		b.UpBitsPerSecond += x.UpBitsPerSecond * float64(x.Nodes)
		b.DownBitsPerSecond += x.DownBitsPerSecond * float64(x.Nodes)
	}
	if b.Nodes > 0 {
		b.UpBitsPerSecond /= float64(b.Nodes)
		b.DownBitsPerSecond /= float64(b.Nodes)
	}
	return b, err
}

// markStorm tells the joined processes that the hub is about to restart
// (the suite's own Sim restarts it).
func (f *fleet) markStorm(ctx context.Context) error {
	for _, p := range f.parts {
		if j, ok := p.(*joinedProcess); ok {
			if err := j.markStorm(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// waitResynced waits up to timeout for every part's nodes to resync after
// the hub's restart: the storm runs from the first node any part saw
// accepted again to the last part's end.
func (f *fleet) waitResynced(ctx context.Context, timeout time.Duration) (simulator.Storm, error) {
	ss := make([]simulator.Storm, len(f.parts))
	err := f.each(func(i int, p part) (err error) {
		ss[i], err = p.waitResynced(ctx, timeout)
		return err
	})
	return joinStorms(ss), err
}

// joinStorms adds up the parts' storms; the first is the one that
// restarted the hub.
func joinStorms(ss []simulator.Storm) simulator.Storm {
	var st simulator.Storm
	for i, x := range ss {
		st.Nodes += x.Nodes
		st.Resynced += x.Resynced
		st.Upserts += x.Upserts
		st.Deletes += x.Deletes
		st.Bytes += x.Bytes
		st.WireUp += x.WireUp
		st.WireDown += x.WireDown
		if i == 0 {
			st.Hub = x.Hub
		}
		if x.Back.IsZero() {
			continue
		}
		if st.Back.IsZero() || x.Back.Before(st.Back) {
			st.Back = x.Back
		}
		if x.End.After(st.End) {
			st.End = x.End
		}
	}
	if len(ss) > 0 {
		stopped := ss[0].Back.Add(-ss[0].Down) // the hub's stop
		st.Down, st.Took = st.Back.Sub(stopped), st.End.Sub(st.Back)
	}
	return st
}

// close ends the joined processes.
func (f *fleet) close() error {
	var errs []error
	for _, p := range f.parts {
		if j, ok := p.(*joinedProcess); ok {
			errs = append(errs, j.close())
		}
	}
	return errors.Join(errs...)
}

// joinedDir is where joined process i keeps its files.
func joinedDir(simDir string, i int) string {
	return filepath.Join(simDir, fmt.Sprintf("joined-%d", i))
}
