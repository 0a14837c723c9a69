// Package apirelay carries the writes of the node's pods to the cloud: the
// in-cluster API at the edge (the metaserver's pod listener) serves reads
// from the store, and hands a pod's create, update, patch or delete here.
// The Relay sends it to the hub as a protocol.APIRequest naming the pod the
// request's token was issued to (edgecore/satoken, verified by the
// metaserver), and gives the pod the hub's APIResponse: the API server's
// own answer, for a request cloudcore made with a token of the pod's
// service account bound to the pod (see cloudcore's apirelay.go). The
// token the pod holds is the node's, never sent anywhere; cloudcore
// checks the pod is bound to this node with that UID and service account.
//
// With no session the write is refused at once with 503 "the cloud is
// unreachable" (no Retry-After: client-go would sleep it and retry up to
// 10 times); with a hub older than protocol version 7 with 503 naming the
// hub's version. A write in flight when the session ends gets 503 too: it
// may or may not have been done, as with any API server that goes away.
//
// Limits: at most Config.MaxInFlight writes of the node wait for the cloud
// (one more gets 429), each at most Config.Timeout (504 past it); the
// metaserver bounds the body (protocol.MaxAPIBody, 413) and the requests
// per second of each pod. The hub keeps its own limits per node.
package apirelay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/edgecore/satoken"
	"github.com/tether-edge/tether/protocol"
)

// Config configures a Relay.
type Config struct {
	// Timeout bounds one write, from the pod's request to the hub's
	// answer (default 15s: the hub's own timeout, 10s, answers 504
	// first).
	Timeout time.Duration
	// MaxInFlight bounds the writes of the node waiting for the cloud
	// (default 16); one more gets 429 at once.
	MaxInFlight int
	// Logger is where the Relay logs (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Timeout == 0 {
		c.Timeout = 15 * time.Second
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 16
	}
	if c.Timeout < 0 || c.MaxInFlight < 0 {
		return errors.New("apirelay: negative timeout or max in flight")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Relay is the node's side of the API relay. It implements agent.Relay
// and metaserver.Writer.
type Relay struct {
	cfg   Config
	wantc chan struct{}

	mu sync.Mutex
	// Guarded by mu:
	// version is the protocol version of the session; 0: no session.
	version uint32
	// queue are the requests to send, pending those sent or queued and
	// not answered, by ID.
	queue   []*protocol.APIRequest
	pending map[uint64]chan *protocol.APIResponse
	nextID  uint64
}

// New builds a Relay.
func New(cfg Config) (*Relay, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Relay{cfg: cfg, wantc: make(chan struct{}, 1), pending: map[uint64]chan *protocol.APIResponse{}}, nil
}

// Status is an APIResponse holding a Kubernetes Status, as the API server
// answers a refusal.
func Status(code int, reason metav1.StatusReason, message string) *protocol.APIResponse {
	b, _ := json.Marshal(&metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: message})
	return &protocol.APIResponse{Status: code, ContentType: "application/json", Body: b}
}

// Unreachable is the message of the 503 of a write with the cloud away.
const Unreachable = "the cloud is unreachable; the edge serves reads only until it is back"

// Write sends r (its ID is set here) for pod and waits for the answer, at
// most Config.Timeout. It never returns nil.
func (rl *Relay) Write(ctx context.Context, pod satoken.Pod, r *protocol.APIRequest) *protocol.APIResponse {
	r.Namespace, r.Pod, r.PodUID, r.ServiceAccount = pod.Namespace, pod.Name, pod.UID, pod.ServiceAccount
	rl.mu.Lock()
	switch {
	case rl.version == 0:
		rl.mu.Unlock()
		return Status(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, r.Method+" refused: "+Unreachable)
	case rl.version < protocol.APIRelaySince:
		v := rl.version
		rl.mu.Unlock()
		return Status(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			fmt.Sprintf("%s refused: the cloud's hub speaks protocol version %d and relays no writes (version %d does): "+
				"the edge serves reads only", r.Method, v, protocol.APIRelaySince))
	case len(rl.pending) >= rl.cfg.MaxInFlight:
		rl.mu.Unlock()
		return Status(http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests,
			fmt.Sprintf("the node has %d writes waiting for the cloud already; retry", rl.cfg.MaxInFlight))
	}
	if err := (&protocol.Frame{APIRequest: withID(r, 1)}).Validate(); err != nil {
		rl.mu.Unlock()
		return Status(http.StatusBadRequest, metav1.StatusReasonBadRequest, "the edge does not relay this request: "+err.Error())
	}
	rl.nextID++
	id := rl.nextID
	r.ID = id
	c := make(chan *protocol.APIResponse, 1)
	rl.pending[id] = c
	rl.queue = append(rl.queue, r)
	rl.mu.Unlock()
	select {
	case rl.wantc <- struct{}{}:
	default:
	}
	t := time.NewTimer(rl.cfg.Timeout)
	defer t.Stop()
	select {
	case res := <-c:
		return res
	case <-t.C:
		rl.drop(id)
		return Status(http.StatusGatewayTimeout, metav1.StatusReasonTimeout,
			fmt.Sprintf("the cloud did not answer within %s; the write may or may not have been done", rl.cfg.Timeout))
	case <-ctx.Done():
		rl.drop(id)
		return Status(http.StatusGatewayTimeout, metav1.StatusReasonTimeout, "request cancelled")
	}
}

func withID(r *protocol.APIRequest, id uint64) *protocol.APIRequest {
	c := *r
	c.ID = id
	return &c
}

// drop forgets the request id (its answer, if it comes, is ignored).
func (rl *Relay) drop(id uint64) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	delete(rl.pending, id)
	for i, q := range rl.queue {
		if q.ID == id {
			rl.queue = append(rl.queue[:i], rl.queue[i+1:]...)
			break
		}
	}
}

// Session implements agent.Relay: a session of protocol version started
// (up) or ended. At the end every write waiting gets 503.
func (rl *Relay) Session(up bool, version uint32) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if up {
		rl.version = version
		return
	}
	rl.version = 0
	clear(rl.queue)
	rl.queue = rl.queue[:0]
	for id, c := range rl.pending {
		c <- Status(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			"the cloud went away before it answered; the write may or may not have been done")
		delete(rl.pending, id)
	}
}

// Wanted implements agent.Relay: it receives when Next may have requests.
func (rl *Relay) Wanted() <-chan struct{} { return rl.wantc }

// Next implements agent.Relay: the requests to send now.
func (rl *Relay) Next() []*protocol.APIRequest {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.version < protocol.APIRelaySince || len(rl.queue) == 0 {
		return nil
	}
	out := rl.queue
	rl.queue = nil
	return out
}

// Answered implements agent.Relay: the hub's answer to a request. An
// answer to no request waiting (late, or made up) is dropped.
func (rl *Relay) Answered(res *protocol.APIResponse) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	c, ok := rl.pending[res.ID]
	if !ok {
		rl.cfg.Logger.Debug("apirelay: an answer to no write waiting", slog.Uint64("id", res.ID))
		return
	}
	delete(rl.pending, res.ID)
	c <- res
}

// InFlight is the number of writes waiting for the cloud.
func (rl *Relay) InFlight() int {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return len(rl.pending)
}
