package kubeletserver

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const criLog = `2026-12-06T10:00:00.000000001Z stdout F one
2026-12-06T10:00:01.000000002Z stderr P tw
2026-12-06T10:00:01.500000000Z stderr F o
not a record
2026-12-06T10:00:02.000000003Z stdout F three
2026-12-06T10:00:03.000000004Z stdout F four
`

func logsOf(t *testing.T, query string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "0.log")
	if err := os.WriteFile(path, []byte(criLog), 0o644); err != nil {
		t.Fatal(err)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := parseLogOptions(q, time.Date(2026, 12, 6, 10, 0, 4, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := writeLogs(t.Context(), path, opts, &b, func() {}, func() bool { return false }); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestWriteLogs(t *testing.T) {
	for query, want := range map[string]string{
		"":                               "one\ntwo\nthree\nfour\n",
		"tailLines=2":                    "three\nfour\n",
		"tailLines=3":                    "two\nthree\nfour\n", // a partial line is one line
		"tailLines=0":                    "",
		"tailLines=10":                   "one\ntwo\nthree\nfour\n",
		"timestamps=true&tailLines=1":    "2026-12-06T10:00:03.000000004Z four\n",
		"sinceSeconds=2":                 "three\nfour\n",
		"sinceTime=2026-12-06T10:00:03Z": "four\n",
		"limitBytes=6":                   "one\ntw",
		"timestamps=1&sinceTime=2026-12-06T10:00:01Z&tailLines=3": "2026-12-06T10:00:01.000000002Z two\n" +
			"2026-12-06T10:00:02.000000003Z three\n2026-12-06T10:00:03.000000004Z four\n",
	} {
		if got := logsOf(t, query); got != want {
			t.Errorf("%q: got %q, want %q", query, got, want)
		}
	}
}

func TestLogOptionsRefuseBadInput(t *testing.T) {
	for _, q := range []string{"tailLines=-1", "tailLines=x", "sinceSeconds=0", "sinceTime=yesterday", "limitBytes=0"} {
		v, _ := url.ParseQuery(q)
		if _, err := parseLogOptions(v, time.Now()); err == nil {
			t.Errorf("%s: accepted", q)
		}
	}
}

func TestFollowReadsWhatIsAppendedAndStopsWithTheContainer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	os.WriteFile(path, []byte("2026-12-06T10:00:00Z stdout F first\n"), 0o644)
	running := make(chan bool, 1)
	running <- true
	isRunning := func() bool {
		select {
		case v := <-running:
			running <- v
			return v
		default:
			return true
		}
	}
	var b safeBuffer
	done := make(chan error, 1)
	go func() {
		done <- writeLogs(context.Background(), path, LogOptions{Follow: true, TailLines: -1}, &b, func() {}, isRunning)
	}()
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("2026-12-06T10:00:01Z stdout F second\n")
	f.Close()
	for deadline := time.Now().Add(5 * time.Second); b.String() != "first\nsecond\n"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("followed: %q", b.String())
		}
	}
	<-running
	running <- false
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
