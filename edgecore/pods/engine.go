package pods

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// Engine is the Manager's scheduler as a pure state machine: it decides
// which pods to sync or kill, in what order, how many at once, and which
// statuses to queue, and does no IO, takes no locks, starts no goroutines
// and reads no clock. Engine.Step takes an Input and the current time and
// returns an Output: the store read to make (Read), the runtime calls to
// start (Jobs), the frames to queue in the outbox (Enqueue) and the flush
// timer to arm (FlushAt). The Manager's goroutine does the IO around it;
// the tests drive it with scripts (testdata/*.txt).
//
// A Read must be answered with PodsRead before any other input, and an
// Enqueue with Flushed: the Manager does both at once, in its goroutine.
type Engine struct {
	workers int

	// resend: the next full pass reports every status again (Reconnected).
	resend bool
	// read is the pass asked for by the last Output.Read, until PodsRead.
	read *readReq
	// stopping: Stop came; no more work starts.
	stopping bool

	lastStatus map[types.UID][]byte // the last status queued per reported pod UID
	terminated map[types.UID]bool   // pods whose termination is queued
	lastMirror map[string]string    // ns/name -> config hash (or "" for delete) of the mirror request queued
	evicted    map[types.UID]*evictState
	// fullPending: a kick came while pods waited for a worker; a full pass
	// for the changes since pendingSince is due once none waits.
	fullPending  bool
	pendingSince time.Time
	// synced holds when each pod's last successful sync started and the
	// resourceVersion it synced.
	synced map[types.UID]syncMark
	// pods are the pods to run, by UID, and mirrors the mirror pods, by
	// ns/name, as the last pass read them. They are kept only while work
	// is queued or running (jobs look pods up when they start) and
	// dropped when the last work is done, so an idle manager holds no
	// decoded pods.
	pods    map[types.UID]*corev1.Pod
	mirrors map[string]*corev1.Pod
	// work holds the pods queued or being worked on; queue the queued ones,
	// oldest first; running counts the jobs started and not Done.
	work    map[types.UID]*podWork
	queue   []types.UID
	running int
	// out holds the frames not yet queued in the outbox; lastFlush is when
	// they last were; flushAt, if not zero, when the armed flush timer
	// fires; flushing holds the frames of the Enqueue not yet Flushed.
	out       []Queued
	lastFlush time.Time
	flushAt   time.Time
	flushing  []Queued
}

// readReq is a pass waiting for its read.
type readReq struct {
	full  bool
	since time.Time
	// evict: the read is for Evict, not a pass.
	evict string
}

// NewEngine returns an Engine that runs at most workers jobs at once.
func NewEngine(workers int) *Engine {
	return &Engine{workers: workers, evicted: map[types.UID]*evictState{},
		lastStatus: map[types.UID][]byte{}, terminated: map[types.UID]bool{}, lastMirror: map[string]string{},
		work: map[types.UID]*podWork{}, synced: map[types.UID]syncMark{}}
}

// Input is one event for the Engine: Kick, Resync, Reconnected, PodsRead,
// Done, FlushDue, Flushed, Evict or Stop.
type Input interface{ podInput() }

// Kick: pods or what they use changed (a commit from the cloud, a
// container's exit, a static pod manifest). Since is when the newest change
// not yet passed was announced (a sync that started before it may not have
// seen it; one that started after saw every change up to it); zero means
// every change was passed already. A pass follows (Output.Read): a full
// one, or a light one while pods wait for a worker.
type Kick struct{ Since time.Time }

// Resync: the resync timer fired, or the Manager started; every pod is
// synced (a kick for a change now).
type Resync struct{}

// Reconnected: the link to the cloud came back. The cloud may have changed
// statuses meanwhile, so the next full pass reports every status again.
type Reconnected struct{}

