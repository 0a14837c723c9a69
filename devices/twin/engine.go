package twin

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/tether-edge/tether/devices/mqtt"
)

// Input is one event for the engine: DeviceUpserted, DeviceRestored,
// DeviceRemoved, TwinUpdate, TwinGet, StateUpdate, MembershipGet,
// BadRequest, Republish or Flush.
type Input interface{ input() }

// DeviceUpserted: the cloud created or changed a device bound to this node.
type DeviceUpserted struct {
	Device mqtt.DeviceID
	Model  Model
	// Desired maps property names to the cloud's desired (expected) values.
	// Only ReadWrite properties have one.
	Desired map[string]string
	// Version orders the cloud's updates of the device (its generation or
	// resourceVersion); an upsert older than the last one is ignored. It is
	// the cloud part of the expected values' versions.
	Version int64
}

// DeviceRestored: a device the engine does not hold yet, as the cloud last
// sent it (DeviceUpserted), with the twin the edge saved of it before
// (Engine.Snapshot, kept across a restart). It applies as a DeviceUpserted
// whose previous twin was Saved: reported values, state and last online
// time carry over for properties whose type did not change. The saved
// expected values, including those set at the edge, carry over too when
// Saved.Version equals Version (the cloud has not changed the device
// since); otherwise the cloud's desired values apply. It publishes
// membership/updated and, if some expected value differs from the actual
// one, the delta.
type DeviceRestored struct {
	DeviceUpserted
	Saved Saved
}

// DeviceRemoved: the device is gone or no longer bound to this node.
type DeviceRemoved struct {
	Device mqtt.DeviceID
}

// TwinUpdate: a decoded twin/update from a device, mapper or app. Actual
// values are reports; expected values set the desired value at the edge.
type TwinUpdate struct {
	Device mqtt.DeviceID
	Msg    mqtt.TwinUpdate
}

// TwinGet: a twin/get request.
type TwinGet struct {
	Device  mqtt.DeviceID
	EventID string
}

// StateUpdate: a decoded state/update.
type StateUpdate struct {
	Device  mqtt.DeviceID
	EventID string
	State   string
}

// MembershipGet: a membership/get request for this node.
type MembershipGet struct {
	EventID string
}

// BadRequest: a request on Topic whose payload did not decode (Err says
// why). The engine answers it with a 400 on the topic's result topic.
type BadRequest struct {
	Topic mqtt.Topic
	Err   error
}

// Republish: the MQTT connection to the broker opened or came back, and
// what was published while it was down is lost. The engine publishes
// membership/updated listing every device as added (KubeEdge mappers treat
// an added device they know as an update), RepublishChunk devices per
// message, and the delta of every device whose expected values differ from
// the actual ones.
type Republish struct{}

// Flush asks for the status to send to the cloud: one Status per device
// whose reported values or state changed since the last Flush, and the
// devices whose twin changed at all (Output.Changed) for the caller to
// save.
type Flush struct{}

func (DeviceUpserted) input() {}
func (DeviceRestored) input() {}
func (DeviceRemoved) input()  {}
func (TwinUpdate) input()     {}
func (TwinGet) input()        {}
func (StateUpdate) input()    {}
func (MembershipGet) input()  {}
func (BadRequest) input()     {}
func (Republish) input()      {}
func (Flush) input()          {}

// Output is what the IO loop does after an input.
type Output struct {
	// Publish lists MQTT publications, in order.
	Publish []Publication
	// AfterSave is set when Publish answers a change that must be durable
	// before anyone is told of it: an accepted twin/update (its result,
	// document and delta) or a state/update that changed the state. The
	// caller holds Publish until the twins of the next Flush's Changed
	// are saved (committed), then publishes it, in order with the others
	// held; a device told that its report was taken can count on it
	// surviving a crash.
	AfterSave bool
	// Status lists the status to send to the cloud (only after Flush).
	Status []Status
	// Changed lists, sorted, the devices whose twin (values, versions,
	// state) changed since the last Flush, for the caller to save with
	// Snapshot (only after Flush). Removed devices are not listed.
	Changed []mqtt.DeviceID
	// Err says why the input was refused, in whole or in part; the error
	// result among Publish already tells the device. Nil when applied.
	Err error
}

// Publication is one MQTT message to publish.
type Publication struct {
	Topic   mqtt.Topic
	Payload []byte
}

