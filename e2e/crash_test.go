//go:build integration

package e2e

// The crash tier, in the spirit of bbolt's failure tests: the real
// edgecore and cloudcore binaries, built from this tree, against the real
// control plane, killed with SIGKILL at random points while pods are
// created and deleted, pod statuses flow up and a mapper publishes twin
// reports over MQTT, and restarted each round. After the rounds the tests
// check that nothing acknowledged was lost and nothing applied twice:
//
//   - every twin report the edge answered (the twin/update/result, which
//     edgecore sends only once the report is committed) is in the twin
//     store after each restart (twin/get answers it or a later value), and
//     the last one is in the Device's status in the API server;
//   - the reported values the API server shows never go back (an old
//     report applied again after a crash would);
//   - every pod created (and not deleted) in the API server is in the edge
//     store with its UID, no deleted pod is, and every pod is Running in
//     the API server;
//   - a store file truncated or overwritten while edgecore is down is moved
//     aside and the node resyncs from the hub (the metaserver serves every
//     pod again), instead of crash-looping.
//
// The tests fail when acknowledgements run ahead of durability: with
// edgecore answering twin reports before their flush commits (the hold of
// twin.Output.AfterSave removed), TestCrashEdgecore found 7 answered
// reports lost in 10 rounds; it also found that a store file cut short
// killed edgecore with SIGBUS at every start (fixed in edgecore/store). The
// edge re-sends the statuses of its pods and devices at every connect, so a
// status the hub acknowledged and then lost would still arrive:
// TestCrashCloudcore checks that end-to-end property, each round after a
// quiet spell of the mapper, so that no later report covers for the last.
//
// TETHER_CRASH_ROUNDS sets the rounds (default 10; make crash runs more).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/tether-edge/tether/childproc"
	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/cloudcore/certs"
	devicesapi "github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/devices/mqtt"
	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/edgecore/join"
	"github.com/tether-edge/tether/edgecore/metaserver"
	"github.com/tether-edge/tether/edgecore/runtime/fake"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

// crashRounds is the number of SIGKILL rounds of each crash test.
func crashRounds(t *testing.T) int {
	t.Helper()
	s := os.Getenv("TETHER_CRASH_ROUNDS")
	if s == "" {
		return 10
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 3 {
		t.Fatalf("TETHER_CRASH_ROUNDS=%q: want a number of rounds, at least 3", s)
	}
	return n
}

// The edgecore and cloudcore binaries, built once per run of the package
// into binDir (removed by TestMain).
var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

func tetherBinaries(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = "/usr/local/go/bin/go"
		}
		if binDir, binErr = os.MkdirTemp("", "tether-e2e-bin-"); binErr != nil {
			return
		}
		out, err := exec.Command(goBin, "build", "-o", binDir+"/",
			"github.com/tether-edge/tether/edgecore/cmd/edgecore",
			"github.com/tether-edge/tether/cloudcore/cmd/cloudcore").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

// removeBinaries removes what tetherBinaries built.
func removeBinaries() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// freeAddr is a loopback address with a port free right now, for a
// process that must listen at the same address after each restart.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// binProc is a Tether binary run with a configuration file, started,
// killed and restarted by a test.
type binProc struct {
	t       *testing.T
	name    string
	bin     string
	cfgFile string
	logFile string
	starts  int
	p       *childproc.Process
}

func newBinProc(t *testing.T, name, bin, dir string, cfg any) *binProc {
	t.Helper()
	b, err := json.Marshal(cfg) // JSON is YAML
	if err != nil {
		t.Fatal(err)
	}
	p := &binProc{t: t, name: name, bin: bin, cfgFile: filepath.Join(dir, name+".yaml"), logFile: filepath.Join(dir, name+".log")}
	if err := os.WriteFile(p.cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(p.logFile)
			t.Logf("%s log (tail):\n%s", name, tailString(string(b), 6000))
		}
	})
	return p
}

func (p *binProc) start() {
	p.t.Helper()
	p.starts++
	var err error
	p.p, err = childproc.Start(exec.Command(p.bin, "--config", p.cfgFile),
		childproc.Options{Log: p.logFile, Header: fmt.Sprintf("==== start %d", p.starts)})
	if err != nil {
		p.t.Fatal(err)
	}
}