// PodsRead answers Output.Read: the pods the store holds (mirror pods
// included), the static pods, and for a full read the pods the runtime
// runs.
type PodsRead struct {
	Stored []*corev1.Pod
	Static []*corev1.Pod
	// Running lists the runtime's pods; RunningOK is false when they could
	// not be listed (or the read was not full).
	Running   []types.UID
	RunningOK bool
	// Err: the store could not be read; the pass is given up.
	Err error
}

// Done: a job ended. Status is the encoded status SyncPod returned, if it
// returned one.
type Done struct {
	Job    Job
	Status []byte
	Err    error
}

// FlushDue: the flush timer (Output.FlushAt) fired.
type FlushDue struct{}

// Flushed answers Output.Enqueue: whether the frames were queued.
type Flushed struct{ Err error }

// Evict asks to evict a pod (see Manager.Evict); Output.Read follows, and
// the answer comes in Output.Evicted after PodsRead.
type Evict struct{ Resource string }

// Stop: the Manager is stopping. No job starts any more; the Done of those
// running are still taken, and the last FlushDue queues their statuses.
type Stop struct{}

func (Kick) podInput()        {}
func (Resync) podInput()      {}
func (Reconnected) podInput() {}
func (PodsRead) podInput()    {}
func (Done) podInput()        {}
func (FlushDue) podInput()    {}
func (Flushed) podInput()     {}
func (Evict) podInput()       {}
func (Stop) podInput()        {}

// Output is what the Manager does after a Step, in this order: log, read
// (and Step the PodsRead at once), start the jobs, queue Enqueue (and Step
// Flushed), arm or stop the flush timer.
type Output struct {
	// Read asks for the pods (PodsRead), the runtime's too if Full.
	Read *ReadPods
	// Jobs are runtime calls to start, each on a worker of its own.
	Jobs []Job
	// Enqueue are frames to queue in the outbox, in order, in one
	// transaction; Flushed says how it went.
	Enqueue []Queued
	// FlushAt, if not zero, is when to Step FlushDue; StopFlush cancels
	// the timer armed before.
	FlushAt   time.Time
	StopFlush bool
	// Keep, after a pass, says which pods' reported statuses to keep
	// (Reported): the others are gone.
	Keep map[types.UID]bool
	// Evicted answers Evict.
	Evicted *EvictResult
	// Idle: the last work is done.
	Idle bool
	// Log lists what to log.
	Log []LogLine
}

// ReadPods asks for a PodsRead.
type ReadPods struct{ Full bool }

// EvictResult answers Evict: the pod evicted (namespace/name; "" for
// none), or an error.
type EvictResult struct {
	Pod string
	Err error
}

// LogLine is a message to log.
type LogLine struct {
	Level slog.Level
	Msg   string
	Attrs []slog.Attr
}

// Queued is a frame to queue in the outbox under Key.
type Queued struct {
	Key   string
	Frame *protocol.Frame
}

// Job is a runtime call: sync Pod, or kill the pod UID (Pod is nil when the
// store no longer holds it).
type Job struct {
	UID   types.UID
	Pod   *corev1.Pod
	Kill  bool
	Grace time.Duration
	// Evict: the kill evicts the pod.
	Evict bool
}

// podWork is a pod's place in the work queue.
type podWork struct {
	// running: a job syncs or kills the pod. Otherwise it is queued.
	running bool
	// again: the pod changed while its job ran; queue it again after.
	again bool
	// sync: the job syncs (rather than kills) the pod, which it started
	// to at started, with the spec of resourceVersion rv.
	sync    bool
	started time.Time
	rv      string
}

// syncMark is when a sync started and the resourceVersion it synced.
type syncMark struct {
	started time.Time
	rv      string
}

// flushEvery bounds how long a status waits while pods are worked on: the
// statuses that came in meanwhile are queued in one transaction.
const flushEvery = 100 * time.Millisecond

