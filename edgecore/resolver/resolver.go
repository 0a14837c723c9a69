// Package resolver is edgecore's DNS server for the pods of the node: it
// answers the cluster's Service names from the edge store, so that they
// resolve with the cloud gone, and forwards every other name to the host's
// resolvers.
//
// # What it answers
//
// Under the cluster domain (Config.Domain, default cluster.local):
//
//   - <svc>.<ns>.svc.<domain>, A and AAAA: the Service's ClusterIPs; for a
//     headless Service the ready endpoints of the node's filtered
//     EndpointSlices (only endpoints the node can reach: cloudcore sends no
//     other); for an ExternalName Service a CNAME.
//   - _<port>._<proto>.<svc>.<ns>.svc.<domain>, SRV: one record per named
//     port (target the Service's name, its addresses as additional records).
//   - <domain>, svc.<domain> and <ns>.svc.<domain>: no records (NOERROR).
//   - kubernetes.default.svc.<domain>: with Config.APIServer, the in-cluster
//     API at the edge, not the cloud's kubernetes Service.
//   - any other name under the domain: NXDOMAIN (pod records
//     <ip>.<ns>.pod.<domain> and <hostname>.<svc>... are not served).
//
// Answers are authoritative, with a TTL of 5 seconds. They come from a
// table built from the store at start and rebuilt after each commit that
// touches Services or EndpointSlices (ObjectsChanged), so a query never
// waits for the store.
//
// Other names go to the upstream resolvers (Config.Upstreams, or the
// nameservers of the host's /etc/resolv.conf), never to the resolver's own
// address. Each forwarded query goes out from a new socket (a random source
// port) and the first reply whose ID and question match is relayed.
//
// # Limits (it faces every pod of the node)
//
//   - Only sources in Config.Allowed are answered (default: loopback; edgecore
//     adds its pod network). Others are dropped without a reply, so the
//     resolver is never an open resolver or a reflector, whatever address
//     it listens on.
//   - A query over 512 bytes is dropped (a question is at most 255 bytes of
//     name; EDNS options add little). Answers over UDP fit in 512 bytes, or
//     the EDNS size the client announced (at most 1232); what does not fit
//     is cut and the reply marked truncated; the client may ask again over
//     TCP on the same address and port (at most 16 connections at once, 8
//     queries each, 5 seconds each; 64 KiB answers).
//   - Config.Rate queries per second per source address (default 200, burst
//     Config.Burst 400); beyond that queries are dropped and counted. The
//     table of sources holds Config.MaxSources (default 4096); when full it
//     starts again empty.
//   - At most Config.MaxForwards (default 64) forwarded queries are in flight;
//     beyond that a forwarded query gets SERVFAIL at once.
//   - A malformed query is dropped if its header does not parse, answered
//     FORMERR otherwise; a packet with the response bit is never answered.
package resolver

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/time/rate"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// Config configures a Server. A zero field takes its default.
type Config struct {
	// Addr is the UDP address the resolver listens on: an address every pod
	// reaches, such as the node's IP or the pod bridge's, port 53. Port 0
	// picks a free port (tests).
	Addr string
	// Domain is the cluster's DNS domain (default cluster.local).
	Domain string
	// Upstreams are the resolvers ("ip" or "ip:port") other names are
	// forwarded to; default the nameservers of ResolvConf. An upstream that
	// is the resolver's own address is left out.
	Upstreams []string
	// ResolvConf is read for the upstreams when Upstreams is empty (default
	// /etc/resolv.conf).
	ResolvConf string
	// APIServer, if valid, is the in-cluster API at the edge (the
	// metaserver's in-cluster listener): kubernetes.default.svc.<domain>
	// answers its address (and SRV _https._tcp its port) instead of the
	// kubernetes Service's ClusterIP as the store holds it. With Service
	// routing edgecore gives it the kubernetes ClusterIP:443, which
	// svcproxy DNATs to the listener (the record then holds even when the
	// store has no default/kubernetes Service); without, the listener's
	// own address.
	APIServer netip.AddrPort
	// Allowed are the source networks answered (default loopback only).
	Allowed []netip.Prefix
	// Rate and Burst bound the queries per second of one source address
	// (default 200, burst 400).
	Rate  float64
	Burst int
	// MaxSources bounds the table of per-source limits (default 4096).
	MaxSources int
	// MaxForwards bounds the forwarded queries in flight (default 64).
	MaxForwards int
	// UpstreamTimeout bounds one forwarded query to one upstream (default 2s).
	UpstreamTimeout time.Duration
}

