package svcproxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// Config configures a Proxy.
type Config struct {
	// ServiceCIDR is the cluster's service range (the API server's
	// --service-cluster-ip-range, IPv4): ClusterIPs inside it are routed,
	// the rest of it rejected.
	ServiceCIDR netip.Prefix
	// Sources are the networks whose traffic may use ClusterIPs, the pod
	// network (see Ruleset.Sources); none: any source. The host's own
	// traffic always may.
	Sources []netip.Prefix
	// NodeName is the node's name.
	NodeName string
	// Pods, if set, are the statuses the node reports of its pods
	// (pods.Reported): the addresses and readiness of its own endpoints
	// come from there (see Rules), and a change rebuilds the ruleset.
	Pods PodStatuses
	// APIService and APIServer, if set, route the default/kubernetes
	// Service's ClusterIP:443 to the in-cluster API at the edge (see
	// Input.APIService).
	APIService, APIServer netip.AddrPort
	// Kernel is where the rules go (its Table defaults to "tether").
	Kernel Kernel
	// Logger receives what was applied and skipped.
	Logger *slog.Logger
	// Applied, if set, is called after each ruleset is in the kernel
	// (tests and figures), from the proxy's goroutine.
	Applied func(Ruleset)
}

func (c *Config) validate() error {
	if !c.ServiceCIDR.IsValid() || !c.ServiceCIDR.Addr().Is4() {
		return fmt.Errorf("svcproxy: service CIDR %q: want an IPv4 prefix", c.ServiceCIDR)
	}
	if c.ServiceCIDR.Bits() < 8 {
		return fmt.Errorf("svcproxy: service CIDR %s: wider than /8", c.ServiceCIDR)
	}
	c.ServiceCIDR = c.ServiceCIDR.Masked()
	for _, s := range c.Sources {
		if !s.IsValid() || !s.Addr().Is4() {
			return fmt.Errorf("svcproxy: source %s: want an IPv4 prefix", s)
		}
	}
	if c.Kernel.Table == "" {
		c.Kernel.Table = "tether"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// PodStatuses are the statuses the node reports of its pods.
type PodStatuses interface {
	// PodStatus is the encoded status (protocol.EncodePodStatus) of the
	// pod uid.
	PodStatus(uid string) ([]byte, bool)
	// Watch receives after statuses changed.
	Watch() <-chan struct{}
}

// Proxy keeps the kernel's table in step with the store.
type Proxy struct {
	cfg     Config
	db      *store.DB
	changed chan struct{}
	ready   chan struct{}

	mu sync.Mutex
	// last is the ruleset last applied; guarded by mu.
	last Ruleset
	// applies counts the batches applied; guarded by mu.
	applies int
}

// New returns a Proxy reading the store db.
func New(cfg Config, db *store.DB) (*Proxy, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Proxy{cfg: cfg, db: db, changed: make(chan struct{}, 1), ready: make(chan struct{})}, nil
}

// ObjectsChanged is the agent's Observer: a change of Services or
// EndpointSlices rebuilds the ruleset. It never blocks.
func (p *Proxy) ObjectsChanged(kinds map[protocol.Kind]bool, _ []protocol.ObjectRef) {
	if kinds[protocol.KindService] || kinds[protocol.KindEndpointSlice] {
		select {
		case p.changed <- struct{}{}:
		default:
		}
	}
}

// Connected is the agent's Observer; the proxy has nothing to do.
func (p *Proxy) Connected() {}

// Ready is closed once the first ruleset is in the kernel.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// Last is the ruleset last applied and how many were.
func (p *Proxy) Last() (Ruleset, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last, p.applies
}

// Start applies the store's ruleset, then again after each change, until
// ctx ends. The table stays when it ends: pods keep reaching their
// Services while edgecore restarts; Kernel.Remove deletes it. A failure to
// apply the first ruleset ends Start (the node cannot route Services); a
// later one is logged and tried again at the next change or after 5s.
func (p *Proxy) Start(ctx context.Context) error {
	// Watch the pods' statuses before the first ruleset reads them: a
	// status reported in between (the pod manager's first pass after a
	// restart) would otherwise go unseen, and the node's own endpoints
	// stay out of the rules until the next change (found by the demo's
	// walk-through: the price Service refused after edgecore restarted).
	var pods <-chan struct{}
	if p.cfg.Pods != nil {
		pods = p.cfg.Pods.Watch()
	}
	if err := p.sync(); err != nil {
		return fmt.Errorf("svcproxy: the Service rules cannot be applied (they need CAP_NET_ADMIN and nf_tables; "+
			"services.proxy: false runs the node without Service routing): %w", err)
	}
	close(p.ready)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.changed:
		case <-pods:
		case <-retry.C:
		}
		if err := p.sync(); err != nil {
			p.cfg.Logger.Error("service rules not applied; retrying in 5s", slog.Any("err", err))
			retry.Reset(5 * time.Second)
		}
	}
}

