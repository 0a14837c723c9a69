package cri

import (
	"strings"
	"sync"
	"time"
)

// backoff is the kubelet's exponential back-off per key (a container or an
// image): the first delay is initial, each next one doubles up to max, and
// an entry not touched for 2*max starts over.
type backoff struct {
	initial, max time.Duration

	mu sync.Mutex
	// entries by key; guarded by mu.
	entries map[string]*backoffEntry
}

type backoffEntry struct {
	delay time.Duration
	last  time.Time // when next was last called
}

func newBackoff(initial, max time.Duration) *backoff {
	return &backoff{initial: initial, max: max, entries: map[string]*backoffEntry{}}
}

// next records an attempt at now and returns the delay before the one
// after it.
func (b *backoff) next(key string, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[key]
	if !ok || now.Sub(e.last) > 2*b.max {
		e = &backoffEntry{delay: b.initial}
		b.entries[key] = e
	} else {
		e.delay = min(2*e.delay, b.max)
	}
	e.last = now
	return e.delay
}

// remaining is how long, after an event (a container's exit) at since, the
// next attempt must still wait; 0 when it may go ahead.
func (b *backoff) remaining(key string, since, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.entries[key]
	if !ok || now.Sub(e.last) > 2*b.max {
		return 0
	}
	if d := since.Add(e.delay).Sub(now); d > 0 {
		return d
	}
	return 0
}

// delay is the key's current delay (0 when it has none).
func (b *backoff) delay(key string) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.entries[key]; ok {
		return e.delay
	}
	return 0
}

// forgetPrefix drops every key that starts with prefix.
func (b *backoff) forgetPrefix(prefix string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k := range b.entries {
		if strings.HasPrefix(k, prefix) {
			delete(b.entries, k)
		}
	}
}

// forget drops key.
func (b *backoff) forget(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.entries, key)
}
