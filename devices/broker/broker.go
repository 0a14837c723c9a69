// Package broker is the MQTT broker edgecore embeds, so that a node needs no
// separate Mosquitto for its devices: mochi-mqtt (MQTT 3.1, 3.1.1 and 5) on
// one TCP listener, loopback by default, optionally with TLS.
//
// The default address is 127.0.0.1:1883, the port KubeEdge's mappers and
// apps connect to (KubeEdge's edge uses an external broker there by default;
// its own internal broker, when turned on, listens on 127.0.0.1:1884).
//
// Authentication: a client must give the username and password of one of
// Config.Users; any other, and a client without a username, is refused
// (CONNACK "not authorized" in MQTT 3.1.1, "bad user name or password" in
// MQTT 5). Config.AllowAnonymous lets clients without a username in with
// RoleDevice rights, on a loopback address only. A client id in use by a
// client of another user is refused too, so that a mapper cannot take over
// edgecore's session (MQTT hands the newcomer the old session).
//
// Topic rules (acl.go) depend on the user's Role: RoleEdge (edgecore) may
// publish and subscribe under $hw/events/ and $ke/events/; RoleDevice (a
// mapper, a device, an app) may publish the device → edge topics and
// subscribe to the edge → device ones, and nothing else: it cannot publish a
// twin/update/delta (which makes a mapper write a device) or a result. A
// RoleDevice user with User.Devices (a mapper of one protocol) is narrowed
// to those devices' topics: it may not publish on another device's topics
// nor subscribe to them by name; a filter with "+" for the device is
// taken, and each message is checked again at delivery, so it gets nothing
// of the others; the membership topics, whose answers list every device,
// are refused to it. A will message is a
// publish at disconnect: its topic is checked at CONNECT. A listener
// beyond loopback needs TLS, unless Config.AllowInsecure.
//
// Memory bounds: a RoleDevice or anonymous client's packets are at most
// ClientMaxPacketBytes (the connection is closed at the first larger one,
// before it is read); edgecore's at most EdgeMaxPacketBytes, as its
// membership/get result lists every device with its twin. Retained messages
// are off (a retained publish is delivered but not kept); at most
// Config.MaxClients clients; disconnected sessions are kept at most
// SessionExpiry, undelivered QoS 1 and 2 messages at most MessageExpiry, and
// each client has at most 1024 of those in flight.
//
// New binds the address, so a port in use is an error at configuration
// time and Addr is known before Start (port 0 picks a free port, for tests).
// Start serves until its context ends, then disconnects the clients and
// closes the listener.
package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// DefaultAddr is where the broker listens unless told otherwise.
const DefaultAddr = "127.0.0.1:1883"

// Bounds of the broker.
const (
	// ClientMaxPacketBytes bounds the packets of RoleDevice and anonymous
	// clients. It is above the largest twin payload the edge decodes
	// (devices/mqtt.MaxPayloadBytes, 64 KiB) with room for the topic, so
	// that an oversized twin update still reaches the edge and gets an
	// error result.
	ClientMaxPacketBytes = 128 << 10
	// EdgeMaxPacketBytes bounds the packets of RoleEdge clients: edgecore's
	// membership/get result lists every device of the node with its twin
	// (about 1 KiB a device with a few properties, so some thousands of
	// devices).
	EdgeMaxPacketBytes = 4 << 20
	// DefaultMaxClients is Config.MaxClients's default: edgecore, a mapper
	// per protocol and a few apps.
	DefaultMaxClients = 64
	// SessionExpiry bounds how long a disconnected client's session (its
	// subscriptions and undelivered messages) is kept.
	SessionExpiry = 5 * time.Minute
	// MessageExpiry bounds how long an undelivered message is kept.
	MessageExpiry = 5 * time.Minute
	// maxInflight bounds the QoS 1 and 2 messages stored per client.
	maxInflight = 1024
	// receiveMaximum bounds the QoS 1 and 2 publishes a client may have
	// unacknowledged (MQTT 5).
	receiveMaximum = 256
	// writesPending bounds the packets queued to one client; past it,
	// messages to that client are dropped. A burst of one report from
	// each of a thousand devices fits.
	writesPending = 4096
	// connectTimeout bounds the TLS handshake and the CONNECT packet.
	connectTimeout = 10 * time.Second
)

// Role is what a user may do on the topics (see acl.go).
type Role uint8

const (
	// RoleDevice is a mapper's, a device's or an app's: publish the device
	// → edge topics (twin/update, twin/get, state/update, membership/get of
	// Config.NodeName, upload, data/update), subscribe to the edge →
	// device ones (results, delta, document, updated, membership).
	RoleDevice Role = iota + 1
	// RoleEdge is edgecore's: publish and subscribe anything under
	// $hw/events/ and $ke/events/.
	RoleEdge
)

func (r Role) String() string {
	switch r {
	case RoleDevice:
		return "device"
	case RoleEdge:
		return "edge"
	}
	return fmt.Sprintf("Role(%d)", uint8(r))
}

