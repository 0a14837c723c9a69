// Package hub is cloudcore's end of the cloud-edge tunnel: an HTTPS server
// that upgrades each edge node's connection to a websocket and runs one
// session per node.
//
// Identity: the edge presents its client certificate (package enroll issues
// it at join); the Authenticator verifies it and checks the node it names,
// and the Hello must name that same node. The hub checks every session's
// node again every RevokeCheck, so that a revoked node (its Node deleted or
// joined again) or an expired certificate loses its session within seconds.
// Join tokens are never accepted on the tunnel.
//
// Limits: connections are capped in total, per source address and in rate
// of new ones (connLimiter), and closed when silent or idle (HandshakeTimeout,
// IdleTimeout); per session, the upstream messages in flight and their rate
// are capped, and so is the Hello's inventory. /healthz and /readyz are on a
// listener of their own (HealthAddr).
//
// A session has three goroutines joined together: a reader that decodes
// frames, a writer that drains a bounded send queue, and the owner, which
// alone holds the node's delivery state: the version of every object the
// node acknowledged, and the messages in flight. The owner is level-based:
// whenever it is told the node's objects may have changed, it asks the Source
// for the node's desired set and sends the difference, so a newer version of
// an object always replaces an older one that was not sent yet.
package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-edge/tether/histogram"
	"github.com/tether-edge/tether/protocol"
)

// Path is the URL path edge nodes connect to.
const Path = "/v1/connect"

// Source is the cloud's view of what each node should hold.
type Source interface {
	// Ready reports whether the Source's caches are synced; sessions are
	// refused until they are.
	Ready() bool
	// Desired appends every object node should hold now to dst, with Data
	// unset, in the order of protocol.Kinds (objects that others use first).
	Desired(node string, dst []protocol.Object) []protocol.Object
	// Serves reports whether Desired lists every object of kind a node
	// should hold. The hub deletes no object of a kind not served (its
	// cache is not there yet) from a node.
	Serves(kind protocol.Kind) bool
	// Encode fills o.Data with the object's current version as node holds
	// it and updates o.ResourceVersion. ok is false if the object no longer
	// exists. Objects of a kind newer than the session's protocol version
	// (protocol.Kind.Since) are neither sent nor asked for.
	Encode(node string, o *protocol.Object) (ok bool, err error)
}

// Upstream takes what edge nodes report. Methods must not block; done is
// called once the message is durable (nil) or given up (an error; one
// wrapping protocol.ErrRejected is a permanent refusal).
//
// NodeStatus, PodStatus and DeviceStatus take the report's order among the node's
// reports (zero if the edge's protocol version has none): the Upstream
// drops a report older than one it or another replica wrote already.
type Upstream interface {
	NodeStatus(node string, o protocol.StatusOrder, m *protocol.NodeStatus, done func(error))
	PodStatus(node string, o protocol.StatusOrder, m *protocol.PodStatus, done func(error))
	PodTerminated(node string, m *protocol.PodTerminated, done func(error))
	Event(node string, m *protocol.Event, done func(error))
	MirrorPod(node string, m *protocol.MirrorPod, done func(error))
	DeviceStatus(node string, o protocol.StatusOrder, m *protocol.DeviceStatus, done func(error))
	// Heartbeat says the node is connected and was heard from within
	// SessionTimeout. It is called when a session starts, on every
	// heartbeat the edge sends, and every AliveInterval (jittered) while
	// the session lasts, so that the Upstream can renew the node's Lease at
	// its own pace however seldom the edge speaks.
	Heartbeat(node string)
}

// Authenticator tells who a tunnel connection is, and whether a node may
// still be served.
type Authenticator interface {
	// Authenticate verifies a client certificate chain (the peer's, as the
	// TLS handshake received it) and checks the node it names. It returns
	// the node, the identity its certificate carries and the certificate's
	// expiry, or why the connection is refused (an error for a person).
	Authenticate(ctx context.Context, certs []*x509.Certificate) (node, id string, notAfter time.Time, err error)
	// Check reports whether node, with identity id, may still be served
	// (nil), or why not. It may read a cache.
	Check(ctx context.Context, node, id string, live bool) error
	// Renew issues a new client certificate (PEM) for the key of csr to a
	// node whose session is live.
	Renew(ctx context.Context, node, id string, csr []byte) ([]byte, error)
}

// AccessReviewer answers an edge's AccessReview: whether the service
// account of a pod bound to node may do each check. It refuses (error) a pod
// that is not bound to node, or whose UID or service account differ.
type AccessReviewer interface {
	Review(ctx context.Context, node string, r *protocol.AccessReview) ([]bool, error)
}

