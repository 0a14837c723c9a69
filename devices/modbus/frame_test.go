package modbus

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

func hexFrame(tx uint16, pid uint16, length uint16, unit byte, pdu ...byte) []byte {
	return append([]byte{byte(tx >> 8), byte(tx), byte(pid >> 8), byte(pid), byte(length >> 8), byte(length), unit}, pdu...)
}

func TestReadFrame(t *testing.T) {
	buf := make([]byte, MaxFrame)
	good := hexFrame(0x1234, 0, 6, 7, 3, 0, 1, 0, 2)
	f, err := ReadFrame(bytes.NewReader(good), buf)
	if err != nil {
		t.Fatal(err)
	}
	if f.TxID != 0x1234 || f.Unit != 7 || !bytes.Equal(f.PDU, []byte{3, 0, 1, 0, 2}) {
		t.Fatalf("got %+v", f)
	}
	if back := AppendFrame(nil, f); !bytes.Equal(back, good) {
		t.Fatalf("AppendFrame = % x, want % x", back, good)
	}

	largest := hexFrame(1, 0, maxLength, 1, make([]byte, MaxPDU)...)
	if f, err := ReadFrame(bytes.NewReader(largest), buf); err != nil || len(f.PDU) != MaxPDU {
		t.Fatalf("largest frame: %v, pdu %d bytes", err, len(f.PDU))
	}

	for _, tc := range []struct {
		name string
		in   []byte
		want error
		msg  string
	}{
		{"empty stream", nil, io.EOF, ""},
		{"short header", good[:5], io.ErrUnexpectedEOF, ""},
		{"header only", good[:7], io.ErrUnexpectedEOF, ""},
		{"short pdu", good[:len(good)-1], io.ErrUnexpectedEOF, ""},
		{"protocol id 1", hexFrame(1, 1, 6, 1, 3, 0, 0, 0, 1), ErrMalformed, "protocol id 1"},
		{"length 0", hexFrame(1, 0, 0, 1), ErrMalformed, "length 0"},
		{"length 1 (no pdu)", hexFrame(1, 0, 1, 1), ErrMalformed, "length 1"},
		{"length 255", hexFrame(1, 0, 255, 1, make([]byte, 254)...), ErrMalformed, "length 255"},
		{"length 65535", hexFrame(1, 0, 0xFFFF, 1), ErrMalformed, "length 65535"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(tc.in), buf)
			if !errors.Is(err, tc.want) || !strings.Contains(errString(err), tc.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}

	if _, err := ReadFrame(bytes.NewReader(good), make([]byte, 10)); err == nil {
		t.Fatal("short buffer accepted")
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Two frames back to back are read one after the other, the second intact.
func TestReadFrameStream(t *testing.T) {
	a := hexFrame(1, 0, 6, 1, 3, 0, 0, 0, 1)
	b := hexFrame(2, 0, 3, 9, 0x83, 2)
	r := bytes.NewReader(append(slices.Clone(a), b...))
	buf := make([]byte, MaxFrame)
	for _, want := range []Frame{{TxID: 1, Unit: 1, PDU: a[7:]}, {TxID: 2, Unit: 9, PDU: b[7:]}} {
		f, err := ReadFrame(r, buf)
		if err != nil || f.TxID != want.TxID || f.Unit != want.Unit || !bytes.Equal(f.PDU, want.PDU) {
			t.Fatalf("got %+v, %v; want %+v", f, err, want)
		}
	}
	if _, err := ReadFrame(r, buf); err != io.EOF {
		t.Fatalf("after the frames: %v, want EOF", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add(hexFrame(1, 0, 6, 1, 3, 0, 0, 0, 1))
	f.Add(hexFrame(1, 0, 3, 1, 0x83, 2))
	f.Add(hexFrame(1, 1, 6, 1, 3, 0, 0, 0, 1))
	f.Add(hexFrame(1, 0, 0xFFFF, 1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		buf := make([]byte, MaxFrame)
		fr, err := ReadFrame(bytes.NewReader(in), buf)
		if err != nil {
			return
		}
		// A frame read back is the bytes it was read from.
		out := AppendFrame(nil, fr)
		if !bytes.Equal(out, in[:len(out)]) {
			t.Fatalf("re-encoded % x, read from % x", out, in)
		}
		if len(fr.PDU) < 1 || len(fr.PDU) > MaxPDU {
			t.Fatalf("pdu of %d bytes", len(fr.PDU))
		}
	})
}