// User is a username, its password and its role.
type User struct {
	Name     string
	Password string
	Role     Role
	// Devices, if set, narrows a RoleDevice user to these devices (a
	// mapper that serves one protocol): it may not publish on the topics
	// of a device not in the set, nor subscribe to them by name, and is
	// sent nothing of them through a "+" filter; the membership topics
	// (every device of the node) are refused to it. Nil: every device.
	Devices Devices
}

// Devices is a set of devices, asked at each publish, subscribe and
// delivery of a device topic: it may change while the broker runs.
type Devices interface {
	// Has reports whether the device namespace/name is in the set.
	Has(namespace, name string) bool
}

// Config configures the broker.
type Config struct {
	// Addr is the TCP address to listen on (default DefaultAddr).
	Addr string
	// NodeName is the node whose membership topics RoleDevice clients may
	// use; empty: any node's.
	NodeName string
	// Users are the credentials the broker admits. At least one is
	// required unless AllowAnonymous is set.
	Users []User
	// AllowAnonymous lets clients without a username in, with RoleDevice
	// rights (KubeEdge mappers that know no credentials). Only on a
	// loopback Addr.
	AllowAnonymous bool
	// TLS, if set, is the TLS configuration of the listener (with its
	// certificate): every client must then speak TLS. See LoadTLS. It is
	// required on an Addr that is not loopback, unless AllowInsecure.
	TLS *tls.Config
	// AllowInsecure lets the broker listen beyond loopback without TLS:
	// passwords, readings and commands then cross the network in clear
	// (default false: New refuses such an Addr).
	AllowInsecure bool
	// MaxClients bounds the connected clients (default
	// DefaultMaxClients); past it, a CONNECT is answered "server
	// unavailable". Connections that have not sent their CONNECT yet are
	// bounded too, by twice that.
	MaxClients int
	// Logger receives the broker's logs (default slog.Default()).
	Logger *slog.Logger
}

// IsLoopback reports whether the host of addr (host:port) is a loopback
// address or localhost. An empty host (every address) is not.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Validate checks cfg without binding anything, and fills its defaults.
func (cfg *Config) Validate() error {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return fmt.Errorf("addr %q: %w", cfg.Addr, err)
	}
	if len(cfg.Users) == 0 && !cfg.AllowAnonymous {
		return errors.New("no users: every client would be refused (give users, or allow anonymous clients on loopback)")
	}
	if cfg.AllowAnonymous && !IsLoopback(cfg.Addr) {
		return fmt.Errorf("addr %q is not a loopback address: anonymous clients are allowed only on loopback", cfg.Addr)
	}
	if !IsLoopback(cfg.Addr) && cfg.TLS == nil && !cfg.AllowInsecure {
		return fmt.Errorf("addr %q is not a loopback address and there is no TLS: passwords and readings would cross the network "+
			"in clear; give the listener a certificate, or allow an insecure listener explicitly", cfg.Addr)
	}
	seen := map[string]bool{}
	for _, u := range cfg.Users {
		switch {
		case u.Name == "":
			return errors.New("a user without a name")
		case u.Password == "":
			return fmt.Errorf("user %q: empty password", u.Name)
		case u.Role != RoleDevice && u.Role != RoleEdge:
			return fmt.Errorf("user %q: bad role %s", u.Name, u.Role)
		case seen[u.Name]:
			return fmt.Errorf("user %q: given twice", u.Name)
		case u.Devices != nil && u.Role != RoleDevice:
			return fmt.Errorf("user %q: a set of devices is for role %s only", u.Name, RoleDevice)
		}
		seen[u.Name] = true
	}
	if cfg.TLS != nil && len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil {
		return errors.New("tls: no certificate")
	}
	if cfg.MaxClients == 0 {
		cfg.MaxClients = DefaultMaxClients
	}
	if cfg.MaxClients < 0 {
		return fmt.Errorf("maxClients: %d is negative", cfg.MaxClients)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return nil
}