func (c *Config) validate() error {
	if c.Addr == "" {
		return errors.New("resolver: no address")
	}
	if _, err := netip.ParseAddrPort(c.Addr); err != nil {
		return fmt.Errorf("resolver: address %q: %w", c.Addr, err)
	}
	if c.Domain == "" {
		c.Domain = "cluster.local"
	}
	c.Domain = strings.ToLower(strings.Trim(c.Domain, "."))
	if _, err := dnsmessage.NewName(c.Domain + "."); err != nil || strings.Contains(c.Domain, "..") {
		return fmt.Errorf("resolver: domain %q is not a DNS name", c.Domain)
	}
	if c.ResolvConf == "" {
		c.ResolvConf = "/etc/resolv.conf"
	}
	if len(c.Allowed) == 0 {
		c.Allowed = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	if c.Rate < 0 || c.Burst < 0 || c.MaxSources < 0 || c.MaxForwards < 0 || c.UpstreamTimeout < 0 {
		return errors.New("resolver: a negative limit")
	}
	if c.Rate == 0 {
		c.Rate = 200
	}
	if c.Burst == 0 {
		c.Burst = 400
	}
	if c.MaxSources == 0 {
		c.MaxSources = 4096
	}
	if c.MaxForwards == 0 {
		c.MaxForwards = 64
	}
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = 2 * time.Second
	}
	return nil
}

// maxQuery is the largest query taken, in bytes.
const maxQuery = 512

// maxUpstreamReply is the largest reply relayed from upstream.
const maxUpstreamReply = 4096

// Stats counts what the resolver did since Start.
type Stats struct {
	Answered, Forwarded, ForwardFailed, NotAllowed, Limited, Malformed, TooLarge, Busy int64
}

// Server is the resolver.
type Server struct {
	cfg    Config
	db     *store.DB
	log    *slog.Logger
	domain string // with a trailing dot

	table   atomic.Pointer[table]
	changed chan struct{}
	ready   chan struct{}
	addr    atomic.Pointer[net.UDPAddr]
	fwd     chan struct{}
	wg      sync.WaitGroup

	answered, forwarded, forwardFailed, notAllowed, limited, malformed, tooLarge, busy atomic.Int64
}

// New returns a Server reading the store db.
func New(cfg Config, db *store.DB, log *slog.Logger) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, db: db, log: log, domain: cfg.Domain + ".", changed: make(chan struct{}, 1),
		ready: make(chan struct{}), fwd: make(chan struct{}, cfg.MaxForwards)}, nil
}

// ObjectsChanged is the agent's Observer: a change of Services or
// EndpointSlices rebuilds the table. It never blocks.
func (s *Server) ObjectsChanged(kinds map[protocol.Kind]bool, _ []protocol.ObjectRef) {
	if kinds[protocol.KindService] || kinds[protocol.KindEndpointSlice] {
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
}

// Connected is the agent's Observer; the resolver has nothing to report.
func (s *Server) Connected() {}

// Ready is closed once the resolver listens and holds the store's names.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the address the resolver listens on, after Ready.
func (s *Server) Addr() *net.UDPAddr { return s.addr.Load() }

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{Answered: s.answered.Load(), Forwarded: s.forwarded.Load(), ForwardFailed: s.forwardFailed.Load(),
		NotAllowed: s.notAllowed.Load(), Limited: s.limited.Load(), Malformed: s.malformed.Load(),
		TooLarge: s.tooLarge.Load(), Busy: s.busy.Load()}
}

// Start serves until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	if err := s.rebuild(); err != nil {
		return err
	}
	conn, ln, err := listen(s.cfg.Addr)
	if err != nil {
		return err
	}
	s.addr.Store(conn.LocalAddr().(*net.UDPAddr))
	upstreams, err := s.upstreams()
	if err != nil {
		conn.Close()
		ln.Close()
		return err
	}
	s.log.Info("dns resolver listening", slog.String("addr", conn.LocalAddr().String()),
		slog.String("domain", s.cfg.Domain), slog.Any("upstreams", upstreams))
	close(s.ready)

	done := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			select {
			case <-done:
				return
			case <-s.changed:
				if err := s.rebuild(); err != nil {
					s.log.Error("dns table rebuild", slog.Any("err", err))
				}
			}
		}
	}()
	go func() {
		<-ctx.Done()
		conn.Close()
		ln.Close()
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.serveTCP(ctx, ln, upstreams)
	}()
	s.serve(ctx, conn, upstreams)
	close(done)
	s.wg.Wait()
	return nil
}

