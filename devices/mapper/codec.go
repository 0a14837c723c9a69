package mapper

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/tether-edge/tether/devices/api"
)

// raw is what a property's registers hold: registers for the register
// tables, bits for coils and discrete inputs.
type raw struct {
	regs []uint16
	bits []bool
}

func (r raw) equal(o raw) bool {
	if len(r.regs) != len(o.regs) || len(r.bits) != len(o.bits) {
		return false
	}
	for i := range r.regs {
		if r.regs[i] != o.regs[i] {
			return false
		}
	}
	for i := range r.bits {
		if r.bits[i] != o.bits[i] {
			return false
		}
	}
	return true
}

// bytesOf lays registers out as the property reads them: big-endian
// registers, in reverse order if isRegisterSwap, each register's two bytes
// swapped if isSwap. Both swaps are their own inverse, so registersOf undoes
// it with the same steps.
func (p *propConfig) bytesOf(regs []uint16) []byte {
	b := make([]byte, 2*len(regs))
	for i, v := range regs {
		j := i
		if p.isRegisterSwap {
			j = len(regs) - 1 - i
		}
		binary.BigEndian.PutUint16(b[2*j:], v)
	}
	if p.isSwap {
		for i := 0; i+1 < len(b); i += 2 {
			b[i], b[i+1] = b[i+1], b[i]
		}
	}
	return b
}

func (p *propConfig) registersOf(b []byte) []uint16 {
	b = append([]byte(nil), b...)
	if p.isSwap {
		for i := 0; i+1 < len(b); i += 2 {
			b[i], b[i+1] = b[i+1], b[i]
		}
	}
	regs := make([]uint16, len(b)/2)
	for i := range regs {
		j := i
		if p.isRegisterSwap {
			j = len(regs) - 1 - i
		}
		regs[j] = binary.BigEndian.Uint16(b[2*i:])
	}
	return regs
}

// decode turns what the property's registers hold into its value as the
// twin carries it: formatted by the model's type, scaled.
func (p *propConfig) decode(r raw) (string, error) {
	if p.dataType == DataString {
		return strings.TrimRight(string(p.bytesOf(r.regs)), "\x00"), nil
	}
	var (
		i       int64
		u       uint64
		f       float64
		isFloat bool
		signed  = p.dataType == DataInt
	)
	switch {
	case p.register.bits():
		for k, on := range r.bits {
			if on {
				u |= 1 << k
			}
		}
		i = int64(u)
		if signed && len(r.bits) < 64 && len(r.bits) > 0 && u&(1<<(len(r.bits)-1)) != 0 {
			i = int64(u) - 1<<len(r.bits) // two's complement of limit bits
		}
	default:
		b := p.bytesOf(r.regs)
		switch p.dataType {
		case DataFloat:
			isFloat = true
			if len(b) == 4 {
				f = float64(math.Float32frombits(binary.BigEndian.Uint32(b)))
			} else {
				f = math.Float64frombits(binary.BigEndian.Uint64(b))
			}
		case DataDouble:
			isFloat, f = true, math.Float64frombits(binary.BigEndian.Uint64(b))
		default:
			for _, c := range b {
				u = u<<8 | uint64(c)
			}
			i = int64(u)
			if signed && len(b) < 8 && u&(1<<(8*len(b)-1)) != 0 {
				i = int64(u) - 1<<(8*len(b))
			}
		}
	}
	if p.dataType == DataBoolean || p.typ == api.TypeBoolean {
		nonzero := u != 0
		if isFloat {
			nonzero = f != 0
		}
		if p.typ == api.TypeBoolean {
			return strconv.FormatBool(nonzero), nil
		}
		if nonzero {
			u, i = 1, 1
		} else {
			u, i = 0, 0
		}
	}
	if !isFloat {
		if p.scale == 1 && p.typ == api.TypeInt {
			// Exact, with no trip through float64.
			if signed {
				return strconv.FormatInt(i, 10), nil
			}
			if u > math.MaxInt64 {
				return "", fmt.Errorf("value %d does not fit an INT", u)
			}
			return strconv.FormatUint(u, 10), nil
		}
		if signed {
			f = float64(i)
		} else {
			f = float64(u)
		}
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "", fmt.Errorf("value %v is not a number the twin can hold", f)
	}
	v := f * p.scale
	switch p.typ {
	case api.TypeInt:
		r := math.Round(v)
		if r > math.MaxInt64 || r < math.MinInt64 {
			return "", fmt.Errorf("value %v does not fit an INT", v)
		}
		return strconv.FormatInt(int64(r), 10), nil
	case api.TypeFloat, api.TypeDouble:
		bits := 64
		if p.typ == api.TypeFloat {
			bits = 32
			if p.dataType == DataFloat && len(r.regs) == 2 && p.scale == 1 {
				// A float32 as read: its shortest form, "21.5" not
				// "21.5000002...".
				return strconv.FormatFloat(f, 'f', -1, 32), nil
			}
		}
		if p.decimals >= 0 {
			pow := math.Pow(10, float64(p.decimals))
			v = math.Round(v*pow) / pow
		}
		return strconv.FormatFloat(v, 'f', -1, bits), nil
	}
	return "", fmt.Errorf("property type %q is not supported", p.typ)
}

