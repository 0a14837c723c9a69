package metaserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

// DefaultAddr is where the metaserver listens unless told otherwise.
const DefaultAddr = "127.0.0.1:10550"

// Config configures the Server.
type Config struct {
	// Addr is the loopback address to listen on, host:port (default
	// DefaultAddr). Port 0 picks a free port; Server.Addr tells which.
	Addr string
	// NodeName is the node's name.
	NodeName string
	// NodeLabels are the labels the node asks for on its Node.
	NodeLabels map[string]string
	// Clients are the callers served, by bearer token (LocalClients makes
	// edgecore's). Empty refuses every caller: the metaserver serves the
	// node's secrets, so there is no anonymous access.
	Clients []Client
	// PodStatuses, if set, are the statuses the node last reported of its
	// pods. Pods are served with them: the cloud does not send a pod down
	// again when only its status changed, so the stored pod carries the
	// status of its last change.
	PodStatuses PodStatuses
	// Metrics, if set, is served at /metrics to the clients that may read
	// MetricsResource (NodeClient and MetricsClient of LocalClients).
	Metrics http.Handler
	// Ready, if set, decides /readyz: nil is ready, an error is 503 (the
	// error is not shown: /readyz is public and says nothing but ok or
	// not ready). edgecore's checks that its store is open.
	Ready func() error
	// NodeStatus returns the node's status now (required).
	NodeStatus func() *corev1.NodeStatus
	// NodeInterval is how often the served Node is rebuilt from NodeStatus
	// and the cache checked against the store (default 1m).
	NodeInterval time.Duration
	// StateDir holds the file counting the Server's starts, which keeps
	// resourceVersions of different runs apart (required).
	StateDir string
	// History is how many changes are kept per resource for watches to
	// resume from (default 1000). A client further behind gets 410 Gone and
	// lists again.
	History int
	// BookmarkInterval is how often a watch that allows bookmarks gets one
	// (default 1m).
	BookmarkInterval time.Duration
	// InCluster, if set, runs a second listener, TLS, on the pod network:
	// the Kubernetes API the node's pods reach with in-cluster config,
	// authenticated by their service-account tokens and authorized as the
	// cluster would (see InClusterConfig).
	InCluster *InClusterConfig
	// Logger is where the Server logs (default slog.Default()).
	Logger *slog.Logger
}

// PodStatuses are the pod statuses the node reported (pods.Reported).
type PodStatuses interface {
	// PodStatus returns the encoded status (protocol.EncodePodStatus)
	// last reported for the pod uid.
	PodStatus(uid string) ([]byte, bool)
	// Changed receives after statuses changed.
	Changed() <-chan struct{}
}

// ValidateAddr checks that addr is host:port with a loopback host: the
// metaserver serves secrets to local clients over plain HTTP, so it must not
// be reachable from other machines.
func ValidateAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", addr, err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	} else if p == 0 && port != "0" {
		return fmt.Errorf("%q: bad port %q", addr, port)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q: host %q is not a loopback address (127.0.0.1, ::1 or localhost); the metaserver serves secrets without authentication", addr, host)
	}
	return nil
}

