package mqtt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Limits on what the edge accepts, from KubeEdge.
const (
	// MaxPayloadBytes is the largest payload the edge decodes; larger ones
	// are refused before parsing.
	MaxPayloadBytes = 64 << 10
	// MaxNameBytes bounds twin property names: they must be shorter.
	MaxNameBytes = 128
	// MaxValueBytes bounds twin values: they must be shorter.
	MaxValueBytes = 512
)

// Result codes of error results, as KubeEdge uses them.
const (
	CodeBadRequest    = 400
	CodeNotFound      = 404
	CodeInternalError = 500
)

// Errors of the decoders, wrapped with detail; test with errors.Is.
var (
	ErrTooLarge  = errors.New("payload too large")
	ErrMalformed = errors.New("malformed payload")
	ErrName      = errors.New("invalid property name")
	ErrValue     = errors.New("invalid property value")
)

// BaseMessage is the part every event carries.
type BaseMessage struct {
	EventID string `json:"event_id"`
	// Timestamp is in milliseconds since the epoch.
	Timestamp int64 `json:"timestamp"`
}

// ValueMetadata is the metadata of one expected or actual value.
type ValueMetadata struct {
	// Timestamp (ms) of the value: when it was set or sampled.
	Timestamp int64 `json:"timestamp,omitempty"`
}

// TwinValue is an expected (desired) or actual (reported) value.
type TwinValue struct {
	Value    *string        `json:"value,omitempty"`
	Metadata *ValueMetadata `json:"metadata,omitempty"`
}

// TypeMetadata carries a property's type in lower case: "int", "float",
// "double", "string", "boolean", "bytes" (or "deleted").
type TypeMetadata struct {
	Type string `json:"type,omitempty"`
}

// TwinVersion is the version of an expected or actual value: Cloud counts
// changes made by the cloud, Edge changes made at the edge.
type TwinVersion struct {
	Cloud int64 `json:"cloud"`
	Edge  int64 `json:"edge"`
}

// MsgTwin is one twin property on the wire.
type MsgTwin struct {
	Expected        *TwinValue    `json:"expected,omitempty"`
	Actual          *TwinValue    `json:"actual,omitempty"`
	Optional        *bool         `json:"optional,omitempty"`
	Metadata        *TypeMetadata `json:"metadata,omitempty"`
	ExpectedVersion *TwinVersion  `json:"expected_version,omitempty"`
	ActualVersion   *TwinVersion  `json:"actual_version,omitempty"`
}

// TwinUpdate is the payload of twin/update (a device or mapper reports
// actual values, or an app sets expected ones), of a successful
// twin/update/result, and of twin/get/result.
type TwinUpdate struct {
	BaseMessage
	Twin map[string]*MsgTwin `json:"twin"`
}

// TwinDelta is the payload of twin/update/delta: Delta maps each property
// whose expected value differs from its actual value to the expected value.
type TwinDelta struct {
	BaseMessage
	Twin  map[string]*MsgTwin `json:"twin"`
	Delta map[string]string   `json:"delta"`
}

// TwinDoc is one property's state before and after a change; Last is nil
// for a new property.
type TwinDoc struct {
	Last    *MsgTwin `json:"last"`
	Current *MsgTwin `json:"current"`
}

// TwinDocument is the payload of twin/update/document.
type TwinDocument struct {
	BaseMessage
	Twin map[string]*TwinDoc `json:"twin"`
}

