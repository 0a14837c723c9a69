// Package modbus is a small Modbus TCP client and server: the MBAP framing
// and the function codes a device mapper needs.
//
//	1  read coils                  5  write single coil
//	2  read discrete inputs        6  write single register
//	3  read holding registers     15  write multiple coils
//	4  read input registers       16  write multiple registers
//
// The Go module proxy serves none of the Go Modbus libraries here, and the
// protocol is small, so Tether carries its own; its tests run it against
// real peers from Debian: pymodbus's server as the device for the Client,
// and mbpoll as a master of the Server (build tag integration).
//
// Frames (frame.go) are the 7-byte MBAP header (transaction id, protocol id
// 0, length, unit id) and a PDU of at most 253 bytes; ReadFrame refuses
// anything else with an error wrapping ErrMalformed. Requests and responses
// are decoded strictly (pdu.go): a wrong length, byte count or quantity, or a
// write response that does not echo its request, is malformed. A device's
// exception response is an *Exception, so a caller can tell a device that
// refused (reachable) from one that could not be reached (Unreachable).
//
// Client is owned by one goroutine: one request at a time, a timeout per
// request, a fresh connection after any failure. Server holds the four
// tables in memory and answers each connection from its own goroutine; a
// test, the demo or the simulator plays a device by setting its input
// registers and watching writes (ServerConfig.OnWrite).
package modbus
