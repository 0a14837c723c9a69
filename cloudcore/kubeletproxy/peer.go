package kubeletproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tether-edge/tether/pki"
)

// Peer forwarding: with several cloudcore replicas, an edge node's session
// is on one of them, and the API server's kubelet connection may reach
// another. The replica that gets it (after authenticating and authorizing
// the request itself) asks its peers, all at once, for a stream to the
// node; the one holding the node's session answers 101 and relays the
// stream's bytes, the others 404. Nothing per node is stored anywhere.
//
// Peers talk mutual TLS on a listener of their own (PeerConfig, cloudcore's
// peerAddr), each with a peer certificate issued by the CA they share
// (pki.IssuePeer: server and client auth, organization
// pki.PeerOrganization): an edge node's certificate, a certificate of
// another CA or none are refused in the handshake. A replica serves its
// peers only streams to nodes whose session it holds itself: a request is
// never forwarded twice.

// ErrNoSession is what PeerConfig.Local returns for a node whose session
// is not on this replica.
var ErrNoSession = errors.New("node has no session on this cloudcore")

// PeerPath is the path of a peer's stream request.
const PeerPath = "/v1/kubelet-stream"

// LoadPath is the path where a replica says its load to its peers (GET,
// JSON PeerLoad).
const LoadPath = "/v1/load"

// maxLoadAnswer bounds a peer's load answer read.
const maxLoadAnswer = 1 << 10

// PeerLoad is a replica's answer at LoadPath.
type PeerLoad struct {
	Sessions int  `json:"sessions"`
	Ready    bool `json:"ready"`
}

// peerNodeHeader names the node in a peer's stream request.
const peerNodeHeader = "Tether-Node"

// PeerConfig configures Peers.
type PeerConfig struct {
	// CA is the CA all replicas share. Required.
	CA *pki.CA
	// Local opens a stream to a node whose session is on this replica
	// (the hub's OpenStream), or returns an error wrapping ErrNoSession.
	// Required.
	Local func(node string) (net.Conn, error)
	// Discover returns the other replicas' peer addresses (host:port).
	// Required.
	Discover func(ctx context.Context) ([]string, error)
	// Load, if set, says how many edge sessions this replica holds and
	// whether it serves (not starting or draining): answered to peers at
	// LoadPath, for rebalancing. Unset, LoadPath answers 404.
	Load func() (sessions int, ready bool)
	// DialTimeout bounds asking one peer (dial, handshake, answer;
	// default 5s).
	DialTimeout time.Duration
	// MaxStreams is the most streams this replica relays for its peers at
	// once (default 1,024); past it, 429.
	MaxStreams int
	// CertValidity is the lifetime of this replica's peer certificate,
	// issued again after two thirds of it (default 24h).
	CertValidity time.Duration
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// Peers forwards kubelet API streams between replicas.
type Peers struct {
	cfg  PeerConfig
	log  *slog.Logger
	open atomic.Int64

	mu    sync.Mutex
	cert  *tls.Certificate // guarded by mu
	renew time.Time        // guarded by mu

	// Served, Forwarded, Refused count streams relayed for peers, streams
	// got from peers, and peer requests refused (handshakes refused are
	// the TLS server's).
	Served, Forwarded, Refused atomic.Int64
}

// NewPeers builds Peers.
func NewPeers(cfg PeerConfig) (*Peers, error) {
	if cfg.CA == nil || cfg.Local == nil || cfg.Discover == nil {
		return nil, errors.New("kubeletproxy: peers: CA, Local and Discover are required")
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = 1024
	}
	if cfg.CertValidity == 0 {
		cfg.CertValidity = 24 * time.Hour
	}
	if cfg.DialTimeout < 0 || cfg.MaxStreams < 0 || cfg.CertValidity < time.Minute {
		return nil, fmt.Errorf("kubeletproxy: peers: bad limits: dial timeout %s, max streams %d, cert validity %s",
			cfg.DialTimeout, cfg.MaxStreams, cfg.CertValidity)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Peers{cfg: cfg, log: cfg.Logger}, nil
}

// certificate returns this replica's peer certificate, issuing it anew
// after two thirds of its validity.
func (p *Peers) certificate() (*tls.Certificate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cert != nil && time.Now().Before(p.renew) {
		return p.cert, nil
	}
	certPEM, keyPEM, err := p.cfg.CA.IssuePeer(p.cfg.CertValidity)
	if err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	p.cert, p.renew = &c, time.Now().Add(p.cfg.CertValidity*2/3)
	return p.cert, nil
}

// verify is the check of the other side's certificate, for usage.
func (p *Peers) verify(usage x509.ExtKeyUsage) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		return p.cfg.CA.VerifyPeer(cs.PeerCertificates, time.Now(), usage)
	}
}