// Config configures the hub.
type Config struct {
	// Addr is the address the hub listens on, host:port.
	Addr string
	// TLS is the server's TLS configuration (certificate required). Its
	// ClientAuth must ask for client certificates (tls.RequestClientCert:
	// the Authenticator verifies them, and the join endpoint takes
	// connections without one).
	TLS *tls.Config
	// Auth authenticates edges. Required.
	Auth Authenticator
	// Reviews, if set, answers the edges' AccessReviews (protocol version
	// 5: the in-cluster API at the edge). Nil refuses every one.
	Reviews AccessReviewer
	// Relay, if set, relays the writes of the edges' pods to the API
	// server (protocol version 7, relay.go). Nil answers each 503.
	Relay APIRelay
	// MaxRelayInFlight bounds the relayed writes in flight per node
	// (default 8); one more is answered 429 at once.
	MaxRelayInFlight int
	// RelayTimeout bounds one relayed write (default 10s); past it the
	// pod gets 504.
	RelayTimeout time.Duration
	// Handlers are more endpoints on the hub's listener, by path (the join
	// and renewal endpoints of package enroll).
	Handlers map[string]http.Handler
	// RevokeCheck is how often every session's node is checked again
	// (default 2s).
	RevokeCheck time.Duration
	// HeartbeatInterval is how often edges send a heartbeat (default 30s).
	// Each costs an idle edge about 150 bytes up at the IP layer (the
	// heartbeat and the ACK of the hub's answer), so it is kept long.
	HeartbeatInterval time.Duration
	// SessionTimeout closes a session silent for this long (default 2.5x
	// HeartbeatInterval).
	SessionTimeout time.Duration
	// AliveInterval is how often a connected node is reported to
	// Upstream.Heartbeat (default 5s, jittered by ±25%).
	AliveInterval time.Duration
	// Window is the most object messages unacknowledged per session
	// (default 256).
	Window int
	// ResendAfter resends an object message unacknowledged this long
	// (default 30s).
	ResendAfter time.Duration
	// SendQueue is the most frames waiting in a session's send queue
	// (default 1024; the queue takes memory only for the frames waiting).
	// A session whose queue overflows is closed: the peer is not reading.
	SendQueue int
	// HandshakeTimeout bounds the TLS, websocket and Hello exchange
	// (default 10s): a connection that has not finished its TLS handshake
	// and request header within it is closed (http.Server's
	// ReadHeaderTimeout, which also bounds the TLS handshake).
	HandshakeTimeout time.Duration
	// ReadTimeout bounds the reading of a whole request to the other
	// endpoints (Handlers), body included (default 30s). Websocket
	// sessions are not subject to it: the session sets its own deadlines
	// once upgraded.
	ReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle between requests
	// this long (default 30s).
	IdleTimeout time.Duration

	// MaxConns is the most connections open at once, sessions included
	// (default 12,000: 10,000 nodes and a fifth more for reconnects, whose
	// old connections linger until SessionTimeout, and joins). It must stay
	// 1,024 below the process's open file limit (RLIMIT_NOFILE); unset, it
	// is lowered to that if need be. A connection past it is closed at
	// once.
	MaxConns int
	// MaxConnsPerIP is the most connections open at once from one source
	// address (default 32). The boxes of a store often share one NAT
	// address, and each may hold a stale connection until SessionTimeout
	// after a reconnect; behind a TCP proxy or a carrier-grade NAT every
	// edge has the same address, and this must be raised to MaxConns.
	MaxConnsPerIP int
	// AcceptRate is how many new connections per second the hub takes on
	// average, and AcceptBurst how many at once (defaults 1,500 and 1,500:
	// above SessionRate, so that the edges it sheds hear when to come
	// back). A connection past it waits, not accepted yet, in the kernel's
	// listen backlog until the next token (connLimiter): it costs the hub
	// nothing meanwhile, and its edge keeps the ClientHello it sent
	// instead of paying for another.
	AcceptRate  float64
	AcceptBurst int
	// AcceptRatePerIP and AcceptBurstPerIP are the same for the
	// connections of one source address (defaults 4 a second and 32: the
	// boxes of a store behind one NAT reconnect together after a restart),
	// checked first, so that one address cannot use up AcceptRate for the
	// others. Behind a TCP proxy or a carrier-grade NAT raise them to
	// AcceptRate and AcceptBurst. The hub tracks the rate of at most
	// 65,536 addresses at once (those that connected within the last
	// AcceptBurstPerIP/AcceptRatePerIP seconds); past that a new address
	// has only AcceptRate.
	AcceptRatePerIP  float64
	AcceptBurstPerIP int
	// MaxHandshakes is the most connections in their TLS handshake and
	// request header at once (default 1,024: at about a millisecond of CPU
	// each, at most a second of work queued). Past it the hub stops
	// accepting until one finishes: the next wait in the kernel's listen
	// backlog (net.core.somaxconn, 4,096 on most kernels; past that the
	// kernel drops their SYNs and the edges' TCP retries them), their
	// ClientHello sent and unread. It bounds what a reconnecting fleet
	// makes the hub do at once whatever its CPU: handshakes all started
	// together on a busy hub would each progress slowly until they timed
	// out, and the hub would do nothing useful any more. Closing the
	// connections past it instead cost each edge a TCP connect and a
	// ClientHello's key shares for nothing, and sent it back later at
	// random: in a 10,000-node storm on one machine more connections were
	// closed so than sessions made, and the storm took half as long again.
	MaxHandshakes int

	// SessionRate is how many sessions per second the hub starts on
	// average, SessionBurst how many at once (defaults 1,000 and 1,000:
	// 10,000 nodes back in about 10 s). Each costs a resync. An
	// authenticated edge past it is answered 503 before the websocket
	// upgrade with a Retry-After that places it in a queue of its own:
	// the hub hands out the next free second at SessionRate, so the edges
	// it sheds come back spread at the rate it can take, each once, not
	// every back-off. Unauthenticated connections never use it up.
	// SessionRate also sizes the bound the hub advertises to edges of
	// protocol 5 (Welcome.ReconnectMax): its sessions divided by the rate,
	// at least MinReconnectMax, so that its whole fleet, reconnecting
	// after an outage, arrives about as fast as it can take.
	SessionRate  float64
	SessionBurst int
	// DrainTime is how long a graceful stop (Drain) takes to send the
	// hub's edges away (default 5s): it stops listening, then closes its
	// sessions one by one, evenly over DrainTime, with Error ShuttingDown,
	// which an edge of protocol 5 takes as "reconnect now" (to another
	// replica, behind the Service). Keep it well under the pod's
	// terminationGracePeriodSeconds.
	DrainTime time.Duration

	// MaxInventory is the most objects a Hello may list (default 20,000).
	// A kubelet holds at most 110 pods by default; with their config maps
	// and secrets and the node's devices a node holds hundreds to a few
	// thousand objects. A larger Hello is refused (ErrorTooLarge).
	MaxInventory int
	// MaxUpstreamInFlight is the most upstream messages of a session handed
	// to Upstream and not done yet (default 256). At it, the session stops
	// reading from the edge until some are done: TCP pushes back.
	MaxUpstreamInFlight int
	// UpstreamRate is each node's rate of upstream messages per second,
	// UpstreamBurst its burst (defaults 50 and 200; a node reports its
	// status every minute and its pods' statuses when they change).
	// Heartbeats and acks are not counted; certificate requests are (each
	// costs a signature and a read of the Node), and are answered one at a
	// time: one that comes while another is being answered is refused at
	// once. A status or certificate request past the rate waits (the
	// session stops reading until the rate allows it);
	// an Event past it is dropped and answered with Ack.Rejected
	// ("dropped: event rate limit") so that the edge does not send it
	// again.
	UpstreamRate  float64
	UpstreamBurst int

	// MaxStreamsPerNode is the most byte streams (kubectl logs, exec,
	// attach, port-forward, node proxy requests) open to one node at once
	// (default 32), and MaxStreams through this hub in total (default
	// 1,024). Each stream holds at most protocol.StreamWindow (256 KiB) of
	// data queued each way, and its frames go through the session's send
	// queue like the others: 32 streams fill at most 256 of its entries.
	MaxStreamsPerNode int
	MaxStreams        int

	// PeerLoads, if set, returns what the other replicas say of themselves
	// (those that answered; each asked over the replicas' mutual-TLS peer
	// channel): the hub then rebalances its sessions with the Rebalancer
	// (Rebalance), asking them every RebalancePoll (default 2s). Unset
	// (one replica, or no peer channel), nothing is rebalanced.
	PeerLoads     func(ctx context.Context) ([]PeerLoad, error)
	Rebalance     RebalanceConfig
	RebalancePoll time.Duration

	// HealthAddr, if set, is a plain HTTP listener (host:port; keep it on
	// loopback or a private network) serving /healthz (the hub serves) and
	// /readyz (the Source's caches are synced and the hub listens). The
	// tunnel's listener serves edges only.
	HealthAddr string
	// HealthListener, if set, is used instead of listening on HealthAddr.
	HealthListener net.Listener
}

