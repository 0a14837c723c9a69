// Package agent keeps an edge node in sync with the cloud: it holds the
// session with the hub open (reconnecting with back-off), commits every
// object the hub sends to the store before acknowledging it, and sends the
// outbox up in order, removing each entry once the hub acknowledges it.
//
// The delivery decisions (the upstream window, resends, refused frames,
// what a batch from the hub commits and acknowledges) are Engine's, a pure
// state machine (engine.go) tested with scripts (testdata/engine/*.txt).
// The Agent is its shell: one goroutine owns a session and the Engine;
// frames from the hub, outbox changes (store.DB.OutboxChanged) and timers
// arrive on channels and are handled one at a time; frames that arrive
// together are committed in one transaction and acknowledged in one Ack.
package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/edgecore/link"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// Config configures the Agent.
type Config struct {
	// NodeName is the node's Kubernetes name.
	NodeName string
	// Labels are asked for when the hub creates the Node.
	Labels map[string]string
	// Backoff paces reconnects (default 1s doubling up to 2s, each delay
	// drawn from [0, d]; the hub's Welcome.ReconnectMax raises the cap, as
	// it knows how fast its fleet may come back).
	Backoff link.Backoff
	// Window is the most outbox frames sent and not yet acknowledged
	// (default 64).
	Window int
	// ResendAfter sends the outbox again when the oldest frame in flight is
	// unacknowledged this long (default 60s).
	ResendAfter time.Duration
	// NodeStatusInterval is how often the node status is reported when
	// nothing in it changed (default 5m, as the kubelet's
	// nodeStatusReportFrequency). Liveness goes by heartbeats and the
	// cloud's Lease renewals, not by node status.
	NodeStatusInterval time.Duration
	// NodeStatusCheck is how often the node status is built and compared
	// with the one last reported; a change (other than the conditions'
	// timestamps) is reported at once (default 1m, at most
	// NodeStatusInterval).
	NodeStatusCheck time.Duration
	// StableAfter is how long a session must last for the back-off to start
	// over (default 30s).
	StableAfter time.Duration
	// Credentials, if set, renews the node's client certificate in the
	// session (protocol version 2 and later).
	Credentials Credentials
	// Streams, if set, takes each byte stream the hub opens (protocol
	// version 3: the API server's requests to the node's kubelet API); it
	// must not block and reports false to refuse one. Nil refuses them all.
	// A *streams.Listener's Offer is one.
	Streams func(net.Conn) bool
	// MaxStreams is the most streams open at once (default 32); the hub
	// keeps its own cap too.
	MaxStreams int
	// NodeStatusChanged, if set, is where the node status monitor says the
	// node status changed (Signal.Notify), made before the monitor and the
	// Agent; the status is then built and compared with the one last
	// reported at once rather than at the next NodeStatusCheck, and a
	// change is queued in the outbox, connected or not. Default: one of the
	// Agent's own (Agent.NodeStatusChanged).
	NodeStatusChanged *Signal
	// CommitHook, if set, is called after each commit of objects from the
	// hub, before they are acknowledged. It must not block. The simulator
	// times dispatch (API watch event to edge commit) with it.
	CommitHook func(Commit)
	// Reviews, if set, sends the in-cluster API's access reviews to a hub
	// of protocol version 6 or more (protocol.AccessReviewSince) and takes
	// the answers (*accessreview.Cache is one).
	Reviews Reviews
	// Relay, if set, sends the writes of the node's pods to the hub
	// (protocol version 7, protocol.APIRelaySince) and takes the answers
	// (*apirelay.Relay is one).
	Relay Relay
}

// Relay is the API relay of the in-cluster API at the edge: the writes of
// the node's pods.
type Relay interface {
	// Session tells that a session of the protocol version started (up)
	// or ended.
	Session(up bool, version uint32)
	// Next returns the requests to send now.
	Next() []*protocol.APIRequest
	// Wanted receives when Next may have some.
	Wanted() <-chan struct{}
	// Answered takes the hub's answer.
	Answered(*protocol.APIResponse)
}