// TLSConfig is the peer listener's TLS: a peer certificate is required.
func (p *Peers) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return p.certificate() },
		// Verified in VerifyConnection against the shared CA, with the
		// peer identity checked: not any client certificate of it.
		ClientAuth:       tls.RequireAnyClientCert,
		VerifyConnection: p.verify(x509.ExtKeyUsageClientAuth),
		NextProtos:       []string{"http/1.1"},
	}
}

// Serve serves peers on ln (TLS is added here) until ctx ends.
func (p *Peers) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: p, ReadHeaderTimeout: p.cfg.DialTimeout, MaxHeaderBytes: 4 << 10,
		ErrorLog:    slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return ctx }}
	p.log.Info("peer listener", slog.String("addr", ln.Addr().String()))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tls.NewListener(ln, p.TLSConfig())) }()
	select {
	case err := <-errc:
		return fmt.Errorf("kubelet proxy peers: %w", err)
	case <-ctx.Done():
		srv.Close()
		return nil
	}
}

// ServeHTTP answers a peer's stream request: 101 and the stream's bytes if
// this replica holds the node's session, else 404 (429 past MaxStreams or
// the node's stream cap, 502 otherwise).
func (p *Peers) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 { // the handshake checked it
		p.Refused.Add(1)
		http.Error(w, "a cloudcore peer certificate is required", http.StatusUnauthorized)
		return
	}
	if r.URL.Path == LoadPath && r.Method == http.MethodGet && p.cfg.Load != nil {
		n, ready := p.cfg.Load()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(PeerLoad{Sessions: n, Ready: ready})
		return
	}
	if r.URL.Path != PeerPath || r.Method != http.MethodPost {
		p.Refused.Add(1)
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	node := r.Header.Get(peerNodeHeader)
	if errs := validation.IsDNS1123Subdomain(node); len(errs) > 0 {
		p.Refused.Add(1)
		http.Error(w, fmt.Sprintf("node name %q: %s", node, strings.Join(errs, "; ")), http.StatusBadRequest)
		return
	}
	if p.open.Add(1) > int64(p.cfg.MaxStreams) {
		p.open.Add(-1)
		p.Refused.Add(1)
		http.Error(w, fmt.Sprintf("stream limit: %d streams relayed for peers", p.cfg.MaxStreams), http.StatusTooManyRequests)
		return
	}
	defer p.open.Add(-1)
	stream, err := p.cfg.Local(node)
	if err != nil {
		code := statusFor(err)
		if errors.Is(err, ErrNoSession) {
			code = http.StatusNotFound
		}
		http.Error(w, err.Error(), code)
		return
	}
	c, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		stream.Close()
		return
	}
	c.SetDeadline(time.Time{})
	if _, err := rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: tether-kubelet-stream\r\n\r\n"); err != nil || rw.Flush() != nil {
		c.Close()
		stream.Close()
		return
	}
	p.Served.Add(1)
	splice(newBufferedConn(c, rw.Reader), stream)
}