// kill sends SIGKILL, as a power cut would, and waits until it is reaped.
func (p *binProc) kill() {
	p.t.Helper()
	if p.p == nil {
		return
	}
	if p.p.Exited() {
		p.t.Fatalf("%s exited before it was killed: %v (see %s)", p.name, p.p.Err(), p.logFile)
	}
	syscall.Kill(-p.p.Pid(), syscall.SIGKILL)
	<-p.p.Done()
	p.p = nil
}

// stop ends it with SIGTERM; it must exit cleanly.
func (p *binProc) stop() {
	if p.p == nil {
		return
	}
	if p.p.Exited() {
		p.t.Errorf("%s exited by itself: %v (see %s)", p.name, p.p.Err(), p.logFile)
	} else if r := p.p.Stop(20 * time.Second); r.Killed {
		p.t.Errorf("%s did not exit within 20s of SIGTERM", p.name)
	} else if err := p.p.Err(); err != nil {
		p.t.Errorf("%s exited with %v after SIGTERM", p.name, err)
	}
	p.p = nil
}

func (p *binProc) alive() error {
	if p.p != nil && p.p.Exited() {
		return fmt.Errorf("%s exited: %v (see %s)", p.name, p.p.Err(), p.logFile)
	}
	return nil
}

// crashRig is cloudcore and one edgecore, both binaries, one device with a
// counter property, and the pods of one namespace.
type crashRig struct {
	t        *testing.T
	ns, node string
	dir      string
	cloud    *binProc
	// replicas are the cloudcores when there are more than one
	// (newReplicaRig; cloud is the first), lb the load balancer the edge
	// reaches them through.
	replicas []*binProc
	lb       *testLB
	// apis are the replicas' proxies to the API server, when there are
	// more than one replica.
	apis     []*apiProxy
	edge     *binProc
	edgeDir  string
	mqttAddr string
	metaAddr string
	device   string
}

// counterProp is the device property the mapper reports: a counter that
// only goes up, so that a lost or replayed report shows.
const counterProp = "counter"

func newCrashRig(t *testing.T, node string) *crashRig {
	t.Helper()
	return newReplicaRig(t, node, 1)
}

// newReplicaRig is newCrashRig with n cloudcores; with more than one, the
// edge reaches them through a TCP load balancer (testLB).
func newReplicaRig(t *testing.T, node string, n int) *crashRig {
	t.Helper()
	bins := tetherBinaries(t)
	r := &crashRig{t: t, ns: namespace(t), node: node, dir: t.TempDir(), device: "meter"}
	r.edgeDir = filepath.Join(r.dir, "edge")
	ctx := t.Context()
	var tweak func(int, *cloudcore.Config)
	if n > 1 {
		// Each replica reaches the API server through its own proxy,
		// which a test may pause (apiProxy).
		tweak = func(i int, cfg *cloudcore.Config) {
			cfg.Kubeconfig = filepath.Join(r.dir, fmt.Sprintf("cloudcore-%d.kubeconfig", i))
			r.apis = append(r.apis, proxiedKubeconfig(t, cfg.Kubeconfig))
		}
	}
	rs := startReplicas(t, r.dir, n, tweak)
	r.replicas, r.cloud, r.lb = rs.procs, rs.procs[0], rs.lb
	cloudAddr := rs.addr

	tok := joinString(t, node, rs.ca.Cert)
	var res *join.Result
	eventually(t, time.Minute, "edgecore join against the cloudcore binary", func() (bool, error) {
		rs.alive()
		var err error
		res, err = join.Join(ctx, join.Options{Cloud: cloudAddr, Token: tok,
			NodeName: node, ConfigPath: filepath.Join(r.dir, "joined.yaml"), Timeout: 5 * time.Second})
		return err == nil, err
	})
	r.mqttAddr, r.metaAddr = freeAddr(t), freeAddr(t)
	r.edge = newBinProc(t, "edgecore", filepath.Join(bins, "edgecore"), r.dir, edgecore.Config{
		NodeName: node,
		Cloud: edgecore.CloudConfig{URL: "wss://" + cloudAddr + "/v1/connect", CAFile: res.CAFile,
			CredentialsFile: res.CredentialsFile},
		DataDir:           r.edgeDir,
		Runtime:           "fake", // containers do not matter here; set, as the default may change
		NodeIP:            "127.0.0.1",
		ReconnectInitial:  metav1.Duration{Duration: 200 * time.Millisecond},
		ReconnectMax:      metav1.Duration{Duration: time.Second},
		PodResyncInterval: metav1.Duration{Duration: 2 * time.Second},
		StaticPodPath:     edgecore.NoStaticPods,
		MetaServer:        edgecore.MetaServerConfig{Addr: r.metaAddr},
		Devices: edgecore.DevicesConfig{MQTT: edgecore.MQTTConfig{Addr: r.mqttAddr},
			ReportInterval: metav1.Duration{Duration: 100 * time.Millisecond}},
	})
	r.edge.start()
	waitNodeReady(t, node, corev1.ConditionTrue, time.Minute)

	dc := dynClient(t)
	applyObject(t, dc, &devicesapi.DeviceModel{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: "meter"},
		Spec: devicesapi.DeviceModelSpec{Protocol: "modbus", Properties: []devicesapi.ModelProperty{
			{Name: counterProp, Type: devicesapi.TypeInt, AccessMode: devicesapi.ReadOnly, Minimum: "0", Maximum: "1000000000"},
		}}})
	applyObject(t, dc, &devicesapi.Device{ObjectMeta: metav1.ObjectMeta{Namespace: r.ns, Name: r.device},
		Spec: devicesapi.DeviceSpec{DeviceModelRef: &devicesapi.DeviceModelRef{Name: "meter"}, NodeName: node,
			Properties: []devicesapi.DeviceProperty{{Name: counterProp, ReportToCloud: true}}}})
	return r
}