func (c *Config) validate() error {
	if c.Addr == "" {
		return errors.New("hub: Addr is empty")
	}
	if c.Auth == nil {
		return errors.New("hub: no Authenticator")
	}
	if c.TLS == nil || c.TLS.ClientAuth != tls.RequestClientCert {
		return errors.New("hub: TLS with ClientAuth tls.RequestClientCert is required")
	}
	if c.RevokeCheck == 0 {
		c.RevokeCheck = 2 * time.Second
	}
	if c.RevokeCheck < 0 {
		return fmt.Errorf("hub: revoke check %s is negative", c.RevokeCheck)
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 30 * time.Second
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = c.HeartbeatInterval * 5 / 2
	}
	if c.AliveInterval == 0 {
		c.AliveInterval = 5 * time.Second
	}
	if c.AliveInterval < 0 {
		return fmt.Errorf("hub: alive interval %s is negative", c.AliveInterval)
	}
	if c.HeartbeatInterval < 0 || c.SessionTimeout <= c.HeartbeatInterval {
		return fmt.Errorf("hub: heartbeat interval %s and session timeout %s: want 0 < interval < timeout",
			c.HeartbeatInterval, c.SessionTimeout)
	}
	if c.Window == 0 {
		c.Window = 256
	}
	if c.ResendAfter == 0 {
		c.ResendAfter = 30 * time.Second
	}
	if c.SendQueue == 0 {
		c.SendQueue = 1024
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.Window < 1 || c.SendQueue < c.Window+16 || c.ResendAfter < 0 || c.HandshakeTimeout < 0 {
		return fmt.Errorf("hub: window %d, send queue %d: want window >= 1 and send queue >= window+16",
			c.Window, c.SendQueue)
	}
	return c.validateLimits(fdLimit())
}

// validateLimits checks and fills the limits; fds is the process's open
// file limit (0: unknown).
func (c *Config) validateLimits(fds uint64) error {
	setDefault(&c.ReadTimeout, 30*time.Second)
	setDefault(&c.IdleTimeout, 30*time.Second)
	if c.ReadTimeout < 0 || c.IdleTimeout < 0 {
		return fmt.Errorf("hub: read timeout %s, idle timeout %s: must not be negative", c.ReadTimeout, c.IdleTimeout)
	}
	maxConns := 1 << 30
	if fds > 0 {
		maxConns = int(min(fds, 1<<30)) - fdReserve
	}
	if c.MaxConns == 0 {
		c.MaxConns = min(12000, maxConns)
		if c.MaxConns < 1 {
			return fmt.Errorf("hub: the open file limit %d leaves no room for connections (%d are kept for the rest)",
				fds, fdReserve)
		}
	}
	if c.MaxConns > maxConns {
		return fmt.Errorf("hub: max conns %d: the open file limit (RLIMIT_NOFILE) is %d; "+
			"want at most %d below it", c.MaxConns, fds, fdReserve)
	}
	setDefault(&c.MaxConnsPerIP, 32)
	setDefault(&c.AcceptRate, 1500)
	setDefault(&c.AcceptBurst, 1500)
	setDefault(&c.MaxHandshakes, 1024)
	if c.MaxHandshakes < 1 {
		return fmt.Errorf("hub: max handshakes %d: want positive", c.MaxHandshakes)
	}
	setDefault(&c.SessionRate, 1000)
	setDefault(&c.SessionBurst, 1000)
	setDefault(&c.DrainTime, 5*time.Second)
	if c.SessionRate <= 0 || c.SessionBurst < 1 || c.DrainTime < 0 {
		return fmt.Errorf("hub: session rate %g burst %d, drain time %s: want positive", c.SessionRate, c.SessionBurst, c.DrainTime)
	}
	setDefault(&c.RebalancePoll, 2*time.Second)
	if c.RebalancePoll < 0 {
		return fmt.Errorf("hub: rebalance poll %s is negative", c.RebalancePoll)
	}
	if err := c.Rebalance.validate(); err != nil {
		return err
	}
	setDefault(&c.AcceptRatePerIP, 4)
	setDefault(&c.AcceptBurstPerIP, 32)
	setDefault(&c.MaxInventory, 20000)
	setDefault(&c.MaxUpstreamInFlight, 256)
	setDefault(&c.UpstreamRate, 50)
	setDefault(&c.UpstreamBurst, 200)
	if c.AcceptRatePerIP < 0 || c.AcceptBurstPerIP < 1 {
		return fmt.Errorf("hub: limits must be positive: accept rate per IP %g burst %d", c.AcceptRatePerIP, c.AcceptBurstPerIP)
	}
	setDefault(&c.MaxRelayInFlight, 8)
	setDefault(&c.RelayTimeout, 10*time.Second)
	if c.MaxRelayInFlight < 1 || c.RelayTimeout < 0 {
		return fmt.Errorf("hub: max relay in flight %d, relay timeout %s: must be positive", c.MaxRelayInFlight, c.RelayTimeout)
	}
	setDefault(&c.MaxStreamsPerNode, 32)
	setDefault(&c.MaxStreams, 1024)
	if c.MaxStreamsPerNode < 1 || c.MaxStreams < 1 {
		return fmt.Errorf("hub: max streams %d, per node %d: must be positive", c.MaxStreams, c.MaxStreamsPerNode)
	}
	if c.MaxConns < 1 || c.MaxConnsPerIP < 1 || c.AcceptRate < 0 || c.AcceptBurst < 1 || c.MaxInventory < 1 ||
		c.MaxUpstreamInFlight < 1 || c.UpstreamRate < 0 || c.UpstreamBurst < 1 {
		return fmt.Errorf("hub: limits must be positive: max conns %d, per IP %d, accept rate %g burst %d, "+
			"max inventory %d, upstream in flight %d, upstream rate %g burst %d", c.MaxConns, c.MaxConnsPerIP,
			c.AcceptRate, c.AcceptBurst, c.MaxInventory, c.MaxUpstreamInFlight, c.UpstreamRate, c.UpstreamBurst)
	}
	return nil
}

func setDefault[T int | float64 | time.Duration](v *T, d T) {
	if *v == 0 {
		*v = d
	}
}

// Hub accepts edge sessions.
type Hub struct {
	cfg      Config
	source   Source
	upstream Upstream
	log      *slog.Logger
	upgrader websocket.Upgrader
	stats    Stats
	// streamsOpen counts the streams open through the hub (MaxStreams).
	streamsOpen atomic.Int64
	// listening is set while Serve serves.
	listening atomic.Bool
	// logTimeout and logRefused rate-limit log lines of limits hit.
	logTimeout, logRefused *limitLog
	// admit paces new sessions (SessionRate).
	admit *admission
	// drainc asks Serve to drain (Drain); drained is closed when Serve
	// returned.
	drainc    chan struct{}
	drainOnce sync.Once
	drained   chan struct{}
	draining  atomic.Bool
	serving   atomic.Bool

	mu sync.Mutex
	// sessions holds the live session of each node; guarded by mu.
	sessions map[string]*session
	// closing is set once Start returns; guarded by mu.
	closing bool
	// wg counts running sessions.
	wg sync.WaitGroup
}

// New builds a hub. Call Start to serve.
func New(cfg Config, source Source, upstream Upstream, log *slog.Logger) (*Hub, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	h := &Hub{cfg: cfg, source: source, upstream: upstream, log: log, sessions: map[string]*session{},
		logTimeout: newLimitLog(), logRefused: newLimitLog(), admit: newAdmission(cfg.SessionRate, cfg.SessionBurst),
		drainc: make(chan struct{}), drained: make(chan struct{})}
	h.upgrader = websocket.Upgrader{
		HandshakeTimeout:  cfg.HandshakeTimeout,
		ReadBufferSize:    4096,
		WriteBufferSize:   4096,
		WriteBufferPool:   &sync.Pool{},
		EnableCompression: false,
	}
	return h, nil
}

// Start listens on cfg.Addr and serves until ctx ends; then it closes every
// session and returns.
func (h *Hub) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", h.cfg.Addr)
	if err != nil {
		return fmt.Errorf("hub: listen: %w", err)
	}
	return h.Serve(ctx, ln)
}

