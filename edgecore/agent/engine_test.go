package agent

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// TestEngineScripts runs the scripts of testdata/engine: inputs to an Engine
// and what it answered, in the style of etcd raft's interaction_test.go.
// go test -run TestEngineScripts -rewrite regenerates the answers; read the
// diff before committing it.
//
// The script plays the session: it holds an outbox and the objects stored,
// answers every Read and Commit at once, and prints what is sent.
//
// Commands:
//
//	engine window=N resend=D   a new Engine (first command)
//	up | down                  the session opens or ends
//	enqueue KEY...             queue a frame under each key (a key queued
//	                           again gets a new Seq) and tell the Engine
//	recv                       a batch from the hub, a frame per line:
//	                             upsert SEQ UID [rv=R] [bad]   (a pod)
//	                             delete SEQ UID
//	                             ack [SEQ...] [reject=SEQ:REASON...]
//	                             error CODE [seq=N]
//	                             heartbeat | resync-done | cert | podstatus SEQ
//	tick D                     the clock moves on D, then Tick
//	commit-fails | commit-works
//	                           the store's commits fail from now on, or work
//	send-fails | send-works    the link's writes fail from now on, or work: at
//	                           the first failed send the rest of the Output
//	                           (commit, read) is not carried out
//	outbox | objects           what the outbox or the store holds
func TestEngineScripts(t *testing.T) {
	datadriven.Walk(t, "testdata/engine", func(t *testing.T, path string) {
		var h *harness
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			if d.Cmd == "engine" {
				var window int
				var resend string
				d.ScanArgs(t, "window", &window)
				d.ScanArgs(t, "resend", &resend)
				r, err := time.ParseDuration(resend)
				if err != nil {
					t.Fatal(err)
				}
				h = &harness{e: NewEngine(window, r), now: t0, outbox: map[string]uint64{}, objects: map[string]string{}}
				return "ok\n"
			}
			if h == nil {
				t.Fatalf("%s: the first command must be engine", d.Pos)
			}
			return h.run(t, d)
		})
	})
}

var t0 = time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)

type harness struct {
	e   *Engine
	now time.Time
	// outbox maps keys to their Seq; seq is the last Seq given.
	outbox map[string]uint64
	seq    uint64
	// objects maps the UIDs of the pods stored to their resourceVersion.
	objects    map[string]string
	commitFail bool
	// sendFail: the link is broken; the first failed send ends the
	// session's part of the Output, as Agent.do does.
	sendFail bool
	out      strings.Builder
}

func (h *harness) printf(format string, args ...any) { fmt.Fprintf(&h.out, format+"\n", args...) }

func (h *harness) run(t *testing.T, d *datadriven.TestData) string {
	h.out.Reset()
	switch d.Cmd {
	case "up":
		h.step(t, Up{})
	case "down":
		h.step(t, Down{})
	case "enqueue":
		for _, a := range d.CmdArgs {
			h.seq++
			h.outbox[a.Key] = h.seq
		}
		h.step(t, OutboxChanged{})
	case "recv":
		var batch []*protocol.Frame
		for _, line := range strings.Split(strings.TrimSpace(d.Input), "\n") {
			f, err := parseFrame(line)
			if err != nil {
				t.Fatalf("%s: %q: %v", d.Pos, line, err)
			}
			batch = append(batch, f)
		}
		h.step(t, Received{Frames: batch})
	case "tick":
		dur, err := time.ParseDuration(d.CmdArgs[0].Key)
		if err != nil {
			t.Fatalf("%s: %v", d.Pos, err)
		}
		h.now = h.now.Add(dur)
		h.step(t, Tick{})
	case "commit-fails":
		h.commitFail = true
	case "commit-works":
		h.commitFail = false
	case "send-fails":
		h.sendFail = true
	case "send-works":
		h.sendFail = false
	case "outbox":
		for _, k := range h.outboxKeys() {
			h.printf("%d %s", h.outbox[k], k)
		}
	case "objects":
		for _, uid := range slices.Sorted(maps.Keys(h.objects)) {
			h.printf("pod %s rv=%s", uid, h.objects[uid])
		}
	default:
		t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
	}
	if h.out.Len() == 0 {
		return "ok\n"
	}
	return h.out.String()
}

