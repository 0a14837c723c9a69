package modbus

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// FunctionCode is a Modbus function code.
type FunctionCode uint8

// The function codes this package speaks.
const (
	FuncReadCoils              FunctionCode = 1
	FuncReadDiscreteInputs     FunctionCode = 2
	FuncReadHoldingRegisters   FunctionCode = 3
	FuncReadInputRegisters     FunctionCode = 4
	FuncWriteSingleCoil        FunctionCode = 5
	FuncWriteSingleRegister    FunctionCode = 6
	FuncWriteMultipleCoils     FunctionCode = 15
	FuncWriteMultipleRegisters FunctionCode = 16
)

// exceptionBit marks an exception response: its function code is the
// request's with the high bit set.
const exceptionBit = 0x80

func (f FunctionCode) String() string {
	switch f {
	case FuncReadCoils:
		return "read coils"
	case FuncReadDiscreteInputs:
		return "read discrete inputs"
	case FuncReadHoldingRegisters:
		return "read holding registers"
	case FuncReadInputRegisters:
		return "read input registers"
	case FuncWriteSingleCoil:
		return "write single coil"
	case FuncWriteSingleRegister:
		return "write single register"
	case FuncWriteMultipleCoils:
		return "write multiple coils"
	case FuncWriteMultipleRegisters:
		return "write multiple registers"
	}
	return fmt.Sprintf("function %d", uint8(f))
}

// Quantity limits of the Modbus application protocol (V1.1b3): a PDU holds
// at most 253 bytes.
const (
	MaxReadBits       = 2000 // coils or discrete inputs in one read
	MaxReadRegisters  = 125  // registers in one read
	MaxWriteBits      = 1968 // coils in one write multiple coils
	MaxWriteRegisters = 123  // registers in one write multiple registers
	MaxPDU            = 253  // bytes of a PDU: function code and data
)

// Values of a coil in write single coil.
const (
	coilOn  = 0xFF00
	coilOff = 0x0000
)

// ExceptionCode is the code of a Modbus exception response.
type ExceptionCode uint8

// The exception codes of the Modbus application protocol.
const (
	ExIllegalFunction         ExceptionCode = 0x01
	ExIllegalDataAddress      ExceptionCode = 0x02
	ExIllegalDataValue        ExceptionCode = 0x03
	ExServerDeviceFailure     ExceptionCode = 0x04
	ExAcknowledge             ExceptionCode = 0x05
	ExServerDeviceBusy        ExceptionCode = 0x06
	ExMemoryParityError       ExceptionCode = 0x08
	ExGatewayPathUnavailable  ExceptionCode = 0x0A
	ExGatewayTargetNoResponse ExceptionCode = 0x0B
)

func (c ExceptionCode) String() string {
	switch c {
	case ExIllegalFunction:
		return "illegal function"
	case ExIllegalDataAddress:
		return "illegal data address"
	case ExIllegalDataValue:
		return "illegal data value"
	case ExServerDeviceFailure:
		return "server device failure"
	case ExAcknowledge:
		return "acknowledge"
	case ExServerDeviceBusy:
		return "server device busy"
	case ExMemoryParityError:
		return "memory parity error"
	case ExGatewayPathUnavailable:
		return "gateway path unavailable"
	case ExGatewayTargetNoResponse:
		return "gateway target device failed to respond"
	}
	return fmt.Sprintf("exception %d", uint8(c))
}

// Exception is an exception response from a device: it understood the
// request and refused it. The device is reachable. Test with errors.As.
type Exception struct {
	Function FunctionCode
	Code     ExceptionCode
}

func (e *Exception) Error() string {
	return fmt.Sprintf("modbus: %s: exception %d (%s)", e.Function, uint8(e.Code), e.Code)
}

// ErrMalformed is wrapped by the errors for frames and PDUs that break the
// protocol: a bad MBAP header, a PDU of the wrong length, a response that
// does not answer its request.
var ErrMalformed = errors.New("modbus: malformed")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Request is one Modbus request, decoded.
//
// Reads (1 to 4) use Addr and Count. Write single coil (5) uses Addr and
// Bits[0]; write single register (6) Addr and Registers[0]. Write multiple
// coils (15) and registers (16) use Addr and Bits or Registers, whose length
// is the quantity; Count is set to it by parseRequest.
type Request struct {
	Function  FunctionCode
	Addr      uint16
	Count     uint16
	Bits      []bool
	Registers []uint16
}

