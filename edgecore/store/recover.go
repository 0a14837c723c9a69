package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrCorrupt marks a store file that cannot be used: bbolt refused it, or
// panicked reading it, or its consistency check failed.
var ErrCorrupt = errors.New("store file is corrupt")

// openChecked opens the store at path and checks every page of it; a
// corrupt file (which bbolt may panic on, at open or later on first use)
// comes back as an error wrapping ErrCorrupt.
//
// bbolt reads the file through a memory mapping, which may be larger than
// a truncated file: a page past the end of the file is then a fault
// (SIGBUS), which kills the process (not a panic) unless the goroutine
// asked for panics on faults. So both the open and the walk run with
// debug.SetPanicOnFault, and every page reachable is read here: a store
// that passes cannot fault later.
func openChecked(path string, opts Options) (db *DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			// bbolt keeps the file open (and locked) after a panic in
			// Open, until the process ends: the caller moves the file
			// aside and opens a new one at the path.
			db, err = nil, fmt.Errorf("open store %s: %w: %v", path, ErrCorrupt, r)
		}
	}()
	if err := checkLength(path); err != nil {
		return nil, err
	}
	db, err = OpenWith(path, opts)
	if err != nil {
		if boltCorrupt(err) {
			return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return nil, err
	}
	if err := checkPages(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("check store %s: %w: %w", path, ErrCorrupt, err)
	}
	return db, nil
}

// boltCorrupt says whether bbolt refused to open a file for its content.
// bbolt 1.3 does not export its "file size too small" (a file cut below
// its two meta pages).
func boltCorrupt(err error) bool {
	return errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrChecksum) || errors.Is(err, bolt.ErrVersionMismatch) ||
		strings.Contains(err.Error(), "file size too small")
}

// checkLength refuses a file shorter than bbolt's high-water mark (the
// pages it has handed out, in use or free, as its meta page says). bbolt
// never writes such a file: it grows the file before a commit raises the
// mark. A file cut below the mark (a truncated copy, a card that lost its
// tail) has lost pages; worse, the first write transaction grows the file
// again with zeros, so a page the check below could not see (one on the
// free list, or a tail cut inside a page) comes back as zeros later, and
// bbolt panics in the middle of a write ("page expected to be 18, but self
// identifies as 0", found by the crash tier). The check runs before the
// read-write open, which may grow the file: on a read-only open that
// writes nothing. A file at or above the mark is byte for byte what bbolt
// wrote, up to every page it can reach.
func checkLength(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a new store
	}
	if err != nil {
		return fmt.Errorf("open store %s: %w", path, err)
	}
	ro, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		if boltCorrupt(err) {
			return fmt.Errorf("open store %s: %w: %w", path, ErrCorrupt, err)
		}
		return fmt.Errorf("open store %s: %w", path, err)
	}
	defer ro.Close()
	var mark int64
	if err := ro.View(func(tx *bolt.Tx) error { mark = tx.Size(); return nil }); err != nil {
		return fmt.Errorf("open store %s: %w", path, err)
	}
	if fi.Size() < mark {
		return fmt.Errorf("open store %s: %w: the file has %d bytes, its pages reach %d (cut short)", path, ErrCorrupt, fi.Size(), mark)
	}
	return nil
}

// checkPages reads every key and value of every bucket, in this goroutine
// (Tx.Check walks in a goroutine of its own, where a panic would end the
// process); a panic (a broken page, or a fault with SetPanicOnFault) is
// returned as an error, after View rolled its transaction back.
func checkPages(db *DB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	return db.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return walk(b) })
	})
}

// OpenOrRecover opens the store at path like Open, checking it first. A
// corrupt file (a torn write on a bad card, a truncated copy) does not stop
// the node in a crash loop: it is moved aside to path.corrupt-<unix time>
// (with -<n> after it if a file of that name exists)
// for a post-mortem, and a new, empty store is made. The node then holds no
// objects until the hub resyncs it at the next connect (its Hello lists
// nothing, so the hub sends everything it should hold); statuses queued in
// the lost outbox are reported again as the pods and devices are seen anew.
// recovered says whether that happened.
func OpenOrRecover(path string, opts Options, log *slog.Logger) (db *DB, recovered bool, err error) {
	db, err = openChecked(path, opts)
	if err == nil || !errors.Is(err, ErrCorrupt) {
		return db, false, err
	}
	aside := asideName(path, time.Now())
	if rerr := os.Rename(path, aside); rerr != nil {
		return nil, false, fmt.Errorf("%w (and moving it aside failed: %v)", err, rerr)
	}
	log.Error("store file corrupt: moved aside, starting with an empty store; the hub resyncs it",
		slog.String("file", path), slog.String("movedTo", aside), slog.Any("err", err))
	db, err = OpenWith(path, opts)
	if err != nil {
		return nil, false, err
	}
	return db, true, nil
}

// asideName is where a corrupt store at path goes: path.corrupt-<unix
// time>, or path.corrupt-<unix time>-<n> if that is taken (two recoveries
// in one second must not lose the first file).
func asideName(path string, now time.Time) string {
	name := fmt.Sprintf("%s.corrupt-%d", path, now.Unix())
	for n := 1; ; n++ {
		if _, err := os.Lstat(name); errors.Is(err, os.ErrNotExist) {
			return name
		}
		name = fmt.Sprintf("%s.corrupt-%d-%d", path, now.Unix(), n)
	}
}

// walk reads every key and value of b and of the buckets in it.
func walk(b *bolt.Bucket) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				return walk(nb)
			}
		}
		return nil
	})
}