// Step takes one input at now.
func (e *Engine) Step(now time.Time, in Input) Output {
	var o Output
	switch in := in.(type) {
	case Kick:
		e.kick(&o, in.Since)
	case Resync:
		e.kick(&o, now)
	case Reconnected:
		e.resend = true
		e.kick(&o, now)
	case PodsRead:
		r := e.read
		e.read = nil
		switch {
		case r == nil:
			panic("pods: PodsRead without Read")
		case r.evict != "":
			o.Evicted = e.evict(&o, now, r.evict, in)
		case in.Err != nil:
			o.log(slog.LevelError, "pod sync failed", slog.Any("err", in.Err))
		default:
			e.pass(&o, now, r.full, r.since, in)
		}
	case Done:
		e.done(&o, now, in)
	case FlushDue:
		e.flushAt = time.Time{}
		e.flush(&o, now)
	case Flushed:
		e.flushed(&o, in.Err)
	case Evict:
		for uid := range e.evicted {
			if e.work[uid] != nil {
				o.Evicted = &EvictResult{Err: ErrEvictionInProgress}
				return o
			}
		}
		e.read = &readReq{evict: in.Resource}
		o.Read = &ReadPods{}
	case Stop:
		e.stopping = true
	}
	return o
}

func (o *Output) log(level slog.Level, msg string, attrs ...slog.Attr) {
	o.Log = append(o.Log, LogLine{Level: level, Msg: msg, Attrs: attrs})
}

// kick makes a full pass for the changes since since (none if it is
// zero), or while pods wait for a worker a light one, and the full one
// once none waits.
func (e *Engine) kick(o *Output, since time.Time) {
	if e.stopping {
		return
	}
	if e.fullPending {
		since = latest(since, e.pendingSince)
	}
	if len(e.queue) > 0 {
		e.fullPending, e.pendingSince = true, since
		e.askRead(o, false, time.Time{})
		return
	}
	e.fullPending, e.pendingSince = false, time.Time{}
	e.askRead(o, true, since)
}

func (e *Engine) askRead(o *Output, full bool, since time.Time) {
	e.read = &readReq{full: full, since: since}
	o.Read = &ReadPods{Full: full}
}

// latest is the later of two times, zero meaning none: a pod synced after
// the later change saw both.
func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// pass queues work from the pods read: the pods that are new, changed or
// gone since the last pass and, for changes since since, every pod not
// synced since then. A full pass also queues the pods the runtime runs
// that the store does not hold, and reports every status again after
// Reconnected.
func (e *Engine) pass(o *Output, now time.Time, full bool, since time.Time, r PodsRead) {
	if full && e.resend {
		e.resend = false
		clear(e.lastStatus)
		clear(e.lastMirror)
		since = now
	}
	var pods []*corev1.Pod
	mirrors := map[string]*corev1.Pod{}
	for _, p := range r.Stored {
		if _, ok := p.Annotations[mirrorAnnotation]; ok {
			mirrors[p.Namespace+"/"+p.Name] = p
			continue
		}
		pods = append(pods, p)
	}
	pods = append(pods, r.Static...)
	e.syncMirrors(o, r.Static, mirrors)
	last := e.pods
	e.pods, e.mirrors = make(map[types.UID]*corev1.Pod, len(pods)), mirrors
	// want: the pods whose last status is kept, mirror pods included.
	want := make(map[types.UID]bool, len(pods))
	for _, p := range pods {
		e.pods[p.UID] = p
		want[p.UID] = true
		if terminalPhase(p) && e.evicted[p.UID] == nil {
			// Evicted before a restart: killed if it runs, never started.
			e.evicted[p.UID] = &evictState{msg: p.Status.Message, reported: true}
		}
		if mp := e.mirrorOf(p); mp != nil {
			want[mp.UID] = true
		}
	}
	for _, p := range pods {
		if !e.syncedSince(p, since) {
			e.schedule(p.UID)
		}
	}
	// Pods the store no longer holds are killed, once their job is done
	// if one works on them; and, in a full pass, the pods the runtime runs
	// that the store does not hold (deleted by force or while the edge was
	// away). In UID order, so that a pass is the same every time.
	gone := map[types.UID]bool{}
	for uid := range last {
		gone[uid] = true
	}
	for uid := range e.work {
		gone[uid] = true
	}
	if full && r.RunningOK {
		for _, uid := range r.Running {
			gone[uid] = true
		}
	}
	for _, uid := range slices.Sorted(maps.Keys(gone)) {
		if e.pods[uid] == nil {
			e.schedule(uid)
		}
	}
	for uid := range e.lastStatus {
		if !want[uid] {
			delete(e.lastStatus, uid)
		}
	}
	o.Keep = want
	for uid := range e.terminated {
		if !want[uid] {
			delete(e.terminated, uid)
		}
	}
	for uid := range e.evicted {
		if !want[uid] {
			delete(e.evicted, uid)
		}
	}
	for uid := range e.synced {
		if e.pods[uid] == nil {
			delete(e.synced, uid)
		}
	}
	e.launch(o, now)
	e.dropIfIdle(o)
	e.maybeFlush(o, now)
}

