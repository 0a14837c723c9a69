//go:build integration && bench

package e2e

import (
	"encoding/json"
	"fmt"
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// The tests here only measure: they log figures and fail only when the
// system breaks (a pod that never runs, a lost report), not on a number.
// They run in `make bench` (bench/out/e2e-figures.txt), not in `make test`.

// Pod start time on containerd: 20 pods created at once on one edge, each
// timed from its create call to Running in the API server.
func TestCRIPodStartTimes(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := newCRIEdge(t, c, "e2e-cri-start")
	e.start()
	waitNodeReady(t, e.name, corev1.ConditionTrue, 60*time.Second)

	const n = 20
	w, err := client.CoreV1().Pods(ns).Watch(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var mu sync.Mutex
	created := map[string]time.Time{} // guarded by mu
	running := map[string]time.Time{} // guarded by mu; set by the watcher

	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Deleted || p.Status.Phase != corev1.PodRunning {
				continue
			}
			mu.Lock()
			if _, seen := running[p.Name]; !seen {
				running[p.Name] = time.Now()
			}
			mu.Unlock()
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := criPod(t, ns, fmt.Sprintf("s%02d", i), e.name, `exec sleep 3600`)
			mu.Lock()
			created[p.Name] = time.Now()
			mu.Unlock()
			if _, err := client.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	eventually(t, 5*time.Minute, fmt.Sprintf("%d pods Running", n), func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		return len(running) == n, fmt.Errorf("%d Running", len(running))
	})
	w.Stop()
	<-watched

	var d []time.Duration
	for name, at := range running {
		d = append(d, at.Sub(created[name]))
	}
	slices.Sort(d)
	// Nearest rank: the smallest time that at least p% of the pods beat.
	pct := func(p int) time.Duration { return d[(p*len(d)+99)/100-1] }
	t.Logf("pod start, create to Running in the API server, %d pods at once on one CRI edge: p50 %s, p99 %s (min %s, max %s)",
		n, pct(50).Round(time.Millisecond), pct(99).Round(time.Millisecond), d[0].Round(time.Millisecond), d[n-1].Round(time.Millisecond))
}

// The resident memory of the real edgecore binary (edgecore/cmd/edgecore,
// built here) running as its own process with `runtime: cri` against this
// test's cloudcore: connected and idle, then with 20 pods Running. The test
// process's own RSS says nothing about edgecore's.
func TestCRIEdgecoreBinaryRSS(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	e := newCRIEdge(t, c, "e2e-cri-rss")

	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(t.TempDir(), "edgecore")
	if out, err := exec.CommandContext(t.Context(), goBin, "build", "-o", bin, "github.com/tether-edge/tether/edgecore/cmd/edgecore").CombinedOutput(); err != nil {
		t.Fatalf("go build edgecore: %v: %s", err, out)
	}
	// The configuration of e.start, as edgecore.yaml (JSON is YAML).
	cfg := edgecore.Config{
		NodeName:          e.name,
		Cloud:             e.cloudConfig(),
		DataDir:           e.dir,
		NodeIP:            "127.0.0.1",
		Runtime:           "cri",
		CRI:               *e.cri,
		ReconnectInitial:  metav1.Duration{Duration: 200 * time.Millisecond},
		ReconnectMax:      metav1.Duration{Duration: 2 * time.Second},
		PodResyncInterval: metav1.Duration{Duration: 2 * time.Second},
		StaticPodPath:     filepath.Join(e.dir, "manifests"),
		MetaServer:        edgecore.MetaServerConfig{Addr: "127.0.0.1:0"},
		Devices:           edgecore.DevicesConfig{MQTT: edgecore.MQTTConfig{Addr: "127.0.0.1:0"}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile, logFile := filepath.Join(e.dir, "edgecore.yaml"), filepath.Join(e.dir, "edgecore.log")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config", cfgFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Runs before newCRIEdge's cleanup kills the pods.
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				b, _ := os.ReadFile(logFile)
				t.Errorf("edgecore exited with %v: %s", err, tailString(string(b), 2000))
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("edgecore did not stop within 30s of SIGTERM")
		}
	})
	rss := func() (rss, hwm string) {
		t.Helper()
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		if err != nil {
			t.Fatalf("edgecore: %v", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
				rss = f[1] + " " + f[2]
			} else if len(f) == 3 && f[0] == "VmHWM:" {
				hwm = f[1] + " " + f[2]
			}
		}
		return rss, hwm
	}

	waitNodeReady(t, e.name, corev1.ConditionTrue, 60*time.Second)
	time.Sleep(2 * time.Second) // past the start's allocations
	idle, _ := rss()
	const n = 20
	for i := range n {
		createPod(t, criPod(t, ns, fmt.Sprintf("r%02d", i), e.name, `exec sleep 3600`))
	}
	eventually(t, 3*time.Minute, fmt.Sprintf("%d pods Running and Ready", n), func() (bool, error) {
		pods, err := client.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		ready := 0
		for _, p := range pods.Items {
			if ok, _ := runningAndReady(&p); ok {
				ready++
			}
		}
		return ready == n, fmt.Errorf("%d of %d Running and Ready", ready, len(pods.Items))
	})
	waitSettled(t, ns)
	busy, peak := rss()
	t.Logf("edgecore binary RSS: %s connected and idle, %s with %d pods Running (peak %s)", idle, busy, n, peak)
}