// quantity is how many coils or registers the request touches.
func (r *Request) quantity() int {
	switch r.Function {
	case FuncWriteSingleCoil, FuncWriteSingleRegister:
		return 1
	case FuncWriteMultipleCoils:
		return len(r.Bits)
	case FuncWriteMultipleRegisters:
		return len(r.Registers)
	}
	return int(r.Count)
}

// check returns the exception the request earns by its own shape: an
// unknown function, a quantity out of the protocol's limits, or a range that
// runs past address 65535. It says nothing of what a server holds.
func (r *Request) check() *Exception {
	max := 0
	switch r.Function {
	case FuncReadCoils, FuncReadDiscreteInputs:
		max = MaxReadBits
	case FuncReadHoldingRegisters, FuncReadInputRegisters:
		max = MaxReadRegisters
	case FuncWriteSingleCoil:
		max = 1
		if len(r.Bits) != 1 {
			return &Exception{r.Function, ExIllegalDataValue}
		}
	case FuncWriteSingleRegister:
		max = 1
		if len(r.Registers) != 1 {
			return &Exception{r.Function, ExIllegalDataValue}
		}
	case FuncWriteMultipleCoils:
		max = MaxWriteBits
	case FuncWriteMultipleRegisters:
		max = MaxWriteRegisters
	default:
		return &Exception{r.Function, ExIllegalFunction}
	}
	q := r.quantity()
	if q < 1 || q > max {
		return &Exception{r.Function, ExIllegalDataValue}
	}
	if int(r.Addr)+q > 1<<16 {
		return &Exception{r.Function, ExIllegalDataAddress}
	}
	return nil
}

// appendPDU appends the request's PDU to b. The request must pass check.
func (r *Request) appendPDU(b []byte) []byte {
	b = append(b, byte(r.Function))
	b = binary.BigEndian.AppendUint16(b, r.Addr)
	switch r.Function {
	case FuncWriteSingleCoil:
		v := uint16(coilOff)
		if r.Bits[0] {
			v = coilOn
		}
		b = binary.BigEndian.AppendUint16(b, v)
	case FuncWriteSingleRegister:
		b = binary.BigEndian.AppendUint16(b, r.Registers[0])
	case FuncWriteMultipleCoils:
		packed := packBits(r.Bits)
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.Bits)))
		b = append(b, byte(len(packed)))
		b = append(b, packed...)
	case FuncWriteMultipleRegisters:
		b = binary.BigEndian.AppendUint16(b, uint16(len(r.Registers)))
		b = append(b, byte(2*len(r.Registers)))
		for _, v := range r.Registers {
			b = binary.BigEndian.AppendUint16(b, v)
		}
	default:
		b = binary.BigEndian.AppendUint16(b, r.Count)
	}
	return b
}

// parseRequest decodes a request PDU as a server receives it. A PDU it
// cannot accept gets the exception to answer with: illegal function for an
// unknown code, illegal data value for a wrong length, byte count or
// quantity, illegal data address for a range past 65535.
func parseRequest(pdu []byte) (Request, *Exception) {
	if len(pdu) == 0 {
		return Request{}, &Exception{0, ExIllegalFunction}
	}
	r := Request{Function: FunctionCode(pdu[0])}
	bad := &Exception{r.Function, ExIllegalDataValue}
	data := pdu[1:]
	switch r.Function {
	case FuncReadCoils, FuncReadDiscreteInputs, FuncReadHoldingRegisters, FuncReadInputRegisters:
		if len(data) != 4 {
			return r, bad
		}
		r.Addr, r.Count = be16(data), be16(data[2:])
	case FuncWriteSingleCoil:
		if len(data) != 4 {
			return r, bad
		}
		r.Addr = be16(data)
		switch be16(data[2:]) {
		case coilOn:
			r.Bits = []bool{true}
		case coilOff:
			r.Bits = []bool{false}
		default:
			return r, bad
		}
		r.Count = 1
	case FuncWriteSingleRegister:
		if len(data) != 4 {
			return r, bad
		}
		r.Addr, r.Registers, r.Count = be16(data), []uint16{be16(data[2:])}, 1
	case FuncWriteMultipleCoils:
		if len(data) < 5 {
			return r, bad
		}
		r.Addr, r.Count = be16(data), be16(data[2:])
		n := int(data[4])
		if n != (int(r.Count)+7)/8 || len(data) != 5+n || r.Count > MaxWriteBits {
			return r, bad
		}
		r.Bits = unpackBits(data[5:], int(r.Count))
	case FuncWriteMultipleRegisters:
		if len(data) < 5 {
			return r, bad
		}
		r.Addr, r.Count = be16(data), be16(data[2:])
		n := int(data[4])
		if n != 2*int(r.Count) || len(data) != 5+n || r.Count > MaxWriteRegisters {
			return r, bad
		}
		r.Registers = make([]uint16, r.Count)
		for i := range r.Registers {
			r.Registers[i] = be16(data[5+2*i:])
		}
	default:
		return r, &Exception{r.Function, ExIllegalFunction}
	}
	if ex := r.check(); ex != nil {
		return r, ex
	}
	return r, nil
}

