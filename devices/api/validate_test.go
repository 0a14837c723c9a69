package api

import (
	"strings"
	"testing"
)

func TestValidateValue(t *testing.T) {
	long := strings.Repeat("x", MaxValueLength+1)
	tests := []struct {
		typ   PropertyType
		value string
		ok    bool
	}{
		{TypeInt, "42", true},
		{TypeInt, "-9223372036854775808", true},
		{TypeInt, "9223372036854775808", false},
		{TypeInt, "4.2", false},
		{TypeInt, "", false},
		{TypeFloat, "4.2", true},
		{TypeFloat, "1e39", false}, // beyond float32
		{TypeDouble, "1e39", true},
		{TypeDouble, "abc", false},
		{TypeBoolean, "true", true},
		{TypeBoolean, "false", true},
		{TypeBoolean, "1", false},
		{TypeBoolean, "TRUE", false},
		{TypeString, "", true},
		{TypeString, "anything at all", true},
		{TypeString, long, false},
		{TypeBytes, "AAEC", true},
		{"LONG", "1", false},
		{"", "1", false},
	}
	for _, tt := range tests {
		err := ValidateValue(tt.typ, tt.value)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateValue(%s, %.20q) = %v, want ok %v", tt.typ, tt.value, err, tt.ok)
		}
	}
}

func TestModelPropertyValidateValue(t *testing.T) {
	tests := []struct {
		prop  ModelProperty
		value string
		ok    bool
	}{
		{ModelProperty{Name: "t", Type: TypeInt, Minimum: "-40", Maximum: "125"}, "-40", true},
		{ModelProperty{Name: "t", Type: TypeInt, Minimum: "-40", Maximum: "125"}, "125", true},
		{ModelProperty{Name: "t", Type: TypeInt, Minimum: "-40", Maximum: "125"}, "126", false},
		{ModelProperty{Name: "t", Type: TypeInt, Minimum: "-40", Maximum: "125"}, "-41", false},
		{ModelProperty{Name: "t", Type: TypeInt, Maximum: "9223372036854775806"}, "9223372036854775807", false}, // exact beyond 2^53
		{ModelProperty{Name: "t", Type: TypeInt, Maximum: "12.5"}, "12", true},
		{ModelProperty{Name: "t", Type: TypeInt, Maximum: "12.5"}, "13", false},
		{ModelProperty{Name: "t", Type: TypeDouble, Minimum: "0.5"}, "0.49", false},
		{ModelProperty{Name: "t", Type: TypeDouble, Minimum: "0.5"}, "NaN", false},
		{ModelProperty{Name: "t", Type: TypeFloat, Maximum: "1"}, "1.0", true},
		{ModelProperty{Name: "t", Type: TypeString, Maximum: "1"}, "zzz", true}, // bounds only for numbers
		{ModelProperty{Name: "t", Type: TypeInt}, "x", false},
	}
	for _, tt := range tests {
		err := tt.prop.ValidateValue(tt.value)
		if (err == nil) != tt.ok {
			t.Errorf("%+v.ValidateValue(%q) = %v, want ok %v", tt.prop, tt.value, err, tt.ok)
		}
	}
}

func TestParsePropertyType(t *testing.T) {
	for in, want := range map[string]PropertyType{
		"INT": TypeInt, "int": TypeInt, "integer": TypeInt, "float": TypeFloat, "DOUBLE": TypeDouble,
		"string": TypeString, "boolean": TypeBoolean, "bytes": TypeBytes,
	} {
		if got, err := ParsePropertyType(in); got != want || err != nil {
			t.Errorf("ParsePropertyType(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "long", "deleted"} {
		if got, err := ParsePropertyType(in); err == nil {
			t.Errorf("ParsePropertyType(%q) = %q, want an error", in, got)
		}
	}
}

func TestValidatePropertyName(t *testing.T) {
	for _, ok := range []string{"temperature", "temperature-enable", "a.b_c,d:e/f@g#h", strings.Repeat("p", MaxPropertyNameLength)} {
		if err := ValidatePropertyName(ok); err != nil {
			t.Errorf("ValidatePropertyName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "temp erature", "t+1", "naïve", strings.Repeat("p", MaxPropertyNameLength+1)} {
		if err := ValidatePropertyName(bad); err == nil {
			t.Errorf("ValidatePropertyName(%.20q) = nil, want an error", bad)
		}
	}
}

func TestValidateDevice(t *testing.T) {
	model := &DeviceModel{Spec: DeviceModelSpec{Protocol: "modbus", Properties: []ModelProperty{
		{Name: "temperature", Type: TypeInt, AccessMode: ReadWrite, Minimum: "0", Maximum: "100"},
		{Name: "firmware", Type: TypeString, AccessMode: ReadOnly},
	}}}
	model.Name = "m"
	if errs := ValidateDeviceModel(model); len(errs) != 0 {
		t.Fatalf("ValidateDeviceModel = %v", errs)
	}
	dev := func(props ...DeviceProperty) *Device {
		return &Device{Spec: DeviceSpec{DeviceModelRef: &DeviceModelRef{Name: "m"}, NodeName: "edge-1", Properties: props}}
	}
	tests := []struct {
		name string
		dev  *Device
		want string // a field named in the errors; "" for none
	}{
		{"ok", dev(DeviceProperty{Name: "temperature", Desired: TwinProperty{Value: "20"}}, DeviceProperty{Name: "firmware"}), ""},
		{"out of range", dev(DeviceProperty{Name: "temperature", Desired: TwinProperty{Value: "101"}}), "spec.properties[0].desired.value"},
		{"not an int", dev(DeviceProperty{Name: "temperature", Desired: TwinProperty{Value: "warm"}}), "spec.properties[0].desired.value"},
		{"read-only desired", dev(DeviceProperty{Name: "firmware", Desired: TwinProperty{Value: "2.0"}}), "spec.properties[0].desired.value"},
		{"not in model", dev(DeviceProperty{Name: "humidity"}), "spec.properties[0].name"},
		{"duplicate", dev(DeviceProperty{Name: "firmware"}, DeviceProperty{Name: "firmware"}), "spec.properties[1].name"},
		{"no model ref", &Device{}, "spec.deviceModelRef"},
		{"other model", &Device{Spec: DeviceSpec{DeviceModelRef: &DeviceModelRef{Name: "n"}}}, "spec.deviceModelRef.name"},
	}
	for _, tt := range tests {
		errs := ValidateDevice(tt.dev, model)
		switch {
		case tt.want == "" && len(errs) != 0:
			t.Errorf("%s: ValidateDevice = %v, want no errors", tt.name, errs)
		case tt.want != "" && (len(errs) == 0 || !strings.HasPrefix(errs.ToAggregate().Error(), tt.want+":")):
			t.Errorf("%s: ValidateDevice = %v, want an error on %s", tt.name, errs, tt.want)
		}
	}
}
