package simulator

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/edgecore/agent"
	"github.com/tether-edge/tether/protocol"
)

// recorder keeps, per pod, the moments the simulator saw it pass, all on
// this process's clock: created (before the create call) and createdDone
// (after it), bound (the first watch event with a node name, from the
// simulator's own informer, which watches the same API server as the hub's
// dispatcher), committed (the first commit of the pod in its node's store,
// from the agent's commit hook) and running (the first watch event with
// phase Running).
//
// A pod's dispatch time runs from bound, or createdDone if earlier (a pod
// created bound is bound once the create call returns; the informer, in a
// process busy with thousands of nodes, may see it later than the hub
// does), to committed.
type recorder struct {
	mu sync.Mutex
	// pods is guarded by mu.
	pods map[types.UID]*podTimes
	// lastEvent is when the informer last saw a pod change; guarded by mu.
	lastEvent time.Time
}

type podTimes struct {
	created, createdDone, bound, committed, running time.Time
	// boundAtCreate says the pod was created bound (createdDone counts).
	boundAtCreate bool
}

func newRecorder() *recorder { return &recorder{pods: map[types.UID]*podTimes{}} }

func (r *recorder) getLocked(uid types.UID) *podTimes {
	p := r.pods[uid]
	if p == nil {
		p = &podTimes{}
		r.pods[uid] = p
	}
	return p
}

// created records the start and the end of the create call of a pod
// created bound to its node.
func (r *recorder) created(uid types.UID, start, done time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.getLocked(uid)
	if p.created.IsZero() {
		p.created, p.createdDone, p.boundAtCreate = start, done, true
	}
}

// boundAt is when the pod was known bound.
func (p *podTimes) boundAt() time.Time {
	if p.boundAtCreate && (p.bound.IsZero() || p.createdDone.Before(p.bound)) {
		return p.createdDone
	}
	return p.bound
}

// observed records what a watch event says of a pod.
func (r *recorder) observed(pod *corev1.Pod) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastEvent = now
	p := r.getLocked(pod.UID)
	if pod.Spec.NodeName != "" && p.bound.IsZero() {
		p.bound = now
	}
	if pod.Status.Phase == corev1.PodRunning && p.running.IsZero() {
		p.running = now
	}
}

// deleted records a pod's deletion.
func (r *recorder) deleted() {
	r.mu.Lock()
	r.lastEvent = time.Now()
	r.mu.Unlock()
}

// quiet returns how long no pod changed (since start if none did).
func (r *recorder) quiet(start time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastEvent.After(start) {
		start = r.lastEvent
	}
	return time.Since(start)
}

// committed records a node's commit.
func (r *recorder) committed(_ int, c agent.Commit) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ref := range c.Upserted {
		if ref.Kind != protocol.KindPod {
			continue
		}
		p := r.getLocked(types.UID(ref.UID))
		if p.committed.IsZero() {
			p.committed = now
		}
	}
}

// reset forgets every pod.
func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.pods)
}

// samples returns the dispatch times (bound to committed) and the create
// to Running times of the pods that have both ends, and how many pods the
// edge committed before the simulator knew them bound.
func (r *recorder) samples() (dispatch, toRunning []time.Duration, early int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pods {
		if b := p.boundAt(); !b.IsZero() && !p.committed.IsZero() {
			if p.committed.Before(b) {
				early++
			}
			dispatch = append(dispatch, max(0, p.committed.Sub(b)))
		}
		if !p.created.IsZero() && !p.running.IsZero() {
			toRunning = append(toRunning, p.running.Sub(p.created))
		}
	}
	return dispatch, toRunning, early
}

// counts returns how many pods reached each stage.
func (r *recorder) counts() (created, bound, committed, running int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.pods {
		if !p.created.IsZero() {
			created++
		}
		if !p.bound.IsZero() {
			bound++
		}
		if !p.committed.IsZero() {
			committed++
		}
		if !p.running.IsZero() {
			running++
		}
	}
	return
}

// Latency summarizes durations.
type Latency struct {
	Samples       int
	P50, P99, Max time.Duration
}

// Summarize returns the nearest-rank p50 and p99 and the maximum of d,
// which it sorts. The zero Latency stands for no samples.
func Summarize(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	slices.Sort(d)
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p/100*float64(len(d)))) - 1
		return d[max(0, min(i, len(d)-1))]
	}
	return Latency{Samples: len(d), P50: rank(50), P99: rank(99), Max: d[len(d)-1]}
}

func (l Latency) String() string {
	if l.Samples == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s p99 %s max %s (%d)", roundDur(l.P50), roundDur(l.P99), roundDur(l.Max), l.Samples)
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(time.Millisecond)
	}
	return d.Round(10 * time.Microsecond)
}

// ProcStat is a process's resident memory and CPU time, read from /proc.
type ProcStat struct {
	Pid int
	// RSS is the resident set size in bytes.
	RSS int64
	// CPU is user plus system time since the process started.
	CPU time.Duration
	// At is when it was read.
	At time.Time
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// ReadProc reads pid's ProcStat (0: this process).
func ReadProc(pid int) (ProcStat, error) {
	p := "self"
	if pid != 0 {
		p = strconv.Itoa(pid)
	}
	st := ProcStat{Pid: pid, At: time.Now()}
	b, err := os.ReadFile("/proc/" + p + "/stat")
	if err != nil {
		return st, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15, rss (pages) 24.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return st, fmt.Errorf("/proc/%s/stat: no command name", p)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22 {
		return st, fmt.Errorf("/proc/%s/stat: %d fields", p, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	rss, err3 := strconv.ParseInt(f[21], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return st, fmt.Errorf("/proc/%s/stat: %w", p, err)
	}
	st.CPU = time.Duration(ut+stime) * time.Second / clockTicks
	st.RSS = rss * int64(os.Getpagesize())
	return st, nil
}

// CPUCores is the CPU used between two readings of the same process, in
// cores (1 = one core busy the whole time).
func CPUCores(from, to ProcStat) float64 {
	wall := to.At.Sub(from.At)
	if wall <= 0 {
		return 0
	}
	return float64(to.CPU-from.CPU) / float64(wall)
}

// goMemory is the Go runtime's view of this process's memory: heap in use
// and goroutine stacks, after a collection.
func goMemory() (heap, stacks int64, goroutines int) {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse), int64(m.StackInuse), runtime.NumGoroutine()
}
