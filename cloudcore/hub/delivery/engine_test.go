package delivery

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/tether-edge/tether/protocol"
)

// The scripts in testdata drive an engine through the loop the hub's
// session runs: after every Step the harness queues Output.Send (answering
// with Sent, from its model of the source) and answers Reconcile with the
// model's desired set, until the engine is quiet; each step's output is
// printed. Regenerate the expected outputs with
//
//	go test ./cloudcore/hub/delivery -run TestScripts -rewrite
//
// Commands:
//
//	init [window=N] [resend=D] [alive=D] [version=N]   a new engine (defaults 256, 30s, off, protocol.Version)
//	set Kind/uid@rv ... [too-large] [race]   objects in the source (no step); race: listed by
//	                                          the desired set but gone when encoded
//	del Kind/uid ...                         objects removed from the source (no step)
//	unserve Kind ... / serve Kind ...        kinds the source does not serve / serves again
//	connect [Kind/uid@rv ...]                Connected with this inventory
//	kick                                     Changed (the source says the node's objects changed)
//	ack seq ...                              Acked
//	reject seq ... [reason=R]                Acked, the seqs rejected
//	tick [D]                                 the clock moves D (default: to Output.Timer), then Tick
//	advance D                                the clock moves D, no step
//	disconnect                               Disconnected
//
// Sizes: an encoded Upsert is 100 bytes, a Delete 20.
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		h := &harness{t: t}
		h.init(Config{Window: 256, ResendAfter: 30 * time.Second, Version: protocol.Version, Seed: 1})
		datadriven.RunTest(t, path, h.run)
	})
}

type srcObj struct {
	rv             string
	tooLarge, race bool
}

type harness struct {
	t          *testing.T
	e          *Engine
	start, now time.Time
	timer      time.Time
	objs       map[key]*srcObj
	unserved   map[protocol.Kind]bool
	b          strings.Builder
}

func (h *harness) init(cfg Config) {
	e, err := New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.e = e
	h.start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h.now, h.timer = h.start, time.Time{}
	h.objs = map[key]*srcObj{}
	h.unserved = map[protocol.Kind]bool{}
}

func (h *harness) run(t *testing.T, d *datadriven.TestData) string {
	h.b.Reset()
	switch d.Cmd {
	case "init":
		cfg := Config{Window: 256, ResendAfter: 30 * time.Second, Version: protocol.Version, Seed: 1}
		for _, a := range d.CmdArgs {
			v := a.SingleVal(t)
			var err error
			switch a.Key {
			case "window":
				cfg.Window, err = strconv.Atoi(v)
			case "resend":
				cfg.ResendAfter, err = time.ParseDuration(v)
			case "alive":
				cfg.AliveInterval, err = time.ParseDuration(v)
			case "version":
				var n uint64
				n, err = strconv.ParseUint(v, 10, 32)
				cfg.Version = uint32(n)
			default:
				d.Fatalf(t, "unknown argument %s", a.Key)
			}
			if err != nil {
				d.Fatalf(t, "%s: %v", a.Key, err)
			}
		}
		h.init(cfg)
	case "set":
		tooLarge, race := d.HasArg("too-large"), d.HasArg("race")
		for _, a := range d.CmdArgs {
			if a.Key == "too-large" || a.Key == "race" {
				continue
			}
			r := parseRef(t, d, a.Key)
			h.objs[key{r.Kind, r.UID}] = &srcObj{rv: r.ResourceVersion, tooLarge: tooLarge, race: race}
		}
	case "del":
		for _, a := range d.CmdArgs {
			r := parseRef(t, d, a.Key)
			delete(h.objs, key{r.Kind, r.UID})
		}
	case "unserve", "serve":
		for _, a := range d.CmdArgs {
			h.unserved[parseKind(t, d, a.Key)] = d.Cmd == "unserve"
		}
	case "connect":
		var inv []protocol.ObjectRef
		for _, a := range d.CmdArgs {
			inv = append(inv, parseRef(t, d, a.Key))
		}
		old, newer := protocol.SplitInventory(inv)
		h.step("connected", Connected{Inventory: old, NewInventory: newer})
	case "kick":
		h.step("changed", Changed{})
	case "ack", "reject":
		var in Acked
		for _, a := range d.CmdArgs {
			if a.Key == "reason" {
				continue
			}
			seq, err := strconv.ParseUint(a.Key, 10, 64)
			if err != nil {
				d.Fatalf(t, "seq %s: %v", a.Key, err)
			}
			if d.Cmd == "ack" {
				in.Seqs = append(in.Seqs, seq)
			} else {
				reason := "refused"
				if r, ok := d.Arg("reason"); ok {
					reason = r.SingleVal(t)
				}
				in.Rejected = append(in.Rejected, protocol.Rejection{Seq: seq, Reason: reason})
			}
		}
		h.step("acked", in)
	case "tick", "advance":
		if len(d.CmdArgs) == 1 {
			dur, err := time.ParseDuration(d.CmdArgs[0].Key)
			if err != nil {
				d.Fatalf(t, "%v", err)
			}
			h.now = h.now.Add(dur)
		} else if d.Cmd == "tick" && !h.timer.IsZero() {
			h.now = h.timer
		} else {
			d.Fatalf(t, "%s: want a duration (no timer armed)", d.Cmd)
		}
		if d.Cmd == "tick" {
			h.step(fmt.Sprintf("tick at %s", h.now.Sub(h.start)), Tick{})
		}
	case "disconnect":
		h.step("disconnected", Disconnected{})
	default:
		d.Fatalf(t, "unknown command %s", d.Cmd)
	}
	return h.b.String()
}

