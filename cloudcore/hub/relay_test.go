package hub

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-edge/tether/protocol"
)

// relayer answers as an API server behind a relay where only pod "pos" of
// node n1 exists; a request for pod "slow" waits for release (or its
// context).
type relayer struct {
	nodes   chan string
	release chan struct{}
}

func (r *relayer) Relay(ctx context.Context, node string, q *protocol.APIRequest) *protocol.APIResponse {
	r.nodes <- node
	if q.Pod == "slow" {
		select {
		case <-r.release:
		case <-ctx.Done():
			return StatusResponse(http.StatusServiceUnavailable, "ServiceUnavailable", ctx.Err().Error())
		}
	}
	if node != "n1" || q.Pod == "elsewhere" {
		return StatusResponse(http.StatusForbidden, "Forbidden", "pod "+q.Pod+" is not bound to node "+node)
	}
	return &protocol.APIResponse{Status: http.StatusCreated, ContentType: "application/json", Body: []byte(`{"kind":"ConfigMap"}`)}
}

func write(id uint64, pod string) *protocol.Frame {
	return &protocol.Frame{APIRequest: &protocol.APIRequest{ID: id, Namespace: "store", Pod: pod, PodUID: "u",
		ServiceAccount: "writer", Method: "POST", Path: "/api/v1/namespaces/store/configmaps", ContentType: "application/json",
		Body: []byte(`{"metadata":{"name":"x"}}`)}}
}

// response waits for the APIResponse of id, skipping other frames.
func (e *fakeEdge) response(id uint64) *protocol.APIResponse {
	e.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-e.frames:
			if !ok {
				e.t.Fatal("connection closed")
			}
			if f.APIResponse != nil && f.APIResponse.ID == id {
				return f.APIResponse
			}
		case <-deadline:
			e.t.Fatalf("no APIResponse %d", id)
		}
	}
}

func TestRelay(t *testing.T) {
	rl := &relayer{nodes: make(chan string, 100), release: make(chan struct{})}
	src, url := startHub(t, Config{Relay: rl, MaxRelayInFlight: 2, RelayTimeout: 2 * time.Second})
	e := connect(t, url, nil)
	e.send(write(1, "pos"))
	if res := e.response(1); res.Status != http.StatusCreated || string(res.Body) != `{"kind":"ConfigMap"}` {
		t.Errorf("response %+v", res)
	}
	if n := <-rl.nodes; n != "n1" {
		t.Errorf("relayed for node %q: the hub must name the session's node, not one the edge says", n)
	}
	// Another node's pod: the relay's 403 reaches the edge.
	e.send(write(2, "elsewhere"))
	if res := e.response(2); res.Status != http.StatusForbidden {
		t.Errorf("another node's pod: %+v", res)
	}
	<-rl.nodes

	// Flood: two writes in flight, the third gets 429 at once.
	e.send(write(3, "slow"))
	e.send(write(4, "slow"))
	<-rl.nodes
	<-rl.nodes
	e.send(write(5, "pos"))
	if res := e.response(5); res.Status != http.StatusTooManyRequests {
		t.Errorf("third write in flight: %+v, want 429", res)
	}
	close(rl.release)
	if st := src.hub.Stats(); st.RelayRefused != 1 {
		t.Errorf("stats: %d relayed writes refused, want 1", st.RelayRefused)
	}
	for range 2 {
		f := e.recv()
		if f.APIResponse == nil || f.APIResponse.Status != http.StatusCreated {
			t.Errorf("write 3 or 4: %+v", f)
		}
	}

	// A malformed request (exec is not relayed) is a bad frame; the
	// session goes on.
	b, err := protocol.Encode(write(6, "pos"))
	if err != nil {
		t.Fatal(err)
	}
	e.sendRaw(t, []byte(strings.Replace(string(b), "/api/v1/namespaces/store/configmaps", "/api/v1/namespaces/store/pods/p/exec", 1)))
	e.waitError(t, protocol.ErrorBadFrame)
	e.send(write(7, "pos"))
	if res := e.response(7); res.Status != http.StatusCreated {
		t.Errorf("after a bad frame: %+v", res)
	}
}

// A write past RelayTimeout gets 504.
func TestRelayTimeout(t *testing.T) {
	rl := &relayer{nodes: make(chan string, 10), release: make(chan struct{})}
	_, url := startHub(t, Config{Relay: rl, RelayTimeout: 200 * time.Millisecond})
	e := connect(t, url, nil)
	e.send(write(1, "slow"))
	if res := e.response(1); res.Status != http.StatusGatewayTimeout {
		t.Errorf("response %+v, want 504", res)
	}
}

// An edge of version 6 cannot relay (the hub treats an APIRequest as
// unexpected), and a hub without a relay answers 503.
func TestRelayGated(t *testing.T) {
	rl := &relayer{nodes: make(chan string, 10), release: make(chan struct{})}
	_, url := startHub(t, Config{Relay: rl})
	old, err := dialVersion(t, url, issueCert(t, "n1", "id-n1"), "n1", nil, protocol.APIRelaySince-1)
	if err != nil {
		t.Fatal(err)
	}
	old.send(write(1, "pos"))
	old.waitError(t, protocol.ErrorUnexpected)
	if len(rl.nodes) != 0 {
		t.Error("a version 6 session's write was relayed")
	}

	_, url = startHub(t, Config{})
	e := connect(t, url, nil)
	e.send(write(2, "pos"))
	if res := e.response(2); res.Status != http.StatusServiceUnavailable {
		t.Errorf("a hub without a relay answered %+v", res)
	}
}

func (e *fakeEdge) sendRaw(t *testing.T, b []byte) {
	t.Helper()
	if err := e.ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
		t.Fatal(err)
	}
}

// waitError waits for an Error of code, skipping other frames.
func (e *fakeEdge) waitError(t *testing.T, code protocol.ErrorCode) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-e.frames:
			if !ok {
				t.Fatal("connection closed")
			}
			if f.Error != nil && f.Error.Code == code {
				return
			}
		case <-deadline:
			t.Fatalf("no error %s", code)
		}
	}
}
