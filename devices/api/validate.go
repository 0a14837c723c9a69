package api

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Limits and patterns shared with the CRD schemas in manifests/crds (a test
// checks that the two agree).
const (
	// MaxPropertyNameLength is the longest property name, in bytes
	// (KubeEdge: "under 128 bytes").
	MaxPropertyNameLength = 127
	// MaxValueLength is the longest property value, in bytes (KubeEdge:
	// "under 512 bytes").
	MaxValueLength = 511
	// MaxProtocolNameLength is the longest protocol name.
	MaxProtocolNameLength = 63
	// MaxProperties is the most properties a model or device may have.
	MaxProperties = 256

	// PropertyNamePattern is the property name's character set, KubeEdge's
	// for twin property names.
	PropertyNamePattern = `^[A-Za-z0-9_.,:/@#-]+$`
	// ProtocolNamePattern allows names such as "modbus", "opcua" and
	// KubeEdge's "virtualProtocol".
	ProtocolNamePattern = `^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$`
	// NumberPattern is a decimal number, the form of Minimum and Maximum.
	NumberPattern = `^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$`
)

var (
	propertyNameRE = regexp.MustCompile(PropertyNamePattern)
	protocolNameRE = regexp.MustCompile(ProtocolNamePattern)
	numberRE       = regexp.MustCompile(NumberPattern)
)

// ValidatePropertyName reports whether name may name a property: 1 to
// MaxPropertyNameLength bytes of PropertyNamePattern.
func ValidatePropertyName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("property name is empty")
	case len(name) > MaxPropertyNameLength:
		return fmt.Errorf("property name %.20q... is %d bytes, more than %d", name, len(name), MaxPropertyNameLength)
	case !propertyNameRE.MatchString(name):
		return fmt.Errorf("property name %q has characters other than letters, digits and _.,:/@#-", name)
	}
	return nil
}

// ValidateProtocolName reports whether name may name a protocol.
func ValidateProtocolName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("protocol name is empty")
	case len(name) > MaxProtocolNameLength:
		return fmt.Errorf("protocol name %.20q... is %d bytes, more than %d", name, len(name), MaxProtocolNameLength)
	case !protocolNameRE.MatchString(name):
		return fmt.Errorf("protocol name %q must be letters, digits and _.- and start and end with a letter or digit", name)
	}
	return nil
}

// ParsePropertyType returns the PropertyType s names. It accepts the CRD's
// names ("INT") and the lower-case names KubeEdge twins carry in their
// metadata ("int", "integer", "float", ...).
func ParsePropertyType(s string) (PropertyType, error) {
	u := strings.ToUpper(s)
	if u == "INTEGER" {
		return TypeInt, nil
	}
	for _, t := range PropertyTypes {
		if string(t) == u {
			return t, nil
		}
	}
	return "", fmt.Errorf("unknown property type %q (want one of %s)", s, joinTypes())
}

