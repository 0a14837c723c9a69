package store

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/tether-edge/tether/devices/mqtt"
	"github.com/tether-edge/tether/devices/twin"
)

// The twins bucket holds the device twin of each device the node serves
// (edgecore/devicetwin saves it; devices/twin defines it), keyed by the
// Device's UID, so that reported values, their timestamps, the state and
// expected values set at the edge survive a restart. A Device re-created
// under the same name has a new UID and starts with an empty twin.
var bucketTwins = []byte("twins")

// twinRecord is how a twin.Saved is stored. The keys are the stored form:
// never renumber them.
type twinRecord struct {
	Version    int64        `cbor:"1,keyasint,omitempty"`
	State      string       `cbor:"2,keyasint,omitempty"`
	LastOnline int64        `cbor:"3,keyasint,omitempty"`
	Props      []propRecord `cbor:"4,keyasint,omitempty"`
}

type propRecord struct {
	Name     string       `cbor:"1,keyasint"`
	Type     string       `cbor:"2,keyasint"`
	Expected *valueRecord `cbor:"3,keyasint,omitempty"`
	Actual   *valueRecord `cbor:"4,keyasint,omitempty"`
}

type valueRecord struct {
	Value           string  `cbor:"1,keyasint"`
	Timestamp       int64   `cbor:"2,keyasint,omitempty"`
	CloudVersion    int64   `cbor:"3,keyasint,omitempty"`
	EdgeVersion     int64   `cbor:"4,keyasint,omitempty"`
	ObservedDesired *string `cbor:"5,keyasint,omitempty"`
}

// PutTwin stores the twin of the device with uid, replacing what it held.
func (t *Tx) PutTwin(uid string, s *twin.Saved) error {
	if uid == "" {
		return fmt.Errorf("put twin: empty uid")
	}
	r := twinRecord{Version: s.Version, State: s.State, LastOnline: s.LastOnline}
	for _, p := range s.Props {
		r.Props = append(r.Props, propRecord{Name: p.Name, Type: string(p.Type),
			Expected: toValueRecord(p.Expected), Actual: toValueRecord(p.Actual)})
	}
	v, err := cbor.Marshal(r)
	if err != nil {
		return fmt.Errorf("put twin %s: %w", uid, err)
	}
	if err := t.tx.Bucket(bucketTwins).Put([]byte(uid), v); err != nil {
		return fmt.Errorf("put twin %s: %w", uid, err)
	}
	return nil
}

// Twin returns the twin of the device with uid, or nil if none is stored.
func (t *Tx) Twin(uid string) (*twin.Saved, error) {
	v := t.tx.Bucket(bucketTwins).Get([]byte(uid))
	if v == nil {
		return nil, nil
	}
	return decodeTwin(uid, v)
}

// DeleteTwin removes the twin of the device with uid; a missing one is not
// an error.
func (t *Tx) DeleteTwin(uid string) error {
	if err := t.tx.Bucket(bucketTwins).Delete([]byte(uid)); err != nil {
		return fmt.Errorf("delete twin %s: %w", uid, err)
	}
	return nil
}

// ForEachTwin calls fn with every stored twin, in UID order.
func (t *Tx) ForEachTwin(fn func(uid string, s *twin.Saved) error) error {
	return t.tx.Bucket(bucketTwins).ForEach(func(k, v []byte) error {
		s, err := decodeTwin(string(k), v)
		if err != nil {
			return err
		}
		return fn(string(k), s)
	})
}

func decodeTwin(uid string, v []byte) (*twin.Saved, error) {
	var r twinRecord
	if err := cbor.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("decode twin %s: %w", uid, err)
	}
	s := &twin.Saved{Version: r.Version, State: r.State, LastOnline: r.LastOnline}
	for _, p := range r.Props {
		s.Props = append(s.Props, twin.SavedProp{Name: p.Name, Type: twin.Type(p.Type),
			Expected: fromValueRecord(p.Expected), Actual: fromValueRecord(p.Actual)})
	}
	return s, nil
}

func toValueRecord(v *twin.SavedValue) *valueRecord {
	if v == nil {
		return nil
	}
	return &valueRecord{Value: v.Value, Timestamp: v.Timestamp, CloudVersion: v.Version.Cloud,
		EdgeVersion: v.Version.Edge, ObservedDesired: v.ObservedDesired}
}

func fromValueRecord(r *valueRecord) *twin.SavedValue {
	if r == nil {
		return nil
	}
	return &twin.SavedValue{Value: r.Value, Timestamp: r.Timestamp,
		Version: mqtt.TwinVersion{Cloud: r.CloudVersion, Edge: r.EdgeVersion}, ObservedDesired: r.ObservedDesired}
}
