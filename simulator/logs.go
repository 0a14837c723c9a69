package simulator

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
)

// logCounter counts the warnings and errors the components log, and keeps
// the last error, for the progress lines and the checks.
type logCounter struct {
	warns, errors atomic.Int64

	mu sync.Mutex
	// lastError is the last error record, formatted; guarded by mu.
	lastError string
}

func (c *logCounter) last() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastError
}

// countingHandler counts records of level Warn and above in c and hands
// them to next (nil: nowhere). Records below Warn are dropped before they
// are built, so ten thousand quiet nodes cost nothing to log.
type countingHandler struct {
	c     *logCounter
	next  slog.Handler
	attrs []slog.Attr // for lastError, when next is nil
}

func newCountingLogger(c *logCounter, next slog.Handler) *slog.Logger {
	return slog.New(&countingHandler{c: c, next: next})
}

func (h *countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		h.c.errors.Add(1)
		var b strings.Builder
		b.WriteString(r.Message)
		add := func(a slog.Attr) bool {
			b.WriteString(" " + a.Key + "=" + a.Value.String())
			return true
		}
		for _, a := range h.attrs {
			add(a)
		}
		r.Attrs(add)
		h.c.mu.Lock()
		h.c.lastError = b.String()
		h.c.mu.Unlock()
	} else {
		h.c.warns.Add(1)
	}
	if h.next != nil && h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := &countingHandler{c: h.c, attrs: append(h.attrs[:len(h.attrs):len(h.attrs)], attrs...)}
	if h.next != nil {
		n.next = h.next.WithAttrs(attrs)
	}
	return n
}

func (h *countingHandler) WithGroup(name string) slog.Handler {
	n := &countingHandler{c: h.c, attrs: h.attrs}
	if h.next != nil {
		n.next = h.next.WithGroup(name)
	}
	return n
}
