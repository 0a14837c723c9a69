package hub

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tether-edge/tether/protocol"
)

// memSource is a Source backed by a map; objects are all for node "n1".
type memSource struct {
	mu   sync.Mutex
	objs map[string]protocol.Object // by uid; guarded by mu
	// unserved are the kinds Serves denies; guarded by mu.
	unserved map[protocol.Kind]bool
	hub      *Hub
}

func (m *memSource) Ready() bool { return true }

func (m *memSource) Serves(k protocol.Kind) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return !m.unserved[k]
}

func (m *memSource) Desired(node string, dst []protocol.Object) []protocol.Object {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range protocol.Kinds {
		for _, o := range m.objs {
			if o.Kind == k {
				o.Data = nil
				dst = append(dst, o)
			}
		}
	}
	return dst
}

func (m *memSource) Encode(_ string, o *protocol.Object) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.objs[o.UID]
	if !ok {
		return false, nil
	}
	o.ResourceVersion, o.Data = cur.ResourceVersion, []byte("data@"+cur.ResourceVersion)
	return true, nil
}

func (m *memSource) set(uid, rv string) {
	m.mu.Lock()
	m.objs[uid] = protocol.Object{Kind: protocol.KindPod, UID: uid, Namespace: "ns", Name: "pod-" + uid, ResourceVersion: rv}
	m.mu.Unlock()
	m.hub.NodeChanged("n1")
}

func (m *memSource) del(uid string) {
	m.mu.Lock()
	delete(m.objs, uid)
	m.mu.Unlock()
	m.hub.NodeChanged("n1")
}

// nopUpstream acknowledges pod and device status at once, and hands each
// device status to devices if it is not nil.
type nopUpstream struct {
	devices chan<- *protocol.DeviceStatus
}

func (u nopUpstream) DeviceStatus(_ string, _ protocol.StatusOrder, m *protocol.DeviceStatus, done func(error)) {
	if u.devices != nil {
		u.devices <- m
	}
	if m.Name == "not-mine" {
		done(fmt.Errorf("%w: device is attached to another node", protocol.ErrRejected))
		return
	}
	done(nil)
}

func (nopUpstream) NodeStatus(string, protocol.StatusOrder, *protocol.NodeStatus, func(error)) {}
func (nopUpstream) PodStatus(_ string, _ protocol.StatusOrder, _ *protocol.PodStatus, done func(error)) {
	done(nil)
}
func (nopUpstream) PodTerminated(string, *protocol.PodTerminated, func(error)) {}
func (nopUpstream) Event(string, *protocol.Event, func(error))                 {}
func (nopUpstream) Heartbeat(string)                                           {}

func startHub(t *testing.T, cfg Config) (*memSource, string) {
	t.Helper()
	return startHubWith(t, cfg, nopUpstream{})
}