// Reviews are the access reviews of the in-cluster API at the edge.
type Reviews interface {
	// Session tells that a session with a hub that answers reviews
	// started (true) or ended.
	Session(up bool)
	// Next returns the review to send now, or nil.
	Next() *protocol.AccessReview
	// Wanted receives when Next may have one.
	Wanted() <-chan struct{}
	// Answered takes the hub's answer.
	Answered(*protocol.AccessReviewResult)
}

// Credentials are the node's client certificate, renewed through the hub.
type Credentials interface {
	// RenewalRequest returns a certificate request (PEM) if the
	// certificate is due for renewal at now, and when to ask again.
	RenewalRequest(now time.Time) (csr []byte, next time.Time, err error)
	// Issued installs the certificate the hub issued.
	Issued(cert []byte) error
}

func (c *Config) validate() error {
	if err := protocol.ValidateNodeName(c.NodeName); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if c.Backoff.Initial == 0 {
		c.Backoff.Initial = time.Second
	}
	if c.Backoff.Max == 0 {
		c.Backoff.Max = 2 * time.Second
	}
	if c.Window == 0 {
		c.Window = 64
	}
	if c.ResendAfter == 0 {
		c.ResendAfter = time.Minute
	}
	if c.NodeStatusInterval == 0 {
		c.NodeStatusInterval = 5 * time.Minute
	}
	if c.NodeStatusCheck == 0 {
		c.NodeStatusCheck = min(time.Minute, c.NodeStatusInterval)
	}
	if c.StableAfter == 0 {
		c.StableAfter = 30 * time.Second
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = 32
	}
	if c.NodeStatusChanged == nil {
		c.NodeStatusChanged = NewSignal()
	}
	if c.Backoff.Initial < 0 || c.Backoff.Max < c.Backoff.Initial || c.Window < 1 || c.ResendAfter < 0 ||
		c.NodeStatusInterval < 0 || c.NodeStatusCheck < 0 || c.NodeStatusCheck > c.NodeStatusInterval ||
		c.MaxStreams < 1 {
		return fmt.Errorf("agent: bad timers or bounds in %+v", *c)
	}
	return nil
}

// Dialer opens sessions; *link.Dialer is one.
type Dialer interface {
	Dial(ctx context.Context, hello *protocol.Hello) (*link.Conn, error)
}

// Agent is the edge's sync engine.
type Agent struct {
	cfg        Config
	db         *store.DB
	dialer     Dialer
	nodeStatus func() (*corev1.NodeStatus, error)
	obs        Observer
	log        *slog.Logger
	// eng is the delivery state; owned by Start's goroutine.
	eng *Engine
	// sentStatus is the node status last queued, without the conditions'
	// timestamps, and sentStatusAt when; owned by Start's goroutine.
	sentStatus   []byte
	sentStatusAt time.Time

	mu sync.Mutex
	// state is the public view of the link; guarded by mu.
	state State
}

// State is what the Agent reports about its link.
type State struct {
	Connected bool
	// Sessions counts the sessions opened since start.
	Sessions int
	// LastResync is what the hub reported at the end of the current
	// session's resync; nil until then.
	LastResync *protocol.ResyncDone
	// ObjectFrames counts Upsert and Delete frames received.
	ObjectFrames int
}

// Observer hears what the Agent did. Its methods must not block.
type Observer interface {
	// ObjectsChanged is called after a commit with the kinds that changed
	// and the objects upserted or deleted (refs; nil means not known:
	// anything of those kinds may have changed).
	ObjectsChanged(kinds map[protocol.Kind]bool, refs []protocol.ObjectRef)
	// Connected is called when a session starts. The cloud may have changed
	// statuses while the link was down (the node lifecycle controller marks
	// the pods of an unreachable node not ready), so they should be reported
	// again.
	Connected()
}

// New builds an Agent. nodeStatus returns the node status to report.
func New(cfg Config, db *store.DB, dialer Dialer, nodeStatus func() (*corev1.NodeStatus, error),
	obs Observer, log *slog.Logger) (*Agent, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Agent{cfg: cfg, db: db, dialer: dialer, nodeStatus: nodeStatus, obs: obs, log: log,
		eng: NewEngine(cfg.Window, cfg.ResendAfter)}, nil
}

