package hub

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tether-edge/tether/protocol"
)

func peers(loads ...int) []PeerLoad {
	var out []PeerLoad
	for i, n := range loads {
		out = append(out, PeerLoad{Addr: string(rune('a' + i)), Sessions: n, Ready: true})
	}
	return out
}

// TestRebalancer steps one Rebalancer through a script per case: each
// step is the time since the start, what it sees, and the sheds and reason
// wanted.
func TestRebalancer(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 11, 0, 0, 0, time.UTC)
	type step struct {
		at     time.Duration
		in     RebalanceInput
		shed   int
		reason string // a substring of the reason
	}
	// in: own sessions now and when the peers were asked (unchanged
	// unless gained is set).
	in := func(own int, ready bool, p []PeerLoad, at time.Duration) RebalanceInput {
		return RebalanceInput{Sessions: own, Ready: ready, Peers: p, PeersAt: t0.Add(at), SessionsAtPeers: own}
	}
	gained := func(in RebalanceInput, n int) RebalanceInput { in.SessionsAtPeers -= n; return in }
	starting := func(p []PeerLoad, i int) []PeerLoad { p[i].Ready = false; return p }
	cfg := RebalanceConfig{Rate: 10, Settle: 15 * time.Second}
	for _, c := range []struct {
		name  string
		cfg   RebalanceConfig
		steps []step
	}{
		{"one replica: off", cfg, []step{
			{0, in(1000, true, nil, 0), 0, "no live peer"},
			{time.Minute, in(1000, true, nil, time.Minute), 0, "no live peer"},
		}},
		{"a replica back with 0: the others move their excess at Rate, after Settle", cfg, []step{
			{0, in(500, true, starting(peers(500, 0), 1), 0), 0, "starting or draining"},
			{time.Second, in(500, true, peers(500, 0), time.Second), 0, "replicas changed"},
			{15 * time.Second, in(500, true, peers(500, 0), 15*time.Second), 0, "replicas changed"},
			// Settled: share 334; 166 over; room 334 on the peer with 0.
			{16 * time.Second, in(500, true, peers(500, 0), 16*time.Second), 1, "166 over share 334, room 334"},
			{17 * time.Second, in(499, true, peers(500, 0), 16*time.Second), 10, "over share"},
			{17500 * time.Millisecond, in(489, true, peers(500, 0), 16*time.Second), 5, "over share"},
		}},
		{"hysteresis: within share+slack nothing moves; once started, down to share", cfg, []step{
			{0, in(340, true, peers(330, 330), 0), 0, "replicas changed"},
			{20 * time.Second, in(340, true, peers(330, 330), 20*time.Second), 0, "within share 334 + slack 16"},
			{21 * time.Second, in(360, true, peers(320, 320), 21*time.Second), 1, "26 over share 334"},
			{23 * time.Second, in(340, true, peers(330, 330), 23*time.Second), 6, "6 over share 334"},
			{25 * time.Second, in(334, true, peers(333, 333), 25*time.Second), 0, "at share"},
			{26 * time.Second, in(345, true, peers(330, 325), 26*time.Second), 0, "within share"},
		}},
		{"a peer below share-slack: a replica above share, within share+slack, moves down to share", cfg, []step{
			{0, in(12, true, peers(12, 6), 0), 0, "replicas changed"},
			// Without it, 12, 12 and 6 would stay: share 10, slack 2.
			{20 * time.Second, in(12, true, peers(12, 6), 20*time.Second), 1, "2 over share 10, room 4 on the peers (peer b below share - slack 2)"},
			{21 * time.Second, in(11, true, peers(12, 6), 20*time.Second), 1, "1 over share 10"},
			{22 * time.Second, in(10, true, peers(12, 7), 22*time.Second), 0, "at share 10"},
			// The peer at share-slack: not short; one at share moves nothing.
			{30 * time.Second, in(11, true, peers(11, 8), 30*time.Second), 0, "within share 10 + slack 2"},
			{31 * time.Second, in(10, true, peers(13, 7), 31*time.Second), 0, "within share 10 + slack 2"},
		}},
		{"sheds not yet seen by the peers use up their room", cfg, []step{
			{0, in(30, true, peers(0, 0), 0), 0, "replicas changed"},
			{20 * time.Second, in(30, true, peers(0, 0), 20*time.Second), 1, "20 over share 10, room 20"},
			{21 * time.Second, in(29, true, peers(0, 0), 20*time.Second), 10, "19 over share 10, room 19"},
			{22 * time.Second, in(19, true, peers(0, 0), 20*time.Second), 9, "room 9"},
			{23 * time.Second, in(10, true, peers(0, 0), 20*time.Second), 0, "at share 10, or no room on the peers (0)"},
			// Figures of after the sheds landed: 20 on the peers, 10 here.
			{25 * time.Second, in(10, true, peers(10, 10), 25*time.Second), 0, "within share"},
		}},
		{"a session sent away that the peers' figures already show is not counted twice", cfg, []step{
			{0, in(30, true, peers(0, 0), 0), 0, "replicas changed"},
			{20 * time.Second, in(30, true, peers(0, 0), 20*time.Second), 1, "20 over share 10, room 20"},
			{20500 * time.Millisecond, in(29, true, peers(1, 0), 20400*time.Millisecond), 5, "19 over share 10, room 19"},
		}},
		{"this replica draining or starting: nothing moves, and it settles again", cfg, []step{
			{0, in(600, true, peers(0, 0), 0), 0, "replicas changed"},
			{20 * time.Second, in(600, false, peers(0, 0), 20*time.Second), 0, "not ready"},
			{30 * time.Second, in(600, true, peers(0, 0), 30*time.Second), 0, "replicas changed"},
			{46 * time.Second, in(600, true, peers(0, 0), 46*time.Second), 1, "over share 200"},
		}},
		{"a peer draining: nothing moves; gone, the others settle again", cfg, []step{
			{20 * time.Second, in(500, true, peers(500, 0), 20*time.Second), 0, "replicas changed"},
			{40 * time.Second, in(500, true, starting(peers(500, 0), 0), 40*time.Second), 0, "starting or draining"},
			{41 * time.Second, in(500, true, peers(0), 41*time.Second), 0, "replicas changed"},
			{57 * time.Second, in(510, true, peers(490), 57*time.Second), 0, "within share 500"},
		}},
		{"edges arriving since the peers' figures (a peer began draining after answering): fresher figures first", cfg, []step{
			{0, in(10, true, peers(10, 10), 0), 0, "replicas changed"},
			{20 * time.Second, in(10, true, peers(10, 10), 20*time.Second), 0, "within share 10 + slack 2"},
			// The third replica drains: 5 of its edges here, its figures
			// still say 10. Counted twice, 15 looks 3 over share 12.
			{21 * time.Second, gained(in(15, true, peers(10, 10), 20*time.Second), 5), 0, "5 sessions arrived since the peers' figures"},
			// Asked again: it answers not ready.
			{21300 * time.Millisecond, in(15, true, starting(peers(13, 2), 1), 21300*time.Millisecond), 0, "starting or draining"},
			// Gone: 15+15 over two, within share.
			{40 * time.Second, in(15, true, peers(15), 40*time.Second), 0, "replicas changed"},
			{56 * time.Second, in(15, true, peers(15), 56*time.Second), 0, "within share 15"},
		}},
		{"sessions sent away landing back here: fresher figures, then the moves go on", cfg, []step{
			{0, in(30, true, peers(0, 0), 0), 0, "replicas changed"},
			{20 * time.Second, in(30, true, peers(0, 0), 20*time.Second), 1, "20 over share 10"},
			{21 * time.Second, gained(in(30, true, peers(0, 0), 20*time.Second), 1), 0, "1 sessions arrived"},
			{21300 * time.Millisecond, in(30, true, peers(0, 0), 21300*time.Millisecond), 3, "19 over share 11"},
		}},
		{"a peer killed (no answer) and back", cfg, []step{
			{0, in(334, true, peers(333, 333), 0), 0, "replicas changed"},
			{20 * time.Second, in(500, true, peers(500), 20*time.Second), 0, "replicas changed"},
			{40 * time.Second, in(500, true, peers(500), 40*time.Second), 0, "within share 500"},
			{41 * time.Second, in(500, true, peers(500, 0), 41*time.Second), 0, "replicas changed"},
			{56 * time.Second, in(500, true, peers(500, 0), 56*time.Second), 1, "166 over share 334"},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := NewRebalancer(c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range c.steps {
				out := r.Step(t0.Add(s.at), s.in)
				if out.Shed != s.shed || !strings.Contains(out.Reason, s.reason) {
					t.Fatalf("step %d at %s: shed %d (%s), want %d (%s)", i, s.at, out.Shed, out.Reason, s.shed, s.reason)
				}
			}
		})
	}
}

