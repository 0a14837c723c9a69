package store

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/tether-edge/tether/protocol"
)

// The outbox holds upstream frames until the hub acknowledges them. Each entry
// has a key naming what it is about ("node", "pod/<uid>", ...): a new frame
// for a key replaces the unsent or unacknowledged one, so the outbox holds at
// most one status per object however long the link is down. Every entry gets
// a new sequence number from a counter that only grows, which is both its
// order and its Seq on the wire.

// Outbox keys. Keys of the same prefix may be dropped, oldest first, when the
// outbox is full (see Enqueue).
const (
	OutboxNodeStatus = "node"
)

// OutboxPodStatus is the outbox key of the status of the pod with uid.
func OutboxPodStatus(uid string) string { return "pod/" + uid }

// OutboxPodTerminated is the outbox key of the termination of the pod with uid.
func OutboxPodTerminated(uid string) string { return "podterm/" + uid }

// OutboxDeviceStatus is the outbox key of the reported twins and state of
// the device with uid.
func OutboxDeviceStatus(uid string) string { return "device/" + uid }

// OutboxEvent is the outbox key of an event; id tells events apart (events
// about the same thing with the same reason may share an id and coalesce).
func OutboxEvent(id string) string { return "event/" + id }

// droppablePrefix is the prefix of entries Enqueue may drop when the outbox is
// full: events are advisory, statuses are not.
const droppablePrefix = "event/"

type outboxEntry struct {
	Seq   uint64 `cbor:"1,keyasint"`
	Frame []byte `cbor:"2,keyasint"`
	// At is when the key was first queued, in Unix nanoseconds, kept when
	// a newer frame replaces the entry: what the cloud has not heard since
	// then. Zero in entries written before it existed.
	At int64 `cbor:"3,keyasint,omitempty"`
}

// OutboxItem is one queued upstream frame.
type OutboxItem struct {
	Seq   uint64
	Key   string
	Frame []byte // the encoded frame, Seq included
}

// Enqueue puts the frame f under key, replacing what the key held, and returns
// its new Seq. f.Seq is overwritten. Options.OutboxMax bounds the number of
// entries: when a new key would go over it, the oldest event is dropped, and
// if there is none Enqueue fails with ErrOutboxFull. Once the transaction
// commits, OutboxChanged receives.
func (t *Tx) Enqueue(key string, f *protocol.Frame) (uint64, error) {
	t.enqueued = true
	max := t.db.opts.OutboxMax
	ob := t.tx.Bucket(bucketOutbox)
	seqs := t.tx.Bucket(bucketOutboxSeq)
	old := ob.Get([]byte(key))
	if old == nil {
		if t.OutboxLen() >= max {
			if err := t.dropOldestEvent(); err != nil {
				return 0, err
			}
		}
		if err := t.addOutboxLen(1); err != nil {
			return 0, err
		}
	}
	at := time.Now().UnixNano()
	if old != nil {
		var e outboxEntry
		if err := cbor.Unmarshal(old, &e); err != nil {
			return 0, fmt.Errorf("enqueue %s: %w", key, err)
		}
		if err := seqs.Delete(u64(e.Seq)); err != nil {
			return 0, fmt.Errorf("enqueue %s: %w", key, err)
		}
		if e.At != 0 {
			at = e.At
		}
	}
	seq, err := ob.NextSequence()
	if err != nil {
		return 0, fmt.Errorf("enqueue %s: %w", key, err)
	}
	f.Seq = seq
	if prev := prevOf(f); prev != nil {
		last := t.tx.Bucket(bucketOutboxLast)
		*prev = 0
		if v := last.Get([]byte(key)); len(v) == 8 {
			*prev = binary.BigEndian.Uint64(v)
		}
		if err := last.Put([]byte(key), u64(seq)); err != nil {
			return 0, fmt.Errorf("enqueue %s: %w", key, err)
		}
	}
	b, err := protocol.Encode(f)
	if err != nil {
		return 0, fmt.Errorf("enqueue %s: %w", key, err)
	}
	v, err := cbor.Marshal(outboxEntry{Seq: seq, Frame: b, At: at})
	if err != nil {
		return 0, fmt.Errorf("enqueue %s: %w", key, err)
	}
	if err := ob.Put([]byte(key), v); err != nil {
		return 0, fmt.Errorf("enqueue %s: %w", key, err)
	}
	if err := seqs.Put(u64(seq), []byte(key)); err != nil {
		return 0, fmt.Errorf("enqueue %s: %w", key, err)
	}
	return seq, nil
}

