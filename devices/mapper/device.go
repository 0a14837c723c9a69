package mapper

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tether-edge/tether/devices/modbus"
	"github.com/tether-edge/tether/devices/mqtt"
)

// Publisher publishes one MQTT message. The mapper's is a paho client; it
// must be safe for concurrent use, as every device's worker publishes.
type Publisher interface {
	Publish(topic string, payload []byte) error
}

// inbox hands a worker what the owner goroutine has for it: desired values
// from deltas (a later value of a property replaces an earlier one not yet
// taken) and a request to publish everything again.
type inbox struct {
	kick chan struct{} // capacity 1: something is waiting

	mu sync.Mutex
	// desired maps property names to desired values; guarded by mu.
	desired map[string]string
	// resend asks for the state and every value again; guarded by mu.
	resend bool
}

func newInbox() *inbox { return &inbox{kick: make(chan struct{}, 1)} }

func (b *inbox) putDesired(delta map[string]string) {
	b.mu.Lock()
	if b.desired == nil {
		b.desired = make(map[string]string, len(delta))
	}
	for k, v := range delta {
		b.desired[k] = v
	}
	b.mu.Unlock()
	b.signal()
}

func (b *inbox) putResend() {
	b.mu.Lock()
	b.resend = true
	b.mu.Unlock()
	b.signal()
}

func (b *inbox) signal() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

func (b *inbox) take() (map[string]string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, r := b.desired, b.resend
	b.desired, b.resend = nil, false
	return d, r
}

// worker serves one device: it owns the device's Modbus client, reads each
// property on its collect cycle, publishes values and state, and writes
// desired values. One goroutine runs it (run); the owner talks to it
// through its inbox only.
type worker struct {
	cfg    deviceConfig
	pub    Publisher
	log    *slog.Logger
	inbox  *inbox
	client *modbus.Client
	props  []*propState
	// state is the device's state as last seen ("" before the first
	// read); published the state last published successfully.
	state, published string
	seq              uint64
}

// propState is a property and what the worker knows of it.
type propState struct {
	propConfig
	next time.Time // when to read it next
	// last is the value last published, at lastAt; has says there is one.
	last   string
	lastAt time.Time
	has    bool
	// written is what the last write put in the registers and the value it
	// came from: while the registers hold exactly that, the property
	// reports the desired value as given ("21.50" stays "21.50"), so that
	// it matches the desired value and the delta ends.
	written      *raw
	writtenValue string
	// wroteAt is when writtenValue was last written: the same desired
	// value is not written again within a collect cycle.
	wroteAt time.Time
	// lastErr is the last read or write error logged, to log each new
	// error once instead of every cycle.
	lastErr string
}

func newWorker(cfg deviceConfig, pub Publisher, log *slog.Logger) (*worker, error) {
	c, err := modbus.NewClient(modbus.ClientConfig{Addr: cfg.addr, Timeout: cfg.timeout})
	if err != nil {
		return nil, err
	}
	w := &worker{cfg: cfg, pub: pub, client: c, inbox: newInbox(),
		log: log.With(slog.String("device", cfg.id.String()), slog.String("addr", cfg.addr))}
	for _, p := range cfg.props {
		w.props = append(w.props, &propState{propConfig: p})
	}
	return w, nil
}

// run serves the device until ctx ends.
func (w *worker) run(ctx context.Context) {
	defer w.client.Close()
	w.log.Info("modbus device served", slog.Int("properties", len(w.props)))
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.inbox.kick:
			desired, resend := w.inbox.take()
			if resend {
				w.resend()
			}
			if len(desired) > 0 {
				w.write(ctx, desired)
			}
		case <-timer.C:
			w.poll(ctx, time.Now())
		}
		timer.Reset(time.Until(w.nextDue()))
	}
}

func (w *worker) nextDue() time.Time {
	if len(w.props) == 0 {
		return time.Now().Add(time.Hour)
	}
	next := w.props[0].next
	for _, p := range w.props[1:] {
		if p.next.Before(next) {
			next = p.next
		}
	}
	return next
}

