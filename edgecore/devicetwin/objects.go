package devicetwin

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"time"

	devicesapi "github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/devices/mqtt"
	"github.com/tether-edge/tether/devices/twin"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// entry is what the component knows of one Device the store holds.
type entry struct {
	uid string
	// inEngine says whether the engine holds the device; applied is the
	// upsert it last got.
	inEngine bool
	applied  twin.DeviceUpserted
	// report names the properties whose reported values go to the cloud.
	report map[string]bool
	// model is the "<ns>/<name>" of the device's model ("" if the device
	// is unusable whatever its model): its key in Twin.byModel.
	model string
	// waiting says why the device is not in the engine ("" when it is);
	// logged once per reason.
	waiting string
}

// wanted is a Device of the store, ready for the engine or not.
type wanted struct {
	uid    string
	upsert twin.DeviceUpserted
	report map[string]bool
	model  string // as in entry
	// why is set when the device cannot be served yet.
	why string
}

// changes is what the agent reported changed in the store and the
// component has not read yet.
type changes struct {
	// all: every device and model is to be read again.
	all bool
	// devices and models hold the UIDs of the Devices and DeviceModels
	// upserted or deleted.
	devices, models map[string]bool
}

// add adds the devices and models among refs and reports whether any was.
func (c *changes) add(refs []protocol.ObjectRef) bool {
	added := false
	for _, r := range refs {
		var m *map[string]bool
		switch r.Kind {
		case protocol.KindDevice:
			m = &c.devices
		case protocol.KindDeviceModel:
			m = &c.models
		default:
			continue
		}
		if *m == nil {
			*m = map[string]bool{}
		}
		(*m)[r.UID] = true
		added = true
	}
	return added
}

