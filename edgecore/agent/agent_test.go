package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/edgecore/link"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// fakeHub is a websocket server that speaks just enough of the hub's side:
// it answers Hello with Welcome, sends the frames of script, and hands every
// frame the edge sends to frames.
type fakeHub struct {
	srv    *httptest.Server
	script []*protocol.Frame
	frames chan *protocol.Frame
	// version is the protocol version the hub welcomes with (default
	// protocol.Version).
	version uint32
	// answer, if set, answers a frame the edge sends (nil: nothing).
	answer func(*protocol.Frame) *protocol.Frame
}

func newFakeHub(t *testing.T, script ...*protocol.Frame) *fakeHub {
	h := &fakeHub{script: script, frames: make(chan *protocol.Frame, 64)}
	h.srv = httptest.NewTLSServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *fakeHub) serve(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	write := func(f *protocol.Frame) error {
		b, err := protocol.Encode(f)
		if err != nil {
			return err
		}
		return conn.WriteMessage(websocket.BinaryMessage, b)
	}
	if _, _, err := conn.ReadMessage(); err != nil { // Hello
		return
	}
	v := h.version
	if v == 0 {
		v = protocol.Version
	}
	if write(&protocol.Frame{Welcome: &protocol.Welcome{ProtocolVersion: v,
		HeartbeatInterval: protocol.DurationOf(time.Second), SessionTimeout: protocol.DurationOf(5 * time.Second),
		MaxFrameSize: protocol.MaxFrameSize}}) != nil {
		return
	}
	for _, f := range h.script {
		if write(f) != nil {
			return
		}
	}
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			return
		}
		f, err := protocol.Decode(b)
		if err != nil {
			continue
		}
		if h.answer != nil {
			if a := h.answer(f); a != nil && write(a) != nil {
				return
			}
		}
		select {
		case h.frames <- f:
		default:
		}
	}
}

func (h *fakeHub) dialer(t *testing.T, netDial func(ctx context.Context, network, addr string) (net.Conn, error)) *link.Dialer {
	pool := x509.NewCertPool()
	pool.AddCert(h.srv.Certificate())
	tlsCfg := h.srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	tlsCfg.RootCAs = pool
	return &link.Dialer{URL: "wss" + h.srv.URL[len("https"):] + "/v1/connect",
		TLS: tlsCfg, Timeout: 5 * time.Second, NetDial: netDial}
}

type noObserver struct{}

func (noObserver) ObjectsChanged(map[protocol.Kind]bool, []protocol.ObjectRef) {}
func (noObserver) Connected()                                                  {}

type refusingDialer struct{}

func (refusingDialer) Dial(context.Context, *protocol.Hello) (*link.Conn, error) {
	return nil, errors.New("the dialer given to New must not be used")
}

func podObject(t *testing.T, uid, rv string) protocol.Object {
	t.Helper()
	b, err := protocol.EncodePod(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p-" + uid,
		UID: types.UID(uid), ResourceVersion: rv}})
	if err != nil {
		t.Fatal(err)
	}
	return protocol.Object{Kind: protocol.KindPod, UID: uid, Namespace: "ns", Name: "p-" + uid, ResourceVersion: rv, Data: b}
}