// TestDevicesLag measures, with 1,000 devices on one edge (embedded
// broker), the time from a device's report (a paho client publishes one
// twin/update per device) to its value in the Device's status in the API
// server (seen through a watch), and the twin updates per second the edge
// answers meanwhile: once with every device reporting at once, once with
// 50 reports a second. It also logs when the edge had queued every status
// (an upper bound: a status acknowledged before its watch event is counted
// late). The figures are logged; the test fails only if a report is lost.
func TestDevicesLag(t *testing.T) {
	const n = 1000
	ns := namespace(t)
	c := startCloud(t)
	e := newEdge(t, c, "e2e-dev-lag")
	e.start()
	dc := dynClient(t)
	model, _ := e2eThermometer(ns, e.name, "x", "")
	applyObject(t, dc, model)
	start := time.Now()
	for i := range n {
		_, dev := e2eThermometer(ns, e.name, fmt.Sprintf("d%04d", i), "")
		applyObject(t, dc, dev)
	}
	t.Logf("created %d Devices in %s", n, time.Since(start).Round(time.Millisecond))
	eventually(t, 5*time.Minute, "every device at the edge", func() (bool, error) {
		return len(e.objects(protocol.KindDevice)) == n, nil
	})
	t.Logf("all %d Devices at the edge %s after the first create", n, time.Since(start).Round(time.Millisecond))

	// As a mapper would: with the mappers' credentials edgecore made.
	pw, err := os.ReadFile(edgecore.MapperPasswordFile(e.dir))
	if err != nil {
		t.Fatal(err)
	}
	pc := paho.NewClient(paho.NewClientOptions().AddBroker(e.ec.Broker.URL()).SetClientID("lag").
		SetUsername(edgecore.MapperUsername).SetPassword(strings.TrimSpace(string(pw))))
	if tok := pc.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer pc.Disconnect(100)
	var mu sync.Mutex
	results := 0 // twin/update results received, guarded by mu
	var lastResult time.Time
	tok := pc.Subscribe("$hw/events/device/"+ns+"/+/twin/update/result", 1, func(_ paho.Client, m paho.Message) {
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(string(m.Payload()), `"code"`) {
			t.Errorf("refused: %s", m.Payload())
		}
		results++
		lastResult = time.Now()
	})
	if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	// Each device is served once its model and it reached the engine:
	// ask the last one until it answers.
	eventually(t, time.Minute, "the last device served", func() (bool, error) {
		got := make(chan struct{}, 1)
		topic := "$hw/events/device/" + ns + fmt.Sprintf("/d%04d/twin/get", n-1)
		pc.Subscribe(topic+"/result", 1, func(_ paho.Client, m paho.Message) {
			if !strings.Contains(string(m.Payload()), `"code"`) {
				select {
				case got <- struct{}{}:
				default:
				}
			}
		}).WaitTimeout(10 * time.Second)
		pc.Publish(topic, 1, false, `{"event_id":"ready","timestamp":0}`).WaitTimeout(10 * time.Second)
		select {
		case <-got:
			return true, nil
		case <-time.After(time.Second):
			return false, nil
		}
	})

	// round publishes one report of value per device, every, and returns
	// each device's lag to the API server (through a watch), when every
	// update was answered and when the edge had queued every status.
	round := func(value string, every time.Duration) (lag []time.Duration, answered, queued time.Duration) {
		w, err := dc.Resource(deviceGVR).Namespace(ns).Watch(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		sent := make([]time.Time, n) // guarded by mu
		lag = make([]time.Duration, n)
		seen := 0
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ev := range w.ResultChan() {
				u, ok := ev.Object.(*unstructured.Unstructured)
				if ev.Type != watch.Modified || !ok {
					continue
				}
				d, err := toDevice(u)
				if err != nil {
					continue
				}
				i, err := strconv.Atoi(strings.TrimPrefix(d.Name, "d"))
				if err != nil || i >= n {
					continue
				}
				mu.Lock()
				if v, _ := reportedTwin(d, "temperature"); v == value && lag[i] == 0 && !sent[i].IsZero() {
					lag[i] = time.Since(sent[i])
					seen++
				}
				all := seen == n
				mu.Unlock()
				if all {
					return
				}
			}
		}()
		mu.Lock()
		base := results
		mu.Unlock()
		// How long until the edge's outbox holds every device's new value.
		queuedc := make(chan time.Duration, 1)
		first := time.Now()
		go func() {
			for time.Since(first) < 5*time.Minute {
				count := 0
				e.ec.DB.View(func(tx *store.Tx) error {
					return tx.Outbox(0, func(it store.OutboxItem) bool {
						if f, err := protocol.Decode(it.Frame); err == nil && f.DeviceStatus != nil && len(f.DeviceStatus.Twins) > 0 &&
							f.DeviceStatus.Twins[0].Value == value {
							count++
						}
						return true
					})
				})
				mu.Lock()
				acked := seen
				mu.Unlock()
				if count+acked >= n {
					queuedc <- time.Since(first)
					return
				}
				time.Sleep(100 * time.Millisecond) // each look decodes the whole outbox
			}
			queuedc <- -1
		}()
		next := time.Now()
		for i := range n {
			if every > 0 {
				time.Sleep(time.Until(next))
				next = next.Add(every)
			}
			topic := fmt.Sprintf("$hw/events/device/%s/d%04d/twin/update", ns, i)
			mu.Lock()
			sent[i] = time.Now()
			mu.Unlock()
			pc.Publish(topic, 1, false, fmt.Sprintf(`{"event_id":"lag%d","timestamp":0,"twin":{"temperature":{"actual":{"value":%q}}}}`, i, value))
		}
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("only %d of %d reports reached the API server", seen, n)
		}
		mu.Lock()
		if results-base != n {
			t.Errorf("%d updates answered, want %d", results-base, n)
		}
		answered = lastResult.Sub(first)
		mu.Unlock()
		return lag, answered, <-queuedc
	}
	report := func(what string, lag []time.Duration, answered, queued time.Duration) {
		sorted := slices.Clone(lag)
		slices.Sort(sorted)
		t.Logf("%s: %d twin updates answered in %s (%.0f/s); every status queued at the edge after %s; "+
			"device-to-API-server lag p50 %s, p90 %s, p99 %s, max %s",
			what, n, answered.Round(time.Millisecond), float64(n)/answered.Seconds(), queued.Round(time.Millisecond),
			sorted[n/2].Round(time.Millisecond), sorted[n*9/10].Round(time.Millisecond), sorted[n*99/100].Round(time.Millisecond),
			sorted[n-1].Round(time.Millisecond))
	}
	lag, answered, queued := round("20.5", 0)
	report("all devices at once", lag, answered, queued)
	lag, answered, queued = round("21.5", 20*time.Millisecond)
	report("50 reports/s", lag, answered, queued)
}