// localPods are the statuses of the node's pods that slices name.
func (p *Proxy) localPods(slices []*discoveryv1.EndpointSlice) map[string]LocalPod {
	out := map[string]LocalPod{}
	if p.cfg.Pods == nil {
		return out
	}
	for _, es := range slices {
		for _, ep := range es.Endpoints {
			if ep.NodeName == nil || *ep.NodeName != p.cfg.NodeName || ep.TargetRef == nil || ep.TargetRef.Kind != "Pod" {
				continue
			}
			uid := string(ep.TargetRef.UID)
			b, ok := p.cfg.Pods.PodStatus(uid)
			if !ok {
				continue
			}
			st, err := protocol.DecodePodStatus(b)
			if err != nil {
				continue
			}
			lp := LocalPod{}
			if a, err := netip.ParseAddr(st.PodIP); err == nil {
				lp.IP = a
			}
			for _, c := range st.Conditions {
				if c.Type == corev1.PodReady {
					lp.Ready = c.Status == corev1.ConditionTrue
				}
			}
			out[uid] = lp
		}
	}
	return out
}

// sync reads the store, computes the ruleset and applies it.
func (p *Proxy) sync() error {
	var services []*corev1.Service
	var slices []*discoveryv1.EndpointSlice
	err := p.db.View(func(tx *store.Tx) error {
		err := tx.ForEachObject(protocol.KindService, func(o *protocol.Object) error {
			s, err := protocol.DecodeService(o.Data)
			if err != nil {
				p.cfg.Logger.Warn("service skipped: does not decode", slog.String("object", o.Namespace+"/"+o.Name), slog.Any("err", err))
				return nil
			}
			services = append(services, s)
			return nil
		})
		if err != nil {
			return err
		}
		return tx.ForEachObject(protocol.KindEndpointSlice, func(o *protocol.Object) error {
			s, err := protocol.DecodeEndpointSlice(o.Data)
			if err != nil {
				p.cfg.Logger.Warn("endpointslice skipped: does not decode", slog.String("object", o.Namespace+"/"+o.Name), slog.Any("err", err))
				return nil
			}
			slices = append(slices, s)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("svcproxy: read store: %w", err)
	}
	in := Input{ServiceCIDR: p.cfg.ServiceCIDR, Sources: p.cfg.Sources, NodeName: p.cfg.NodeName, Services: services, Slices: slices,
		APIService: p.cfg.APIService, APIServer: p.cfg.APIServer,
		Pods: p.localPods(slices)}
	rs, skipped := Rules(in)
	p.mu.Lock()
	same := p.applies > 0 && reflect.DeepEqual(rs, p.last)
	p.mu.Unlock()
	if same {
		return nil // a pod's status changed, not the rules
	}
	for _, s := range skipped {
		p.cfg.Logger.Warn("service rules: skipped", slog.String("object", s.Object), slog.String("reason", s.Reason))
	}
	start := time.Now()
	if err := p.cfg.Kernel.Apply(rs); err != nil {
		return err
	}
	p.mu.Lock()
	prev := p.last
	p.last = rs
	p.applies++
	p.mu.Unlock()
	if n, err := p.cfg.Kernel.ForgetUDP(StaleUDP(prev, rs)); err != nil {
		p.cfg.Logger.Warn("conntrack entries of removed UDP endpoints not deleted", slog.Any("err", err))
	} else if n > 0 {
		p.cfg.Logger.Info("conntrack entries of removed UDP endpoints deleted", slog.Int("entries", n))
	}
	p.cfg.Logger.Debug("service rules applied", slog.Int("ports", len(rs.Ports)), slog.Duration("took", time.Since(start)))
	if p.cfg.Applied != nil {
		p.cfg.Applied(rs)
	}
	return nil
}