// Serve is Start on a listener of the caller's. It listens on HealthAddr
// too, if set. It returns when ctx ends (every session stopped at once) or
// when Drain asked (the sessions stopped one by one over DrainTime).
func (h *Hub) Serve(ctx context.Context, ln net.Listener) error {
	h.serving.Store(true)
	defer close(h.drained)
	hln := h.cfg.HealthListener
	if hln == nil && h.cfg.HealthAddr != "" {
		var err error
		if hln, err = net.Listen("tcp", h.cfg.HealthAddr); err != nil {
			ln.Close()
			return fmt.Errorf("hub: health listener: %w", err)
		}
	}
	ln = newConnLimiter(quietListener{ln}, h)
	if h.cfg.TLS != nil {
		ln = tls.NewListener(ln, h.cfg.TLS)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, h)
	for p, hd := range h.cfg.Handlers {
		mux.Handle(p, hd)
	}
	srv := &http.Server{Handler: mux,
		ReadHeaderTimeout: h.cfg.HandshakeTimeout, ReadTimeout: h.cfg.ReadTimeout, IdleTimeout: h.cfg.IdleTimeout,
		ConnState:   h.connState,
		ErrorLog:    slog.NewLogLogger(h.log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return ctx }}
	h.log.Info("hub listening", slog.String("addr", ln.Addr().String()))
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	var health *http.Server
	if hln != nil {
		health = &http.Server{Handler: h.healthHandler(), ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: h.cfg.IdleTimeout,
			ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelDebug)}
		h.log.Info("health endpoints listening", slog.String("addr", hln.Addr().String()))
		go func() { errc <- health.Serve(hln) }()
	}
	h.listening.Store(true)
	defer h.listening.Store(false)
	if h.cfg.PeerLoads != nil {
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go h.rebalance(rctx)
	}
	revoke := time.NewTicker(h.cfg.RevokeCheck)
	defer revoke.Stop()
	drain := false
