package simulator

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// note writes a measurement or event of the scenario to Progress.
func (s *Sim) note(format string, a ...any) {
	if s.cfg.Progress == nil {
		return
	}
	s.writeLine(fmt.Sprintf(format, a...))
}

func (s *Sim) writeLine(l string) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	fmt.Fprintf(s.cfg.Progress, "[%6s] %s\n", time.Since(s.start).Round(time.Second), l)
}

// startProgress writes a progress line every interval until the returned
// function is called.
func (s *Sim) startProgress(w io.Writer, every time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		p := &progress{s: s}
		for {
			select {
			case <-done:
				return
			case <-t.C:
				s.writeLine(p.line())
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// progress builds progress lines; it remembers the last totals for rates.
type progress struct {
	s            *Sim
	at           time.Time
	up, down     int64
	cloudCPU     time.Duration
	cloudPid     int
	lastCloudCPU time.Time
}

func (p *progress) line() string {
	s := p.s
	var made, running, connected, cut int
	var up, down int64
	s.fleet.each(nil, func(v nodeView) {
		made++
		if v.running {
			running++
		}
		if v.state.Connected {
			connected++
		}
		if v.cut {
			cut++
		}
		up += v.up
		down += v.down
	})
	registered := len(s.nodesReg.GetStore().ListKeys())
	now := time.Now()
	var b strings.Builder
	fmt.Fprintf(&b, "nodes %d: %d up, %d connected, %d registered", made, running, connected, registered)
	if cut > 0 {
		fmt.Fprintf(&b, ", %d cut", cut)
	}
	created, _, committed, runningPods := s.rec.counts()
	inAPI, terminating := 0, 0
	for _, k := range s.pods.GetStore().List() {
		inAPI++
		if podTerminating(k) {
			terminating++
		}
	}
	fmt.Fprintf(&b, " | pods %d in API (%d deleting), %d created, %d reached an edge, %d seen Running",
		inAPI, terminating, created, committed, runningPods)
	fmt.Fprintf(&b, " | warn %d err %d", s.logs.warns.Load(), s.logs.errors.Load())
	if f := s.fleet.failed.Load(); f > 0 {
		fmt.Fprintf(&b, ", %d nodes failed", f)
	}
	if !p.at.IsZero() {
		secs := now.Sub(p.at).Seconds()
		fmt.Fprintf(&b, " | link up %s/s down %s/s", bytesIEC(float64(up-p.up)/secs), bytesIEC(float64(down-p.down)/secs))
	}
	p.at, p.up, p.down = now, up, down
	if st, ok := s.HubStats(); ok {
		fmt.Fprintf(&b, " | hub %d sessions, %d resyncs, %d object msgs", st.Sessions, st.Resyncs, st.ObjectMessages)
	}
	if pid := s.CloudPid(); pid != 0 {
		if ps, err := ReadProc(pid); err == nil {
			fmt.Fprintf(&b, " | cloudcore %s", bytesIEC(float64(ps.RSS)))
			if pid == p.cloudPid && !p.lastCloudCPU.IsZero() {
				fmt.Fprintf(&b, " %.2f cores", float64(ps.CPU-p.cloudCPU)/float64(now.Sub(p.lastCloudCPU)))
			}
			p.cloudPid, p.cloudCPU, p.lastCloudCPU = pid, ps.CPU, now
		}
	}
	if ps, err := ReadProc(0); err == nil {
		fmt.Fprintf(&b, " | sim %s", bytesIEC(float64(ps.RSS)))
	}
	if e := s.logs.last(); e != "" {
		fmt.Fprintf(&b, " | last error: %.160s", e)
	}
	return b.String()
}

func podTerminating(o any) bool {
	p, ok := o.(*corev1.Pod)
	return ok && p.DeletionTimestamp != nil
}

func bytesIEC(f float64) string {
	switch {
	case f >= 1<<30:
		return fmt.Sprintf("%.2f GiB", f/(1<<30))
	case f >= 1<<20:
		return fmt.Sprintf("%.1f MiB", f/(1<<20))
	case f >= 1<<10:
		return fmt.Sprintf("%.1f KiB", f/(1<<10))
	}
	return fmt.Sprintf("%.0f B", f)
}

// Summary describes the run so far: nodes, the measurements taken, the
// hub's or the cloudcore process's figures, errors.
func (s *Sim) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "summary of %s after %s:\n", s.cfg.Name, time.Since(s.start).Round(time.Second))
	var made, running, connected int
	s.fleet.each(nil, func(v nodeView) {
		made++
		if v.running {
			running++
		}
		if v.state.Connected {
			connected++
		}
	})
	fmt.Fprintf(&b, "  nodes: %d made, %d running, %d connected, %d registered, %d stopped with an error\n",
		made, running, connected, len(s.nodesReg.GetStore().ListKeys()), s.fleet.failed.Load())
	for _, e := range s.enrollments {
		fmt.Fprintf(&b, "  enroll: %s\n", e)
	}
	for _, c := range s.connects {
		fmt.Fprintf(&b, "  connect: %d nodes connected in %s\n", c.Nodes, roundDur(c.ConnectTime))
	}
	fmt.Fprintf(&b, "  memory: %s\n", s.memory)
	d, early := s.DispatchSamples()
	fmt.Fprintf(&b, "  dispatch (bound to edge commit): %s", Summarize(d))
	if early > 0 {
		fmt.Fprintf(&b, "; %d committed before the simulator knew them bound (counted as 0)", early)
	}
	fmt.Fprintf(&b, "\n  create to Running: %s\n", s.CreateToRunning())
	if n := s.ReplicaNodes(); n != nil {
		fmt.Fprintf(&b, "  replicas: %d, connected nodes on each now: %v\n", len(n), n)
	}
	for _, f := range s.failovers {
		fmt.Fprintf(&b, "  failover: %s\n", f)
	}
	for _, r := range s.balances {
		fmt.Fprintf(&b, "  rebalance: %s\n", r)
	}
	for _, st := range s.storms {
		fmt.Fprintf(&b, "  storm: %s\n", st)
	}
	for _, i := range s.idles {
		fmt.Fprintf(&b, "  idle: %s\n", i)
	}
	if st, ok := s.HubStats(); ok {
		fmt.Fprintf(&b, "  hub (since its last start): %d sessions, %d frames in, %d out, %s in, %s out, %d object messages, %d resyncs\n",
			st.Sessions, st.FramesIn, st.FramesOut, bytesIEC(float64(st.BytesIn)), bytesIEC(float64(st.BytesOut)), st.ObjectMessages, st.Resyncs)
	}
	if ps, err := s.CloudProc(); err == nil {
		fmt.Fprintf(&b, "  cloudcore process: %s RSS, %s CPU since its last start\n", bytesIEC(float64(ps.RSS)), ps.CPU.Round(10*time.Millisecond))
	}
	fmt.Fprintf(&b, "  logs: %d warnings, %d errors", s.logs.warns.Load(), s.logs.errors.Load())
	if e := s.logs.last(); e != "" {
		fmt.Fprintf(&b, "; last error: %s", e)
	}
	b.WriteString("\n")
	s.mu.Lock()
	if s.lastCheck != "" {
		fmt.Fprintf(&b, "  last failed check: %s\n", s.lastCheck)
	}
	s.mu.Unlock()
	return b.String()
}