// ErrorResult is the payload of a failed request's result.
type ErrorResult struct {
	BaseMessage
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// Device states.
const (
	StateOK        = "ok"
	StateOnline    = "online"
	StateOffline   = "offline"
	StateUnhealthy = "unhealthy"
	StateUnknown   = "unknown"
)

// ValidState reports whether s is one of the device states.
func ValidState(s string) bool {
	switch s {
	case StateOK, StateOnline, StateOffline, StateUnhealthy, StateUnknown:
		return true
	}
	return false
}

// StateUpdate is the payload of state/update and of its successful result.
type StateUpdate struct {
	BaseMessage
	State string `json:"state"`
}

// MsgAttr is one device attribute.
type MsgAttr struct {
	Value    string        `json:"value"`
	Optional *bool         `json:"optional,omitempty"`
	Metadata *TypeMetadata `json:"metadata,omitempty"`
}

// DeviceUpdated is the payload of updated (attribute changes).
type DeviceUpdated struct {
	BaseMessage
	Attributes map[string]*MsgAttr `json:"attributes"`
}

// Device is one device in membership payloads.
type Device struct {
	// ID is "<ns>/<name>".
	ID    string              `json:"id"`
	Name  string              `json:"name,omitempty"`
	State string              `json:"state,omitempty"`
	Twin  map[string]*MsgTwin `json:"twin,omitempty"`
}

// MembershipGetResult is the payload of membership/get/result: the devices
// bound to the node.
type MembershipGetResult struct {
	BaseMessage
	Devices []Device `json:"devices"`
}

// MembershipUpdated is the payload of membership/updated.
type MembershipUpdated struct {
	BaseMessage
	AddedDevices   []Device `json:"added_devices"`
	RemovedDevices []Device `json:"removed_devices"`
}

// LifecycleEvent is the payload of connected/<client> and
// disconnected/<client>.
type LifecycleEvent struct {
	EventType string `json:"event_type"`
	Timestamp int64  `json:"timestamp"`
}

// DataMetadata is the metadata of a data-plane value.
type DataMetadata struct {
	Timestamp int64  `json:"timestamp,omitempty"`
	Type      string `json:"type,omitempty"`
}

// DataValue is one data-plane value.
type DataValue struct {
	Value    string        `json:"value"`
	Metadata *DataMetadata `json:"metadata,omitempty"`
}

// DataUpdate is the payload of $ke/events/device/<ns>/<name>/data/update.
type DataUpdate struct {
	BaseMessage
	Data map[string]*DataValue `json:"data"`
}

// decode decodes one JSON object strictly: size limit, no unknown fields,
// nothing after the object.
func decode(what string, b []byte, v any) error {
	if len(b) > MaxPayloadBytes {
		return fmt.Errorf("%s: %w: %d bytes, limit %d", what, ErrTooLarge, len(b), MaxPayloadBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w: %v", what, ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%s: %w: data after the JSON object", what, ErrMalformed)
	}
	return nil
}

// DecodeBase decodes a request that carries only event_id and timestamp
// (twin/get, membership/get).
func DecodeBase(b []byte) (BaseMessage, error) {
	var m BaseMessage
	err := decode("decode request", b, &m)
	return m, err
}

// DecodeTwinUpdate decodes and checks a twin/update payload: a non-empty
// twin, valid property names, no null properties, every expected or actual
// carrying a value of valid length.
func DecodeTwinUpdate(b []byte) (TwinUpdate, error) {
	var m TwinUpdate
	if err := decode("decode twin update", b, &m); err != nil {
		return m, err
	}
	if len(m.Twin) == 0 {
		return m, fmt.Errorf("decode twin update: %w: no twin", ErrMalformed)
	}
	for name, t := range m.Twin {
		if err := ValidateName(name); err != nil {
			return m, fmt.Errorf("decode twin update: %w", err)
		}
		if t == nil {
			return m, fmt.Errorf("decode twin update: %w: property %q is null", ErrMalformed, name)
		}
		for _, v := range []struct {
			which string
			tv    *TwinValue
		}{{"expected", t.Expected}, {"actual", t.Actual}} {
			if v.tv == nil {
				continue
			}
			if v.tv.Value == nil {
				return m, fmt.Errorf("decode twin update: %w: property %q: %s has no value", ErrMalformed, name, v.which)
			}
			if err := ValidateValue(*v.tv.Value); err != nil {
				return m, fmt.Errorf("decode twin update: property %q: %s: %w", name, v.which, err)
			}
		}
		if t.Expected == nil && t.Actual == nil {
			return m, fmt.Errorf("decode twin update: %w: property %q has neither expected nor actual", ErrMalformed, name)
		}
	}
	return m, nil
}

// DecodeStateUpdate decodes and checks a state/update payload.
func DecodeStateUpdate(b []byte) (StateUpdate, error) {
	var m StateUpdate
	if err := decode("decode state update", b, &m); err != nil {
		return m, err
	}
	if !ValidState(m.State) {
		return m, fmt.Errorf("decode state update: %w: state %q is none of ok, online, offline, unhealthy, unknown", ErrMalformed, m.State)
	}
	return m, nil
}

// ValidateName checks a twin property name: 1 to MaxNameBytes-1 bytes of
// [A-Za-z0-9-_.,:/@#].
func ValidateName(name string) error {
	if name == "" || len(name) >= MaxNameBytes {
		return fmt.Errorf("%w %q: length %d, want 1 to %d bytes", ErrName, name, len(name), MaxNameBytes-1)
	}
	for i := 0; i < len(name); i++ {
		if !nameByte(name[i]) {
			return fmt.Errorf("%w %q: character %q not in [A-Za-z0-9-_.,:/@#]", ErrName, name, name[i])
		}
	}
	return nil
}

func nameByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '_', '.', ',', ':', '/', '@', '#':
		return true
	}
	return false
}

// ValidateValue checks a twin value's length: shorter than MaxValueBytes.
// Values are not restricted to the name characters, so that strings such
// as "hello world" can be reported; the type check is the engine's.
func ValidateValue(v string) error {
	if len(v) >= MaxValueBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrValue, len(v), MaxValueBytes-1)
	}
	return nil
}
