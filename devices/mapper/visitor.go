package mapper

import (
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/devices/mqtt"
)

// ProtocolName is the protocol this mapper serves: devices whose
// spec.protocol.protocolName is "modbus".
const ProtocolName = "modbus"

// Register names a Modbus table, as KubeEdge's modbus mapper spells it in a
// visitor's configData.register.
type Register string

// The registers.
const (
	CoilRegister          Register = "CoilRegister"
	DiscreteInputRegister Register = "DiscreteInputRegister"
	InputRegister         Register = "InputRegister"
	HoldingRegister       Register = "HoldingRegister"
)

func (r Register) bits() bool     { return r == CoilRegister || r == DiscreteInputRegister }
func (r Register) writable() bool { return r == CoilRegister || r == HoldingRegister }

// DataType says how a property's registers hold its value
// (configData.dataType).
type DataType string

// The data types.
const (
	// DataInt and DataUint: a signed or unsigned integer of 1, 2 or 4
	// registers (16, 32, 64 bits), or of 1 to 64 coils (the first coil the
	// lowest bit).
	DataInt  DataType = "int"
	DataUint DataType = "uint"
	// DataFloat: an IEEE 754 number of 2 registers (32 bits) or 4 (64).
	DataFloat DataType = "float"
	// DataDouble: an IEEE 754 number of 4 registers.
	DataDouble DataType = "double"
	// DataBoolean: one coil, or one register (true when not 0).
	DataBoolean DataType = "boolean"
	// DataString: limit registers of two bytes each, trailing NULs dropped.
	DataString DataType = "string"
)

// Defaults of the device and visitor configData.
const (
	DefaultPort    = 502
	DefaultSlaveID = 1
)

// deviceConfig is what the mapper serves of one device: resolved from the
// Device and its DeviceModel, compared whole to tell whether a change of
// either needs the device's worker restarted.
type deviceConfig struct {
	id      mqtt.DeviceID
	addr    string // host:port
	slaveID uint8
	timeout time.Duration
	props   []propConfig // sorted by name
}

// propConfig is one property the mapper reads (and writes, if writable).
type propConfig struct {
	name     string
	typ      api.PropertyType
	writable bool
	register Register
	offset   uint16
	limit    uint16
	scale    float64
	// decimals is how many decimals a scaled value keeps: those of scale
	// (0.1 keeps 1), so that 215 × 0.1 reports "21.5", not
	// "21.500000000000004". -1 formats the shortest exact value.
	decimals       int
	dataType       DataType
	isSwap         bool
	isRegisterSwap bool
	slaveID        uint8
	collectCycle   time.Duration
	reportCycle    time.Duration
}

// defaults are what the mapper's Config gives devices that say nothing.
type defaults struct {
	collectCycle time.Duration
	timeout      time.Duration
}

// errNoModel says the device's model is not (yet) known: the metaserver's
// devices and models come in on separate watches, so a new device may come
// before its model.
var errNoModel = errors.New("model not found")

// minCycle bounds how often a property is read.
const minCycle = 10 * time.Millisecond

// resolve builds the config of a modbus Device from its spec and model.
// An error of the device as a whole (no address, no model) comes back as
// err; an error of one property leaves that property out and is listed in
// propErrs. Every error names the field it is about.
func resolve(d *api.Device, m *api.DeviceModel, def defaults) (cfg deviceConfig, propErrs []error, err error) {
	cfg = deviceConfig{id: mqtt.DeviceID{Namespace: d.Namespace, Name: d.Name}, timeout: def.timeout}
	if err := cfg.id.Validate(); err != nil {
		return cfg, nil, err
	}
	if m == nil {
		return cfg, nil, fmt.Errorf("spec.deviceModelRef: %w: %s/%s", errNoModel, d.Namespace, modelName(d))
	}
	cd := configData{data: d.Spec.Protocol.ConfigData, path: "spec.protocol.configData"}
	ip, err := cd.str("ip", "")
	if err != nil {
		return cfg, nil, err
	}
	if ip == "" {
		return cfg, nil, fmt.Errorf("%s.ip: required: the device's address", cd.path)
	}
	port, err := cd.integer("port", DefaultPort, 1, 65535)
	if err != nil {
		return cfg, nil, err
	}
	cfg.addr = net.JoinHostPort(ip, strconv.FormatInt(port, 10))
	slave, err := cd.integer("slaveID", DefaultSlaveID, 0, 255)
	if err != nil {
		return cfg, nil, err
	}
	cfg.slaveID = uint8(slave)
	if ms, err := cd.integer("timeout", 0, 0, 3_600_000); err != nil {
		return cfg, nil, err
	} else if ms > 0 {
		cfg.timeout = time.Duration(ms) * time.Millisecond
	}

	for i := range d.Spec.Properties {
		dp := &d.Spec.Properties[i]
		path := fmt.Sprintf("spec.properties[%d]", i)
		if dp.Visitors.ProtocolName == "" && len(dp.Visitors.ConfigData) == 0 {
			continue // nothing to read: the property is set or read by others
		}
		p, err := resolveProperty(dp, m.Property(dp.Name), cfg.slaveID, def, path)
		if err != nil {
			propErrs = append(propErrs, err)
			continue
		}
		cfg.props = append(cfg.props, p)
	}
	slices.SortFunc(cfg.props, func(a, b propConfig) int { return strings.Compare(a.name, b.name) })
	return cfg, propErrs, nil
}