// replicaSet is n cloudcore binaries against the one API server, sharing
// the CA of its Secret (made here first, so that join tokens can pin it);
// with more than one, each on a port of its own behind a TCP load balancer
// (testLB), as behind a Service.
type replicaSet struct {
	procs []*binProc
	// addr is where edges reach them: the load balancer's, or the one
	// replica's hub address; addrs are the replicas' own.
	addr  string
	addrs []string
	lb    *testLB
	ca    *pki.CA
}

// startReplicas starts n cloudcore binaries, their files in dir; tweak, if
// set, edits replica i's configuration first.
func startReplicas(t *testing.T, dir string, n int, tweak func(i int, cfg *cloudcore.Config)) *replicaSet {
	t.Helper()
	bins := tetherBinaries(t)
	ctx := t.Context()
	_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: certs.DefaultNamespace}},
		metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	rs := &replicaSet{}
	if rs.ca, err = certs.LoadOrCreateCA(ctx, client, certs.DefaultNamespace, certs.DefaultCASecret, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		name := "cloudcore"
		if n > 1 {
			name = fmt.Sprintf("cloudcore-%d", i)
		}
		cfg := cloudcore.Config{
			Kubeconfig: cp.Kubeconfig(), ListenAddr: freeAddr(t), HealthAddr: "127.0.0.1:0", CertIPs: []string{"127.0.0.1"},
			HeartbeatInterval: metav1.Duration{Duration: heartbeat}, LeaseDuration: metav1.Duration{Duration: leaseDuration},
		}
		if tweak != nil {
			tweak(i, &cfg)
		}
		p := newBinProc(t, name, filepath.Join(bins, "cloudcore"), dir, cfg)
		p.start()
		rs.procs = append(rs.procs, p)
		rs.addrs = append(rs.addrs, cfg.ListenAddr)
	}
	rs.addr = rs.addrs[0]
	if n > 1 {
		rs.lb = newTestLB(t, rs.addrs)
		rs.addr = rs.lb.addr()
	}
	return rs
}

// alive fails the test if a replica exited by itself.
func (rs *replicaSet) alive() {
	for _, p := range rs.procs {
		if err := p.alive(); err != nil {
			p.t.Fatal(err)
		}
	}
}

// crashStats are the figures a crash test prints.
type crashStats struct {
	rounds        int
	corruptRounds int
	reportsSent   int
	reportsAcked  int
	// ackChecks counts the restarts after which the last report
	// acknowledged before the kill was checked: in the twin store after an
	// edgecore restart, in the API server after a cloudcore restart.
	ackChecks   int
	podsCreated int
	podsDeleted int
	podsChecked int
	lost        int
}

func (s crashStats) String() string {
	return fmt.Sprintf("rounds=%d (corrupt store: %d) twin reports sent=%d acked=%d, acked values checked after restarts=%d; "+
		"pods created=%d deleted=%d, checked at the edge and Running in the API server=%d; lost=%d",
		s.rounds, s.corruptRounds, s.reportsSent, s.reportsAcked, s.ackChecks, s.podsCreated, s.podsDeleted, s.podsChecked, s.lost)
}

