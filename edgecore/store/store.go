// Package store is edgecore's persistent state: every object the node
// received from the cloud, the outbox of updates waiting to go up, and the
// twins of the node's devices (twins.go). It is one bbolt file; callers
// work inside View and Update closures with typed helpers on Tx, one bucket
// per kind.
//
// Values read inside a transaction are copied out, so they stay valid after
// the transaction ends.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fxamacker/cbor/v2"
	bolt "go.etcd.io/bbolt"

	"github.com/tether-edge/tether/protocol"
)

// schemaVersion is stored in the meta bucket; a file of another version is
// refused rather than misread.
const schemaVersion = 1

var (
	bucketMeta      = []byte("meta")
	bucketOutbox    = []byte("outbox")     // key -> outboxEntry
	bucketOutboxSeq = []byte("outbox-seq") // seq (8 bytes, big endian) -> key
	// bucketOutboxLast holds the Seq last given to each pod and device
	// status key (outbox.go, PodStatus.Prev), kept after the entry is
	// acknowledged.
	bucketOutboxLast = []byte("outbox-last") // key -> seq (8 bytes, big endian)
	keySchema        = []byte("schema")
	keyEpoch         = []byte("epoch")
)

func objectBucket(k protocol.Kind) []byte { return []byte("objects/" + k.String()) }
func nameBucket(k protocol.Kind) []byte   { return []byte("names/" + k.String()) }

// DB is an open store.
type DB struct {
	db   *bolt.DB
	opts Options
	// failedWrites counts transactions whose changes could not be written
	// (FailedWrites).
	failedWrites atomic.Int64
	// outboxc holds a token when a committed transaction queued something
	// in the outbox since the last receive (OutboxChanged).
	outboxc chan struct{}
	// epoch is the store's epoch (Epoch), set at Open.
	epoch uint64
}

// Options are the store's settings.
type Options struct {
	// OutboxMax bounds the outbox (see Tx.Enqueue; default
	// DefaultOutboxMax). It is the one bound of the node's outbox: every
	// component queues through Enqueue.
	OutboxMax int
}

// DefaultOutboxMax is Options.OutboxMax's default.
const DefaultOutboxMax = 10000

func (o *Options) validate() error {
	if o.OutboxMax == 0 {
		o.OutboxMax = DefaultOutboxMax
	}
	if o.OutboxMax < 0 {
		return fmt.Errorf("open store: outbox max %d is negative", o.OutboxMax)
	}
	return nil
}

// Open opens or creates the store at path with the default Options.
func Open(path string) (*DB, error) { return OpenWith(path, Options{}) }

// OpenWith opens or creates the store at path.
func OpenWith(path string, opts Options) (*DB, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	var epoch uint64
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keySchema); v != nil {
			if got := binary.BigEndian.Uint64(v); got != schemaVersion {
				return fmt.Errorf("schema version %d, this build reads %d", got, schemaVersion)
			}
		} else if err := meta.Put(keySchema, u64(schemaVersion)); err != nil {
			return err
		}
		if v := meta.Get(keyEpoch); len(v) == 8 {
			epoch = binary.BigEndian.Uint64(v)
		} else {
			if epoch, err = newEpoch(epochFile(path), time.Now()); err != nil {
				return err
			}
			if err := meta.Put(keyEpoch, u64(epoch)); err != nil {
				return err
			}
		}
		names := [][]byte{bucketOutbox, bucketOutboxSeq, bucketOutboxLast, bucketTwins}
		for _, k := range protocol.Kinds {
			names = append(names, objectBucket(k), nameBucket(k))
		}
		for _, n := range names {
			if _, err := tx.CreateBucketIfNotExists(n); err != nil {
				return err
			}
		}
		return pruneOutboxLast(tx)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &DB{db: db, opts: opts, outboxc: make(chan struct{}, 1), epoch: epoch}, nil
}

// Epoch returns the store's epoch: a number chosen when the store was made
// (or first opened by a build that knew epochs), larger than the epoch of
// any store made before at the same path, as far as the epoch file tells
// (newEpoch). With the Seq of an outbox entry, which only grows within a
// store, it orders the node's reports (protocol.StatusOrder).
func (d *DB) Epoch() uint64 { return d.epoch }

