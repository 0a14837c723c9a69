package mapper

import (
	"reflect"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/devices/api"
)

var testDefaults = defaults{collectCycle: time.Second, timeout: 500 * time.Millisecond}

func thermostatModel() *api.DeviceModel {
	return &api.DeviceModel{
		ObjectMeta: metav1.ObjectMeta{Namespace: "home", Name: "thermostat"},
		Spec: api.DeviceModelSpec{Protocol: "modbus", Properties: []api.ModelProperty{
			{Name: "temperature", Type: api.TypeFloat, AccessMode: api.ReadOnly},
			{Name: "setpoint", Type: api.TypeFloat, AccessMode: api.ReadWrite, Minimum: "5", Maximum: "30"},
			{Name: "heating", Type: api.TypeBoolean, AccessMode: api.ReadWrite},
			{Name: "mode", Type: api.TypeInt, AccessMode: api.ReadWrite},
			{Name: "label", Type: api.TypeString, AccessMode: api.ReadWrite},
		}},
	}
}

func visitor(kv ...any) api.VisitorConfig {
	cd := api.ConfigData{}
	for i := 0; i < len(kv); i += 2 {
		cd[kv[i].(string)] = kv[i+1]
	}
	return api.VisitorConfig{ProtocolName: "modbus", ConfigData: cd}
}

func thermostat(name, ip string, port int) *api.Device {
	return &api.Device{
		ObjectMeta: metav1.ObjectMeta{Namespace: "home", Name: name},
		Spec: api.DeviceSpec{
			DeviceModelRef: &api.DeviceModelRef{Name: "thermostat"},
			NodeName:       "edge-1",
			Protocol: api.ProtocolConfig{ProtocolName: "modbus", ConfigData: api.ConfigData{
				"ip": ip, "port": float64(port), "slaveID": float64(1)}},
			Properties: []api.DeviceProperty{
				{Name: "temperature", CollectCycle: 100, ReportToCloud: true,
					Visitors: visitor("register", "InputRegister", "offset", float64(0), "scale", 0.1)},
				{Name: "setpoint", CollectCycle: 100, ReportToCloud: true, Desired: api.TwinProperty{Value: "21"},
					Visitors: visitor("register", "HoldingRegister", "offset", float64(1), "scale", 0.1)},
				{Name: "heating", CollectCycle: 100, Visitors: visitor("register", "CoilRegister", "offset", float64(0))},
				{Name: "mode", CollectCycle: 100, Visitors: visitor("register", "HoldingRegister", "offset", float64(2), "dataType", "uint")},
				{Name: "label", CollectCycle: 100, Visitors: visitor("register", "HoldingRegister", "offset", float64(10), "limit", float64(4))},
			},
		},
	}
}

