package devicetwin

import (
	"log/slog"
	"reflect"
	"time"

	"github.com/tether-edge/tether/devices/mqtt"
	"github.com/tether-edge/tether/devices/twin"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// pendingFlush is what a flush has to write: the devices whose twin to
// save and those whose status to queue. A failed flush keeps it for the
// next one.
type pendingFlush struct {
	save, status map[mqtt.DeviceID]bool
}

func (p *pendingFlush) init() {
	if p.save == nil {
		p.save, p.status = map[mqtt.DeviceID]bool{}, map[mqtt.DeviceID]bool{}
	}
}

// flush saves the twins that changed and queues the statuses that changed,
// in one transaction, then tells the agent.
func (t *Twin) flush(now time.Time) {
	out := t.engine.Step(now, twin.Flush{})
	t.lastFlush = now
	t.retry.init()
	for _, st := range out.Status {
		t.retry.status[st.Device] = true
	}
	for _, id := range out.Changed {
		t.retry.save[id] = true
	}
	if len(t.retry.save) == 0 && len(t.retry.status) == 0 {
		t.release() // nothing unsaved: what the held answers answer is durable
		return
	}

	type put struct {
		uid  string
		snap twin.Saved
	}
	var puts []put
	for id := range t.retry.save {
		e := t.devs[id]
		if e == nil || !e.inEngine {
			continue
		}
		if snap, ok := t.engine.Snapshot(id); ok {
			puts = append(puts, put{e.uid, snap})
		}
	}
	var statuses []*protocol.DeviceStatus
	for id := range t.retry.status {
		e := t.devs[id]
		if e == nil || !e.inEngine {
			continue
		}
		snap, ok := t.engine.Snapshot(id)
		if !ok {
			continue
		}
		ds := deviceStatus(e.uid, id, &snap, e.report)
		if ds == nil || reflect.DeepEqual(ds, t.sent[e.uid]) {
			continue
		}
		statuses = append(statuses, ds)
	}
	err := t.db.Update(func(tx *store.Tx) error {
		for _, p := range puts {
			if err := tx.PutTwin(p.uid, &p.snap); err != nil {
				return err
			}
		}
		for _, ds := range statuses {
			if _, err := tx.Enqueue(store.OutboxDeviceStatus(ds.UID), &protocol.Frame{DeviceStatus: ds}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Keep it all for the next flush, one report interval from now.
		t.log.Error("save twins and queue device statuses", slog.Int("twins", len(puts)),
			slog.Int("statuses", len(statuses)), slog.Int("answersHeld", len(t.held)), slog.Any("err", err))
		t.changed(now)
		return
	}
	clear(t.retry.save)
	clear(t.retry.status)
	t.release()
	for _, ds := range statuses {
		t.sent[ds.UID] = ds
	}
	if len(statuses) > 0 {
		t.queued()
	}
}

// maxHeld bounds the answers held for a flush to commit; beyond it the
// oldest are dropped (their devices get no answer, as if the request was
// lost, and may send it again).
const maxHeld = 10000

// hold keeps answers until the next flush commits (twin.Output.AfterSave).
func (t *Twin) hold(pubs []twin.Publication) {
	t.held = append(t.held, pubs...)
	if over := len(t.held) - maxHeld; over > 0 {
		t.held = append(t.held[:0], t.held[over:]...)
		t.dropped += over
	}
}

// release publishes the held answers: what they answer is saved.
func (t *Twin) release() {
	if t.dropped > 0 {
		t.log.Warn("answers dropped while the store could not be written", slog.Int("count", t.dropped))
		t.dropped = 0
	}
	if len(t.held) == 0 {
		return
	}
	t.publish(t.held)
	clear(t.held)
	t.held = t.held[:0]
}

// resendStatuses queues the status of every device at the next flush, even
// one queued before (Connected).
func (t *Twin) resendStatuses(now time.Time) {
	t.retry.init()
	n := 0
	for id, e := range t.devs {
		if e.inEngine {
			t.retry.status[id] = true
			n++
		}
	}
	clear(t.sent)
	if n > 0 {
		t.changed(now)
	}
}

// deviceStatus is what goes to the cloud of a device's twin: the reported
// values of the properties in report, the state and the last online time;
// nil when there is nothing to tell.
func deviceStatus(uid string, id mqtt.DeviceID, s *twin.Saved, report map[string]bool) *protocol.DeviceStatus {
	ds := &protocol.DeviceStatus{UID: uid, Namespace: id.Namespace, Name: id.Name, State: s.State, LastOnline: s.LastOnline}
	for _, p := range s.Props {
		if p.Actual == nil || !report[p.Name] {
			continue
		}
		ds.Twins = append(ds.Twins, protocol.DeviceTwin{Name: p.Name, Value: p.Actual.Value,
			Timestamp: p.Actual.Timestamp, ObservedDesired: p.Actual.ObservedDesired})
	}
	if len(ds.Twins) == 0 && (ds.State == "" || ds.State == mqtt.StateUnknown) && ds.LastOnline == 0 {
		return nil
	}
	return ds
}
