// Package devicetwin serves the device twins of an edge node over MQTT, the
// way KubeEdge's edge does, so that KubeEdge mappers and apps work unchanged:
// it subscribes to the twin topics (devices/mqtt.EdgeSubscriptions) on a
// broker (edgecore's embedded one, devices/broker, or an external one such
// as Mosquitto), answers twin/update, twin/get, state/update and
// membership/get, and publishes membership, deltas and documents.
//
// One goroutine (Start) owns a devices/twin.Engine and feeds it typed
// inputs: MQTT messages decoded by devices/mqtt (a payload that does not
// decode, oversized ones included, is a BadRequest, answered with a 400
// error result), the Device and DeviceModel objects of the edge store
// (turned into DeviceUpserted, DeviceRestored and DeviceRemoved; a device
// whose model is missing or invalid waits for it), a Republish whenever the
// broker connection opens, and Flush on a timer. paho's callbacks only hand
// messages and connection events to that goroutine over channels.
//
// Store objects are read again when the agent reports a commit: with
// ObjectsCommitted, only the Devices and DeviceModels the commit touched,
// and the devices of those models (an index by model keeps them), so a
// change costs the same whatever the number of devices stored; with
// ObjectsChanged, which names only kinds, every device and model. Decoding
// and checking are cached by UID and resourceVersion either way.
//
// Flush saves, in one store transaction, the twin of every device that
// changed (reported values with their timestamps, state, last online time
// and expected values, including those set at the edge: store.Tx.PutTwin)
// and queues one protocol.DeviceStatus per device whose reported values or
// state changed in the outbox, under store.OutboxDeviceStatus(uid). The
// DeviceStatus always carries the whole reported set, so the outbox, which
// keeps one entry per key, coalesces the reports of a device made while the
// cloud is away into one entry with the latest value of each property, and
// nothing is lost if the node restarts meanwhile. After a restart the saved
// twins come back (DeviceRestored) under the devices the store holds.
//
// Which properties go up: as in KubeEdge, where the mapper sends a property
// to the cloud only if the Device's spec.properties[].reportToCloud is
// true, the DeviceStatus lists only the reported values of properties with
// reportToCloud set. Every reported value is still checked, saved and served
// on MQTT (twin/get, documents, deltas). The device state and last online
// time always go up.
//
// Flush timing: a change is flushed FlushDelay after it arrives (gathering
// what arrives meanwhile), but no sooner than ReportInterval after the
// previous flush; so a lone report reaches the outbox within about
// FlushDelay, and a steady stream of reports is saved and queued once per
// ReportInterval.
//
// Answers wait for the save: the result of an accepted twin/update (with
// its document and delta) and of a state/update that changed the state
// (twin.Output.AfterSave) are held until the flush that saves the change has
// committed, then published together. A device that got a success result
// can count on its report surviving a crash; a report not yet answered when
// edgecore dies may be lost, and the device, which got no answer, may send
// it again. While the store cannot be written (a full disk) the flush is
// retried every ReportInterval and the answers wait, at most maxHeld of
// them (the oldest are dropped beyond that).
//
// When the agent connects to the cloud (Connected), the current status of
// every device is queued again: a status the hub refused, or that was lost
// between the edge and the API server, would otherwise stay stale until the
// device reports a change.
package devicetwin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tether-edge/tether/devices/mqtt"
	"github.com/tether-edge/tether/devices/twin"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// Config configures the twin component.