func modelName(d *api.Device) string {
	if d.Spec.DeviceModelRef == nil {
		return ""
	}
	return d.Spec.DeviceModelRef.Name
}

func resolveProperty(dp *api.DeviceProperty, mp *api.ModelProperty, slaveID uint8, def defaults, path string) (propConfig, error) {
	if mp == nil {
		return propConfig{}, fmt.Errorf("%s.name: property %q is not in the device's model", path, dp.Name)
	}
	if n := dp.Visitors.ProtocolName; n != "" && n != ProtocolName {
		return propConfig{}, fmt.Errorf("%s.visitors.protocolName: %q, want %q", path, n, ProtocolName)
	}
	p := propConfig{name: dp.Name, typ: mp.Type, slaveID: slaveID, collectCycle: def.collectCycle}
	if dp.CollectCycle < 0 || dp.ReportCycle < 0 {
		return p, fmt.Errorf("%s: collectCycle %d or reportCycle %d is negative", path, dp.CollectCycle, dp.ReportCycle)
	}
	if dp.CollectCycle > 0 {
		p.collectCycle = max(time.Duration(dp.CollectCycle)*time.Millisecond, minCycle)
	}
	p.reportCycle = p.collectCycle
	if dp.ReportCycle > 0 {
		p.reportCycle = max(time.Duration(dp.ReportCycle)*time.Millisecond, minCycle)
	}

	cd := configData{data: dp.Visitors.ConfigData, path: path + ".visitors.configData"}
	reg, err := cd.str("register", "")
	if err != nil {
		return p, err
	}
	p.register = Register(reg)
	switch p.register {
	case CoilRegister, DiscreteInputRegister, InputRegister, HoldingRegister:
	case "":
		return p, fmt.Errorf("%s.register: required: one of CoilRegister, DiscreteInputRegister, InputRegister, HoldingRegister", cd.path)
	default:
		return p, fmt.Errorf("%s.register: %q is none of CoilRegister, DiscreteInputRegister, InputRegister, HoldingRegister", cd.path, reg)
	}
	if _, ok := cd.data["offset"]; !ok {
		return p, fmt.Errorf("%s.offset: required: the address of the first register", cd.path)
	}
	off, err := cd.integer("offset", 0, 0, 65535)
	if err != nil {
		return p, err
	}
	p.offset = uint16(off)
	if s, err := cd.integer("slaveID", int64(slaveID), 0, 255); err != nil {
		return p, err
	} else {
		p.slaveID = uint8(s)
	}
	if p.scale, err = cd.float("scale", 1); err != nil {
		return p, err
	}
	if p.scale == 0 || math.IsInf(p.scale, 0) || math.IsNaN(p.scale) {
		return p, fmt.Errorf("%s.scale: %v: want a finite number other than 0", cd.path, p.scale)
	}
	p.decimals = scaleDecimals(p.scale)
	if p.isSwap, err = cd.boolean("isSwap"); err != nil {
		return p, err
	}
	if p.isRegisterSwap, err = cd.boolean("isRegisterSwap"); err != nil {
		return p, err
	}
	dt, err := cd.str("dataType", "")
	if err != nil {
		return p, err
	}
	p.dataType = DataType(strings.ToLower(dt))
	if p.dataType == "" {
		p.dataType = defaultDataType(p.register, p.typ, cd.data["limit"])
	}
	limit, err := cd.integer("limit", defaultLimit(p.register, p.dataType), 1, 2000)
	if err != nil {
		return p, err
	}
	p.limit = uint16(limit)
	if err := checkShape(p); err != nil {
		return p, fmt.Errorf("%s: %w", cd.path, err)
	}
	if mp.Writable() && p.register.writable() {
		p.writable = true
	}
	return p, nil
}

// defaultDataType is the data type a visitor without one gets: a bit for
// coils and discrete inputs; for registers, the property's type, with
// FLOAT and DOUBLE read as an integer (scaled) from one register unless the
// limit says 2 or 4 registers.
func defaultDataType(r Register, t api.PropertyType, limit any) DataType {
	if r.bits() {
		if t == api.TypeBoolean {
			return DataBoolean
		}
		return DataUint
	}
	switch t {
	case api.TypeBoolean:
		return DataBoolean
	case api.TypeString, api.TypeBytes:
		return DataString
	case api.TypeFloat, api.TypeDouble:
		switch n, _ := number(limit); n {
		case 2:
			return DataFloat
		case 4:
			return DataDouble
		}
	}
	return DataInt
}

