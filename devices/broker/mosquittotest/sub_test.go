package mosquittotest

import (
	"strings"
	"testing"
	"time"
)

func TestProbeTopic(t *testing.T) {
	for filter, want := range map[string]string{
		"$hw/events/#":            "$hw/events/tether-probe",
		"$hw/events/device/+/+/x": "$hw/events/device/tether-probe/tether-probe/x",
		"plain":                   "plain",
	} {
		if got := ProbeTopic(filter); got != want {
			t.Errorf("ProbeTopic(%q) = %q, want %q", filter, got, want)
		}
	}
}

// Next returns the messages of a topic in order, skipping (and consuming)
// those match refuses, waits for one added later, and gives up after its
// timeout; Seen sees consumed messages too.
func TestRecorder(t *testing.T) {
	r := NewRecorder()
	r.Add("a", []byte("a1"))
	r.Add("b", []byte("b1"))
	r.Add("a", []byte("a2"))
	r.Add("a", []byte("a3"))
	if p, ok := r.Next("a", time.Second, nil); !ok || string(p) != "a1" {
		t.Fatalf("Next(a) = %q, %v", p, ok)
	}
	if p, ok := r.Next("a", time.Second, func(p []byte) bool { return string(p) == "a3" }); !ok || string(p) != "a3" {
		t.Fatalf("Next(a, a3) = %q, %v", p, ok)
	}
	if p, ok := r.Next("a", 10*time.Millisecond, nil); ok {
		t.Fatalf("Next(a) after the last = %q", p)
	}
	if !r.Seen("a", "2") || r.Seen("a", "b1") || !r.Seen("b", "b") {
		t.Error("Seen")
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		r.Add("a", []byte("a4"))
	}()
	if p, ok := r.Next("a", time.Minute, func(p []byte) bool { return strings.HasSuffix(string(p), "4") }); !ok || string(p) != "a4" {
		t.Fatalf("Next(a) waiting = %q, %v", p, ok)
	}
}