// step steps in, then follows the outputs as the session's shell does.
func (h *harness) step(name string, in Input) {
	var timer time.Time
	defer func() {
		// The shell arms its timer after every step; the last one counts.
		if !timer.Equal(h.timer) {
			h.timer = timer
			if timer.IsZero() {
				h.b.WriteString("timer off\n")
			} else {
				fmt.Fprintf(&h.b, "timer at %s\n", timer.Sub(h.start))
			}
		}
	}()
	for i := 0; in != nil; i++ {
		if i == 100 {
			h.t.Fatal("the engine is not quiet after 100 steps")
		}
		out := h.e.Step(h.now, in)
		if err := h.e.check(); err != nil {
			h.t.Fatalf("after %s: %v", name, err)
		}
		h.print(name, out)
		timer = out.Timer
		switch {
		case len(out.Send) > 0:
			in, name = h.sent(out.Send)
		case out.Reconcile:
			in, name = h.desired(), "desired"
		default:
			in = nil
		}
	}
}

func (h *harness) desired() Desired {
	var d Desired
	for _, k := range protocol.Kinds {
		if !h.unserved[k] {
			d.Served = append(d.Served, k)
		}
		var uids []string
		for o := range maps.Keys(h.objs) {
			if o.kind == k {
				uids = append(uids, o.uid)
			}
		}
		slices.Sort(uids)
		for _, uid := range uids {
			d.Objects = append(d.Objects, protocol.Object{Kind: k, UID: uid, Namespace: "ns",
				Name: uid, ResourceVersion: h.objs[key{k, uid}].rv})
		}
	}
	return d
}

func (h *harness) sent(msgs []Message) (Sent, string) {
	var s Sent
	var seqs []string
	for _, m := range msgs {
		r := Result{Seq: m.Seq, Bytes: 20}
		if !m.Delete {
			o := h.objs[key{m.Object.Kind, m.Object.UID}]
			switch {
			case o == nil || o.race:
				r = Result{Seq: m.Seq, Outcome: Gone}
			case o.tooLarge:
				r = Result{Seq: m.Seq, Outcome: TooLarge, ResourceVersion: o.rv}
			default:
				r = Result{Seq: m.Seq, ResourceVersion: o.rv, Bytes: 100}
			}
		}
		s.Results = append(s.Results, r)
		seq := strconv.FormatUint(m.Seq, 10)
		if r.Outcome != Queued {
			seq += ":" + r.Outcome.String()
		}
		seqs = append(seqs, seq)
	}
	return s, "sent " + strings.Join(seqs, " ")
}

