package hub

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/protocol"
)

// APIRelay sends a write of a pod of node to the API server (protocol
// version 7) and returns the API server's response, or its own refusal
// (StatusResponse): 403 for a pod that is not bound to node with the UID
// and service account the request names. It never returns nil. ctx ends
// at Config.RelayTimeout or when the session ends.
type APIRelay interface {
	Relay(ctx context.Context, node string, r *protocol.APIRequest) *protocol.APIResponse
}

// StatusResponse is an APIResponse holding a Kubernetes Status of code,
// reason and message, as the API server answers a refusal.
func StatusResponse(code int, reason metav1.StatusReason, message string) *protocol.APIResponse {
	b, _ := json.Marshal(&metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: message})
	return &protocol.APIResponse{Status: code, ContentType: "application/json", Body: b}
}

// relay answers an APIRequest off the owner goroutine: at most
// Config.MaxRelayInFlight at a time per session (one more gets 429 at
// once), each within Config.RelayTimeout (504 past it). Nothing of the
// request's body or of a token is logged.
func (s *session) relay(r *protocol.APIRequest) {
	answer := func(res *protocol.APIResponse) {
		res.ID = r.ID
		s.sendFrame(&protocol.Frame{APIResponse: res})
	}
	if s.h.cfg.Relay == nil {
		answer(StatusResponse(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			"this cloudcore relays no writes of edge pods"))
		return
	}
	if s.relaying.Add(1) > int32(s.h.cfg.MaxRelayInFlight) {
		s.relaying.Add(-1)
		s.h.stats.relayRefused.Add(1)
		s.h.logRefused.do(func() {
			s.log.Info("relayed writes of the node at the limit", slog.Int("maxRelayInFlight", s.h.cfg.MaxRelayInFlight))
		})
		answer(StatusResponse(http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests,
			"the node has too many writes in flight to the cloud; retry"))
		return
	}
	go func() {
		defer s.relaying.Add(-1)
		ctx, cancel := context.WithTimeout(context.Background(), s.h.cfg.RelayTimeout)
		defer cancel()
		go func() {
			select {
			case <-s.stopc:
				cancel()
			case <-ctx.Done():
			}
		}()
		began := time.Now()
		res := s.h.cfg.Relay.Relay(ctx, s.node, r)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && (res == nil || res.Status >= 500) {
			res = StatusResponse(http.StatusGatewayTimeout, metav1.StatusReasonTimeout,
				"the API server did not answer within "+s.h.cfg.RelayTimeout.String())
		}
		if res == nil {
			res = StatusResponse(http.StatusBadGateway, metav1.StatusReasonInternalError, "the write was not relayed")
		}
		s.h.stats.relayed.Add(1)
		s.log.Debug("relayed a write", slog.String("pod", r.Namespace+"/"+r.Pod), slog.String("method", r.Method),
			slog.String("path", r.Path), slog.Int("status", res.Status), slog.Duration("took", time.Since(began)))
		answer(res)
	}()
}
