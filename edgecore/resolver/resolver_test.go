package resolver

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

func openStore(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func put(t *testing.T, db *store.DB, objs ...any) {
	t.Helper()
	err := db.Update(func(tx *store.Tx) error {
		for _, o := range objs {
			var (
				po   protocol.Object
				data []byte
				err  error
				m    metav1.Object
			)
			switch o := o.(type) {
			case *corev1.Service:
				po.Kind, m = protocol.KindService, o
				data, err = protocol.EncodeService(o)
			case *discoveryv1.EndpointSlice:
				po.Kind, m = protocol.KindEndpointSlice, o
				data, err = protocol.EncodeEndpointSlice(o)
			}
			if err != nil {
				return err
			}
			po.UID, po.Namespace, po.Name, po.ResourceVersion, po.Data = string(m.GetUID()), m.GetNamespace(), m.GetName(), "1", data
			if err := tx.PutObject(&po); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testService(ns, name, clusterIP string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("svc-" + ns + "-" + name)},
		Spec: corev1.ServiceSpec{ClusterIP: clusterIP, Ports: ports}}
}

func endpoints(ns, name, svc string, ready bool, addrs ...string) *discoveryv1.EndpointSlice {
	pn, pp, proto := "db", int32(5432), corev1.ProtocolTCP
	e := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("es-" + ns + "-" + name),
		Labels: map[string]string{discoveryv1.LabelServiceName: svc}}, AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: &pn, Port: &pp, Protocol: &proto}}}
	for _, a := range addrs {
		r := ready
		e.Endpoints = append(e.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: &r}})
	}
	return e
}

// upstream is a resolver on loopback that answers every A question with
// 192.0.2.1 and counts the queries.
func upstream(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	n := new(atomic.Int64)
	go func() {
		buf := make([]byte, 1500)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var m dnsmessage.Message
			if m.Unpack(buf[:k]) != nil {
				continue
			}
			n.Add(1)
			m.Response, m.RecursionAvailable = true, true
			m.Answers = []dnsmessage.Resource{{Header: dnsmessage.ResourceHeader{Name: m.Questions[0].Name, Type: dnsmessage.TypeA,
				Class: dnsmessage.ClassINET, TTL: 60}, Body: &dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}}}}
			b, _ := m.Pack()
			pc.WriteTo(b, from)
		}
	}()
	return pc.LocalAddr().String(), n
}

func start(t *testing.T, db *store.DB, cfg Config) *Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s, err := New(cfg, db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Start(t.Context()) }()
	select {
	case <-s.Ready():
	case err := <-errc:
		t.Fatal(err)
	}
	return s
}

// client is a UDP socket to the resolver, from laddr ("" for any).
type client struct {
	t *testing.T
	c *net.UDPConn
}

func dial(t *testing.T, s *Server, laddr string) *client {
	t.Helper()
	var la *net.UDPAddr
	if laddr != "" {
		la = net.UDPAddrFromAddrPort(netip.MustParseAddrPort(laddr))
	}
	c, err := net.DialUDP("udp", la, s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t, c}
}

var nextID uint16

func query(name string, typ dnsmessage.Type) []byte {
	nextID++
	m := dnsmessage.Message{Header: dnsmessage.Header{ID: nextID, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}}}
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