// syncedSince reports whether the pod's last sync, running or done and
// successful, started with its current spec and not before since: it saw
// the changes before since (with since zero, every change passed already).
func (e *Engine) syncedSince(p *corev1.Pod, since time.Time) bool {
	mark, ok := e.synced[p.UID]
	if w := e.work[p.UID]; w != nil {
		mark, ok = syncMark{w.started, w.rv}, w.running && w.sync
	}
	return ok && mark.rv == p.ResourceVersion && !mark.started.Before(since)
}

// schedule queues the pod with uid for a job, unless it is queued
// already; a pod being worked on is queued again once its job is done.
func (e *Engine) schedule(uid types.UID) {
	switch w := e.work[uid]; {
	case w == nil:
		e.work[uid] = &podWork{}
		e.queue = append(e.queue, uid)
	case w.running:
		w.again = true
	}
}

// launch starts jobs for the queued pods, oldest first, while fewer than
// workers run.
func (e *Engine) launch(o *Output, now time.Time) {
	if e.stopping {
		return
	}
	for e.running < e.workers && len(e.queue) > 0 {
		uid := e.queue[0]
		e.queue = e.queue[1:]
		j, ok := e.jobFor(uid)
		if !ok {
			delete(e.work, uid)
			continue
		}
		if j.Kill && j.Pod == nil {
			o.log(slog.LevelInfo, "killing pod no longer wanted", slog.String("uid", string(uid)))
		}
		w := e.work[uid]
		w.running, w.sync, w.started = true, !j.Kill, now
		if j.Pod != nil {
			w.rv = j.Pod.ResourceVersion
		}
		e.running++
		o.Jobs = append(o.Jobs, j)
	}
	if len(e.queue) == 0 {
		e.queue = nil // let a long queue's array go
	}
}

// jobFor is what to do now about the pod with uid, from the newest pods
// read: sync it, kill it (it is being deleted, or the store no longer holds
// it), or nothing (its termination is queued already).
func (e *Engine) jobFor(uid types.UID) (Job, bool) {
	p := e.pods[uid]
	switch {
	case p == nil:
		return Job{UID: uid, Kill: true}, true
	case p.DeletionTimestamp != nil:
		if e.terminated[uid] {
			return Job{}, false
		}
		grace := 30 * time.Second
		if p.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*p.DeletionGracePeriodSeconds) * time.Second
		}
		return Job{UID: uid, Pod: p, Kill: true, Grace: grace}, true
	}
	if ev := e.evicted[uid]; ev != nil {
		if ev.killed {
			return Job{}, false
		}
		return Job{UID: uid, Pod: p, Kill: true, Evict: true}, true
	}
	return Job{UID: uid, Pod: p}, true
}

