package netns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
)

// WAN is the network of a simulator run that crosses a real network stack:
// cloudcore in a namespace of its own, "cloud", the hollow nodes in
// another, "edges", joined by one emulated Link. Everything between the
// nodes and the hub crosses the link, with its delay, loss and partitions;
// the link's counters are the nodes' traffic at the IP layer. cloudcore
// reaches the control plane on the host's loopback (next to it, as in a
// cluster) through ForwardHost, not across the link.
type WAN struct {
	Network *Network
	// Cloud is cloudcore's namespace, Edges the hollow nodes'.
	Cloud, Edges *Namespace
	// Link joins Cloud (A) to Edges (B).
	Link *Link

	// stop ends the forwards; wg waits for them.
	stop context.CancelFunc
	ctx  context.Context
	wg   sync.WaitGroup
}

// NewWAN removes what dead runs with the same prefix left, and makes the
// two namespaces and their link with imp. Close removes them.
func NewWAN(ctx context.Context, opts Options, imp Impairment) (*WAN, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	if removed, err := Sweep(ctx, opts.Prefix); err != nil {
		return nil, err
	} else if len(removed) > 0 {
		opts.Logger.Info("removed namespaces of dead runs", slog.Any("netns", removed))
	}
	n, err := New(opts)
	if err != nil {
		return nil, err
	}
	w := &WAN{Network: n}
	w.ctx, w.stop = context.WithCancel(context.Background())
	ok := false
	defer func() {
		if !ok {
			w.Close()
		}
	}()
	if w.Cloud, err = n.Namespace(ctx, "cloud"); err != nil {
		return nil, err
	}
	if w.Edges, err = n.Namespace(ctx, "edges"); err != nil {
		return nil, err
	}
	// Every node dials from the one address: room for more than the
	// default 28k ports.
	if err := w.Edges.Sysctl(ctx, "net.ipv4.ip_local_port_range", "1024 65535"); err != nil {
		return nil, err
	}
	if w.Link, err = n.Link(ctx, w.Cloud, w.Edges, imp); err != nil {
		return nil, err
	}
	ok = true
	return w, nil
}

// HubHost is the cloud's address on the link: where the hub must listen
// (in Cloud) for the nodes to reach it, and an IP its certificate must
// name.
func (w *WAN) HubHost() string { return w.Link.A.Addr.String() }

// HubAddr is HubHost with a port.
func (w *WAN) HubAddr(port int) string { return net.JoinHostPort(w.HubHost(), strconv.Itoa(port)) }

// FreeHubAddr picks a free port on HubHost.
func (w *WAN) FreeHubAddr() (string, error) {
	ln, err := w.Cloud.Listen("tcp", w.HubAddr(0))
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

// ForwardHost lets programs in Cloud reach addr (an ip:port on the host's
// loopback, e.g. the API server) at the same address, until Close.
func (w *WAN) ForwardHost(addr string) error {
	ln, err := w.Cloud.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("netns: forward %s into %s: %w", addr, w.Cloud, err)
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if err := Forward(w.ctx, ln, (*Namespace)(nil).DialContext, addr); err != nil {
			w.Network.log.Error("forward stopped", slog.String("addr", addr), slog.String("netns", w.Cloud.Name),
				slog.Any("err", err))
		}
	}()
	return nil
}

// Close stops the forwards and removes the link and the namespaces.
func (w *WAN) Close() error {
	if w == nil || w.Network == nil {
		return errors.New("netns: WAN not made")
	}
	w.stop()
	w.wg.Wait()
	return w.Network.Close()
}