type Config struct {
	// NodeName is the node's name: the <node> of the membership topics.
	NodeName string
	// BrokerURL is the MQTT broker, tcp://host:port (mqtt:// is the same),
	// or ssl://host:port (mqtts:// is the same) for MQTT over TLS.
	BrokerURL string
	// TLS is the client TLS configuration of an ssl:// BrokerURL (which
	// CA or certificate to trust); required with one, refused without.
	TLS *tls.Config
	// Username and Password, if Username is set, are sent to the broker.
	Username string
	Password string
	// ClientID is the MQTT client id (default tether-edgecore-<node>).
	ClientID string
	// ReportInterval is the least time between two flushes (default 1s).
	ReportInterval time.Duration
	// FlushDelay is how long a change waits for others before it is
	// flushed (default 20ms).
	FlushDelay time.Duration
	// ReconnectMax bounds the wait between two attempts to reach the broker
	// (default 10s; the first retries come after 1s).
	ReconnectMax time.Duration
	// QueueLen is how many received MQTT messages may wait for the owner
	// goroutine before the client stops reading from the broker (default
	// 1024).
	QueueLen int
	// Logger receives the component's logs (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if err := protocol.ValidateNodeName(c.NodeName); err != nil {
		return fmt.Errorf("devicetwin: %w", err)
	}
	if err := ValidateBrokerURL(c.BrokerURL); err != nil {
		return fmt.Errorf("devicetwin: %w", err)
	}
	if IsTLSURL(c.BrokerURL) != (c.TLS != nil) {
		return fmt.Errorf("devicetwin: broker url %q: a TLS configuration is required with ssl:// and refused with tcp://", c.BrokerURL)
	}
	if c.Username == "" && c.Password != "" {
		return errors.New("devicetwin: a password without a username")
	}
	if c.ClientID == "" {
		c.ClientID = "tether-edgecore-" + c.NodeName
	}
	if c.ReportInterval == 0 {
		c.ReportInterval = time.Second
	}
	if c.FlushDelay == 0 {
		c.FlushDelay = 20 * time.Millisecond
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = 10 * time.Second
	}
	if c.QueueLen == 0 {
		c.QueueLen = 1024
	}
	if c.ReportInterval < 0 || c.FlushDelay < 0 || c.ReconnectMax < time.Second || c.QueueLen < 0 {
		return fmt.Errorf("devicetwin: bad timers or bounds: reportInterval %s, flushDelay %s, reconnectMax %s (at least 1s), queueLen %d",
			c.ReportInterval, c.FlushDelay, c.ReconnectMax, c.QueueLen)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// ValidateBrokerURL checks an MQTT broker URL: tcp://host:port or
// mqtt://host:port, or ssl://host:port or mqtts://host:port (TLS), with a
// port and nothing after it.
func ValidateBrokerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || s == "" {
		return fmt.Errorf("broker url %q is not a URL like tcp://127.0.0.1:1883", s)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "mqtts":
	default:
		return fmt.Errorf("broker url %q: scheme %q, want tcp, mqtt, ssl or mqtts", s, u.Scheme)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return fmt.Errorf("broker url %q: want host and port", s)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("broker url %q: want only tcp://host:port (credentials go in username and password)", s)
	}
	return nil
}

// IsTLSURL reports whether a valid broker URL is MQTT over TLS (ssl:// or
// mqtts://).
func IsTLSURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "ssl" || u.Scheme == "mqtts")
}

// Twin is the device twin component of one edge node.
type Twin struct {
	cfg    Config
	db     *store.DB
	queued func()
	log    *slog.Logger

	msgc     chan message  // MQTT messages, from paho's router
	connc    chan struct{} // the broker connection opened and we subscribed
	resendc  chan struct{} // the agent connected to the cloud: queue every status again
	objc     chan struct{} // device or model objects changed in the store: see pending
	stopping chan struct{} // closed when Start ends, releases paho's callbacks
	// updates counts twin update messages from devices, read by Updates.
	updates atomic.Int64
	// pendingMu guards pending: the objects ObjectsChanged and
	// ObjectsCommitted reported changed, for Start's goroutine to read
	// when objc fires.
	pendingMu sync.Mutex
	pending   changes
	client    paho.Client  // made by New, connected by Start
	engine    *twin.Engine // owned by Start's goroutine, like the rest below
	devs      map[mqtt.DeviceID]*entry
	models    map[string]*parsedModel           // by UID: the store's models, decoded
	parsed    map[string]*parsedDevice          // by UID: the store's devices, decoded
	byModel   map[string]map[mqtt.DeviceID]bool // the devices of t.devs by their model's "<ns>/<name>"
	retry     pendingFlush                      // what a failed flush left to do
	held      []twin.Publication                // answers waiting for a flush to commit (Output.AfterSave)
	dropped   int                               // held answers dropped beyond maxHeld since the last commit
	sent      map[string]*protocol.DeviceStatus // the DeviceStatus last queued, per device UID
	lastFlush time.Time
	flushAt   time.Time // zero when no flush is scheduled
	timer     *time.Timer
	// cleaned is set once twins of devices gone while edgecore was down
	// were deleted.
	cleaned bool
}

type message struct {
	topic   string
	payload []byte
}

