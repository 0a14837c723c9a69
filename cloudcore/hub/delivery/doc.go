// Package delivery is the delivery state of one hub session as a pure
// engine: what the node acknowledged holding, the object messages in flight
// and when they were sent, the resync that starts each session, and the
// session's timers.
//
// The engine does no IO, takes no locks, starts no goroutines and reads no
// clock. Engine.Step takes a typed Input and the current time and returns an
// Output: object messages to send (Upserts without their data, Deletes),
// whether it wants the node's desired set (Reconcile), the ResyncDone to
// send, whether to report the node alive, when to Tick next, and counters.
// The hub's session (package hub) is the shell around it: one owner
// goroutine that reads the desired set from the Source, encodes and queues
// the frames, feeds back what became of each message (Sent), and arms one
// timer. The engine is tested with text scripts (testdata/*.txt), without a
// network or sleeps.
//
// Rules:
//   - A session starts with the node's Hello (Connected): its inventory is
//     what the node holds. Until every difference is sent and acknowledged,
//     the session is resyncing; then ResyncDone goes out, with the counts.
//   - Level-based: given the desired set (Desired), the engine sends every
//     object whose version the node did not acknowledge and that is not in
//     flight at that version, then the deletes of what the node holds and
//     should not, users first (pods before config maps and secrets, devices
//     before their models). So a newer version always replaces an older one
//     not sent yet, and changes to one object while the window is full
//     coalesce into one message of the newest version.
//   - At most Config.Window messages are unacknowledged. An ack (or a
//     rejection, which counts as delivered) frees room; an ack of a message
//     also settles the older messages of the same object still in flight
//     (the node applies them in order), so a late ack of an older version
//     never overwrites a newer one. Duplicate acks and acks of unknown
//     messages are ignored.
//   - A message unacknowledged for Config.ResendAfter is forgotten, and the
//     next reconcile sends the object's current version again under a new
//     sequence number; a late ack of the forgotten one is ignored. Meanwhile
//     the node may or may not hold what the message said: the object counts
//     as held at no version, so that it is deleted if the node should no
//     longer hold it (an upsert that expired for an object deleted since)
//     and sent again if it should (a delete that expired for an object
//     wanted again).
//   - An object deleted while its upsert was in flight, or changed while its
//     delete was, is reconciled again when the ack comes.
//   - Kinds the source does not serve yet (Desired.Served) are neither
//     deleted nor counted as gone; kinds newer than the session's protocol
//     version (protocol.Kind.Since) are neither sent nor asked for.
package delivery