// The commit hook (Config.CommitHook) hears what was committed, with the
// objects already in the store, before the hub gets the Ack.
func TestCommitHook(t *testing.T) {
	old := podObject(t, "old", "1")
	hub := newFakeHub(t,
		&protocol.Frame{Seq: 1, Upsert: &protocol.Upsert{Object: podObject(t, "u1", "7")}},
		&protocol.Frame{Seq: 2, Delete: &protocol.Delete{Kind: protocol.KindPod, UID: "old", Namespace: "ns", Name: "p-old"}},
	)
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *store.Tx) error { return tx.PutObject(&old) }); err != nil {
		t.Fatal(err)
	}
	type seen struct {
		c       Commit
		inStore bool
		goneOld bool
	}
	commits := make(chan seen, 8)
	hook := func(c Commit) {
		var s seen
		s.c = c
		db.View(func(tx *store.Tx) error {
			o, _ := tx.Object(protocol.KindPod, "u1")
			s.inStore = o != nil && o.ResourceVersion == "7"
			o, _ = tx.Object(protocol.KindPod, "old")
			s.goneOld = o == nil
			return nil
		})
		commits <- s
	}
	a, err := New(Config{NodeName: "n1", CommitHook: hook}, db, hub.dialer(t, nil),
		func() (*corev1.NodeStatus, error) { return &corev1.NodeStatus{}, nil },
		noObserver{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()

	var got Commit
	acked := map[uint64]bool{}
	deadline := time.After(20 * time.Second)
	for !acked[1] || !acked[2] {
		select {
		case f := <-hub.frames:
			if f.Ack == nil {
				continue
			}
			// Whatever is acknowledged was heard by the hook first.
			for more := true; more; {
				select {
				case s := <-commits:
					if !s.inStore && len(s.c.Upserted) > 0 || !s.goneOld && len(s.c.Deleted) > 0 {
						t.Errorf("hook called before the commit: %+v", s)
					}
					got.Upserted = append(got.Upserted, s.c.Upserted...)
					got.Deleted = append(got.Deleted, s.c.Deleted...)
				default:
					more = false
				}
			}
			for _, seq := range f.Ack.Seqs {
				acked[seq] = true
			}
		case <-deadline:
			t.Fatalf("no Ack of both objects; acked %v", acked)
		}
	}
	want := Commit{Upserted: []protocol.ObjectRef{{Kind: protocol.KindPod, UID: "u1", ResourceVersion: "7"}},
		Deleted: []protocol.ObjectRef{{Kind: protocol.KindPod, UID: "old"}}}
	if len(got.Upserted) != 1 || got.Upserted[0] != want.Upserted[0] || len(got.Deleted) != 1 || got.Deleted[0] != want.Deleted[0] {
		t.Errorf("hook heard %+v, want %+v", got, want)
	}
}

// TestNodeStatusOnlyWhenChanged checks that a periodic check queues the node
// status only when something other than the conditions' timestamps changed,
// or when NodeStatusInterval passed, and that a forced one always goes.
func TestNodeStatusOnlyWhenChanged(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ip := "10.0.0.1"
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	build := func() (*corev1.NodeStatus, error) {
		clock = clock.Add(time.Minute) // every build has new timestamps
		now := metav1.NewTime(clock)
		return &corev1.NodeStatus{
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: now, LastTransitionTime: now}},
		}, nil
	}
	a, err := New(Config{NodeName: "n1", NodeStatusInterval: time.Hour}, db, refusingDialer{}, build,
		noObserver{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	lastSeq := func() uint64 {
		var seq uint64
		if err := db.View(func(tx *store.Tx) error {
			return tx.Outbox(0, func(it store.OutboxItem) bool { seq = it.Seq; return true })
		}); err != nil {
			t.Fatal(err)
		}
		return seq
	}
	step := func(name string, force, wantQueued bool) {
		t.Helper()
		before := lastSeq()
		if err := a.queueNodeStatus(force); err != nil {
			t.Fatal(err)
		}
		if queued := lastSeq() != before; queued != wantQueued {
			t.Fatalf("%s: queued %v, want %v", name, queued, wantQueued)
		}
	}
	step("first", true, true)
	step("unchanged", false, false)
	step("forced", true, true)
	ip = "10.0.0.2"
	step("address changed", false, true)
	step("unchanged again", false, false)
	a.sentStatusAt = time.Now().Add(-time.Hour)
	step("interval passed", false, true)
}

// alwaysDue are Credentials always due for renewal.
type alwaysDue struct{ issued atomic.Int32 }

func (c *alwaysDue) RenewalRequest(now time.Time) ([]byte, time.Time, error) {
	return []byte("csr"), now.Add(50 * time.Millisecond), nil
}

func (c *alwaysDue) Issued([]byte) error { c.issued.Add(1); return nil }

// startAgent runs an agent against hub until the test ends.
func startAgent(t *testing.T, hub *fakeHub, cfg Config, prepare ...func(*store.Tx) error) *Agent {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, p := range prepare {
		if err := db.Update(p); err != nil {
			t.Fatal(err)
		}
	}
	cfg.NodeName = "n1"
	a, err := New(cfg, db, hub.dialer(t, nil), func() (*corev1.NodeStatus, error) { return &corev1.NodeStatus{}, nil },
		noObserver{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return a
}

// A certificate request goes only to a hub of protocol version 2 or more;
// the certificate it answers is installed.
func TestCertRequestGatedOnVersion(t *testing.T) {
	for _, v := range []uint32{1, 2} {
		hub := newFakeHub(t, &protocol.Frame{CertIssued: &protocol.CertIssued{Certificate: []byte("cert")}})
		hub.version = v
		creds := &alwaysDue{}
		startAgent(t, hub, Config{Credentials: creds})
		// Version 2: until a request came and the certificate was
		// installed. Version 1: until the edge's first heartbeat, a
		// HeartbeatInterval (1s) into the session; a request, due at once,
		// would come before it.
		requests := 0
		deadline := time.After(20 * time.Second)
		for done := false; !done; {
			select {
			case f := <-hub.frames:
				if f.CertRequest != nil {
					requests++
				}
				done = v == 1 && f.Heartbeat != nil || v == 2 && requests > 0 && creds.issued.Load() == 1
			case <-deadline:
				t.Fatalf("version %d hub: %d requests, %d certificates installed", v, requests, creds.issued.Load())
			}
		}
		if v == 1 && requests != 0 {
			t.Errorf("version 1 hub got %d certificate requests", requests)
		}
	}
}

// A Service or an EndpointSlice is stored only if it decodes as one.
func TestCheckServiceKinds(t *testing.T) {
	svc, _ := protocol.EncodeService(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}})
	es, _ := protocol.EncodeEndpointSlice(&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1"}})
	for _, c := range []struct {
		kind protocol.Kind
		data []byte
		ok   bool
	}{
		{protocol.KindService, svc, true},
		{protocol.KindEndpointSlice, es, true},
		{protocol.KindService, []byte{0xff, 0x01}, false},
		{protocol.KindEndpointSlice, []byte("{\"kind\":\"EndpointSlice\"}"), false},
	} {
		err := checkObject(&protocol.Object{Kind: c.kind, UID: "u", Name: "n", Data: c.data})
		if (err == nil) != c.ok {
			t.Errorf("%s %q: %v, want ok=%v", c.kind, c.data, err, c.ok)
		}
	}
}

// unreachable is a hub that cannot be reached.
type unreachable struct{}

func (unreachable) Dial(context.Context, *protocol.Hello) (*link.Conn, error) {
	return nil, errors.New("connect: network is unreachable")
}

// TestNodeStatusChangedOffline: with the hub away, a change the monitor
// reports is queued in the outbox at once, not at the next dial.
func TestNodeStatusChangedOffline(t *testing.T) {
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var mu sync.Mutex
	ready := corev1.ConditionTrue
	build := func() (*corev1.NodeStatus, error) {
		mu.Lock()
		defer mu.Unlock()
		return &corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}}, nil
	}
	a, err := New(Config{NodeName: "n1", Backoff: link.Backoff{Initial: time.Hour, Max: time.Hour}}, db, unreachable{}, build,
		noObserver{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Start: %v", err)
		}
	}()
	queuedReady := func() corev1.ConditionStatus {
		var st corev1.ConditionStatus
		err := db.View(func(tx *store.Tx) error {
			return tx.Outbox(0, func(it store.OutboxItem) bool {
				if it.Key != store.OutboxNodeStatus {
					return true
				}
				f, err := protocol.Decode(it.Frame)
				if err != nil {
					t.Error(err)
					return false
				}
				ns, err := protocol.DecodeNodeStatus(f.NodeStatus.Status)
				if err != nil {
					t.Error(err)
					return false
				}
				st = ns.Conditions[0].Status
				return true
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	waitFor := func(want corev1.ConditionStatus) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for queuedReady() != want {
			if time.Now().After(deadline) {
				t.Fatalf("outbox: Ready %q, want %q", queuedReady(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(corev1.ConditionTrue) // queued before the first dial
	mu.Lock()
	ready = corev1.ConditionFalse
	mu.Unlock()
	a.NodeStatusChanged()
	waitFor(corev1.ConditionFalse) // while waiting an hour to dial again
}

// A hub's 503 Retry-After is honoured (over its last second); any other
// failure waits by the back-off, whose cap the hub's bound raises.
func TestDialRetry(t *testing.T) {
	bo := link.Backoff{Initial: time.Second, Max: 2 * time.Second}
	for range 50 {
		if d := dialRetry(&bo, &link.RetryAfterError{After: 7 * time.Second}); d < 6*time.Second || d >= 7*time.Second {
			t.Fatalf("Retry-After 7s: waited %s", d)
		}
		if d := dialRetry(&bo, errors.New("connection refused")); d > 2*time.Second {
			t.Fatalf("refused: waited %s past the 2s cap", d)
		}
	}
	bo.SetHubMax(10 * time.Second)
	longest := time.Duration(0)
	for range 200 {
		longest = max(longest, dialRetry(&bo, &link.RetryAfterError{}))
	}
	if longest <= 2*time.Second || longest > 10*time.Second {
		t.Errorf("with the hub's 10s bound the longest of 200 waits is %s", longest)
	}
}