// New builds the component. queued, if not nil, is called after statuses
// were added to the outbox (the store tells the agent: store.DB.OutboxChanged).
func New(cfg Config, db *store.DB, queued func()) (*Twin, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if queued == nil {
		queued = func() {} // the agent hears of the outbox from the store
	}
	t := &Twin{
		cfg: cfg, db: db, queued: queued, log: cfg.Logger,
		msgc:     make(chan message, cfg.QueueLen),
		connc:    make(chan struct{}, 1),
		resendc:  make(chan struct{}, 1),
		objc:     make(chan struct{}, 1),
		stopping: make(chan struct{}),
		engine:   twin.New(cfg.NodeName),
		devs:     map[mqtt.DeviceID]*entry{},
		models:   map[string]*parsedModel{},
		parsed:   map[string]*parsedDevice{},
		byModel:  map[string]map[mqtt.DeviceID]bool{},
		sent:     map[string]*protocol.DeviceStatus{},
		timer:    time.NewTimer(time.Hour),
	}
	t.timer.Stop()
	t.client = paho.NewClient(paho.NewClientOptions().AddBroker(cfg.BrokerURL).SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).SetPassword(cfg.Password).SetTLSConfig(cfg.TLS).
		SetCleanSession(true).SetOrderMatters(true).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(cfg.ReconnectMax).SetConnectTimeout(10 * time.Second).
		SetKeepAlive(30 * time.Second).SetWriteTimeout(10 * time.Second).
		SetOnConnectHandler(t.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			t.log.Warn("mqtt connection lost", slog.String("broker", cfg.BrokerURL), slog.Any("err", err))
		}))
	return t, nil
}

// ObjectsChanged implements agent.Observer: the component rereads the
// devices and models of refs (ObjectsCommitted), or every device and model
// when refs is nil and either kind changed. It never blocks.
func (t *Twin) ObjectsChanged(kinds map[protocol.Kind]bool, refs []protocol.ObjectRef) {
	if refs != nil {
		t.ObjectsCommitted(refs)
		return
	}
	if kinds[protocol.KindDevice] || kinds[protocol.KindDeviceModel] {
		t.pendingMu.Lock()
		t.pending.all = true
		t.pendingMu.Unlock()
		kick(t.objc)
	}
}

// ObjectsCommitted tells the component which objects a commit of the store
// upserted or deleted (refs of other kinds are ignored): it rereads only
// those devices, and the devices of those models, which costs a change the
// same whatever the number of devices stored. Use it instead of
// ObjectsChanged where the commit's objects are known. It never blocks.
func (t *Twin) ObjectsCommitted(refs []protocol.ObjectRef) {
	t.pendingMu.Lock()
	kicked := t.pending.add(refs)
	t.pendingMu.Unlock()
	if kicked {
		kick(t.objc)
	}
}

// takeChanges returns the pending changes and forgets them.
func (t *Twin) takeChanges() changes {
	t.pendingMu.Lock()
	defer t.pendingMu.Unlock()
	c := t.pending
	t.pending = changes{}
	return c
}

// Connected implements agent.Observer: the current status of every device
// is queued again, at the next flush. The outbox keeps what was not
// acknowledged, but a status the hub refused, or answered before a
// transient failure upstream was known, is gone from it; this sends it
// again. It never blocks.
func (t *Twin) Connected() { kick(t.resendc) }

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Start serves the twins until ctx ends; then it flushes what changed and
// disconnects from the broker. A store that cannot be read or written (a
// full disk) is retried every ReportInterval; it does not end Start.
func (t *Twin) Start(ctx context.Context) error {
	defer func() {
		// Release a paho callback blocked on the owner before Disconnect
		// waits for paho's goroutines.
		close(t.stopping)
		t.client.Disconnect(250)
	}()
	defer t.timer.Stop()
	t.takeChanges()             // the first sync reads everything
	var resync <-chan time.Time // set while a failed sync waits to be tried again
	syncFailed := func(err error) {
		// The next sync reads everything again.
		t.pendingMu.Lock()
		t.pending.all = true
		t.pendingMu.Unlock()
		resync = time.After(t.cfg.ReportInterval)
		t.log.Error("read devices from the store", slog.Any("err", err))
	}
	if err := t.syncObjects(time.Now(), changes{all: true}); err != nil {
		syncFailed(err)
	}

	t.client.Connect() // with ConnectRetry it keeps trying; onConnect reports success

	for {
		select {
		case <-ctx.Done():
			t.flush(time.Now())
			return nil
		case m := <-t.msgc:
			t.handle(time.Now(), m)
		case <-t.connc:
			t.publish(t.engine.Step(time.Now(), twin.Republish{}).Publish)
		case <-t.resendc:
			t.resendStatuses(time.Now())
		case <-resync:
			kick(t.objc)
		case <-t.objc:
			resync = nil
			if err := t.syncObjects(time.Now(), t.takeChanges()); err != nil {
				syncFailed(err)
			}
		case <-t.timer.C:
			t.flushAt = time.Time{}
			t.flush(time.Now())
		}
	}
}