// outboxKeys are the outbox's keys in Seq order.
func (h *harness) outboxKeys() []string {
	keys := slices.Collect(maps.Keys(h.outbox))
	slices.SortFunc(keys, func(a, b string) int { return int(h.outbox[a]) - int(h.outbox[b]) })
	return keys
}

func (h *harness) keyOf(seq uint64) string {
	for k, s := range h.outbox {
		if s == seq {
			return k
		}
	}
	return "?"
}

// step gives in to the Engine and plays the session's part with the
// output, printing what it does.
func (h *harness) step(t *testing.T, in Input) {
	o := h.e.Step(h.now, in)
	for _, l := range o.Log {
		var b strings.Builder
		fmt.Fprintf(&b, "log %s %q", strings.ToLower(l.Level.String()), l.Msg)
		for _, a := range l.Attrs {
			fmt.Fprintf(&b, " %s", a)
		}
		h.printf("%s", b.String())
	}
	if o.Resync != nil {
		h.printf("resync done: %d upserts", o.Resync.Upserts)
	}
	if o.Certificate != nil {
		h.printf("install certificate %q", o.Certificate)
	}
	if c := o.Hook; c != nil {
		h.printf("commit hook: upserted %s, deleted %s", refs(c.Upserted), refs(c.Deleted))
	}
	for _, s := range o.Send {
		if h.sendFail {
			h.printf("send failed: the rest of the output is dropped")
			return
		}
		if s.Raw != nil {
			f, err := protocol.Decode(s.Raw)
			if err != nil || f.Seq != s.Seq {
				t.Fatalf("outbox frame %d: %v %+v", s.Seq, err, f)
			}
			h.printf("send %d %s", s.Seq, h.keyOf(s.Seq))
			continue
		}
		switch f := s.Frame; {
		case f.Ack != nil:
			var rej []string
			for _, r := range f.Ack.Rejected {
				rej = append(rej, fmt.Sprintf("%d", r.Seq))
			}
			h.printf("send ack %v rejected %v", f.Ack.Seqs, rej)
		case f.Error != nil:
			h.printf("send error %s seq=%d: %s", f.Error.Code, f.Error.Seq, f.Error.Message)
		default:
			h.printf("send %s", f.Type())
		}
	}
	if o.Changed != nil {
		var kinds []string
		for k := range o.Changed.Kinds {
			kinds = append(kinds, k.String())
		}
		slices.Sort(kinds)
		h.printf("objects changed: %v %s", kinds, refs(o.Changed.Refs))
	}
	if o.Connected {
		h.printf("observers: connected")
	}
	if o.ObjectFrames > 0 {
		h.printf("object frames +%d", o.ObjectFrames)
	}
	if o.Fail != nil {
		h.printf("session fails: %v", o.Fail)
		return
	}
	if w := o.Commit; w != nil {
		var ops []string
		for _, op := range w.Objects {
			if op.Put != nil {
				ops = append(ops, "put "+op.Put.UID+"@"+op.Put.ResourceVersion)
			} else {
				ops = append(ops, "delete "+op.Delete.UID)
			}
		}
		h.printf("commit %v acked %v", ops, w.Acked)
		var err error
		if h.commitFail {
			err = errors.New("disk full")
			h.printf("commit failed: %v", err)
		} else {
			for _, op := range w.Objects {
				if op.Put != nil {
					h.objects[op.Put.UID] = op.Put.ResourceVersion
				} else {
					delete(h.objects, op.Delete.UID)
				}
			}
			for _, seq := range w.Acked {
				if k := h.keyOf(seq); k != "?" {
					delete(h.outbox, k)
				}
			}
		}
		h.step(t, Committed{Err: err})
	}
	if r := o.Read; r != nil {
		h.printf("read outbox after %d, at most %d", r.After, r.Max)
		var items []store.OutboxItem
		for _, k := range h.outboxKeys() {
			seq := h.outbox[k]
			if seq <= r.After || len(items) == r.Max {
				continue
			}
			b, err := protocol.Encode(&protocol.Frame{Seq: seq, Event: &protocol.Event{InvolvedKind: "Node",
				Name: "n1", Type: "Normal", Reason: k}})
			if err != nil {
				t.Fatal(err)
			}
			items = append(items, store.OutboxItem{Seq: seq, Key: k, Frame: b})
		}
		h.step(t, OutboxRead{Items: items})
	}
}

