package hub

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/tether-edge/tether/protocol"
)

// Rebalancing: replicas behind a Service share the edges as the load
// balancer spread them when they connected. A replica that restarts (or
// joins) gets none of the edges that stayed connected elsewhere, and would
// keep 0 for good. So each replica learns the sessions of its live peers
// (PeerLoad, asked over the peer channel) and, when it holds clearly more
// than its fair share, asks the excess of its edges to reconnect, slowly,
// with the message a drain sends: the load balancer spreads them again.
// Nothing per node is stored anywhere; the decision is the pure Rebalancer.

// landTime is how long an edge sent away takes to land on another replica
// (a version-5 edge redials within 200 ms; its new session is counted once
// the Hello is answered).
const landTime = 2 * time.Second

// PeerLoad is what a peer replica says of itself.
type PeerLoad struct {
	// Addr names the peer (its peer address).
	Addr string
	// Sessions is how many edge sessions it holds.
	Sessions int
	// Ready is false while it starts (caches not synced, not listening yet)
	// or drains.
	Ready bool
}

// RebalanceConfig tunes the Rebalancer.
type RebalanceConfig struct {
	// Rate is the most sessions per second a replica sends away to
	// rebalance (default 20: a move costs the edge a reconnect and the hub
	// a resync; 20/s is 2% of the default SessionRate).
	Rate float64
	// Settle is how long the set of live peers and their readiness must
	// stay unchanged (and this replica ready) before anything moves
	// (default 15s): nothing moves while a replica starts or drains, or
	// right after, while the edges a drain or a kill sent away land.
	Settle time.Duration
	// Slack is the band around the fair share within which a replica does
	// nothing: it starts sending edges away only above share+Slack, or
	// above share while a peer holds less than share-Slack (without that,
	// R-1 replicas each just within share+Slack would leave the last one
	// at share-(R-1)*Slack for good), and stops at share (hysteresis).
	// Default: the larger of 2 and 5% of the share, computed at each step
	// (Slack 0); a negative Slack is refused.
	Slack int
}

func (c *RebalanceConfig) validate() error {
	setDefault(&c.Rate, 20)
	setDefault(&c.Settle, 15*time.Second)
	if c.Rate < 0 || c.Settle < 0 || c.Slack < 0 {
		return fmt.Errorf("hub: rebalance rate %g, settle %s, slack %d: must not be negative", c.Rate, c.Settle, c.Slack)
	}
	return nil
}

// RebalanceInput is what a Rebalancer step sees.
type RebalanceInput struct {
	// Sessions is how many sessions this replica holds; Ready whether it
	// serves (caches synced, listening, not draining).
	Sessions int
	Ready    bool
	// Peers are the peers that answered, as of PeersAt. A peer that did
	// not answer is not live (stopped, killed, unreachable).
	Peers   []PeerLoad
	PeersAt time.Time
	// SessionsAtPeers is how many sessions this replica held just before
	// the peers were asked. More now means edges arrived that the peers'
	// figures may still count where they were (a peer that began draining
	// or died since): nothing moves until fresher figures (Refresh).
	SessionsAtPeers int
}

// RebalanceOutput is a Rebalancer step's decision.
type RebalanceOutput struct {
	// Shed is how many sessions to send away now (pick them at random
	// among those old enough: see Rebalancer).
	Shed int
	// Share is the fair share, ceil(total/replicas), 0 when not computed;
	// Reason says why Shed is what it is.
	Share  int
	Reason string
	// Refresh asks for the peers' figures again now: this replica would
	// send sessions away, but it gained some since the figures were taken.
	Refresh bool
}