// crashMapper publishes counter reports for the rig's device as a mapper would
// (the mappers' MQTT user), and records which the edge answered.
type crashMapper struct {
	t     *testing.T
	r     *crashRig
	topic string // the device's topic prefix

	mu        sync.Mutex
	next      int            // guarded by mu: the next value to send
	lastAcked int            // guarded by mu: the highest value answered with success (-1: none)
	sent      int            // guarded by mu
	acked     int            // guarded by mu
	waiting   map[string]int // guarded by mu: event id → value sent, not answered yet
	getResult chan getAnswer // twin/get answers
	gets      int            // twin/get requests sent, for their event ids
}

// getAnswer is a twin/get answer: its event id and the counter's actual
// value ("" if none).
type getAnswer struct{ id, actual string }

func newCrashMapper(t *testing.T, r *crashRig) *crashMapper {
	return &crashMapper{t: t, r: r, topic: mqtt.DevicePrefix + r.ns + "/" + r.device + "/", lastAcked: -1,
		waiting: map[string]int{}, getResult: make(chan getAnswer, 16)}
}

// connect connects to the embedded broker, retrying until edgecore has it
// up, and subscribes to the answers.
func (m *crashMapper) connect(round int) paho.Client {
	m.t.Helper()
	var pc paho.Client
	eventually(m.t, 30*time.Second, "the embedded broker", func() (bool, error) {
		if err := m.r.edge.alive(); err != nil {
			m.t.Fatal(err)
		}
		pw, err := os.ReadFile(edgecore.MapperPasswordFile(m.r.edgeDir))
		if err != nil {
			return false, err
		}
		pc = paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + m.r.mqttAddr).
			SetClientID(fmt.Sprintf("crash-mapper-%d", round)).SetUsername(edgecore.MapperUsername).
			SetPassword(strings.TrimSpace(string(pw))).SetAutoReconnect(false).SetConnectTimeout(2 * time.Second))
		tok := pc.Connect()
		if !tok.WaitTimeout(3*time.Second) || tok.Error() != nil {
			return false, fmt.Errorf("connect: %v", tok.Error())
		}
		return true, nil
	})
	sub := pc.SubscribeMultiple(map[string]byte{m.topic + "twin/update/result": 1, m.topic + "twin/get/result": 1},
		func(_ paho.Client, msg paho.Message) { m.answer(msg.Topic(), msg.Payload()) })
	if !sub.WaitTimeout(5*time.Second) || sub.Error() != nil {
		m.t.Fatalf("subscribe: %v", sub.Error())
	}
	return pc
}

// answer records an answer of the edge.
func (m *crashMapper) answer(topic string, payload []byte) {
	var res struct {
		EventID string                   `json:"event_id"`
		Code    int                      `json:"code"`
		Twin    map[string]*mqtt.MsgTwin `json:"twin"`
	}
	if err := json.Unmarshal(payload, &res); err != nil {
		m.t.Errorf("answer on %s: %v: %s", topic, err, payload)
		return
	}
	actual := ""
	if tw := res.Twin[counterProp]; tw != nil && tw.Actual != nil && tw.Actual.Value != nil {
		actual = *tw.Actual.Value
	}
	if strings.HasSuffix(topic, "/get/result") {
		if res.Code != 0 {
			return // not served yet: asked again
		}
		select {
		case m.getResult <- getAnswer{id: res.EventID, actual: actual}:
		default:
		}
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.waiting[res.EventID]
	if !ok {
		return
	}
	delete(m.waiting, res.EventID)
	if res.Code != 0 {
		return // refused (the device not known yet): not acknowledged
	}
	if actual != strconv.Itoa(v) {
		m.t.Errorf("report %d answered with value %q", v, actual)
		return
	}
	m.acked++
	if v > m.lastAcked {
		m.lastAcked = v
	}
}

// report publishes the next value and waits up to timeout for the edge's
// answer. It returns whether the value was acknowledged.
func (m *crashMapper) report(pc paho.Client, timeout time.Duration) bool {
	m.mu.Lock()
	v := m.next
	m.next++
	m.sent++
	id := "r" + strconv.Itoa(v)
	m.waiting[id] = v
	m.mu.Unlock()
	body := fmt.Sprintf(`{"event_id":%q,"timestamp":%d,"twin":{%q:{"actual":{"value":"%d"}}}}`, id, time.Now().UnixMilli(), counterProp, v)
	pc.Publish(m.topic+"twin/update", 1, false, body)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		m.mu.Lock()
		_, pending := m.waiting[id]
		m.mu.Unlock()
		if !pending {
			return m.acknowledged(v)
		}
		if !pc.IsConnected() {
			return false
		}
	}
	return false
}