func TestRebalanceConfig(t *testing.T) {
	c := RebalanceConfig{}
	if err := c.validate(); err != nil || c.Rate != 20 || c.Settle != 15*time.Second {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	for _, bad := range []RebalanceConfig{{Rate: -1}, {Settle: -time.Second}, {Slack: -1}} {
		if err := bad.validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// The hub's rebalancing loop: nothing moves while the peer starts; once it
// is ready, the excess over the share is sent away with ShuttingDown, and
// nothing more (the peer's figures showing what landed there).
func TestRebalanceSendsExcessAway(t *testing.T) {
	var (
		mu    sync.Mutex
		ready bool
		h     *Hub
	)
	peerLoads := func(context.Context) ([]PeerLoad, error) {
		mu.Lock()
		defer mu.Unlock()
		if h == nil {
			return nil, nil
		}
		return []PeerLoad{{Addr: "peer-a", Sessions: int(h.Stats().Rebalanced), Ready: ready}}, nil
	}
	s := serveHub(t, Config{PeerLoads: peerLoads, RebalancePoll: 20 * time.Millisecond,
		Rebalance: RebalanceConfig{Rate: 1000, Settle: 200 * time.Millisecond}}, nopUpstream{})
	url := "wss://" + s.addr + Path
	mu.Lock()
	h = s.h
	mu.Unlock()
	var edges []*fakeEdge
	for i := range 8 {
		node := fmt.Sprintf("n%d", i)
		e, err := dialAs(t, url, issueCert(t, node, "id-"+node), node, nil)
		if err != nil {
			t.Fatal(err)
		}
		e.recv() // ResyncDone
		edges = append(edges, e)
	}
	time.Sleep(500 * time.Millisecond)
	if st := h.Stats(); st.Rebalanced != 0 || st.Sessions != 8 {
		t.Fatalf("the peer starting: %d sent away, %d sessions", st.Rebalanced, st.Sessions)
	}
	mu.Lock()
	ready = true
	mu.Unlock()
	waitFor(t, "4 sessions sent away", func() bool { return h.Stats().Rebalanced == 4 })
	time.Sleep(time.Second) // settle again after the change, and more
	if st := h.Stats(); st.Rebalanced != 4 || st.Sessions != 4 {
		t.Fatalf("balanced at 4 and 4: %d sent away, %d sessions", st.Rebalanced, st.Sessions)
	}
	away := 0
	for _, e := range edges {
		select {
		case f := <-e.frames:
			if f == nil || f.Error == nil || f.Error.Code != protocol.ErrorShuttingDown {
				t.Fatalf("an edge got %v, want Error ShuttingDown", f)
			}
			away++
		default:
		}
	}
	if away != 4 {
		t.Fatalf("%d edges told to go, want 4", away)
	}
}