// Rebalancer decides when a replica sends edges away. Step it every few
// hundred milliseconds with the time and what it sees; it is not safe for
// concurrent use.
//
// With R live replicas (this one and the peers that answered) holding T
// sessions, the share is ceil(T/R). A replica above share+slack, or above
// share while a peer is below share-slack, starts
// sending sessions away at Rate, and goes on until it is at its share or
// the peers below their share have room for no more (the sessions sent
// away since the peers' figures were taken count as landed there). It
// does nothing with no live peer, while it or a peer is not ready, and
// for Settle after the set of live peers or their readiness changed; and
// before sending any away it wants the peers' figures taken after its own
// last gain (a peer that began draining after answering still counts the
// edges landing here).
//
// Bound: after a replica comes back ready, the first move is at most Settle
// (plus a peer poll) later; the moves then take about
// (sessions to move)/Rate per replica above its share, times the rounds a
// random load balancer needs (each session sent away lands on each of the
// R replicas with probability 1/R, so the excess shrinks by about 1/R per
// round). A session is not sent away twice within Settle (the shell picks
// among older sessions), so no edge flaps between replicas.
type Rebalancer struct {
	cfg RebalanceConfig
	// members is the last set of live peers and their readiness; since
	// when it (and this replica's readiness) has not changed.
	members string
	since   time.Time
	// active is set between crossing share+slack and reaching share.
	active bool
	// tokens paces the sheds (Rate, burst a second's worth, one at the
	// start); last is the time of the last step.
	tokens float64
	last   time.Time
	// shed are the sheds not yet seen in the peers' figures, oldest first.
	shed []shedMark
}

// shedMark is a session sent away: when, and the peers' total then.
type shedMark struct {
	at    time.Time
	peers int
}

// NewRebalancer returns a Rebalancer; cfg's zero fields take the defaults.
func NewRebalancer(cfg RebalanceConfig) (*Rebalancer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Rebalancer{cfg: cfg}, nil
}

// Step decides what to do at now.
func (r *Rebalancer) Step(now time.Time, in RebalanceInput) RebalanceOutput {
	dt := 0.0
	if !r.last.IsZero() {
		dt = now.Sub(r.last).Seconds()
	}
	r.last = now
	// The sheds the peers' figures do not show yet: those made less than
	// landTime before the figures were taken.
	r.shed = slices.DeleteFunc(r.shed, func(m shedMark) bool { return !m.at.After(in.PeersAt.Add(-landTime)) })

	members := membersOf(in)
	if members != r.members || r.since.IsZero() {
		r.members, r.since = members, now
	}
	idle := func(reason string) RebalanceOutput {
		r.active, r.tokens = false, 0
		return RebalanceOutput{Reason: reason}
	}
	if !in.Ready {
		return idle("this replica is not ready")
	}
	if len(in.Peers) == 0 {
		return idle("no live peer")
	}
	for _, p := range in.Peers {
		if !p.Ready {
			return idle("peer " + p.Addr + " is starting or draining")
		}
	}
	if now.Sub(r.since) < r.cfg.Settle {
		return idle("replicas changed " + now.Sub(r.since).Round(time.Millisecond).String() + " ago")
	}
	peersTotal := 0
	for _, p := range in.Peers {
		peersTotal += p.Sessions
	}
	// The sessions sent away and not yet in the peers' figures are moving:
	// counted in the total, and as taking the peers' room. Those the
	// peers' total grew by since the oldest of them count as landed.
	moving := 0
	if len(r.shed) > 0 {
		moving = max(0, len(r.shed)-max(0, peersTotal-r.shed[0].peers))
	}
	total, replicas := in.Sessions+peersTotal+moving, len(in.Peers)+1
	share := (total + replicas - 1) / replicas
	slack := r.cfg.Slack
	if slack == 0 {
		slack = max(2, share/20)
	}
	room, short := -moving, ""
	for _, p := range in.Peers {
		room += max(0, share-p.Sessions)
		if p.Sessions < share-slack {
			short = p.Addr
		}
	}
	excess := in.Sessions - share
	out := RebalanceOutput{Share: share}
	switch {
	case !r.active && in.Sessions <= share+slack && (short == "" || excess <= 0):
		out.Reason = fmt.Sprintf("within share %d + slack %d", share, slack)
		r.tokens = 0
		return out
	case excess <= 0 || room <= 0:
		r.active, r.tokens = false, 0
		out.Reason = fmt.Sprintf("at share %d, or no room on the peers (%d)", share, room)
		return out
	case in.Sessions > in.SessionsAtPeers:
		// Where did they come from? A peer that began draining or died
		// after answering still counts the edges landing here: counted
		// twice, they make this replica look above its share. Nothing
		// moves before fresher figures.
		out.Refresh = true
		out.Reason = fmt.Sprintf("%d over share %d, but %d sessions arrived since the peers' figures",
			excess, share, in.Sessions-in.SessionsAtPeers)
		return out
	}
	if !r.active {
		r.active, r.tokens = true, 1 // one at once, then at Rate
	} else {
		r.tokens = min(r.tokens+dt*r.cfg.Rate, max(1, r.cfg.Rate)) // burst: a second's worth
	}
	n := min(int(r.tokens), excess, room)
	r.tokens -= float64(n)
	for range n {
		r.shed = append(r.shed, shedMark{at: now, peers: peersTotal})
	}
	out.Shed = n
	out.Reason = fmt.Sprintf("%d over share %d, room %d on the peers", excess, share, room)
	if short != "" {
		out.Reason += fmt.Sprintf(" (peer %s below share - slack %d)", short, slack)
	}
	return out
}