// Status is a device's status for the cloud, coalesced: the latest value
// of each property reported since the last Flush, sorted by name.
type Status struct {
	Device   mqtt.DeviceID
	Reported []Reported
	// State is set when the state changed since the last Flush.
	State string
	// LastOnline (ms) is when the device last went online; 0 if never.
	LastOnline int64
}

// Reported is one property's reported value.
type Reported struct {
	Name  string
	Value string
	// Timestamp (ms) of the value: the device's if it gave one, else when
	// the edge received it.
	Timestamp int64
	// ObservedDesired is the expected value the property had when the
	// value was reported; nil if it had none.
	ObservedDesired *string
}

// Engine is the device twin of one edge node: per device its model, desired
// and reported values with their versions and timestamps, and its state.
// It does no IO, takes no locks and reads no clock: the time comes with each
// Step. It is not safe for concurrent use; one loop owns it.
type Engine struct {
	node    string
	devices map[mqtt.DeviceID]*device
	// dirty holds the devices with status not yet flushed.
	dirty map[mqtt.DeviceID]*pending
	// unsaved holds the devices whose twin changed since the last Flush.
	unsaved map[mqtt.DeviceID]bool
	// seq numbers the events the engine originates (delta, document,
	// membership/updated): their event_id is "twin-<seq>".
	seq uint64
}

type device struct {
	id         mqtt.DeviceID
	version    int64
	props      map[string]*prop
	names      []string // sorted names of props
	state      string
	lastOnline int64
}

type prop struct {
	Property
	desired, reported       *value
	desiredVer, reportedVer mqtt.TwinVersion
}

type value struct {
	v  string
	ts int64
	// observed is, for a reported value, the expected value when it was
	// reported.
	observed *string
}

type pending struct {
	props map[string]bool
	state bool
}

// New returns an engine for the node with the given name.
func New(node string) *Engine {
	return &Engine{
		node:    node,
		devices: make(map[mqtt.DeviceID]*device),
		dirty:   make(map[mqtt.DeviceID]*pending),
		unsaved: make(map[mqtt.DeviceID]bool),
	}
}

// Step applies one input at time now and returns what to do.
func (e *Engine) Step(now time.Time, in Input) Output {
	ms := now.UnixMilli()
	switch in := in.(type) {
	case DeviceUpserted:
		return e.upsert(ms, in, nil)
	case DeviceRestored:
		return e.upsert(ms, in.DeviceUpserted, &in.Saved)
	case DeviceRemoved:
		return e.remove(ms, in)
	case TwinUpdate:
		return e.twinUpdate(ms, in)
	case TwinGet:
		return e.twinGet(ms, in)
	case StateUpdate:
		return e.stateUpdate(ms, in)
	case MembershipGet:
		return e.membershipGet(ms, in)
	case BadRequest:
		return e.badRequest(ms, in)
	case Republish:
		return e.republish(ms)
	case Flush:
		return Output{Status: e.flush(), Changed: e.changed()}
	}
	return Output{Err: fmt.Errorf("twin: unknown input %T", in)}
}

func (e *Engine) nextID() string {
	e.seq++
	return "twin-" + strconv.FormatUint(e.seq, 10)
}

