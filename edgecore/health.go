package edgecore

import (
	"context"
	"log/slog"

	"github.com/tether-edge/tether/edgecore/nodestatus"
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
// manager does first: under disk pressure, every unused image old enough
// to go. Pods are not evicted (see the README's limits).
type reclaimer struct {
	rt  *cri.Runtime
	log *slog.Logger
}

func (r reclaimer) Reclaim(ctx context.Context, p nodestatus.Pressure) error {
	if !p.Disk() || r.rt == nil {
		return nil
	}
	res, err := r.rt.GarbageCollect(ctx, true)
	if len(res.Removed) > 0 {
		r.log.Warn("disk pressure: unused images removed", slog.Int("images", len(res.Removed)),
			slog.Uint64("freed_bytes", res.Freed))
	}
	return err
}