// membersOf names the set of live peers and the readiness of all.
func membersOf(in RebalanceInput) string {
	names := make([]string, 0, len(in.Peers)+1)
	for _, p := range in.Peers {
		names = append(names, fmt.Sprintf("%s=%t", p.Addr, p.Ready))
	}
	slices.Sort(names)
	return fmt.Sprintf("self=%t ", in.Ready) + strings.Join(names, ",")
}

// Load is what this replica says of itself to its peers: its sessions, and
// whether it serves (caches synced, listening, not draining).
func (h *Hub) Load() (sessions int, ready bool) {
	h.mu.Lock()
	n := len(h.sessions)
	h.mu.Unlock()
	return n, h.Listening() && h.source.Ready()
}

// rebalance steps a Rebalancer every 250 ms (jittered) until ctx ends,
// asking the peers their loads every RebalancePoll, and sends away the
// sessions it says, each with Error ShuttingDown (a version-5 edge
// reconnects at once, through the load balancer), picked at random among
// those older than Settle.
func (h *Hub) rebalance(ctx context.Context) {
	r, err := NewRebalancer(h.cfg.Rebalance)
	if err != nil { // validated in New
		h.log.Error("rebalancing off", slog.Any("err", err))
		return
	}
	var (
		peers   []PeerLoad
		peersAt time.Time
		polled  time.Time
		atPeers int  // this replica's sessions when peers were last asked
		refresh bool // ask them again at the next step
		reason  string
	)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(time.Duration(200+rand.IntN(100)) * time.Millisecond)
		now := time.Now()
		if refresh || now.Sub(polled) >= h.cfg.RebalancePoll {
			polled, refresh = now, false
			atPeers, _ = h.Load()
			pctx, cancel := context.WithTimeout(ctx, h.cfg.RebalancePoll)
			p, err := h.cfg.PeerLoads(pctx)
			cancel()
			if err != nil {
				h.log.Debug("rebalancing: peers not known", slog.Any("err", err))
			}
			peers, peersAt = p, time.Now()
		}
		sessions, ready := h.Load()
		out := r.Step(time.Now(), RebalanceInput{Sessions: sessions, Ready: ready, Peers: peers, PeersAt: peersAt,
			SessionsAtPeers: atPeers})
		refresh = out.Refresh
		if out.Shed > 0 && reason == "" {
			h.log.Info("rebalancing: sending sessions away", slog.Int("sessions", sessions),
				slog.Int("share", out.Share), slog.Int("peers", len(peers)), slog.String("why", out.Reason))
		}
		if out.Shed == 0 {
			reason = ""
			continue
		}
		reason = out.Reason
		h.shedSessions(out.Shed, now.Add(-h.cfg.Rebalance.Settle))
	}
}

// shedSessions sends n sessions started before born away, picked at random.
func (h *Hub) shedSessions(n int, born time.Time) {
	h.mu.Lock()
	var old []*session
	for _, s := range h.sessions {
		if s.started.Before(born) {
			old = append(old, s)
		}
	}
	h.mu.Unlock()
	rand.Shuffle(len(old), func(i, j int) { old[i], old[j] = old[j], old[i] })
	for _, s := range old[:min(n, len(old))] {
		if s.stop(&protocol.Error{Code: protocol.ErrorShuttingDown, Message: "rebalancing the cloudcore replicas: reconnect"}) {
			h.stats.rebalanced.Add(1)
		}
	}
}