func startHubWith(t *testing.T, cfg Config, up Upstream) (*memSource, string) {
	t.Helper()
	src := &memSource{objs: map[string]protocol.Object{}, unserved: map[protocol.Kind]bool{}}
	cfg.Addr = "unused:0"
	if cfg.TLS == nil {
		cfg.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	}
	if cfg.Auth == nil {
		cfg.Auth = newTestAuth(t)
	}
	h, err := New(cfg, src, up, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	src.hub = h
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = cfg.TLS.Clone()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return src, "wss" + strings.TrimPrefix(srv.URL, "https") + Path
}

// fakeEdge speaks the protocol by hand.
type fakeEdge struct {
	t       *testing.T
	ws      *websocket.Conn
	frames  chan *protocol.Frame
	welcome *protocol.Welcome
}

func connect(t *testing.T, url string, inv []protocol.ObjectRef) *fakeEdge {
	t.Helper()
	e, err := dialAs(t, url, issueCert(t, "n1", "id-n1"), "n1", inv)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// dialAs connects with the client certificate cert (none if nil), says
// Hello as node, and waits for the Welcome; a refusal is the error.
func dialAs(t *testing.T, url string, cert *tls.Certificate, node string, inv []protocol.ObjectRef) (*fakeEdge, error) {
	t.Helper()
	return dialVersion(t, url, cert, node, inv, protocol.Version)
}

// dialVersion is dialAs for an edge that speaks protocol versions 1 to
// version. Each of opts may change the Hello before it is sent.
func dialVersion(t *testing.T, url string, cert *tls.Certificate, node string, inv []protocol.ObjectRef, version uint32,
	opts ...func(*protocol.Hello)) (*fakeEdge, error) {
	t.Helper()
	tc := &tls.Config{InsecureSkipVerify: true}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return dialWith(t, url, tc, node, inv, version, opts...)
}

// dialWith is dialVersion with the client's TLS configuration.
func dialWith(t *testing.T, url string, tc *tls.Config, node string, inv []protocol.ObjectRef, version uint32,
	opts ...func(*protocol.Hello)) (*fakeEdge, error) {
	t.Helper()
	d := websocket.Dialer{TLSClientConfig: tc}
	ws, resp, err := d.Dial(url, nil)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			return nil, fmt.Errorf("%s: %s", resp.Status, b)
		}
		return nil, err
	}
	t.Cleanup(func() { ws.Close() })
	e := &fakeEdge{t: t, ws: ws, frames: make(chan *protocol.Frame, 100)}
	go func() {
		defer close(e.frames)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			f, err := protocol.Decode(b)
			if err != nil {
				t.Errorf("decode: %v", err)
				return
			}
			e.frames <- f
		}
	}()
	hello := &protocol.Hello{ProtocolVersion: version, MinVersion: 1, NodeName: node, Inventory: inv}
	if version > protocol.OldKindsVersion { // as the edge's agent does
		hello.Inventory, hello.NewInventory = protocol.SplitInventory(inv)
	}
	for _, o := range opts {
		o(hello)
	}
	e.send(&protocol.Frame{Hello: hello})
	f, ok := <-e.frames
	switch {
	case !ok:
		return nil, fmt.Errorf("connection closed before Welcome")
	case f.Error != nil:
		return nil, f.Error
	case f.Welcome == nil:
		return nil, fmt.Errorf("want Welcome, got %s", f.Type())
	}
	e.welcome = f.Welcome
	return e, nil
}

func (e *fakeEdge) send(f *protocol.Frame) {
	e.t.Helper()
	b, err := protocol.Encode(f)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
		e.t.Fatal(err)
	}
}

func (e *fakeEdge) recv() *protocol.Frame {
	e.t.Helper()
	select {
	case f, ok := <-e.frames:
		if !ok {
			e.t.Fatal("connection closed")
		}
		return f
	case <-time.After(5 * time.Second):
		e.t.Fatal("nothing received in 5s")
	}
	return nil
}

// quiet reports whether nothing arrives within d.
func (e *fakeEdge) quiet(d time.Duration) bool {
	select {
	case <-e.frames:
		return false
	case <-time.After(d):
		return true
	}
}

func (e *fakeEdge) ack(seqs ...uint64) { e.send(&protocol.Frame{Ack: &protocol.Ack{Seqs: seqs}}) }