func TestResolve(t *testing.T) {
	d := thermostat("t1", "127.0.0.1", 1502)
	cfg, perr, err := resolve(d, thermostatModel(), testDefaults)
	if err != nil || len(perr) != 0 {
		t.Fatal(err, perr)
	}
	if cfg.addr != "127.0.0.1:1502" || cfg.slaveID != 1 || cfg.timeout != 500*time.Millisecond || len(cfg.props) != 5 {
		t.Fatalf("%+v", cfg)
	}
	byName := map[string]propConfig{}
	for _, p := range cfg.props {
		byName[p.name] = p
	}
	want := map[string]propConfig{
		"temperature": {name: "temperature", typ: api.TypeFloat, register: InputRegister, offset: 0, limit: 1, scale: 0.1, decimals: 1,
			dataType: DataInt, slaveID: 1, collectCycle: 100 * time.Millisecond, reportCycle: 100 * time.Millisecond},
		"setpoint": {name: "setpoint", typ: api.TypeFloat, writable: true, register: HoldingRegister, offset: 1, limit: 1, scale: 0.1, decimals: 1,
			dataType: DataInt, slaveID: 1, collectCycle: 100 * time.Millisecond, reportCycle: 100 * time.Millisecond},
		"heating": {name: "heating", typ: api.TypeBoolean, writable: true, register: CoilRegister, limit: 1, scale: 1, decimals: -1,
			dataType: DataBoolean, slaveID: 1, collectCycle: 100 * time.Millisecond, reportCycle: 100 * time.Millisecond},
		"mode": {name: "mode", typ: api.TypeInt, writable: true, register: HoldingRegister, offset: 2, limit: 1, scale: 1, decimals: -1,
			dataType: DataUint, slaveID: 1, collectCycle: 100 * time.Millisecond, reportCycle: 100 * time.Millisecond},
		"label": {name: "label", typ: api.TypeString, writable: true, register: HoldingRegister, offset: 10, limit: 4, scale: 1, decimals: -1,
			dataType: DataString, slaveID: 1, collectCycle: 100 * time.Millisecond, reportCycle: 100 * time.Millisecond},
	}
	if !reflect.DeepEqual(byName, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", byName, want)
	}
	// Sorted by name.
	if cfg.props[0].name != "heating" || cfg.props[4].name != "temperature" {
		t.Fatalf("order: %v", cfg.props)
	}

	// Defaults: port 502, slave 1, collect cycle from the config; quoted
	// numbers as KubeEdge's YAML often has them; a visitor's own slaveID.
	d = thermostat("t2", "10.0.0.9", 0)
	delete(d.Spec.Protocol.ConfigData, "port")
	delete(d.Spec.Protocol.ConfigData, "slaveID")
	d.Spec.Protocol.ConfigData["timeout"] = int64(2000)
	d.Spec.Properties = d.Spec.Properties[:2]
	d.Spec.Properties[0].CollectCycle = 0
	d.Spec.Properties[0].ReportCycle = 5000
	d.Spec.Properties[1].CollectCycle = 1 // clamped
	d.Spec.Properties[1].Visitors = visitor("register", "HoldingRegister", "offset", "7", "slaveID", int64(3), "limit", "2", "dataType", "FLOAT")
	cfg, perr, err = resolve(d, thermostatModel(), testDefaults)
	if err != nil || len(perr) != 0 {
		t.Fatal(err, perr)
	}
	sp, temp := cfg.props[0], cfg.props[1]
	if cfg.addr != "10.0.0.9:502" || cfg.slaveID != 1 || cfg.timeout != 2*time.Second ||
		temp.collectCycle != time.Second || temp.reportCycle != 5*time.Second ||
		sp.collectCycle != minCycle || sp.offset != 7 || sp.slaveID != 3 || sp.limit != 2 || sp.dataType != DataFloat {
		t.Fatalf("%+v", cfg)
	}
}

func TestResolveErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(d *api.Device)
		device string // the device's error, or ""
		prop   string // one property's error, or ""
	}{
		{"no ip", func(d *api.Device) { delete(d.Spec.Protocol.ConfigData, "ip") }, "spec.protocol.configData.ip: required", ""},
		{"ip not a string", func(d *api.Device) { d.Spec.Protocol.ConfigData["ip"] = 3.0 }, "spec.protocol.configData.ip: 3 is not a string", ""},
		{"port 70000", func(d *api.Device) { d.Spec.Protocol.ConfigData["port"] = 70000.0 }, "spec.protocol.configData.port: 70000 is not in 1 to 65535", ""},
		{"port 1.5", func(d *api.Device) { d.Spec.Protocol.ConfigData["port"] = 1.5 }, "port: 1.5 is not a whole number", ""},
		{"slave 256", func(d *api.Device) { d.Spec.Protocol.ConfigData["slaveID"] = "256" }, "slaveID: 256 is not in 0 to 255", ""},
		{"unknown register", func(d *api.Device) { d.Spec.Properties[0].Visitors.ConfigData["register"] = "Holding" },
			"", `spec.properties[0].visitors.configData.register: "Holding" is none of`},
		{"no register", func(d *api.Device) { delete(d.Spec.Properties[0].Visitors.ConfigData, "register") },
			"", "spec.properties[0].visitors.configData.register: required"},
		{"no offset", func(d *api.Device) { delete(d.Spec.Properties[1].Visitors.ConfigData, "offset") },
			"", "spec.properties[1].visitors.configData.offset: required"},
		{"offset -1", func(d *api.Device) { d.Spec.Properties[1].Visitors.ConfigData["offset"] = -1.0 },
			"", "spec.properties[1].visitors.configData.offset: -1 is not in 0 to 65535"},
		{"scale 0", func(d *api.Device) { d.Spec.Properties[0].Visitors.ConfigData["scale"] = 0.0 },
			"", "scale: 0: want a finite number other than 0"},
		{"limit 3 int", func(d *api.Device) { d.Spec.Properties[3].Visitors.ConfigData["limit"] = 3.0 },
			"", "spec.properties[3].visitors.configData: limit 3: an uint is 1, 2 or 4 registers"},
		{"float of coils", func(d *api.Device) { d.Spec.Properties[2].Visitors.ConfigData["dataType"] = "float" },
			"", "dataType float: 2 or 4 registers of a register table"},
		{"unknown data type", func(d *api.Device) { d.Spec.Properties[3].Visitors.ConfigData["dataType"] = "bcd" },
			"", `dataType "bcd" is none of`},
		{"string into an int", func(d *api.Device) { d.Spec.Properties[3].Visitors.ConfigData["dataType"] = "string" },
			"", "dataType string cannot hold a INT property"},
		{"not in the model", func(d *api.Device) { d.Spec.Properties[4].Name = "colour" },
			"", `spec.properties[4].name: property "colour" is not in the device's model`},
		{"other protocol", func(d *api.Device) { d.Spec.Properties[4].Visitors.ProtocolName = "opcua" },
			"", `spec.properties[4].visitors.protocolName: "opcua", want "modbus"`},
		{"isSwap not bool", func(d *api.Device) { d.Spec.Properties[0].Visitors.ConfigData["isSwap"] = "maybe" },
			"", "isSwap: maybe is not true or false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := thermostat("t1", "127.0.0.1", 1502)
			tc.edit(d)
			cfg, perr, err := resolve(d, thermostatModel(), testDefaults)
			if tc.device != "" {
				if err == nil || !strings.Contains(err.Error(), tc.device) {
					t.Fatalf("device error %v, want %q", err, tc.device)
				}
				return
			}
			if err != nil || len(perr) != 1 || !strings.Contains(perr[0].Error(), tc.prop) {
				t.Fatalf("errors %v %v, want one property error %q", err, perr, tc.prop)
			}
			if len(cfg.props) != 4 {
				t.Fatalf("%d properties kept, want the 4 others", len(cfg.props))
			}
		})
	}
	if _, _, err := resolve(thermostat("t1", "127.0.0.1", 1502), nil, testDefaults); err == nil ||
		!strings.Contains(err.Error(), "spec.deviceModelRef: model not found: home/thermostat") {
		t.Fatalf("no model: %v", err)
	}

	// A ReadWrite property on a table the mapper cannot write is read only.
	d := thermostat("t1", "127.0.0.1", 1502)
	d.Spec.Properties[1].Visitors.ConfigData["register"] = "InputRegister"
	cfg, _, _ := resolve(d, thermostatModel(), testDefaults)
	for _, p := range cfg.props {
		if p.name == "setpoint" && p.writable {
			t.Fatal("an input register is writable")
		}
	}
}