// NodeStatusChanged asks for the node status to be built and compared with
// the one last reported now rather than at the next NodeStatusCheck: a
// change is queued in the outbox at once, connected or not, and sent if
// connected. It never blocks.
func (a *Agent) NodeStatusChanged() { a.cfg.NodeStatusChanged.Notify() }

// Signal is a notification point: Notify never blocks, and C receives
// once after one Notify or more. It is made before the components it
// links, and handed to both.
type Signal struct{ c chan struct{} }

// NewSignal returns a Signal.
func NewSignal() *Signal { return &Signal{c: make(chan struct{}, 1)} }

// Notify signals; it never blocks.
func (s *Signal) Notify() {
	select {
	case s.c <- struct{}{}:
	default:
	}
}

// C receives after Notify.
func (s *Signal) C() <-chan struct{} { return s.c }

// Commit is what one transaction took from the hub: the objects upserted
// and deleted (a Delete's ref has no ResourceVersion).
type Commit struct {
	Upserted, Deleted []protocol.ObjectRef
}

// State returns the link's state.
func (a *Agent) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.state
}

// Start keeps a session with the hub until ctx ends.
//
// Between sessions it waits by its back-off (full jitter, capped at
// Backoff.Max or the hub's Welcome.ReconnectMax if larger), except when the
// hub said when: a 503's Retry-After is honoured (spread over its last
// second), and a hub of protocol 5 or more that stops (Error ShuttingDown)
// is left at once, after at most ShutdownJitter, for another replica.
func (a *Agent) Start(ctx context.Context) error {
	bo := a.cfg.Backoff
	// forcedAt is when the node status was last queued whatever it holds:
	// before the first dial after a session, then at most every
	// offlineStatusEvery while the hub stays away (a write to the store
	// per dial would cost a fleet retrying every second or two dearly).
	var forcedAt, warnedAt time.Time
	for ctx.Err() == nil {
		if forcedAt.IsZero() || time.Since(forcedAt) >= offlineStatusEvery {
			if err := a.queueNodeStatus(true); err != nil {
				a.log.Error("queue node status", slog.Any("err", err))
			}
			forcedAt = time.Now()
		}
		hello, err := a.hello()
		if err != nil {
			return err
		}
		conn, err := a.dialer.Dial(ctx, hello)
		if err != nil {
			d := dialRetry(&bo, err)
			var pe *protocol.Error
			var re *link.RetryAfterError
			switch {
			case errors.As(err, &pe):
				a.log.Error("hub refused the session", slog.String("code", pe.Code.String()),
					slog.String("message", pe.Message), slog.Duration("retry_in", d))
			case errors.As(err, &re):
				a.log.Info("hub asked to come back later", slog.String("message", re.Message),
					slog.Duration("retry_in", d))
			default:
				// Retried every second or two: a warning every
				// offlineStatusEvery, the attempts between at debug level.
				lvl := slog.LevelDebug
				if time.Since(warnedAt) >= offlineStatusEvery {
					lvl, warnedAt = slog.LevelWarn, time.Now()
				}
				a.log.Log(ctx, lvl, "cannot reach the hub", slog.Any("err", err), slog.Duration("retry_in", d))
			}
			a.offline(ctx, d)
			continue
		}
		if conn.Welcome.ProtocolVersion >= protocol.ReconnectMaxSince {
			bo.SetHubMax(conn.Welcome.ReconnectMax.D())
		}
		start := time.Now()
		a.setConnected(true)
		err = a.session(ctx, conn)
		a.setConnected(false)
		conn.Close()
		forcedAt = time.Time{}
		if time.Since(start) > a.cfg.StableAfter {
			bo.Reset()
		}
		if ctx.Err() != nil {
			return nil
		}
		var d time.Duration
		if pe := (*protocol.Error)(nil); errors.As(err, &pe) && pe.Code == protocol.ErrorShuttingDown &&
			conn.Welcome.ProtocolVersion >= protocol.ReconnectMaxSince {
			// The hub closes its sessions one by one as it stops: go now,
			// to another replica (the hub no longer listens).
			bo.Reset()
			d = rand.N(ShutdownJitter)
		} else {
			d = bo.Next()
		}
		a.log.Warn("link to the hub lost", slog.Any("err", err), slog.Duration("reconnect_in", d))
		a.offline(ctx, d)
	}
	return nil
}

