package events

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// Config configures a Recorder.
type Config struct {
	// Queue bounds the events recorded and not yet taken by Start's
	// goroutine (default 1024); past it events are dropped and counted.
	Queue int
	// Correlator bounds aggregation.
	Correlator CorrelatorConfig
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.Queue < 0 {
		return errors.New("events: queue must not be negative")
	}
	if c.Queue == 0 {
		c.Queue = 1024
	}
	c.Correlator.validate()
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Recorder queues events in the outbox. Record never blocks; Start's
// goroutine owns the correlator and the writes.
type Recorder struct {
	cfg    Config
	db     *store.DB
	queued func()
	in     chan timedEvent
	// corr and loggedAt (when a failure was last logged) are owned by
	// Start's goroutine.
	corr     *Correlator
	loggedAt time.Time

	recorded, sent, throttled, dropped, failed atomic.Int64
}

type timedEvent struct {
	ev Event
	at time.Time
}

// New returns a Recorder writing to db's outbox; queued is called after
// events were queued (the agent's OutboxChanged).
func New(cfg Config, db *store.DB, queued func()) (*Recorder, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if queued == nil {
		queued = func() {}
	}
	return &Recorder{cfg: cfg, db: db, queued: queued, in: make(chan timedEvent, cfg.Queue),
		corr: NewCorrelator(cfg.Correlator)}, nil
}

// Record queues ev. It never blocks: when the queue is full (the store is
// stuck, or an event storm) ev is dropped and counted.
func (r *Recorder) Record(ev Event) {
	select {
	case r.in <- timedEvent{ev: ev, at: r.cfg.Now()}:
		r.recorded.Add(1)
	default:
		r.dropped.Add(1)
	}
}

// batchMax bounds the events written in one store transaction.
const batchMax = 256

// Start aggregates the recorded events and queues them in the outbox, in
// batches, until ctx ends.
func (r *Recorder) Start(ctx context.Context) error {
	for {
		var first timedEvent
		select {
		case <-ctx.Done():
			return nil
		case first = <-r.in:
		}
		batch := []timedEvent{first}
	drain:
		for len(batch) < batchMax {
			select {
			case te := <-r.in:
				batch = append(batch, te)
			default:
				break drain
			}
		}
		r.write(batch)
	}
}

// write correlates a batch and queues what is to be sent.
func (r *Recorder) write(batch []timedEvent) {
	var keys []string
	frames := map[string]*protocol.Frame{}
	for _, te := range batch {
		out := r.corr.Observe(te.ev, te.at)
		if !out.Send {
			r.throttled.Add(1)
			continue
		}
		if _, ok := frames[out.Key]; !ok {
			keys = append(keys, out.Key)
		}
		ev := out.Event
		frames[out.Key] = &protocol.Frame{Event: &ev}
	}
	if len(keys) == 0 {
		return
	}
	err := r.db.Update(func(tx *store.Tx) error {
		for _, k := range keys {
			if _, err := tx.Enqueue(store.OutboxEvent(k), frames[k]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		n := r.failed.Add(int64(len(keys)))
		if now := r.cfg.Now(); now.Sub(r.loggedAt) > time.Minute {
			r.loggedAt = now
			r.cfg.Logger.Warn("events not queued", slog.Int("events", len(keys)), slog.Int64("failedSoFar", n), slog.Any("err", err))
		}
		return
	}
	r.sent.Add(int64(len(keys)))
	r.queued()
}

// Stats counts what a Recorder did.
type Stats struct {
	// Recorded events were taken by Record; Dropped were not (the queue
	// was full).
	Recorded, Dropped int64
	// Queued is how many aggregated events (new ones and updates) were
	// put in the outbox; Throttled how many updates the token buckets
	// held back; Failed how many the store could not take.
	Queued, Throttled, Failed int64
}

// Stats returns the counts so far.
func (r *Recorder) Stats() Stats {
	return Stats{Recorded: r.recorded.Load(), Dropped: r.dropped.Load(), Queued: r.sent.Load(),
		Throttled: r.throttled.Load(), Failed: r.failed.Load()}
}