// LoadTLS is a server TLS configuration (TLS 1.2 and up) serving the
// certificate and key of PEM files.
func LoadTLS(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// Broker is an embedded MQTT broker.
type Broker struct {
	cfg    Config
	ln     net.Listener
	server *mochi.Server

	closeOnce sync.Once
}

// New checks cfg and binds the listening address. Call Start to serve, or
// Close to release the address without serving.
func New(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if !IsLoopback(cfg.Addr) && cfg.TLS == nil { // AllowInsecure
		cfg.Logger.Warn("mqtt broker listens beyond loopback without TLS, as allowed: passwords cross the network in clear",
			slog.String("addr", cfg.Addr))
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = EdgeMaxPacketBytes // the smaller per-client bound is the listener's
	caps.MaximumClients = int64(cfg.MaxClients)
	caps.RetainAvailable = 0
	caps.SharedSubAvailable = 0 // nothing here needs them
	caps.MaximumSessionExpiryInterval = uint32(SessionExpiry / time.Second)
	caps.MaximumMessageExpiryInterval = int64(MessageExpiry / time.Second)
	caps.MaximumInflight = maxInflight
	caps.ReceiveMaximum = receiveMaximum
	caps.MaximumClientWritesPending = writesPending
	server := mochi.New(&mochi.Options{
		Capabilities: caps,
		Logger:       cfg.Logger,
		// $SYS statistics read the Go runtime's memory stats, which stops
		// the world: once a minute is enough.
		SysTopicResendInterval: 60,
	})
	b := &Broker{cfg: cfg, ln: ln, server: server}
	hook := newAuthHook(cfg, server)
	if err := server.AddHook(hook, nil); err != nil {
		ln.Close()
		return nil, fmt.Errorf("broker: auth hook: %w", err)
	}
	if err := server.AddListener(&listener{ln: ln, tls: cfg.TLS, maxConns: 2 * cfg.MaxClients}); err != nil {
		ln.Close()
		return nil, fmt.Errorf("broker: %w", err)
	}
	return b, nil
}

// Addr is the address the broker listens on (with the port chosen when
// Config.Addr had port 0).
func (b *Broker) Addr() string { return b.ln.Addr().String() }

// URL is the address as an MQTT client URL: tcp://host:port, or
// ssl://host:port with TLS.
func (b *Broker) URL() string {
	if b.cfg.TLS != nil {
		return "ssl://" + b.Addr()
	}
	return "tcp://" + b.Addr()
}

// Start serves clients until ctx ends, then disconnects them, closes the
// listener and returns nil.
func (b *Broker) Start(ctx context.Context) error {
	if err := b.server.Serve(); err != nil {
		b.Close()
		return fmt.Errorf("broker: %w", err)
	}
	b.cfg.Logger.Info("mqtt broker listening", slog.String("addr", b.Addr()), slog.Int("users", len(b.cfg.Users)),
		slog.Bool("anonymous", b.cfg.AllowAnonymous), slog.Bool("tls", b.cfg.TLS != nil))
	<-ctx.Done()
	b.Close()
	return nil
}

// Close disconnects the clients and closes the listener. It may be called
// more than once, and without Start.
func (b *Broker) Close() {
	b.closeOnce.Do(func() {
		// Server.Close closes the listeners, disconnects every client and
		// waits for their goroutines.
		b.server.Close()
		b.ln.Close()
	})
}

// listener serves mochi from a net.Listener that New opened: it bounds the
// connections, wraps each in TLS if configured and in a limitConn, and gives
// the handshake and CONNECT connectTimeout (mochi sets its own deadlines
// from the keepalive after CONNECT).
type listener struct {
	ln       net.Listener
	tls      *tls.Config
	maxConns int
	log      *slog.Logger

	mu     sync.Mutex // guards closed and conns
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func (l *listener) ID() string       { return "tcp" }
func (l *listener) Address() string  { return l.ln.Addr().String() }
func (l *listener) Protocol() string { return "tcp" }

func (l *listener) Init(log *slog.Logger) error {
	l.log = log
	return nil
}

func (l *listener) Serve(establish listeners.EstablishFn) {
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			return // closed
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			raw.Close()
			return
		}
		if len(l.conns) >= l.maxConns {
			l.mu.Unlock()
			l.log.Warn("mqtt connection refused: too many connections", slog.String("remote", raw.RemoteAddr().String()),
				slog.Int("max", l.maxConns))
			raw.Close()
			continue
		}
		if l.conns == nil {
			l.conns = make(map[net.Conn]struct{})
		}
		l.conns[raw] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			defer func() {
				l.mu.Lock()
				delete(l.conns, raw)
				l.mu.Unlock()
			}()
			raw.SetDeadline(time.Now().Add(connectTimeout))
			conn := raw
			if l.tls != nil {
				conn = tls.Server(raw, l.tls)
			}
			lc := newLimitConn(conn, ClientMaxPacketBytes)
			err := establish(l.ID(), lc)
			if tl := lc.tooLarge(); tl != nil {
				l.log.Warn("mqtt client disconnected", slog.String("remote", raw.RemoteAddr().String()), slog.Any("err", tl))
			} else if err != nil && !isClosing(err) {
				l.log.Debug("mqtt client ended", slog.String("remote", raw.RemoteAddr().String()), slog.Any("err", err))
			}
		}()
	}
}

// isClosing reports the errors an ordinary end of a client session gives.
func isClosing(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, packets.CodeDisconnect)
}

// Close stops accepting, closes every client connection and waits for the
// clients' goroutines. It closes the connections itself instead of calling
// mochi's closeClients: that one read-locks mochi's client map twice
// (GetByListener, then Len inside it), which deadlocks when a client that is
// going away waits for the write lock in between (seen in CI: edgecore's
// Run never returned).
func (l *listener) Close(listeners.CloseFn) {
	l.mu.Lock()
	l.closed = true
	conns := make([]net.Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	l.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	l.wg.Wait()
}
