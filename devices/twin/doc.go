// Package twin is the device twin of an edge node as a pure engine: for
// each device bound to the node it holds the model (property types, access
// modes, bounds), the desired (expected) values from the cloud with their
// versions, the reported (actual) values with their timestamps, and the
// device state.
//
// The engine does no IO, takes no locks, starts no goroutines and reads no
// clock. Engine.Step takes a typed Input (a device from the cloud, a decoded
// MQTT request, a Flush) and the current time, and returns an Output: MQTT
// publications to make (results, delta, document, membership), the status to
// send to the cloud (coalesced per property between Flushes) and an error
// when the input was refused. A small loop around it decodes MQTT messages
// with package mqtt, publishes, and sends status up; the engine is tested
// with tables, without a broker or sleeps.
//
// Rules, following KubeEdge's edge:
//   - A twin/update is checked whole before any of it applies: an unknown
//     device gets 404; an unknown property, a value of the wrong type or out
//     of the model's bounds, or an expected value for a ReadOnly property
//     gets 400 with a reason, and nothing changes.
//   - A device or mapper may report the actual value of any property. An
//     expected value set at the edge counts as an edge version; the cloud's
//     next DeviceUpserted replaces it (the cloud's desired state wins).
//   - The delta lists the properties whose expected value differs from the
//     actual one; it follows every accepted update and every change of the
//     desired values, as long as it is not empty.
//
// Persistence is the caller's: Flush lists the devices whose twin changed
// (Output.Changed), Snapshot gives the twin to save (values, timestamps,
// versions, state), and after a restart DeviceRestored puts it back under
// the device the cloud last sent. The answer to a change (Output.AfterSave)
// is published only once the Flush after it is saved, so a device is never
// told a report was taken that a crash can still lose. Republish publishes what a mapper needs
// after the broker connection was down (membership and deltas).
package twin
