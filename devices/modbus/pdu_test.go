package modbus

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		pdu  []byte
		want Request
	}{
		{"read coils", []byte{1, 0, 5, 0, 10}, Request{Function: FuncReadCoils, Addr: 5, Count: 10}},
		{"read discrete inputs max", []byte{2, 0, 0, 0x07, 0xD0}, Request{Function: FuncReadDiscreteInputs, Count: 2000}},
		{"read holding", []byte{3, 0xFF, 0xFF, 0, 1}, Request{Function: FuncReadHoldingRegisters, Addr: 0xFFFF, Count: 1}},
		{"read input max", []byte{4, 0, 0, 0, 125}, Request{Function: FuncReadInputRegisters, Count: 125}},
		{"write coil on", []byte{5, 0, 3, 0xFF, 0}, Request{Function: FuncWriteSingleCoil, Addr: 3, Count: 1, Bits: []bool{true}}},
		{"write coil off", []byte{5, 0, 3, 0, 0}, Request{Function: FuncWriteSingleCoil, Addr: 3, Count: 1, Bits: []bool{false}}},
		{"write register", []byte{6, 0, 7, 0xAB, 0xCD}, Request{Function: FuncWriteSingleRegister, Addr: 7, Count: 1, Registers: []uint16{0xABCD}}},
		{"write coils", []byte{15, 0, 1, 0, 10, 2, 0b00000101, 0b10}, Request{Function: FuncWriteMultipleCoils, Addr: 1, Count: 10,
			Bits: []bool{true, false, true, false, false, false, false, false, false, true}}},
		{"write registers", []byte{16, 0, 2, 0, 2, 4, 0, 1, 0xFF, 0xFE}, Request{Function: FuncWriteMultipleRegisters, Addr: 2, Count: 2,
			Registers: []uint16{1, 0xFFFE}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ex := parseRequest(tc.pdu)
			if ex != nil {
				t.Fatal(ex)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if back := got.appendPDU(nil); !bytes.Equal(back, tc.pdu) {
				t.Fatalf("appendPDU = % x, want % x", back, tc.pdu)
			}
		})
	}
}

func TestParseRequestRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		pdu  []byte
		want ExceptionCode
	}{
		{"empty", nil, ExIllegalFunction},
		{"unknown function 7", []byte{7}, ExIllegalFunction},
		{"function 0x83", []byte{0x83, 0, 0, 0, 1}, ExIllegalFunction},
		{"read short", []byte{3, 0, 0, 0}, ExIllegalDataValue},
		{"read long", []byte{3, 0, 0, 0, 1, 0}, ExIllegalDataValue},
		{"read 0 registers", []byte{3, 0, 0, 0, 0}, ExIllegalDataValue},
		{"read 126 registers", []byte{4, 0, 0, 0, 126}, ExIllegalDataValue},
		{"read 2001 coils", []byte{1, 0, 0, 0x07, 0xD1}, ExIllegalDataValue},
		{"read past 65535", []byte{3, 0xFF, 0xFF, 0, 2}, ExIllegalDataAddress},
		{"coil value 0x1234", []byte{5, 0, 0, 0x12, 0x34}, ExIllegalDataValue},
		{"write register short", []byte{6, 0, 0, 1}, ExIllegalDataValue},
		{"write coils byte count off", []byte{15, 0, 0, 0, 10, 1, 0}, ExIllegalDataValue},
		{"write coils data short", []byte{15, 0, 0, 0, 10, 2, 0}, ExIllegalDataValue},
		{"write coils 0", []byte{15, 0, 0, 0, 0, 0}, ExIllegalDataValue},
		{"write registers byte count off", []byte{16, 0, 0, 0, 2, 3, 0, 0, 0}, ExIllegalDataValue},
		{"write registers 124", append([]byte{16, 0, 0, 0, 124, 248}, make([]byte, 248)...), ExIllegalDataValue},
		{"write registers past 65535", []byte{16, 0xFF, 0xFF, 0, 2, 4, 0, 0, 0, 0}, ExIllegalDataAddress},
		{"write registers header only", []byte{16, 0, 0, 0}, ExIllegalDataValue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ex := parseRequest(tc.pdu)
			if ex == nil || ex.Code != tc.want {
				t.Fatalf("got %v, want exception %s", ex, tc.want)
			}
		})
	}
}

