package events

import (
	"container/list"
	"encoding/hex"
	"hash/fnv"
	"time"

	"github.com/tether-edge/tether/protocol"
)

// CorrelatorConfig bounds aggregation. Zero values take the defaults of
// client-go's EventCorrelator, which the kubelet uses.
type CorrelatorConfig struct {
	// MaxSimilar is how many events of one object, type and reason with
	// different messages are sent apart within SimilarWindow; later ones
	// are combined into one event whose message starts with "(combined
	// from similar events): " (default 10).
	MaxSimilar int
	// SimilarWindow is how long similar events are counted together
	// (default 10m).
	SimilarWindow time.Duration
	// Burst is how many events (new ones or updates of the count) about one
	// object are sent at once; RefillEvery is how often the object may
	// send one more (defaults 25 and 5m). Past it the count still grows
	// and the next update sent carries it.
	Burst       int
	RefillEvery time.Duration
	// MaxKeys bounds each of the correlator's caches (events, similar
	// groups, objects), least recently used first out (default 4096).
	MaxKeys int
}

func (c *CorrelatorConfig) validate() {
	if c.MaxSimilar <= 0 {
		c.MaxSimilar = 10
	}
	if c.SimilarWindow <= 0 {
		c.SimilarWindow = 10 * time.Minute
	}
	if c.Burst <= 0 {
		c.Burst = 25
	}
	if c.RefillEvery <= 0 {
		c.RefillEvery = 5 * time.Minute
	}
	if c.MaxKeys <= 0 {
		c.MaxKeys = 4096
	}
}

// MaxMessage bounds an event's message, in bytes (longer ones are cut).
const MaxMessage = 1024

// combinedPrefix starts the message of an event that combines similar ones.
const combinedPrefix = "(combined from similar events): "

// Correlator aggregates events as client-go's EventCorrelator does. It is
// a pure engine: the time is given, and it is not safe for concurrent use
// (the Recorder's goroutine owns it).
type Correlator struct {
	cfg     CorrelatorConfig
	similar *lru[similarKey, *similarGroup]
	seen    *lru[eventKey, *seenEvent]
	buckets *lru[Object, *bucket]
}

// similarKey groups events that differ only in their message.
type similarKey struct {
	obj    Object
	typ    Type
	reason Reason
}

type similarGroup struct {
	messages map[string]bool
	last     time.Time
	// combined is the message of the combined event, once there is one.
	combined string
}

// eventKey is one aggregated event.
type eventKey struct {
	similarKey
	message string
}

type seenEvent struct {
	count       int32
	first, last time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

// NewCorrelator returns a Correlator with cfg's bounds.
func NewCorrelator(cfg CorrelatorConfig) *Correlator {
	cfg.validate()
	return &Correlator{cfg: cfg, similar: newLRU[similarKey, *similarGroup](cfg.MaxKeys),
		seen: newLRU[eventKey, *seenEvent](cfg.MaxKeys), buckets: newLRU[Object, *bucket](cfg.MaxKeys)}
}

// Outcome is what to do with an observed event.
type Outcome struct {
	// Key names the aggregated event: the outbox entry that holds it and
	// that a newer count replaces.
	Key string
	// Event is the aggregated event to send, count and times included.
	Event protocol.Event
	// Send is false when the object's token bucket is empty: the count
	// grew, but nothing is sent now.
	Send bool
}

// Observe takes ev, seen at now, and returns the aggregated event.
func (c *Correlator) Observe(ev Event, now time.Time) Outcome {
	msg := truncate(ev.Message, MaxMessage)
	sk := similarKey{obj: ev.Object, typ: ev.Type, reason: ev.Reason}
	g, ok := c.similar.get(sk)
	if !ok || now.Sub(g.last) > c.cfg.SimilarWindow {
		g = &similarGroup{messages: map[string]bool{}}
		c.similar.put(sk, g)
	}
	g.last = now
	if g.combined == "" && !g.messages[msg] {
		if len(g.messages) >= c.cfg.MaxSimilar {
			g.combined = truncate(combinedPrefix+msg, MaxMessage)
		} else {
			g.messages[msg] = true
		}
	}
	if g.combined != "" && !g.messages[msg] {
		msg = g.combined
	}

	ek := eventKey{similarKey: sk, message: msg}
	s, ok := c.seen.get(ek)
	if !ok {
		s = &seenEvent{first: now}
		c.seen.put(ek, s)
	}
	s.count++
	s.last = now

	return Outcome{
		Key: ek.hash(),
		Event: protocol.Event{InvolvedKind: ev.Object.Kind, Namespace: ev.Object.Namespace, Name: ev.Object.Name,
			UID: ev.Object.UID, FieldPath: ev.Object.FieldPath, Type: string(ev.Type), Reason: string(ev.Reason),
			Message: msg, Count: s.count, FirstTime: s.first.UnixMilli(), LastTime: s.last.UnixMilli()},
		Send: c.take(ev.Object, now),
	}
}

// take takes a token of o's bucket, if there is one. A pod's containers
// share the pod's bucket, as in client-go (its spam key has no field path).
func (c *Correlator) take(o Object, now time.Time) bool {
	o.FieldPath = ""
	b, ok := c.buckets.get(o)
	if !ok {
		b = &bucket{tokens: float64(c.cfg.Burst), at: now}
		c.buckets.put(o, b)
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(float64(c.cfg.Burst), b.tokens+float64(d)/float64(c.cfg.RefillEvery))
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// hash names the aggregated event in the outbox.
func (k eventKey) hash() string {
	h := fnv.New128a()
	for _, s := range []string{k.obj.Kind, k.obj.Namespace, k.obj.Name, k.obj.UID, k.obj.FieldPath,
		string(k.typ), string(k.reason), k.message} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut at a rune boundary.
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// lru is a map that holds at most max entries, dropping the least recently
// used.
type lru[K comparable, V any] struct {
	max   int
	order *list.List // of K, most recent first
	items map[K]lruItem[V]
}

type lruItem[V any] struct {
	v  V
	el *list.Element
}

func newLRU[K comparable, V any](max int) *lru[K, V] {
	return &lru[K, V]{max: max, order: list.New(), items: map[K]lruItem[V]{}}
}

func (l *lru[K, V]) get(k K) (V, bool) {
	it, ok := l.items[k]
	if !ok {
		var zero V
		return zero, false
	}
	l.order.MoveToFront(it.el)
	return it.v, true
}

func (l *lru[K, V]) put(k K, v V) {
	if it, ok := l.items[k]; ok {
		l.order.MoveToFront(it.el)
		l.items[k] = lruItem[V]{v: v, el: it.el}
		return
	}
	l.items[k] = lruItem[V]{v: v, el: l.order.PushFront(k)}
	for len(l.items) > l.max {
		last := l.order.Back()
		l.order.Remove(last)
		delete(l.items, last.Value.(K))
	}
}

func (l *lru[K, V]) len() int { return len(l.items) }