func TestCodec(t *testing.T) {
	for _, tc := range []struct {
		name  string
		p     propConfig
		raw   raw
		value string
		// encodeOnly / decodeOnly: the other direction gives something
		// else (say, rounding).
		decodeOnly bool
	}{
		{"int16 scaled", propConfig{typ: api.TypeFloat, register: HoldingRegister, dataType: DataInt, limit: 1, scale: 0.1, decimals: 1},
			raw{regs: []uint16{215}}, "21.5", false},
		{"int16 negative scaled", propConfig{typ: api.TypeFloat, register: InputRegister, dataType: DataInt, limit: 1, scale: 0.1, decimals: 1},
			raw{regs: []uint16{0xFFFF - 49}}, "-5", false},
		{"0.3 not 0.30000000000000004", propConfig{typ: api.TypeDouble, register: HoldingRegister, dataType: DataInt, limit: 1, scale: 0.1, decimals: 1},
			raw{regs: []uint16{3}}, "0.3", false},
		{"uint16", propConfig{typ: api.TypeInt, register: HoldingRegister, dataType: DataUint, limit: 1, scale: 1, decimals: -1},
			raw{regs: []uint16{65535}}, "65535", false},
		{"int16", propConfig{typ: api.TypeInt, register: HoldingRegister, dataType: DataInt, limit: 1, scale: 1, decimals: -1},
			raw{regs: []uint16{65535}}, "-1", false},
		{"int32", propConfig{typ: api.TypeInt, register: HoldingRegister, dataType: DataInt, limit: 2, scale: 1, decimals: -1},
			raw{regs: []uint16{0xFFFE, 0x7960}}, "-100000", false},
		{"int32 register swap", propConfig{typ: api.TypeInt, register: HoldingRegister, dataType: DataInt, limit: 2, scale: 1, decimals: -1, isRegisterSwap: true},
			raw{regs: []uint16{0x7960, 0xFFFE}}, "-100000", false},
		{"uint32 byte swap", propConfig{typ: api.TypeInt, register: HoldingRegister, dataType: DataUint, limit: 2, scale: 1, decimals: -1, isSwap: true},
			raw{regs: []uint16{0x0000, 0x0100}}, "1", false},
		{"int64", propConfig{typ: api.TypeInt, register: HoldingRegister, dataType: DataInt, limit: 4, scale: 1, decimals: -1},
			raw{regs: []uint16{0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF}}, "9223372036854775807", false},
		{"int scaled by 10", propConfig{typ: api.TypeInt, register: HoldingRegister, dataType: DataInt, limit: 1, scale: 10, decimals: 0},
			raw{regs: []uint16{42}}, "420", false},
		{"float32", propConfig{typ: api.TypeFloat, register: HoldingRegister, dataType: DataFloat, limit: 2, scale: 1, decimals: -1},
			raw{regs: []uint16{0x41AC, 0x0000}}, "21.5", false},
		{"float32 0.1", propConfig{typ: api.TypeFloat, register: HoldingRegister, dataType: DataFloat, limit: 2, scale: 1, decimals: -1},
			raw{regs: []uint16{0x3DCC, 0xCCCD}}, "0.1", false},
		{"float32 word swapped", propConfig{typ: api.TypeFloat, register: HoldingRegister, dataType: DataFloat, limit: 2, scale: 1, decimals: -1, isRegisterSwap: true},
			raw{regs: []uint16{0x0000, 0x41AC}}, "21.5", false},
		{"double", propConfig{typ: api.TypeDouble, register: InputRegister, dataType: DataDouble, limit: 4, scale: 1, decimals: -1},
			raw{regs: []uint16{0x4037, 0x8000, 0, 0}}, "23.5", false},
		{"coil boolean", propConfig{typ: api.TypeBoolean, register: CoilRegister, dataType: DataBoolean, limit: 1, scale: 1, decimals: -1},
			raw{bits: []bool{true}}, "true", false},
		{"coils as uint", propConfig{typ: api.TypeInt, register: CoilRegister, dataType: DataUint, limit: 4, scale: 1, decimals: -1},
			raw{bits: []bool{true, false, true, true}}, "13", false},
		{"coils as int", propConfig{typ: api.TypeInt, register: CoilRegister, dataType: DataInt, limit: 4, scale: 1, decimals: -1},
			raw{bits: []bool{true, false, true, true}}, "-3", false},
		{"register as boolean", propConfig{typ: api.TypeBoolean, register: HoldingRegister, dataType: DataBoolean, limit: 1, scale: 1, decimals: -1},
			raw{regs: []uint16{1}}, "true", false},
		{"register 7 as boolean", propConfig{typ: api.TypeBoolean, register: HoldingRegister, dataType: DataInt, limit: 1, scale: 1, decimals: -1},
			raw{regs: []uint16{7}}, "true", true},
		{"string", propConfig{typ: api.TypeString, register: HoldingRegister, dataType: DataString, limit: 3, scale: 1, decimals: -1},
			raw{regs: []uint16{'h'<<8 | 'a', 'l'<<8 | 'l', 0}}, "hall", false},
		{"string swapped", propConfig{typ: api.TypeString, register: HoldingRegister, dataType: DataString, limit: 2, scale: 1, decimals: -1, isSwap: true},
			raw{regs: []uint16{'a'<<8 | 'h', 'l'<<8 | 'l'}}, "hall", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.p.decode(tc.raw)
			if err != nil || got != tc.value {
				t.Fatalf("decode %+v = %q, %v; want %q", tc.raw, got, err, tc.value)
			}
			if tc.decodeOnly {
				return
			}
			back, err := tc.p.encode(tc.value)
			if err != nil || !back.equal(tc.raw) {
				t.Fatalf("encode %q = %+v, %v; want %+v", tc.value, back, err, tc.raw)
			}
		})
	}
}

