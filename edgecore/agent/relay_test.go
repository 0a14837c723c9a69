package agent

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/edgecore/apirelay"
	"github.com/tether-edge/tether/edgecore/satoken"
	"github.com/tether-edge/tether/protocol"
)

var relayPod = satoken.Pod{Namespace: "store", Name: "pos", UID: "u1", ServiceAccount: "writer"}

// writeOnline retries w until the session is up (a 503 "unreachable"
// before it), within 10s.
func writeOnline(t *testing.T, rl *apirelay.Relay) *protocol.APIResponse {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		res := rl.Write(t.Context(), relayPod, &protocol.APIRequest{Method: "POST", Path: "/api/v1/namespaces/store/configmaps",
			Body: []byte("{}")})
		if res.Status != http.StatusServiceUnavailable || !strings.Contains(string(res.Body), apirelay.Unreachable) {
			return res
		}
		if time.Now().After(deadline) {
			t.Fatal("no session within 10s")
		}
	}
}

// The agent sends the relay's writes to a hub of version 7 and gives it the
// answers; to a hub of version 6 it sends none and the writes get 503.
func TestRelayThroughTheSession(t *testing.T) {
	hub := newFakeHub(t)
	hub.answer = func(f *protocol.Frame) *protocol.Frame {
		if r := f.APIRequest; r != nil {
			return &protocol.Frame{APIResponse: &protocol.APIResponse{ID: r.ID, Status: http.StatusCreated,
				ContentType: "application/json", Body: []byte(`{"pod":"` + r.Pod + `"}`)}}
		}
		return nil
	}
	rl, err := apirelay.New(apirelay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	startAgent(t, hub, Config{Relay: rl})
	if res := writeOnline(t, rl); res.Status != http.StatusCreated || string(res.Body) != `{"pod":"pos"}` {
		t.Errorf("answer %d %s", res.Status, res.Body)
	}

	old := newFakeHub(t)
	old.version = protocol.APIRelaySince - 1
	rl, err = apirelay.New(apirelay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	startAgent(t, old, Config{Relay: rl})
	if res := writeOnline(t, rl); res.Status != http.StatusServiceUnavailable || !strings.Contains(string(res.Body), "version 6") {
		t.Errorf("through a version 6 hub: %d %s", res.Status, res.Body)
	}
	for {
		select {
		case f := <-old.frames:
			if f.APIRequest != nil {
				t.Fatal("an APIRequest went to a version 6 hub")
			}
		default:
			return
		}
	}
}
