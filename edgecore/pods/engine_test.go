package pods

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/protocol"
)

// TestEngineScripts runs the scripts of testdata/engine: commands to an
// Engine and what it answered, in the style of etcd raft's
// interaction_test.go. go test -run TestEngineScripts -rewrite regenerates
// the answers; read the diff before committing it.
//
// The script plays the Manager: it holds the store's pods, answers every
// Read and Enqueue at once, and keeps each job running until "done".
//
// Commands (a pod's name is its UID too):
//
//	workers n=N              a new Engine with N workers (first command)
//	put NAME [rv=R] [image=I] [grace=S deleting] [static hash=H] [mirror=H]
//	                         store (or replace) a pod; mirror=H makes it the
//	                         mirror pod of the static pod NAME with hash H
//	                         (its UID is mirror-NAME)
//	remove NAME              the store drops the pod
//	runtime NAME...          the pods the runtime runs besides those synced
//	kick                     a change now (Kick with Since now)
//	resync | reconnected | stop | evict resource=R
//	done NAME [err=E] [phase=P]
//	                         the pod's job returns; a sync's status is phase
//	                         P (default Running) and the image synced
//	advance D                the clock moves on D; a due flush timer fires
//	flush                    FlushDue, as the Manager's last step
//	flush-fails | flush-works
//	                         the outbox writes fail from now on, or work
//	outbox                   the outbox, by key, with each frame's content
func TestEngineScripts(t *testing.T) {
	datadriven.Walk(t, "testdata/engine", func(t *testing.T, path string) {
		var h *harness
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			if d.Cmd == "workers" {
				var n int
				d.ScanArgs(t, "n", &n)
				h = newHarness(n)
				return "ok\n"
			}
			if h == nil {
				t.Fatalf("%s: the first command must be workers", d.Pos)
			}
			return h.run(t, d)
		})
	})
}

var t0 = time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)

type harness struct {
	e   *Engine
	now time.Time
	// store holds the pods by name; runtime the pods the runtime runs.
	store   map[string]*corev1.Pod
	runtime map[types.UID]bool
	// running holds the job each pod runs.
	running   map[types.UID]Job
	flushAt   time.Time
	flushFail bool
	outbox    map[string]*protocol.Frame
	out       strings.Builder
}

func newHarness(workers int) *harness {
	return &harness{e: NewEngine(workers), now: t0, store: map[string]*corev1.Pod{}, runtime: map[types.UID]bool{},
		running: map[types.UID]Job{}, outbox: map[string]*protocol.Frame{}}
}

func (h *harness) printf(format string, args ...any) { fmt.Fprintf(&h.out, format+"\n", args...) }

func (h *harness) run(t *testing.T, d *datadriven.TestData) string {
	h.out.Reset()
	arg := func(key string) (string, bool) {
		for _, a := range d.CmdArgs {
			if a.Key == key {
				if len(a.Vals) == 0 {
					return "", true
				}
				return a.Vals[0], true
			}
		}
		return "", false
	}
	switch d.Cmd {
	case "put":
		h.put(t, d.CmdArgs[0].Key, arg)
	case "remove":
		delete(h.store, d.CmdArgs[0].Key)
	case "runtime":
		for _, a := range d.CmdArgs {
			h.runtime[types.UID(a.Key)] = true
		}
	case "kick":
		h.step(Kick{Since: h.now})
	case "resync":
		h.step(Resync{})
	case "reconnected":
		h.step(Reconnected{})
	case "stop":
		h.step(Stop{})
	case "evict":
		r, _ := arg("resource")
		h.step(Evict{Resource: r})
	case "done":
		uid := types.UID(d.CmdArgs[0].Key)
		j, ok := h.running[uid]
		if !ok {
			return fmt.Sprintf("error: %s runs no job\n", uid)
		}
		delete(h.running, uid)
		in := Done{Job: j}
		if e, ok := arg("err"); ok {
			in.Err = errors.New(e)
		}
		if j.Kill {
			if in.Err == nil {
				delete(h.runtime, uid)
			}
		} else {
			h.runtime[uid] = true
			phase, ok := arg("phase")
			if !ok {
				phase = "Running"
			}
			st := &corev1.PodStatus{Phase: corev1.PodPhase(phase),
				ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Image: j.Pod.Spec.Containers[0].Image}}}
			b, err := protocol.EncodePodStatus(st)
			if err != nil {
				t.Fatal(err)
			}
			in.Status = b
		}
		h.step(in)
	case "advance":
		dur, err := time.ParseDuration(d.CmdArgs[0].Key)
		if err != nil {
			t.Fatalf("%s: %v", d.Pos, err)
		}
		h.now = h.now.Add(dur)
		if !h.flushAt.IsZero() && !h.now.Before(h.flushAt) {
			h.flushAt = time.Time{}
			h.printf("flush timer fires")
			h.step(FlushDue{})
		}
	case "flush":
		h.step(FlushDue{})
	case "flush-fails":
		h.flushFail = true
	case "flush-works":
		h.flushFail = false
	case "outbox":
		for _, k := range slices.Sorted(maps.Keys(h.outbox)) {
			h.printf("%s: %s", k, describe(h.outbox[k]))
		}
	default:
		t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
	}
	if h.out.Len() == 0 {
		return "ok\n"
	}
	return h.out.String()
}