func TestParseResponse(t *testing.T) {
	readHR := &Request{Function: FuncReadHoldingRegisters, Addr: 0, Count: 2}
	readCoils := &Request{Function: FuncReadCoils, Addr: 0, Count: 9}
	writeReg := &Request{Function: FuncWriteSingleRegister, Addr: 4, Count: 1, Registers: []uint16{9}}
	writeRegs := &Request{Function: FuncWriteMultipleRegisters, Addr: 4, Registers: []uint16{9, 8}}

	r, err := parseResponse(readHR, []byte{3, 4, 0, 1, 0x80, 0})
	if err != nil || !reflect.DeepEqual(r.Registers, []uint16{1, 0x8000}) {
		t.Fatalf("read holding: %v %v", r, err)
	}
	r, err = parseResponse(readCoils, []byte{1, 2, 0b10000001, 1})
	want := []bool{true, false, false, false, false, false, false, true, true}
	if err != nil || !reflect.DeepEqual(r.Bits, want) {
		t.Fatalf("read coils: %v %v", r, err)
	}
	if _, err := parseResponse(writeReg, []byte{6, 0, 4, 0, 9}); err != nil {
		t.Fatalf("write register echo: %v", err)
	}
	if _, err := parseResponse(writeRegs, []byte{16, 0, 4, 0, 2}); err != nil {
		t.Fatalf("write registers echo: %v", err)
	}

	_, err = parseResponse(readHR, []byte{0x83, 2})
	var ex *Exception
	if !errors.As(err, &ex) || ex.Code != ExIllegalDataAddress || ex.Function != FuncReadHoldingRegisters {
		t.Fatalf("exception: %v", err)
	}
	if Unreachable(err) {
		t.Fatal("an exception counts as unreachable")
	}

	for _, tc := range []struct {
		name string
		req  *Request
		pdu  []byte
	}{
		{"empty", readHR, nil},
		{"other function", readHR, []byte{4, 4, 0, 1, 0, 2}},
		{"exception of other function", readHR, []byte{0x84, 2}},
		{"long exception", readHR, []byte{0x83, 2, 0}},
		{"byte count short", readHR, []byte{3, 2, 0, 1}},
		{"byte count says more than sent", readHR, []byte{3, 4, 0, 1}},
		{"trailing byte", readHR, []byte{3, 4, 0, 1, 0, 2, 9}},
		{"no byte count", readCoils, []byte{1}},
		{"coil bytes wrong", readCoils, []byte{1, 1, 0xFF}},
		{"echo other value", writeReg, []byte{6, 0, 4, 0, 8}},
		{"echo other address", writeReg, []byte{6, 0, 5, 0, 9}},
		{"echo other quantity", writeRegs, []byte{16, 0, 4, 0, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseResponse(tc.req, tc.pdu)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			if Unreachable(err) {
				t.Fatal("a malformed answer counts as unreachable")
			}
		})
	}
}