// OpenStream asks every peer at once for a stream to node and returns the
// first granted (a node has one session, so normally one peer grants it).
func (p *Peers) OpenStream(ctx context.Context, node string) (net.Conn, error) {
	addrs, err := p.cfg.Discover(ctx)
	if err != nil {
		return nil, fmt.Errorf("node %s is not connected to this cloudcore, and its peers are unknown: %w", node, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("node %s is not connected to this cloudcore, which has no peers", node)
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	type result struct {
		c   net.Conn
		err error
	}
	results := make(chan result, len(addrs))
	for _, a := range addrs {
		go func() {
			c, err := p.ask(ctx, a, node)
			results <- result{c, err}
		}()
	}
	var (
		errs    []string
		limited bool
	)
	for i := range addrs {
		r := <-results
		if r.err == nil {
			p.Forwarded.Add(1)
			// The others' answers: close any other grant.
			go func(left int) {
				defer cancel()
				for range left {
					if r := <-results; r.err == nil {
						r.c.Close()
					}
				}
			}(len(addrs) - i - 1)
			return r.c, nil
		}
		if !errors.Is(r.err, ErrNoSession) {
			errs = append(errs, r.err.Error())
			limited = limited || strings.Contains(r.err.Error(), "stream limit")
		}
	}
	cancel()
	if len(errs) == 0 {
		return nil, fmt.Errorf("node %s is not connected to any of %d cloudcore replicas", node, len(addrs)+1)
	}
	msg := fmt.Sprintf("node %s is not connected to this cloudcore; its peers: %s", node, strings.Join(errs, "; "))
	if limited {
		msg += " (stream limit)"
	}
	return nil, errors.New(msg)
}

// Loads asks every peer at once for its load (LoadPath) and returns the
// answers by peer address; a peer that does not answer within DialTimeout,
// or answers badly, is left out (not live).
func (p *Peers) Loads(ctx context.Context) (map[string]PeerLoad, error) {
	addrs, err := p.cfg.Discover(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	type answer struct {
		addr string
		l    PeerLoad
		err  error
	}
	answers := make(chan answer, len(addrs))
	for _, a := range addrs {
		go func() {
			l, err := p.askLoad(ctx, a)
			answers <- answer{a, l, err}
		}()
	}
	out := map[string]PeerLoad{}
	for range addrs {
		if a := <-answers; a.err == nil {
			out[a.addr] = a.l
		} else {
			p.log.Debug("peer load not known", slog.String("peer", a.addr), slog.Any("err", a.err))
		}
	}
	return out, nil
}

// askLoad asks the peer at addr for its load.
func (p *Peers) askLoad(ctx context.Context, addr string) (PeerLoad, error) {
	c, err := p.dial(ctx, addr)
	if err != nil {
		return PeerLoad{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", LoadPath, addr); err != nil {
		return PeerLoad{}, fmt.Errorf("peer %s: %w", addr, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(io.LimitReader(c, 4<<10)), nil)
	if err != nil {
		return PeerLoad{}, fmt.Errorf("peer %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return PeerLoad{}, fmt.Errorf("peer %s: %s", addr, resp.Status)
	}
	var l PeerLoad
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxLoadAnswer)).Decode(&l); err != nil {
		return PeerLoad{}, fmt.Errorf("peer %s: load: %w", addr, err)
	}
	if l.Sessions < 0 || l.Sessions > 1<<24 {
		return PeerLoad{}, fmt.Errorf("peer %s: load: %d sessions", addr, l.Sessions)
	}
	return l, nil
}

// dial opens a mutual-TLS connection to the peer at addr.
func (p *Peers) dial(ctx context.Context, addr string) (net.Conn, error) {
	d := tls.Dialer{Config: &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return p.certificate()
		},
		// Peers are dialed by address: the check is the shared CA and the
		// peer identity (VerifyConnection), not a host name.
		InsecureSkipVerify: true,
		VerifyConnection:   p.verify(x509.ExtKeyUsageServerAuth),
		NextProtos:         []string{"http/1.1"},
	}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	return c, nil
}

// ask asks the peer at addr for a stream to node.
func (p *Peers) ask(ctx context.Context, addr, node string) (net.Conn, error) {
	c, err := p.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\n%s: %s\r\nConnection: Upgrade\r\nUpgrade: tether-kubelet-stream\r\nContent-Length: 0\r\n\r\n",
		PeerPath, addr, peerNodeHeader, node)
	if _, err := c.Write([]byte(req)); err != nil {
		c.Close()
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b := make([]byte, 512)
		n, _ := resp.Body.Read(b)
		c.Close()
		if resp.StatusCode == http.StatusNotFound {
			return nil, ErrNoSession
		}
		return nil, fmt.Errorf("peer %s: %s: %s", addr, resp.Status, strings.TrimSpace(string(b[:n])))
	}
	if !stop() {
		c.Close()
		return nil, fmt.Errorf("peer %s: %w", addr, ctx.Err())
	}
	c.SetDeadline(time.Time{})
	return newBufferedConn(c, br), nil
}
