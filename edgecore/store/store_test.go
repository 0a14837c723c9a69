package store

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/tether-edge/tether/protocol"
)

func openTest(t *testing.T) *DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "edge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func obj(kind protocol.Kind, uid, name, rv string) *protocol.Object {
	return &protocol.Object{Kind: kind, UID: uid, Namespace: "ns", Name: name, ResourceVersion: rv, Data: []byte("data-" + rv)}
}

func TestObjects(t *testing.T) {
	db := openTest(t)
	err := db.Update(func(tx *Tx) error {
		for _, o := range []*protocol.Object{obj(protocol.KindPod, "p1", "a", "1"), obj(protocol.KindConfigMap, "c1", "cfg", "2"),
			obj(protocol.KindPod, "p1", "a", "3")} {
			if err := tx.PutObject(o); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Reopen: everything survives.
	path := db.Path()
	db.Close()
	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *Tx) error {
		inv, err := tx.Inventory()
		if err != nil {
			t.Fatal(err)
		}
		if len(inv) != 2 || inv[0] != (protocol.ObjectRef{Kind: protocol.KindConfigMap, UID: "c1", ResourceVersion: "2"}) ||
			inv[1] != (protocol.ObjectRef{Kind: protocol.KindPod, UID: "p1", ResourceVersion: "3"}) {
			t.Fatalf("inventory %+v", inv)
		}
		o, err := tx.ObjectByName(protocol.KindConfigMap, "ns", "cfg")
		if err != nil || o == nil || o.UID != "c1" || string(o.Data) != "data-2" {
			t.Fatalf("by name: %+v %v", o, err)
		}
		return nil
	})
	// Same name, new UID, then the old UID is deleted: the name points to the new one.
	db.Update(func(tx *Tx) error {
		if err := tx.PutObject(obj(protocol.KindConfigMap, "c2", "cfg", "5")); err != nil {
			t.Fatal(err)
		}
		if old, err := tx.DeleteObject(protocol.KindConfigMap, "c1"); err != nil || old == nil {
			t.Fatalf("delete: %v %v", old, err)
		}
		if old, err := tx.DeleteObject(protocol.KindConfigMap, "missing"); err != nil || old != nil {
			t.Fatalf("delete missing: %v %v", old, err)
		}
		o, _ := tx.ObjectByName(protocol.KindConfigMap, "ns", "cfg")
		if o == nil || o.UID != "c2" {
			t.Fatalf("name index after replace: %+v", o)
		}
		return nil
	})
}

func statusFrame(uid string) *protocol.Frame {
	return &protocol.Frame{PodStatus: &protocol.PodStatus{UID: uid, Namespace: "ns", Name: "p-" + uid, Status: []byte{1}}}
}

func eventFrame() *protocol.Frame {
	return &protocol.Frame{Event: &protocol.Event{InvolvedKind: "Pod", Namespace: "ns", Name: "p", Type: "Normal", Reason: "R"}}
}

func outbox(t *testing.T, db *DB, after uint64) []OutboxItem {
	var items []OutboxItem
	db.View(func(tx *Tx) error {
		return tx.Outbox(after, func(it OutboxItem) bool { items = append(items, it); return true })
	})
	return items
}

func TestOutboxCoalescesAndAcks(t *testing.T) {
	db := openTest(t)
	var s1, s2, s3 uint64
	db.Update(func(tx *Tx) (err error) {
		s1, _ = tx.Enqueue(OutboxPodStatus("a"), statusFrame("a"))
		s2, _ = tx.Enqueue(OutboxPodStatus("b"), statusFrame("b"))
		s3, err = tx.Enqueue(OutboxPodStatus("a"), statusFrame("a")) // replaces s1
		return err
	})
	items := outbox(t, db, 0)
	if len(items) != 2 || items[0].Seq != s2 || items[1].Seq != s3 || s3 <= s2 || s2 <= s1 {
		t.Fatalf("outbox %+v (seqs %d %d %d)", items, s1, s2, s3)
	}
	f, err := protocol.Decode(items[1].Frame)
	if err != nil || f.Seq != s3 || f.PodStatus.UID != "a" {
		t.Fatalf("stored frame %+v %v", f, err)
	}
	if got := outbox(t, db, s2); len(got) != 1 || got[0].Seq != s3 {
		t.Fatalf("after %d: %+v", s2, got)
	}
	db.Update(func(tx *Tx) error {
		tx.Acked(s1) // replaced: nothing to remove
		tx.Acked(s2)
		if n := tx.OutboxLen(); n != 1 {
			t.Fatalf("len %d after ack", n)
		}
		return nil
	})
	if items := outbox(t, db, 0); len(items) != 1 || items[0].Key != OutboxPodStatus("a") {
		t.Fatalf("after ack %+v", items)
	}
}

func TestOutboxBoundDropsEventsFirst(t *testing.T) {
	db, err := OpenWith(filepath.Join(t.TempDir(), "edge.db"), Options{OutboxMax: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	err = db.Update(func(tx *Tx) error {
		if _, err := tx.Enqueue(OutboxEvent("e1"), eventFrame()); err != nil {
			return err
		}
		if _, err := tx.Enqueue(OutboxPodStatus("a"), statusFrame("a")); err != nil {
			return err
		}
		if _, err := tx.Enqueue(OutboxPodStatus("b"), statusFrame("b")); err != nil {
			return err
		}
		// Full: the event goes.
		if _, err := tx.Enqueue(OutboxPodStatus("c"), statusFrame("c")); err != nil {
			return err
		}
		// Full, no event left: refused, nothing lost.
		if _, err := tx.Enqueue(OutboxPodStatus("d"), statusFrame("d")); !errors.Is(err, ErrOutboxFull) {
			t.Fatalf("got %v, want ErrOutboxFull", err)
		}
		// Replacing an existing key is always possible.
		_, err := tx.Enqueue(OutboxPodStatus("a"), statusFrame("a"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	items := outbox(t, db, 0)
	var keys []string
	for _, it := range items {
		keys = append(keys, it.Key)
	}
	if len(keys) != 3 || keys[0] != "pod/b" || keys[1] != "pod/c" || keys[2] != "pod/a" {
		t.Fatalf("keys %v", keys)
	}
}

func TestEnqueueRefusesInvalidFrame(t *testing.T) {
	db := openTest(t)
	err := db.Update(func(tx *Tx) error {
		_, err := tx.Enqueue("pod/x", &protocol.Frame{PodStatus: &protocol.PodStatus{UID: "x"}})
		return err
	})
	if err == nil {
		t.Fatal("invalid frame was queued")
	}
	if items := outbox(t, db, 0); len(items) != 0 {
		t.Fatalf("outbox %+v", items)
	}
}

// TestOutboxOldest checks that the oldest entry's age follows what the
// cloud has not heard: a replaced frame keeps its key's first time, an
// acknowledged key leaves.
func TestOutboxOldest(t *testing.T) {
	db := openTest(t)
	oldest := func() (time.Time, bool) {
		t.Helper()
		var at time.Time
		var ok bool
		if err := db.View(func(tx *Tx) (err error) { at, ok, err = tx.OutboxOldest(); return err }); err != nil {
			t.Fatal(err)
		}
		return at, ok
	}
	if _, ok := oldest(); ok {
		t.Fatal("an empty outbox has an oldest entry")
	}
	before := time.Now()
	var sa uint64
	db.Update(func(tx *Tx) (err error) { sa, err = tx.Enqueue(OutboxPodStatus("a"), statusFrame("a")); return err })
	first, ok := oldest()
	if !ok || first.Before(before) || first.After(time.Now()) {
		t.Fatalf("oldest %v %v, want between %v and now", first, ok, before)
	}
	time.Sleep(2 * time.Millisecond)
	db.Update(func(tx *Tx) error {
		if _, err := tx.Enqueue(OutboxPodStatus("b"), statusFrame("b")); err != nil {
			return err
		}
		var err error
		sa, err = tx.Enqueue(OutboxPodStatus("a"), statusFrame("a")) // replaces a's frame
		return err
	})
	if at, _ := oldest(); !at.Equal(first) {
		t.Fatalf("after a's frame was replaced: oldest %v, want a's first %v", at, first)
	}
	db.Update(func(tx *Tx) error { return tx.Acked(sa) })
	if at, ok := oldest(); !ok || !at.After(first) {
		t.Fatalf("after a was acknowledged: oldest %v %v, want b's, later than %v", at, ok, first)
	}
}

// OutboxChanged receives after a transaction that queued something
// committed, not after one that rolled back or queued nothing.
func TestOutboxChanged(t *testing.T) {
	db := openTest(t)
	changed := func() bool {
		select {
		case <-db.OutboxChanged():
			return true
		default:
			return false
		}
	}
	db.Update(func(tx *Tx) error { return tx.PutObject(obj(protocol.KindPod, "p1", "a", "1")) })
	if changed() {
		t.Error("OutboxChanged after a transaction that queued nothing")
	}
	db.Update(func(tx *Tx) error {
		if _, err := tx.Enqueue(OutboxPodStatus("a"), statusFrame("a")); err != nil {
			t.Fatal(err)
		}
		return errors.New("roll back")
	})
	if changed() {
		t.Error("OutboxChanged after a rolled back Enqueue")
	}
	if err := db.Update(func(tx *Tx) error {
		_, err := tx.Enqueue(OutboxPodStatus("a"), statusFrame("a"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !changed() {
		t.Error("no OutboxChanged after a committed Enqueue")
	}
	if changed() {
		t.Error("OutboxChanged twice for one commit")
	}
}

// A negative outbox bound is refused.
func TestOptionsNegativeOutboxMax(t *testing.T) {
	if _, err := OpenWith(filepath.Join(t.TempDir(), "edge.db"), Options{OutboxMax: -1}); err == nil {
		t.Error("negative OutboxMax accepted")
	}
}
