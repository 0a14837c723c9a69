package delivery

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tether-edge/tether/protocol"
)

// world is a source, a connection that delivers in order and an edge that
// applies what it gets in order and acknowledges it, around one engine.
type world struct {
	t   *testing.T
	rng *rand.Rand
	e   *Engine
	now time.Time
	// src is the source: the version of each object the node should hold;
	// unserved the kinds it does not serve.
	src      map[key]int
	rv       int
	unserved map[protocol.Kind]bool
	// down are the messages on their way to the edge; up the acks on
	// their way back.
	down []Message
	up   []uint64
	// edge is what the edge holds.
	edge      map[key]string
	connected bool
	resynced  bool
	log       []string
}

var worldKeys = func() (ks []key) {
	for _, k := range []protocol.Kind{protocol.KindConfigMap, protocol.KindSecret, protocol.KindDevice, protocol.KindPod} {
		for i := range 3 {
			ks = append(ks, key{k, fmt.Sprintf("%s-%d", k, i)})
		}
	}
	return ks
}()

func (w *world) step(in Input) {
	for i := 0; in != nil; i++ {
		if i == 100 {
			w.fail("the engine is not quiet after 100 steps")
		}
		out := w.e.Step(w.now, in)
		if err := w.e.check(); err != nil {
			w.fail(fmt.Sprintf("after %T: %v", in, err))
		}
		if out.ResyncDone != nil {
			if w.resynced {
				w.fail("a second ResyncDone")
			}
			w.resynced = true
		}
		switch {
		case len(out.Send) > 0:
			var s Sent
			for _, m := range out.Send {
				r := Result{Seq: m.Seq, Bytes: 20}
				if !m.Delete {
					v, ok := w.src[key{m.Object.Kind, m.Object.UID}]
					if !ok {
						r.Outcome = Gone
						s.Results = append(s.Results, r)
						continue
					}
					m.Object.ResourceVersion = strconv.Itoa(v)
				}
				r.ResourceVersion = m.Object.ResourceVersion
				w.down = append(w.down, m)
				s.Results = append(s.Results, r)
			}
			in = s
		case out.Reconcile:
			var d Desired
			for _, k := range protocol.Kinds {
				if !w.unserved[k] {
					d.Served = append(d.Served, k)
				}
			}
			for _, k := range worldKeys { // in the order of protocol.Kinds
				if v, ok := w.src[k]; ok {
					d.Objects = append(d.Objects, protocol.Object{Kind: k.kind, UID: k.uid, Name: k.uid,
						ResourceVersion: strconv.Itoa(v)})
				}
			}
			in = d
		default:
			in = nil
		}
	}
}

func (w *world) fail(msg string) {
	w.t.Helper()
	w.t.Fatalf("%s\nops:\n%v", msg, w.log)
}

func (w *world) connect() {
	var inv []protocol.ObjectRef
	for _, k := range slices.SortedFunc(maps.Keys(w.edge), func(a, b key) int { return cmpKey(a, b) }) {
		inv = append(inv, protocol.ObjectRef{Kind: k.kind, UID: k.uid, ResourceVersion: w.edge[k]})
	}
	old, newer := protocol.SplitInventory(inv)
	w.connected, w.resynced = true, false
	w.step(Connected{Inventory: old, NewInventory: newer})
}

func cmpKey(a, b key) int {
	if a.kind != b.kind {
		return int(a.kind) - int(b.kind)
	}
	switch {
	case a.uid < b.uid:
		return -1
	case a.uid > b.uid:
		return 1
	}
	return 0
}

// deliver has the edge apply the first n messages on their way and queue
// their acks.
func (w *world) deliver(n int) {
	n = min(n, len(w.down))
	for _, m := range w.down[:n] {
		k := key{m.Object.Kind, m.Object.UID}
		if m.Delete {
			delete(w.edge, k)
		} else {
			w.edge[k] = m.Object.ResourceVersion
		}
		w.up = append(w.up, m.Seq)
	}
	w.down = w.down[n:]
}

// ackN sends the first n acks on their way, in one Ack, shuffled.
func (w *world) ackN(n int) {
	n = min(n, len(w.up))
	seqs := slices.Clone(w.up[:n])
	w.up = w.up[n:]
	w.rng.Shuffle(len(seqs), func(i, j int) { seqs[i], seqs[j] = seqs[j], seqs[i] })
	w.step(Acked{Seqs: seqs})
}

