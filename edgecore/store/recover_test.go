package store

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tether-edge/tether/protocol"
	bolt "go.etcd.io/bbolt"
)

// A store file that is truncated, overwritten or zeroed in the middle (a
// torn write on a bad card) is moved aside and replaced by an empty store,
// instead of edgecore panicking on it at every start; a sound one is
// opened as it is.
func TestOpenOrRecover(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		name    string
		mangle  func([]byte) []byte
		corrupt bool
	}{
		{"sound", func(b []byte) []byte { return b }, false},
		{"truncated", func(b []byte) []byte { return b[:len(b)/3] }, true},
		{"garbage", func([]byte) []byte { return []byte("not a bbolt file, just some bytes") }, true},
		{"meta pages zeroed", func(b []byte) []byte {
			c := append([]byte(nil), b...)
			clear(c[:8192])
			return c
		}, true},
		{"data pages overwritten", func(b []byte) []byte {
			c := append([]byte(nil), b...)
			for i := 4 * 4096; i < len(c) && i < 12*4096; i++ {
				c[i] = 0xff
			}
			return c
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "edge.db")
			db, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *Tx) error {
				for i := range 300 {
					o := protocol.Object{Kind: protocol.KindConfigMap, UID: fmt.Sprintf("uid-%d", i), Namespace: "ns",
						Name: fmt.Sprintf("cm-%d", i), ResourceVersion: "1", Data: make([]byte, 400)}
					if err := tx.PutObject(&o); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			epoch := db.Epoch()
			db.Close()
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tc.mangle(b), 0o600); err != nil {
				t.Fatal(err)
			}
			db, recovered, err := OpenOrRecover(path, Options{}, quiet)
			if err != nil {
				t.Fatalf("OpenOrRecover: %v", err)
			}
			defer db.Close()
			if recovered != tc.corrupt {
				t.Fatalf("recovered %v, want %v", recovered, tc.corrupt)
			}
			// A new store starts its outbox Seqs again, in a later epoch.
			if tc.corrupt && db.Epoch() <= epoch || !tc.corrupt && db.Epoch() != epoch {
				t.Fatalf("epoch %d after %d (recovered %v): want a larger one for a new store, the same otherwise", db.Epoch(), epoch, recovered)
			}
			var inv []protocol.ObjectRef
			if err := db.View(func(tx *Tx) (err error) { inv, err = tx.Inventory(); return err }); err != nil {
				t.Fatal(err)
			}
			want := 300
			if tc.corrupt {
				want = 0
				aside, _ := filepath.Glob(path + ".corrupt-*")
				if len(aside) != 1 {
					t.Fatalf("the corrupt file was not kept aside: %v", aside)
				}
			}
			if len(inv) != want {
				t.Fatalf("%d objects after open, want %d", len(inv), want)
			}
			if err := db.Update(func(tx *Tx) error {
				return tx.PutObject(&protocol.Object{Kind: protocol.KindPod, UID: "p", Namespace: "ns", Name: "p",
					ResourceVersion: "1", Data: []byte{1}})
			}); err != nil {
				t.Fatalf("write after open: %v", err)
			}
		})
	}
}

// TestOpenOrRecoverTruncatedAnywhere: a store file cut at any length (a
// copy or a card that lost its tail) is recovered. Before the check read
// the file with panics on faults, a page of the mapping past the end of
// the file was a SIGBUS that killed the process (found by the crash tier,
// e2e TestCrashEdgecore: a file of 131072 bytes cut to 50151).
func TestOpenOrRecoverTruncatedAnywhere(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.db")
	db, err := Open(orig)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 600 { // one commit each: pages spread over the file
		err := db.Update(func(tx *Tx) error {
			return tx.PutObject(&protocol.Object{Kind: protocol.KindConfigMap, UID: fmt.Sprintf("uid-%d", i), Namespace: "ns",
				Name: fmt.Sprintf("cm-%d", i), ResourceVersion: "1", Data: make([]byte, 200+i%700)})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	b, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	// bbolt's high-water mark: the pages it handed out. The file is longer
	// (bbolt grows it in steps).
	ro, err := bolt.Open(orig, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	ro.View(func(tx *bolt.Tx) error { mark = int(tx.Size()); return nil })
	ro.Close()
	if mark >= len(b) {
		t.Fatalf("high-water mark %d, file %d bytes: no cut past the mark to try", mark, len(b))
	}
	checked := 0
	// Below the two meta pages (bbolt: "file size too small"; the crash
	// tier cut one to 2,448 bytes), then every 13 KiB or so, and around
	// the high-water mark.
	cuts := []int{1, 100, 2448, 4096, 4097, 2*4096 - 1, mark - 4096, mark - 1, mark, mark + 1, mark + 4096}
	for cut := 2*4096 + 1; cut < len(b); cut += 4096*3 + 777 {
		cuts = append(cuts, cut)
	}
	for _, cut := range cuts {
		path := filepath.Join(dir, fmt.Sprintf("cut-%d", cut), "edge.db")
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		db, recovered, err := OpenOrRecover(path, Options{}, quiet)
		if err != nil {
			t.Fatalf("cut at %d of %d: %v", cut, len(b), err)
		}
		// Only a cut at or past the high-water mark may be opened as it is;
		// a store opened as sound holds everything and takes writes (a cut
		// below the mark once passed the page walk and then panicked bbolt
		// in the first write: "page expected to be 18, but self identifies
		// as 0").
		if recovered != (cut < mark) {
			t.Errorf("cut at %d of %d (high-water mark %d): recovered=%v", cut, len(b), mark, recovered)
		}
		if !recovered {
			var n int
			if err := db.View(func(tx *Tx) error {
				inv, err := tx.Inventory()
				n = len(inv)
				return err
			}); err != nil || n != 600 {
				t.Errorf("cut at %d of %d: opened as sound with %d objects (%v)", cut, len(b), n, err)
			}
			for i := range 50 {
				err := db.Update(func(tx *Tx) error {
					if _, err := tx.DeleteObject(protocol.KindConfigMap, fmt.Sprintf("uid-%d", i*7)); err != nil {
						return err
					}
					return tx.PutObject(&protocol.Object{Kind: protocol.KindConfigMap, UID: fmt.Sprintf("new-%d", i), Namespace: "ns",
						Name: fmt.Sprintf("new-%d", i), ResourceVersion: "1", Data: make([]byte, 5000)})
				})
				if err != nil {
					t.Fatalf("cut at %d: write %d: %v", cut, i, err)
				}
			}
		}
		db.Close()
		checked++
	}
	t.Logf("%d cuts of a %d-byte store recovered", checked, len(b))
}

// Two corrupt stores moved aside in the same second keep both files.
func TestAsideNameUnique(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.db")
	now := time.Unix(1796544154, 0)
	var names []string
	for range 3 {
		name := asideName(path, now)
		if err := os.WriteFile(name, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Base(name))
	}
	want := []string{"edge.db.corrupt-1796544154", "edge.db.corrupt-1796544154-1", "edge.db.corrupt-1796544154-2"}
	if !slices.Equal(names, want) {
		t.Errorf("names %v, want %v", names, want)
	}
}