func joinTypes() string {
	s := make([]string, len(PropertyTypes))
	for i, t := range PropertyTypes {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

// ValidateValue reports whether value is a value of type t: a decimal
// 64-bit integer for INT, a number for FLOAT (32 bits) and DOUBLE (64 bits),
// "true" or "false" for BOOLEAN (as KubeEdge's edge accepts), anything for
// STRING and BYTES; in every case at most MaxValueLength bytes.
func ValidateValue(t PropertyType, value string) error {
	_, err := parseValue(t, value)
	return err
}

// parseValue checks value against t and returns it as a float64 for the
// numeric types (NaN otherwise).
func parseValue(t PropertyType, value string) (float64, error) {
	if len(value) > MaxValueLength {
		return math.NaN(), fmt.Errorf("value is %d bytes, more than %d", len(value), MaxValueLength)
	}
	switch t {
	case TypeInt:
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return math.NaN(), fmt.Errorf("value %q is not an INT", value)
		}
		return float64(n), nil
	case TypeFloat, TypeDouble:
		bits := 64
		if t == TypeFloat {
			bits = 32
		}
		f, err := strconv.ParseFloat(value, bits)
		if err != nil {
			return math.NaN(), fmt.Errorf("value %q is not a %s", value, t)
		}
		return f, nil
	case TypeBoolean:
		if value != "true" && value != "false" {
			return math.NaN(), fmt.Errorf("value %q is not a BOOLEAN (true or false)", value)
		}
		return math.NaN(), nil
	case TypeString, TypeBytes:
		return math.NaN(), nil
	default:
		return math.NaN(), fmt.Errorf("unknown property type %q (want one of %s)", t, joinTypes())
	}
}

// ValidateValue reports whether value is a valid value of the property:
// of its type (the package's ValidateValue) and, for the numeric types,
// within Minimum and Maximum when they are set.
func (p *ModelProperty) ValidateValue(value string) error {
	f, err := parseValue(p.Type, value)
	if err != nil {
		return fmt.Errorf("property %s: %w", p.Name, err)
	}
	if !p.Type.numeric() {
		return nil
	}
	if p.Type == TypeInt {
		// Compare as integers where the bounds are integers, so that
		// values beyond 2^53 are compared exactly.
		n, _ := strconv.ParseInt(value, 10, 64)
		if lo, err := strconv.ParseInt(p.Minimum, 10, 64); err == nil && n < lo {
			return fmt.Errorf("property %s: value %s is less than the minimum %s", p.Name, value, p.Minimum)
		}
		if hi, err := strconv.ParseInt(p.Maximum, 10, 64); err == nil && n > hi {
			return fmt.Errorf("property %s: value %s is more than the maximum %s", p.Name, value, p.Maximum)
		}
	}
	if p.Minimum != "" {
		if lo, err := strconv.ParseFloat(p.Minimum, 64); err == nil && !(f >= lo) {
			return fmt.Errorf("property %s: value %s is less than the minimum %s", p.Name, value, p.Minimum)
		}
	}
	if p.Maximum != "" {
		if hi, err := strconv.ParseFloat(p.Maximum, 64); err == nil && !(f <= hi) {
			return fmt.Errorf("property %s: value %s is more than the maximum %s", p.Name, value, p.Maximum)
		}
	}
	return nil
}

func (t PropertyType) numeric() bool {
	return t == TypeInt || t == TypeFloat || t == TypeDouble
}

// Writable reports whether the cloud may set the property's value: its
// AccessMode is ReadWrite or, as the CRD defaults it, empty.
func (p *ModelProperty) Writable() bool {
	return p.AccessMode == ReadWrite || p.AccessMode == ""
}

// Property returns the model's property with the given name, or nil.
func (m *DeviceModel) Property(name string) *ModelProperty {
	for i := range m.Spec.Properties {
		if m.Spec.Properties[i].Name == name {
			return &m.Spec.Properties[i]
		}
	}
	return nil
}

// ValidateDeviceModel checks m's spec by the rules of the DeviceModel CRD's
// schema, so that code that builds or receives a model applies the same
// rules as the API server. The errors name the field
// ("spec.properties[0].type").
func ValidateDeviceModel(m *DeviceModel) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	if m.Spec.Protocol != "" {
		if err := ValidateProtocolName(m.Spec.Protocol); err != nil {
			errs = append(errs, field.Invalid(spec.Child("protocol"), m.Spec.Protocol, err.Error()))
		}
	}
	props := spec.Child("properties")
	if len(m.Spec.Properties) > MaxProperties {
		errs = append(errs, field.TooMany(props, len(m.Spec.Properties), MaxProperties))
	}
	seen := map[string]bool{}
	for i := range m.Spec.Properties {
		p := &m.Spec.Properties[i]
		path := props.Index(i)
		if err := ValidatePropertyName(p.Name); err != nil {
			errs = append(errs, field.Invalid(path.Child("name"), p.Name, err.Error()))
		} else if seen[p.Name] {
			errs = append(errs, field.Duplicate(path.Child("name"), p.Name))
		}
		seen[p.Name] = true
		if p.Type == "" {
			errs = append(errs, field.Required(path.Child("type"), ""))
		} else if !slices.Contains(PropertyTypes, p.Type) {
			errs = append(errs, field.NotSupported(path.Child("type"), p.Type, typeStrings()))
		}
		if p.AccessMode != "" && p.AccessMode != ReadWrite && p.AccessMode != ReadOnly {
			errs = append(errs, field.NotSupported(path.Child("accessMode"), p.AccessMode, []string{string(ReadWrite), string(ReadOnly)}))
		}
		for _, b := range []struct{ name, v string }{{"minimum", p.Minimum}, {"maximum", p.Maximum}} {
			if b.v == "" {
				continue
			}
			if !numberRE.MatchString(b.v) {
				errs = append(errs, field.Invalid(path.Child(b.name), b.v, "must be a decimal number"))
			} else if !p.Type.numeric() {
				errs = append(errs, field.Forbidden(path.Child(b.name), "only INT, FLOAT and DOUBLE properties have bounds"))
			}
		}
		lo, errLo := strconv.ParseFloat(p.Minimum, 64)
		hi, errHi := strconv.ParseFloat(p.Maximum, 64)
		if errLo == nil && errHi == nil && lo > hi {
			errs = append(errs, field.Invalid(path.Child("minimum"), p.Minimum, "must not be more than maximum"))
		}
	}
	return errs
}

