package cloudcore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tether-edge/tether/cloudcore/kubeletproxy"

	"github.com/tether-edge/tether/cloudcore/dispatch"
	"github.com/tether-edge/tether/cloudcore/hub"
)

// kubeletNodes routes the kubelet proxy: edge nodes from the dispatcher's
// cache, streams through this replica's hub or, for a node whose session is
// on another replica, through that peer (p; nil with one replica).
type kubeletNodes struct {
	d *dispatch.Dispatcher
	h *hub.Hub
	p *kubeletproxy.Peers
}

func (n kubeletNodes) IsEdgeNode(node string) bool { return n.d.IsEdgeNode(node) }

func (n kubeletNodes) OpenStream(node string) (net.Conn, error) {
	c, err := n.localStream(node)
	if errors.Is(err, kubeletproxy.ErrNoSession) && n.p != nil {
		return n.p.OpenStream(context.Background(), node)
	}
	return c, err
}

// localStream opens a stream through this replica's hub only (what peers
// are served: never forwarded again).
func (n kubeletNodes) localStream(node string) (net.Conn, error) {
	c, err := n.h.OpenStream(node)
	if errors.Is(err, hub.ErrNotConnected) {
		return nil, fmt.Errorf("%w: %s", kubeletproxy.ErrNoSession, node)
	}
	return c, err
}

// peerDiscovery returns how this replica finds its peers: the static list
// cfg.Peers, or the ready endpoints of the headless Service cfg.PeerService
// (port "peer"), read at most every 5 seconds, this replica's own (an
// address of this host with its own peer port) skipped.
func peerDiscovery(cfg Config, client kubernetes.Interface) func(context.Context) ([]string, error) {
	if cfg.PeerService == "" {
		peers := slices.Clone(cfg.Peers)
		return func(context.Context) ([]string, error) { return peers, nil }
	}
	var (
		mu     sync.Mutex
		cached []string
		at     time.Time
	)
	return func(ctx context.Context) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) < 5*time.Second {
			return cached, nil
		}
		list, err := client.DiscoveryV1().EndpointSlices(cfg.Namespace).List(ctx, metav1.ListOptions{
			LabelSelector: discoveryv1.LabelServiceName + "=" + cfg.PeerService})
		if err != nil {
			return nil, fmt.Errorf("peer service %s/%s: %w", cfg.Namespace, cfg.PeerService, err)
		}
		own := map[string]bool{}
		if port := ownPeerPort(cfg); port != "" {
			if addrs, err := net.InterfaceAddrs(); err == nil {
				for _, a := range addrs {
					if ipn, ok := a.(*net.IPNet); ok {
						own[net.JoinHostPort(ipn.IP.String(), port)] = true
					}
				}
			}
		}
		cached, at = peerAddrs(list.Items, own), time.Now()
		return cached, nil
	}
}

// ownPeerPort is the port this replica serves its peers on, or "".
func ownPeerPort(cfg Config) string {
	addr := cfg.PeerAddr
	if cfg.PeerListener != nil {
		addr = cfg.PeerListener.Addr().String()
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return port
}

// peerAddrs are the ready endpoints' addresses with the port named "peer",
// those in own (host:port) left out.
func peerAddrs(items []discoveryv1.EndpointSlice, own map[string]bool) []string {
	var out []string
	for _, s := range items {
		var port int32
		for _, p := range s.Ports {
			if p.Name != nil && *p.Name == "peer" && p.Port != nil {
				port = *p.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				if ip := net.ParseIP(a); ip != nil {
					if hp := net.JoinHostPort(ip.String(), strconv.Itoa(int(port))); !own[hp] {
						out = append(out, hp)
					}
				}
			}
		}
	}
	return out
}

// listenUnix listens on a unix socket only its owner may use (the API
// server, running as the same user or root): a stale socket is replaced.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("kubelet proxy socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	// Made in a directory of mode 0700 (if cloudcore made it), then set
	// to 0600: the umask is the whole process's, not changed here.
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("kubelet proxy socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("kubelet proxy socket: %w", err)
	}
	return ln, nil
}

// peerLoads is the hub's PeerLoads: the loads of the peers that answer
// (cc.Peers, made after the hub), or nil when there are no peers to ask or
// rebalancing is off (RebalanceRate -1).
func (cc *CloudCore) peerLoads(cfg Config) func(context.Context) ([]hub.PeerLoad, error) {
	if cfg.RebalanceRate < 0 || (len(cfg.Peers) == 0 && cfg.PeerService == "") {
		return nil
	}
	return func(ctx context.Context) ([]hub.PeerLoad, error) {
		if cc.Peers == nil {
			return nil, nil
		}
		loads, err := cc.Peers.Loads(ctx)
		out := make([]hub.PeerLoad, 0, len(loads))
		for addr, l := range loads {
			out = append(out, hub.PeerLoad{Addr: addr, Sessions: l.Sessions, Ready: l.Ready})
		}
		return out, err
	}
}
