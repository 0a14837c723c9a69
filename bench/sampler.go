package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// which the kernel fixes at 100 for user space on every architecture Go runs
// Linux on (sysconf(_SC_CLK_TCK) would need cgo to ask).
const clockTicks = 100

// ProcStat is one reading of a process's memory and CPU time.
type ProcStat struct {
	// At is when it was read.
	At time.Time
	// RSSBytes is VmRSS of /proc/<pid>/status.
	RSSBytes int64
	// CPU is utime+stime of /proc/<pid>/stat: CPU time spent by the process
	// since it started, all threads, user and system.
	CPU time.Duration
}

// ReadProc reads pid's RSS and CPU time.
func ReadProc(pid int) (ProcStat, error) {
	st := ProcStat{At: time.Now()}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, fmt.Errorf("process %d: %w", pid, err)
	}
	rss := strings.Fields(procField(status, "VmRSS"))
	if len(rss) != 2 || rss[1] != "kB" {
		// Kernel threads and zombies have no VmRSS.
		return st, fmt.Errorf("process %d: no VmRSS in /proc/%d/status", pid, pid)
	}
	kb, err := strconv.ParseInt(rss[0], 10, 64)
	if err != nil {
		return st, fmt.Errorf("process %d: VmRSS %q: %w", pid, rss[0], err)
	}
	st.RSSBytes = kb << 10

	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, fmt.Errorf("process %d: %w", pid, err)
	}
	// The command name (field 2) is in parentheses and may hold spaces or
	// parentheses itself: count fields from the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return st, fmt.Errorf("process %d: malformed /proc/%d/stat", pid, pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	// After the name: state is field 3, utime 14, stime 15 (proc(5)).
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return st, fmt.Errorf("process %d: /proc/%d/stat has %d fields", pid, pid, len(f)+2)
	}
	var ticks int64
	for _, k := range []int{utime, stime} {
		n, err := strconv.ParseInt(f[k], 10, 64)
		if err != nil {
			return st, fmt.Errorf("process %d: stat field %d %q: %w", pid, k+3, f[k], err)
		}
		ticks += n
	}
	st.CPU = time.Duration(ticks) * time.Second / clockTicks
	return st, nil
}

// Usage is a process's resource use over a window.
type Usage struct {
	// Seconds is the length of the window.
	Seconds float64 `json:"seconds"`
	// CPUSeconds is the CPU time the process spent in it, and CPUCores that
	// divided by Seconds (1.0 is one core busy all the time).
	CPUSeconds float64 `json:"cpuSeconds"`
	CPUCores   float64 `json:"cpuCores"`
	// RSS at the window's start and end, its peak and its mean over the
	// samples.
	RSSStartBytes int64 `json:"rssStartBytes"`
	RSSEndBytes   int64 `json:"rssEndBytes"`
	RSSPeakBytes  int64 `json:"rssPeakBytes"`
	RSSMeanBytes  int64 `json:"rssMeanBytes"`
	// Samples is the number of readings.
	Samples int `json:"samples"`
}

// Sampler follows one process's RSS and CPU time through /proc.
type Sampler struct {
	// PID is the process to follow.
	PID int
	// Every is the time between readings (default 1s). RSS peaks shorter
	// than that may be missed; CPU time is exact.
	Every time.Duration
}

// Run reads the process at once, then every s.Every until ctx ends, reads it
// a last time and returns the usage over that window. It fails if the
// process cannot be read, at the start or later (it exited).
func (s Sampler) Run(ctx context.Context) (Usage, error) {
	first, err := ReadProc(s.PID)
	if err != nil {
		return Usage{}, err
	}
	return s.run(ctx, first)
}

// run samples from first on.
func (s Sampler) run(ctx context.Context, first ProcStat) (Usage, error) {
	every := s.Every
	if every <= 0 {
		every = time.Second
	}
	u := Usage{RSSStartBytes: first.RSSBytes, RSSPeakBytes: first.RSSBytes, Samples: 1}
	sum := first.RSSBytes
	last := first
	add := func(p ProcStat) {
		u.Samples++
		sum += p.RSSBytes
		u.RSSPeakBytes = max(u.RSSPeakBytes, p.RSSBytes)
		last = p
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-t.C:
		}
		p, err := ReadProc(s.PID)
		if err != nil {
			return Usage{}, fmt.Errorf("sample after %s: %w", time.Since(first.At).Round(time.Millisecond), err)
		}
		add(p)
	}
	u.Seconds = last.At.Sub(first.At).Seconds()
	u.CPUSeconds = (last.CPU - first.CPU).Seconds()
	if u.Seconds > 0 {
		u.CPUCores = u.CPUSeconds / u.Seconds
	}
	u.RSSEndBytes = last.RSSBytes
	u.RSSMeanBytes = sum / int64(u.Samples)
	return u, nil
}

// Measure runs s while work runs and returns the usage over that window
// (from a reading just before work starts to one just after it returns);
// the error joins work's and the sampler's.
func (s Sampler) Measure(ctx context.Context, work func(context.Context) error) (Usage, error) {
	// The first reading comes before work starts.
	first, err := ReadProc(s.PID)
	if err != nil {
		return Usage{}, err
	}
	sctx, stop := context.WithCancel(ctx)
	type result struct {
		u   Usage
		err error
	}
	done := make(chan result, 1)
	go func() {
		u, err := s.run(sctx, first)
		done <- result{u, err}
	}()
	werr := work(ctx)
	stop()
	r := <-done
	return r.u, errors.Join(werr, r.err)
}