// upsert applies a DeviceUpserted, or a DeviceRestored when saved is set.
func (e *Engine) upsert(now int64, in DeviceUpserted, saved *Saved) Output {
	if err := in.Device.Validate(); err != nil {
		return Output{Err: fmt.Errorf("upsert device: %w", err)}
	}
	if err := in.Model.Validate(); err != nil {
		return Output{Err: fmt.Errorf("upsert device %s: %w", in.Device, err)}
	}
	old := e.devices[in.Device]
	isNew := old == nil
	// keepDesired: restoring, and the cloud has not changed the device
	// since the twin was saved, so the saved expected values stand.
	keepDesired := false
	if saved != nil {
		if old != nil {
			return Output{Err: fmt.Errorf("restore device %s: already held, ignored", in.Device)}
		}
		old = fromSaved(in.Device, saved)
		keepDesired = saved.Version == in.Version
	} else if old != nil && in.Version < old.version {
		return Output{Err: fmt.Errorf("upsert device %s: version %d older than %d, ignored", in.Device, in.Version, old.version)}
	}
	d := &device{id: in.Device, version: in.Version, props: make(map[string]*prop, len(in.Model.Properties)), state: mqtt.StateUnknown}
	if old != nil {
		d.state, d.lastOnline = old.state, old.lastOnline
	}
	var errs []error
	doc := map[string]*mqtt.TwinDoc{}
	for _, mp := range in.Model.Properties {
		p := &prop{Property: mp}
		// Keep what the edge knows of a property whose type did not change.
		if old != nil {
			if op := old.props[mp.Name]; op != nil && op.Type == mp.Type {
				p.desired, p.desiredVer = op.desired, op.desiredVer
				p.reported, p.reportedVer = op.reported, op.reportedVer
			}
		}
		last := p.msg()
		want, ok := in.Desired[mp.Name]
		switch {
		case keepDesired && p.desired != nil && mp.Access == ReadWrite && p.checkValue(p.desired.v) == nil:
			// Restored as saved; last is the restored value, so no document.
		case ok && mp.Access == ReadOnly:
			errs = append(errs, fmt.Errorf("property %q is ReadOnly: desired value ignored", mp.Name))
			p.desired = nil
		case ok:
			if err := p.checkValue(want); err != nil {
				errs = append(errs, fmt.Errorf("property %q: desired %w: ignored", mp.Name, err))
				break
			}
			if p.desired == nil || p.desired.v != want {
				p.desired = &value{v: want, ts: now}
				p.desiredVer = mqtt.TwinVersion{Cloud: in.Version, Edge: p.desiredVer.Edge}
			}
		default:
			p.desired = nil
		}
		if !sameDesired(last, p) {
			doc[mp.Name] = &mqtt.TwinDoc{Last: last, Current: p.msg()}
		}
		d.props[mp.Name] = p
		d.names = append(d.names, mp.Name)
	}
	for name := range in.Desired {
		if d.props[name] == nil {
			errs = append(errs, fmt.Errorf("property %q is not in the model: desired value ignored", name))
		}
	}
	slices.Sort(d.names)
	e.devices[in.Device] = d
	e.unsaved[in.Device] = true
	if pd := e.dirty[in.Device]; pd != nil {
		for name := range pd.props {
			if d.props[name] == nil || d.props[name].reported == nil {
				delete(pd.props, name)
			}
		}
	}

	var out Output
	if len(errs) > 0 {
		slices.SortFunc(errs, func(a, b error) int { return cmp.Compare(a.Error(), b.Error()) })
		out.Err = fmt.Errorf("upsert device %s: %w", in.Device, errors.Join(errs...))
	}
	if isNew {
		out.Publish = append(out.Publish, e.publish(mqtt.NodeTopic(mqtt.KindMembershipUpdated, e.node), mqtt.MembershipUpdated{
			BaseMessage:    mqtt.BaseMessage{EventID: e.nextID(), Timestamp: now},
			AddedDevices:   []mqtt.Device{d.member()},
			RemovedDevices: []mqtt.Device{},
		}))
	}
	if len(doc) > 0 {
		id := e.nextID()
		out.Publish = append(out.Publish, e.publish(mqtt.DeviceTopic(mqtt.KindTwinUpdateDocument, d.id), mqtt.TwinDocument{
			BaseMessage: mqtt.BaseMessage{EventID: id, Timestamp: now},
			Twin:        doc,
		}))
	}
	if len(doc) > 0 || saved != nil {
		if p, ok := e.delta(now, d); ok {
			out.Publish = append(out.Publish, p)
		}
	}
	return out
}

func sameDesired(last *mqtt.MsgTwin, p *prop) bool {
	if last == nil || last.Expected == nil {
		return p.desired == nil
	}
	return p.desired != nil && *last.Expected.Value == p.desired.v
}

func (e *Engine) remove(now int64, in DeviceRemoved) Output {
	d := e.devices[in.Device]
	if d == nil {
		return Output{}
	}
	delete(e.devices, in.Device)
	delete(e.dirty, in.Device)
	delete(e.unsaved, in.Device)
	return Output{Publish: []Publication{e.publish(mqtt.NodeTopic(mqtt.KindMembershipUpdated, e.node), mqtt.MembershipUpdated{
		BaseMessage:    mqtt.BaseMessage{EventID: e.nextID(), Timestamp: now},
		AddedDevices:   []mqtt.Device{},
		RemovedDevices: []mqtt.Device{{ID: d.id.String(), Name: d.id.Name}},
	})}}
}