// Every response the server builds is one parseResponse accepts.
func TestResponseRoundTrip(t *testing.T) {
	for _, req := range []*Request{
		{Function: FuncReadCoils, Addr: 1, Count: 17},
		{Function: FuncReadInputRegisters, Addr: 1, Count: 3},
		{Function: FuncWriteSingleCoil, Addr: 1, Count: 1, Bits: []bool{true}},
		{Function: FuncWriteMultipleCoils, Addr: 1, Count: 3, Bits: []bool{true, false, true}},
		{Function: FuncWriteMultipleRegisters, Addr: 1, Count: 1, Registers: []uint16{5}},
	} {
		resp := &Response{Bits: make([]bool, req.Count), Registers: make([]uint16, req.Count)}
		if req.Function == FuncReadCoils {
			resp.Registers = nil
			resp.Bits[16] = true
		} else {
			resp.Bits = nil
		}
		pdu := appendResponse(nil, req, resp)
		got, err := parseResponse(req, pdu)
		if err != nil {
			t.Fatalf("%s: %v", req.Function, err)
		}
		if req.Function == FuncReadCoils && !reflect.DeepEqual(got.Bits, resp.Bits) {
			t.Fatalf("bits %v, want %v", got.Bits, resp.Bits)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, seed := range [][]byte{
		{1, 0, 5, 0, 10}, {3, 0, 0, 0, 125}, {5, 0, 3, 0xFF, 0}, {6, 0, 7, 0xAB, 0xCD},
		{15, 0, 1, 0, 10, 2, 5, 2}, {16, 0, 2, 0, 2, 4, 0, 1, 0xFF, 0xFE}, {0x83, 2}, {},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, pdu []byte) {
		req, ex := parseRequest(pdu)
		if ex != nil {
			if ex.Code != ExIllegalFunction && ex.Code != ExIllegalDataValue && ex.Code != ExIllegalDataAddress {
				t.Fatalf("exception %v", ex)
			}
			return
		}
		// An accepted request encodes to what it was decoded from (but for
		// the unused bits of the last byte of coils, which the decoder
		// ignores and the encoder zeroes), and the server can answer it
		// within a PDU.
		back := req.appendPDU(nil)
		again, ex := parseRequest(back)
		if ex != nil || !reflect.DeepEqual(again, req) || len(back) != len(pdu) {
			t.Fatalf("appendPDU % x, parsed from % x: %v", back, pdu, ex)
		}
		if req.Function != FuncWriteMultipleCoils && !bytes.Equal(back, pdu) {
			t.Fatalf("appendPDU % x, parsed from % x", back, pdu)
		}
		resp := &Response{Bits: make([]bool, req.quantity()), Registers: make([]uint16, req.quantity())}
		switch req.Function {
		case FuncReadCoils, FuncReadDiscreteInputs:
			resp.Registers = nil
		default:
			resp.Bits = nil
		}
		out := appendResponse(nil, &req, resp)
		if len(out) > MaxPDU {
			t.Fatalf("response of %d bytes", len(out))
		}
		if _, err := parseResponse(&req, out); err != nil {
			t.Fatalf("own response refused: %v", err)
		}
	})
}

func FuzzParseResponse(f *testing.F) {
	f.Add(byte(3), uint16(2), []byte{3, 4, 0, 1, 0, 2})
	f.Add(byte(1), uint16(9), []byte{1, 2, 0xFF, 1})
	f.Add(byte(6), uint16(1), []byte{6, 0, 0, 0, 0})
	f.Add(byte(3), uint16(2), []byte{0x83, 2})
	f.Fuzz(func(t *testing.T, fc byte, count uint16, pdu []byte) {
		req := &Request{Function: FunctionCode(fc), Count: count}
		switch req.Function {
		case FuncWriteSingleCoil:
			req.Bits = []bool{true}
		case FuncWriteSingleRegister:
			req.Registers = []uint16{0}
		case FuncWriteMultipleCoils:
			req.Bits = make([]bool, count%MaxWriteBits)
		case FuncWriteMultipleRegisters:
			req.Registers = make([]uint16, count%MaxWriteRegisters)
		}
		if req.check() != nil {
			return
		}
		r, err := parseResponse(req, pdu)
		if err != nil {
			var ex *Exception
			if !errors.As(err, &ex) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		switch req.Function {
		case FuncReadCoils, FuncReadDiscreteInputs:
			if len(r.Bits) != int(count) {
				t.Fatalf("%d bits for %d", len(r.Bits), count)
			}
		case FuncReadHoldingRegisters, FuncReadInputRegisters:
			if len(r.Registers) != int(count) {
				t.Fatalf("%d registers for %d", len(r.Registers), count)
			}
		}
	})
}