// listen opens the UDP socket and, on the same address and port, the TCP
// listener (for answers that did not fit). With port 0, a port free for
// both is looked for.
func listen(addr string) (*net.UDPConn, *net.TCPListener, error) {
	var err error
	for range 10 {
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return nil, nil, fmt.Errorf("resolver: listen: %w", err)
		}
		conn := pc.(*net.UDPConn)
		var ln *net.TCPListener
		ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(conn.LocalAddr().(*net.UDPAddr).AddrPort()))
		if err == nil {
			return conn, ln, nil
		}
		conn.Close()
		if ap, perr := netip.ParseAddrPort(addr); perr != nil || ap.Port() != 0 {
			break
		}
	}
	return nil, nil, fmt.Errorf("resolver: listen tcp: %w", err)
}

func (s *Server) rebuild() error {
	var t *table
	err := s.db.View(func(tx *store.Tx) error {
		var err error
		t, err = buildTable(tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("resolver: read store: %w", err)
	}
	if a := s.cfg.APIServer; a.IsValid() {
		// The in-cluster API at the edge replaces the kubernetes Service
		// (its ClusterIP leads to the cloud's API server, which the pods
		// are not to call from the edge).
		t.services["kubernetes.default"] = &service{addrs: []netip.Addr{a.Addr()},
			ports: []port{{name: "https", proto: "tcp", port: a.Port()}}}
	}
	s.table.Store(t)
	return nil
}

// serve is the reader loop: it answers cluster names itself and hands
// other names to a forwarder goroutine.
func (s *Server) serve(ctx context.Context, conn *net.UDPConn, upstreams []netip.AddrPort) {
	limits := map[netip.Addr]*rate.Limiter{}
	buf := make([]byte, maxQuery+1)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		src := from.Addr().Unmap()
		if !isIn(src, s.cfg.Allowed) {
			s.notAllowed.Add(1)
			continue
		}
		lim := limits[src]
		if lim == nil {
			if len(limits) >= s.cfg.MaxSources {
				clear(limits)
			}
			lim = rate.NewLimiter(rate.Limit(s.cfg.Rate), s.cfg.Burst)
			limits[src] = lim
		}
		if !lim.Allow() {
			s.limited.Add(1)
			continue
		}
		if n > maxQuery {
			s.tooLarge.Add(1)
			continue
		}
		v, resp := answer(s.table.Load(), s.domain, buf[:n], false)
		switch v {
		case drop:
			s.malformed.Add(1)
		case reply:
			s.answered.Add(1)
			conn.WriteToUDPAddrPort(resp, from)
		case forward:
			if len(upstreams) == 0 {
				s.forwardFailed.Add(1)
				conn.WriteToUDPAddrPort(servfail(buf[:n]), from)
				continue
			}
			select {
			case s.fwd <- struct{}{}:
			default:
				s.busy.Add(1)
				conn.WriteToUDPAddrPort(servfail(buf[:n]), from)
				continue
			}
			q := append([]byte(nil), buf[:n]...)
			s.wg.Add(1)
			go func() {
				defer func() { <-s.fwd; s.wg.Done() }()
				resp, err := s.exchange(ctx, q, upstreams)
				if err != nil {
					s.forwardFailed.Add(1)
					resp = servfail(q)
				} else {
					s.forwarded.Add(1)
				}
				conn.WriteToUDPAddrPort(resp, from)
			}()
		}
	}
}

// TCP limits: connections at once, queries per connection, and the time a
// connection may last.
const (
	maxTCPConns    = 16
	maxTCPQueries  = 8
	tcpConnTimeout = 5 * time.Second
)

// serveTCP answers queries over TCP (RFC 7766), for clients whose UDP answer
// was truncated: at most maxTCPConns connections at once (others are closed
// at once), each for tcpConnTimeout and maxTCPQueries queries of at most
// maxQuery bytes, from allowed sources only.
func (s *Server) serveTCP(ctx context.Context, ln *net.TCPListener, upstreams []netip.AddrPort) {
	slots := make(chan struct{}, maxTCPConns)
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		from := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		if !isIn(from.Addr().Unmap(), s.cfg.Allowed) {
			s.notAllowed.Add(1)
			c.Close()
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			s.busy.Add(1)
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer func() { <-slots; c.Close(); s.wg.Done() }() // the slot is free before the client sees the close
			s.serveConn(ctx, c, upstreams)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, c *net.TCPConn, upstreams []netip.AddrPort) {
	c.SetDeadline(time.Now().Add(tcpConnTimeout))
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	buf := make([]byte, maxQuery)
	for range maxTCPQueries {
		var lb [2]byte
		if _, err := io.ReadFull(c, lb[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(lb[:]))
		if n > maxQuery {
			s.tooLarge.Add(1)
			return
		}
		if _, err := io.ReadFull(c, buf[:n]); err != nil {
			return
		}
		v, resp := answer(s.table.Load(), s.domain, buf[:n], true)
		switch v {
		case drop:
			s.malformed.Add(1)
			return
		case reply:
			s.answered.Add(1)
		case forward:
			var err error
			if resp, err = s.exchange(ctx, buf[:n], upstreams); err != nil || len(upstreams) == 0 {
				s.forwardFailed.Add(1)
				resp = servfail(buf[:n])
			} else {
				s.forwarded.Add(1)
			}
		}
		out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(resp)), uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

// exchange asks the upstreams in turn and returns the first matching reply.
func (s *Server) exchange(ctx context.Context, q []byte, upstreams []netip.AddrPort) ([]byte, error) {
	var qp dnsmessage.Parser
	qh, err := qp.Start(q)
	if err != nil {
		return nil, err
	}
	qq, err := qp.Question()
	if err != nil {
		return nil, err
	}
	var last error
	for _, u := range upstreams {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		resp, err := s.exchangeOne(q, qh.ID, qq, u)
		if err == nil {
			return resp, nil
		}
		last = err
	}
	return nil, last
}

func (s *Server) exchangeOne(q []byte, id uint16, qq dnsmessage.Question, u netip.AddrPort) ([]byte, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(u))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(s.cfg.UpstreamTimeout))
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, maxUpstreamReply)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil || !h.Response || h.ID != id {
			continue
		}
		rq, err := p.Question()
		if err != nil || rq.Type != qq.Type || rq.Class != qq.Class || !strings.EqualFold(rq.Name.String(), qq.Name.String()) {
			continue
		}
		return append([]byte(nil), buf[:n]...), nil
	}
}

