package pods

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// Reported is the status the node last reported of each of its pods (the
// mirror pod's UID for a static pod), for readers other than the Manager:
// the metaserver serves pods with it, since the cloud does not send a pod
// down again when only its status changed. It is safe for concurrent use.
type Reported struct {
	mu sync.Mutex
	m  map[types.UID][]byte // guarded by mu; encoded corev1.PodStatus
	// changed holds a token when something changed since the last
	// receive.
	changed chan struct{}
	// watchers are Watch's channels, each with a token as changed;
	// guarded by mu.
	watchers []chan struct{}
}

// NewReported returns an empty Reported.
func NewReported() *Reported {
	return &Reported{m: map[types.UID][]byte{}, changed: make(chan struct{}, 1)}
}

// Watch returns a channel of its own that receives after statuses changed,
// for a reader other than the one of Changed.
func (r *Reported) Watch() <-chan struct{} {
	c := make(chan struct{}, 1)
	r.mu.Lock()
	r.watchers = append(r.watchers, c)
	r.mu.Unlock()
	return c
}

// PodStatus returns the encoded status (protocol.EncodePodStatus) last
// reported for the pod uid.
func (r *Reported) PodStatus(uid string) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.m[types.UID(uid)]
	return s, ok
}

// Changed receives after statuses changed.
func (r *Reported) Changed() <-chan struct{} { return r.changed }

func (r *Reported) set(uid types.UID, status []byte) {
	r.mu.Lock()
	r.m[uid] = status
	r.mu.Unlock()
	r.kick()
}

// keep drops the pods for which keep is false.
func (r *Reported) retain(keep func(types.UID) bool) {
	r.mu.Lock()
	n := len(r.m)
	for uid := range r.m {
		if !keep(uid) {
			delete(r.m, uid)
		}
	}
	gone := n != len(r.m)
	r.mu.Unlock()
	if gone {
		r.kick()
	}
}

func (r *Reported) kick() {
	r.mu.Lock()
	cs := append([]chan struct{}{r.changed}, r.watchers...)
	r.mu.Unlock()
	for _, c := range cs {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}