// twinUpdate validates every property of the update before it applies any:
// a bad one refuses the whole update with a 400 and changes nothing.
func (e *Engine) twinUpdate(now int64, in TwinUpdate) Output {
	resultTopic := mqtt.DeviceTopic(mqtt.KindTwinUpdateResult, in.Device)
	d := e.devices[in.Device]
	if d == nil {
		return e.fail(now, resultTopic, in.Msg.EventID, mqtt.CodeNotFound, fmt.Sprintf("device %s not found", in.Device))
	}
	if len(in.Msg.Twin) == 0 {
		return e.fail(now, resultTopic, in.Msg.EventID, mqtt.CodeBadRequest, "update has no twin")
	}
	names := make([]string, 0, len(in.Msg.Twin))
	for name := range in.Msg.Twin {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if reason := d.checkUpdate(name, in.Msg.Twin[name]); reason != "" {
			return e.fail(now, resultTopic, in.Msg.EventID, mqtt.CodeBadRequest, reason)
		}
	}

	result := make(map[string]*mqtt.MsgTwin, len(names))
	doc := make(map[string]*mqtt.TwinDoc, len(names))
	for _, name := range names {
		mt, p := in.Msg.Twin[name], d.props[name]
		last := p.msg()
		if mt.Expected != nil {
			p.desired = &value{v: *mt.Expected.Value, ts: now}
			p.desiredVer.Edge++
		}
		if mt.Actual != nil {
			ts := now
			if mt.Actual.Metadata != nil && mt.Actual.Metadata.Timestamp > 0 {
				ts = mt.Actual.Metadata.Timestamp
			}
			p.reported = &value{v: *mt.Actual.Value, ts: ts}
			if p.desired != nil {
				obs := p.desired.v
				p.reported.observed = &obs
			}
			p.reportedVer.Edge++
			e.markDirty(d.id).props[name] = true
		}
		cur := p.msg()
		result[name] = cur
		doc[name] = &mqtt.TwinDoc{Last: last, Current: cur}
	}
	e.unsaved[d.id] = true
	base := mqtt.BaseMessage{EventID: in.Msg.EventID, Timestamp: now}
	out := Output{AfterSave: true, Publish: []Publication{
		e.publish(resultTopic, mqtt.TwinUpdate{BaseMessage: base, Twin: result}),
		e.publish(mqtt.DeviceTopic(mqtt.KindTwinUpdateDocument, d.id), mqtt.TwinDocument{BaseMessage: base, Twin: doc}),
	}}
	if p, ok := e.delta(now, d); ok {
		out.Publish = append(out.Publish, p)
	}
	return out
}

// checkUpdate returns why the update of one property is refused, or "".
// As in KubeEdge, a device or mapper may report the actual value of any
// property; setting an expected value is refused for a ReadOnly one.
func (d *device) checkUpdate(name string, mt *mqtt.MsgTwin) string {
	p := d.props[name]
	if p == nil {
		return fmt.Sprintf("property %q is not in the device model", name)
	}
	if mt == nil || (mt.Expected == nil && mt.Actual == nil) {
		return fmt.Sprintf("property %q has neither expected nor actual", name)
	}
	if mt.Expected != nil {
		if p.Access == ReadOnly {
			return fmt.Sprintf("property %q is ReadOnly: its expected value cannot be set", name)
		}
		if mt.Expected.Value == nil {
			return fmt.Sprintf("property %q: expected has no value", name)
		}
		if err := p.checkValue(*mt.Expected.Value); err != nil {
			return fmt.Sprintf("property %q: expected %v", name, err)
		}
	}
	if mt.Actual != nil {
		if mt.Actual.Value == nil {
			return fmt.Sprintf("property %q: actual has no value", name)
		}
		if err := p.checkValue(*mt.Actual.Value); err != nil {
			return fmt.Sprintf("property %q: actual %v", name, err)
		}
	}
	return ""
}