func (c *Config) validate() error {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if err := ValidateAddr(c.Addr); err != nil {
		return fmt.Errorf("metaserver: addr: %w", err)
	}
	if err := protocol.ValidateNodeName(c.NodeName); err != nil {
		return fmt.Errorf("metaserver: %w", err)
	}
	if c.NodeStatus == nil {
		return errors.New("metaserver: no NodeStatus")
	}
	for i, cl := range c.Clients {
		if len(cl.Token) < 32 {
			return fmt.Errorf("metaserver: clients[%d] (%s): a token of at least 32 characters is required", i, cl.Name)
		}
	}
	if c.StateDir == "" {
		return errors.New("metaserver: no StateDir")
	}
	if c.NodeInterval == 0 {
		c.NodeInterval = time.Minute
	}
	if c.History == 0 {
		c.History = 1000
	}
	if c.BookmarkInterval == 0 {
		c.BookmarkInterval = time.Minute
	}
	if c.NodeInterval < 0 || c.History < 1 || c.BookmarkInterval < 0 {
		return fmt.Errorf("metaserver: bad interval or history in %+v", *c)
	}
	if c.InCluster != nil {
		if err := c.InCluster.validate(); err != nil {
			return err
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Server is the metaserver. It implements agent.Observer.
type Server struct {
	cfg   Config
	db    *store.DB
	log   *slog.Logger
	cache *cache
	kickc chan struct{}
	ready chan struct{}
	// refused counts requests refused: no or a bad token, a Host that is
	// not loopback, a resource the client may not read.
	refused atomic.Int64
	// writesRefused counts pods' writes refused with the cloud away;
	// throttled the pods' requests over their rate.
	writesRefused atomic.Int64
	throttled     atomic.Int64
	// writesRelayed counts pods' writes the cloud answered.
	writesRelayed atomic.Int64

	limMu sync.Mutex
	// limiters are the pods' rate limiters by UID; guarded by limMu.
	limiters map[string]*rate.Limiter

	mu sync.Mutex
	// addr is the address listened on; guarded by mu.
	addr string
	// inClusterAddr is the in-cluster listener's address; guarded by mu.
	inClusterAddr string
}

// epochFile counts the starts of the Server in Config.StateDir.
const epochFile = "metaserver-epoch"

// epochSpan is the room of versions of one run: versions of run e are
// e*epochSpan and up, so that they stay apart from those of every other
// run without trusting the clock (edge machines often have no RTC).
const epochSpan = 1_000_000_000_000

// maxEpoch is the largest epoch whose versions fit in a uint64.
const maxEpoch = math.MaxUint64/epochSpan - 1

// nextEpoch returns the epoch of this start: one more than the count of
// starts kept in dir, which it saves (fsynced, file and directory, so that a
// power loss leaves the old count or the new one, not an empty file).
//
// A count that cannot be read (an empty or torn file, garbage) or cannot be
// saved (a full disk) is no reason not to start: the epoch is then a random
// one (fallbackEpoch), far above any count reached by counting, and warn
// says what went wrong, for the caller to log. When only the save failed,
// the counted epoch is not used, since the next start would count it again.
func nextEpoch(dir string) (epoch uint64, warn error) {
	path := filepath.Join(dir, epochFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		epoch = 1
	case err != nil:
		warn = fmt.Errorf("read %s: %w", path, err)
	default:
		prev, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		switch {
		case err != nil:
			warn = fmt.Errorf("%s: %w", path, err)
		case prev >= maxEpoch:
			warn = fmt.Errorf("%s: count %d is above %d", path, prev, maxEpoch-1)
		default:
			epoch = prev + 1
		}
	}
	if warn != nil {
		epoch = fallbackEpoch()
	}
	err = os.MkdirAll(dir, 0o700)
	if err == nil {
		err = pki.WriteFileSync(path, []byte(strconv.FormatUint(epoch, 10)+"\n"), 0o600)
	}
	if err != nil {
		if warn == nil {
			epoch = fallbackEpoch()
		}
		warn = errors.Join(warn, fmt.Errorf("save the count of starts: %w", err))
	}
	return epoch, warn
}

// fallbackEpoch is a random epoch in the third quarter of the range: above
// every count of starts a node reaches by counting from 1 (half the range is
// over nine million starts), with a quarter of the range left to count on
// from it. Two fallbacks may draw epochs close together, but the chance that
// the versions of two runs overlap is about the number of starts between
// them over 4.6 million.
func fallbackEpoch() uint64 {
	return maxEpoch/2 + rand.Uint64N(maxEpoch/4)
}

// New builds a Server and loads the store's objects; it serves nothing
// until Start.
func New(cfg Config, db *store.DB) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	epoch, warn := nextEpoch(cfg.StateDir)
	if warn != nil {
		cfg.Logger.Warn("metaserver: count of starts unusable, a random epoch is used", slog.Uint64("epoch", epoch),
			slog.Any("err", warn))
	}
	s := &Server{cfg: cfg, db: db, log: cfg.Logger, kickc: make(chan struct{}, 1), ready: make(chan struct{}),
		cache: newCache(epoch*epochSpan, cfg.History, resourceNames)}
	if err := s.sync(true); err != nil {
		return nil, err
	}
	if err := s.refreshNode(true); err != nil {
		return nil, err
	}
	return s, nil
}

// ObjectsChanged implements agent.Observer. It never blocks.
func (s *Server) ObjectsChanged(map[protocol.Kind]bool, []protocol.ObjectRef) {
	select {
	case s.kickc <- struct{}{}:
	default:
	}
}

// Connected implements agent.Observer.
func (s *Server) Connected() {}

// Ready is closed once the Server listens.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr returns the address the Server listens on, "" before it does.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Start listens on Config.Addr and serves until ctx ends. If the address
// cannot be bound (say, another process holds the port) it logs the error
// and tries again, with back-off: the rest of edgecore does not depend on
// the metaserver and keeps running.
func (s *Server) Start(ctx context.Context) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// Watches end with ctx.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    s.errorLog(),
	}
	errc := make(chan error, 1)
	// The in-cluster listener, if any: its own retry, so that a pod
	// address not there yet (the bridge comes up with the first pod)
	// does not hold up the loopback one.
	var icSrv *http.Server
	icErrc := make(chan error, 1)
	var icRetry <-chan time.Time
	icDelay := time.Second
	listenInCluster := func() {
		if s.cfg.InCluster == nil {
			return
		}
		var err error
		if icSrv, err = s.serveInCluster(ctx, icErrc); err != nil {
			s.log.Error("metaserver in-cluster listener cannot listen", slog.String("addr", s.cfg.InCluster.Addr),
				slog.Any("err", err), slog.Duration("retry_in", icDelay))
			icRetry = time.After(icDelay)
			icDelay = min(2*icDelay, 30*time.Second)
			return
		}
		icRetry = nil
	}
	listenInCluster()
	defer func() {
		if icSrv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := icSrv.Shutdown(sctx); err != nil {
				icSrv.Close()
			}
		}
	}()
	serving := false
	var retry <-chan time.Time
	delay := time.Second
	listen := func() error {
		ln, err := net.Listen("tcp", s.cfg.Addr)
		if err != nil {
			s.log.Error("metaserver cannot listen", slog.String("addr", s.cfg.Addr), slog.Any("err", err),
				slog.Duration("retry_in", delay))
			retry = time.After(delay)
			delay = min(2*delay, 30*time.Second)
			return nil
		}
		if a, ok := ln.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
			ln.Close()
			return fmt.Errorf("metaserver: %s is not a loopback address", ln.Addr())
		}
		s.mu.Lock()
		s.addr = ln.Addr().String()
		s.mu.Unlock()
		close(s.ready)
		retry, serving = nil, true
		go func() { errc <- srv.Serve(ln) }()
		s.log.Info("metaserver listening", slog.String("addr", s.Addr()))
		return nil
	}
	if err := listen(); err != nil {
		return err
	}

	t := time.NewTicker(s.cfg.NodeInterval)
	defer t.Stop()
	var statusc <-chan struct{}
	if s.cfg.PodStatuses != nil {
		statusc = s.cfg.PodStatuses.Changed()
	}
	for {
		select {
		case <-statusc:
			if err := s.sync(false); err != nil {
				s.log.Error("metaserver sync", slog.Any("err", err))
			}
		case <-retry:
			if err := listen(); err != nil {
				return err
			}
		case <-icRetry:
			listenInCluster()
		case err := <-icErrc:
			return fmt.Errorf("metaserver: serve in-cluster: %w", err)
		case <-s.kickc:
			if err := s.sync(false); err != nil {
				s.log.Error("metaserver sync", slog.Any("err", err))
			}
		case <-t.C:
			if err := s.refreshNode(false); err != nil {
				s.log.Error("metaserver node", slog.Any("err", err))
			}
			if err := s.sync(false); err != nil {
				s.log.Error("metaserver sync", slog.Any("err", err))
			}
		case err := <-errc:
			return fmt.Errorf("metaserver: serve: %w", err)
		case <-ctx.Done():
			if !serving {
				return nil
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				srv.Close()
			}
			<-errc
			return nil
		}
	}
}

