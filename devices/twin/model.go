package twin

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/tether-edge/tether/devices/mqtt"
)

// Type is a property's value type, spelled as in DeviceModel.spec.
type Type string

// The property types.
const (
	TypeInt     Type = "INT"
	TypeFloat   Type = "FLOAT"
	TypeDouble  Type = "DOUBLE"
	TypeString  Type = "STRING"
	TypeBoolean Type = "BOOLEAN"
	TypeBytes   Type = "BYTES"
)

// wire is the type as twin metadata carries it: lower case.
func (t Type) wire() string { return strings.ToLower(string(t)) }

func (t Type) numeric() bool { return t == TypeInt || t == TypeFloat || t == TypeDouble }

// AccessMode says who may set a property.
type AccessMode string

// The access modes.
const (
	// ReadWrite: the device reports the property and the cloud (or an app at
	// the edge) may set its expected value, which the mapper writes.
	ReadWrite AccessMode = "ReadWrite"
	// ReadOnly: the device reports the property; it has no expected value.
	ReadOnly AccessMode = "ReadOnly"
)

// Property describes one property of a device model: what the engine needs
// of DeviceModel.spec.properties[].
type Property struct {
	Name   string
	Type   Type
	Access AccessMode
	// Min and Max, when set, bound the values of numeric properties
	// (INT, FLOAT, DOUBLE), both inclusive.
	Min, Max *float64
}

// Model is the device model: its properties, names unique.
type Model struct {
	Properties []Property
}

// Validate checks names, types, access modes and bounds.
func (m Model) Validate() error {
	seen := make(map[string]bool, len(m.Properties))
	for _, p := range m.Properties {
		if err := mqtt.ValidateName(p.Name); err != nil {
			return fmt.Errorf("model: %w", err)
		}
		if seen[p.Name] {
			return fmt.Errorf("model: property %q appears twice", p.Name)
		}
		seen[p.Name] = true
		switch p.Type {
		case TypeInt, TypeFloat, TypeDouble, TypeString, TypeBoolean, TypeBytes:
		default:
			return fmt.Errorf("model: property %q: type %q is none of INT, FLOAT, DOUBLE, STRING, BOOLEAN, BYTES", p.Name, p.Type)
		}
		if p.Access != ReadWrite && p.Access != ReadOnly {
			return fmt.Errorf("model: property %q: access mode %q is neither ReadWrite nor ReadOnly", p.Name, p.Access)
		}
		if (p.Min != nil || p.Max != nil) && !p.Type.numeric() {
			return fmt.Errorf("model: property %q: minimum or maximum on a %s property", p.Name, p.Type)
		}
		if p.Min != nil && p.Max != nil && *p.Min > *p.Max {
			return fmt.Errorf("model: property %q: minimum %v above maximum %v", p.Name, *p.Min, *p.Max)
		}
	}
	return nil
}

// checkValue checks v against the property's type and bounds. INT values
// are compared with the bounds as float64 (exact up to 2^53).
func (p *Property) checkValue(v string) error {
	if err := mqtt.ValidateValue(v); err != nil {
		return err
	}
	var f float64
	switch p.Type {
	case TypeString, TypeBytes:
		return nil
	case TypeBoolean:
		if v != "true" && v != "false" {
			return fmt.Errorf("value %q is not a BOOLEAN (true or false)", v)
		}
		return nil
	case TypeInt:
		i, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("value %q is not an INT", v)
		}
		f = float64(i)
	case TypeFloat, TypeDouble:
		bits := 64
		if p.Type == TypeFloat {
			bits = 32
		}
		var err error
		f, err = strconv.ParseFloat(v, bits)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("value %q is not a finite %s", v, p.Type)
		}
	default:
		return errors.New("unknown type")
	}
	if p.Min != nil && f < *p.Min {
		return fmt.Errorf("value %s is below the minimum %v", v, *p.Min)
	}
	if p.Max != nil && f > *p.Max {
		return fmt.Errorf("value %s is above the maximum %v", v, *p.Max)
	}
	return nil
}