// TestConverges runs random changes, deliveries, acks, lost acks,
// resends and broken connections, then lets the connection heal: the edge
// must end up holding exactly the desired set, and the session must have
// finished its resync.
func TestConverges(t *testing.T) {
	for seed := range uint64(400) {
		w := &world{t: t, rng: rand.New(rand.NewPCG(seed, 1)), src: map[key]int{}, unserved: map[protocol.Kind]bool{},
			edge: map[key]string{}, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		window := 1 + w.rng.IntN(5)
		e, err := New(Config{Window: window, ResendAfter: 10 * time.Second, AliveInterval: 3 * time.Second,
			Version: protocol.Version, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		w.e = e
		w.connect()
		for range 300 {
			op := w.rng.IntN(100)
			w.log = append(w.log, strconv.Itoa(op))
			switch {
			case op < 25: // the source changes an object, or deletes it
				k := worldKeys[w.rng.IntN(len(worldKeys))]
				if _, ok := w.src[k]; ok && w.rng.IntN(3) == 0 {
					delete(w.src, k)
				} else {
					w.rv++ // resource versions grow across objects, as in the API server
					w.src[k] = w.rv
				}
				if w.connected && w.rng.IntN(4) != 0 { // sometimes the notification is coalesced with a later one
					w.step(Changed{})
				}
			case op < 50:
				w.deliver(1 + w.rng.IntN(3))
			case op < 75:
				if w.connected {
					w.ackN(1 + w.rng.IntN(3))
				}
			case op < 78: // an ack lost
				if len(w.up) > 0 {
					w.up = w.up[1:]
				}
			case op < 88:
				w.now = w.now.Add(time.Duration(w.rng.IntN(6)) * time.Second)
				w.step(Tick{})
			case op < 91: // a kind not served for a while
				k := []protocol.Kind{protocol.KindDevice, protocol.KindSecret}[w.rng.IntN(2)]
				w.unserved[k] = !w.unserved[k]
			case op < 96: // the connection breaks: what is on its way may or may not arrive
				if w.connected {
					w.deliver(w.rng.IntN(len(w.down) + 1))
					w.down, w.up = nil, nil
					w.step(Disconnected{})
					w.connected = false
				}
			default:
				if !w.connected {
					w.connect()
				}
			}
		}
		// Heal: every kind served, connected, everything delivered and
		// acknowledged, resends when due.
		clear(w.unserved)
		if !w.connected {
			w.connect()
		}
		w.step(Changed{})
		for i := 0; ; i++ {
			if i == 50 {
				w.fail(fmt.Sprintf("seed %d: not quiet after healing: %d in flight", seed, len(w.e.inflight)))
			}
			w.deliver(len(w.down))
			w.ackN(len(w.up))
			if len(w.e.inflight) == 0 && !w.e.reconcile && len(w.down) == 0 {
				break
			}
			w.now = w.now.Add(10 * time.Second)
			w.step(Tick{})
		}
		want := map[key]string{}
		for k, v := range w.src {
			want[k] = strconv.Itoa(v)
		}
		if !maps.Equal(w.edge, want) {
			w.fail(fmt.Sprintf("seed %d window %d: the edge holds %v, want %v", seed, window, w.edge, want))
		}
		if !w.resynced {
			w.fail(fmt.Sprintf("seed %d: no ResyncDone", seed))
		}
	}
}

// A resync that deletes a whole inventory walks it about once, though it
// reconciles at every batch of acks (walking it at every batch would visit
// about n²/2/Window objects).
func TestResyncDeletesWalkedOnce(t *testing.T) {
	const n = 20_000
	e, err := New(Config{Window: 256, ResendAfter: time.Minute, Version: protocol.Version})
	if err != nil {
		t.Fatal(err)
	}
	inv := make([]protocol.ObjectRef, n)
	for i := range inv {
		inv[i] = protocol.ObjectRef{Kind: protocol.KindPod, UID: fmt.Sprintf("%07d", i), ResourceVersion: "1"}
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var m Metrics
	var unacked []uint64
	var done *Resync
	deletes := 0
	step := func(in Input) {
		for in != nil {
			out := e.Step(now, in)
			m.DeleteScans += out.Metrics.DeleteScans
			m.DeleteScanned += out.Metrics.DeleteScanned
			if out.ResyncDone != nil {
				done = out.ResyncDone
			}
			switch {
			case len(out.Send) > 0:
				var s Sent
				for _, msg := range out.Send {
					if !msg.Delete {
						t.Fatalf("want deletes only, got %+v", msg)
					}
					deletes++
					unacked = append(unacked, msg.Seq)
					s.Results = append(s.Results, Result{Seq: msg.Seq, Bytes: 20})
				}
				in = s
			case out.Reconcile:
				in = Desired{Served: protocol.Kinds}
			default:
				in = nil
			}
		}
	}
	step(Connected{Inventory: inv})
	for len(unacked) > 0 {
		k := min(8, len(unacked))
		batch := slices.Clone(unacked[:k])
		unacked = unacked[k:]
		step(Acked{Seqs: batch})
	}
	if done == nil || done.Deletes != n || deletes != n {
		t.Fatalf("ResyncDone %+v after %d deletes, want %d", done, deletes, n)
	}
	if m.DeleteScanned > 2*n {
		t.Fatalf("%d walks visited %d objects; want at most %d", m.DeleteScans, m.DeleteScanned, 2*n)
	}
}
