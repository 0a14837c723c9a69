package apirelay

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/edgecore/satoken"
	"github.com/tether-edge/tether/protocol"
)

var pod = satoken.Pod{Namespace: "store", Name: "pos", UID: "u1", ServiceAccount: "writer"}

func create() *protocol.APIRequest {
	return &protocol.APIRequest{Method: "POST", Path: "/api/v1/namespaces/store/configmaps", Body: []byte("{}")}
}

func TestWrite(t *testing.T) {
	rl, err := New(Config{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	// No session, an old hub: 503 at once, nothing queued.
	if res := rl.Write(ctx, pod, create()); res.Status != http.StatusServiceUnavailable || !strings.Contains(string(res.Body), Unreachable) {
		t.Errorf("offline: %d %s", res.Status, res.Body)
	}
	rl.Session(true, protocol.APIRelaySince-1)
	if res := rl.Write(ctx, pod, create()); res.Status != http.StatusServiceUnavailable || !strings.Contains(string(res.Body), "version 6") {
		t.Errorf("old hub: %d %s", res.Status, res.Body)
	}
	if rl.Next() != nil {
		t.Error("a request queued for an old hub")
	}

	rl.Session(true, protocol.Version)
	done := make(chan *protocol.APIResponse, 1)
	go func() { done <- rl.Write(ctx, pod, create()) }()
	<-rl.Wanted()
	reqs := rl.Next()
	if len(reqs) != 1 || reqs[0].Pod != "pos" || reqs[0].PodUID != "u1" || reqs[0].ServiceAccount != "writer" || reqs[0].ID == 0 {
		t.Fatalf("sent %+v", reqs)
	}
	// An answer to another ID (made up by a hostile hub) is dropped.
	rl.Answered(&protocol.APIResponse{ID: reqs[0].ID + 100, Status: 200})
	rl.Answered(&protocol.APIResponse{ID: reqs[0].ID, Status: 201})
	if res := <-done; res.Status != 201 {
		t.Errorf("answer %+v", res)
	}

	// No answer within the timeout: 504; the late answer is dropped.
	res := rl.Write(ctx, pod, create())
	if res.Status != http.StatusGatewayTimeout {
		t.Errorf("no answer: %d", res.Status)
	}
	late := rl.Next()
	if len(late) != 0 {
		t.Errorf("a timed-out request still queued: %+v", late)
	}
	if rl.InFlight() != 0 {
		t.Error("a timed-out write still counted")
	}

	// A request the protocol would refuse is refused here (400), not sent.
	bad := create()
	bad.Path = "/api/v1/namespaces/store/pods/pos/exec"
	if res := rl.Write(ctx, pod, bad); res.Status != http.StatusBadRequest {
		t.Errorf("exec: %d", res.Status)
	}
}