func (h *harness) print(name string, out Output) {
	fmt.Fprintf(&h.b, "> %s\n", name)
	if out.Alive {
		h.b.WriteString("  alive\n")
	}
	for _, m := range out.Send {
		o := m.Object
		if m.Delete {
			fmt.Fprintf(&h.b, "  delete %d %s/%s\n", m.Seq, o.Kind, o.UID)
		} else {
			fmt.Fprintf(&h.b, "  upsert %d %s/%s@%s\n", m.Seq, o.Kind, o.UID, o.ResourceVersion)
		}
	}
	for _, r := range out.Rejected {
		fmt.Fprintf(&h.b, "  rejected %d %s/%s: %s\n", r.Seq, r.Kind, r.UID, r.Reason)
	}
	if out.Resent > 0 {
		fmt.Fprintf(&h.b, "  resend %d\n", out.Resent)
	}
	if out.Lost > 0 {
		fmt.Fprintf(&h.b, "  lost %d\n", out.Lost)
	}
	if len(out.AckLatency) > 0 {
		ds := make([]string, len(out.AckLatency))
		for i, d := range out.AckLatency {
			ds[i] = d.String()
		}
		fmt.Fprintf(&h.b, "  ack-latency %s\n", strings.Join(ds, " "))
	}
	if r := out.ResyncDone; r != nil {
		fmt.Fprintf(&h.b, "  resync-done upserts=%d deletes=%d bytes=%d took=%s\n", r.Upserts, r.Deletes, r.Bytes, r.Took)
	}
	var m []string
	for _, c := range []struct {
		name string
		n    int64
	}{{"objects", out.Metrics.ObjectMessages}, {"resyncs", out.Metrics.Resyncs},
		{"resync-messages", out.Metrics.ResyncMessages}, {"resync-bytes", out.Metrics.ResyncBytes},
		{"delete-scans", out.Metrics.DeleteScans}, {"delete-scanned", out.Metrics.DeleteScanned}} {
		if c.n != 0 {
			m = append(m, fmt.Sprintf("%s+%d", c.name, c.n))
		}
	}
	if len(m) > 0 {
		fmt.Fprintf(&h.b, "  metrics %s\n", strings.Join(m, " "))
	}
}

// parseRef parses Kind/uid[@rv].
func parseRef(t *testing.T, d *datadriven.TestData, s string) protocol.ObjectRef {
	kind, rest, ok := strings.Cut(s, "/")
	if !ok {
		d.Fatalf(t, "%s: want Kind/uid@rv", s)
	}
	uid, rv, _ := strings.Cut(rest, "@")
	return protocol.ObjectRef{Kind: parseKind(t, d, kind), UID: uid, ResourceVersion: rv}
}

func parseKind(t *testing.T, d *datadriven.TestData, s string) protocol.Kind {
	for _, k := range protocol.Kinds {
		if k.String() == s {
			return k
		}
	}
	d.Fatalf(t, "unknown kind %s", s)
	return 0
}

// check verifies the engine's invariants.
func (e *Engine) check() error {
	if !e.connected {
		if len(e.inflight)+len(e.acked)+len(e.byKey) != 0 || e.resync != nil {
			return fmt.Errorf("state kept while disconnected")
		}
		return nil
	}
	if len(e.inflight) > e.cfg.Window {
		return fmt.Errorf("%d messages in flight, window %d", len(e.inflight), e.cfg.Window)
	}
	for k, seq := range e.byKey {
		if fl := e.inflight[seq]; fl == nil || fl.key != k {
			return fmt.Errorf("byKey %v: %d is not a message of it in flight", k, seq)
		}
	}
	for seq, fl := range e.inflight {
		if seq > e.seq {
			return fmt.Errorf("seq %d in flight, last sent %d", seq, e.seq)
		}
		if newest, ok := e.byKey[fl.key]; !ok || newest < seq {
			return fmt.Errorf("%d in flight for %v, byKey says %d", seq, fl.key, newest)
		}
	}
	return nil
}