// Response is the data of a response: the values read, for reads; nothing
// for writes, whose echo parseResponse checks.
type Response struct {
	Bits      []bool
	Registers []uint16
}

// appendResponse appends the PDU answering req with resp to b.
func appendResponse(b []byte, req *Request, resp *Response) []byte {
	if req.Function == FuncWriteSingleCoil || req.Function == FuncWriteSingleRegister {
		// The echo of the request.
		return req.appendPDU(b)
	}
	b = append(b, byte(req.Function))
	switch req.Function {
	case FuncReadCoils, FuncReadDiscreteInputs:
		packed := packBits(resp.Bits)
		b = append(b, byte(len(packed)))
		b = append(b, packed...)
	case FuncReadHoldingRegisters, FuncReadInputRegisters:
		b = append(b, byte(2*len(resp.Registers)))
		for _, v := range resp.Registers {
			b = binary.BigEndian.AppendUint16(b, v)
		}
	case FuncWriteMultipleCoils, FuncWriteMultipleRegisters:
		b = binary.BigEndian.AppendUint16(b, req.Addr)
		b = binary.BigEndian.AppendUint16(b, uint16(req.quantity()))
	}
	return b
}

func appendException(b []byte, ex *Exception) []byte {
	return append(b, byte(ex.Function)|exceptionBit, byte(ex.Code))
}

// parseResponse decodes the PDU answering req, as a client receives it. An
// exception response returns an *Exception; anything that does not answer
// req (another function, a wrong length or byte count, a write echo that
// differs) an error wrapping ErrMalformed.
func parseResponse(req *Request, pdu []byte) (Response, error) {
	if len(pdu) == 0 {
		return Response{}, malformed("empty response PDU")
	}
	fc := FunctionCode(pdu[0])
	if fc == req.Function|exceptionBit {
		if len(pdu) != 2 {
			return Response{}, malformed("%s: exception response of %d bytes, want 2", req.Function, len(pdu))
		}
		return Response{}, &Exception{Function: req.Function, Code: ExceptionCode(pdu[1])}
	}
	if fc != req.Function {
		return Response{}, malformed("%s: response has function code %d", req.Function, uint8(fc))
	}
	data := pdu[1:]
	switch req.Function {
	case FuncReadCoils, FuncReadDiscreteInputs:
		n := (int(req.Count) + 7) / 8
		if len(data) < 1 || int(data[0]) != n || len(data) != 1+n {
			return Response{}, malformed("%s of %d: response of %d bytes, want byte count %d", req.Function, req.Count, len(pdu), n)
		}
		return Response{Bits: unpackBits(data[1:], int(req.Count))}, nil
	case FuncReadHoldingRegisters, FuncReadInputRegisters:
		n := 2 * int(req.Count)
		if len(data) < 1 || int(data[0]) != n || len(data) != 1+n {
			return Response{}, malformed("%s of %d: response of %d bytes, want byte count %d", req.Function, req.Count, len(pdu), n)
		}
		regs := make([]uint16, req.Count)
		for i := range regs {
			regs[i] = be16(data[1+2*i:])
		}
		return Response{Registers: regs}, nil
	}
	// Writes: the response echoes the request's address and value or
	// quantity.
	want := req.appendPDU(nil)
	if req.Function == FuncWriteMultipleCoils || req.Function == FuncWriteMultipleRegisters {
		want = want[:5]
	}
	if string(pdu) != string(want) {
		return Response{}, malformed("%s at %d: response % x does not echo the request % x", req.Function, req.Addr, pdu, want)
	}
	return Response{}, nil
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

// packBits packs bits, the first in the lowest bit of the first byte.
func packBits(bits []bool) []byte {
	out := make([]byte, (len(bits)+7)/8)
	for i, v := range bits {
		if v {
			out[i/8] |= 1 << (i % 8)
		}
	}
	return out
}

func unpackBits(b []byte, n int) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = b[i/8]&(1<<(i%8)) != 0
	}
	return out
}