func typeStrings() []string {
	s := make([]string, len(PropertyTypes))
	for i, t := range PropertyTypes {
		s[i] = string(t)
	}
	return s
}

// ValidateDevice checks d's spec by the rules of the Device CRD's schema
// and, when model is not nil, against the model: every property names one
// of the model's, and every non-empty desired value is a valid value of a
// writable property (ModelProperty.ValidateValue). An empty desired value
// means none. The errors name the field.
func ValidateDevice(d *Device, model *DeviceModel) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")
	ref := spec.Child("deviceModelRef")
	if d.Spec.DeviceModelRef == nil {
		errs = append(errs, field.Required(ref, ""))
	} else if d.Spec.DeviceModelRef.Name == "" {
		errs = append(errs, field.Required(ref.Child("name"), ""))
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(d.Spec.DeviceModelRef.Name) {
			errs = append(errs, field.Invalid(ref.Child("name"), d.Spec.DeviceModelRef.Name, msg))
		}
		if model != nil && model.Name != d.Spec.DeviceModelRef.Name {
			errs = append(errs, field.Invalid(ref.Child("name"), d.Spec.DeviceModelRef.Name,
				fmt.Sprintf("validated against model %q", model.Name)))
		}
	}
	if d.Spec.NodeName != "" {
		for _, msg := range validation.IsDNS1123Subdomain(d.Spec.NodeName) {
			errs = append(errs, field.Invalid(spec.Child("nodeName"), d.Spec.NodeName, msg))
		}
	}
	if n := d.Spec.Protocol.ProtocolName; n != "" {
		if err := ValidateProtocolName(n); err != nil {
			errs = append(errs, field.Invalid(spec.Child("protocol", "protocolName"), n, err.Error()))
		}
	}
	props := spec.Child("properties")
	if len(d.Spec.Properties) > MaxProperties {
		errs = append(errs, field.TooMany(props, len(d.Spec.Properties), MaxProperties))
	}
	seen := map[string]bool{}
	for i := range d.Spec.Properties {
		p := &d.Spec.Properties[i]
		path := props.Index(i)
		if err := ValidatePropertyName(p.Name); err != nil {
			errs = append(errs, field.Invalid(path.Child("name"), p.Name, err.Error()))
			continue
		}
		if seen[p.Name] {
			errs = append(errs, field.Duplicate(path.Child("name"), p.Name))
		}
		seen[p.Name] = true
		if len(p.Desired.Value) > MaxValueLength {
			errs = append(errs, field.TooLong(path.Child("desired", "value"), "", MaxValueLength))
		}
		if p.CollectCycle < 0 {
			errs = append(errs, field.Invalid(path.Child("collectCycle"), p.CollectCycle, "must not be negative"))
		}
		if p.ReportCycle < 0 {
			errs = append(errs, field.Invalid(path.Child("reportCycle"), p.ReportCycle, "must not be negative"))
		}
		if n := p.Visitors.ProtocolName; n != "" {
			if err := ValidateProtocolName(n); err != nil {
				errs = append(errs, field.Invalid(path.Child("visitors", "protocolName"), n, err.Error()))
			}
		}
		if model == nil {
			continue
		}
		mp := model.Property(p.Name)
		switch {
		case mp == nil:
			errs = append(errs, field.NotFound(path.Child("name"), p.Name))
		case p.Desired.Value == "":
		case !mp.Writable():
			errs = append(errs, field.Forbidden(path.Child("desired", "value"),
				fmt.Sprintf("property %s of model %s is ReadOnly", p.Name, model.Name)))
		default:
			if err := mp.ValidateValue(p.Desired.Value); err != nil {
				errs = append(errs, field.Invalid(path.Child("desired", "value"), p.Desired.Value, err.Error()))
			}
		}
	}
	return errs
}
