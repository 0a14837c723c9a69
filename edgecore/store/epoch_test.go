package store

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/protocol"
)

// A store keeps its epoch across opens; a new store at the same path (the
// old one moved aside as corrupt, or lost) gets a larger one, from the
// epoch file, even when the clock went back.
func TestEpoch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	e1 := db.Epoch()
	if e1 == 0 {
		t.Fatal("epoch 0")
	}
	db.Close()
	if db, err = Open(path); err != nil {
		t.Fatal(err)
	}
	if db.Epoch() != e1 {
		t.Fatalf("reopened: epoch %d, want %d", db.Epoch(), e1)
	}
	db.Close()

	// The store is lost; the epoch file says a later epoch than the clock
	// will (a node whose clock went back).
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	future := uint64(time.Now().Add(time.Hour).UnixNano())
	if err := os.WriteFile(epochFile(path), []byte(strconv.FormatUint(future, 10)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(path); err != nil {
		t.Fatal(err)
	}
	if db.Epoch() != future+1 {
		t.Fatalf("new store: epoch %d, want %d (one above the file's)", db.Epoch(), future+1)
	}
	db.Close()
	b, err := os.ReadFile(epochFile(path))
	if err != nil || strings.TrimSpace(string(b)) != strconv.FormatUint(future+1, 10) {
		t.Fatalf("epoch file %q, %v: want the new epoch", b, err)
	}
}

func TestNewEpoch(t *testing.T) {
	now := time.Unix(1_800_000_000, 5)
	for _, c := range []struct {
		name, file string
		want       uint64 // 0: an error
	}{
		{"no file", "", uint64(now.UnixNano())},
		{"older epoch", "1000\n", uint64(now.UnixNano())},
		{"newer epoch", strconv.FormatUint(uint64(now.UnixNano())+10, 10), uint64(now.UnixNano()) + 11},
		{"equal epoch", strconv.FormatUint(uint64(now.UnixNano()), 10), uint64(now.UnixNano()) + 1},
		{"malformed", "yesterday", 0},
		{"no successor", "18446744073709551615", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "edge.db.epoch")
			if c.file != "" {
				if err := os.WriteFile(file, []byte(c.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := newEpoch(file, now)
			if c.want == 0 {
				if err == nil {
					t.Fatalf("epoch %d, want an error", got)
				}
				if b, _ := os.ReadFile(file); string(b) != c.file {
					t.Fatalf("the epoch file became %q", b)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("epoch %d, %v; want %d", got, err, c.want)
			}
		})
	}
}

// A pod status frame names the Seq of the previous report of its pod
// (PodStatus.Prev), whether that one is still queued or was acknowledged,
// across reopen; the record of a pod the store no longer holds is dropped
// at the next open.
func TestOutboxPrev(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	enqueue := func(uid string) (seq, prev uint64) {
		t.Helper()
		f := statusFrame(uid)
		if err := db.Update(func(tx *Tx) (err error) { seq, err = tx.Enqueue(OutboxPodStatus(uid), f); return err }); err != nil {
			t.Fatal(err)
		}
		for _, it := range outbox(t, db, 0) {
			if it.Seq == seq {
				g, err := protocol.Decode(it.Frame)
				if err != nil {
					t.Fatal(err)
				}
				return seq, g.PodStatus.Prev
			}
		}
		t.Fatalf("seq %d not queued", seq)
		return 0, 0
	}
	if err := db.Update(func(tx *Tx) error { return tx.PutObject(obj(protocol.KindPod, "held", "p", "1")) }); err != nil {
		t.Fatal(err)
	}
	s1, p1 := enqueue("held")
	s2, p2 := enqueue("held") // replaces s1, queued
	_, pOther := enqueue("gone")
	if p1 != 0 || p2 != s1 || pOther != 0 {
		t.Fatalf("prev %d, %d, %d; want 0, %d, 0", p1, p2, pOther, s1)
	}
	if err := db.Update(func(tx *Tx) error { return tx.Acked(s2) }); err != nil {
		t.Fatal(err)
	}
	s3, p3 := enqueue("held")
	if p3 != s2 {
		t.Fatalf("prev %d after the ack of %d", p3, s2)
	}
	// Both acknowledged; "gone" is not a pod of the store.
	if err := db.Update(func(tx *Tx) error {
		for _, it := range outbox(t, db, 0) {
			if err := tx.Acked(it.Seq); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if db, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, p := enqueue("held"); p != s3 {
		t.Fatalf("prev %d after reopen, want %d", p, s3)
	}
	if _, p := enqueue("gone"); p != 0 {
		t.Fatalf("prev %d of a pod the store does not hold, want 0 (forgotten at open)", p)
	}
}

// A device status frame names its previous report too.
func TestOutboxPrevDevice(t *testing.T) {
	db := openTest(t)
	var s1, s2 uint64
	var f2 *protocol.Frame
	err := db.Update(func(tx *Tx) (err error) {
		s1, err = tx.Enqueue(OutboxDeviceStatus("d1"), &protocol.Frame{DeviceStatus: &protocol.DeviceStatus{UID: "d1", Namespace: "plant", Name: "meter"}})
		if err != nil {
			return err
		}
		f2 = &protocol.Frame{DeviceStatus: &protocol.DeviceStatus{UID: "d1", Namespace: "plant", Name: "meter"}}
		s2, err = tx.Enqueue(OutboxDeviceStatus("d1"), f2)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if f2.DeviceStatus.Prev != s1 || f2.Seq != s2 {
		t.Fatalf("frame %+v: want Prev %d", f2.DeviceStatus, s1)
	}
}