serve:
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("hub: serve: %w", err)
		case <-revoke.C:
			h.checkSessions(ctx)
		case <-h.drainc:
			drain = true
			break serve
		case <-ctx.Done():
			break serve
		}
	}
	h.mu.Lock()
	h.closing = true
	live := make([]*session, 0, len(h.sessions))
	for _, s := range h.sessions {
		live = append(live, s)
	}
	h.mu.Unlock()
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shut := make(chan struct{})
	if drain {
		// Stop listening first, so that the edges sent away find another
		// replica (the Service drops this one as /readyz fails).
		h.draining.Store(true)
		go func() { srv.Shutdown(shutCtx); close(shut) }()
		h.drainSessions(ctx, live)
	}
	for _, s := range live {
		s.stop(&protocol.Error{Code: protocol.ErrorShuttingDown, Message: "cloudcore is stopping"})
	}
	if drain {
		<-shut
	} else {
		srv.Shutdown(shutCtx)
	}
	if health != nil {
		health.Shutdown(shutCtx)
	}
	h.wg.Wait()
	return nil
}

// Listening reports whether Serve serves (and is not draining): edges can
// start sessions.
func (h *Hub) Listening() bool { return h.listening.Load() && !h.draining.Load() }

// Drain stops Serve gracefully: the hub stops listening and /readyz fails,
// then its sessions are closed one by one, evenly over DrainTime, with
// Error ShuttingDown (an edge of protocol 5 reconnects at once, to another
// replica). It returns once Serve returned, or when ctx ends.
func (h *Hub) Drain(ctx context.Context) error {
	h.drainOnce.Do(func() { close(h.drainc) })
	if !h.serving.Load() {
		return nil // Serve, if it starts, drains at once
	}
	select {
	case <-h.drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// drainSessions stops live in a random order, evenly over DrainTime (the
// first at once), unless ctx ends first.
func (h *Hub) drainSessions(ctx context.Context, live []*session) {
	n := len(live)
	h.log.Info("hub draining: sending edges away", slog.Int("sessions", n), slog.Duration("over", h.cfg.DrainTime))
	rand.Shuffle(n, func(i, j int) { live[i], live[j] = live[j], live[i] })
	start := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
	for i, s := range live {
		at := start.Add(h.cfg.DrainTime * time.Duration(i) / time.Duration(n))
		t.Reset(time.Until(at))
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		s.stop(&protocol.Error{Code: protocol.ErrorShuttingDown, Message: "cloudcore is stopping: reconnect to another replica"})
	}
}

// healthHandler serves /healthz (the hub serves) and /readyz (the Source's
// caches are synced and the hub listens).
func (h *Hub) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case !h.source.Ready():
			http.Error(w, "caches not synced", http.StatusServiceUnavailable)
		case !h.listening.Load():
			http.Error(w, "not listening", http.StatusServiceUnavailable)
		case h.draining.Load():
			http.Error(w, "draining", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	return mux
}

// NodeChanged tells the node's session, if there is one, to reconcile.
func (h *Hub) NodeChanged(node string) {
	h.mu.Lock()
	s := h.sessions[node]
	h.mu.Unlock()
	if s != nil {
		s.kick()
	}
}

// Connected lists the nodes with a live session.
func (h *Hub) Connected() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	nodes := make([]string, 0, len(h.sessions))
	for n := range h.sessions {
		nodes = append(nodes, n)
	}
	return nodes
}

// CertExpiries calls fn with each connected node and when the client
// certificate of its session expires (its renewals included).
func (h *Hub) CertExpiries(fn func(node string, notAfter time.Time)) {
	h.mu.Lock()
	live := make([]*session, 0, len(h.sessions))
	for _, s := range h.sessions {
		live = append(live, s)
	}
	h.mu.Unlock()
	for _, s := range live {
		fn(s.node, time.Unix(0, s.notAfter.Load()))
	}
}

// checkSessions stops the sessions of nodes that were revoked or whose
// certificate expired.
func (h *Hub) checkSessions(ctx context.Context) {
	h.mu.Lock()
	live := make([]*session, 0, len(h.sessions))
	for _, s := range h.sessions {
		live = append(live, s)
	}
	h.mu.Unlock()
	now := time.Now()
	for _, s := range live {
		var e *protocol.Error
		if notAfter := time.Unix(0, s.notAfter.Load()); now.After(notAfter) {
			e = &protocol.Error{Code: protocol.ErrorUnauthorized, Message: "the client certificate expired at " +
				notAfter.UTC().Format(time.RFC3339)}
		} else if err := h.cfg.Auth.Check(ctx, s.node, s.id, false); err != nil {
			e = &protocol.Error{Code: protocol.ErrorRevoked, Message: err.Error()}
		}
		// A session stays registered until its goroutines end: count and
		// log it once, at the sweep that stopped it.
		if e != nil && s.stop(e) {
			h.stats.revoked.Add(1)
			h.log.Warn("session ended: node no longer authorized", slog.String("node", s.node),
				slog.String("reason", e.Message))
		}
	}
}

// ServeHTTP authenticates the edge, upgrades to a websocket, runs the
// handshake and then the session until it ends.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var peer []*x509.Certificate
	if r.TLS != nil {
		// A resumed session's certificates come from its ticket; they are
		// authenticated all the same (expiry, CA, identity).
		peer = r.TLS.PeerCertificates
		if r.TLS.DidResume {
			h.stats.tlsResumed.Add(1)
		}
	}
	node, id, notAfter, err := h.cfg.Auth.Authenticate(r.Context(), peer)
	if err != nil {
		h.stats.refused.Add(1)
		h.log.Warn("edge refused", slog.String("remote", r.RemoteAddr), slog.String("reason", err.Error()))
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	if !h.source.Ready() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "cloudcore is starting: caches not synced", http.StatusServiceUnavailable)
		return
	}
	if ok, after := h.admit.take(time.Now()); !ok {
		n := h.stats.shed.Add(1)
		w.Header().Set("Retry-After", strconv.Itoa(int(after/time.Second)))
		h.logRefused.do(func() {
			h.log.Info("session shed: session rate", slog.String("node", node), slog.Duration("retryAfter", after),
				slog.Float64("sessionRate", h.cfg.SessionRate), slog.Int64("shedSoFar", n))
		})
		http.Error(w, "cloudcore is taking sessions at its rate: come back after Retry-After", http.StatusServiceUnavailable)
		return
	}
	conn, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		h.log.Warn("websocket upgrade failed", slog.String("remote", r.RemoteAddr), slog.Any("err", err))
		return
	}
	conn.SetReadLimit(protocol.MaxFrameSize)
	hello, err := h.handshake(conn, node)
	if err != nil {
		h.stats.refused.Add(1)
		h.log.Warn("edge handshake failed", slog.String("node", node), slog.String("remote", r.RemoteAddr),
			slog.Any("err", err))
		conn.Close()
		return
	}
	s := newSession(h, conn, hello)
	s.id = id
	s.notAfter.Store(notAfter.UnixNano())
	if !h.register(s) {
		writeError(conn, &protocol.Error{Code: protocol.ErrorShuttingDown, Message: "cloudcore is stopping"})
		conn.Close()
		return
	}
	defer h.wg.Done()
	s.run(r.Context())
	h.unregister(s)
}