// syncObjects compares the store's devices that c names (all of them with
// c.all) with what the engine holds, and upserts, restores and removes
// devices to match. An upsert is made only when the model, the desired
// values or the version changed: Device objects also change when the cloud
// writes their status.
func (t *Twin) syncObjects(now time.Time, c changes) error {
	var (
		want map[mqtt.DeviceID]*wanted
		ids  map[mqtt.DeviceID]bool // the devices to compare: want's and maybe gone ones
	)
	err := t.db.View(func(tx *store.Tx) error {
		var err error
		if c.all {
			want, err = t.readDevices(tx)
			ids = make(map[mqtt.DeviceID]bool, len(want))
			for id := range t.devs {
				ids[id] = true
			}
			for id := range want {
				ids[id] = true
			}
			return err
		}
		want, ids, err = t.readChanged(tx, c)
		return err
	})
	if err != nil {
		return err
	}

	var gone []string // UIDs of devices no longer in the store: their twins go
	leaving := false  // a device leaves the engine but stays in the store
	for id := range ids {
		e, w := t.devs[id], want[id]
		if e == nil {
			continue
		}
		switch {
		case w == nil || w.uid != e.uid:
			gone = append(gone, e.uid)
		case e.inEngine && w.why != "":
			leaving = true
		}
	}
	if leaving {
		// Save the twins (and queue the statuses) of devices about to
		// leave the engine, so they come back as they were.
		t.flush(now)
	}
	var saves []func(*store.Tx) error
	for id := range ids {
		e, w := t.devs[id], want[id]
		if e == nil {
			continue
		}
		if w != nil && w.uid == e.uid && !(e.inEngine && w.why != "") {
			continue
		}
		if e.inEngine {
			if w != nil && w.uid == e.uid {
				snap, _ := t.engine.Snapshot(id)
				uid := e.uid
				saves = append(saves, func(tx *store.Tx) error { return tx.PutTwin(uid, &snap) })
			}
			t.publish(t.engine.Step(now, twin.DeviceRemoved{Device: id}).Publish)
			e.inEngine = false
		}
		if w == nil || w.uid != e.uid {
			t.setModel(id, e.model, "")
			delete(t.devs, id)
			delete(t.sent, e.uid)
		}
	}

	var restore []mqtt.DeviceID
	for id, w := range want {
		e := t.devs[id]
		if e == nil {
			e = &entry{uid: w.uid}
			t.devs[id] = e
		}
		e.report = w.report
		t.setModel(id, e.model, w.model)
		e.model = w.model
		if w.why != "" {
			if e.waiting != w.why {
				t.log.Warn("device waits", slog.String("device", id.String()), slog.String("reason", w.why))
			}
			e.waiting = w.why
			continue
		}
		if e.waiting != "" {
			t.log.Info("device ready", slog.String("device", id.String()))
			e.waiting = ""
		}
		if e.inEngine {
			if reflect.DeepEqual(e.applied, w.upsert) {
				continue
			}
			e.applied = w.upsert
			out := t.engine.Step(now, w.upsert)
			t.publish(out.Publish)
			if out.Err != nil {
				t.log.Warn("device upsert", slog.String("device", id.String()), slog.Any("err", out.Err))
			}
			t.changed(now)
			continue
		}
		restore = append(restore, id)
	}

	// Devices new to the engine: restored from their saved twin, if any.
	if len(restore) > 0 {
		saved := map[mqtt.DeviceID]*twin.Saved{}
		err := t.db.View(func(tx *store.Tx) error {
			for _, id := range restore {
				s, err := tx.Twin(t.devs[id].uid)
				if err != nil {
					return err
				}
				saved[id] = s
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, id := range restore {
			e, w := t.devs[id], want[id]
			var in twin.Input = w.upsert
			if s := saved[id]; s != nil {
				in = twin.DeviceRestored{DeviceUpserted: w.upsert, Saved: *s}
			}
			out := t.engine.Step(now, in)
			t.publish(out.Publish)
			if out.Err != nil {
				t.log.Warn("device upsert", slog.String("device", id.String()), slog.Any("err", out.Err))
			}
			e.inEngine, e.applied = true, w.upsert
			t.changed(now)
		}
	}

	if len(gone) > 0 || len(saves) > 0 || !t.cleaned {
		err := t.db.Update(func(tx *store.Tx) error {
			for _, uid := range gone {
				if err := tx.DeleteTwin(uid); err != nil {
					return err
				}
			}
			for _, s := range saves {
				if err := s(tx); err != nil {
					return err
				}
			}
			if t.cleaned {
				return nil
			}
			// Twins of devices deleted while edgecore was down.
			held := map[string]bool{}
			for _, e := range t.devs {
				held[e.uid] = true
			}
			var orphans []string
			if err := tx.ForEachTwin(func(uid string, _ *twin.Saved) error {
				if !held[uid] {
					orphans = append(orphans, uid)
				}
				return nil
			}); err != nil {
				return err
			}
			for _, uid := range orphans {
				if err := tx.DeleteTwin(uid); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("save twins: %w", err)
		}
		t.cleaned = true
	}
	return nil
}

// parsedModel is a DeviceModel of the store, decoded and checked.
type parsedModel struct {
	rv    string
	key   string // "<ns>/<name>"
	model *devicesapi.DeviceModel
	tm    twin.Model
	err   error // why the model cannot be used
}

// parsedDevice is a Device of the store, decoded and checked on its own
// (not against its model).
type parsedDevice struct {
	rv  string
	id  mqtt.DeviceID
	dev *devicesapi.Device
	why string // why the device cannot be served, whatever its model
}

// setModel moves device id from the devices of model from to those of
// model to in t.byModel ("" is none).
func (t *Twin) setModel(id mqtt.DeviceID, from, to string) {
	if from == to {
		return
	}
	if from != "" {
		delete(t.byModel[from], id)
		if len(t.byModel[from]) == 0 {
			delete(t.byModel, from)
		}
	}
	if to != "" {
		if t.byModel[to] == nil {
			t.byModel[to] = map[mqtt.DeviceID]bool{}
		}
		t.byModel[to][id] = true
	}
}

// readDevices reads every device and model of the store and builds the
// engine input of each device. Objects are decoded and checked once per
// resourceVersion (t.models and t.parsed cache them by UID).
func (t *Twin) readDevices(tx *store.Tx) (map[mqtt.DeviceID]*wanted, error) {
	models := map[string]*parsedModel{} // by "<ns>/<name>"
	seen := map[string]bool{}
	err := tx.ForEachObject(protocol.KindDeviceModel, func(o *protocol.Object) error {
		seen[o.UID] = true
		models[o.Namespace+"/"+o.Name] = t.parsedModel(o)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for uid := range t.models {
		if !seen[uid] {
			delete(t.models, uid)
		}
	}
	clear(seen)
	want := map[mqtt.DeviceID]*wanted{}
	err = tx.ForEachObject(protocol.KindDevice, func(o *protocol.Object) error {
		id := mqtt.DeviceID{Namespace: o.Namespace, Name: o.Name}
		if want[id] != nil {
			// Two UIDs under one name: the store is between a delete and
			// a create; keep the one seen first, the next sync settles it.
			return nil
		}
		seen[o.UID] = true
		want[id] = t.wantDevice(o, func(key string) *parsedModel { return models[key] })
		return nil
	})
	for uid := range t.parsed {
		if !seen[uid] {
			delete(t.parsed, uid)
		}
	}
	return want, err
}

// readChanged reads the devices and models c names, and builds the engine
// input of each device they concern: the devices named, and the devices
// of the models named (before and after the change). It returns them and
// the devices concerned; a device concerned but missing from want is gone
// from the store. A name held by two UIDs (between a delete and a create)
// resolves to the one the store's name index holds, the newer.
func (t *Twin) readChanged(tx *store.Tx, c changes) (map[mqtt.DeviceID]*wanted, map[mqtt.DeviceID]bool, error) {
	ids := map[mqtt.DeviceID]bool{}
	addModel := func(key string) {
		for id := range t.byModel[key] {
			ids[id] = true
		}
	}
	for uid := range c.models {
		if pm := t.models[uid]; pm != nil {
			addModel(pm.key)
		}
		o, err := tx.Object(protocol.KindDeviceModel, uid)
		if err != nil {
			return nil, nil, err
		}
		if o == nil {
			delete(t.models, uid)
			continue
		}
		addModel(o.Namespace + "/" + o.Name)
	}
	for uid := range c.devices {
		if pd := t.parsed[uid]; pd != nil {
			ids[pd.id] = true
		}
		o, err := tx.Object(protocol.KindDevice, uid)
		if err != nil {
			return nil, nil, err
		}
		if o == nil {
			delete(t.parsed, uid)
			continue
		}
		ids[mqtt.DeviceID{Namespace: o.Namespace, Name: o.Name}] = true
	}

	models := map[string]*parsedModel{} // by "<ns>/<name>", nil if none
	var merr error
	model := func(key string) *parsedModel {
		if pm, ok := models[key]; ok {
			return pm
		}
		ns, name, _ := strings.Cut(key, "/")
		o, err := tx.ObjectByName(protocol.KindDeviceModel, ns, name)
		if err != nil {
			merr = err
		}
		var pm *parsedModel
		if o != nil {
			pm = t.parsedModel(o)
		}
		models[key] = pm
		return pm
	}
	want := map[mqtt.DeviceID]*wanted{}
	for id := range ids {
		o, err := tx.ObjectByName(protocol.KindDevice, id.Namespace, id.Name)
		if err != nil {
			return nil, nil, err
		}
		if o != nil {
			want[id] = t.wantDevice(o, model)
		}
	}
	return want, ids, merr
}

// parsedModel returns the model o decoded and checked, from t.models if
// it holds o's resourceVersion.
func (t *Twin) parsedModel(o *protocol.Object) *parsedModel {
	pm := t.models[o.UID]
	if pm == nil || pm.rv != o.ResourceVersion {
		pm = parseModel(o)
		t.models[o.UID] = pm
	}
	return pm
}

// wantDevice builds the engine input of the store's device o, whose model
// model finds by "<ns>/<name>" (nil if the store has none). The device is
// decoded and checked once per resourceVersion (t.parsed).
func (t *Twin) wantDevice(o *protocol.Object, model func(key string) *parsedModel) *wanted {
	id := mqtt.DeviceID{Namespace: o.Namespace, Name: o.Name}
	pd := t.parsed[o.UID]
	if pd == nil || pd.rv != o.ResourceVersion {
		pd = t.parseDevice(id, o)
		t.parsed[o.UID] = pd
	}
	w := &wanted{uid: o.UID, report: map[string]bool{}, why: pd.why}
	if w.why != "" {
		return w
	}
	d := pd.dev
	ref := d.Spec.DeviceModelRef.Name
	w.model = o.Namespace + "/" + ref
	pm := model(w.model)
	switch {
	case pm == nil:
		w.why = fmt.Sprintf("model %s/%s is not on this node yet", o.Namespace, ref)
		return w
	case pm.err != nil:
		w.why = fmt.Sprintf("model %s/%s is invalid: %v", o.Namespace, ref, pm.err)
		return w
	}
	if t.log.Enabled(context.Background(), slog.LevelDebug) {
		if errs := devicesapi.ValidateDevice(d, pm.model); len(errs) > 0 {
			// Unknown properties and bad desired values: the engine
			// ignores them and says so when the device is upserted.
			t.log.Debug("device does not match its model", slog.String("device", id.String()), slog.Any("err", errs.ToAggregate()))
		}
	}
	w.upsert = twin.DeviceUpserted{Device: id, Model: pm.tm, Desired: map[string]string{}, Version: d.Generation}
	for _, p := range d.Spec.Properties {
		if p.Desired.Value != "" {
			w.upsert.Desired[p.Name] = p.Desired.Value
		}
		if p.ReportToCloud {
			w.report[p.Name] = true
		}
	}
	return w
}

func parseModel(o *protocol.Object) *parsedModel {
	pm := &parsedModel{rv: o.ResourceVersion, key: o.Namespace + "/" + o.Name, model: new(devicesapi.DeviceModel)}
	if pm.err = json.Unmarshal(o.Data, pm.model); pm.err != nil {
		return pm
	}
	if errs := devicesapi.ValidateDeviceModel(pm.model); len(errs) > 0 {
		pm.err = errs.ToAggregate()
		return pm
	}
	pm.tm, pm.err = toModel(pm.model)
	return pm
}

func (t *Twin) parseDevice(id mqtt.DeviceID, o *protocol.Object) *parsedDevice {
	pd := &parsedDevice{rv: o.ResourceVersion, id: id, dev: new(devicesapi.Device)}
	d := pd.dev
	if err := json.Unmarshal(o.Data, d); err != nil {
		pd.why = fmt.Sprintf("data does not decode: %v", err)
	} else if err := id.Validate(); err != nil {
		pd.why = err.Error()
	} else if d.Spec.NodeName != t.cfg.NodeName {
		pd.why = fmt.Sprintf("spec.nodeName is %q, not this node", d.Spec.NodeName)
	} else if errs := devicesapi.ValidateDevice(d, nil); len(errs) > 0 {
		pd.why = "invalid: " + errs.ToAggregate().Error()
	}
	return pd
}

// toModel converts a valid DeviceModel to the engine's model.
func toModel(m *devicesapi.DeviceModel) (twin.Model, error) {
	var tm twin.Model
	for _, p := range m.Spec.Properties {
		tp := twin.Property{Name: p.Name, Type: twin.Type(p.Type), Access: twin.ReadOnly}
		if p.Writable() {
			tp.Access = twin.ReadWrite
		}
		for _, b := range []struct {
			s   string
			dst **float64
		}{{p.Minimum, &tp.Min}, {p.Maximum, &tp.Max}} {
			if b.s == "" {
				continue
			}
			f, err := strconv.ParseFloat(b.s, 64)
			if err != nil {
				return tm, fmt.Errorf("property %s: bound %q: %w", p.Name, b.s, err)
			}
			*b.dst = &f
		}
		tm.Properties = append(tm.Properties, tp)
	}
	return tm, tm.Validate()
}
