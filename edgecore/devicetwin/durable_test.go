package devicetwin

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/tether-edge/tether/devices/twin"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// crashImage is what a kill -9 of edgecore leaves of the store right now:
// the bytes of the file (bbolt fsyncs every commit, so what is committed is
// in it), opened as a store of its own.
func crashImage(t *testing.T, db *store.DB) *store.DB {
	t.Helper()
	b, err := os.ReadFile(db.Path())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "edge.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	img, err := store.Open(path)
	if err != nil {
		t.Fatalf("open the store after a crash: %v", err)
	}
	t.Cleanup(func() { img.Close() })
	return img
}

// TestAnswerAfterSave (audit M5): a report is answered only once it is
// durable. The flush is slow here (300ms after the report), and the store
// is copied the moment each success result arrives, as a kill -9 at that
// point would leave it: the answered value is in the copy.
func TestAnswerAfterSave(t *testing.T) {
	db := openStore(t)
	b, _ := startBroker(t, "127.0.0.1:0")
	putObjects(t, db, nil, thermoModel, thermoDevice("thermo", "22", 1))
	d := connectDevice(t, b.URL(), "dev")
	startTwin(t, db, b.URL(), func(c *Config) {
		c.FlushDelay, c.ReportInterval = 300*time.Millisecond, 300*time.Millisecond
	})
	d.waitReady()

	for _, v := range []string{"10", "30"} {
		sent := time.Now()
		res := d.request(devTopic("thermo", "twin/update"), `{"event_id":"%s","timestamp":0,"twin":{"temperature":{"actual":{"value":"`+v+`"}}}}`)
		if _, failed := res["code"]; failed || actualOf(res, "temperature") != v {
			t.Fatalf("result %v", res)
		}
		img := crashImage(t, db)
		s := savedTwin(t, img, uidThermo)
		if actualSaved(s, "temperature") != v {
			t.Fatalf("answered %s after %s, but the store after a crash holds %+v", v, time.Since(sent), s)
		}
		if ds := outbox(t, img)[keyThermo]; ds == nil || ds.Twins[0].Value != v {
			t.Fatalf("answered %s, but the outbox after a crash holds %+v", v, ds)
		}
	}

	// A state/update that changes the state is answered once saved too.
	res := d.request(devTopic("thermo", "state/update"), `{"event_id":"%s","timestamp":0,"state":"online"}`)
	if res["state"] != "online" {
		t.Fatalf("state result %v", res)
	}
	if s := savedTwin(t, crashImage(t, db), uidThermo); s == nil || s.State != "online" || s.LastOnline == 0 {
		t.Fatalf("state answered, but the store after a crash holds %+v", s)
	}
}

// actualSaved is the actual value of prop in s, or "".
func actualSaved(s *twin.Saved, prop string) string {
	if s == nil {
		return ""
	}
	for _, p := range s.Props {
		if p.Name == prop && p.Actual != nil {
			return p.Actual.Value
		}
	}
	return ""
}

// TestStatusesResentOnConnect (audit M7): when the agent connects, the
// current status of every device is queued again, so that one the hub
// refused (and the edge dropped from the outbox) is not lost until the
// device reports a change.
func TestStatusesResentOnConnect(t *testing.T) {
	db, c, d, _ := setup(t)
	res := d.request(devTopic("thermo", "twin/update"), `{"event_id":"%s","timestamp":0,"twin":{"temperature":{"actual":{"value":"21.5"}}}}`)
	if _, failed := res["code"]; failed {
		t.Fatal(res)
	}
	var want *protocol.DeviceStatus
	eventually(t, "DeviceStatus queued", func() bool { want = outbox(t, db)[keyThermo]; return want != nil })

	// The hub refuses it (a transient 403): the agent drops the entry.
	err := db.Update(func(tx *store.Tx) error {
		var seqs []uint64
		if err := tx.Outbox(0, func(it store.OutboxItem) bool { seqs = append(seqs, it.Seq); return true }); err != nil {
			return err
		}
		for _, s := range seqs {
			if err := tx.Acked(s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing changes by itself.
	time.Sleep(100 * time.Millisecond)
	if got := outbox(t, db)[keyThermo]; got != nil {
		t.Fatalf("DeviceStatus queued again without a reconnect: %+v", got)
	}

	queued := c.queued.Load()
	c.tw.Connected()
	var got *protocol.DeviceStatus
	eventually(t, "DeviceStatus queued again after Connected", func() bool { got = outbox(t, db)[keyThermo]; return got != nil })
	// It names the first as its previous report (PodStatus.Prev), the
	// rest is the same.
	if got.Prev == 0 || want.Prev != 0 {
		t.Fatalf("prev %d after %d: want the first report's seq", got.Prev, want.Prev)
	}
	got.Prev = 0
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("queued again\n got %+v\nwant %+v", got, want)
	}
	eventually(t, "the agent told", func() bool { return c.queued.Load() > queued })
}