// epochFile is where the epoch of the store at path is kept besides the
// store itself: a store moved aside as corrupt (OpenOrRecover) cannot be
// read, but the epoch file survives it, and the new store's epoch is made
// larger.
func epochFile(path string) string { return path + ".epoch" }

// newEpoch returns the epoch of a new store: now in Unix nanoseconds, or
// one more than the epoch recorded in file if the clock is behind it (a
// node without a real-time clock that booted with the wrong time, say), and
// records it in file (written to a temporary file, synced and renamed). A
// missing file is no previous epoch; an unreadable one is an error, as the
// order of the node's reports depends on it. Only a node that lost both the
// store and this file and whose clock went back past the old store's birth
// gets an epoch below the old one: its reports to pods the old store
// reported on are then dropped as stale until someone removes the pods'
// fence annotation (see cloudcore/status).
func newEpoch(file string, now time.Time) (uint64, error) {
	epoch := uint64(max(now.UnixNano(), 1))
	switch b, err := os.ReadFile(file); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return 0, fmt.Errorf("store epoch: %w", err)
	default:
		prev, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil {
			return 0, fmt.Errorf("store epoch file %s: %w", file, perr)
		}
		if prev >= epoch {
			if prev == math.MaxUint64 {
				return 0, fmt.Errorf("store epoch file %s: epoch %d has no successor", file, prev)
			}
			epoch = prev + 1
		}
	}
	tmp := file + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("store epoch: %w", err)
	}
	_, err = f.WriteString(strconv.FormatUint(epoch, 10) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, file)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("store epoch: %w", err)
	}
	return epoch, nil
}

// OutboxChanged receives after a transaction that queued something in the
// outbox committed. It has one receiver: the agent, which sends the outbox
// up.
func (d *DB) OutboxChanged() <-chan struct{} { return d.outboxc }

// Close closes the store.
func (d *DB) Close() error { return d.db.Close() }

// Path returns the file the store lives in.
func (d *DB) Path() string { return d.db.Path() }

// Update runs fn in a read-write transaction, committed if fn returns nil.
// A commit that fails (a full disk, an IO error) leaves the store as it
// was, is counted (FailedWrites), and is the caller's to try again.
func (d *DB) Update(fn func(*Tx) error) error {
	var fnErr error
	t := &Tx{db: d}
	err := d.db.Update(func(tx *bolt.Tx) error { t.tx = tx; fnErr = fn(t); return fnErr })
	if err != nil && fnErr == nil {
		d.failedWrites.Add(1)
	}
	if err == nil && t.enqueued {
		select {
		case d.outboxc <- struct{}{}:
		default:
		}
	}
	return err
}

// FailedWrites counts the Update transactions since Open whose changes
// could not be written: a full disk (ENOSPC) or another IO error at
// commit. Errors of the transaction's own function are not counted.
func (d *DB) FailedWrites() int64 { return d.failedWrites.Load() }

// View runs fn in a read-only transaction.
func (d *DB) View(fn func(*Tx) error) error {
	return d.db.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx, db: d}) })
}

// Tx is a store transaction.
type Tx struct {
	tx *bolt.Tx
	db *DB
	// enqueued: Enqueue was called (OutboxChanged).
	enqueued bool
}

// record is how an object is kept: the wire object less its kind and UID,
// which are the bucket and the key.
type record struct {
	Namespace       string `cbor:"1,keyasint,omitempty"`
	Name            string `cbor:"2,keyasint"`
	ResourceVersion string `cbor:"3,keyasint"`
	Data            []byte `cbor:"4,keyasint"`
}

// PutObject stores o, replacing the object with the same kind and UID.
func (t *Tx) PutObject(o *protocol.Object) error {
	if !o.Kind.Valid() || o.UID == "" {
		return fmt.Errorf("put object: bad kind %d or empty uid", o.Kind)
	}
	v, err := cbor.Marshal(record{Namespace: o.Namespace, Name: o.Name, ResourceVersion: o.ResourceVersion, Data: o.Data})
	if err != nil {
		return fmt.Errorf("put %s %s/%s: %w", o.Kind, o.Namespace, o.Name, err)
	}
	if err := t.tx.Bucket(objectBucket(o.Kind)).Put([]byte(o.UID), v); err != nil {
		return fmt.Errorf("put %s %s/%s: %w", o.Kind, o.Namespace, o.Name, err)
	}
	return t.tx.Bucket(nameBucket(o.Kind)).Put(nameKey(o.Namespace, o.Name), []byte(o.UID))
}