// encode turns a value of the property (a desired value from the twin) into
// what its registers must hold: unscaled, rounded to an integer for integer
// data types, checked against the range of the registers.
func (p *propConfig) encode(value string) (raw, error) {
	if p.dataType == DataString {
		n := 2 * int(p.limit)
		if len(value) > n {
			return raw{}, fmt.Errorf("value of %d bytes does not fit %d registers (%d bytes)", len(value), p.limit, n)
		}
		b := make([]byte, n)
		copy(b, value)
		return raw{regs: p.registersOf(b)}, nil
	}
	var v float64
	switch p.typ {
	case api.TypeBoolean:
		b, err := strconv.ParseBool(value)
		if err != nil {
			return raw{}, fmt.Errorf("value %q is not true or false", value)
		}
		if b {
			v = 1
		}
	case api.TypeInt:
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			return raw{}, fmt.Errorf("value %q is not an INT", value)
		}
		if p.scale == 1 && (p.dataType == DataInt || p.dataType == DataUint) {
			return p.encodeInt(n, 0, false)
		}
		v = float64(n)
	case api.TypeFloat, api.TypeDouble:
		f, err := strconv.ParseFloat(value, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return raw{}, fmt.Errorf("value %q is not a finite number", value)
		}
		v = f
	default:
		return raw{}, fmt.Errorf("property type %q is not supported", p.typ)
	}
	v /= p.scale
	switch p.dataType {
	case DataFloat:
		b := make([]byte, 2*p.limit)
		if p.limit == 2 {
			if math.Abs(v) > math.MaxFloat32 {
				return raw{}, fmt.Errorf("value %v does not fit a 32-bit float", v)
			}
			binary.BigEndian.PutUint32(b, math.Float32bits(float32(v)))
		} else {
			binary.BigEndian.PutUint64(b, math.Float64bits(v))
		}
		return raw{regs: p.registersOf(b)}, nil
	case DataDouble:
		b := make([]byte, 8)
		binary.BigEndian.PutUint64(b, math.Float64bits(v))
		return raw{regs: p.registersOf(b)}, nil
	case DataBoolean:
		if v != 0 {
			v = 1
		}
	}
	r := math.Round(v)
	if r >= math.MaxInt64 || r < math.MinInt64 {
		return raw{}, fmt.Errorf("value %v is out of range", v)
	}
	return p.encodeInt(int64(r), r, true)
}

// encodeInt lays an integer out in the property's registers or coils,
// refusing one out of their range. f is the value as a float when it came
// through one (for the error message).
func (p *propConfig) encodeInt(n int64, f float64, viaFloat bool) (raw, error) {
	width := 16 * int(p.limit) // bits
	if p.register.bits() {
		width = int(p.limit)
	}
	if p.dataType == DataBoolean {
		width = 1
	}
	var lo, hi int64
	signed := p.dataType == DataInt
	switch {
	case width >= 64 && signed:
		lo, hi = math.MinInt64, math.MaxInt64
	case width >= 64:
		lo, hi = 0, math.MaxInt64
	case signed:
		lo, hi = -1<<(width-1), 1<<(width-1)-1
	default:
		lo, hi = 0, 1<<width-1
	}
	if n < lo || n > hi {
		what := strconv.FormatInt(n, 10)
		if viaFloat && p.scale != 1 {
			what = fmt.Sprintf("%s (the value divided by scale %v)", strconv.FormatFloat(f, 'f', -1, 64), p.scale)
		}
		return raw{}, fmt.Errorf("%s is out of the range %d to %d of %d bits (%s)", what, lo, hi, width, p.dataType)
	}
	u := uint64(n)
	if p.register.bits() {
		bits := make([]bool, p.limit)
		for k := range bits {
			bits[k] = u&(1<<k) != 0
		}
		return raw{bits: bits}, nil
	}
	b := make([]byte, 2*p.limit)
	for k := len(b) - 1; k >= 0; k-- {
		b[k] = byte(u)
		u >>= 8
	}
	return raw{regs: p.registersOf(b)}, nil
}