// handshake reads the Hello, checks it (it must name node, the node of the
// client certificate) and answers Welcome, or answers Error and fails.
func (h *Hub) handshake(conn *websocket.Conn, node string) (*protocol.Hello, error) {
	conn.SetReadDeadline(time.Now().Add(h.cfg.HandshakeTimeout))
	_, b, err := conn.ReadMessage()
	if err != nil {
		return nil, fmt.Errorf("read hello: %w", err)
	}
	// An inventory over MaxInventory is refused at its header, before it
	// is decoded (see protocol.DecodeHello).
	f, err := protocol.DecodeHello(b, h.cfg.MaxInventory)
	if err != nil {
		code := protocol.ErrorBadFrame
		if errors.Is(err, protocol.ErrTooLarge) {
			code = protocol.ErrorTooLarge
			h.stats.inventoryRefused.Add(1)
			err = fmt.Errorf("%w; the hub takes at most %d (MaxInventory)", err, h.cfg.MaxInventory)
		}
		writeError(conn, &protocol.Error{Code: code, Message: err.Error()})
		return nil, fmt.Errorf("hello: %w", err)
	}
	if f.Hello == nil {
		e := &protocol.Error{Code: protocol.ErrorUnexpected, Message: "first frame must be Hello, got " + f.Type()}
		writeError(conn, e)
		return nil, e
	}
	hello := f.Hello
	if hello.NodeName != node {
		h.stats.identityRefused.Add(1)
		e := &protocol.Error{Code: protocol.ErrorUnauthorized, Message: fmt.Sprintf(
			"the client certificate is for node %s, the Hello names node %s", node, hello.NodeName)}
		writeError(conn, e)
		return nil, e
	}
	if hello.ProtocolVersion < protocol.MinVersion || hello.MinVersion > protocol.Version {
		e := &protocol.Error{Code: protocol.ErrorVersion, Message: fmt.Sprintf(
			"edge speaks protocol %d-%d, cloudcore %d-%d", hello.MinVersion, hello.ProtocolVersion,
			protocol.MinVersion, protocol.Version)}
		writeError(conn, e)
		return nil, e
	}
	if n := len(hello.Inventory) + len(hello.NewInventory); n > h.cfg.MaxInventory {
		h.stats.inventoryRefused.Add(1)
		e := &protocol.Error{Code: protocol.ErrorTooLarge, Message: fmt.Sprintf(
			"the Hello lists %d objects; the hub takes at most %d (MaxInventory)", n, h.cfg.MaxInventory)}
		writeError(conn, e)
		return nil, e
	}
	version := min(hello.ProtocolVersion, protocol.Version)
	if hello.Agent != "" {
		h.log.Debug("edge agent", slog.String("node", node), slog.String("agent", truncate(hello.Agent, 200)),
			slog.Uint64("protocol", uint64(version)))
	}
	welcome := &protocol.Frame{Welcome: &protocol.Welcome{
		ProtocolVersion:   version,
		HeartbeatInterval: protocol.DurationOf(h.cfg.HeartbeatInterval),
		SessionTimeout:    protocol.DurationOf(h.cfg.SessionTimeout),
		MaxFrameSize:      protocol.MaxFrameSize,
	}}
	if version >= protocol.ReconnectMaxSince {
		welcome.Welcome.ReconnectMax = protocol.DurationOf(h.ReconnectMax())
	}
	wb, err := protocol.Encode(welcome)
	if err != nil {
		return nil, fmt.Errorf("encode welcome: %w", err)
	}
	conn.SetWriteDeadline(time.Now().Add(h.cfg.HandshakeTimeout))
	if err := conn.WriteMessage(websocket.BinaryMessage, wb); err != nil {
		return nil, fmt.Errorf("write welcome: %w", err)
	}
	conn.SetReadDeadline(time.Time{})
	conn.SetWriteDeadline(time.Time{})
	return hello, nil
}