func TestResumeSendsOnlyTheDifference(t *testing.T) {
	src, url := startHub(t, Config{})
	for uid, rv := range map[string]string{"same": "1", "changed": "5", "new": "1"} {
		src.objs[uid] = protocol.Object{Kind: protocol.KindPod, UID: uid, Namespace: "ns", Name: uid, ResourceVersion: rv}
	}
	e := connect(t, url, []protocol.ObjectRef{
		{Kind: protocol.KindPod, UID: "same", ResourceVersion: "1"},
		{Kind: protocol.KindPod, UID: "changed", ResourceVersion: "4"},
		{Kind: protocol.KindPod, UID: "gone", ResourceVersion: "2"},
	})
	got := map[string]string{}
	var seqs []uint64
	for len(got) < 3 {
		f := e.recv()
		switch {
		case f.Upsert != nil:
			got[f.Upsert.Object.UID] = "upsert@" + f.Upsert.Object.ResourceVersion
		case f.Delete != nil:
			got[f.Delete.UID] = "delete"
		default:
			t.Fatalf("unexpected %s", f.Type())
		}
		seqs = append(seqs, f.Seq)
	}
	want := map[string]string{"changed": "upsert@5", "new": "upsert@1", "gone": "delete"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	e.ack(seqs...)
	f := e.recv()
	if f.ResyncDone == nil || f.ResyncDone.Upserts != 2 || f.ResyncDone.Deletes != 1 || f.ResyncDone.Bytes == 0 {
		t.Fatalf("want ResyncDone 2 upserts 1 delete, got %+v", f)
	}
}

func TestNothingChangedSendsNothing(t *testing.T) {
	src, url := startHub(t, Config{})
	src.objs["a"] = protocol.Object{Kind: protocol.KindPod, UID: "a", Namespace: "ns", Name: "a", ResourceVersion: "3"}
	e := connect(t, url, []protocol.ObjectRef{{Kind: protocol.KindPod, UID: "a", ResourceVersion: "3"}})
	f := e.recv()
	if f.ResyncDone == nil || f.ResyncDone.Upserts != 0 || f.ResyncDone.Deletes != 0 {
		t.Fatalf("want an empty ResyncDone first, got %+v", f)
	}
	// The next frame is the next change: nothing went in between (the
	// delivery package's scripts check the engine's side of it).
	src.set("b", "1")
	if f := e.recv(); f.Upsert == nil || f.Upsert.Object.UID != "b" {
		t.Fatalf("want Upsert b, got %+v", f)
	}
}

// With the window full, changes to an object coalesce: once acks make room
// only the newest version is sent. (delivery's testdata/coalesce.txt has
// the cases; this is the session's wiring of them.)
func TestWindowCoalescesVersions(t *testing.T) {
	src, url := startHub(t, Config{Window: 1, SendQueue: 32})
	e := connect(t, url, nil)
	if f := e.recv(); f.ResyncDone == nil {
		t.Fatalf("want ResyncDone, got %s", f.Type())
	}
	src.set("blocker", "1")
	first := e.recv()
	if first.Upsert == nil || first.Upsert.Object.UID != "blocker" {
		t.Fatalf("got %+v", first)
	}
	// The window is full: these changes wait, and only the last counts.
	for _, rv := range []string{"1", "2", "3", "4"} {
		src.set("hot", rv)
	}
	e.ack(first.Seq)
	f := e.recv()
	if f.Upsert == nil || f.Upsert.Object.UID != "hot" || f.Upsert.Object.ResourceVersion != "4" {
		t.Fatalf("want hot@4 only, got %+v", f)
	}
	e.ack(f.Seq)
	// Deletion of an acknowledged object: the Delete is the next frame (no
	// older version of hot went before it).
	src.del("hot")
	if f := e.recv(); f.Delete == nil || f.Delete.UID != "hot" || f.Delete.Name != "pod-hot" {
		t.Fatalf("want Delete hot, got %+v", f)
	}
}

// The session arms the engine's timer: an unacknowledged object is sent
// again. (When, and what the acks do, delivery's testdata/resend.txt checks
// without a clock.)
func TestUnackedIsResent(t *testing.T) {
	src, url := startHub(t, Config{ResendAfter: 100 * time.Millisecond})
	e := connect(t, url, nil)
	e.recv() // ResyncDone
	src.set("p", "7")
	f1 := e.recv()
	f2 := e.recv() // not acknowledged: sent again, with a new seq
	if f2.Upsert == nil || f2.Upsert.Object.UID != "p" || f2.Seq == f1.Seq {
		t.Fatalf("want a resend of p, got %+v after %+v", f2, f1)
	}
}

func TestUpstreamIsAcknowledged(t *testing.T) {
	_, url := startHub(t, Config{})
	e := connect(t, url, nil)
	e.recv() // ResyncDone
	e.send(&protocol.Frame{Seq: 41, PodStatus: &protocol.PodStatus{UID: "u", Namespace: "ns", Name: "p", Status: []byte{1}}})
	f := e.recv()
	if f.Ack == nil || len(f.Ack.Seqs) != 1 || f.Ack.Seqs[0] != 41 {
		t.Fatalf("want Ack 41, got %+v", f)
	}
}

func TestConfigValidate(t *testing.T) {
	auth := newTestAuth(t)
	mtls := &tls.Config{ClientAuth: tls.RequestClientCert}
	for _, c := range []Config{
		{Auth: auth, TLS: mtls},
		{Addr: ":1", TLS: mtls},
		{Addr: ":1", Auth: auth},
		{Addr: ":1", Auth: auth, TLS: &tls.Config{}},
		{Addr: ":1", Auth: auth, TLS: mtls, HeartbeatInterval: time.Second, SessionTimeout: time.Second},
		{Addr: ":1", Auth: auth, TLS: mtls, Window: 100, SendQueue: 10},
		{Addr: ":1", Auth: auth, TLS: mtls, RevokeCheck: -time.Second},
	} {
		if err := c.validate(); err == nil {
			t.Errorf("%+v: validated", c)
		}
	}
}

func (nopUpstream) MirrorPod(string, *protocol.MirrorPod, func(error)) {}

// A DeviceStatus frame reaches Upstream and is acknowledged once its write
// is done; a rejected one comes back in Ack.Rejected.
func TestDeviceStatusIsAcknowledged(t *testing.T) {
	got := make(chan *protocol.DeviceStatus, 2)
	_, url := startHubWith(t, Config{}, nopUpstream{devices: got})
	e := connect(t, url, nil)
	e.recv() // ResyncDone
	desired := "25"
	sent := &protocol.DeviceStatus{UID: "u1", Namespace: "ns", Name: "thermo", State: "online", LastOnline: 1718000000000,
		Twins: []protocol.DeviceTwin{{Name: "humidity", Value: "40", Timestamp: 1718000000000},
			{Name: "temperature", Value: "24", Timestamp: 1718000000001, ObservedDesired: &desired}}}
	e.send(&protocol.Frame{Seq: 7, DeviceStatus: sent})
	select {
	case m := <-got:
		if m.UID != "u1" || m.Name != "thermo" || len(m.Twins) != 2 || m.Twins[1].ObservedDesired == nil ||
			*m.Twins[1].ObservedDesired != "25" || m.LastOnline != sent.LastOnline {
			t.Fatalf("upstream got %+v", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("DeviceStatus did not reach Upstream")
	}
	if f := e.recv(); f.Ack == nil || len(f.Ack.Seqs) != 1 || f.Ack.Seqs[0] != 7 {
		t.Fatalf("want Ack 7, got %+v", f)
	}

	e.send(&protocol.Frame{Seq: 8, DeviceStatus: &protocol.DeviceStatus{UID: "u2", Namespace: "ns", Name: "not-mine"}})
	<-got
	f := e.recv()
	if f.Ack == nil || len(f.Ack.Seqs) != 0 || len(f.Ack.Rejected) != 1 || f.Ack.Rejected[0].Seq != 8 ||
		!strings.Contains(f.Ack.Rejected[0].Reason, "another node") {
		t.Fatalf("want Ack rejecting 8, got %+v", f)
	}
}

// Objects of a kind the Source does not serve yet are neither deleted nor
// counted as gone; once served, those not desired are deleted.
func TestUnservedKindIsKept(t *testing.T) {
	src, url := startHub(t, Config{})
	src.unserved[protocol.KindDevice] = true
	src.unserved[protocol.KindDeviceModel] = true
	e := connect(t, url, []protocol.ObjectRef{
		{Kind: protocol.KindDevice, UID: "dev", ResourceVersion: "1"},
		{Kind: protocol.KindDeviceModel, UID: "model", ResourceVersion: "1"},
	})
	if f := e.recv(); f.ResyncDone == nil || f.ResyncDone.Deletes != 0 {
		t.Fatalf("want ResyncDone without deletes, got %+v", f)
	}
	src.mu.Lock()
	src.unserved = map[protocol.Kind]bool{}
	src.mu.Unlock()
	src.hub.NodeChanged("n1")
	first, second := e.recv(), e.recv()
	if first.Delete == nil || first.Delete.UID != "dev" || second.Delete == nil || second.Delete.UID != "model" {
		t.Fatalf("want Delete dev then Delete model, got %+v then %+v", first, second)
	}
}

// Deletes go users first: pods, devices, models, secrets, configmaps.
func TestDeleteOrder(t *testing.T) {
	_, url := startHub(t, Config{})
	var inv []protocol.ObjectRef
	for _, k := range protocol.Kinds {
		inv = append(inv, protocol.ObjectRef{Kind: k, UID: k.String(), ResourceVersion: "1"})
	}
	e := connect(t, url, inv)
	var got []string
	for range inv {
		f := e.recv()
		if f.Delete == nil {
			t.Fatalf("want a Delete, got %+v", f)
		}
		got = append(got, f.Delete.UID)
	}
	want := "Pod EndpointSlice Service Device DeviceModel Secret ConfigMap"
	if strings.Join(got, " ") != want {
		t.Fatalf("deletes in order %v, want %s", got, want)
	}
}

// orderUpstream records the orders of the node and pod statuses it is
// given, and acknowledges them.
type orderUpstream struct {
	nopUpstream
	orders chan protocol.StatusOrder
}

func (u orderUpstream) NodeStatus(_ string, o protocol.StatusOrder, _ *protocol.NodeStatus, done func(error)) {
	u.orders <- o
	done(nil)
}

func (u orderUpstream) PodStatus(_ string, o protocol.StatusOrder, _ *protocol.PodStatus, done func(error)) {
	u.orders <- o
	done(nil)
}

// The statuses of a session of version 8 or more are ordered by the
// Hello's store epoch and their Seq; an older session's are not, whatever
// its Hello says.
func TestStatusOrder(t *testing.T) {
	up := orderUpstream{orders: make(chan protocol.StatusOrder, 4)}
	_, url := startHubWith(t, Config{}, up)
	for _, c := range []struct {
		version uint32
		want    protocol.StatusOrder
	}{
		{protocol.StatusOrderSince, protocol.StatusOrder{Epoch: 77, Seq: 41}},
		{protocol.StatusOrderSince - 1, protocol.StatusOrder{}},
	} {
		e, err := dialVersion(t, url, issueCert(t, "n1", "id-n1"), "n1", nil, c.version,
			func(h *protocol.Hello) { h.StoreEpoch = 77 })
		if err != nil {
			t.Fatal(err)
		}
		e.recv() // ResyncDone
		e.send(&protocol.Frame{Seq: 41, PodStatus: &protocol.PodStatus{UID: "u", Namespace: "ns", Name: "p", Status: []byte{1}}})
		e.send(&protocol.Frame{Seq: 41, NodeStatus: &protocol.NodeStatus{Status: []byte{1}}})
		for range 2 {
			select {
			case o := <-up.orders:
				if o != c.want {
					t.Errorf("version %d: order %+v, want %+v", c.version, o, c.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("version %d: no status reached the upstream", c.version)
			}
		}
		e.ws.Close()
	}
}

// aliveUpstream counts Heartbeat calls.
type aliveUpstream struct {
	nopUpstream
	beats atomic.Int32
}

func (u *aliveUpstream) Heartbeat(node string) {
	if node == "n1" {
		u.beats.Add(1)
	}
}

// A connected node is reported alive at the start of its session and every
// AliveInterval, though it sends no heartbeat; once it is gone, no more.
// (The engine's timing is in delivery's testdata/alive.txt; this checks the
// session's timer and its end.)
func TestAliveWhileConnected(t *testing.T) {
	up := &aliveUpstream{}
	src, url := startHubWith(t, Config{AliveInterval: 20 * time.Millisecond, HeartbeatInterval: time.Hour}, up)
	e := connect(t, url, nil)
	e.recv() // ResyncDone
	deadline := time.Now().Add(10 * time.Second)
	for up.beats.Load() < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("%d alive reports in 10s, want 5", up.beats.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.ws.Close()
	// The session is over once the hub has unregistered it: its owner, and
	// the timer it armed, are gone.
	for src.hub.Stats().Sessions != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the session outlived its connection by 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	n := up.beats.Load()
	time.Sleep(100 * time.Millisecond) // five alive intervals
	if m := up.beats.Load(); m != n {
		t.Fatalf("%d alive reports after the session ended", m-n)
	}
}

func TestSendQueue(t *testing.T) {
	q := newSendQueue(3)
	for i := range 3 {
		if !q.push([]byte{byte(i)}) {
			t.Fatalf("push %d refused", i)
		}
	}
	if q.push([]byte{3}) {
		t.Fatal("push past the limit accepted")
	}
	select {
	case <-q.ready:
	default:
		t.Fatal("no ready token after a push")
	}
	got := q.take(nil)
	if len(got) != 3 || got[0][0] != 0 || got[2][0] != 2 {
		t.Fatalf("took %v, want 0 1 2", got)
	}
	if !q.push([]byte{4}) {
		t.Fatal("push after take refused")
	}
	if got = q.take(got); len(got) != 1 || got[0][0] != 4 {
		t.Fatalf("took %v, want 4", got)
	}
	if got = q.take(got); len(got) != 0 {
		t.Fatalf("took %v from an empty queue", got)
	}
}

// The hub's connections send no TCP keep-alive probes (Go turns them on by
// default): heartbeats tell a dead link.
func TestNoKeepAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ql := quietListener{ln}
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	c, err := ql.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var on int
	var serr error
	if err := rc.Control(func(fd uintptr) { on, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if on != 0 {
		t.Fatal("SO_KEEPALIVE is on")
	}
}

// An edge of protocol version 3 or older gets no Service or EndpointSlice
// (kinds of version 4); a newer one gets them.
func TestNewKindsGatedOnVersion(t *testing.T) {
	src, url := startHub(t, Config{})
	src.mu.Lock()
	src.objs["svc"] = protocol.Object{Kind: protocol.KindService, UID: "svc", Namespace: "ns", Name: "web", ResourceVersion: "1"}
	src.objs["es"] = protocol.Object{Kind: protocol.KindEndpointSlice, UID: "es", Namespace: "ns", Name: "web-1", ResourceVersion: "e1.x"}
	src.objs["pod"] = protocol.Object{Kind: protocol.KindPod, UID: "pod", Namespace: "ns", Name: "p", ResourceVersion: "1"}
	src.mu.Unlock()
	for _, c := range []struct {
		version uint32
		want    string
	}{{2, "Pod"}, {3, "Pod"}, {protocol.Version, "Service EndpointSlice Pod"}} {
		e, err := dialVersion(t, url, issueCert(t, "n1", "id-n1"), "n1", nil, c.version)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for {
			f := e.recv()
			if f.ResyncDone != nil {
				break
			}
			if f.Upsert == nil {
				t.Fatalf("version %d: want Upsert or ResyncDone, got %+v", c.version, f)
			}
			got = append(got, f.Upsert.Object.Kind.String())
			e.ack(f.Seq)
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("version %d: sent %v, want %s", c.version, got, c.want)
		}
		e.ws.Close()
	}
}

// A Service the edge lists in Hello.NewInventory and should no longer hold
// is deleted, as for any other kind.
func TestNewInventoryDiffed(t *testing.T) {
	_, url := startHub(t, Config{})
	e := connect(t, url, []protocol.ObjectRef{{Kind: protocol.KindService, UID: "gone", ResourceVersion: "1"},
		{Kind: protocol.KindEndpointSlice, UID: "gone-1", ResourceVersion: "e1.x"}})
	got := map[string]bool{}
	for range 2 {
		f := e.recv()
		if f.Delete == nil {
			t.Fatalf("want a Delete, got %+v", f)
		}
		got[f.Delete.Kind.String()+"/"+f.Delete.UID] = true
	}
	if !got["Service/gone"] || !got["EndpointSlice/gone-1"] {
		t.Fatalf("deletes %v", got)
	}
}

// The hub's delivery metrics: a message sent and not acknowledged is in the
// unacknowledged window, its ack is timed, and a change is timed to the
// message it queued.
func TestDeliveryMetrics(t *testing.T) {
	src, url := startHub(t, Config{})
	e := connect(t, url, nil)
	if f := e.recv(); f.ResyncDone == nil {
		t.Fatalf("want ResyncDone, got %s", f.Type())
	}
	src.set("a", "1")
	f := e.recv()
	if f.Upsert == nil {
		t.Fatalf("want Upsert a, got %s", f.Type())
	}
	waitStats(t, src.hub, "the upsert in the window", func(s StatsSnapshot) bool {
		return s.Unacknowledged == 1 && s.DispatchLatency.Count == 1 && s.AckLatency.Count == 0
	})
	e.ack(f.Seq)
	waitStats(t, src.hub, "the ack timed", func(s StatsSnapshot) bool {
		return s.Unacknowledged == 0 && s.AckLatency.Count == 1 && s.AckLatency.Buckets[300] == 1 && s.SendQueue == 0
	})
	// A duplicate ack is not timed again (the engine's scripts check the
	// cases: testdata/acks.txt).
	e.ack(f.Seq)
	src.set("b", "1")
	if f := e.recv(); f.Upsert == nil || f.Upsert.Object.UID != "b" {
		t.Fatalf("want Upsert b, got %+v", f)
	}
	waitStats(t, src.hub, "the second change timed", func(s StatsSnapshot) bool { return s.DispatchLatency.Count == 2 })
	if s := src.hub.Stats(); s.AckLatency.Count != 1 {
		t.Fatalf("after a duplicate ack: %d acks timed, want 1", s.AckLatency.Count)
	}
}

func waitStats(t *testing.T, h *Hub, what string, ok func(StatsSnapshot) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok(h.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: stats %+v", what, h.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// endUpstream records SessionEnded calls.
type endUpstream struct {
	nopUpstream
	ended chan string
}

func (u *endUpstream) SessionEnded(node string) { u.ended <- node }

// The Upstream is told when a node has no session here any more, so that it
// gives up the node's messages not written yet; not when a newer session
// of the node replaced the old one (the newer one's messages are pending).
func TestSessionEndedTold(t *testing.T) {
	up := &endUpstream{ended: make(chan string, 4)}
	src, url := startHubWith(t, Config{}, up)
	e1 := connect(t, url, nil)
	e1.recv() // ResyncDone
	e2 := connect(t, url, nil)
	e2.recv()
	waitFor(t, "the replaced session gone", func() bool { return src.hub.Stats().Sessions == 1 })
	e1.ws.Close()
	time.Sleep(50 * time.Millisecond)
	select {
	case n := <-up.ended:
		t.Fatalf("told %s's session ended while its newer session lives", n)
	default:
	}
	e2.ws.Close()
	select {
	case n := <-up.ended:
		if n != "n1" {
			t.Fatalf("told %q's session ended, want n1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not told within 10s that the session ended")
	}
	waitFor(t, "no session", func() bool { return src.hub.Stats().Sessions == 0 })
	if len(up.ended) != 0 {
		t.Fatalf("told %d more times", len(up.ended))
	}
}
