package kubeletserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// LogOptions are the query of /containerLogs, as the kubelet takes it.
type LogOptions struct {
	Follow     bool
	Timestamps bool
	// TailLines, if >= 0, starts at the last TailLines lines.
	TailLines int64
	// Since, if set, skips lines logged before it.
	Since time.Time
	// LimitBytes, if > 0, stops after that many bytes of output.
	LimitBytes int64
}

// record is one line of a CRI log file: "<RFC3339Nano time> <stream> <P|F>
// <content>" (P: a partial line, continued in the next record).
type record struct {
	t       time.Time
	full    bool
	content []byte
}

var errBadRecord = errors.New("bad CRI log record")

func parseRecord(line []byte) (record, error) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	ts, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return record{}, errBadRecord
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return record{}, errBadRecord
	}
	_, rest, ok = bytes.Cut(rest, []byte(" ")) // stdout or stderr
	if !ok {
		return record{}, errBadRecord
	}
	tag, content, _ := bytes.Cut(rest, []byte(" "))
	return record{t: t, full: !bytes.Equal(tag, []byte("P")), content: content}, nil
}

// tailOffset returns the offset of the start of the last n lines of the CRI
// log file f (n < 0: the start of the file).
func tailOffset(f *os.File, n int64) (int64, error) {
	if n < 0 {
		return 0, nil
	}
	if n == 0 {
		return f.Seek(0, io.SeekEnd)
	}
	ring := make([]int64, n)
	count := int64(0)
	var off int64
	lineStart := true
	br := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			// Records that do not parse are skipped, here and when read.
			if rec, perr := parseRecord(line); perr == nil {
				if lineStart {
					ring[count%n] = off
					count++
				}
				lineStart = rec.full
			}
			off += int64(len(line))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if count <= n {
		return 0, nil
	}
	return ring[count%n], nil
}

// writeLogs copies the CRI log file at path to w as the kubelet does:
// contents only (with Timestamps, each line prefixed by its time), from
// TailLines and Since on. With Follow it goes on as the file grows (and
// across rotation) until running reports false at the end of the file, or
// ctx ends.
func writeLogs(ctx context.Context, path string, opts LogOptions, w io.Writer, flush func(),
	running func() bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer func() { f.Close() }()
	off, err := tailOffset(f, opts.TailLines)
	if err != nil {
		return err
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	br := bufio.NewReaderSize(f, 64<<10)
	var (
		written   int64
		lineStart = true
		pending   []byte // a record read without its newline yet
		poll      = 50 * time.Millisecond
	)
	limitHit := func(n int) bool {
		written += int64(n)
		return opts.LimitBytes > 0 && written >= opts.LimitBytes
	}
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			pending = append(pending, line...)
		}
		if err == nil {
			rec, perr := parseRecord(pending)
			pending = pending[:0]
			if perr != nil || (!opts.Since.IsZero() && rec.t.Before(opts.Since)) {
				if perr == nil {
					lineStart = rec.full
				}
				continue
			}
			var out []byte
			if opts.Timestamps && lineStart {
				out = append(out, rec.t.UTC().Format(time.RFC3339Nano)...)
				out = append(out, ' ')
			}
			out = append(out, rec.content...)
			if rec.full {
				out = append(out, '\n')
			}
			lineStart = rec.full
			if opts.LimitBytes > 0 && written+int64(len(out)) > opts.LimitBytes {
				out = out[:opts.LimitBytes-written]
			}
			if _, werr := w.Write(out); werr != nil {
				return werr
			}
			if limitHit(len(out)) {
				flush()
				return nil
			}
			if br.Buffered() == 0 {
				flush()
			}
			continue
		}
		if err != io.EOF {
			return err
		}
		flush()
		if !opts.Follow {
			return nil
		}
		// At the end: reopen if the file was rotated, stop if the
		// container stopped, else wait for more.
		if rotated(f, path) {
			nf, oerr := os.Open(path)
			if oerr == nil {
				f.Close()
				f = nf
				br.Reset(f)
				pending = pending[:0]
				continue
			}
		}
		if !running() {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}

// rotated reports whether path is no longer the file f.
func rotated(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	if err != nil {
		return false
	}
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && (sa.Ino != sb.Ino || sa.Dev != sb.Dev)
}

// parseLogOptions reads the kubelet's /containerLogs query.
func parseLogOptions(q map[string][]string, now time.Time) (LogOptions, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	o := LogOptions{TailLines: -1}
	o.Follow = get("follow") == "true" || get("follow") == "1"
	o.Timestamps = get("timestamps") == "true" || get("timestamps") == "1"
	if v := get("tailLines"); v != "" {
		if _, err := fmt.Sscan(v, &o.TailLines); err != nil || o.TailLines < 0 {
			return o, fmt.Errorf("tailLines %q: want a number >= 0", v)
		}
	}
	if v := get("limitBytes"); v != "" {
		if _, err := fmt.Sscan(v, &o.LimitBytes); err != nil || o.LimitBytes < 1 {
			return o, fmt.Errorf("limitBytes %q: want a number >= 1", v)
		}
	}
	if v := get("sinceSeconds"); v != "" {
		var s int64
		if _, err := fmt.Sscan(v, &s); err != nil || s < 1 {
			return o, fmt.Errorf("sinceSeconds %q: want a number >= 1", v)
		}
		o.Since = now.Add(-time.Duration(s) * time.Second)
	}
	if v := get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return o, fmt.Errorf("sinceTime %q: want RFC 3339", v)
		}
		o.Since = t
	}
	return o, nil
}