// done takes a job's result: it queues the pod's status or termination and
// queues the pod again if it changed meanwhile.
func (e *Engine) done(o *Output, now time.Time, r Done) {
	w := e.work[r.Job.UID]
	if w == nil || !w.running {
		panic(fmt.Sprintf("pods: Done for %s, which runs no job", r.Job.UID))
	}
	e.running--
	uid := r.Job.UID
	name := string(uid)
	if r.Job.Pod != nil {
		name = r.Job.Pod.Namespace + "/" + r.Job.Pod.Name
	}
	switch {
	case r.Err != nil && r.Job.Kill:
		if !e.stopping {
			o.log(slog.LevelError, "kill pod", slog.String("pod", name), slog.Any("err", r.Err))
		}
	case r.Job.Evict:
		e.evictedKilled(o, r.Job)
	case r.Job.Kill:
		// A deleted pod's containers all stopped: the cloud may remove it.
		if p := e.pods[uid]; r.Job.Pod != nil && p != nil && p.DeletionTimestamp != nil && !e.terminated[uid] {
			e.terminated[uid] = true
			e.out = append(e.out, Queued{store.OutboxPodTerminated(string(uid)), &protocol.Frame{
				PodTerminated: &protocol.PodTerminated{UID: string(uid), Namespace: p.Namespace, Name: p.Name}}})
		}
	case r.Err != nil:
		if !e.stopping {
			o.log(slog.LevelError, "sync pod", slog.String("pod", name), slog.Any("err", r.Err))
		}
	}
	if !r.Job.Kill && r.Status != nil {
		e.report(uid, r.Status)
	}
	if w.sync && r.Err == nil {
		e.synced[uid] = syncMark{w.started, w.rv}
	} else {
		delete(e.synced, uid)
	}
	// A pod killed because the store no longer holds it is done with.
	gone := r.Job.Kill && r.Err == nil && e.pods[uid] == nil
	if w.again && !gone {
		w.running, w.again = false, false
		e.queue = append(e.queue, uid)
	} else {
		delete(e.work, uid)
	}
	e.launch(o, now)
	if e.fullPending && len(e.queue) == 0 && !e.stopping {
		since := e.pendingSince
		e.fullPending, e.pendingSince = false, time.Time{}
		e.askRead(o, true, since)
		// The pass runs at PodsRead; idleness and the flush wait for it.
		return
	}
	e.dropIfIdle(o)
	e.maybeFlush(o, now)
}

// report queues the pod's status unless it is the one last queued. A
// static pod's status goes to its mirror pod, once the mirror exists. The
// status of a pod the store no longer holds, or whose termination is
// queued, is dropped.
func (e *Engine) report(uid types.UID, status []byte) {
	p := e.pods[uid]
	if p == nil || e.terminated[uid] {
		return
	}
	if isStatic(p) {
		mp := e.mirrorOf(p)
		if mp == nil {
			return
		}
		uid = mp.UID
	}
	if bytes.Equal(status, e.lastStatus[uid]) {
		return
	}
	e.lastStatus[uid] = status
	e.out = append(e.out, Queued{store.OutboxPodStatus(string(uid)), &protocol.Frame{
		PodStatus: &protocol.PodStatus{UID: string(uid), Namespace: p.Namespace, Name: p.Name, Status: status}}})
}

func isStatic(p *corev1.Pod) bool {
	_, ok := p.Annotations[configHashAnnotation]
	return ok && p.Annotations["kubernetes.io/config.source"] == "file"
}

// mirrorOf is the static pod p's current mirror pod: the one of its name
// with its hash, not being deleted. It is nil for other pods.
func (e *Engine) mirrorOf(p *corev1.Pod) *corev1.Pod {
	if !isStatic(p) {
		return nil
	}
	mp := e.mirrors[p.Namespace+"/"+p.Name]
	if mp == nil || mp.Annotations[mirrorAnnotation] != p.Annotations[configHashAnnotation] || mp.DeletionTimestamp != nil {
		return nil
	}
	return mp
}

// dropIfIdle forgets the pods read when no work is left.
func (e *Engine) dropIfIdle(o *Output) {
	if len(e.work) == 0 && e.pods != nil {
		e.pods, e.mirrors = nil, nil
		o.Idle = true
	}
}

