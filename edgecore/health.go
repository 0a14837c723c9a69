package edgecore

import (
	"context"
	"errors"
	"log/slog"

	"github.com/tether-edge/tether/edgecore/nodestatus"
	"github.com/tether-edge/tether/edgecore/pods"
	"github.com/tether-edge/tether/edgecore/runtime/cri"
)

// criProbe is the CRI runtime as the node monitor asks it how it is.
type criProbe struct{ rt *cri.Runtime }

func (p criProbe) Status(ctx context.Context) ([]nodestatus.RuntimeCondition, error) {
	conds, err := p.rt.RuntimeConditions(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]nodestatus.RuntimeCondition, 0, len(conds))
	for _, c := range conds {
		out = append(out, nodestatus.RuntimeCondition{Type: c.Type, Status: c.Status, Reason: c.Reason, Message: c.Message})
	}
	return out, nil
}

func (p criProbe) ImageFS(ctx context.Context) (string, error) { return p.rt.ImageFS(ctx) }

// reclaimer frees what the node is short of, as the kubelet's eviction
// manager does: under disk pressure every unused image old enough to go
// first; if that freed nothing (or the node is short of memory or PIDs),
// one pod is evicted, the one that matters least (pods.EvictionOrder),
// never a critical or static one. The monitor measures again before the
// next call, one period later.
type reclaimer struct {
	rt   *cri.Runtime
	pods *pods.Manager
	log  *slog.Logger
	// nothingLeft: the last call found no pod to evict (said once until
	// one is evicted again); only the monitor's goroutine calls Reclaim.
	nothingLeft bool
}

func (r *reclaimer) Reclaim(ctx context.Context, p nodestatus.Pressure) error {
	if p.Disk() {
		res, err := r.rt.GarbageCollect(ctx, true)
		if err != nil {
			r.log.Warn("disk pressure: image garbage collection", slog.Any("err", err))
		}
		if len(res.Removed) > 0 {
			r.log.Warn("disk pressure: unused images removed", slog.Int("images", len(res.Removed)),
				slog.Uint64("freed_bytes", res.Freed))
			return nil
		}
	}
	resource := "ephemeral-storage"
	switch {
	case p.Memory:
		resource = "memory"
	case p.PID:
		resource = "pids"
	}
	pod, err := r.pods.Evict(ctx, resource)
	if errors.Is(err, pods.ErrEvictionInProgress) {
		return nil
	}
	if err != nil {
		return err
	}
	if pod == "" && !r.nothingLeft {
		r.log.Warn("node under pressure: no pod left that may be evicted", slog.String("resource", resource))
	}
	r.nothingLeft = pod == ""
	return nil
}
