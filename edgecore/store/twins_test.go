package store

import (
	"reflect"
	"testing"

	"github.com/tether-edge/tether/devices/mqtt"
	"github.com/tether-edge/tether/devices/twin"
)

func TestTwins(t *testing.T) {
	db := openTest(t)
	obs := "25"
	thermo := &twin.Saved{Version: 7, State: "online", LastOnline: 1718000000000, Props: []twin.SavedProp{
		{Name: "label", Type: twin.TypeString, Expected: &twin.SavedValue{Value: "hello world", Timestamp: 5, Version: mqtt.TwinVersion{Edge: 2}}},
		{Name: "temperature", Type: twin.TypeFloat,
			Expected: &twin.SavedValue{Value: "25", Timestamp: 3, Version: mqtt.TwinVersion{Cloud: 7}},
			Actual:   &twin.SavedValue{Value: "24.5", Timestamp: 4, Version: mqtt.TwinVersion{Edge: 9}, ObservedDesired: &obs}},
	}}
	lamp := &twin.Saved{Version: 1}
	err := db.Update(func(tx *Tx) error {
		if err := tx.PutTwin("u-thermo", thermo); err != nil {
			return err
		}
		if err := tx.PutTwin("u-lamp", &twin.Saved{State: "offline"}); err != nil {
			return err
		}
		return tx.PutTwin("u-lamp", lamp) // replaces
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *Tx) error { return tx.PutTwin("", lamp) }); err == nil {
		t.Error("twin with an empty uid stored")
	}
	// Reopen: the twins survive.
	path := db.Path()
	db.Close()
	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *Tx) error {
		got, err := tx.Twin("u-thermo")
		if err != nil || !reflect.DeepEqual(got, thermo) {
			t.Errorf("twin: %v\n got %+v\nwant %+v", err, got, thermo)
		}
		var uids []string
		if err := tx.ForEachTwin(func(uid string, s *twin.Saved) error {
			uids = append(uids, uid)
			if uid == "u-lamp" && !reflect.DeepEqual(s, lamp) {
				t.Errorf("lamp %+v", s)
			}
			return nil
		}); err != nil {
			return err
		}
		if !reflect.DeepEqual(uids, []string{"u-lamp", "u-thermo"}) {
			t.Errorf("ForEachTwin uids %v", uids)
		}
		if err := tx.DeleteTwin("u-thermo"); err != nil {
			return err
		}
		if err := tx.DeleteTwin("u-none"); err != nil {
			return err
		}
		if got, err := tx.Twin("u-thermo"); got != nil || err != nil {
			t.Errorf("deleted twin: %+v %v", got, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
