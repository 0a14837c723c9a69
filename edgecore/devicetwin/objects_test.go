package devicetwin

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tether-edge/tether/devices/mqtt"
	"github.com/tether-edge/tether/devices/twin"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// offline is a Twin that is not started: tests drive its owner's methods
// directly (syncObjects, handle, flush). It has no broker: what it would
// publish is dropped.
func offline(t testing.TB, db *store.DB) *Twin {
	t.Helper()
	tw, err := New(Config{NodeName: node, BrokerURL: "tcp://127.0.0.1:1", Logger: testLogger(t)}, db, func() {})
	if err != nil {
		t.Fatal(err)
	}
	return tw
}

// twinView is what a Twin holds, for comparing two of them.
type twinView struct {
	Entries    map[mqtt.DeviceID]entry
	Membership []mqtt.Device
	Saved      map[string]*twin.Saved
	Outbox     map[string]*protocol.DeviceStatus
}

func viewOf(t *testing.T, tw *Twin, now time.Time) twinView {
	t.Helper()
	v := twinView{Entries: map[mqtt.DeviceID]entry{}, Saved: map[string]*twin.Saved{}}
	for id, e := range tw.devs {
		v.Entries[id] = *e
		// The index holds exactly the devices' models.
		if e.model != "" && !tw.byModel[e.model][id] {
			t.Fatalf("%s: not indexed under its model %s", id, e.model)
		}
	}
	for key, ids := range tw.byModel {
		for id := range ids {
			if e := tw.devs[id]; e == nil || e.model != key {
				t.Fatalf("%s indexed under model %s", id, key)
			}
		}
	}
	out := tw.engine.Step(now, twin.MembershipGet{EventID: "view"})
	var m mqtt.MembershipGetResult
	if err := json.Unmarshal(out.Publish[0].Payload, &m); err != nil {
		t.Fatal(err)
	}
	v.Membership = m.Devices
	err := tw.db.View(func(tx *store.Tx) error {
		return tx.ForEachTwin(func(uid string, s *twin.Saved) error { v.Saved[uid] = s; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	v.Outbox = outbox(t, tw.db)
	for _, m := range v.Outbox {
		// The previous report's Seq depends on how many reports were
		// queued before, which the two ways of reading may differ in.
		m.Prev = 0
	}
	return v
}

// TestChangedMatchesAll: a component told which objects each commit
// touched (ObjectsCommitted, reading only those) ends every step holding
// the same devices, twins, saved twins and outbox as one that reads every
// device and model after each commit (ObjectsChanged), through random
// commits of devices and models (created, changed, made invalid, moved to
// another model, deleted, recreated under a new UID, model missing),
// reports and flushes.
func TestChangedMatchesAll(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { changedMatchesAll(t, seed) })
	}
}

func changedMatchesAll(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	dbAll, dbChanged := openStore(t), openStore(t)
	all, changed := offline(t, dbAll), offline(t, dbChanged)
	base := time.Unix(1718000000, 0)
	for _, tw := range []*Twin{all, changed} {
		if err := tw.syncObjects(base, changes{all: true}); err != nil {
			t.Fatal(err)
		}
	}

	const nModels, nDevices = 3, 8
	gen := map[string]int64{}       // device name to its generation
	uids := map[string]string{}     // object key ("m0", "d3") to its UID in the store
	incarnation := map[string]int{} // object key to how many times it was created
	uidOf := func(key string) string { return fmt.Sprintf("uid-%s-%d", key, incarnation[key]) }
	modelObj := func(i int) *protocol.Object {
		key := fmt.Sprint("m", i)
		m := *thermoModel
		m.Name = fmt.Sprint("model", i)
		m.Spec.Properties = slices.Clone(thermoModel.Spec.Properties)
		switch rng.IntN(4) {
		case 0:
			m.Spec.Properties[0].Maximum = "not-a-number" // invalid
		case 1:
			m.Spec.Properties = m.Spec.Properties[:2] // no label
		}
		return object(t, &m, uids[key], rvSeq.Add(1))
	}
	deviceObj := func(i int) *protocol.Object {
		key := fmt.Sprint("d", i)
		name := fmt.Sprint("dev", i)
		gen[name]++
		d := thermoDevice(name, fmt.Sprint(rng.IntN(3)+20), gen[name])
		d.Spec.DeviceModelRef.Name = fmt.Sprint("model", rng.IntN(nModels+1)) // model3 never exists
		switch rng.IntN(6) {
		case 0:
			d.Spec.NodeName = "another-node"
		case 1:
			d.Spec.Properties[1].ReportToCloud = false
		}
		return object(t, d, uids[key], rvSeq.Add(1))
	}
	create := func(key string) {
		incarnation[key]++
		uids[key] = uidOf(key)
	}

	for step := range 150 {
		now := base.Add(time.Duration(step+1) * time.Second)
		var op storeOp
		var report *message
		switch r := rng.IntN(10); {
		case r < 2: // a model created or changed
			i := rng.IntN(nModels)
			key := fmt.Sprint("m", i)
			if uids[key] == "" {
				create(key)
			}
			op.put = append(op.put, modelObj(i))
		case r < 6: // a device created or changed
			i := rng.IntN(nDevices)
			key := fmt.Sprint("d", i)
			if uids[key] == "" {
				create(key)
			}
			op.put = append(op.put, deviceObj(i))
		case r < 7: // a device deleted, or recreated under a new UID in the same commit
			i := rng.IntN(nDevices)
			key := fmt.Sprint("d", i)
			if uids[key] == "" {
				continue
			}
			op.del = append(op.del, protocol.ObjectRef{Kind: protocol.KindDevice, UID: uids[key]})
			uids[key] = ""
			if rng.IntN(2) == 0 {
				create(key)
				op.put = append(op.put, deviceObj(i))
			}
		case r < 8: // a model deleted
			key := fmt.Sprint("m", rng.IntN(nModels))
			if uids[key] == "" {
				continue
			}
			op.del = append(op.del, protocol.ObjectRef{Kind: protocol.KindDeviceModel, UID: uids[key]})
			uids[key] = ""
		case r < 9: // a device reports a value
			name := fmt.Sprint("dev", rng.IntN(nDevices))
			report = &message{topic: devTopic(name, "twin/update"),
				payload: fmt.Appendf(nil, `{"event_id":"s%d","timestamp":0,"twin":{"temperature":{"actual":{"value":"%d"}}}}`, step, step%100)}
		default: // a flush
		}

		if report != nil {
			all.handle(now, *report)
			changed.handle(now, *report)
		} else if len(op.put)+len(op.del) == 0 {
			all.flush(now)
			changed.flush(now)
		} else {
			op.apply(t, dbAll)
			all.ObjectsChanged(map[protocol.Kind]bool{protocol.KindDevice: true, protocol.KindDeviceModel: true}, nil)
			if c := all.takeChanges(); !c.all {
				t.Fatalf("ObjectsChanged: %+v", c)
			}
			if err := all.syncObjects(now, changes{all: true}); err != nil {
				t.Fatal(err)
			}
			changed.ObjectsCommitted(op.apply(t, dbChanged))
			c := changed.takeChanges()
			if c.all {
				t.Fatalf("ObjectsCommitted: %+v", c)
			}
			if err := changed.syncObjects(now, c); err != nil {
				t.Fatal(err)
			}
		}
		va, vc := viewOf(t, all, now), viewOf(t, changed, now)
		if !reflect.DeepEqual(va, vc) {
			t.Fatalf("step %d (%+v, report %v): reading what changed differs from reading everything:\n changed: %+v\n     all: %+v", step, op, report != nil, vc, va)
		}
	}
	if len(changed.devs) == 0 {
		t.Fatal("no device at the end: the steps exercised little")
	}
}
