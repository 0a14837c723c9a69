//go:build integration

package mosquittotest

import (
	"net"
	"os/exec"
	"testing"
	"time"
)

// A started broker takes mosquitto_pub with ClientArgs, refuses it without
// them, and is gone once its test ends.
func TestStart(t *testing.T) {
	var b *Broker
	t.Run("broker", func(t *testing.T) {
		b = Start(t)
		pub := LookPath(t, "mosquitto_pub")
		if out, err := exec.Command(pub, append(b.ClientArgs(), "-t", "probe", "-m", "x")...).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub with the credentials: %v: %s", err, out)
		}
		if out, err := exec.Command(pub, "-h", b.Host, "-p", b.Port, "-t", "probe", "-m", "x").CombinedOutput(); err == nil {
			t.Fatalf("mosquitto_pub without credentials was accepted: %s", out)
		}
		if want := "tcp://127.0.0.1:" + b.Port; b.URL() != want {
			t.Fatalf("URL %q, want %q", b.URL(), want)
		}
	})
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(b.Host, b.Port), time.Second); err == nil {
		c.Close()
		t.Fatalf("something still listens on %s after the test that started mosquitto", b.Port)
	}
}

// Subscribe returns subscribed: a message published right after reaches the
// Recorder, the probes do not.
func TestSubscribe(t *testing.T) {
	b := Start(t)
	rec := NewRecorder()
	Subscribe(t, b, "$hw/events/#", rec)
	if err := Publish(t, b, "$hw/events/device/ns/d/twin/update", `{"event_id":"x"}`); err != nil {
		t.Fatal(err)
	}
	if p, ok := rec.Next("$hw/events/device/ns/d/twin/update", time.Minute, nil); !ok || string(p) != `{"event_id":"x"}` {
		t.Fatalf("got %q, %v", p, ok)
	}
	if rec.Seen(ProbeTopic("$hw/events/#"), "probe") {
		t.Error("a probe was recorded")
	}
}