// DeleteObject removes the object of kind with uid. Deleting a missing object
// is not an error. It returns the deleted object, if there was one.
func (t *Tx) DeleteObject(kind protocol.Kind, uid string) (*protocol.Object, error) {
	o, err := t.Object(kind, uid)
	if err != nil || o == nil {
		return nil, err
	}
	if err := t.tx.Bucket(objectBucket(kind)).Delete([]byte(uid)); err != nil {
		return nil, fmt.Errorf("delete %s %s: %w", kind, uid, err)
	}
	names := t.tx.Bucket(nameBucket(kind))
	nk := nameKey(o.Namespace, o.Name)
	// A newer object of the same name may have replaced this one already.
	if string(names.Get(nk)) == uid {
		if err := names.Delete(nk); err != nil {
			return nil, fmt.Errorf("delete %s %s: %w", kind, uid, err)
		}
	}
	return o, nil
}

// Object returns the object of kind with uid, or nil if there is none.
func (t *Tx) Object(kind protocol.Kind, uid string) (*protocol.Object, error) {
	b := t.tx.Bucket(objectBucket(kind))
	if b == nil {
		return nil, fmt.Errorf("get object: unknown kind %d", kind)
	}
	v := b.Get([]byte(uid))
	if v == nil {
		return nil, nil
	}
	return decodeRecord(kind, uid, v)
}

// ObjectByName returns the object of kind named namespace/name, or nil.
func (t *Tx) ObjectByName(kind protocol.Kind, namespace, name string) (*protocol.Object, error) {
	b := t.tx.Bucket(nameBucket(kind))
	if b == nil {
		return nil, fmt.Errorf("get object: unknown kind %d", kind)
	}
	uid := b.Get(nameKey(namespace, name))
	if uid == nil {
		return nil, nil
	}
	return t.Object(kind, string(uid))
}

// ForEachObject calls fn for every object of kind, in UID order. The object
// passed to fn is a copy.
func (t *Tx) ForEachObject(kind protocol.Kind, fn func(*protocol.Object) error) error {
	b := t.tx.Bucket(objectBucket(kind))
	if b == nil {
		return fmt.Errorf("list objects: unknown kind %d", kind)
	}
	return b.ForEach(func(k, v []byte) error {
		o, err := decodeRecord(kind, string(k), v)
		if err != nil {
			return err
		}
		return fn(o)
	})
}

// Inventory lists every object held, as the Hello of a session carries it.
func (t *Tx) Inventory() ([]protocol.ObjectRef, error) {
	var refs []protocol.ObjectRef
	for _, k := range protocol.Kinds {
		err := t.tx.Bucket(objectBucket(k)).ForEach(func(key, v []byte) error {
			var r struct {
				ResourceVersion string `cbor:"3,keyasint"`
			}
			if err := cbor.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("inventory: %s %s: %w", k, key, err)
			}
			refs = append(refs, protocol.ObjectRef{Kind: k, UID: string(key), ResourceVersion: r.ResourceVersion})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return refs, nil
}

func decodeRecord(kind protocol.Kind, uid string, v []byte) (*protocol.Object, error) {
	var r record
	if err := cbor.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("decode %s %s: %w", kind, uid, err)
	}
	// cbor.Unmarshal copies byte strings, so r.Data does not alias bbolt's page.
	return &protocol.Object{Kind: kind, UID: uid, Namespace: r.Namespace, Name: r.Name,
		ResourceVersion: r.ResourceVersion, Data: r.Data}, nil
}

func nameKey(namespace, name string) []byte { return []byte(namespace + "/" + name) }

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// ErrOutboxFull is returned by Enqueue when the outbox holds its maximum and
// nothing can be dropped to make room.
var ErrOutboxFull = errors.New("outbox is full")