// onConnect runs in its own goroutine (paho starts it) after each
// connection to the broker: it subscribes, then tells the owner.
func (t *Twin) onConnect(c paho.Client) {
	filters := map[string]byte{}
	for _, f := range mqtt.EdgeSubscriptions() {
		filters[f] = 1
	}
	tok := c.SubscribeMultiple(filters, t.onMessage)
	ok := tok.WaitTimeout(30 * time.Second)
	select {
	case <-t.stopping:
		return // the subscription raced with the end of Start
	default:
	}
	if !ok {
		t.log.Error("mqtt subscribe timed out", slog.String("broker", t.cfg.BrokerURL))
		return
	}
	if err := tok.Error(); err != nil {
		t.log.Error("mqtt subscribe failed", slog.String("broker", t.cfg.BrokerURL), slog.Any("err", err))
		return
	}
	t.log.Info("mqtt connected and subscribed", slog.String("broker", t.cfg.BrokerURL),
		slog.String("clientID", t.cfg.ClientID))
	kick(t.connc)
}

// onMessage runs in paho's router goroutine, one message at a time: when
// the owner falls behind, it blocks, and paho stops reading the broker.
func (t *Twin) onMessage(_ paho.Client, m paho.Message) {
	select {
	case t.msgc <- message{topic: m.Topic(), payload: m.Payload()}:
	case <-t.stopping:
	}
}

// Updates returns how many twin update messages devices published so far.
func (t *Twin) Updates() int64 { return t.updates.Load() }

// handle decodes one MQTT message into an engine input and applies it.
func (t *Twin) handle(now time.Time, m message) {
	topic, err := mqtt.ParseTopic(m.topic)
	if err != nil {
		t.log.Debug("mqtt message on an unknown topic ignored", slog.String("topic", m.topic), slog.Any("err", err))
		return
	}
	var in twin.Input
	switch topic.Kind {
	case mqtt.KindTwinUpdate:
		t.updates.Add(1)
		msg, err := mqtt.DecodeTwinUpdate(m.payload)
		in = twin.TwinUpdate{Device: topic.Device, Msg: msg}
		if err != nil {
			in = twin.BadRequest{Topic: topic, Err: err}
		}
	case mqtt.KindTwinGet:
		base, err := mqtt.DecodeBase(m.payload)
		in = twin.TwinGet{Device: topic.Device, EventID: base.EventID}
		if err != nil {
			in = twin.BadRequest{Topic: topic, Err: err}
		}
	case mqtt.KindStateUpdate:
		msg, err := mqtt.DecodeStateUpdate(m.payload)
		in = twin.StateUpdate{Device: topic.Device, EventID: msg.EventID, State: msg.State}
		if err != nil {
			in = twin.BadRequest{Topic: topic, Err: err}
		}
	case mqtt.KindMembershipGet:
		if topic.Node != t.cfg.NodeName {
			return // another node's, on a shared broker
		}
		base, err := mqtt.DecodeBase(m.payload)
		in = twin.MembershipGet{EventID: base.EventID}
		if err != nil {
			in = twin.BadRequest{Topic: topic, Err: err}
		}
	default:
		// $hw/events/upload/# (KubeEdge forwards it to the cloud; Tether
		// has no use for it yet) and topics of other kinds.
		t.log.Debug("mqtt message ignored", slog.String("topic", m.topic))
		return
	}
	out := t.engine.Step(now, in)
	if out.AfterSave {
		t.hold(out.Publish)
	} else {
		t.publish(out.Publish)
	}
	if out.Err != nil {
		t.log.Debug("mqtt request refused", slog.String("topic", m.topic), slog.Any("err", out.Err))
		return
	}
	switch in.(type) {
	case twin.TwinUpdate, twin.StateUpdate:
		t.changed(now)
	}
}

// publish sends the engine's publications, QoS 1, without waiting for the
// broker's acknowledgement. While the broker is away they are dropped:
// requests cannot arrive then, and Republish covers the rest on reconnect.
func (t *Twin) publish(pubs []twin.Publication) {
	if !t.client.IsConnectionOpen() {
		if len(pubs) > 0 {
			t.log.Debug("mqtt not connected: publications dropped", slog.Int("count", len(pubs)))
		}
		return
	}
	for _, p := range pubs {
		tok := t.client.Publish(p.Topic.String(), 1, false, p.Payload)
		select {
		case <-tok.Done():
			if err := tok.Error(); err != nil {
				t.log.Warn("mqtt publish failed", slog.String("topic", p.Topic.String()), slog.Any("err", err))
			}
		default: // in flight
		}
	}
}

// changed schedules a flush: FlushDelay from now, but not before
// ReportInterval after the last flush.
func (t *Twin) changed(now time.Time) {
	if !t.flushAt.IsZero() {
		return
	}
	at := now.Add(t.cfg.FlushDelay)
	if next := t.lastFlush.Add(t.cfg.ReportInterval); next.After(at) {
		at = next
	}
	t.flushAt = at
	t.timer.Reset(at.Sub(now))
}
