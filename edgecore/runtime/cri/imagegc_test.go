package cri

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestAmountToFree(t *testing.T) {
	p := gcPolicy{High: 85, Low: 80}
	cases := []struct {
		name            string
		capacity, avail uint64
		want            uint64
	}{
		{"84% used: nothing", 100, 16, 0},
		{"85% used: down to 80%", 100, 15, 5},
		{"full: down to 80%", 1000, 0, 200},
		{"unknown size", 0, 0, 0},
		{"bad statfs", 100, 200, 0},
		{"off at 100", 100, 0, 0},
	}
	for _, c := range cases {
		pol := p
		if c.name == "off at 100" {
			pol.High = 100
		}
		if got := amountToFree(pol, c.capacity, c.avail); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}

func TestSelectImages(t *testing.T) {
	now := time.Unix(10000, 0)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	minAge := 2 * time.Minute
	// old-lru: unused longest; old-recent: used a minute ago; young: seen
	// a minute ago; pause/held/running: in use.
	imgs := []gcImage{
		{ID: "old-recent", Size: 30, FirstSeen: ago(time.Hour), LastUsed: ago(time.Minute)},
		{ID: "pause", Size: 1, FirstSeen: ago(time.Hour), LastUsed: now, InUse: true},
		{ID: "old-lru", Size: 10, FirstSeen: ago(time.Hour), LastUsed: ago(50 * time.Minute)},
		{ID: "young", Size: 100, FirstSeen: ago(time.Minute)},
		{ID: "held", Size: 500, FirstSeen: ago(time.Hour), InUse: true},
		{ID: "never-used-old", Size: 20, FirstSeen: ago(2 * time.Hour)},
		{ID: "never-used-newer", Size: 20, FirstSeen: ago(90 * time.Minute)},
	}
	cases := []struct {
		name      string
		want      uint64
		minAge    time.Duration
		ids       []string
		wantFreed uint64
	}{
		{"nothing wanted", 0, minAge, nil, 0},
		{"one byte: the never used, first seen first", 1, minAge, []string{"never-used-old"}, 20},
		{"least recently used first", 45, minAge, []string{"never-used-old", "never-used-newer", "old-lru"}, 50},
		{"more than there is: every eligible, never in use nor young", 10000, minAge,
			[]string{"never-used-old", "never-used-newer", "old-lru", "old-recent"}, 80},
		{"all (disk pressure)", math.MaxUint64, minAge, []string{"never-used-old", "never-used-newer", "old-lru", "old-recent"}, 80},
		{"no minimum age: the young one too", math.MaxUint64, time.Nanosecond,
			[]string{"never-used-old", "never-used-newer", "young", "old-lru", "old-recent"}, 180},
	}
	for _, c := range cases {
		got, freed := selectImages(imgs, c.want, now, c.minAge)
		var ids []string
		for _, im := range got {
			ids = append(ids, im.ID)
		}
		if !slices.Equal(ids, c.ids) || freed != c.wantFreed {
			t.Errorf("%s: %v (%d bytes), want %v (%d)", c.name, ids, freed, c.ids, c.wantFreed)
		}
	}
}
