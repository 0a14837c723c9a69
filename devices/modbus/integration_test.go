//go:build integration

package modbus

import (
	"errors"
	"net"
	"os/exec"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/devices/modbus/modbustest"
)

// The Client against a real device: pymodbus's server (Debian's
// python3-pymodbus). testdata/pymodbus_device.py fills its tables.
func TestClientAgainstPymodbus(t *testing.T) {
	dev := modbustest.StartPymodbus(t, 0)
	c := newClient(t, dev, 2*time.Second)
	ctx := t.Context()

	if v, err := c.ReadHoldingRegisters(ctx, 1, 1, 3); err != nil || !reflect.DeepEqual(v, []uint16{10, 20, 30}) {
		t.Fatalf("holding registers: %v %v", v, err)
	}
	if v, err := c.ReadInputRegisters(ctx, 1, 0, 2); err != nil || !reflect.DeepEqual(v, []uint16{1000, 1001}) {
		t.Fatalf("input registers: %v %v", v, err)
	}
	if v, err := c.ReadCoils(ctx, 1, 0, 10); err != nil || !reflect.DeepEqual(v, []bool{true, false, true, false, true, false, true, false, true, false}) {
		t.Fatalf("coils: %v %v", v, err)
	}
	if v, err := c.ReadDiscreteInputs(ctx, 1, 0, 4); err != nil || !reflect.DeepEqual(v, []bool{true, false, false, true}) {
		t.Fatalf("discrete inputs: %v %v", v, err)
	}

	if err := c.WriteSingleRegister(ctx, 1, 5, 0xA55A); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMultipleRegisters(ctx, 1, 6, []uint16{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if v, err := c.ReadHoldingRegisters(ctx, 1, 4, 5); err != nil || !reflect.DeepEqual(v, []uint16{40, 0xA55A, 1, 2, 3}) {
		t.Fatalf("after writes: %v %v", v, err)
	}
	if err := c.WriteSingleCoil(ctx, 1, 1, true); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMultipleCoils(ctx, 1, 20, []bool{false, true, true, false, true, true, true, true, false, true}); err != nil {
		t.Fatal(err)
	}
	if v, err := c.ReadCoils(ctx, 1, 19, 12); err != nil ||
		!reflect.DeepEqual(v, []bool{false, false, true, true, false, true, true, true, true, false, true, true}) {
		t.Fatalf("coils after writes: %v %v", v, err)
	}

	// Past its 200 registers: exception 2, and the connection stays.
	_, err := c.ReadHoldingRegisters(ctx, 1, 250, 1)
	var ex *Exception
	if !errors.As(err, &ex) || ex.Code != ExIllegalDataAddress {
		t.Fatalf("illegal address: %v", err)
	}
	if v, err := c.ReadHoldingRegisters(ctx, 1, 2, 1); err != nil || v[0] != 20 {
		t.Fatalf("after the exception: %v %v", v, err)
	}

	// Round trips against pymodbus, for the record.
	const n = 200
	start := time.Now()
	for i := range n {
		if err := c.WriteSingleRegister(ctx, 1, 9, uint16(i)); err != nil {
			t.Fatal(err)
		}
		if v, err := c.ReadHoldingRegisters(ctx, 1, 9, 1); err != nil || v[0] != uint16(i) {
			t.Fatalf("read back %v %v", v, err)
		}
	}
	t.Logf("write + read back against pymodbus: %v per pair (%d pairs)", time.Since(start)/n, n)
}

// The Client against a pymodbus that answers as unit 3 only.
func TestClientUnitAgainstPymodbus(t *testing.T) {
	dev := modbustest.StartPymodbus(t, 3)
	c := newClient(t, dev, 2*time.Second)
	if v, err := c.ReadHoldingRegisters(t.Context(), 3, 1, 1); err != nil || v[0] != 10 {
		t.Fatalf("unit 3: %v %v", v, err)
	}
	// pymodbus does not answer another unit at all: the request times out.
	c2 := newClient(t, dev, 500*time.Millisecond)
	if _, err := c2.ReadHoldingRegisters(t.Context(), 4, 1, 1); err == nil {
		t.Fatal("unit 4 answered")
	}
}

// mbpoll (Debian) as an outside master of our Server.
func TestServerAgainstMbpoll(t *testing.T) {
	if _, err := exec.LookPath("mbpoll"); err != nil {
		t.Fatal("mbpoll not installed (hack/install-deps.sh installs it)")
	}
	s := startServer(t, ServerConfig{UnitID: 1})
	_, port, _ := net.SplitHostPort(s.Addr())
	mbpoll := func(args []string, writes ...string) string {
		t.Helper()
		// -0: PDU addresses; -1: poll once; -m tcp; -a unit. Values to
		// write follow the host.
		all := append([]string{"-m", "tcp", "-a", "1", "-0", "-1", "-p", port}, args...)
		all = append(append(all, "127.0.0.1"), writes...)
		out, err := exec.CommandContext(t.Context(), "mbpoll", all...).CombinedOutput()
		if err != nil {
			t.Fatalf("mbpoll %s: %v\n%s", strings.Join(all, " "), err, out)
		}
		return string(out)
	}
	values := func(out string) map[int]string {
		m := map[int]string{}
		for _, match := range regexp.MustCompile(`(?m)^\[(\d+)\]:\s+(\S+)`).FindAllStringSubmatch(out, -1) {
			k, _ := strconv.Atoi(match[1])
			m[k] = match[2]
		}
		return m
	}

	// Reads of each table.
	s.SetHoldingRegisters(10, 100, 200, 300)
	s.SetInputRegisters(20, 7, 65535)
	s.SetCoils(30, true, false, true)
	s.SetDiscreteInputs(40, false, true)
	for _, tc := range []struct {
		args []string
		want map[int]string
	}{
		{[]string{"-t", "4", "-r", "10", "-c", "3"}, map[int]string{10: "100", 11: "200", 12: "300"}},
		{[]string{"-t", "3", "-r", "20", "-c", "2"}, map[int]string{20: "7", 21: "65535"}},
		{[]string{"-t", "0", "-r", "30", "-c", "3"}, map[int]string{30: "1", 31: "0", 32: "1"}},
		{[]string{"-t", "1", "-r", "40", "-c", "2"}, map[int]string{40: "0", 41: "1"}},
	} {
		if got := values(mbpoll(tc.args)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("mbpoll %v: %v, want %v", tc.args, got, tc.want)
		}
	}

	// Writes: one register (function 6), several (16), coils (5 and 15).
	mbpoll([]string{"-t", "4", "-r", "50"}, "1234")
	mbpoll([]string{"-t", "4", "-r", "51"}, "1", "2", "3")
	mbpoll([]string{"-t", "0", "-r", "60"}, "1")
	mbpoll([]string{"-t", "0", "-r", "61"}, "1", "0", "1")
	if got := s.HoldingRegisters(50, 4); !reflect.DeepEqual(got, []uint16{1234, 1, 2, 3}) {
		t.Errorf("holding registers after mbpoll writes: %v", got)
	}
	if got := s.Coils(60, 4); !reflect.DeepEqual(got, []bool{true, true, false, true}) {
		t.Errorf("coils after mbpoll writes: %v", got)
	}

	// A unit the server is not: mbpoll reports the exception.
	all := []string{"-m", "tcp", "-a", "2", "-0", "-1", "-p", port, "-t", "4", "-r", "0", "127.0.0.1"}
	out, _ := exec.CommandContext(t.Context(), "mbpoll", all...).CombinedOutput()
	if !strings.Contains(strings.ToLower(string(out)), "target device failed to respond") {
		t.Errorf("mbpoll to unit 2: %s", out)
	}
}