func (e *Engine) twinGet(now int64, in TwinGet) Output {
	topic := mqtt.DeviceTopic(mqtt.KindTwinGetResult, in.Device)
	d := e.devices[in.Device]
	if d == nil {
		return e.fail(now, topic, in.EventID, mqtt.CodeNotFound, fmt.Sprintf("device %s not found", in.Device))
	}
	return Output{Publish: []Publication{e.publish(topic, mqtt.TwinUpdate{
		BaseMessage: mqtt.BaseMessage{EventID: in.EventID, Timestamp: now},
		Twin:        d.twin(),
	})}}
}

func (e *Engine) stateUpdate(now int64, in StateUpdate) Output {
	topic := mqtt.DeviceTopic(mqtt.KindStateUpdateResult, in.Device)
	d := e.devices[in.Device]
	if d == nil {
		return e.fail(now, topic, in.EventID, mqtt.CodeNotFound, fmt.Sprintf("device %s not found", in.Device))
	}
	if !mqtt.ValidState(in.State) {
		return e.fail(now, topic, in.EventID, mqtt.CodeBadRequest,
			fmt.Sprintf("state %q is none of ok, online, offline, unhealthy, unknown", in.State))
	}
	changed := false
	if in.State == mqtt.StateOnline && d.state != mqtt.StateOnline {
		d.lastOnline = now
		changed = true
	}
	if in.State != d.state {
		d.state = in.State
		e.markDirty(d.id).state = true
		changed = true
	}
	if changed {
		e.unsaved[d.id] = true
	}
	return Output{AfterSave: changed, Publish: []Publication{e.publish(topic, mqtt.StateUpdate{
		BaseMessage: mqtt.BaseMessage{EventID: in.EventID, Timestamp: now},
		State:       d.state,
	})}}
}

func (e *Engine) membershipGet(now int64, in MembershipGet) Output {
	ids := e.sortedIDs()
	devs := make([]mqtt.Device, 0, len(ids))
	for _, id := range ids {
		devs = append(devs, e.devices[id].member())
	}
	return Output{Publish: []Publication{e.publish(mqtt.NodeTopic(mqtt.KindMembershipGetResult, e.node), mqtt.MembershipGetResult{
		BaseMessage: mqtt.BaseMessage{EventID: in.EventID, Timestamp: now},
		Devices:     devs,
	})}}
}

// RepublishChunk is the most devices one membership/updated of Republish
// lists, so that a node with many devices does not make one message larger
// than a broker takes.
const RepublishChunk = 100

func (e *Engine) republish(now int64) Output {
	if len(e.devices) == 0 {
		return Output{}
	}
	ids := e.sortedIDs()
	var out Output
	for chunk := range slices.Chunk(ids, RepublishChunk) {
		added := make([]mqtt.Device, 0, len(chunk))
		for _, id := range chunk {
			added = append(added, e.devices[id].member())
		}
		out.Publish = append(out.Publish, e.publish(mqtt.NodeTopic(mqtt.KindMembershipUpdated, e.node), mqtt.MembershipUpdated{
			BaseMessage:    mqtt.BaseMessage{EventID: e.nextID(), Timestamp: now},
			AddedDevices:   added,
			RemovedDevices: []mqtt.Device{},
		}))
	}
	for _, id := range ids {
		if p, ok := e.delta(now, e.devices[id]); ok {
			out.Publish = append(out.Publish, p)
		}
	}
	return out
}

func (e *Engine) sortedIDs() []mqtt.DeviceID {
	ids := make([]mqtt.DeviceID, 0, len(e.devices))
	for id := range e.devices {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, cmpID)
	return ids
}

func (e *Engine) badRequest(now int64, in BadRequest) Output {
	rk := in.Topic.Kind.Result()
	if rk == mqtt.KindInvalid {
		return Output{Err: fmt.Errorf("bad request on %s: %w", in.Topic, in.Err)}
	}
	t := in.Topic
	t.Kind = rk
	return e.fail(now, t, "", mqtt.CodeBadRequest, in.Err.Error())
}

func (e *Engine) fail(now int64, topic mqtt.Topic, eventID string, code int, reason string) Output {
	return Output{
		Publish: []Publication{e.publish(topic, mqtt.ErrorResult{
			BaseMessage: mqtt.BaseMessage{EventID: eventID, Timestamp: now},
			Code:        code,
			Reason:      reason,
		})},
		Err: fmt.Errorf("%s: %d %s", topic, code, reason),
	}
}

