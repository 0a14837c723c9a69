package edgecore

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tether-edge/tether/edgecore/runtime/fake"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// smallDisk mounts an 8 MiB tmpfs for the test, unmounted at cleanup; it
// skips the test unless it runs as root.
func smallDisk(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes path until the file system has no space left.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	// Small writes too, until not one byte fits.
	for _, err := f.Write(buf[:512]); err == nil; _, err = f.Write(buf[:512]) {
	}
	for _, err := f.Write(buf[:1]); err == nil; _, err = f.Write(buf[:1]) {
	}
}

// TestFullDisk (audit M6): on a full disk edgecore starts, with its
// metaserver and device twin, runs the pods its store holds, and keeps
// running; what it cannot write is counted, and goes through once space is
// freed.
func TestFullDisk(t *testing.T) {
	dir := smallDisk(t)
	storeWebPod(t, filepath.Join(dir, "edge.db"))
	filler := filepath.Join(dir, "filler")
	fill(t, filler)

	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	rt := fake.New("10.0.0.1")
	ec, err := New(Config{NodeName: "edge-1", Cloud: unreachableCloud(), DataDir: dir, StaticPodPath: NoStaticPods,
		RuntimeImpl: rt, PodResyncInterval: metav1.Duration{Duration: 200 * time.Millisecond},
		MetaServer: MetaServerConfig{Addr: "127.0.0.1:0"},
		Devices:    DevicesConfig{MQTT: MQTTConfig{Addr: "127.0.0.1:0"}},
		Logger:     log})
	if err != nil {
		t.Fatalf("New on a full disk: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ec.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		ec.Close()
	})

	// The pod runs.
	poll(t, "the pod runs", func() bool {
		uids, _ := rt.Pods(ctx)
		return slices.Contains(uids, types.UID("uid-web"))
	})
	// Its status cannot be queued: the failed writes are counted, and
	// edgecore keeps running.
	poll(t, "failed writes counted", func() bool { return ec.DB.FailedWrites() > 0 })
	select {
	case err := <-done:
		t.Fatalf("Run ended on a full disk: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	// bbolt may still fit a small commit in its free pages: how much gets
	// in before the disk frees up is not the point, that nothing stops is.
	t.Logf("%d pod statuses queued on a full disk, %d writes failed", len(podStatuses(t, ec.DB)), ec.DB.FailedWrites())

	// Space comes back: the status is queued.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	poll(t, "the pod status queued once space came back", func() bool { return len(podStatuses(t, ec.DB)) >= 1 })
}

// storeWebPod writes the store at path holding one pod, shop/web (UID
// uid-web) bound to edge-1, as the agent would have committed it.
func storeWebPod(t *testing.T, path string) {
	t.Helper()
	db, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "uid-web", ResourceVersion: "7"},
		Spec: corev1.PodSpec{NodeName: "edge-1", Containers: []corev1.Container{{Name: "c", Image: "nginx"}}}}
	data, err := protocol.EncodePod(p)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *store.Tx) error {
		return tx.PutObject(&protocol.Object{Kind: protocol.KindPod, UID: "uid-web", Namespace: "shop", Name: "web",
			ResourceVersion: "7", Data: data})
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
}

// podStatuses returns the PodStatus frames in the outbox.
func podStatuses(t *testing.T, db *store.DB) []*protocol.PodStatus {
	t.Helper()
	var out []*protocol.PodStatus
	err := db.View(func(tx *store.Tx) error {
		return tx.Outbox(0, func(it store.OutboxItem) bool {
			if f, err := protocol.Decode(it.Frame); err == nil && f.PodStatus != nil {
				out = append(out, f.PodStatus)
			}
			return true
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 30*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("%s: not within 30s", what)
	}
}