func refs(rs []protocol.ObjectRef) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.UID+"@"+r.ResourceVersion)
	}
	return fmt.Sprint(s)
}

// parseFrame reads a frame of a recv command.
func parseFrame(line string) (*protocol.Frame, error) {
	w := strings.Fields(line)
	if len(w) == 0 {
		return nil, errors.New("empty")
	}
	seqArg := func(i int) (uint64, error) {
		if len(w) <= i {
			return 0, errors.New("no seq")
		}
		return strconv.ParseUint(w[i], 10, 64)
	}
	opt := func(key string) (string, bool) {
		for _, x := range w {
			if v, ok := strings.CutPrefix(x, key+"="); ok {
				return v, true
			}
			if x == key {
				return "", true
			}
		}
		return "", false
	}
	switch w[0] {
	case "upsert":
		seq, err := seqArg(1)
		if err != nil || len(w) < 3 {
			return nil, fmt.Errorf("upsert SEQ UID: %v", err)
		}
		uid := w[2]
		rv, ok := opt("rv")
		if !ok {
			rv = "1"
		}
		data, err := protocol.EncodePod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: uid,
			UID: types.UID(uid), ResourceVersion: rv}})
		if err != nil {
			return nil, err
		}
		if _, bad := opt("bad"); bad {
			data = []byte{0xff, 0x01}
		}
		return &protocol.Frame{Seq: seq, Upsert: &protocol.Upsert{Object: protocol.Object{Kind: protocol.KindPod,
			UID: uid, Namespace: "ns", Name: uid, ResourceVersion: rv, Data: data}}}, nil
	case "delete":
		seq, err := seqArg(1)
		if err != nil || len(w) < 3 {
			return nil, fmt.Errorf("delete SEQ UID: %v", err)
		}
		return &protocol.Frame{Seq: seq, Delete: &protocol.Delete{Kind: protocol.KindPod, UID: w[2], Namespace: "ns", Name: w[2]}}, nil
	case "ack":
		a := &protocol.Ack{}
		for _, x := range w[1:] {
			if r, ok := strings.CutPrefix(x, "reject="); ok {
				seq, reason, _ := strings.Cut(r, ":")
				n, err := strconv.ParseUint(seq, 10, 64)
				if err != nil {
					return nil, err
				}
				a.Rejected = append(a.Rejected, protocol.Rejection{Seq: n, Reason: reason})
				continue
			}
			n, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return nil, err
			}
			a.Seqs = append(a.Seqs, n)
		}
		return &protocol.Frame{Ack: a}, nil
	case "error":
		if len(w) < 2 {
			return nil, errors.New("error CODE")
		}
		codes := map[string]protocol.ErrorCode{"UnknownMessage": protocol.ErrorUnknownMessage,
			"BadFrame": protocol.ErrorBadFrame, "Replaced": protocol.ErrorReplaced, "Unauthorized": protocol.ErrorUnauthorized}
		code, ok := codes[w[1]]
		if !ok {
			return nil, fmt.Errorf("unknown code %s", w[1])
		}
		e := &protocol.Error{Code: code, Message: "from the script"}
		if s, ok := opt("seq"); ok {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return nil, err
			}
			e.Seq = n
		}
		return &protocol.Frame{Error: e}, nil
	case "heartbeat":
		return &protocol.Frame{Heartbeat: &protocol.Heartbeat{}}, nil
	case "resync-done":
		return &protocol.Frame{ResyncDone: &protocol.ResyncDone{Upserts: 1}}, nil
	case "cert":
		return &protocol.Frame{CertIssued: &protocol.CertIssued{Certificate: []byte("CERT")}}, nil
	case "podstatus":
		seq, err := seqArg(1)
		if err != nil {
			return nil, err
		}
		return &protocol.Frame{Seq: seq, PodStatus: &protocol.PodStatus{UID: "u", Namespace: "ns", Name: "p"}}, nil
	}
	return nil, fmt.Errorf("unknown frame %s", w[0])
}
