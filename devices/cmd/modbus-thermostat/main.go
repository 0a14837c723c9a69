// Command modbus-thermostat plays a Modbus TCP thermostat for the demo and
// for trying the mapper by hand: a devices/modbus Server whose tables are
//
//	input register 0     temperature, tenths of °C (int16)
//	holding register 0   setpoint, tenths of °C (int16; writable)
//	coil 0               power (writable)
//	discrete input 0     heating: power on and temperature below setpoint
//
// Every --tick the temperature moves 0.1 °C toward the setpoint while the
// power is on, and toward --ambient while it is off.
//
//	modbus-thermostat --addr 127.0.0.1:1502
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tether-edge/tether/devices/modbus"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "modbus-thermostat:", err)
		os.Exit(1)
	}
}

func tenths(c float64) uint16 { return uint16(int16(math.Round(c * 10))) }

func run() error {
	addr := flag.String("addr", "127.0.0.1:1502", "host:port to listen on")
	unit := flag.Uint("unit", 0, "the only unit id to answer (0: every unit)")
	tick := flag.Duration("tick", time.Second, "how often the temperature moves")
	temp := flag.Float64("temperature", 18, "temperature at start, °C")
	setpoint := flag.Float64("setpoint", 21, "setpoint at start, °C")
	ambient := flag.Float64("ambient", 15, "temperature the room drifts to with the power off, °C")
	flag.Parse()
	if *unit > 255 || *tick <= 0 {
		return fmt.Errorf("--unit %d (0 to 255) or --tick %s (positive) out of range", *unit, *tick)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := modbus.NewServer(modbus.ServerConfig{Addr: *addr, UnitID: uint8(*unit), Logger: log,
		OnWrite: func(w modbus.Write) {
			log.Info("written", slog.String("function", w.Function.String()), slog.Int("addr", int(w.Addr)), slog.Int("count", w.Count))
		}})
	if err != nil {
		return err
	}
	s.SetInputRegisters(0, tenths(*temp))
	s.SetHoldingRegisters(0, tenths(*setpoint))
	s.SetCoils(0, true)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		t := time.NewTicker(*tick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			cur := int16(s.InputRegisters(0, 1)[0])
			target := int16(tenths(*ambient))
			on := s.Coils(0, 1)[0]
			if on {
				target = int16(s.HoldingRegisters(0, 1)[0])
			}
			switch {
			case cur < target:
				cur++
			case cur > target:
				cur--
			}
			s.SetInputRegisters(0, uint16(cur))
			s.SetDiscreteInputs(0, on && cur < int16(s.HoldingRegisters(0, 1)[0]))
		}
	}()
	return s.Start(ctx)
}