// offlineStatusEvery is how often the node status is queued again while
// the hub is unreachable, so that the status sent on reconnecting is at
// most this old (a change is queued at once: NodeStatusChanged).
const offlineStatusEvery = 30 * time.Second

// ShutdownJitter is the most an edge waits to reconnect after a hub of
// protocol 5 or more said it is stopping (it spreads its edges itself).
const ShutdownJitter = 200 * time.Millisecond

// dialRetry is the wait after a failed dial: the hub's Retry-After if it
// gave one (jittered over its last second), else the back-off's next.
func dialRetry(bo *link.Backoff, err error) time.Duration {
	var re *link.RetryAfterError
	if errors.As(err, &re) && re.After > 0 {
		return link.Jittered(re.After)
	}
	return bo.Next()
}

// offline waits d or until ctx ends, queueing the node status in the
// outbox when NodeStatusChanged asks, so that a change made offline is
// reported first thing on reconnecting, in order.
func (a *Agent) offline(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-a.cfg.NodeStatusChanged.C():
			if err := a.queueNodeStatus(false); err != nil {
				a.log.Error("queue node status", slog.Any("err", err))
			}
		}
	}
}

func (a *Agent) setConnected(c bool) {
	a.mu.Lock()
	a.state.Connected = c
	if c {
		a.state.Sessions++
		a.state.LastResync = nil
	}
	a.mu.Unlock()
}

