package simulator

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/edgecore/agent"
	"github.com/tether-edge/tether/edgecore/link"
	"github.com/tether-edge/tether/edgecore/runtime/fake"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

// fleetConfig is what every hollow node of a fleet shares.
type fleetConfig struct {
	// prefix names the nodes: <prefix>-<index, 5 digits>.
	prefix string
	// dir holds one directory per node, dir/<node name>/edge.db.
	dir string
	// url reaches the hub; roots verify it (shared by every node's
	// tls.Config).
	url   string
	roots *x509.CertPool
	// enroll registers a node's Node and issues its client certificate
	// for pub (enroll.Service.Direct).
	enroll func(ctx context.Context, node string, pub crypto.PublicKey) (certPEM []byte, err error)
	labels map[string]string
	// The edges' timers (zero: edgecore's defaults).
	reconnectInitial, reconnectMax, nodeStatusInterval, podResyncInterval time.Duration
	// log is every node's logger.
	log *slog.Logger
	// committed hears every node's commits.
	committed func(node int, c agent.Commit)
	// dial opens the nodes' connections (Config.NodeNamespace).
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// edge, if set, adjusts a node's configuration (Config.Edge).
	edge func(node int, cfg *edgecore.Config)
}

// fleet is the hollow nodes. Each node is the real edgecore stack (store,
// agent with its tunnel client, pod manager) from edgecore.New, with the
// in-memory runtime, no metaserver, no static pods, and its link through a
// wire of its own.
//
// The fleet's methods are called by one goroutine at a time (the Sim's
// caller); mu lets the progress reporter and the checks read the nodes
// meanwhile.
type fleet struct {
	cfg fleetConfig
	// failed counts edgecores that stopped with an error on their own.
	failed atomic.Int64

	mu sync.RWMutex
	// nodes, and each node's run state (ec, rt, cancel, done), are guarded
	// by mu.
	nodes []*node
}

// node is one hollow node.
type node struct {
	index int
	name  string
	dir   string
	ip    string
	wire  wire
	// tls presents the node's client certificate and verifies the hub;
	// nil until the node is enrolled, then kept across restarts. Guarded
	// by fleet.mu.
	tls *tls.Config

	// Run state, guarded by fleet.mu; nil while stopped.
	ec     *edgecore.EdgeCore
	rt     *fake.Runtime
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
}

// add makes n more nodes, not started, and returns their indexes.
func (f *fleet) add(n int) []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	idx := make([]int, 0, n)
	for range n {
		i := len(f.nodes)
		name := fmt.Sprintf("%s-%05d", f.cfg.prefix, i)
		// Addresses from 100.64.0.0/10 (shared address space): reported,
		// never used.
		ip := fmt.Sprintf("100.%d.%d.%d", 64+(i>>16)&63, (i>>8)&255, i&255)
		f.nodes = append(f.nodes, &node{index: i, name: name, dir: filepath.Join(f.cfg.dir, name), ip: ip, wire: wire{connect: f.cfg.dial}})
		idx = append(idx, i)
	}
	return idx
}

func (f *fleet) size() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return len(f.nodes)
}

func (f *fleet) node(i int) *node {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.nodes[i]
}

// start starts node i's edgecore (its store is opened, or created on the
// first start) under ctx. It does nothing if the node runs.
func (f *fleet) start(ctx context.Context, i int) error {
	n := f.node(i)
	f.mu.RLock()
	running, tlsCfg := n.ec != nil, n.tls
	f.mu.RUnlock()
	if running {
		return nil
	}
	if tlsCfg == nil {
		return fmt.Errorf("node %s: not enrolled", n.name)
	}
	off := false
	rt := fake.New(n.ip)
	// The node's own dialer: its certificate in memory (no CAFile or
	// CredentialsFile, no renewal: it is valid for a year) and its link
	// through the wire.
	dialer := &link.Dialer{URL: f.cfg.url, TLS: tlsCfg, Timeout: 15 * time.Second, NetDial: n.wire.dial}
	cfg := edgecore.Config{
		NodeName:           n.name,
		Cloud:              edgecore.CloudConfig{URL: f.cfg.url, Dialer: dialer},
		DataDir:            n.dir,
		NodeIP:             n.ip,
		Labels:             f.cfg.labels,
		ReconnectInitial:   metav1.Duration{Duration: f.cfg.reconnectInitial},
		ReconnectMax:       metav1.Duration{Duration: f.cfg.reconnectMax},
		NodeStatusInterval: metav1.Duration{Duration: f.cfg.nodeStatusInterval},
		PodResyncInterval:  metav1.Duration{Duration: f.cfg.podResyncInterval},
		StaticPodPath:      edgecore.NoStaticPods,
		// Thousands of Starting and NodeReady events at each connect wave
		// would weigh on what the benchmark measures.
		NodeEvents: &off,
		MetaServer: edgecore.MetaServerConfig{Enable: &off},
		// No MQTT broker per node unless Config.Edge asks for one.
		Devices:     edgecore.DevicesConfig{Enable: &off},
		Logger:      f.cfg.log,
		Runtime:     "fake", // the hollow nodes run nothing: rt below
		RuntimeImpl: rt,
		// Every hollow node measures the same machine: once a minute
		// rather than every 5s keeps ten thousand of them cheap.
		NodeHealth: edgecore.NodeHealthConfig{Period: metav1.Duration{Duration: time.Minute}},
		// No kubelet API socket per node: a file descriptor each, and the
		// in-memory runtime has no logs to read.
		KubeletSocket: "-",
	}
	if f.cfg.edge != nil {
		f.cfg.edge(i, &cfg)
		if cfg.RuntimeImpl != rt {
			return fmt.Errorf("node %s: Config.Edge replaced the in-memory runtime", n.name)
		}
		if cfg.Cloud.Dialer != agent.Dialer(dialer) {
			return fmt.Errorf("node %s: Config.Edge replaced the node's dialer (Cloud.Dialer)", n.name)
		}
	}
	if f.cfg.committed != nil {
		committed := f.cfg.committed
		cfg.CommitHook = func(c agent.Commit) { committed(i, c) }
	}
	ec, err := edgecore.New(cfg)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.name, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	f.mu.Lock()
	n.ec, n.rt, n.cancel, n.done = ec, rt, cancel, done
	f.mu.Unlock()
	go func() {
		defer close(done)
		if err := ec.Run(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
			f.failed.Add(1)
			f.cfg.log.Error("hollow node stopped", slog.String("node", n.name), slog.Any("err", err))
		}
	}()
	return nil
}

