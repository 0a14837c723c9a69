package modbus

import (
	"encoding/binary"
	"errors"
	"io"
)

// The MBAP header (Modbus Application Protocol header) that precedes every
// PDU on TCP: transaction id, protocol id (0), length of what follows
// (unit id and PDU), unit id.
const (
	headerLen = 7
	// maxLength is the largest MBAP length field: the unit id and a PDU
	// of MaxPDU bytes.
	maxLength = 1 + MaxPDU
	// MaxFrame is the largest frame on the wire.
	MaxFrame = headerLen - 1 + maxLength
)

// Frame is one Modbus TCP application data unit.
type Frame struct {
	// TxID pairs a response with its request.
	TxID uint16
	// Unit is the unit identifier: the slave id of a device behind a
	// gateway, often 1 or 255 for a device spoken to directly.
	Unit uint8
	// PDU is the function code and its data, at most MaxPDU bytes.
	PDU []byte
}

// AppendFrame appends the frame's bytes to b. The PDU must be 1 to MaxPDU
// bytes long.
func AppendFrame(b []byte, f Frame) []byte {
	b = binary.BigEndian.AppendUint16(b, f.TxID)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(1+len(f.PDU)))
	b = append(b, f.Unit)
	return append(b, f.PDU...)
}

// ReadFrame reads one frame from r into buf (which must hold MaxFrame
// bytes; the returned PDU aliases it). It returns io.EOF when r ends before
// a frame starts, io.ErrUnexpectedEOF when it ends inside one, and an error
// wrapping ErrMalformed for a protocol id other than 0 or a length outside
// 2 to 254; after that the stream cannot be trusted and the caller closes
// it.
func ReadFrame(r io.Reader, buf []byte) (Frame, error) {
	if len(buf) < MaxFrame {
		return Frame{}, errors.New("modbus: ReadFrame buffer shorter than MaxFrame")
	}
	h := buf[:headerLen]
	if _, err := io.ReadFull(r, h); err != nil {
		return Frame{}, err
	}
	f := Frame{TxID: be16(h), Unit: h[6]}
	if pid := be16(h[2:]); pid != 0 {
		return f, malformed("MBAP protocol id %d, want 0", pid)
	}
	n := int(be16(h[4:]))
	if n < 2 || n > maxLength {
		return f, malformed("MBAP length %d, want 2 to %d", n, maxLength)
	}
	pdu := buf[headerLen : headerLen+n-1]
	if _, err := io.ReadFull(r, pdu); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return f, err
	}
	f.PDU = pdu
	return f, nil
}