func (a *Agent) hello() (*protocol.Hello, error) {
	var inv []protocol.ObjectRef
	err := a.db.View(func(tx *store.Tx) (err error) {
		inv, err = tx.Inventory()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("agent: inventory: %w", err)
	}
	old, newer := protocol.SplitInventory(inv)
	return &protocol.Hello{ProtocolVersion: protocol.Version, MinVersion: protocol.MinVersion,
		NodeName: a.cfg.NodeName, Inventory: old, NewInventory: newer, Agent: Build(), StoreEpoch: a.db.Epoch()}, nil
}

func (a *Agent) queueNodeStatus(force bool) error {
	st, err := a.nodeStatus()
	if err != nil {
		return err
	}
	fp, err := statusFingerprint(st)
	if err != nil {
		return err
	}
	now := time.Now()
	if !force && bytes.Equal(fp, a.sentStatus) && now.Sub(a.sentStatusAt) < a.cfg.NodeStatusInterval {
		return nil
	}
	b, err := protocol.EncodeNodeStatus(st)
	if err != nil {
		return err
	}
	err = a.db.Update(func(tx *store.Tx) error {
		_, err := tx.Enqueue(store.OutboxNodeStatus, &protocol.Frame{NodeStatus: &protocol.NodeStatus{
			Labels: a.cfg.Labels, Status: b}})
		return err
	})
	if err != nil {
		return err
	}
	a.sentStatus, a.sentStatusAt = fp, now
	return nil
}

// statusFingerprint is the encoding of st without the conditions'
// heartbeat and transition times, which change on every build.
func statusFingerprint(st *corev1.NodeStatus) ([]byte, error) {
	c := *st
	c.Conditions = slices.Clone(st.Conditions)
	for i := range c.Conditions {
		c.Conditions[i].LastHeartbeatTime = metav1.Time{}
		c.Conditions[i].LastTransitionTime = metav1.Time{}
	}
	return protocol.EncodeNodeStatus(&c)
}

// session runs one connection until it fails or ctx ends.
func (a *Agent) session(ctx context.Context, conn *link.Conn) error {
	w := conn.Welcome
	a.log.Info("connected to the hub", slog.Uint64("protocol", uint64(w.ProtocolVersion)))
	frames := make(chan *protocol.Frame, 256)
	errc := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	mux := a.streams(conn, w)
	defer mux.Close()
	go func() {
		for {
			conn.SetReadTimeout(w.SessionTimeout.D())
			f, err := conn.Read()
			var de *link.DecodeError
			if errors.As(err, &de) {
				a.log.Warn("bad frame from hub", slog.Any("err", err))
				conn.Write(&protocol.Frame{Error: &protocol.Error{Code: protocol.ErrorBadFrame, Message: err.Error()}})
				continue
			}
			if err != nil {
				errc <- err
				return
			}
			if f.IsStream() {
				mux.Handle(f) // streams.go
				continue
			}
			select {
			case frames <- f:
			case <-done:
				return
			}
		}
	}()

	defer a.eng.Step(time.Now(), Down{})
	if err := a.do(conn, a.eng.Step(time.Now(), Up{})); err != nil {
		return err
	}
	hb := time.NewTicker(w.HeartbeatInterval.D())
	defer hb.Stop()
	ns := time.NewTicker(a.cfg.NodeStatusCheck)
	defer ns.Stop()
	resend := time.NewTicker(max(a.cfg.ResendAfter/4, 10*time.Millisecond))
	defer resend.Stop()
	// renew fires when the client certificate is due for renewal; never
	// for a hub older than protocol version 2, which cannot take a
	// CertRequest.
	var renew <-chan time.Time
	var renewTimer *time.Timer
	if a.cfg.Credentials != nil && w.ProtocolVersion >= 2 {
		renewTimer = time.NewTimer(0)
		defer renewTimer.Stop()
		renew = renewTimer.C
	}
	// reviews fire when the in-cluster API has an access review to send;
	// never for a hub that does not take them.
	var reviews <-chan struct{}
	if a.cfg.Reviews != nil && w.ProtocolVersion >= protocol.AccessReviewSince {
		a.cfg.Reviews.Session(true)
		defer a.cfg.Reviews.Session(false)
		reviews = a.cfg.Reviews.Wanted()
	}
	var relay <-chan struct{}
	if a.cfg.Relay != nil {
		a.cfg.Relay.Session(true, w.ProtocolVersion)
		defer a.cfg.Relay.Session(false, 0)
		relay = a.cfg.Relay.Wanted()
	}
	for {
		var err error
		select {
		case <-relay:
			for _, r := range a.cfg.Relay.Next() {
				if err := conn.Write(&protocol.Frame{APIRequest: r}); err != nil {
					return fmt.Errorf("send api request: %w", err)
				}
			}
		case <-reviews:
			if r := a.cfg.Reviews.Next(); r != nil {
				if err := conn.Write(&protocol.Frame{AccessReview: r}); err != nil {
					return fmt.Errorf("send access review: %w", err)
				}
			}
		case f := <-frames:
			batch := []*protocol.Frame{f}
			for more := true; more && len(batch) < MaxBatch; {
				select {
				case f := <-frames:
					batch = append(batch, f)
				default:
					more = false
				}
			}
			err = a.do(conn, a.eng.Step(time.Now(), Received{Frames: batch}))
		case <-a.db.OutboxChanged():
			err = a.do(conn, a.eng.Step(time.Now(), OutboxChanged{}))
		case <-hb.C:
			if err := conn.Write(&protocol.Frame{Heartbeat: &protocol.Heartbeat{Time: time.Now().UnixMilli()}}); err != nil {
				return fmt.Errorf("send heartbeat: %w", err)
			}
		case <-ns.C:
			// A status queued reaches the Engine through OutboxChanged.
			if err := a.queueNodeStatus(false); err != nil {
				a.log.Error("queue node status", slog.Any("err", err))
			}
		case <-a.cfg.NodeStatusChanged.C():
			if err := a.queueNodeStatus(false); err != nil {
				a.log.Error("queue node status", slog.Any("err", err))
			}
		case <-renew:
			csr, next, err := a.cfg.Credentials.RenewalRequest(time.Now())
			if err != nil {
				a.log.Error("certificate request", slog.Any("err", err))
			}
			if csr != nil {
				a.log.Info("asking the hub to renew the client certificate")
				if err := conn.Write(&protocol.Frame{CertRequest: &protocol.CertRequest{CSR: csr}}); err != nil {
					return fmt.Errorf("send certificate request: %w", err)
				}
			}
			renewTimer.Reset(time.Until(next))
		case <-resend.C:
			err = a.do(conn, a.eng.Step(time.Now(), Tick{}))
		case err := <-errc:
			if errors.Is(err, link.ErrTooLarge) {
				conn.Write(&protocol.Frame{Error: &protocol.Error{Code: protocol.ErrorTooLarge, Message: err.Error()}})
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
		if err != nil {
			return err
		}
	}
}

// do carries out what the Engine asked, in Output's order.
func (a *Agent) do(conn *link.Conn, o Output) error {
	for _, l := range o.Log {
		a.log.LogAttrs(context.Background(), l.Level, l.Msg, l.Attrs...)
	}
	if o.Resync != nil || o.ObjectFrames > 0 {
		a.mu.Lock()
		if o.Resync != nil {
			a.state.LastResync = o.Resync
		}
		a.state.ObjectFrames += o.ObjectFrames
		a.mu.Unlock()
	}
	if o.Certificate != nil && a.cfg.Credentials != nil {
		if err := a.cfg.Credentials.Issued(o.Certificate); err != nil {
			a.log.Error("install renewed certificate", slog.Any("err", err))
		}
	}
	if o.Review != nil && a.cfg.Reviews != nil {
		a.cfg.Reviews.Answered(o.Review)
	}
	if a.cfg.Relay != nil {
		for _, r := range o.APIResponses {
			a.cfg.Relay.Answered(r)
		}
	}
	if o.Hook != nil && a.cfg.CommitHook != nil {
		a.cfg.CommitHook(*o.Hook)
	}
	for _, s := range o.Send {
		var err error
		if s.Raw != nil {
			err = conn.WriteRaw(s.Raw)
		} else {
			err = conn.Write(s.Frame)
		}
		if err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	if o.Changed != nil {
		a.obs.ObjectsChanged(o.Changed.Kinds, o.Changed.Refs)
	}
	if o.Connected {
		a.obs.Connected()
	}
	if o.Fail != nil {
		return o.Fail
	}
	if o.Commit != nil {
		err := a.commit(o.Commit)
		if err := a.do(conn, a.eng.Step(time.Now(), Committed{Err: err})); err != nil {
			return err
		}
	}
	if o.Read != nil {
		var items []store.OutboxItem
		err := a.db.View(func(tx *store.Tx) error {
			return tx.Outbox(o.Read.After, func(it store.OutboxItem) bool {
				items = append(items, it)
				return len(items) < o.Read.Max
			})
		})
		return a.do(conn, a.eng.Step(time.Now(), OutboxRead{Items: items, Err: err}))
	}
	return nil
}

// commit makes the Engine's store write in one transaction.
func (a *Agent) commit(w *StoreWrite) error {
	return a.db.Update(func(tx *store.Tx) error {
		for _, o := range w.Objects {
			if o.Put != nil {
				if err := tx.PutObject(o.Put); err != nil {
					return err
				}
			} else if _, err := tx.DeleteObject(o.Delete.Kind, o.Delete.UID); err != nil {
				return err
			}
		}
		for _, seq := range w.Acked {
			if err := tx.Acked(seq); err != nil {
				return err
			}
		}
		return nil
	})
}

// Build names this edgecore for Hello.Agent: the module version and the VCS
// revision it was built from. Read once: parsing the build information at
// every Hello was 8% of the CPU of a simulator's nodes in a reconnect storm.
var Build = sync.OnceValue(build)

func build() string {
	name := "tether-edgecore"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return name
	}
	v := bi.Main.Version
	var rev, modified string
	for _, kv := range bi.Settings {
		switch kv.Key {
		case "vcs.revision":
			rev = kv.Value
		case "vcs.modified":
			if kv.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	s := name + "/" + v
	if rev != "" {
		s += " (" + rev + modified + ")"
	}
	return s + " " + bi.GoVersion
}