// register makes s the node's session, replacing (and stopping) an older
// one: both were authenticated as the node (the certificate and the Node's
// current identity), so the newer connection is the node coming back. It
// fails once the hub is closing.
func (h *Hub) register(s *session) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing {
		return false
	}
	if old := h.sessions[s.node]; old != nil {
		old.stop(&protocol.Error{Code: protocol.ErrorReplaced, Message: "a newer session of this node connected"})
	}
	s.started = time.Now()
	h.sessions[s.node] = s
	h.wg.Add(1)
	h.stats.sessions.Add(1)
	return true
}

// unregister forgets s. If it was the node's session (not one a newer
// session replaced), the Upstream, if it is a sessionEnder, is told.
func (h *Hub) unregister(s *session) {
	h.mu.Lock()
	last := h.sessions[s.node] == s
	if last {
		delete(h.sessions, s.node)
	}
	h.mu.Unlock()
	h.stats.sessions.Add(-1)
	if e, ok := h.upstream.(sessionEnder); ok && last {
		e.SessionEnded(s.node)
	}
}

// sessionEnder is an Upstream that gives up the messages of a node whose
// session ended (status.Writer): the edge sends what was not acknowledged
// again to the replica it reaches next, and an older message written here
// after a newer one written there would take the object back.
type sessionEnder interface {
	SessionEnded(node string)
}

// writeError sends e on a connection that has no session (yet), then closes
// the websocket politely.
func writeError(conn *websocket.Conn, e *protocol.Error) {
	if b, err := protocol.Encode(&protocol.Frame{Error: e}); err == nil {
		conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		conn.WriteMessage(websocket.BinaryMessage, b)
	}
	conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(closeCode(e), truncate(e.Message, 120)),
		time.Now().Add(time.Second))
}

