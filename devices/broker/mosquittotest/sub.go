package mosquittotest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// clientTimeout bounds one mosquitto_pub and the wait for mosquitto_sub to
// subscribe: long, so that a loaded machine does not fail the tests.
const clientTimeout = 30 * time.Second

// Recorder keeps the MQTT messages a test client received, by topic, in
// arrival order, for the test to wait for. Subscribe fills one from
// mosquitto_sub; a paho handler can call Add as well. Its methods may be
// called from any goroutine.
type Recorder struct {
	mu   sync.Mutex
	msgs map[string][][]byte // payloads by topic, guarded by mu
	read map[string]int      // how many of each topic Next consumed, guarded by mu
	more chan struct{}       // signalled after each Add
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{msgs: map[string][][]byte{}, read: map[string]int{}, more: make(chan struct{}, 1)}
}

// Add records a message.
func (r *Recorder) Add(topic string, payload []byte) {
	r.mu.Lock()
	r.msgs[topic] = append(r.msgs[topic], payload)
	r.mu.Unlock()
	select {
	case r.more <- struct{}{}:
	default:
	}
}

// Next waits up to timeout for the next message on topic that match
// accepts (nil accepts any) and returns its payload; the messages on the
// topic before it are consumed too. ok is false if none came in time.
func (r *Recorder) Next(topic string, timeout time.Duration, match func(payload []byte) bool) (payload []byte, ok bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for r.read[topic] < len(r.msgs[topic]) {
			p := r.msgs[topic][r.read[topic]]
			r.read[topic]++
			if match == nil || match(p) {
				r.mu.Unlock()
				return p, true
			}
		}
		r.mu.Unlock()
		select {
		case <-r.more:
		case <-deadline.C:
			return nil, false
		}
	}
}

// Seen reports whether a message on topic, consumed by Next or not, holds
// s.
func (r *Recorder) Seen(topic, s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.msgs[topic] {
		if bytes.Contains(p, []byte(s)) {
			return true
		}
	}
	return false
}

// Subscribe runs mosquitto_sub on b, subscribed to filter with QoS 1, and
// adds every message it prints to rec until the test ends. It returns once
// mosquitto_sub is subscribed (it says nothing when it is: Subscribe
// publishes probes with mosquitto_pub on ProbeTopic(filter) until one comes
// back; probes are not recorded). A payload holding a newline reaches rec
// cut in two, as mosquitto_sub prints it. It fails the test if
// mosquitto_sub does not subscribe within 30s.
func Subscribe(t testing.TB, b *Broker, filter string, rec *Recorder) {
	t.Helper()
	probeTopic := ProbeTopic(filter)
	sub := exec.Command(LookPath(t, "mosquitto_sub"), append(b.ClientArgs(), "-q", "1", "-t", filter, "-v")...)
	out, err := sub.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder // written by exec's copier until Wait returns
	sub.Stderr = &stderr
	sub.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	probes := make(chan string, 16)
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 0, 1<<16), 4<<20) // oversized payloads come back too
		for sc.Scan() {
			topic, payload, _ := strings.Cut(sc.Text(), " ")
			if topic == probeTopic {
				select {
				case probes <- payload:
				default:
				}
				continue
			}
			rec.Add(topic, []byte(payload))
		}
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		sub.Process.Kill()
		<-read
		sub.Wait()
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() && stderr.Len() > 0 {
			t.Logf("mosquitto_sub: %s", stderr.String())
		}
	})
	deadline := time.Now().Add(clientTimeout)
	for i := 0; ; i++ {
		probe := fmt.Sprintf(`{"probe":%d}`, i)
		if err := Publish(t, b, probeTopic, probe); err != nil {
			t.Fatal(err)
		}
		if probed(probes, probe, 300*time.Millisecond) {
			return
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("mosquitto_sub did not subscribe to %s within %s: %s", filter, clientTimeout, stderr.String())
		}
	}
}

// probed waits up to timeout for probe on probes, skipping earlier probes
// that came late.
func probed(probes <-chan string, probe string, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		select {
		case p := <-probes:
			if p == probe {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// ProbeTopic is the topic Subscribe probes filter with: filter with each
// wildcard level replaced by "tether-probe", so that it matches filter.
func ProbeTopic(filter string) string {
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if l == "+" || l == "#" {
			levels[i] = "tether-probe"
		}
	}
	return strings.Join(levels, "/")
}

// Publish publishes payload on topic with mosquitto_pub on b, QoS 1. The
// payload goes through stdin, so that any bytes go.
func Publish(t testing.TB, b *Broker, topic, payload string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, LookPath(t, "mosquitto_pub"), append(b.ClientArgs(), "-q", "1", "-t", topic, "-s")...)
	cmd.Stdin = strings.NewReader(payload)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("mosquitto_pub %s: %v: %s", topic, err, out)
	}
	return nil
}