// servfail answers q with SERVFAIL.
func servfail(q []byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil
	}
	qs, _ := p.AllQuestions()
	return errorReply(h, qs, dnsmessage.RCodeServerFailure)
}

// upstreams returns the resolvers to forward to, without the server's own
// address (a loop).
func (s *Server) upstreams() ([]netip.AddrPort, error) {
	names := s.cfg.Upstreams
	if len(names) == 0 {
		var err error
		if names, err = readResolvConf(s.cfg.ResolvConf); err != nil {
			s.log.Warn("no upstream resolvers: other names get SERVFAIL", slog.Any("err", err))
			return nil, nil
		}
	}
	own := s.Addr()
	ownAP := own.AddrPort()
	var out []netip.AddrPort
	for _, n := range names {
		ap, err := netip.ParseAddrPort(n)
		if err != nil {
			a, err2 := netip.ParseAddr(n)
			if err2 != nil {
				return nil, fmt.Errorf("resolver: upstream %q: %w", n, err)
			}
			ap = netip.AddrPortFrom(a, 53)
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if ap.Port() == ownAP.Port() && (ap.Addr() == ownAP.Addr().Unmap() || ownAP.Addr().IsUnspecified() && isLocal(ap.Addr())) {
			s.log.Warn("upstream resolver is this resolver: left out", slog.String("upstream", ap.String()))
			continue
		}
		out = append(out, ap)
	}
	return out, nil
}

// isLocal reports whether a is an address of this host.
func isLocal(a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
				return true
			}
		}
	}
	return false
}

// readResolvConf returns the nameservers of a resolv.conf file.
func readResolvConf(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			out = append(out, fields[1])
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s names no nameserver", path)
	}
	return out, sc.Err()
}