// delta builds twin/update/delta when some expected value differs from the
// actual one.
func (e *Engine) delta(now int64, d *device) (Publication, bool) {
	var delta map[string]string
	for _, name := range d.names {
		p := d.props[name]
		if p.desired != nil && (p.reported == nil || p.reported.v != p.desired.v) {
			if delta == nil {
				delta = make(map[string]string)
			}
			delta[name] = p.desired.v
		}
	}
	if delta == nil {
		return Publication{}, false
	}
	return e.publish(mqtt.DeviceTopic(mqtt.KindTwinUpdateDelta, d.id), mqtt.TwinDelta{
		BaseMessage: mqtt.BaseMessage{EventID: e.nextID(), Timestamp: now},
		Twin:        d.twin(),
		Delta:       delta,
	}), true
}

func (e *Engine) markDirty(id mqtt.DeviceID) *pending {
	p := e.dirty[id]
	if p == nil {
		p = &pending{props: make(map[string]bool)}
		e.dirty[id] = p
	}
	return p
}

func (e *Engine) flush() []Status {
	if len(e.dirty) == 0 {
		return nil
	}
	ids := make([]mqtt.DeviceID, 0, len(e.dirty))
	for id := range e.dirty {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, cmpID)
	out := make([]Status, 0, len(ids))
	for _, id := range ids {
		pd, d := e.dirty[id], e.devices[id]
		st := Status{Device: id, LastOnline: d.lastOnline}
		if pd.state {
			st.State = d.state
		}
		for _, name := range d.names {
			if p := d.props[name]; pd.props[name] && p.reported != nil {
				st.Reported = append(st.Reported, Reported{Name: name, Value: p.reported.v, Timestamp: p.reported.ts,
					ObservedDesired: p.reported.observed})
			}
		}
		if st.State != "" || len(st.Reported) > 0 {
			out = append(out, st)
		}
	}
	clear(e.dirty)
	return out
}

func (e *Engine) changed() []mqtt.DeviceID {
	if len(e.unsaved) == 0 {
		return nil
	}
	ids := make([]mqtt.DeviceID, 0, len(e.unsaved))
	for id := range e.unsaved {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, cmpID)
	clear(e.unsaved)
	return ids
}

// publish encodes a payload. The payload types hold only strings, numbers,
// maps and slices, so encoding cannot fail.
func (e *Engine) publish(t mqtt.Topic, payload any) Publication {
	b, err := json.Marshal(payload)
	if err != nil {
		panic(fmt.Sprintf("twin: encode %T: %v", payload, err))
	}
	return Publication{Topic: t, Payload: b}
}

// msg is the property as a twin on the wire, or nil when it has neither an
// expected nor an actual value.
func (p *prop) msg() *mqtt.MsgTwin {
	if p.desired == nil && p.reported == nil {
		return nil
	}
	t := &mqtt.MsgTwin{Metadata: &mqtt.TypeMetadata{Type: p.Type.wire()}}
	if p.desired != nil {
		v, ver := p.desired.v, p.desiredVer
		t.Expected = &mqtt.TwinValue{Value: &v, Metadata: &mqtt.ValueMetadata{Timestamp: p.desired.ts}}
		t.ExpectedVersion = &ver
	}
	if p.reported != nil {
		v, ver := p.reported.v, p.reportedVer
		t.Actual = &mqtt.TwinValue{Value: &v, Metadata: &mqtt.ValueMetadata{Timestamp: p.reported.ts}}
		t.ActualVersion = &ver
	}
	return t
}

// twin is every property of the device on the wire; properties with no
// value yet carry their type only.
func (d *device) twin() map[string]*mqtt.MsgTwin {
	tw := make(map[string]*mqtt.MsgTwin, len(d.names))
	for _, name := range d.names {
		p := d.props[name]
		m := p.msg()
		if m == nil {
			m = &mqtt.MsgTwin{Metadata: &mqtt.TypeMetadata{Type: p.Type.wire()}}
		}
		tw[name] = m
	}
	return tw
}

func (d *device) member() mqtt.Device {
	return mqtt.Device{ID: d.id.String(), Name: d.id.Name, State: d.state, Twin: d.twin()}
}

func cmpID(a, b mqtt.DeviceID) int {
	if c := cmp.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return cmp.Compare(a.Name, b.Name)
}
