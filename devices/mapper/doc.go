// Package mapper is Tether's reference device mapper: it bridges the Modbus
// TCP devices of one edge node to the KubeEdge twin topics on MQTT, so that
// their values reach the Device status in the cloud and desired values set
// in the cloud reach the device. It speaks only MQTT and HTTP to the edge,
// as a KubeEdge mapper would, and runs as its own process
// (devices/cmd/modbus-mapper).
//
// # Where devices come from
//
// The mapper lists and watches devices.tether.io/v1beta1 Devices and
// DeviceModels with client-go informers on the edge's metaserver
// (edgecore/metaserver, http://127.0.0.1:10550), which serves them from the
// edge store: so it starts and follows changes with the cloud away, and a
// change of a Device or its model applies without a restart. It serves the
// Devices whose spec.nodeName is its node and whose
// spec.protocol.protocolName is "modbus".
//
// # Configuration in the Device
//
// The field names are those of KubeEdge's modbus mapper. The device's
// spec.protocol.configData: ip (required), port (default 502), slaveID (the
// unit id, default 1), timeout (ms, per request). Each property read from
// the device has visitors.configData:
//
//	register        CoilRegister, DiscreteInputRegister, InputRegister or HoldingRegister (required)
//	offset          address of the first register or coil, 0-based (required)
//	limit           how many registers or coils (default: what dataType needs)
//	dataType        int, uint, float, double, boolean, string (default: from the property's type)
//	scale           the value is the number read times scale (default 1)
//	isSwap          swap the two bytes of each register
//	isRegisterSwap  reverse the order of the registers (word swap)
//	slaveID         this property's unit id, if not the device's
//
// Numbers may be JSON numbers or quoted, as KubeEdge's YAML often has them.
// The property's collectCycle (ms; default Config.CollectCycle) is how often
// it is read, its reportCycle (default: its collectCycle) how often an
// unchanged value is published again; a changed value is published at once.
// A bad visitor gets an error naming the field (logged) and leaves out only
// that property; a bad device-level configData, or a missing model, leaves
// out the device.
//
// # On MQTT (package devices/mqtt builds topics and payloads)
//
//   - $hw/events/device/<ns>/<name>/twin/update: the values read, as
//     "actual" with a timestamp and the property's type in lower case.
//   - $hw/events/device/<ns>/<name>/state/update: "online" once the device
//     answers (an exception counts: the device is there), "offline" when it
//     cannot be reached (refused, reset, timeout); published on a change and
//     again after each broker reconnect, with the last values.
//   - $hw/events/device/+/+/twin/update/delta (subscribed): for each
//     property in the delta that is ReadWrite in the model and lives in
//     coils or holding registers, the desired value is encoded (divided by
//     scale, checked against the registers' range), written (function 5,
//     6, 15 or 16), read back and reported. While the registers hold what
//     was written, the property reports the desired value as given, so that
//     "21.50" written and read back as 215 tenths matches "21.50" and the
//     edge's delta ends. A value the registers cannot hold is logged and
//     not written.
//   - .../twin/update/result and .../state/update/result (subscribed): the
//     edge's refusals (say, a value out of the model's range) are logged.
//
// # Goroutines
//
// One owner goroutine holds the devices and models and a worker per served
// device; informer and paho callbacks only hand it typed events. Each
// worker owns its device's modbus.Client (one request at a time) and its
// timers; the owner reaches it through an inbox (desired values, coalesced
// per property; a resend after reconnect). A worker whose configuration
// changed is stopped and a new one started.
package mapper