// poll reads the properties due at now and publishes what changed or is
// due for a report, then the state if it changed.
func (w *worker) poll(ctx context.Context, now time.Time) {
	update := map[string]*mqtt.MsgTwin{}
	reached, unreachable := false, false
	for _, p := range w.props {
		if p.next.After(now) {
			continue
		}
		p.next = p.next.Add(p.collectCycle)
		if p.next.Before(now) {
			p.next = now.Add(p.collectCycle)
		}
		if unreachable {
			continue // one failed connection per cycle is enough
		}
		v, err := w.read(ctx, p)
		if err != nil {
			if modbus.Unreachable(err) {
				unreachable = true
				w.logErr(p, "modbus device unreachable", err)
			} else {
				reached = true
				w.logErr(p, "modbus read failed", err)
			}
			continue
		}
		reached = true
		p.lastErr = ""
		// Due for a report: a new value, or reportCycle since the last one
		// (give or take half a collect cycle of timer jitter).
		if !p.has || v != p.last || now.Add(p.collectCycle/2).Sub(p.lastAt) >= p.reportCycle {
			w.add(update, p, v, now)
		}
	}
	w.publishUpdate(update, now)
	switch {
	case reached:
		w.setState(mqtt.StateOnline)
	case unreachable:
		w.setState(mqtt.StateOffline)
	}
}

// read reads one property and returns its value.
func (w *worker) read(ctx context.Context, p *propState) (string, error) {
	var r raw
	var err error
	switch p.register {
	case CoilRegister:
		r.bits, err = w.client.ReadCoils(ctx, p.slaveID, p.offset, p.limit)
	case DiscreteInputRegister:
		r.bits, err = w.client.ReadDiscreteInputs(ctx, p.slaveID, p.offset, p.limit)
	case HoldingRegister:
		r.regs, err = w.client.ReadHoldingRegisters(ctx, p.slaveID, p.offset, p.limit)
	case InputRegister:
		r.regs, err = w.client.ReadInputRegisters(ctx, p.slaveID, p.offset, p.limit)
	}
	if err != nil {
		return "", err
	}
	if p.written != nil {
		if p.written.equal(r) {
			return p.writtenValue, nil
		}
		// Changed on the device since: report it as read.
		p.written = nil
	}
	return p.decode(r)
}

// write writes the desired values of writable properties, reads each back
// and publishes what the device holds.
func (w *worker) write(ctx context.Context, desired map[string]string) {
	now := time.Now()
	names := make([]string, 0, len(desired))
	for name := range desired {
		names = append(names, name)
	}
	slices.Sort(names)
	update := map[string]*mqtt.MsgTwin{}
	reached := false
	for _, name := range names {
		value := desired[name]
		p := w.prop(name)
		if p == nil || !p.writable {
			// Not ours to write: no visitor, ReadOnly, or a read-only table.
			continue
		}
		if p.written != nil && p.writtenValue == value && now.Sub(p.wroteAt) < p.collectCycle {
			continue // written a moment ago; the read back is on its way
		}
		r, err := p.encode(value)
		if err != nil {
			w.logErr(p, "desired value cannot be written", err)
			p.written, p.writtenValue, p.wroteAt = nil, value, now
			continue
		}
		if err := w.writeRaw(ctx, p, r); err != nil {
			if modbus.Unreachable(err) {
				w.logErr(p, "modbus device unreachable", err)
				w.setState(mqtt.StateOffline)
				break
			}
			reached = true
			w.logErr(p, "modbus write failed", err)
			continue
		}
		reached = true
		p.written, p.writtenValue, p.wroteAt = &r, value, now
		w.log.Info("desired value written", slog.String("property", name), slog.String("value", value))
		v, err := w.read(ctx, p)
		if err != nil {
			w.logErr(p, "modbus read back failed", err)
			continue
		}
		p.lastErr = ""
		w.add(update, p, v, time.Now())
	}
	w.publishUpdate(update, time.Now())
	if reached {
		w.setState(mqtt.StateOnline)
	}
}