func (m *crashMapper) acknowledged(v int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastAcked >= v
}

// run reports until stop is closed or the edge stops answering (killed).
func (m *crashMapper) run(pc paho.Client, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		if !pc.IsConnected() {
			return
		}
		m.report(pc, 3*time.Second)
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
	}
}

// twinActual asks the edge for the twin (twin/get) and returns the
// counter's actual value in its store ("" if none).
func (m *crashMapper) twinActual(pc paho.Client) string {
	m.t.Helper()
	for range 20 {
		m.gets++
		id := fmt.Sprintf("get%d", m.gets)
		pc.Publish(m.topic+"twin/get", 1, false, fmt.Sprintf(`{"event_id":%q,"timestamp":0}`, id))
		for timeout := time.After(time.Second); ; {
			select {
			case a := <-m.getResult:
				if a.id == id {
					return a.actual
				}
				continue // a late answer to an earlier request
			case <-timeout:
			}
			break
		}
	}
	m.t.Fatal("no answer to twin/get within 20s")
	return ""
}

// checkAfterRestart checks that the edge's twin holds the last
// acknowledged report or a later one that was sent.
func (m *crashMapper) checkAfterRestart(pc paho.Client, round int, stats *crashStats) {
	m.t.Helper()
	m.mu.Lock()
	last, next := m.lastAcked, m.next
	m.mu.Unlock()
	if last < 0 {
		return
	}
	got := m.twinActual(pc)
	v, err := strconv.Atoi(got)
	switch {
	case err != nil || v < last:
		stats.lost++
		m.t.Errorf("round %d: the report of %d was answered before the kill, the twin holds %q after the restart", round, last, got)
	case v >= next:
		m.t.Errorf("round %d: the twin holds %d, a value never sent (next %d)", round, v, next)
	default:
		stats.ackChecks++
	}
}

// podChurn creates pods on the rig's node and deletes some, recording
// which the API server accepted.
type podChurn struct {
	r       *crashRig
	mu      sync.Mutex          // held for each step; tests hold it to pause the churn
	live    map[string]string   // guarded by mu: name → UID of pods created and not deleted
	deleted map[string]struct{} // guarded by mu: names of pods deleted
	created int                 // guarded by mu
	errs    []error             // guarded by mu
	seq     int
	// restartEvery, if set, annotates the pods for the fake runtime to
	// restart their containers that often (fake.RestartEveryAnnotation),
	// so that their statuses keep changing; the first keep pods are never
	// deleted. Both set before run.
	restartEvery string
	keep         int
}

func (c *podChurn) run(ctx context.Context) {
	for ctx.Err() == nil {
		c.step(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(50+rand.IntN(150)) * time.Millisecond):
		}
	}
}