// prevOf returns the Prev field of a pod or device status frame, or nil.
func prevOf(f *protocol.Frame) *uint64 {
	switch {
	case f.PodStatus != nil:
		return &f.PodStatus.Prev
	case f.DeviceStatus != nil:
		return &f.DeviceStatus.Prev
	}
	return nil
}

// pruneOutboxLast forgets the last Seq of pod and device status keys whose
// pod or device the store no longer holds and whose entry is not queued.
func pruneOutboxLast(tx *bolt.Tx) error {
	pods, devs, ob := tx.Bucket(objectBucket(protocol.KindPod)), tx.Bucket(objectBucket(protocol.KindDevice)), tx.Bucket(bucketOutbox)
	last := tx.Bucket(bucketOutboxLast)
	var gone [][]byte
	err := last.ForEach(func(k, _ []byte) error {
		pod, isPod := strings.CutPrefix(string(k), "pod/")
		dev, isDev := strings.CutPrefix(string(k), "device/")
		held := isPod && pods.Get([]byte(pod)) != nil || isDev && devs.Get([]byte(dev)) != nil
		if !held && ob.Get(k) == nil {
			gone = append(gone, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("prune outbox: %w", err)
	}
	for _, k := range gone {
		if err := last.Delete(k); err != nil {
			return fmt.Errorf("prune outbox: %w", err)
		}
	}
	return nil
}

func (t *Tx) dropOldestEvent() error {
	c := t.tx.Bucket(bucketOutboxSeq).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if strings.HasPrefix(string(v), droppablePrefix) {
			key := string(v)
			if err := c.Delete(); err != nil {
				return fmt.Errorf("drop event: %w", err)
			}
			if err := t.tx.Bucket(bucketOutbox).Delete([]byte(key)); err != nil {
				return fmt.Errorf("drop event: %w", err)
			}
			return t.addOutboxLen(-1)
		}
	}
	return ErrOutboxFull
}

// Acked removes the entry with seq, if the outbox still holds it. An entry
// replaced by a newer frame since it was sent has another seq and stays.
func (t *Tx) Acked(seq uint64) error {
	seqs := t.tx.Bucket(bucketOutboxSeq)
	sk := u64(seq)
	key := seqs.Get(sk)
	if key == nil {
		return nil
	}
	if err := t.tx.Bucket(bucketOutbox).Delete(key); err != nil {
		return fmt.Errorf("ack %d: %w", seq, err)
	}
	if err := seqs.Delete(sk); err != nil {
		return fmt.Errorf("ack %d: %w", seq, err)
	}
	return t.addOutboxLen(-1)
}

// Outbox calls fn for every queued frame with a Seq above after, in Seq order,
// until fn returns false.
func (t *Tx) Outbox(after uint64, fn func(OutboxItem) bool) error {
	c := t.tx.Bucket(bucketOutboxSeq).Cursor()
	ob := t.tx.Bucket(bucketOutbox)
	for k, v := c.Seek(u64(after + 1)); k != nil; k, v = c.Next() {
		var e outboxEntry
		if err := cbor.Unmarshal(ob.Get(v), &e); err != nil {
			return fmt.Errorf("outbox %s: %w", v, err)
		}
		if !fn(OutboxItem{Seq: binary.BigEndian.Uint64(k), Key: string(v), Frame: e.Frame}) {
			return nil
		}
	}
	return nil
}

// OutboxOldest returns when the oldest entry was first queued (see
// outboxEntry.At); ok is false when the outbox is empty or its entries
// predate the field. It reads every entry.
func (t *Tx) OutboxOldest() (oldest time.Time, ok bool, err error) {
	var min int64
	err = t.tx.Bucket(bucketOutbox).ForEach(func(k, v []byte) error {
		var e outboxEntry
		if err := cbor.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("outbox %s: %w", k, err)
		}
		if e.At != 0 && (min == 0 || e.At < min) {
			min = e.At
		}
		return nil
	})
	if err != nil || min == 0 {
		return time.Time{}, false, err
	}
	return time.Unix(0, min), true, nil
}

// OutboxLen returns the number of queued frames.
func (t *Tx) OutboxLen() int {
	v := t.tx.Bucket(bucketMeta).Get(keyOutboxLen)
	if v == nil {
		return 0
	}
	return int(binary.BigEndian.Uint64(v))
}

var keyOutboxLen = []byte("outbox-len")

func (t *Tx) addOutboxLen(d int) error {
	n := t.OutboxLen() + d
	if n < 0 {
		n = 0
	}
	if err := t.tx.Bucket(bucketMeta).Put(keyOutboxLen, u64(uint64(n))); err != nil {
		return fmt.Errorf("outbox length: %w", err)
	}
	return nil
}