func defaultLimit(r Register, dt DataType) int64 {
	switch {
	case r.bits():
		return 1
	case dt == DataFloat:
		return 2
	case dt == DataDouble:
		return 4
	}
	return 1
}

// checkShape checks that the data type fits the register, the limit and
// the property's type.
func checkShape(p propConfig) error {
	bad := func(format string, args ...any) error { return fmt.Errorf(format, args...) }
	switch p.dataType {
	case DataInt, DataUint:
		if p.register.bits() {
			if p.limit > 64 {
				return bad("limit %d: an %s of coils holds at most 64", p.limit, p.dataType)
			}
		} else if p.limit != 1 && p.limit != 2 && p.limit != 4 {
			return bad("limit %d: an %s is 1, 2 or 4 registers", p.limit, p.dataType)
		}
	case DataFloat:
		if p.register.bits() || (p.limit != 2 && p.limit != 4) {
			return bad("dataType float: 2 or 4 registers of a register table, not %d of %s", p.limit, p.register)
		}
	case DataDouble:
		if p.register.bits() || p.limit != 4 {
			return bad("dataType double: 4 registers of a register table, not %d of %s", p.limit, p.register)
		}
	case DataBoolean:
		if p.limit != 1 {
			return bad("limit %d: a boolean is 1 coil or register", p.limit)
		}
	case DataString:
		if p.register.bits() || p.limit > 125 {
			return bad("dataType string: at most 125 registers of a register table, not %d of %s", p.limit, p.register)
		}
	default:
		return bad("dataType %q is none of int, uint, float, double, boolean, string", p.dataType)
	}
	if !p.register.bits() && p.limit > 125 {
		return bad("limit %d: at most 125 registers are read at once", p.limit)
	}
	switch p.typ {
	case api.TypeInt, api.TypeFloat, api.TypeDouble:
		if p.dataType == DataString {
			return bad("dataType string cannot hold a %s property", p.typ)
		}
	case api.TypeBoolean:
		if p.dataType == DataString || p.dataType == DataFloat || p.dataType == DataDouble {
			return bad("dataType %s cannot hold a BOOLEAN property", p.dataType)
		}
	case api.TypeString, api.TypeBytes:
		if p.dataType != DataString {
			return bad("a %s property needs dataType string, not %s", p.typ, p.dataType)
		}
	default:
		return bad("property type %q is not supported", p.typ)
	}
	return nil
}

// scaleDecimals is how many decimals the values of a scale keep: those of
// its shortest decimal form (0.1 → 1, 0.25 → 2, 10 → 0), or -1 for scale 1,
// which keeps a value as read.
func scaleDecimals(scale float64) int {
	if scale == 1 {
		return -1
	}
	s := strconv.FormatFloat(math.Abs(scale), 'f', -1, 64)
	if _, frac, ok := strings.Cut(s, "."); ok {
		return len(frac)
	}
	return 0
}

// configData reads typed fields of a configData map; errors name the field
// under path.
type configData struct {
	data api.ConfigData
	path string
}

func (c configData) str(key, def string) (string, error) {
	v, ok := c.data[key]
	if !ok || v == nil {
		return def, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s.%s: %v is not a string", c.path, key, v)
	}
	return s, nil
}

func (c configData) boolean(key string) (bool, error) {
	v, ok := c.data[key]
	if !ok || v == nil {
		return false, nil
	}
	switch b := v.(type) {
	case bool:
		return b, nil
	case string:
		if p, err := strconv.ParseBool(b); err == nil {
			return p, nil
		}
	}
	return false, fmt.Errorf("%s.%s: %v is not true or false", c.path, key, v)
}

// number reads a JSON number (float64 or int64 as decoders give them) or a
// decimal string, as KubeEdge's YAML often quotes them.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case int64:
		return float64(n), true
	case int:
		return float64(n), true
	case string:
		f, err := strconv.ParseFloat(n, 64)
		return f, err == nil
	}
	return 0, false
}

func (c configData) float(key string, def float64) (float64, error) {
	v, ok := c.data[key]
	if !ok || v == nil {
		return def, nil
	}
	f, ok := number(v)
	if !ok {
		return 0, fmt.Errorf("%s.%s: %v is not a number", c.path, key, v)
	}
	return f, nil
}

func (c configData) integer(key string, def, lo, hi int64) (int64, error) {
	v, ok := c.data[key]
	if !ok || v == nil {
		return def, nil
	}
	f, ok := number(v)
	if !ok || f != math.Trunc(f) {
		return 0, fmt.Errorf("%s.%s: %v is not a whole number", c.path, key, v)
	}
	if f < float64(lo) || f > float64(hi) {
		return 0, fmt.Errorf("%s.%s: %v is not in %d to %d", c.path, key, v, lo, hi)
	}
	return int64(f), nil
}