func (w *worker) writeRaw(ctx context.Context, p *propState, r raw) error {
	switch {
	case p.register == CoilRegister && len(r.bits) == 1:
		return w.client.WriteSingleCoil(ctx, p.slaveID, p.offset, r.bits[0])
	case p.register == CoilRegister:
		return w.client.WriteMultipleCoils(ctx, p.slaveID, p.offset, r.bits)
	case len(r.regs) == 1:
		return w.client.WriteSingleRegister(ctx, p.slaveID, p.offset, r.regs[0])
	default:
		return w.client.WriteMultipleRegisters(ctx, p.slaveID, p.offset, r.regs)
	}
}

func (w *worker) prop(name string) *propState {
	for _, p := range w.props {
		if p.name == name {
			return p
		}
	}
	return nil
}

func (w *worker) logErr(p *propState, msg string, err error) {
	if s := err.Error(); s != p.lastErr {
		p.lastErr = s
		w.log.Warn(msg, slog.String("property", p.name), slog.Any("err", err))
	}
}

// add puts a property's actual value into a twin update.
func (w *worker) add(update map[string]*mqtt.MsgTwin, p *propState, v string, at time.Time) {
	p.last, p.lastAt, p.has = v, at, false // has is set once published
	update[p.name] = &mqtt.MsgTwin{
		Actual:   &mqtt.TwinValue{Value: &v, Metadata: &mqtt.ValueMetadata{Timestamp: at.UnixMilli()}},
		Metadata: &mqtt.TypeMetadata{Type: strings.ToLower(string(p.typ))},
	}
}

// publishUpdate publishes the actual values on twin/update; a property
// whose value could not be published is published again at its next read.
func (w *worker) publishUpdate(update map[string]*mqtt.MsgTwin, now time.Time) {
	if len(update) == 0 {
		return
	}
	msg := mqtt.TwinUpdate{BaseMessage: w.base(now), Twin: update}
	err := w.publish(mqtt.KindTwinUpdate, msg)
	for name := range update {
		if p := w.prop(name); p != nil {
			p.has = err == nil
		}
	}
	if err != nil {
		w.log.Debug("twin update not published", slog.Any("err", err))
	}
}

// setState records the device's state and publishes it on state/update
// when it differs from the one last published.
func (w *worker) setState(s string) {
	if s != w.state {
		w.log.Info("modbus device state", slog.String("state", s))
	}
	w.state = s
	if w.state == w.published {
		return
	}
	if err := w.publish(mqtt.KindStateUpdate, mqtt.StateUpdate{BaseMessage: w.base(time.Now()), State: s}); err != nil {
		w.log.Debug("state not published", slog.Any("err", err))
		return
	}
	w.published = s
}

// resend publishes the state and every value again, after the broker
// connection was (re)opened: what was published while it was down is lost,
// and a restarted edge has forgotten it.
func (w *worker) resend() {
	w.published = ""
	if w.state != "" {
		w.setState(w.state)
	}
	now := time.Now()
	update := map[string]*mqtt.MsgTwin{}
	for _, p := range w.props {
		if !p.lastAt.IsZero() {
			w.add(update, p, p.last, now)
		}
	}
	w.publishUpdate(update, now)
}

func (w *worker) base(now time.Time) mqtt.BaseMessage {
	w.seq++
	return mqtt.BaseMessage{EventID: "modbus-" + w.cfg.id.Name + "-" + strconv.FormatUint(w.seq, 10), Timestamp: now.UnixMilli()}
}

func (w *worker) publish(kind mqtt.Kind, payload any) error {
	b, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	if w.pub == nil {
		return errors.New("no publisher")
	}
	return w.pub.Publish(mqtt.DeviceTopic(kind, w.cfg.id).String(), b)
}