// maybeFlush queues the frames in out in the outbox now if no pod is being
// worked on or the last flush is flushEvery old, else when it will be.
func (e *Engine) maybeFlush(o *Output, now time.Time) {
	if len(e.out) == 0 {
		return
	}
	since := now.Sub(e.lastFlush)
	if len(e.work) > 0 && since < flushEvery {
		if e.flushAt.IsZero() {
			e.flushAt = e.lastFlush.Add(flushEvery)
			o.FlushAt = e.flushAt
		}
		return
	}
	e.flush(o, now)
}

// flush hands out to the Manager to queue in the outbox.
func (e *Engine) flush(o *Output, now time.Time) {
	if !e.flushAt.IsZero() {
		e.flushAt = time.Time{}
		o.StopFlush = true
	}
	e.lastFlush = now
	if len(e.out) == 0 {
		return
	}
	e.flushing = e.out
	e.out = nil
	o.Enqueue = e.flushing
}

// flushed takes the outcome of an Enqueue. What was not queued is
// forgotten, so that the next pass makes it again.
func (e *Engine) flushed(o *Output, err error) {
	out := e.flushing
	e.flushing = nil
	if err == nil {
		return
	}
	clear(e.synced)
	for _, q := range out {
		switch f := q.Frame; {
		case f.PodStatus != nil:
			delete(e.lastStatus, types.UID(f.PodStatus.UID))
		case f.PodTerminated != nil:
			delete(e.terminated, types.UID(f.PodTerminated.UID))
		case f.MirrorPod != nil:
			delete(e.lastMirror, f.MirrorPod.Namespace+"/"+f.MirrorPod.Name)
		}
	}
	o.log(slog.LevelError, "pod sync failed", slog.Any("err", fmt.Errorf("queue statuses: %w", err)))
}

// syncMirrors queues the mirror pod requests that make the cloud's mirror
// pods match the static pods: a create for each static pod whose mirror is
// missing or stale, a delete for each mirror whose static pod is gone.
func (e *Engine) syncMirrors(o *Output, statics []*corev1.Pod, mirrors map[string]*corev1.Pod) {
	want := map[string]bool{}
	for _, p := range statics {
		name := p.Namespace + "/" + p.Name
		want[name] = true
		hash := p.Annotations[configHashAnnotation]
		if mp := mirrors[name]; mp != nil && mp.Annotations[mirrorAnnotation] == hash && mp.DeletionTimestamp == nil {
			e.lastMirror[name] = hash
			continue
		}
		if sent, ok := e.lastMirror[name]; ok && sent == hash {
			continue // queued already; waiting for the mirror to come down
		}
		mirror := p.DeepCopy()
		mirror.UID, mirror.ResourceVersion, mirror.Status = "", "", corev1.PodStatus{}
		mirror.Annotations[mirrorAnnotation] = hash
		b, err := protocol.EncodePod(mirror)
		if err != nil {
			o.log(slog.LevelError, "encode mirror pod", slog.String("pod", name), slog.Any("err", err))
			continue
		}
		e.lastMirror[name] = hash
		e.out = append(e.out, Queued{"mirror/" + name, &protocol.Frame{
			MirrorPod: &protocol.MirrorPod{Namespace: p.Namespace, Name: p.Name, Pod: b}}})
	}
	for _, name := range slices.Sorted(maps.Keys(mirrors)) {
		mp := mirrors[name]
		if want[name] || mp.DeletionTimestamp != nil {
			continue
		}
		if sent, ok := e.lastMirror[name]; ok && sent == "" {
			continue
		}
		e.lastMirror[name] = ""
		e.out = append(e.out, Queued{"mirror/" + name, &protocol.Frame{
			MirrorPod: &protocol.MirrorPod{Namespace: mp.Namespace, Name: mp.Name, Delete: true}}})
	}
	for name := range e.lastMirror {
		if !want[name] && mirrors[name] == nil {
			delete(e.lastMirror, name)
		}
	}
}