func (c *podChurn) step(loop context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// A call in flight when the churn stops must finish: cancelled, it may
	// still have created or deleted the pod without the churn knowing.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(loop), 30*time.Second)
	defer cancel()
	if len(c.live) >= 25 || (len(c.live) > 5 && rand.IntN(3) == 0) {
		names := make([]string, 0, len(c.live))
		for n := range c.live {
			if seq, _ := strconv.Atoi(strings.TrimPrefix(n, "c")); seq > c.keep {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			return
		}
		n := names[rand.IntN(len(names))]
		err := client.CoreV1().Pods(c.r.ns).Delete(ctx, n, metav1.DeleteOptions{})
		if err == nil || apierrors.IsNotFound(err) {
			delete(c.live, n)
			c.deleted[n] = struct{}{}
		} else {
			c.errs = append(c.errs, fmt.Errorf("delete pod %s: %w", n, err))
		}
		return
	}
	c.seq++
	name := fmt.Sprintf("c%04d", c.seq)
	pod := barePod(c.r.ns, name, c.r.node)
	if c.restartEvery != "" {
		pod.Annotations = map[string]string{fake.RestartEveryAnnotation: c.restartEvery}
	}
	p, err := client.CoreV1().Pods(c.r.ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		c.errs = append(c.errs, fmt.Errorf("create pod %s: %w", name, err))
		return
	}
	c.live[name] = string(p.UID)
	c.created++
}

// startChurn runs a podChurn until the returned stop is called.
// Each of opts may set the churn's options first.
func startChurn(t *testing.T, r *crashRig, opts ...func(*podChurn)) (*podChurn, func()) {
	c := &podChurn{r: r, live: map[string]string{}, deleted: map[string]struct{}{}}
	for _, o := range opts {
		o(c)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); c.run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			<-done
			for _, err := range c.errs {
				t.Errorf("pod churn: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return c, stop
}

// reportedWatch watches the Device and records every reported value of the
// counter the API server held, in order.
type reportedWatch struct {
	mu     sync.Mutex
	values []int // guarded by mu
	errs   []string
}

func watchReported(t *testing.T, r *crashRig) *reportedWatch {
	w := &reportedWatch{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		dc := dynClient(t)
		rv := ""
		for ctx.Err() == nil {
			wi, err := dc.Resource(deviceGVR).Namespace(r.ns).Watch(ctx, metav1.ListOptions{
				FieldSelector: "metadata.name=" + r.device, ResourceVersion: rv})
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			for ev := range wi.ResultChan() {
				u, ok := ev.Object.(*unstructured.Unstructured)
				if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) {
					if ev.Type == watch.Error {
						rv = "" // too old: start again from now
					}
					continue
				}
				rv = u.GetResourceVersion()
				d, err := toDevice(u)
				if err != nil {
					continue
				}
				if s, ok := reportedTwin(d, counterProp); ok && s != "" {
					v, err := strconv.Atoi(s)
					w.mu.Lock()
					if err != nil {
						w.errs = append(w.errs, fmt.Sprintf("reported value %q", s))
					} else if n := len(w.values); n == 0 || w.values[n-1] != v {
						w.values = append(w.values, v)
					}
					w.mu.Unlock()
				}
			}
			wi.Stop()
		}
	}()
	return w
}

// check fails t if a reported value went back: an older report applied
// after a newer one. It returns how many distinct values were seen.
func (w *reportedWatch) check(t *testing.T) int {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.errs {
		t.Error(e)
	}
	for i := 1; i < len(w.values); i++ {
		if w.values[i] < w.values[i-1] {
			t.Errorf("the Device's reported counter went back from %d to %d (values seen: %v)", w.values[i-1], w.values[i],
				w.values[max(0, i-5):min(len(w.values), i+5)])
		}
	}
	return len(w.values)
}

// metaPods lists the pods the edge's metaserver serves (its store), by name
// → UID, with the node's token.
func (r *crashRig) metaPods() (map[string]string, error) {
	tok, err := os.ReadFile(metaserver.TokenFile(edgecore.CredentialsDir(r.edgeDir), metaserver.NodeClient))
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(r.t.Context(), http.MethodGet, "http://"+r.metaAddr+"/api/v1/namespaces/"+r.ns+"/pods", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metaserver: %s: %s", resp.Status, b)
	}
	var list corev1.PodList
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, p := range list.Items {
		out[p.Name] = string(p.UID)
	}
	return out, nil
}

// sameSet reports the differences between want and got (name → UID).
func sameSet(want, got map[string]string) error {
	var diffs []string
	for n, u := range want {
		if got[n] != u {
			diffs = append(diffs, fmt.Sprintf("%s: want uid %s, have %q", n, u, got[n]))
		}
	}
	for n, u := range got {
		if _, ok := want[n]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s (uid %s): should not be there", n, u))
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	slices.Sort(diffs)
	if len(diffs) > 10 {
		diffs = append(diffs[:10], fmt.Sprintf("... %d more", len(diffs)-10))
	}
	return errors.New(strings.Join(diffs, "; "))
}

// settle stops the churn and the test's faults and checks the end state:
// the last acknowledged report in the Device's status, the API server's
// pods those the churn left, each Running, and the same pods (by UID) in
// the edge store, read after a clean stop.
func (r *crashRig) settle(m *crashMapper, pc paho.Client, churn *podChurn, stopChurn func(), w *reportedWatch, stats *crashStats) {
	t := r.t
	t.Helper()
	stopChurn()
	// One more report, answered: the value the status must end at.
	var final int
	eventually(t, 30*time.Second, "a last report answered", func() (bool, error) {
		ok := m.report(pc, 3*time.Second)
		m.mu.Lock()
		final = m.lastAcked
		m.mu.Unlock()
		return ok, nil
	})
	want := strconv.Itoa(final)
	dc := dynClient(t)
	eventually(t, time.Minute, "the last acknowledged report ("+want+") in the Device's status", func() (bool, error) {
		d, err := getDevice(t, dc, r.ns, r.device)
		if err != nil {
			return false, err
		}
		got, _ := reportedTwin(d, counterProp)
		return got == want, fmt.Errorf("reported %q", got)
	})

	churn.mu.Lock()
	live := maps(churn.live)
	stats.podsCreated, stats.podsDeleted = churn.created, len(churn.deleted)
	churn.mu.Unlock()
	eventually(t, 90*time.Second, "every pod Running in the API server", func() (bool, error) {
		pods, err := client.CoreV1().Pods(r.ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		got := map[string]string{}
		notRunning := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				got[p.Name] = string(p.UID)
			}
			if p.Status.Phase != corev1.PodRunning {
				notRunning++
			}
		}
		if err := sameSet(live, got); err != nil {
			return false, fmt.Errorf("API server: %w", err)
		}
		return notRunning == 0, fmt.Errorf("%d pods not Running", notRunning)
	})
	eventually(t, time.Minute, "the metaserver serving every pod", func() (bool, error) {
		got, err := r.metaPods()
		if err != nil {
			return false, err
		}
		return true, sameSet(live, got)
	})
	// The edge store itself, after a clean stop.
	pc.Disconnect(100)
	r.edge.stop()
	db, err := store.Open(filepath.Join(r.edgeDir, "edge.db"))
	if err != nil {
		t.Fatalf("open the edge store: %v", err)
	}
	defer db.Close()
	got := map[string]string{}
	err = db.View(func(tx *store.Tx) error {
		return tx.ForEachObject(protocol.KindPod, func(o *protocol.Object) error {
			if o.Namespace == r.ns {
				got[o.Name] = o.UID
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sameSet(live, got); err != nil {
		stats.lost++
		t.Errorf("the edge store's pods differ from the API server's: %v", err)
	}
	stats.podsChecked = len(live)
	distinct := w.check(t)
	m.mu.Lock()
	stats.reportsSent, stats.reportsAcked = m.sent, m.acked
	m.mu.Unlock()
	t.Logf("crash tier: %s; %d distinct reported values seen in the API server, never going back", stats, distinct)
	if stats.lost != 0 {
		t.Errorf("lost %d acknowledged updates", stats.lost)
	}
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// corruptStore damages the edge store file, as a torn write or a bad card
// would: kind 0 truncates it to a random length short of its end, kind 1
// overwrites both meta pages and a random page with random bytes.
func corruptStore(t *testing.T, path string, kind int) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	switch kind {
	case 0:
		n := rand.Int64N(fi.Size() / 2)
		if err := os.Truncate(path, n); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("truncated from %d to %d bytes", fi.Size(), n)
	default:
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		const page = 4096
		junk := make([]byte, page)
		pages := []int64{0, 1, rand.Int64N(fi.Size() / page)}
		for _, p := range pages {
			for i := range junk {
				junk[i] = byte(rand.IntN(256))
			}
			if _, err := f.WriteAt(junk, p*page); err != nil {
				t.Fatal(err)
			}
		}
		return fmt.Sprintf("pages %v of %d overwritten with random bytes", pages, fi.Size()/page)
	}
}

// TestCrashEdgecore: edgecore is killed with SIGKILL at a random point of
// each round while pods are created and deleted and the mapper reports;
// in two rounds its store file is also truncated or overwritten while it
// is down.
func TestCrashEdgecore(t *testing.T) {
	rounds := crashRounds(t)
	r := newCrashRig(t, "e2e-crash-edge")
	m := newCrashMapper(t, r)
	w := watchReported(t, r)
	churn, stopChurn := startChurn(t, r)
	stats := crashStats{rounds: rounds}
	// Two rounds damage the store while edgecore is down. (A store cut
	// below bbolt's high-water mark once passed OpenOrRecover's page walk
	// and panicked bbolt in its first write; the length check at open
	// fixed it: TestOpenOrRecoverTruncatedAnywhere.)
	corruptAt := map[int]int{rounds / 3: 0, 2 * rounds / 3: 1}

	pc := m.connect(0)
	for round := 1; round <= rounds; round++ {
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { defer close(done); m.run(pc, stop) }()
		// A random point: in the first rounds often while edgecore is
		// still starting, resyncing or replaying its outbox.
		time.Sleep(time.Duration(100+rand.IntN(2400)) * time.Millisecond)
		r.edge.kill()
		close(stop)
		<-done
		pc.Disconnect(0)

		kind, corrupt := corruptAt[round]
		if corrupt {
			stats.corruptRounds++
			how := corruptStore(t, filepath.Join(r.edgeDir, "edge.db"), kind)
			t.Logf("round %d: store %s while edgecore is down", round, how)
		}
		r.edge.start()
		pc = m.connect(round)
		aside, _ := filepath.Glob(filepath.Join(r.edgeDir, "edge.db.corrupt-*"))
		if corrupt && kind == 0 && len(aside) == stats.corruptRounds-1 {
			// bbolt's file is larger than its pages in use: a cut past
			// them leaves a sound store, opened as it is. Then nothing
			// may be lost either, as after any other restart.
			t.Logf("round %d: the cut was past the pages in use: the store opened sound", round)
			stats.corruptRounds--
			corrupt = false
		}
		if !corrupt {
			m.checkAfterRestart(pc, round, &stats)
			continue
		}
		// The file was moved aside and the node resynced from the hub:
		// the metaserver serves every pod the API server has for it. The
		// twin store went with the file: the answered reports of this
		// node are gone from the edge (not from the API server).
		if len(aside) != stats.corruptRounds {
			t.Fatalf("round %d: %d store files moved aside, want %d", round, len(aside), stats.corruptRounds)
		}
		churn.mu.Lock()
		want := maps(churn.live)
		eventually(t, time.Minute, "the node resynced after its store was replaced", func() (bool, error) {
			if err := r.edge.alive(); err != nil {
				t.Fatal(err)
			}
			got, err := r.metaPods()
			if err != nil {
				return false, err
			}
			return true, sameSet(want, got)
		})
		churn.mu.Unlock()
		t.Logf("round %d: %d pods back at the edge after the resync", round, len(want))
	}
	r.settle(m, pc, churn, stopChurn, w, &stats)
}

// TestCrashCloudcore: cloudcore is killed with SIGKILL at a random point
// of each round while pods are created and deleted, their statuses flow
// up and the mapper's reports are answered by edgecore (which stays up)
// and sent up; every one reaches the API server.
func TestCrashCloudcore(t *testing.T) {
	rounds := crashRounds(t)
	r := newCrashRig(t, "e2e-crash-cloud")
	m := newCrashMapper(t, r)
	w := watchReported(t, r)
	churn, stopChurn := startChurn(t, r)
	stats := crashStats{rounds: rounds}

	pc := m.connect(0)
	dc := dynClient(t)
	for round := 1; round <= rounds; round++ {
		// The mapper reports for a while, then stops: the kill comes a
		// moment after its last answer, while the status may be on its way
		// to the API server, and no later report can cover for it.
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { defer close(done); m.run(pc, stop) }()
		time.Sleep(time.Duration(200+rand.IntN(1800)) * time.Millisecond)
		close(stop)
		<-done
		time.Sleep(time.Duration(rand.IntN(200)) * time.Millisecond)
		r.cloud.kill()
		m.mu.Lock()
		acked := m.lastAcked
		m.mu.Unlock()
		churn.mu.Lock()
		pods := maps(churn.live)
		churn.mu.Unlock()
		if err := r.edge.alive(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.IntN(1000)) * time.Millisecond) // down a while, or not
		r.cloud.start()
		// What the edge had acknowledged before the kill reaches the API
		// server through the new cloudcore: the last report, and the pods
		// created before it, Running.
		if acked >= 0 {
			eventually(t, time.Minute, fmt.Sprintf("round %d: report %d in the Device's status", round, acked), func() (bool, error) {
				d, err := getDevice(t, dc, r.ns, r.device)
				if err != nil {
					return false, err
				}
				got, _ := reportedTwin(d, counterProp)
				v, err := strconv.Atoi(got)
				return err == nil && v >= acked, fmt.Errorf("reported %q", got)
			})
			stats.ackChecks++
		}
		eventually(t, time.Minute, fmt.Sprintf("round %d: the pods created before the kill Running", round), func() (bool, error) {
			list, err := client.CoreV1().Pods(r.ns).List(t.Context(), metav1.ListOptions{})
			if err != nil {
				return false, err
			}
			for _, p := range list.Items {
				if pods[p.Name] == string(p.UID) && p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodRunning {
					return false, fmt.Errorf("pod %s: %s", p.Name, p.Status.Phase)
				}
			}
			return true, nil
		})
	}
	r.settle(m, pc, churn, stopChurn, w, &stats)
}
