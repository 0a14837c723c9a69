package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// start runs a broker on a free loopback port until the test ends.
func start(t *testing.T, cfg Config) *Broker {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	cfg.Logger = quiet()
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	})
	return b
}

func connect(t *testing.T, url, id, user, pass string) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(20 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func TestPublishSubscribe(t *testing.T) {
	b := start(t, Config{})
	if !strings.HasPrefix(b.Addr(), "127.0.0.1:") || b.URL() != "tcp://"+b.Addr() {
		t.Fatalf("Addr %q URL %q", b.Addr(), b.URL())
	}
	sub, err := connect(t, b.URL(), "sub", "", "")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	tok := sub.Subscribe("$hw/events/device/+/+/twin/+", 1, func(_ paho.Client, m paho.Message) {
		got <- m.Topic() + " " + string(m.Payload())
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	pub, err := connect(t, b.URL(), "pub", "", "")
	if err != nil {
		t.Fatal(err)
	}
	// A payload above the twin decoder's limit still goes through: the
	// edge must see it to answer it with an error result.
	big := strings.Repeat("x", 100<<10)
	if tok := pub.Publish("$hw/events/device/ns/d/twin/update", 1, false, big); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	select {
	case m := <-got:
		if m != "$hw/events/device/ns/d/twin/update "+big {
			t.Fatalf("got %.80q...", m)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no message")
	}
}

func TestCredentials(t *testing.T) {
	b := start(t, Config{Username: "edge", Password: "s3cret"})
	if _, err := connect(t, b.URL(), "good", "edge", "s3cret"); err != nil {
		t.Fatalf("good credentials refused: %v", err)
	}
	for _, c := range []struct{ user, pass string }{{"", ""}, {"edge", "wrong"}, {"other", "s3cret"}, {"edge", ""}} {
		if _, err := connect(t, b.URL(), "bad", c.user, c.pass); err == nil {
			t.Errorf("user %q password %q let in", c.user, c.pass)
		} else if !strings.Contains(err.Error(), "not Authorized") {
			// MQTT 3.1.1 has one return code for both (5, not authorized).
			t.Errorf("user %q password %q: %v, want not authorized", c.user, c.pass, err)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	b, err := New(Config{Addr: "127.0.0.1:0", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := New(Config{Addr: b.Addr(), Logger: quiet()}); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("second broker on %s: %v, want address already in use", b.Addr(), err)
	}
	if _, err := New(Config{Addr: "localhost", Logger: quiet()}); err == nil || !strings.Contains(err.Error(), `addr "localhost"`) {
		t.Errorf("addr without port: %v", err)
	}
	if _, err := New(Config{Addr: "127.0.0.1:0", Password: "x", Logger: quiet()}); err == nil || !strings.Contains(err.Error(), "password without a username") {
		t.Errorf("password alone: %v", err)
	}
}

// TestShutdown checks that the end of Start disconnects clients and frees
// the address, and that Close without Start frees it too.
func TestShutdown(t *testing.T) {
	b, err := New(Config{Addr: "127.0.0.1:0", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.Start(ctx) }()

	var mu sync.Mutex
	lost := make(chan struct{})
	o := paho.NewClientOptions().AddBroker(b.URL()).SetClientID("c").SetAutoReconnect(false).
		SetConnectionLostHandler(func(paho.Client, error) {
			mu.Lock()
			defer mu.Unlock()
			select {
			case <-lost:
			default:
				close(lost)
			}
		})
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(20 * time.Second):
		t.Fatal("client still connected after the broker stopped")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("address not freed: %v", err)
	}
	ln.Close()

	b2, err := New(Config{Addr: addr, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	b2.Close()
	b2.Close()
	if ln, err := net.Listen("tcp", addr); err != nil {
		t.Fatalf("Close did not free the address: %v", err)
	} else {
		ln.Close()
	}
}