// sync brings the cache level with the store: every object whose version
// differs from the one the cache holds is read again, every object gone is
// deleted. With initial set, the objects make no events.
func (s *Server) sync(initial bool) error {
	err := s.db.View(func(tx *store.Tx) error {
		inv, err := tx.Inventory()
		if err != nil {
			return err
		}
		held := map[protocol.Kind]map[string]string{}
		for _, ref := range inv {
			if held[ref.Kind] == nil {
				held[ref.Kind] = map[string]string{}
			}
			held[ref.Kind][ref.UID] = ref.ResourceVersion
		}
		for _, name := range resourceNames {
			r := resources[name]
			if r.store == 0 {
				continue
			}
			cached := s.cache.sources(name)
			var deleted []string
			for uid := range cached {
				if _, ok := held[r.store][uid]; !ok {
					deleted = append(deleted, uid)
				}
			}
			var ups []upsert
			for uid, rv := range held[r.store] {
				var status []byte
				if r.store == protocol.KindPod && s.cfg.PodStatuses != nil {
					if st, ok := s.cfg.PodStatuses.PodStatus(uid); ok {
						status, rv = st, rv+"+"+statusTag(st)
					}
				}
				if v, ok := cached[uid]; ok && v == rv {
					continue
				}
				o, err := tx.Object(r.store, uid)
				if err != nil {
					return err
				}
				if o == nil {
					continue
				}
				data := o.Data
				if status != nil {
					data = s.withStatus(o, status)
				}
				ups = append(ups, upsert{uid: uid, namespace: o.Namespace, name: o.Name, source: rv, data: data})
			}
			if len(deleted) == 0 && len(ups) == 0 {
				continue
			}
			slices.Sort(deleted)
			slices.SortFunc(ups, func(a, b upsert) int { return strings.Compare(a.uid, b.uid) })
			s.cache.apply(name, deleted, ups, initial)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("metaserver: read store: %w", err)
	}
	return nil
}

// statusTag is a short hash of an encoded status, to tell in the cache's
// source whether the status served is the one last reported.
func statusTag(status []byte) string {
	h := fnv.New64a()
	h.Write(status)
	return strconv.FormatUint(h.Sum64(), 36)
}

// withStatus returns the stored pod o with the status the node reported,
// or o's data as it is if either does not decode (logged).
func (s *Server) withStatus(o *protocol.Object, status []byte) []byte {
	p, err := protocol.DecodePod(o.Data)
	if err == nil {
		var st *corev1.PodStatus
		if st, err = protocol.DecodePodStatus(status); err == nil {
			p.Status = *st
			var b []byte
			if b, err = p.Marshal(); err == nil {
				return b
			}
		}
	}
	s.log.Error("metaserver: pod served with its stored status", slog.String("pod", o.Namespace+"/"+o.Name),
		slog.Any("err", err))
	return o.Data
}

// refreshNode rebuilds the served Node from the node's status.
func (s *Server) refreshNode(initial bool) error {
	var prev *corev1.Node
	cur := s.cache.get(resNodes, "", s.cfg.NodeName)
	if cur != nil {
		o, err := resources[resNodes].decode(cur.data)
		if err != nil {
			return err
		}
		prev = o.(*corev1.Node)
	}
	n := buildNode(s.cfg.NodeName, s.cfg.NodeLabels, s.cfg.NodeStatus(), prev, time.Now())
	data, err := n.Marshal()
	if err != nil {
		return fmt.Errorf("encode node: %w", err)
	}
	if cur != nil && bytes.Equal(cur.data, data) {
		return nil
	}
	s.cache.apply(resNodes, nil, []upsert{{uid: string(n.UID), name: n.Name, data: data}}, initial)
	return nil
}

func (s *Server) errorLog() *log.Logger { return slog.NewLogLogger(s.log.Handler(), slog.LevelWarn) }

// Refused is how many requests the Server refused (authentication, Host,
// authorization).
func (s *Server) Refused() int64 { return s.refused.Load() }
