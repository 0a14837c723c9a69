package status

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// leaseDue reports whether node's Lease should be renewed at now: it is not
// known, or was last renewed RenewInterval ago or more.
func (w *Writer) leaseDue(node string, now time.Time) bool {
	w.leaseMu.Lock()
	defer w.leaseMu.Unlock()
	return w.dueLocked(w.leases[node], node, now)
}

func (w *Writer) dueLocked(l *coordinationv1.Lease, node string, now time.Time) bool {
	if l == nil || l.Spec.RenewTime == nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != node {
		return true
	}
	return now.Sub(l.Spec.RenewTime.Time) >= w.cfg.RenewInterval
}

// cacheLease remembers l as node's Lease; nil forgets it.
func (w *Writer) cacheLease(node string, l *coordinationv1.Lease) {
	w.leaseMu.Lock()
	defer w.leaseMu.Unlock()
	if l == nil {
		delete(w.leases, node)
		return
	}
	w.leases[node] = l
}

// renewLease renews node's Lease in kube-node-lease, creating it if missing.
// It starts from the Lease it last wrote and reads the current one only when
// it has none or the API server reports a conflict.
func (w *Writer) renewLease(ctx context.Context, node string) error {
	leases := w.leaseClient().CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := w.cfg.Clock.Now()
	w.leaseMu.Lock()
	lease := w.leases[node]
	due := w.dueLocked(lease, node, now)
	w.leaseMu.Unlock()
	if !due {
		w.stats.unchanged.Add(1)
		return nil
	}

	var err error
	if lease == nil {
		if lease, err = w.getLease(ctx, node); err != nil {
			return err
		}
	}
	// Two tries: one from what we know, one from what the API server has
	// after someone else changed it (an earlier hub, an old session).
	for try := 1; ; try++ {
		var raced bool
		if lease == nil {
			var created *coordinationv1.Lease
			created, err = leases.Create(ctx, w.renewed(nil, node, now), metav1.CreateOptions{})
			if err == nil {
				w.cacheLease(node, created)
				w.stats.leaseCreates.Add(1)
				return nil
			}
			raced = apierrors.IsAlreadyExists(err)
		} else {
			var updated *coordinationv1.Lease
			updated, err = leases.Update(ctx, w.renewed(lease, node, now), metav1.UpdateOptions{})
			if err == nil {
				w.cacheLease(node, updated)
				w.stats.leaseRenewals.Add(1)
				return nil
			}
			raced = apierrors.IsConflict(err) || apierrors.IsNotFound(err)
		}
		if !raced || try == 2 {
			w.cacheLease(node, nil)
			return fmt.Errorf("renew lease %s: %w", node, err)
		}
		if lease, err = w.getLease(ctx, node); err != nil {
			return err
		}
	}
}

// warmLeasePage is the page size of warmLeases' list (a variable for the
// paging test).
var warmLeasePage int64 = 500

// warmLeases caches the node Leases that have expired, read in one list (in
// pages): after cloudcore was down longer than LeaseDuration every edge's
// Lease has expired, and each reconnecting node's first renewal then
// updates its Lease at once instead of reading it first (for a fleet of
// 10,000, as many reads fewer in the storm). A Lease still live is being
// renewed by someone else (another replica, a kubelet): it is not cached,
// and its first renewal here reads it, as before; so does one that changed
// since the list (a conflict). A node's Lease cached meanwhile by a renewal
// is kept. A failed list is logged: renewals read what they need.
func (w *Writer) warmLeases(ctx context.Context) {
	now := w.cfg.Clock.Now()
	opts := metav1.ListOptions{Limit: warmLeasePage}
	warmed := 0
	for {
		list, err := w.leaseClient().CoordinationV1().Leases(corev1.NamespaceNodeLease).List(ctx, opts)
		if err != nil {
			w.log.Info("node Leases not listed: their first renewals read them", slog.Any("error", err))
			return
		}
		w.leaseMu.Lock()
		for i := range list.Items {
			l := &list.Items[i]
			if _, ok := w.leases[l.Name]; ok || !leaseExpired(l, now) {
				continue
			}
			w.leases[l.Name] = l
			warmed++
		}
		w.leaseMu.Unlock()
		if opts.Continue = list.Continue; opts.Continue == "" {
			break
		}
	}
	w.stats.leasesWarmed.Add(int64(warmed))
	w.log.Info("expired node Leases cached", slog.Int("leases", warmed))
}

// leaseExpired reports whether l is a node's Lease (held by the node it
// names) that nobody renewed within its duration before now.
func leaseExpired(l *coordinationv1.Lease, now time.Time) bool {
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != l.Name || l.Spec.RenewTime == nil ||
		l.Spec.LeaseDurationSeconds == nil {
		return false
	}
	return now.Sub(l.Spec.RenewTime.Time) > time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second
}

// leaseClient is the client of the Lease lane.
func (w *Writer) leaseClient() kubernetes.Interface {
	if w.cfg.LeaseClient != nil {
		return w.cfg.LeaseClient
	}
	return w.client
}

// getLease reads node's Lease from the API server; it returns nil and no
// error when there is none.
func (w *Writer) getLease(ctx context.Context, node string) (*coordinationv1.Lease, error) {
	l, err := w.leaseClient().CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, node, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		w.cacheLease(node, nil)
		return nil, nil
	case err != nil:
		w.cacheLease(node, nil)
		return nil, fmt.Errorf("get lease %s: %w", node, err)
	}
	return l, nil
}

// renewed returns a copy of l (a new Lease if nil) held by node and renewed
// at now, owned by the Node if it exists, as the kubelet does. A renew time
// never goes back: if l was renewed after now (by a replica whose clock is
// ahead of this one's), it keeps that time. A Lease is only ever renewed,
// so a late renewal of a replica the edge left (see fence.go) does no harm
// beyond calling the node alive until that replica's session times out,
// which a single replica does too.
func (w *Writer) renewed(l *coordinationv1.Lease, node string, now time.Time) *coordinationv1.Lease {
	if l == nil {
		l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: node, Namespace: corev1.NamespaceNodeLease}}
	} else {
		l = l.DeepCopy()
	}
	holder := node
	secs := int32(w.cfg.LeaseDuration / time.Second)
	renew := metav1.NewMicroTime(now)
	if l.Spec.RenewTime != nil && l.Spec.RenewTime.Time.After(now) {
		renew = *l.Spec.RenewTime.DeepCopy()
	}
	l.Spec.HolderIdentity = &holder
	l.Spec.LeaseDurationSeconds = &secs
	l.Spec.RenewTime = &renew
	if len(l.OwnerReferences) == 0 {
		if n, err := w.lister.Node(node); err == nil && n.UID != "" {
			l.OwnerReferences = []metav1.OwnerReference{{
				APIVersion: corev1.SchemeGroupVersion.String(),
				Kind:       "Node",
				Name:       n.Name,
				UID:        n.UID,
			}}
		}
	}
	return l
}
