package store

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A store keeps its epoch across opens; a new store at the same path (the
// old one moved aside as corrupt, or lost) gets a larger one, from the
// epoch file, even when the clock went back.
func TestEpoch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	e1 := db.Epoch()
	if e1 == 0 {
		t.Fatal("epoch 0")
	}
	db.Close()
	if db, err = Open(path); err != nil {
		t.Fatal(err)
	}
	if db.Epoch() != e1 {
		t.Fatalf("reopened: epoch %d, want %d", db.Epoch(), e1)
	}
	db.Close()

	// The store is lost; the epoch file says a later epoch than the clock
	// will (a node whose clock went back).
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	future := uint64(time.Now().Add(time.Hour).UnixNano())
	if err := os.WriteFile(epochFile(path), []byte(strconv.FormatUint(future, 10)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(path); err != nil {
		t.Fatal(err)
	}
	if db.Epoch() != future+1 {
		t.Fatalf("new store: epoch %d, want %d (one above the file's)", db.Epoch(), future+1)
	}
	db.Close()
	b, err := os.ReadFile(epochFile(path))
	if err != nil || strings.TrimSpace(string(b)) != strconv.FormatUint(future+1, 10) {
		t.Fatalf("epoch file %q, %v: want the new epoch", b, err)
	}
}

func TestNewEpoch(t *testing.T) {
	now := time.Unix(1_800_000_000, 5)
	for _, c := range []struct {
		name, file string
		want       uint64 // 0: an error
	}{
		{"no file", "", uint64(now.UnixNano())},
		{"older epoch", "1000\n", uint64(now.UnixNano())},
		{"newer epoch", strconv.FormatUint(uint64(now.UnixNano())+10, 10), uint64(now.UnixNano()) + 11},
		{"equal epoch", strconv.FormatUint(uint64(now.UnixNano()), 10), uint64(now.UnixNano()) + 1},
		{"malformed", "yesterday", 0},
		{"no successor", "18446744073709551615", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "edge.db.epoch")
			if c.file != "" {
				if err := os.WriteFile(file, []byte(c.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := newEpoch(file, now)
			if c.want == 0 {
				if err == nil {
					t.Fatalf("epoch %d, want an error", got)
				}
				if b, _ := os.ReadFile(file); string(b) != c.file {
					t.Fatalf("the epoch file became %q", b)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("epoch %d, %v; want %d", got, err, c.want)
			}
		})
	}
}
