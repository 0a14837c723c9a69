package metaserver

import (
	"errors"
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/watch"
)

func eventsString(evs []event) string {
	s := ""
	for _, e := range evs {
		s += fmt.Sprintf("%s@%d:%s ", e.typ, e.rv, e.data)
	}
	return s
}

func TestCacheVersionsEventsAndRing(t *testing.T) {
	c := newCache(100, 3, []string{"pods", "secrets"})
	c.apply("pods", nil, []upsert{{uid: "a", namespace: "ns", name: "a", source: "1", data: []byte("a1")}}, true)
	if got := c.version(); got != 100 {
		t.Fatalf("initial objects moved the version to %d", got)
	}
	if e := c.get("pods", "ns", "a"); e == nil || e.rv != 100 {
		t.Fatalf("initial object: %+v", e)
	}
	if evs, rv, _, err := c.since("pods", 100); err != nil || len(evs) != 0 || rv != 100 {
		t.Fatalf("since 100: %v %d %v", evs, rv, err)
	}

	_, _, changed, _ := c.since("pods", 100)
	c.apply("pods", nil, []upsert{
		{uid: "a", namespace: "ns", name: "a", source: "2", data: []byte("a2")},
		{uid: "b", namespace: "ns", name: "b", source: "1", data: []byte("b1")},
	}, false)
	select {
	case <-changed:
	default:
		t.Fatal("watchers not told of the change")
	}
	c.apply("secrets", nil, []upsert{{uid: "s", namespace: "ns", name: "s", source: "1", data: []byte("s1")}}, false)
	c.apply("pods", []string{"a"}, nil, false)

	evs, rv, _, err := c.since("pods", 100)
	if err != nil || rv != 104 {
		t.Fatalf("since 100: rv %d, %v", rv, err)
	}
	if got, want := eventsString(evs), "MODIFIED@101:a2 ADDED@102:b1 DELETED@104:a2 "; got != want {
		t.Fatalf("events %q, want %q", got, want)
	}
	if evs[0].prev == nil || string(evs[0].prev) != "a1" {
		t.Fatalf("modified event lacks the previous state: %q", evs[0].prev)
	}
	evs, _, _, _ = c.since("pods", 102)
	if got := eventsString(evs); got != "DELETED@104:a2 " {
		t.Fatalf("since 102: %q", got)
	}
	if e := c.get("pods", "ns", "a"); e != nil {
		t.Fatalf("deleted object still there: %+v", e)
	}
	if l, rv := c.list("pods", ""); len(l) != 1 || l[0].name != "b" || l[0].rv != 102 || rv != 104 {
		t.Fatalf("list: %+v at %d", l, rv)
	}

	// The ring holds 3 pod events; a fourth pushes out the first.
	c.apply("pods", nil, []upsert{{uid: "b", namespace: "ns", name: "b", source: "2", data: []byte("b2")}}, false)
	if _, _, _, err := c.since("pods", 100); !errors.Is(err, errExpired) {
		t.Fatalf("since 100 after the ring moved on: %v", err)
	}
	if evs, _, _, err := c.since("pods", 101); err != nil || eventsString(evs) != "ADDED@102:b1 DELETED@104:a2 MODIFIED@105:b2 " {
		t.Fatalf("since 101: %q %v", eventsString(evs), err)
	}
	// Other resources keep their own history.
	if evs, _, _, err := c.since("secrets", 100); err != nil || len(evs) != 1 {
		t.Fatalf("secrets since 100: %v %v", evs, err)
	}
	// Versions of another run, before or after this one's, are refused.
	for _, v := range []uint64{5, 99, 106} {
		if _, _, _, err := c.since("secrets", v); !errors.Is(err, errExpired) {
			t.Errorf("since %d: %v", v, err)
		}
	}
}

func TestCacheReplacedName(t *testing.T) {
	c := newCache(1, 10, []string{"pods"})
	c.apply("pods", nil, []upsert{{uid: "old", namespace: "ns", name: "p", source: "1", data: []byte("old")}}, false)
	// Deleted and created again with the same name: a new UID.
	c.apply("pods", []string{"old"}, []upsert{{uid: "new", namespace: "ns", name: "p", source: "9", data: []byte("new")}}, false)
	if e := c.get("pods", "ns", "p"); e == nil || e.uid != "new" {
		t.Fatalf("get: %+v", e)
	}
	evs, _, _, _ := c.since("pods", 2)
	if got := eventsString(evs); got != "DELETED@3:old ADDED@4:new " {
		t.Fatalf("events %q", got)
	}
	if evs[0].typ != watch.Deleted {
		t.Fatal("want the deletion first")
	}
}
