// Package runtime defines what edgecore needs from a container runtime. The
// implementations live in subpackages: fake (in memory, for the simulator
// and unit tests) and cri (containerd through the CRI API).
package runtime

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Runtime runs pods. Its methods are called from several goroutines at
// once (pods.Manager syncs pods in parallel), but never two SyncPod or
// KillPod calls for the same pod at once.
type Runtime interface {
	// SyncPod makes the runtime run pod as its spec says (starting what is
	// missing, restarting per policy) and returns the pod's current status.
	// It is called again whenever the pod or its dependencies change and
	// periodically; it must be idempotent.
	SyncPod(ctx context.Context, pod *corev1.Pod) (*corev1.PodStatus, error)
	// KillPod stops every container of the pod, waiting at most grace for
	// each to exit, and removes the sandbox. Killing an unknown pod is not an
	// error.
	KillPod(ctx context.Context, uid types.UID, grace time.Duration) error
	// Pods lists the UIDs of the pods the runtime holds.
	Pods(ctx context.Context) ([]types.UID, error)
}
