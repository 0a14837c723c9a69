// Package broker is the MQTT broker edgecore embeds, so that a node needs no
// separate Mosquitto for its devices: mochi-mqtt (MQTT 3.1, 3.1.1 and 5) on
// one TCP listener, loopback by default.
//
// The default address is 127.0.0.1:1883, the port KubeEdge's mappers and
// apps connect to (KubeEdge's edge uses an external broker there by default;
// its own internal broker, when turned on, listens on 127.0.0.1:1884).
// Without a username the broker lets every client in, as Mosquitto does with
// allow_anonymous on a loopback listener; with one, a client must give that
// username and password, and any other is refused (CONNACK "not
// authorized" in MQTT 3.1.1, "bad user name or password" in MQTT 5). Every
// client let in may publish and subscribe to every topic.
//
// New binds the address, so a port in use is an error at configuration
// time and Addr is known before Start (port 0 picks a free port, for tests).
// Start serves until its context ends, then disconnects the clients and
// closes the listener.
package broker

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// DefaultAddr is where the broker listens unless told otherwise.
const DefaultAddr = "127.0.0.1:1883"

// MaxPacketBytes bounds the packets the broker accepts; a client that sends
// a larger one is disconnected. It is far above the largest twin payload
// the edge decodes (devices/mqtt.MaxPayloadBytes), so that an oversized
// twin update still reaches the edge and gets an error result, and above
// the edge's own largest message, the membership/get result listing every
// device of the node with its twin.
const MaxPacketBytes = 16 << 20

// Config configures the broker.
type Config struct {
	// Addr is the TCP address to listen on (default DefaultAddr).
	Addr string
	// Username and Password, when Username is set, are the only
	// credentials accepted. An empty Username lets every client in.
	Username string
	Password string
	// Logger receives the broker's logs (default slog.Default()).
	Logger *slog.Logger
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
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("broker: addr %q: %w", cfg.Addr, err)
	}
	if cfg.Username == "" && cfg.Password != "" {
		return nil, errors.New("broker: a password without a username")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = MaxPacketBytes
	server := mochi.New(&mochi.Options{
		Capabilities: caps,
		Logger:       cfg.Logger,
		// $SYS statistics read the Go runtime's memory stats, which stops
		// the world: once a minute is enough.
		SysTopicResendInterval: 60,
	})
	b := &Broker{cfg: cfg, ln: ln, server: server}
	hook := &authHook{username: []byte(cfg.Username), password: []byte(cfg.Password)}
	if err := server.AddHook(hook, nil); err != nil {
		ln.Close()
		return nil, fmt.Errorf("broker: auth hook: %w", err)
	}
	if err := server.AddListener(&listener{ln: ln}); err != nil {
		ln.Close()
		return nil, fmt.Errorf("broker: %w", err)
	}
	return b, nil
}

// Addr is the address the broker listens on (with the port chosen when
// Config.Addr had port 0).
func (b *Broker) Addr() string { return b.ln.Addr().String() }

// URL is the address as an MQTT client URL, tcp://host:port.
func (b *Broker) URL() string { return "tcp://" + b.Addr() }

// Start serves clients until ctx ends, then disconnects them, closes the
// listener and returns nil.
func (b *Broker) Start(ctx context.Context) error {
	if err := b.server.Serve(); err != nil {
		b.Close()
		return fmt.Errorf("broker: %w", err)
	}
	b.cfg.Logger.Info("mqtt broker listening", slog.String("addr", b.Addr()),
		slog.Bool("auth", b.cfg.Username != ""))
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

// listener serves mochi from a net.Listener that New opened.
type listener struct {
	ln  net.Listener
	log *slog.Logger

	mu     sync.Mutex
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
		conn, err := l.ln.Accept()
		if err != nil {
			return // closed
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			conn.Close()
			return
		}
		if l.conns == nil {
			l.conns = make(map[net.Conn]struct{})
		}
		l.conns[conn] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			defer func() {
				l.mu.Lock()
				delete(l.conns, conn)
				l.mu.Unlock()
			}()
			if err := establish(l.ID(), conn); err != nil && !isClosing(err) {
				l.log.Debug("mqtt client ended", slog.String("remote", conn.RemoteAddr().String()), slog.Any("err", err))
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

// authHook lets a client in when no username is configured, or when it
// gives the configured username and password; it allows every topic.
type authHook struct {
	mochi.HookBase
	username, password []byte
}

func (h *authHook) ID() string { return "tether-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}

func (h *authHook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	if len(h.username) == 0 {
		return true
	}
	userOK := subtle.ConstantTimeCompare(pk.Connect.Username, h.username) == 1
	passOK := subtle.ConstantTimeCompare(pk.Connect.Password, h.password) == 1
	if !userOK || !passOK {
		h.Log.Warn("mqtt client refused: bad username or password", slog.String("client", cl.ID),
			slog.String("username", string(bytes.ToValidUTF8(pk.Connect.Username, []byte("?")))))
		return false
	}
	return true
}

func (h *authHook) OnACLCheck(*mochi.Client, string, bool) bool { return true }
