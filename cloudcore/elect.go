package cloudcore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaderLease is the Lease, in Config.Namespace, that the replicas elect the
// one running the cluster-wide singletons with (today the autonomy
// controller). Everything else (sessions, statuses, node Leases, joins) runs
// on every replica for the nodes connected to it.
const LeaderLease = "tether-cloudcore-leader"

// election runs work on one replica at a time: the holder of LeaderLease.
// A replica that loses the Lease (it could not renew it within
// RenewDeadline) stops its work, which must end when its context does, and
// stands for election again; a replica that stops releases the Lease, so
// another takes over within RetryPeriod instead of LeaseDuration.
type election struct {
	client    kubernetes.Interface
	namespace string
	identity  string
	// lease, renew and retry are the Lease's duration, the renew deadline
	// and the retry period (kube-controller-manager's defaults: 15s, 10s,
	// 2s).
	lease, renew, retry time.Duration
	log                 *slog.Logger
	leading             atomic.Bool
}

func newElection(client kubernetes.Interface, namespace string, log *slog.Logger) *election {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	rand.Read(b)
	return &election{client: client, namespace: namespace, identity: host + "_" + hex.EncodeToString(b),
		lease: 15 * time.Second, renew: 10 * time.Second, retry: 2 * time.Second, log: log}
}

// Leading reports whether this replica holds the Lease now.
func (e *election) Leading() bool { return e.leading.Load() }

// run stands for election until ctx ends, running work while it leads.
func (e *election) run(ctx context.Context, work func(ctx context.Context) error) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: e.namespace, Name: LeaderLease},
		Client:     e.client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.identity},
	}
	var failed error
	for ctx.Err() == nil && failed == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: e.lease, RenewDeadline: e.renew, RetryPeriod: e.retry,
			ReleaseOnCancel: true, Name: LeaderLease,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					e.leading.Store(true)
					e.log.Info("leading: cluster-wide work starts", slog.String("identity", e.identity))
					if err := work(ctx); err != nil && ctx.Err() == nil {
						failed = err
					}
				},
				OnStoppedLeading: func() {
					e.leading.Store(false)
					e.log.Info("no longer leading", slog.String("identity", e.identity))
				},
				OnNewLeader: func(id string) {
					if id != e.identity {
						e.log.Info("leader elected", slog.String("leader", id))
					}
				},
			},
		})
		if err != nil {
			return fmt.Errorf("leader election: %w", err)
		}
		// Run returns when ctx ends or the Lease is lost; the work's
		// context ends with it.
		le.Run(ctx)
	}
	return failed
}
