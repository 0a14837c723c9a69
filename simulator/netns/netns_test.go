package netns

import (
	"strings"
	"testing"
	"time"
)

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "edge-1", "tether-", "0"} {
		if err := checkName(ok, 20); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Edge", "a b", "a/b", "a_b", strings.Repeat("a", 21), "é"} {
		if err := checkName(bad, 20); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestOwnerPID(t *testing.T) {
	cases := []struct {
		name string
		pid  int
		ok   bool
	}{
		{"tether-123-edges", 123, true},
		{"tether-123-", 123, true},
		{"tether-0-edges", 0, false},
		{"tether-0123-edges", 0, false},
		{"tether-x-edges", 0, false},
		{"tether-123", 0, false},
		{"other-123-edges", 0, false},
		{"tether--1-x", 0, false},
	}
	for _, c := range cases {
		pid, ok := ownerPID(c.name, "tether-")
		if pid != c.pid || ok != c.ok {
			t.Errorf("ownerPID(%q) = %d, %v; want %d, %v", c.name, pid, ok, c.pid, c.ok)
		}
	}
}

func TestSubnets(t *testing.T) {
	seen := map[string]bool{}
	for _, i := range []int{0, 1, 63, 64, subnetCount - 1, subnetCount} {
		a, b := subnet(i)
		if !subnets.Contains(a) || !subnets.Contains(b) {
			t.Errorf("subnet(%d) = %s, %s: outside %s", i, a, b, subnets)
		}
		if b.Prev() != a || a.As4()[3]%4 != 1 {
			t.Errorf("subnet(%d) = %s, %s: not .1 and .2 of a /30", i, a, b)
		}
		if i < subnetCount && seen[a.String()] {
			t.Errorf("subnet(%d) repeats %s", i, a)
		}
		seen[a.String()] = true
	}
	if a, _ := subnet(subnetCount); a.String() != "198.18.0.1" {
		t.Errorf("subnet(subnetCount) = %s, want a wrap to 198.18.0.1", a)
	}
	if a, _ := subnet(subnetCount - 1); a.String() != "198.19.255.253" {
		t.Errorf("last subnet %s", a)
	}
}

func TestImpairmentValidate(t *testing.T) {
	for _, ok := range []Impairment{{}, {Delay: time.Millisecond, Jitter: time.Millisecond, Loss: 1}} {
		if err := ok.validate(); err != nil {
			t.Errorf("%+v refused: %v", ok, err)
		}
	}
	for _, bad := range []Impairment{{Delay: -1}, {Jitter: -1}, {Loss: 1.5}, {Loss: -0.1}} {
		if err := bad.validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestLookup(t *testing.T) {
	if _, err := Lookup("tethertest-no-such-namespace"); err == nil {
		t.Error("found a namespace that does not exist")
	}
	if _, err := Lookup("../etc"); err == nil || !strings.Contains(err.Error(), "only a-z") {
		t.Errorf("a path as a name: %v", err)
	}
}