// enrollWorkers is how many nodes enroll at once: each enrollment is a
// Node created on the API server.
const enrollWorkers = 32

// enroll gives each node in sel that has none its identity, as edgecore
// join does: a key made here and a certificate for it from f.cfg.enroll,
// which registers the node's Node. A node keeps both across restarts. It
// returns how many nodes it enrolled; on error, those that were enrolled
// stay so.
func (f *fleet) enroll(ctx context.Context, sel []int) (int, error) {
	var todo []*node
	f.mu.RLock()
	for _, i := range sel {
		if i >= 0 && i < len(f.nodes) && f.nodes[i].tls == nil {
			todo = append(todo, f.nodes[i])
		}
	}
	f.mu.RUnlock()
	var done atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(enrollWorkers)
	for _, n := range todo {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			c, err := f.credentials(gctx, n.name)
			if err != nil {
				return fmt.Errorf("enroll node %s: %w", n.name, err)
			}
			f.mu.Lock()
			n.tls = c
			f.mu.Unlock()
			done.Add(1)
			return nil
		})
	}
	err := g.Wait()
	if err == nil {
		err = ctx.Err()
	}
	return int(done.Load()), err
}

// credentials makes a key for node, has it certified and returns the
// node's TLS configuration.
func (f *fleet) credentials(ctx context.Context, node string) (*tls.Config, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	certPEM, err := f.cfg.enroll(ctx, node, &key.PublicKey)
	if err != nil {
		return nil, err
	}
	pair, err := pki.TLSPair(certPEM, key)
	if err != nil {
		return nil, err
	}
	// A session cache of its own, of the kind edgecore's credentials keep:
	// a reconnect resumes the TLS session with the hub's ticket.
	return &tls.Config{RootCAs: f.cfg.roots, MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*pair},
		ClientSessionCache: link.NewSessionCache(1)}, nil
}

// stop stops node i's edgecore and closes its store; the store file stays.
func (f *fleet) stop(i int) error {
	n := f.node(i)
	f.mu.Lock()
	ec, cancel, done := n.ec, n.cancel, n.done
	n.ec, n.rt, n.cancel, n.done = nil, nil, nil, nil
	f.mu.Unlock()
	if ec == nil {
		return nil
	}
	cancel()
	<-done
	if err := ec.Close(); err != nil {
		return fmt.Errorf("node %s: close store: %w", n.name, err)
	}
	return nil
}

// stopAll stops every node, a few at a time.
func (f *fleet) stopAll() error {
	f.mu.RLock()
	n := len(f.nodes)
	f.mu.RUnlock()
	var (
		wg   sync.WaitGroup
		emu  sync.Mutex
		errs []error
	)
	sem := make(chan struct{}, 64)
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f.stop(i); err != nil {
				emu.Lock()
				errs = append(errs, err)
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// nodeView is a node as the checks and the progress reporter see it.
type nodeView struct {
	index   int
	name    string
	running bool
	// enrolled says the node has its certificate.
	enrolled bool
	cut      bool
	state    agent.State
	ec       *edgecore.EdgeCore
	rt       *fake.Runtime
	up       int64
	down     int64
	// connectedAt is when the node's link last connected (zero: never).
	connectedAt time.Time
	// dials is how many connections the hub accepted, every attempt.
	dials int64
	// unanswered is how many of them ended before the hub sent a byte.
	unanswered int64
	// replica is the cloudcore replica its link last reached (0 with one
	// cloudcore).
	replica int
}

// each calls fn for every node in sel (nil: every node), holding the read
// lock: fn must be quick and must not call the fleet.
func (f *fleet) each(sel []int, fn func(v nodeView)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	visit := func(n *node) {
		v := nodeView{index: n.index, name: n.name, running: n.ec != nil, enrolled: n.tls != nil, cut: n.wire.isCut(),
			ec: n.ec, rt: n.rt, up: n.wire.up.Load(), down: n.wire.down.Load(), dials: n.wire.dials.Load(), unanswered: n.wire.unanswered.Load(), replica: int(n.wire.replica.Load())}
		if t := n.wire.connectedAt.Load(); t != 0 {
			v.connectedAt = time.Unix(0, t)
		}
		if n.ec != nil {
			v.state = n.ec.Agent.State()
		}
		fn(v)
	}
	if sel == nil {
		for _, n := range f.nodes {
			visit(n)
		}
		return
	}
	for _, i := range sel {
		if i >= 0 && i < len(f.nodes) {
			visit(f.nodes[i])
		}
	}
}

// heldPods returns the pods node's store holds: UID to resourceVersion.
func heldPods(db *store.DB) (map[string]string, error) {
	held := map[string]string{}
	err := db.View(func(tx *store.Tx) error {
		refs, err := tx.Inventory()
		for _, r := range refs {
			if r.Kind == protocol.KindPod {
				held[r.UID] = r.ResourceVersion
			}
		}
		return err
	})
	return held, err
}