func (c *client) send(b []byte) {
	c.t.Helper()
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// recv reads one reply (10s at most: a missing reply fails the test).
func (c *client) recv() (*dnsmessage.Message, int) {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.c.Read(buf)
	if err != nil {
		c.t.Fatalf("no reply: %v", err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf[:n]); err != nil {
		c.t.Fatalf("reply does not parse: %v", err)
	}
	return &m, n
}

func (c *client) ask(name string, typ dnsmessage.Type) *dnsmessage.Message {
	c.t.Helper()
	c.send(query(name, typ))
	m, _ := c.recv()
	if m.ID != nextID {
		c.t.Fatalf("reply ID %d, want %d", m.ID, nextID)
	}
	return m
}

// answers renders the answers as "TYPE value" strings.
func answers(m *dnsmessage.Message) string {
	s := m.RCode.String()
	for _, a := range m.Answers {
		switch b := a.Body.(type) {
		case *dnsmessage.AResource:
			s += " A " + netip.AddrFrom4(b.A).String()
		case *dnsmessage.AAAAResource:
			s += " AAAA " + netip.AddrFrom16(b.AAAA).String()
		case *dnsmessage.SRVResource:
			s += fmt.Sprintf(" SRV %d %s", b.Port, b.Target)
		case *dnsmessage.CNAMEResource:
			s += " CNAME " + b.CNAME.String()
		}
	}
	return s
}

func TestAnswers(t *testing.T) {
	db := openStore(t)
	ext := testService("shop", "ext", "")
	ext.Spec.Type, ext.Spec.ExternalName = corev1.ServiceTypeExternalName, "db.example.org"
	put(t, db,
		testService("shop", "web", "10.96.0.10", corev1.ServicePort{Name: "http", Port: 80}), // protocol: TCP by default
		testService("shop", "db", corev1.ClusterIPNone), ext,
		endpoints("shop", "db-a", "db", true, "10.244.0.5", "10.244.0.7"),
		endpoints("shop", "db-b", "db", false, "10.244.0.6"),
		endpoints("shop", "web-a", "web", true, "10.244.0.9"))
	up, upCount := upstream(t)
	s := start(t, db, Config{Upstreams: []string{up}})
	c := dial(t, s, "")

	for _, q := range []struct {
		name string
		typ  dnsmessage.Type
		want string
	}{
		{"web.shop.svc.cluster.local.", dnsmessage.TypeA, "RCodeSuccess A 10.96.0.10"},
		{"WEB.Shop.svc.Cluster.Local.", dnsmessage.TypeA, "RCodeSuccess A 10.96.0.10"},
		{"web.shop.svc.cluster.local.", dnsmessage.TypeAAAA, "RCodeSuccess"},
		{"db.shop.svc.cluster.local.", dnsmessage.TypeA, "RCodeSuccess A 10.244.0.5 A 10.244.0.7"}, // not the unready one
		{"_http._tcp.web.shop.svc.cluster.local.", dnsmessage.TypeSRV, "RCodeSuccess SRV 80 web.shop.svc.cluster.local."},
		{"_db._tcp.db.shop.svc.cluster.local.", dnsmessage.TypeSRV, "RCodeSuccess SRV 5432 db.shop.svc.cluster.local."},
		{"_nope._tcp.web.shop.svc.cluster.local.", dnsmessage.TypeSRV, "RCodeNameError"},
		{"ext.shop.svc.cluster.local.", dnsmessage.TypeA, "RCodeSuccess CNAME db.example.org."},
		{"nope.shop.svc.cluster.local.", dnsmessage.TypeA, "RCodeNameError"},
		{"web.other.svc.cluster.local.", dnsmessage.TypeA, "RCodeNameError"},
		{"web.shop.svc.cluster.local.shop.svc.cluster.local.", dnsmessage.TypeA, "RCodeNameError"}, // a search path expansion
		{"10-244-0-5.shop.pod.cluster.local.", dnsmessage.TypeA, "RCodeNameError"},
		{"shop.svc.cluster.local.", dnsmessage.TypeA, "RCodeSuccess"},
		{"example.org.", dnsmessage.TypeA, "RCodeSuccess A 192.0.2.1"}, // forwarded
	} {
		m := c.ask(q.name, q.typ)
		if got := answers(m); got != q.want {
			t.Errorf("%s %s: %s, want %s", q.name, q.typ, got, q.want)
		}
		if !m.Response || m.Questions[0].Name.String() != q.name {
			t.Errorf("%s: reply header %+v questions %v", q.name, m.Header, m.Questions)
		}
	}
	if upCount.Load() != 1 {
		t.Errorf("upstream asked %d times, want 1 (cluster names never go upstream)", upCount.Load())
	}

	// The store changes: the table follows.
	put(t, db, testService("shop", "price", "10.96.0.20"))
	s.ObjectsChanged(map[protocol.Kind]bool{protocol.KindService: true}, nil)
	deadline := time.Now().Add(10 * time.Second)
	for answers(c.ask("price.shop.svc.cluster.local.", dnsmessage.TypeA)) != "RCodeSuccess A 10.96.0.20" {
		if time.Now().After(deadline) {
			t.Fatal("a Service put in the store does not resolve")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st := s.Stats(); st.Forwarded != 1 || st.Malformed != 0 {
		t.Errorf("stats %+v", st)
	}
}

// A headless Service with more endpoints than fit in 512 bytes is cut and
// marked truncated; with EDNS the client gets more.
func TestTruncated(t *testing.T) {
	db := openStore(t)
	var addrs []string
	for i := range 200 {
		addrs = append(addrs, fmt.Sprintf("10.244.%d.%d", i/250, i%250+1))
	}
	put(t, db, testService("shop", "many", corev1.ClusterIPNone), endpoints("shop", "many-a", "many", true, addrs...))
	s := start(t, db, Config{Upstreams: []string{"127.0.0.1:9"}})
	c := dial(t, s, "")
	c.send(query("many.shop.svc.cluster.local.", dnsmessage.TypeA))
	m, n := c.recv()
	if !m.Truncated || n > 512 || len(m.Answers) == 0 || len(m.Answers) >= 200 {
		t.Fatalf("truncated %v, %d bytes, %d answers", m.Truncated, n, len(m.Answers))
	}
	short := len(m.Answers)
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 77},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName("many.shop.svc.cluster.local."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	var opt dnsmessage.ResourceHeader
	if err := opt.SetEDNS0(4096, 0, false); err != nil {
		t.Fatal(err)
	}
	q.Additionals = []dnsmessage.Resource{{Header: opt, Body: &dnsmessage.OPTResource{}}}
	b, _ := q.Pack()
	c.send(b)
	m, n = c.recv()
	if n > maxUDPAnswer || len(m.Answers) <= short {
		t.Fatalf("with EDNS 4096: %d bytes (max %d), %d answers (without EDNS %d)", n, maxUDPAnswer, len(m.Answers), short)
	}
	// Over TCP: all of them.
	tc := dialTCP(t, s, "")
	tc.send(query("many.shop.svc.cluster.local.", dnsmessage.TypeA))
	if m := tc.recv(); m.Truncated || len(m.Answers) != 200 {
		t.Fatalf("over TCP: truncated %v, %d answers", m.Truncated, len(m.Answers))
	}
}

type tcpClient struct {
	t *testing.T
	c *net.TCPConn
}

func dialTCP(t *testing.T, s *Server, laddr string) *tcpClient {
	t.Helper()
	var la *net.TCPAddr
	if laddr != "" {
		la = net.TCPAddrFromAddrPort(netip.MustParseAddrPort(laddr))
	}
	c, err := net.DialTCP("tcp", la, net.TCPAddrFromAddrPort(s.Addr().AddrPort()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &tcpClient{t, c}
}

func (c *tcpClient) send(q []byte) {
	c.t.Helper()
	if _, err := c.c.Write(append([]byte{byte(len(q) >> 8), byte(len(q))}, q...)); err != nil {
		c.t.Fatal(err)
	}
}

// recv reads one answer, or returns nil if the server closed the
// connection.
func (c *tcpClient) recv() *dnsmessage.Message {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var lb [2]byte
	if _, err := io.ReadFull(c.c, lb[:]); err != nil {
		return nil
	}
	b := make([]byte, int(lb[0])<<8|int(lb[1]))
	if _, err := io.ReadFull(c.c, b); err != nil {
		c.t.Fatal(err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		c.t.Fatal(err)
	}
	return &m
}

// TCP: a query over 512 bytes closes the connection, a source not allowed
// is closed at once, at most 8 queries per connection and 16 connections at
// once.
func TestTCPLimits(t *testing.T) {
	db := openStore(t)
	put(t, db, testService("shop", "web", "10.96.0.10"))
	s := start(t, db, Config{Upstreams: []string{"127.0.0.1:9"}, Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	q := query("web.shop.svc.cluster.local.", dnsmessage.TypeA)

	big := dialTCP(t, s, "")
	big.send(make([]byte, 600))
	if m := big.recv(); m != nil {
		t.Fatalf("a 600-byte query answered: %v", m.RCode)
	}
	stranger := dialTCP(t, s, "127.0.0.2:0")
	stranger.send(q)
	if m := stranger.recv(); m != nil {
		t.Fatal("a source not allowed was answered over TCP")
	}
	many := dialTCP(t, s, "")
	for i := range maxTCPQueries + 1 {
		many.send(q)
		if m := many.recv(); (m != nil) != (i < maxTCPQueries) {
			t.Fatalf("query %d on one connection: answered %v", i+1, m != nil)
		}
	}
	// 16 connections held open: the 17th is closed unanswered.
	for range maxTCPConns {
		c := dialTCP(t, s, "")
		c.send(q)
		if c.recv() == nil {
			t.Fatal("a connection within the limit was closed")
		}
	}
	extra := dialTCP(t, s, "")
	extra.send(q)
	if m := extra.recv(); m != nil {
		t.Fatalf("connection %d answered", maxTCPConns+1)
	}
	if st := s.Stats(); st.TooLarge != 1 || st.NotAllowed != 1 || st.Busy != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// Attacker tests: malformed and oversized packets, answers sent as
// queries, a flood from one source, sources outside the allowed networks.
func TestHostileInput(t *testing.T) {
	db := openStore(t)
	put(t, db, testService("shop", "web", "10.96.0.10"))
	s := start(t, db, Config{Upstreams: []string{"127.0.0.1:9"}})
	c := dial(t, s, "")
	ok := func() {
		t.Helper()
		if got := answers(c.ask("web.shop.svc.cluster.local.", dnsmessage.TypeA)); got != "RCodeSuccess A 10.96.0.10" {
			t.Fatalf("after hostile input: %s", got)
		}
	}
	// No reply to a packet shorter than a header, nor to a response; each
	// is followed by a good query whose answer must be the next packet.
	c.send([]byte{1, 2, 3})
	ok()
	resp := query("web.shop.svc.cluster.local.", dnsmessage.TypeA)
	resp[2] |= 0x80 // QR: a response
	c.send(resp)
	ok()
	// A header that parses and garbage after it: FORMERR.
	c.send([]byte{0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff})
	if m, _ := c.recv(); m.RCode != dnsmessage.RCodeFormatError || m.ID != 9 {
		t.Fatalf("garbage question: %v id %d", m.RCode, m.ID)
	}
	// Two questions: FORMERR; another opcode: NOTIMP.
	two := dnsmessage.Message{Header: dnsmessage.Header{ID: 10}, Questions: []dnsmessage.Question{
		{Name: dnsmessage.MustNewName("a.cluster.local."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET},
		{Name: dnsmessage.MustNewName("b.cluster.local."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	b, _ := two.Pack()
	c.send(b)
	if m, _ := c.recv(); m.RCode != dnsmessage.RCodeFormatError {
		t.Fatalf("two questions: %v", m.RCode)
	}
	upd := query("web.shop.svc.cluster.local.", dnsmessage.TypeA)
	upd[2] |= 5 << 3 // opcode UPDATE
	c.send(upd)
	if m, _ := c.recv(); m.RCode != dnsmessage.RCodeNotImplemented {
		t.Fatalf("update: %v", m.RCode)
	}
	// Oversized: dropped.
	big := make([]byte, 2000)
	copy(big, query("web.shop.svc.cluster.local.", dnsmessage.TypeA))
	c.send(big)
	ok()
	if st := s.Stats(); st.Malformed != 2 || st.TooLarge != 1 {
		t.Fatalf("stats %+v: want 2 malformed, 1 too large", st)
	}
}

// A flood from one source is cut at its burst; another source is still
// answered.
func TestFlood(t *testing.T) {
	db := openStore(t)
	put(t, db, testService("shop", "web", "10.96.0.10"))
	s := start(t, db, Config{Upstreams: []string{"127.0.0.1:9"}, Rate: 1, Burst: 20})
	flooder := dial(t, s, "127.0.0.1:0")
	const n = 500
	q := query("web.shop.svc.cluster.local.", dnsmessage.TypeA)
	for range n {
		flooder.send(q)
	}
	// The reader handles packets in order: once a query of another source
	// is answered, every packet of the flood was counted.
	// The kernel may drop packets while the socket's buffer is full of the
	// flood: the other source asks again until answered.
	other := dial(t, s, "127.0.0.2:0")
	answered := false
	for try := 0; try < 20 && !answered; try++ {
		other.send(query("web.shop.svc.cluster.local.", dnsmessage.TypeA))
		other.c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		buf := make([]byte, 512)
		n, err := other.c.Read(buf)
		var m dnsmessage.Message
		answered = err == nil && m.Unpack(buf[:n]) == nil && answers(&m) == "RCodeSuccess A 10.96.0.10"
	}
	if !answered {
		t.Fatal("another source is not answered during a flood")
	}
	st := s.Stats()
	// At most the burst and what the rate refilled while the flood lasted
	// (1 a second) were answered; the socket may have dropped some.
	flood := st.Answered - 1 // at most: the other source may have been answered more than once
	if flood > 20+10 || st.Limited == 0 || flood+st.Limited > n {
		t.Fatalf("flood of %d: %+v", n, st)
	}
	t.Logf("flood of %d queries from one source: %d answered, %d limited", n, flood, st.Limited)
}

// Sources outside Config.Allowed get nothing, for cluster names and others:
// no open resolver, no reflection.
func TestNotAllowed(t *testing.T) {
	db := openStore(t)
	put(t, db, testService("shop", "web", "10.96.0.10"))
	up, upCount := upstream(t)
	s := start(t, db, Config{Upstreams: []string{up}, Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
	stranger := dial(t, s, "127.0.0.1:0")
	stranger.send(query("web.shop.svc.cluster.local.", dnsmessage.TypeA))
	stranger.send(query("example.org.", dnsmessage.TypeA))
	pod := dial(t, s, "127.0.0.2:0")
	if got := answers(pod.ask("example.org.", dnsmessage.TypeA)); got != "RCodeSuccess A 192.0.2.1" {
		t.Fatalf("allowed source: %s", got)
	}
	if st := s.Stats(); st.NotAllowed != 2 || upCount.Load() != 1 {
		t.Fatalf("stats %+v, upstream asked %d times: want 2 refused, 1 forwarded", st, upCount.Load())
	}
	stranger.c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := stranger.c.Read(make([]byte, 512)); err == nil {
		t.Fatalf("a source not allowed got a %d-byte reply", n)
	}
}

// The resolver never forwards to itself; the host's resolv.conf gives the
// upstreams.
func TestUpstreams(t *testing.T) {
	db := openStore(t)
	s := start(t, db, Config{Upstreams: []string{"127.0.0.1:9"}})
	s.cfg.Upstreams = []string{s.Addr().String(), "192.0.2.53", "[2001:db8::1]:5353"}
	got, err := s.upstreams()
	if err != nil || fmt.Sprint(got) != "[192.0.2.53:53 [2001:db8::1]:5353]" {
		t.Fatalf("upstreams %v %v", got, err)
	}
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	writeFile(t, rc, "# comment\nsearch example.org\nnameserver 192.0.2.9\nnameserver fe80::1%eth0\noptions ndots:1\n")
	s.cfg.Upstreams, s.cfg.ResolvConf = nil, rc
	got, err = s.upstreams()
	if err != nil || fmt.Sprint(got) != "[192.0.2.9:53 [fe80::1%eth0]:53]" {
		t.Fatalf("upstreams from resolv.conf %v %v", got, err)
	}
	// With none, other names get SERVFAIL, cluster names still answer.
	writeFile(t, rc, "search example.org\n")
	if got, _ := s.upstreams(); len(got) != 0 {
		t.Fatalf("upstreams %v, want none", got)
	}
	for _, bad := range []Config{{Addr: "nope"}, {Addr: "127.0.0.1:53", Domain: "a..b"}, {Addr: "127.0.0.1:53", Rate: -1}} {
		if _, err := New(bad, db, slog.Default()); err == nil {
			t.Errorf("config %+v accepted", bad)
		}
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkResolve is one query and its answer over a UDP socket on
// loopback, with 1,000 Services in the store.
func BenchmarkResolve(b *testing.B) {
	db, err := store.Open(filepath.Join(b.TempDir(), "edge.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *store.Tx) error {
		for i := range 1000 {
			s := testService("shop", fmt.Sprintf("svc-%04d", i), fmt.Sprintf("10.96.%d.%d", i/250, i%250+1),
				corev1.ServicePort{Name: "http", Port: 80})
			data, err := protocol.EncodeService(s)
			if err != nil {
				return err
			}
			if err := tx.PutObject(&protocol.Object{Kind: protocol.KindService, UID: string(s.UID), Namespace: s.Namespace,
				Name: s.Name, ResourceVersion: "1", Data: data}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{Addr: "127.0.0.1:0", Upstreams: []string{"127.0.0.1:9"}, Rate: 1e9, Burst: 1e9}, db, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	go s.Start(b.Context())
	<-s.Ready()
	c, err := net.DialUDP("udp", nil, s.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	q := query("svc-0500.shop.svc.cluster.local.", dnsmessage.TypeA)
	buf := make([]byte, 512)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(q); err != nil {
			b.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// With an in-cluster API at the edge, kubernetes.default.svc answers its
// address, not the cloud's kubernetes Service (whose ClusterIP the pods must
// not call from the edge).
func TestKubernetesServiceIsTheEdge(t *testing.T) {
	db := openStore(t)
	put(t, db, testService("default", "kubernetes", "10.96.0.1", corev1.ServicePort{Name: "https", Port: 443}))
	s := start(t, db, Config{Upstreams: []string{"127.0.0.1:9"}, APIServer: netip.MustParseAddrPort("10.0.0.7:10551")})
	c := dial(t, s, "")
	for name, want := range map[string]string{
		"kubernetes.default.svc.cluster.local.":             "RCodeSuccess A 10.0.0.7",
		"_https._tcp.kubernetes.default.svc.cluster.local.": "RCodeSuccess SRV 10551 kubernetes.default.svc.cluster.local.",
	} {
		typ := dnsmessage.TypeA
		if name[0] == '_' {
			typ = dnsmessage.TypeSRV
		}
		if got := answers(c.ask(name, typ)); got != want {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
	// Without it, the Service as stored.
	s2 := start(t, db, Config{Upstreams: []string{"127.0.0.1:9"}})
	if got := answers(dial(t, s2, "").ask("kubernetes.default.svc.cluster.local.", dnsmessage.TypeA)); got != "RCodeSuccess A 10.96.0.1" {
		t.Errorf("without APIServer: %s", got)
	}
}
