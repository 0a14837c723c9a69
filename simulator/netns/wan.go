package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
)

// WAN is the network of a simulator run that crosses a real network stack:
// the hollow nodes' sockets in a namespace of their own, "edges", joined by
// one emulated Link to the host's namespace, where cloudcore stays next to
// the control plane (on loopback, as in a cluster). Everything between the
// nodes and the hub crosses the link, with its delay, loss and partitions;
// the link's counters are the nodes' traffic at the IP layer.
type WAN struct {
	Network *Network
	// Edges is the hollow nodes' namespace.
	Edges *Namespace
	// Link joins the host (A) to Edges (B).
	Link *Link
}

// NewWAN removes what dead runs with the same prefix left, and makes the
// edges namespace and its link with imp. Close removes them.
func NewWAN(ctx context.Context, opts Options, imp Impairment) (*WAN, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	if removed, err := Sweep(ctx, opts.Prefix); err != nil {
		return nil, err
	} else if len(removed) > 0 {
		opts.Logger.Info("removed namespaces of dead runs", "netns", removed)
	}
	n, err := New(opts)
	if err != nil {
		return nil, err
	}
	w := &WAN{Network: n}
	ok := false
	defer func() {
		if !ok {
			n.Close()
		}
	}()
	if w.Edges, err = n.Namespace(ctx, "edges"); err != nil {
		return nil, err
	}
	// Every node dials from the one address: room for more than the
	// default 28k ports.
	if err := w.Edges.Sysctl(ctx, "net.ipv4.ip_local_port_range", "1024 65535"); err != nil {
		return nil, err
	}
	if w.Link, err = n.Link(ctx, nil, w.Edges, imp); err != nil {
		return nil, err
	}
	ok = true
	return w, nil
}

// HubHost is the host's address on the link: where the hub must listen for
// the nodes to reach it (and an IP its certificate must name).
func (w *WAN) HubHost() string { return w.Link.A.Addr.String() }

// HubAddr is HubHost with a port.
func (w *WAN) HubAddr(port int) string { return net.JoinHostPort(w.HubHost(), strconv.Itoa(port)) }

// FreeHubAddr picks a free port on HubHost.
func (w *WAN) FreeHubAddr() (string, error) {
	ln, err := net.Listen("tcp", w.HubAddr(0))
	if err != nil {
		return "", fmt.Errorf("netns: pick a hub port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Dial opens a connection from the edges namespace: the hollow nodes'
// dialer.
func (w *WAN) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return w.Edges.DialContext(ctx, network, addr)
}

// Close removes the link and the namespace.
func (w *WAN) Close() error {
	if w == nil || w.Network == nil {
		return errors.New("netns: WAN not made")
	}
	return w.Network.Close()
}