func (h *harness) put(t *testing.T, name string, arg func(string) (string, bool)) {
	rv, ok := arg("rv")
	if !ok {
		rv = "1"
	}
	image, ok := arg("image")
	if !ok {
		image = "busybox"
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID(name), ResourceVersion: rv},
		Spec:       corev1.PodSpec{NodeName: "edge", Containers: []corev1.Container{{Name: "app", Image: image}}},
	}
	if _, ok := arg("deleting"); ok {
		ts := metav1.NewTime(h.now)
		p.DeletionTimestamp = &ts
		if g, ok := arg("grace"); ok {
			var s int64
			fmt.Sscan(g, &s)
			p.DeletionGracePeriodSeconds = &s
		}
	}
	if hash, ok := arg("hash"); ok {
		p.Annotations = map[string]string{configHashAnnotation: hash, "kubernetes.io/config.source": "file"}
	}
	if hash, ok := arg("mirror"); ok {
		p.UID = types.UID("mirror-" + name)
		p.Annotations = map[string]string{mirrorAnnotation: hash}
		h.store["mirror-"+name] = p
		return
	}
	if _, ok := arg("static"); ok {
		h.store["static:"+name] = p
		return
	}
	h.store[name] = p
}

// step gives in to the Engine and plays the Manager's part with the
// output: reads, outbox writes and timers, printing what it does.
func (h *harness) step(in Input) {
	o := h.e.Step(h.now, in)
	for _, l := range o.Log {
		var b strings.Builder
		fmt.Fprintf(&b, "log %s %q", strings.ToLower(l.Level.String()), l.Msg)
		for _, a := range l.Attrs {
			fmt.Fprintf(&b, " %s", a)
		}
		h.printf("%s", b.String())
	}
	if o.Evicted != nil {
		if o.Evicted.Err != nil {
			h.printf("evict: %v", o.Evicted.Err)
		} else {
			h.printf("evict: %q", o.Evicted.Pod)
		}
	}
	for _, j := range o.Jobs {
		h.running[j.UID] = j
		switch {
		case !j.Kill:
			h.printf("start sync %s rv=%s image=%s", j.UID, j.Pod.ResourceVersion, j.Pod.Spec.Containers[0].Image)
		case j.Evict:
			h.printf("start kill %s (evict)", j.UID)
		default:
			h.printf("start kill %s grace=%s", j.UID, j.Grace)
		}
	}
	if o.StopFlush {
		h.flushAt = time.Time{}
		h.printf("flush timer stopped")
	}
	if !o.FlushAt.IsZero() {
		h.flushAt = o.FlushAt
		h.printf("flush timer at +%s", o.FlushAt.Sub(t0))
	}
	if o.Idle {
		h.printf("idle")
	}
	if o.Enqueue != nil {
		var err error
		if h.flushFail {
			err = errors.New("disk full")
		}
		for _, q := range o.Enqueue {
			if err == nil {
				h.outbox[q.Key] = q.Frame
			}
			h.printf("enqueue %s: %s", q.Key, describe(q.Frame))
		}
		if err != nil {
			h.printf("enqueue failed: %v", err)
		}
		h.step(Flushed{Err: err})
	}
	if o.Read != nil {
		r := PodsRead{}
		kind := "light"
		if o.Read.Full {
			kind = "full"
			r.RunningOK = true
			r.Running = slices.Sorted(maps.Keys(h.runtime))
		}
		for _, k := range slices.Sorted(maps.Keys(h.store)) {
			if strings.HasPrefix(k, "static:") {
				r.Static = append(r.Static, h.store[k])
			} else {
				r.Stored = append(r.Stored, h.store[k])
			}
		}
		h.printf("read %s", kind)
		h.step(r)
	}
}

// describe is a frame in a line.
func describe(f *protocol.Frame) string {
	switch {
	case f.PodStatus != nil:
		st, err := protocol.DecodePodStatus(f.PodStatus.Status)
		if err != nil {
			return err.Error()
		}
		img := ""
		if len(st.ContainerStatuses) > 0 {
			img = " image=" + st.ContainerStatuses[0].Image
		}
		s := fmt.Sprintf("status of %s %s%s", f.PodStatus.Name, st.Phase, img)
		if st.Reason != "" {
			s += " reason=" + st.Reason
		}
		return s
	case f.PodTerminated != nil:
		return "terminated " + f.PodTerminated.Name
	case f.MirrorPod != nil:
		if f.MirrorPod.Delete {
			return "delete mirror " + f.MirrorPod.Name
		}
		p, err := protocol.DecodePod(f.MirrorPod.Pod)
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("create mirror %s hash=%s", f.MirrorPod.Name, p.Annotations[mirrorAnnotation])
	}
	return f.Type()
}
