package hub

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tether-edge/tether/protocol"
)

// reviews answers as a cluster where only pod "pos" of node n1 exists and
// its service account may list pods.
type reviews struct{ nodes chan string }

func (r *reviews) Review(_ context.Context, node string, rv *protocol.AccessReview) ([]bool, error) {
	r.nodes <- node
	if node != "n1" || rv.Pod != "pos" {
		return nil, errors.New("pod " + rv.Namespace + "/" + rv.Pod + " is not bound to node " + node)
	}
	out := make([]bool, len(rv.Checks))
	for i, c := range rv.Checks {
		out[i] = c.Verb == "list" && c.Resource == "pods"
	}
	return out, nil
}

func review(id uint64, pod string) *protocol.Frame {
	return &protocol.Frame{AccessReview: &protocol.AccessReview{ID: id, Namespace: "store", Pod: pod, PodUID: "u",
		ServiceAccount: "reader", Checks: []protocol.AccessCheck{{Verb: "list", Resource: "pods", Namespace: "store"},
			{Verb: "list", Resource: "secrets", Namespace: "store"}}}}
}

// result waits for the AccessReviewResult, skipping other frames.
func (e *fakeEdge) result() *protocol.AccessReviewResult {
	e.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case f, ok := <-e.frames:
			if !ok {
				e.t.Fatal("connection closed")
			}
			if f.AccessReviewResult != nil {
				return f.AccessReviewResult
			}
			if f.Error != nil {
				e.t.Fatalf("error %v", f.Error)
			}
		case <-deadline:
			e.t.Fatal("no AccessReviewResult")
		}
	}
}

func TestAccessReviews(t *testing.T) {
	rv := &reviews{nodes: make(chan string, 10)}
	_, url := startHub(t, Config{Reviews: rv})
	e := connect(t, url, nil)
	e.send(review(7, "pos"))
	res := e.result()
	if res.ID != 7 || len(res.Allowed) != 2 || !res.Allowed[0] || res.Allowed[1] {
		t.Errorf("result %+v", res)
	}
	if n := <-rv.nodes; n != "n1" {
		t.Errorf("asked for node %q: the hub must name the session's node, not one the edge says", n)
	}
	// A pod the reviewer refuses (another node's): an error, no answers.
	e.send(review(8, "elsewhere"))
	if res := e.result(); res.ID != 8 || res.Error == "" || len(res.Allowed) != 0 {
		t.Errorf("result %+v", res)
	}
}

// An edge of version 5 cannot send an AccessReview (it would not, but if it
// did the hub treats it as an unexpected message), and a hub without a
// reviewer refuses every review.
func TestAccessReviewsGated(t *testing.T) {
	rv := &reviews{nodes: make(chan string, 10)}
	_, url := startHub(t, Config{Reviews: rv})
	old, err := dialVersion(t, url, issueCert(t, "n1", "id-n1"), "n1", nil, protocol.AccessReviewSince-1)
	if err != nil {
		t.Fatal(err)
	}
	old.send(review(1, "pos"))
	deadline := time.After(10 * time.Second)
	for got := false; !got; {
		select {
		case f := <-old.frames:
			if f.AccessReviewResult != nil {
				t.Fatal("a version 5 session got an AccessReviewResult")
			}
			if f.Error != nil && f.Error.Code == protocol.ErrorUnexpected {
				got = true
			}
		case <-deadline:
			t.Fatal("no error for an AccessReview in a version 5 session")
		}
	}
	if len(rv.nodes) != 0 {
		t.Error("the reviewer was asked in a version 5 session")
	}

	_, url = startHub(t, Config{})
	e := connect(t, url, nil)
	e.send(review(2, "pos"))
	if res := e.result(); res.Error == "" {
		t.Errorf("a hub without a reviewer answered %+v", res)
	}
}