func TestEncodeRefuses(t *testing.T) {
	int16Scaled := propConfig{typ: api.TypeFloat, register: HoldingRegister, dataType: DataInt, limit: 1, scale: 0.1, decimals: 1}
	uint16p := propConfig{typ: api.TypeInt, register: HoldingRegister, dataType: DataUint, limit: 1, scale: 1, decimals: -1}
	coils := propConfig{typ: api.TypeInt, register: CoilRegister, dataType: DataUint, limit: 3, scale: 1, decimals: -1}
	str := propConfig{typ: api.TypeString, register: HoldingRegister, dataType: DataString, limit: 1, scale: 1, decimals: -1}
	float32p := propConfig{typ: api.TypeDouble, register: HoldingRegister, dataType: DataFloat, limit: 2, scale: 1, decimals: -1}
	boolp := propConfig{typ: api.TypeBoolean, register: CoilRegister, dataType: DataBoolean, limit: 1, scale: 1, decimals: -1}
	for _, tc := range []struct {
		p     propConfig
		value string
		want  string
	}{
		{int16Scaled, "3276.8", "32768 (the value divided by scale 0.1) is out of the range -32768 to 32767 of 16 bits"},
		{int16Scaled, "warm", `value "warm" is not a finite number`},
		{uint16p, "-1", "-1 is out of the range 0 to 65535"},
		{uint16p, "65536", "65536 is out of the range 0 to 65535"},
		{uint16p, "1.5", `value "1.5" is not an INT`},
		{coils, "8", "8 is out of the range 0 to 7 of 3 bits"},
		{str, "abc", "value of 3 bytes does not fit 1 registers"},
		{float32p, "1e300", "does not fit a 32-bit float"},
		{boolp, "yes please", "is not true or false"},
	} {
		if _, err := tc.p.encode(tc.value); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("encode %q: %v, want %q", tc.value, err, tc.want)
		}
	}
	// Rounding: 21.46 to one decimal is 215 tenths.
	r, err := int16Scaled.encode("21.46")
	if err != nil || r.regs[0] != 215 {
		t.Fatalf("21.46: %v %v", r, err)
	}
}