func closeCode(e *protocol.Error) int {
	switch e.Code {
	case protocol.ErrorTooLarge:
		return websocket.CloseMessageTooBig
	case protocol.ErrorShuttingDown:
		return websocket.CloseGoingAway
	case protocol.ErrorBadFrame, protocol.ErrorUnknownMessage, protocol.ErrorUnexpected:
		return websocket.CloseUnsupportedData
	}
	return websocket.ClosePolicyViolation
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Stats are the hub's counters since start.
type Stats struct {
	sessions        atomic.Int64
	refused         atomic.Int64
	identityRefused atomic.Int64
	revoked         atomic.Int64
	certsIssued     atomic.Int64
	certsRefused    atomic.Int64
	framesIn        atomic.Int64
	framesOut       atomic.Int64
	bytesIn         atomic.Int64
	bytesOut        atomic.Int64
	objectMessages  atomic.Int64
	// ackLatency: from an object message queued to its ack; dispatchLatency:
	// from a change notification to the first message it queued.
	ackLatency, dispatchLatency histogram.Latency
	badFrames                   atomic.Int64
	resyncs                     atomic.Int64
	resyncMessages              atomic.Int64
	resyncBytes                 atomic.Int64

	conns         atomic.Int64
	refusedTotal  atomic.Int64
	refusedPerIP  atomic.Int64
	refusedRateIP atomic.Int64
	closedNew     atomic.Int64
	closedIdle    atomic.Int64

	inventoryRefused  atomic.Int64
	upstreamPaused    atomic.Int64
	upstreamThrottled atomic.Int64
	eventsDropped     atomic.Int64
	deleteScans       atomic.Int64
	deleteScanned     atomic.Int64
	streams           atomic.Int64
	streamsRefused    atomic.Int64
	shed              atomic.Int64
	rebalanced        atomic.Int64
	// waitedHandshakes and waitedRate count the connections that waited at
	// accept for a MaxHandshakes place and an AcceptRate token,
	// acceptWaitNanos the time they waited.
	waitedHandshakes, waitedRate, acceptWaitNanos atomic.Int64
	tlsResumed                                    atomic.Int64

	// relayed counts the writes of edge pods relayed (answered by the API
	// server or refused by the relay); relayRefused those refused over
	// MaxRelayInFlight.
	relayed, relayRefused atomic.Int64
}

// StatsSnapshot is a copy of the counters.
type StatsSnapshot struct {
	Sessions int64 `json:"sessions"`
	// Refused counts connections refused before a session (no or a bad
	// certificate, a revoked node, a bad Hello); IdentityRefused those of
	// them whose Hello named another node than the certificate.
	Refused         int64 `json:"refused"`
	IdentityRefused int64 `json:"identityRefused"`
	// Revoked counts sessions ended because their node was revoked or its
	// certificate expired.
	Revoked int64 `json:"revoked"`
	// CertsIssued and CertsRefused count in-session renewals.
	CertsIssued    int64 `json:"certsIssued"`
	CertsRefused   int64 `json:"certsRefused"`
	FramesIn       int64 `json:"framesIn"`
	FramesOut      int64 `json:"framesOut"`
	BytesIn        int64 `json:"bytesIn"`
	BytesOut       int64 `json:"bytesOut"`
	ObjectMessages int64 `json:"objectMessages"`
	BadFrames      int64 `json:"badFrames"`
	Resyncs        int64 `json:"resyncs"`
	ResyncMessages int64 `json:"resyncMessages"`
	ResyncBytes    int64 `json:"resyncBytes"`

	// Conns is the connections open now (sessions included).
	Conns int64 `json:"conns"`
	// ConnsRefusedTotal, ConnsRefusedPerIP and ConnsRefusedRatePerIP count
	// connections closed at accept by MaxConns, MaxConnsPerIP and
	// AcceptRatePerIP.
	ConnsRefusedTotal     int64 `json:"connsRefusedTotal"`
	ConnsRefusedPerIP     int64 `json:"connsRefusedPerIP"`
	ConnsRefusedRatePerIP int64 `json:"connsRefusedRatePerIP"`
	// AcceptWaitsHandshakes and AcceptWaitsRate count the connections that
	// waited at accept, not accepted yet, for a MaxHandshakes place and for
	// an AcceptRate token; AcceptWait is the time they waited in all.
	AcceptWaitsHandshakes int64         `json:"acceptWaitsHandshakes"`
	AcceptWaitsRate       int64         `json:"acceptWaitsRate"`
	AcceptWait            time.Duration `json:"acceptWait"`
	// ConnsClosedNew counts connections closed before they made a request
	// (silent, or a TLS handshake or header unfinished in HandshakeTimeout,
	// or a failed TLS handshake); ConnsClosedIdle keep-alive connections
	// closed idle (IdleTimeout, or the peer left).
	ConnsClosedNew  int64 `json:"connsClosedNew"`
	ConnsClosedIdle int64 `json:"connsClosedIdle"`
	// InventoryRefused counts Hellos refused by MaxInventory.
	InventoryRefused int64 `json:"inventoryRefused"`
	// UpstreamPaused counts the times a session stopped reading at
	// MaxUpstreamInFlight; UpstreamThrottled the statuses that waited for
	// UpstreamRate; EventsDropped the Events it dropped.
	UpstreamPaused    int64 `json:"upstreamPaused"`
	UpstreamThrottled int64 `json:"upstreamThrottled"`
	EventsDropped     int64 `json:"eventsDropped"`
	// DeleteScans counts the walks of a node's acknowledged objects that
	// look for those to delete, DeleteScanned the objects they visited:
	// one walk per resync, then one per reconcile once its deletes are
	// sent.
	DeleteScans   int64 `json:"deleteScans"`
	DeleteScanned int64 `json:"deleteScanned"`
	// Streams counts the byte streams opened to nodes, StreamsRefused
	// those refused by MaxStreams or MaxStreamsPerNode.
	Streams        int64 `json:"streams"`
	StreamsRefused int64 `json:"streamsRefused"`
	// Shed counts authenticated edges answered 503 with a Retry-After
	// because sessions started past SessionRate.
	Shed int64 `json:"shed"`
	// TLSResumed counts the requests whose connection resumed a TLS
	// session (a session ticket, no certificate signatures), whatever came
	// of them.
	TLSResumed int64 `json:"tlsResumed"`
	// Rebalanced counts the sessions sent away to rebalance the replicas.
	Rebalanced int64 `json:"rebalanced"`
	// SendQueue is the frames queued to send, over all sessions;
	// Unacknowledged the object messages sent and not yet acknowledged
	// (the sessions' windows in use).
	SendQueue      int64 `json:"sendQueue"`
	Unacknowledged int64 `json:"unacknowledged"`
	// AckLatency is the time from an object message queued to the node's
	// ack; DispatchLatency the time from a change notification of a node's
	// objects to the first message it queued.
	AckLatency      histogram.Snapshot `json:"-"`
	DispatchLatency histogram.Snapshot `json:"-"`
	// Relayed counts the writes of edge pods answered (by the API server
	// or refused by the relay); RelayRefused those refused 429 over
	// MaxRelayInFlight.
	Relayed      int64 `json:"relayed"`
	RelayRefused int64 `json:"relayRefused"`
}

// Stats returns the hub's counters.
func (h *Hub) Stats() StatsSnapshot {
	s := &h.stats
	var queued, unacked int64
	h.mu.Lock()
	for _, ss := range h.sessions {
		queued += int64(ss.sendq.len())
		unacked += ss.unacked.Load()
	}
	h.mu.Unlock()
	return StatsSnapshot{
		SendQueue: queued, Unacknowledged: unacked,
		AckLatency: s.ackLatency.Snapshot(), DispatchLatency: s.dispatchLatency.Snapshot(),
		Sessions: s.sessions.Load(), Refused: s.refused.Load(), IdentityRefused: s.identityRefused.Load(),
		Revoked: s.revoked.Load(), CertsIssued: s.certsIssued.Load(), CertsRefused: s.certsRefused.Load(),
		FramesIn:  s.framesIn.Load(),
		FramesOut: s.framesOut.Load(), BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(),
		ObjectMessages: s.objectMessages.Load(), BadFrames: s.badFrames.Load(), Resyncs: s.resyncs.Load(),
		ResyncMessages: s.resyncMessages.Load(), ResyncBytes: s.resyncBytes.Load(),
		Conns: s.conns.Load(), ConnsRefusedTotal: s.refusedTotal.Load(), ConnsRefusedPerIP: s.refusedPerIP.Load(),
		ConnsRefusedRatePerIP: s.refusedRateIP.Load(), ConnsClosedNew: s.closedNew.Load(), ConnsClosedIdle: s.closedIdle.Load(),
		InventoryRefused: s.inventoryRefused.Load(), UpstreamPaused: s.upstreamPaused.Load(),
		UpstreamThrottled: s.upstreamThrottled.Load(), EventsDropped: s.eventsDropped.Load(),
		DeleteScans: s.deleteScans.Load(), DeleteScanned: s.deleteScanned.Load(),
		Streams: s.streams.Load(), StreamsRefused: s.streamsRefused.Load(), Shed: s.shed.Load(), TLSResumed: s.tlsResumed.Load(),
		AcceptWaitsHandshakes: s.waitedHandshakes.Load(), AcceptWaitsRate: s.waitedRate.Load(),
		AcceptWait: time.Duration(s.acceptWaitNanos.Load()), Rebalanced: s.rebalanced.Load(),
		Relayed: s.relayed.Load(), RelayRefused: s.relayRefused.Load(),
	}
}

// quietListener turns TCP keep-alives off on the connections it accepts.
// Heartbeats already tell a dead link; Go's default keep-alive probes every
// 15 s of silence would cost an idle edge more than its heartbeats do (a
// probe and its ACK each way, 52 bytes apiece).
type quietListener struct{ net.Listener }

func (l quietListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetKeepAlive(false)
	}
	return c, err
}
