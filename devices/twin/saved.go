package twin

import (
	"github.com/tether-edge/tether/devices/mqtt"
)

// Saved is what the edge keeps of a device's twin across restarts: the
// values with their timestamps and versions, the state and the last online
// time. Engine.Snapshot makes it; DeviceRestored puts it back. The model
// and the cloud's desired values are not in it: they come from the Device
// and DeviceModel objects the edge store holds.
type Saved struct {
	// Version is the Version of the last DeviceUpserted applied: the
	// expected values below belong to it.
	Version    int64
	State      string
	LastOnline int64
	// Props are the properties that have a value, sorted by Name.
	Props []SavedProp
}

// SavedProp is one property of a Saved twin.
type SavedProp struct {
	Name string
	// Type is the property's type when it was saved; a restore drops the
	// values of a property whose type changed since.
	Type Type
	// Expected is the expected (desired) value, from the cloud or set at
	// the edge; Actual the reported one. Either may be nil.
	Expected *SavedValue
	Actual   *SavedValue
}

// SavedValue is an expected or actual value.
type SavedValue struct {
	Value string
	// Timestamp (ms) of the value.
	Timestamp int64
	Version   mqtt.TwinVersion
	// ObservedDesired is, for an actual value, the expected value when it
	// was reported; nil if none.
	ObservedDesired *string
}

// Snapshot returns the twin of the device to save, and false if the engine
// does not hold the device.
func (e *Engine) Snapshot(id mqtt.DeviceID) (Saved, bool) {
	d := e.devices[id]
	if d == nil {
		return Saved{}, false
	}
	s := Saved{Version: d.version, State: d.state, LastOnline: d.lastOnline}
	for _, name := range d.names {
		p := d.props[name]
		if p.desired == nil && p.reported == nil {
			continue
		}
		sp := SavedProp{Name: name, Type: p.Type}
		if p.desired != nil {
			sp.Expected = &SavedValue{Value: p.desired.v, Timestamp: p.desired.ts, Version: p.desiredVer}
		}
		if p.reported != nil {
			sp.Actual = &SavedValue{Value: p.reported.v, Timestamp: p.reported.ts, Version: p.reportedVer,
				ObservedDesired: clone(p.reported.observed)}
		}
		s.Props = append(s.Props, sp)
	}
	return s, true
}

// fromSaved builds the device a restore starts from: only what upsert
// reads of a previous device (values, versions, types, state).
func fromSaved(id mqtt.DeviceID, s *Saved) *device {
	d := &device{id: id, version: s.Version, props: make(map[string]*prop, len(s.Props)),
		state: s.State, lastOnline: s.LastOnline}
	if !mqtt.ValidState(d.state) {
		d.state = mqtt.StateUnknown
	}
	for _, sp := range s.Props {
		p := &prop{Property: Property{Name: sp.Name, Type: sp.Type}}
		if v := sp.Expected; v != nil {
			p.desired, p.desiredVer = &value{v: v.Value, ts: v.Timestamp}, v.Version
		}
		if v := sp.Actual; v != nil {
			p.reported, p.reportedVer = &value{v: v.Value, ts: v.Timestamp, observed: clone(v.ObservedDesired)}, v.Version
		}
		d.props[sp.Name] = p
	}
	return d
}

func clone(s *string) *string {
	if s == nil {
		return nil
	}
	v := *s
	return &v
}
