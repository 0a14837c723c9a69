package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tether-edge/tether/pki"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The users of the brokers of these tests.
var (
	edgeUser   = User{Name: "edgecore", Password: "edge-s3cret", Role: RoleEdge}
	mapperUser = User{Name: "mapper", Password: "mapper-s3cret", Role: RoleDevice}
)

// start runs a broker on a free loopback port until the test ends; without
// users and anonymous clients, with edgeUser and mapperUser.
func start(t *testing.T, cfg Config) *Broker {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Users == nil && !cfg.AllowAnonymous {
		cfg.Users = []User{edgeUser, mapperUser}
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

// client is a connected paho client and whether its connection was lost.
type client struct {
	paho.Client
	lost chan struct{}
}

func options(url, id string, u User) *paho.ClientOptions {
	return paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(u.Name).SetPassword(u.Password).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).SetProtocolVersion(4)
}

func connect(t *testing.T, url, id string, u User) (*client, error) {
	t.Helper()
	return connectWith(t, options(url, id, u))
}

func connectWith(t *testing.T, o *paho.ClientOptions) (*client, error) {
	t.Helper()
	c := &client{lost: make(chan struct{})}
	var once sync.Once
	o.SetConnectionLostHandler(func(paho.Client, error) { once.Do(func() { close(c.lost) }) })
	c.Client = paho.NewClient(o)
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

func mustConnect(t *testing.T, url, id string, u User) *client {
	t.Helper()
	c, err := connect(t, url, id, u)
	if err != nil {
		t.Fatalf("connect %s as %q: %v", id, u.Name, err)
	}
	return c
}

// subscribe subscribes c to filter, sending every message to the channel
// it returns; it fails the test if the broker refuses.
func subscribe(t *testing.T, c *client, filter string) chan paho.Message {
	t.Helper()
	got := make(chan paho.Message, 100)
	if code := trySubscribe(t, c, filter, func(_ paho.Client, m paho.Message) { got <- m }); code > 2 {
		t.Fatalf("subscribe %s: refused (code %#x)", filter, code)
	}
	return got
}

// trySubscribe returns the SUBACK code of filter (0 to 2: granted QoS;
// 0x80: refused).
func trySubscribe(t *testing.T, c *client, filter string, h paho.MessageHandler) byte {
	t.Helper()
	tok := c.Subscribe(filter, 1, h)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	res := tok.(*paho.SubscribeToken).Result()
	if len(res) != 1 {
		t.Fatalf("subscribe %s: results %v", filter, res)
	}
	for _, code := range res { // keyed by the filter, without a $share/ prefix
		return code
	}
	return 0
}

func publish(c *client, topic string, qos byte, retain bool, payload any) error {
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(10 * time.Second) {
		return errors.New("publish timed out")
	}
	return tok.Error()
}

// none fails the test if a message arrives on got within d.
func none(t *testing.T, got chan paho.Message, d time.Duration) {
	t.Helper()
	select {
	case m := <-got:
		t.Fatalf("delivered: %s %.80q", m.Topic(), m.Payload())
	case <-time.After(d):
	}
}

func TestPublishSubscribe(t *testing.T) {
	b := start(t, Config{})
	if !strings.HasPrefix(b.Addr(), "127.0.0.1:") || b.URL() != "tcp://"+b.Addr() {
		t.Fatalf("Addr %q URL %q", b.Addr(), b.URL())
	}
	edge := mustConnect(t, b.URL(), "edge", edgeUser)
	got := subscribe(t, edge, "$hw/events/device/+/+/twin/+")
	mapper := mustConnect(t, b.URL(), "mapper", mapperUser)
	deltas := subscribe(t, mapper, "$hw/events/device/+/+/twin/update/delta")
	// A payload above the twin decoder's limit still goes through: the
	// edge must see it to answer it with an error result.
	big := strings.Repeat("x", 100<<10)
	if err := publish(mapper, "$hw/events/device/ns/d/twin/update", 1, false, big); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.Topic() != "$hw/events/device/ns/d/twin/update" || string(m.Payload()) != big {
			t.Fatalf("got %s %.80q...", m.Topic(), m.Payload())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no message")
	}
	// edgecore's own messages may be larger (membership with every
	// device): 1 MiB reaches the mapper.
	huge := strings.Repeat("y", 1<<20)
	if err := publish(edge, "$hw/events/device/ns/d/twin/update/delta", 1, false, huge); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-deltas:
		if len(m.Payload()) != len(huge) {
			t.Fatalf("delta of %d bytes", len(m.Payload()))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no delta")
	}
}

// TestCredentials: an anonymous CONNECT, a wrong password, an unknown user
// and another user's password are refused.
func TestCredentials(t *testing.T) {
	b := start(t, Config{})
	mustConnect(t, b.URL(), "good", mapperUser)
	for _, u := range []User{{}, {Name: "mapper", Password: "wrong"}, {Name: "other", Password: "mapper-s3cret"},
		{Name: "mapper"}, {Name: "mapper", Password: edgeUser.Password}, {Password: "mapper-s3cret"}} {
		if _, err := connect(t, b.URL(), "bad", u); err == nil {
			t.Errorf("user %q password %q let in", u.Name, u.Password)
		} else if !strings.Contains(err.Error(), "not Authorized") {
			// MQTT 3.1.1 has one return code for both (5, not authorized).
			t.Errorf("user %q password %q: %v, want not authorized", u.Name, u.Password, err)
		}
	}
}

// TestAnonymous: with AllowAnonymous, a client without a username has the
// rights of RoleDevice, not more.
func TestAnonymous(t *testing.T) {
	b := start(t, Config{AllowAnonymous: true, NodeName: "n1"})
	c := mustConnect(t, b.URL(), "anon", User{})
	if code := trySubscribe(t, c, "$hw/events/device/+/+/twin/update/delta", nil); code != 1 {
		t.Errorf("anonymous subscribe to deltas: code %#x", code)
	}
	if code := trySubscribe(t, c, "$hw/events/#", nil); code != 0x80 {
		t.Errorf("anonymous subscribe to everything: code %#x, want refused", code)
	}
}

// TestTopicRules: a mapper cannot drive a device (publish a delta), forge
// results, read other topic trees, nor do it through a will; edgecore can.
func TestTopicRules(t *testing.T) {
	b := start(t, Config{NodeName: "n1"})
	edge := mustConnect(t, b.URL(), "edge", edgeUser)
	spy := subscribe(t, edge, "$hw/events/#")
	victim := mustConnect(t, b.URL(), "victim", mapperUser)
	deltas := subscribe(t, victim, "$hw/events/device/+/+/twin/update/delta")

	mapper := mustConnect(t, b.URL(), "mapper", mapperUser)
	for _, f := range []string{"#", "$hw/events/#", "$hw/events/device/+/+/twin/+", "$hw/events/device/+/+/twin/update",
		"$hw/events/device/ns/d/#", "$hw/events/node/n2/membership/get/result", "$hw/events/node/+/membership/get",
		"$SYS/#", "$ke/events/device/+/+/data/update", "$hw/events/upload/#", "other/topic", "$share/g/$hw/events/#"} {
		if code := trySubscribe(t, mapper, f, nil); code != 0x80 {
			t.Errorf("mapper subscribe %q: code %#x, want 0x80 (refused)", f, code)
		}
	}
	for _, f := range []string{"$hw/events/device/+/+/twin/update/delta", "$hw/events/device/ns/d/twin/get/result",
		"$hw/events/node/n1/membership/updated", "$hw/events/node/+/membership/get/result"} {
		if code := trySubscribe(t, mapper, f, nil); code > 2 {
			t.Errorf("mapper subscribe %q: refused", f)
		}
	}

	// QoS 0: dropped silently. QoS 1 in MQTT 3.1.1: the client is
	// disconnected (there is no negative PUBACK before MQTT 5).
	if err := publish(mapper, "$hw/events/device/ns/d/twin/update/delta", 0, false, `{"delta":{"temperature":"99"}}`); err != nil {
		t.Fatal(err)
	}
	forger := mustConnect(t, b.URL(), "forger", mapperUser)
	publish(forger, "$hw/events/device/ns/d/twin/update/result", 1, false, `{"code":0}`)
	select {
	case <-forger.lost:
	case <-time.After(20 * time.Second):
		t.Error("a mapper publishing a result (QoS 1) stayed connected")
	}
	none(t, deltas, 500*time.Millisecond)
	none(t, spy, 0)

	// A will is a publish at disconnect: refused at CONNECT.
	o := options(b.URL(), "willer", mapperUser).SetWill("$hw/events/device/ns/d/twin/update/delta", `{"delta":{"t":"99"}}`, 1, false)
	if _, err := connectWith(t, o); err == nil || !strings.Contains(err.Error(), "not Authorized") {
		t.Errorf("a mapper with a delta will: %v, want not authorized", err)
	}

	// What a mapper may publish reaches the edge.
	if err := publish(mapper, "$hw/events/device/ns/d/twin/update", 1, false, "report"); err != nil {
		t.Fatal(err)
	}
	if m := <-spy; m.Topic() != "$hw/events/device/ns/d/twin/update" {
		t.Fatalf("edge got %s", m.Topic())
	}
	// Only edgecore drives devices.
	if err := publish(edge, "$hw/events/device/ns/d/twin/update/delta", 1, false, "delta"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-deltas:
	case <-time.After(20 * time.Second):
		t.Fatal("edgecore's delta not delivered")
	}
}

// deviceSet is a Devices of "<ns>/<name>" keys.
type deviceSet map[string]bool

func (s deviceSet) Has(ns, name string) bool { return s[ns+"/"+name] }

// TestDeviceScopedUser: a mapper user with Devices (the devices of its
// protocol) may publish and subscribe only on its devices' topics, and
// gets nothing of the others through a "+" filter; a mapper user without
// Devices gets every device's.
func TestDeviceScopedUser(t *testing.T) {
	scoped := User{Name: "mapper-modbus", Password: "modbus-s3cret", Role: RoleDevice, Devices: deviceSet{"ns/mine": true}}
	b := start(t, Config{NodeName: "n1", Users: []User{edgeUser, mapperUser, scoped}})
	edge := mustConnect(t, b.URL(), "edge", edgeUser)
	spy := subscribe(t, edge, "$hw/events/#")
	all := subscribe(t, mustConnect(t, b.URL(), "all", mapperUser), "$hw/events/device/+/+/twin/update/delta")

	m := mustConnect(t, b.URL(), "m", scoped)
	deltas := subscribe(t, m, "$hw/events/device/+/+/twin/update/delta")
	for _, f := range []string{"$hw/events/device/ns/other/twin/get/result", "$hw/events/device/ns/other/twin/update/result",
		"$hw/events/node/n1/membership/get/result", "$hw/events/node/+/membership/updated"} { // every device's twin
		if code := trySubscribe(t, m, f, nil); code != 0x80 {
			t.Errorf("scoped subscribe %q: code %#x, want 0x80 (refused)", f, code)
		}
	}
	if code := trySubscribe(t, m, "$hw/events/device/ns/mine/twin/get/result", nil); code > 2 {
		t.Error("scoped subscribe to its own device's result: refused")
	}

	// The edge's deltas: the scoped mapper gets its device's only.
	for _, d := range []string{"other", "mine"} {
		if err := publish(edge, "$hw/events/device/ns/"+d+"/twin/update/delta", 1, false, d); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		select {
		case <-all:
		case <-time.After(20 * time.Second):
			t.Fatal("the unscoped mapper did not get both deltas")
		}
	}
	select {
	case msg := <-deltas:
		if msg.Topic() != "$hw/events/device/ns/mine/twin/update/delta" {
			t.Fatalf("the scoped mapper got %s", msg.Topic())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the scoped mapper did not get its device's delta")
	}
	none(t, deltas, 300*time.Millisecond)
	for range 2 { // the edge's own deltas, seen by its spy
		<-spy
	}

	// Its device's report reaches the edge; another's (QoS 0: dropped;
	// QoS 1: the client is disconnected) does not, nor its data.
	publish(m, "$hw/events/device/ns/other/twin/update", 0, false, "forged")
	publish(m, "$ke/events/device/ns/other/data/update", 0, false, "forged")
	if err := publish(m, "$hw/events/device/ns/mine/twin/update", 1, false, "report"); err != nil {
		t.Fatal(err)
	}
	if msg := <-spy; msg.Topic() != "$hw/events/device/ns/mine/twin/update" {
		t.Fatalf("edge got %s %q", msg.Topic(), msg.Payload())
	}
	publish(m, "$hw/events/device/ns/other/state/update", 1, false, "forged")
	select {
	case <-m.lost:
	case <-time.After(20 * time.Second):
		t.Error("a scoped mapper publishing another device's state (QoS 1) stayed connected")
	}
	none(t, spy, 300*time.Millisecond)

	// A will on another device's topic is refused at CONNECT.
	o := options(b.URL(), "willer", scoped).SetWill("$hw/events/device/ns/other/state/update", `{"state":"offline"}`, 1, false)
	if _, err := connectWith(t, o); err == nil || !strings.Contains(err.Error(), "not Authorized") {
		t.Errorf("a scoped mapper with another device's will: %v, want not authorized", err)
	}

	if _, err := New(Config{Addr: "127.0.0.1:0", Users: []User{{Name: "e", Password: "p", Role: RoleEdge, Devices: deviceSet{}}},
		Logger: quiet()}); err == nil || !strings.Contains(err.Error(), "role device only") {
		t.Errorf("an edge user with a set of devices: %v", err)
	}
}

// TestClientIDTakeover: a mapper connecting with edgecore's client id is
// refused and edgecore stays connected.
func TestClientIDTakeover(t *testing.T) {
	b := start(t, Config{})
	edge := mustConnect(t, b.URL(), "tether-edgecore-n1", edgeUser)
	if _, err := connect(t, b.URL(), "tether-edgecore-n1", mapperUser); err == nil {
		t.Fatal("a mapper took edgecore's client id")
	}
	select {
	case <-edge.lost:
		t.Fatal("edgecore lost its connection")
	case <-time.After(300 * time.Millisecond):
	}
	// The same user may replace its own session (a reconnect).
	mustConnect(t, b.URL(), "m", mapperUser)
	mustConnect(t, b.URL(), "m", mapperUser)
}

// TestPacketAndRetainBounds: the audit's 40 retained messages of 8 MiB are
// refused at the packet bound (ClientMaxPacketBytes, 128 KiB) and the heap
// does not grow; a small retained message is delivered but not kept.
func TestPacketAndRetainBounds(t *testing.T) {
	b := start(t, Config{})
	edge := mustConnect(t, b.URL(), "edge", edgeUser)
	got := subscribe(t, edge, "$hw/events/#")
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	payload := make([]byte, 8<<20)
	before := heap()
	for i := range 40 {
		c := mustConnect(t, b.URL(), "flood", mapperUser)
		c.Publish("$hw/events/device/ns/d/twin/update", 1, true, payload)
		select {
		case <-c.lost:
		case <-time.After(20 * time.Second):
			t.Fatalf("message %d: the client stayed connected", i)
		}
		c.Disconnect(0)
	}
	after := heap()
	t.Logf("heap before %d KiB, after 40 x 8 MiB: %d KiB", before>>10, after>>10)
	if after > before+32<<20 {
		t.Errorf("heap grew from %d to %d KiB", before>>10, after>>10)
	}
	none(t, got, 0)

	c := mustConnect(t, b.URL(), "retainer", mapperUser)
	if err := publish(c, "$hw/events/device/ns/d/twin/update", 1, true, "kept?"); err != nil {
		t.Fatal(err)
	}
	<-got // delivered to the current subscriber
	late := mustConnect(t, b.URL(), "late", edgeUser)
	none(t, subscribe(t, late, "$hw/events/#"), 500*time.Millisecond)
}

// TestMaxClients: past MaxClients, a CONNECT is refused.
func TestMaxClients(t *testing.T) {
	b := start(t, Config{MaxClients: 2})
	mustConnect(t, b.URL(), "c1", mapperUser)
	mustConnect(t, b.URL(), "c2", mapperUser)
	if _, err := connect(t, b.URL(), "c3", mapperUser); err == nil || !strings.Contains(err.Error(), "server Unavailable") {
		t.Fatalf("third client: %v, want server unavailable", err)
	}
}

// TestTLS: with a certificate from package pki, a TLS client verifying it
// connects and a plain one is refused on the same port.
func TestTLS(t *testing.T) {
	ca, err := pki.NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueServer("broker", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for f, b := range map[string][]byte{certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tc, err := LoadTLS(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	b := start(t, Config{TLS: tc})
	if !strings.HasPrefix(b.URL(), "ssl://") {
		t.Fatalf("URL %s", b.URL())
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM())
	c, err := connectWith(t, options(b.URL(), "tls", mapperUser).SetTLSConfig(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	if code := trySubscribe(t, c, "$hw/events/device/+/+/twin/update/delta", nil); code != 1 {
		t.Fatalf("subscribe over TLS: %#x", code)
	}
	if _, err := connect(t, "tcp://"+b.Addr(), "plain", mapperUser); err == nil {
		t.Fatal("a plain client connected to the TLS port")
	}
	other, _ := pki.NewCA("other")
	otherRoots := x509.NewCertPool()
	otherRoots.AppendCertsFromPEM(other.CertPEM())
	if _, err := connectWith(t, options(b.URL(), "mitm", mapperUser).SetTLSConfig(&tls.Config{RootCAs: otherRoots})); err == nil {
		t.Fatal("a client trusting another CA connected")
	}
}

func TestConfigErrors(t *testing.T) {
	users := []User{mapperUser}
	b, err := New(Config{Addr: "127.0.0.1:0", Users: users, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Addr: b.Addr(), Users: users}, "address already in use"},
		{Config{Addr: "localhost", Users: users}, `addr "localhost"`},
		{Config{Addr: "127.0.0.1:0"}, "no users"},
		{Config{Addr: "0.0.0.0:0", AllowAnonymous: true}, "anonymous clients are allowed only on loopback"},
		{Config{Addr: ":0", AllowAnonymous: true, Users: users}, "only on loopback"},
		{Config{Addr: "127.0.0.1:0", Users: []User{{Name: "u", Role: RoleDevice}}}, "empty password"},
		{Config{Addr: "127.0.0.1:0", Users: []User{{Name: "u", Password: "p"}}}, "bad role"},
		{Config{Addr: "127.0.0.1:0", Users: []User{mapperUser, mapperUser}}, "given twice"},
		{Config{Addr: "127.0.0.1:0", Users: users, MaxClients: -1}, "negative"},
		{Config{Addr: "127.0.0.1:0", Users: users, TLS: &tls.Config{}}, "no certificate"},
		{Config{Addr: "0.0.0.0:0", Users: users}, "not a loopback address and there is no TLS"},
		{Config{Addr: ":0", Users: users}, "not a loopback address and there is no TLS"},
	} {
		c.cfg.Logger = quiet()
		if b, err := New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			if err == nil {
				b.Close()
			}
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
	// Beyond loopback without TLS: only when allowed explicitly (with a
	// warning).
	if b, err := New(Config{Addr: "0.0.0.0:0", Users: users, AllowInsecure: true, Logger: quiet()}); err != nil {
		t.Errorf("0.0.0.0 with users, allowed insecure: %v", err)
	} else {
		b.Close()
	}
}

// TestShutdown checks that the end of Start disconnects clients and frees
// the address, and that Close without Start frees it too.
func TestShutdown(t *testing.T) {
	users := []User{mapperUser}
	b, err := New(Config{Addr: "127.0.0.1:0", Users: users, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- b.Start(ctx) }()

	c, err := connect(t, b.URL(), "c", mapperUser)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.lost:
	case <-time.After(20 * time.Second):
		t.Fatal("client still connected after the broker stopped")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("address not freed: %v", err)
	}
	ln.Close()

	b2, err := New(Config{Addr: addr, Users: users, Logger: quiet()})
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
