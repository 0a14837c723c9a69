package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/tether-edge/tether/bench"
	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/cloudcore/dispatch"
	"github.com/tether-edge/tether/controlplane"
	devicesapi "github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/devices/mqtt"
	"github.com/tether-edge/tether/edgecore"
)

const (
	devicesNode      = "bench-devices"
	devicesNamespace = "tether-bench-devices"
	// deviceRate and deviceSteady are the steady round: reports a second,
	// for how long (at most one report per device).
	deviceRate   = 50
	deviceSteady = 20 * time.Second
	// devicesCreators is how many Device creations run at once.
	devicesCreators = 8
)

// deviceLag measures the lag from a device's twin report to its value in
// the Device's status in the API server. It runs the cloudcore and edgecore
// binaries (edgecore with devices on, its embedded broker on a free
// loopback port), creates a DeviceModel and cfg.Devices Devices for the
// node, waits until the edge serves them all on MQTT, then publishes one
// twin/update per device with paho, all at once, and then at deviceRate a
// second for deviceSteady; a watch on the Devices times each report from
// its publication to the status holding its value. cloudcore writes the
// statuses within its kubeQPS (--cloud-qps), which bounds the burst.
func deviceLag(ctx context.Context, cfg Config, cp *controlplane.ControlPlane, binDir, dir string, log *slog.Logger) (*bench.DeviceLag, error) {
	n := cfg.Devices
	log.Info("device lag", slog.Int("devices", n))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	brokerAddr := ln.Addr().String()
	ln.Close()
	run, err := startEdge(ctx, cp, binDir, dir, edgeSpec{node: devicesNode, host: "127.0.0.1", nodeIP: "127.0.0.1",
		cloud: func(c *cloudcore.Config) { c.KubeQPS, c.KubeBurst = float32(cfg.CloudQPS), cfg.CloudBurst },
		edge: func(c *edgecore.Config) {
			c.Devices = edgecore.DevicesConfig{MQTT: edgecore.MQTTConfig{Broker: edgecore.BrokerEmbedded, Addr: brokerAddr}}
		}})
	if err != nil {
		return nil, err
	}
	defer run.stop()

	_, err = run.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: devicesNamespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("namespace: %w", err)
	}
	defer run.client.CoreV1().Namespaces().Delete(context.Background(), devicesNamespace, metav1.DeleteOptions{})
	dc, err := dispatch.NewDevicesClient(cp.RESTConfig())
	if err != nil {
		return nil, err
	}
	l := &lagRun{dc: dc, ns: devicesNamespace, node: devicesNode, n: n, edge: run.edgecore, index: map[string]int{}}
	for i := range n {
		l.index[deviceName(i)] = i
	}
	// The devices' side of the broker: the mappers' user, whose password
	// edgecore wrote into its data directory (as hack/demo.sh gives it to
	// the Modbus mapper).
	pw, err := os.ReadFile(edgecore.MapperPasswordFile(filepath.Join(dir, "edgecore")))
	if err != nil {
		return nil, fmt.Errorf("the mappers' MQTT password: %w", err)
	}
	if err := l.connect("tcp://"+brokerAddr, edgecore.MapperUsername, strings.TrimSpace(string(pw))); err != nil {
		return nil, err
	}
	defer l.pc.Disconnect(250)

	start := time.Now()
	if err := l.create(ctx); err != nil {
		return nil, err
	}
	log.Info("devices created", slog.Int("devices", n), slog.Duration("took", time.Since(start).Round(time.Millisecond)))
	if err := l.waitServed(ctx, 5*time.Minute+time.Duration(n)*20*time.Millisecond); err != nil {
		return nil, err
	}
	res := &bench.DeviceLag{Devices: n, ServedSeconds: time.Since(start).Seconds()}
	log.Info("devices served", slog.Int("devices", n), slog.Float64("seconds", res.ServedSeconds))

	res.Burst = l.round(ctx, "20.5", n, 0)
	log.Info("device lag, all at once", slog.String("lag", lagText(res.Burst)))
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	every := time.Second / deviceRate
	res.Steady = l.round(ctx, "21.5", min(n, int(deviceSteady/every)), every)
	log.Info("device lag, steady", slog.String("lag", lagText(res.Steady)))
	return res, ctx.Err()
}

func lagText(r *bench.LagRound) string {
	if r.Error != "" {
		return fmt.Sprintf("%d of %d reports: p50 %.0fms p99 %.0fms: %s", r.Samples, r.Reports, r.P50Ms, r.P99Ms, r.Error)
	}
	return fmt.Sprintf("%d reports: p50 %.0fms p90 %.0fms p99 %.0fms max %.0fms", r.Samples, r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs)
}

func deviceName(i int) string { return fmt.Sprintf("d%05d", i) }

// The bench's device: one float property that goes to the cloud.
const lagProperty = "temperature"

func lagModel(ns string) *devicesapi.DeviceModel {
	return &devicesapi.DeviceModel{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "thermometer"},
		Spec: devicesapi.DeviceModelSpec{Protocol: "modbus", Properties: []devicesapi.ModelProperty{
			{Name: lagProperty, Type: devicesapi.TypeFloat, AccessMode: devicesapi.ReadOnly, Minimum: "-40", Maximum: "125"},
		}}}
}

func lagDevice(ns, node, name string) *devicesapi.Device {
	return &devicesapi.Device{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: devicesapi.DeviceSpec{DeviceModelRef: &devicesapi.DeviceModelRef{Name: "thermometer"}, NodeName: node,
			Properties: []devicesapi.DeviceProperty{{Name: lagProperty, ReportToCloud: true}}}}
}

// lagRun is the device side of the measurement: the Devices in the API
// server and a paho client on the edge's broker.
type lagRun struct {
	dc         rest.Interface
	ns, node   string
	n          int
	edge       *process
	index      map[string]int // device name to its number
	pc         paho.Client
	members    atomic.Int64 // devices in the last membership/get/result
	refused    atomic.Int64 // twin/update results with an error code
	lastRefuse atomic.Value // its payload, a string
}

// connect connects the paho client as user and subscribes to the results
// the measurement reads.
func (l *lagRun) connect(url, user, password string) error {
	l.pc = paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("tether-bench-devices").
		SetUsername(user).SetPassword(password).
		SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).SetAutoReconnect(true))
	if tok := l.pc.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		return fmt.Errorf("mqtt connect %s: %v", url, tok.Error())
	}
	subs := map[string]paho.MessageHandler{
		mqtt.NodeTopic(mqtt.KindMembershipGetResult, l.node).String(): func(_ paho.Client, m paho.Message) {
			var r mqtt.MembershipGetResult
			if json.Unmarshal(m.Payload(), &r) == nil {
				l.members.Store(int64(len(r.Devices)))
			}
		},
		mqtt.DevicePrefix + l.ns + "/+/twin/update/result": func(_ paho.Client, m paho.Message) {
			var r mqtt.ErrorResult
			if json.Unmarshal(m.Payload(), &r) == nil && r.Code != 0 {
				l.refused.Add(1)
				l.lastRefuse.Store(string(m.Payload()))
			}
		},
	}
	for topic, h := range subs {
		if tok := l.pc.Subscribe(topic, 1, h); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
			return fmt.Errorf("mqtt subscribe %s: %v", topic, tok.Error())
		}
	}
	return nil
}

// create creates the model, waiting for cloudcore to install the CRDs,
// and the devices.
func (l *lagRun) create(ctx context.Context) error {
	post := func(ctx context.Context, resource string, obj any) error {
		return l.dc.Post().Namespace(l.ns).Resource(resource).Body(obj).Do(ctx).Error()
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	err := poll(cctx, 250*time.Millisecond, func() (bool, error) {
		err := post(cctx, devicesapi.DeviceModelsResource, lagModel(l.ns))
		if apierrors.IsNotFound(err) {
			return false, err // the CRD is not served yet
		}
		return true, err
	})
	cancel()
	if err != nil {
		return fmt.Errorf("create device model: %w", err)
	}
	next := make(chan int)
	errs := make(chan error, devicesCreators)
	var wg sync.WaitGroup
	for range devicesCreators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := post(ctx, devicesapi.DevicesResource, lagDevice(l.ns, l.node, deviceName(i))); err != nil {
					errs <- fmt.Errorf("create device %s: %w", deviceName(i), err)
					return
				}
			}
		}()
	}
	var err2 error
feed:
	for i := range l.n {
		select {
		case next <- i:
		case err2 = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	if err2 == nil {
		err2 = <-errs
	}
	return err2
}

// waitServed asks the edge for its membership until it serves every
// device.
func (l *lagRun) waitServed(ctx context.Context, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	topic := mqtt.NodeTopic(mqtt.KindMembershipGet, l.node).String()
	err := poll(wctx, 2*time.Second, func() (bool, error) {
		if l.members.Load() == int64(l.n) {
			return true, nil
		}
		if l.edge.exited() {
			return false, errors.New("edgecore exited; see " + l.edge.logFile)
		}
		l.pc.Publish(topic, 1, false, `{"event_id":"bench","timestamp":0}`)
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("the edge serves %d of %d devices: %w", l.members.Load(), l.n, err)
	}
	return nil
}

// round publishes value for devices 0 to count-1, one every every (0: all
// at once), and times each report until a watch sees the value in the
// Device's status.
func (l *lagRun) round(ctx context.Context, value string, count int, every time.Duration) *bench.LagRound {
	r := &bench.LagRound{Reports: count}
	if every > 0 {
		r.PerSecond = float64(time.Second) / float64(every)
	}
	var list devicesapi.DeviceList
	if err := l.dc.Get().Namespace(l.ns).Resource(devicesapi.DevicesResource).Do(ctx).Into(&list); err != nil {
		r.Error = "list devices: " + err.Error()
		return r
	}
	refusedBefore := l.refused.Load()

	var (
		mu   sync.Mutex
		sent = make([]time.Time, count) // guarded by mu, like lag and seen
		lag  = make([]time.Duration, count)
		seen int
	)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- l.watch(wctx, list.ResourceVersion, func(d *devicesapi.Device) bool {
			at := time.Now()
			i, ok := l.index[d.Name]
			if !ok || i >= count || reported(d) != value {
				return false
			}
			mu.Lock()
			defer mu.Unlock()
			if lag[i] == 0 && !sent[i].IsZero() {
				lag[i] = at.Sub(sent[i])
				seen++
			}
			return seen == count
		})
	}()

	start, next := time.Now(), time.Now()
	for i := range count {
		if every > 0 {
			if err := sleep(ctx, time.Until(next)); err != nil {
				r.Error = err.Error()
				break
			}
			next = next.Add(every)
		}
		now := time.Now()
		msg := mqtt.TwinUpdate{BaseMessage: mqtt.BaseMessage{EventID: fmt.Sprintf("bench-%s-%d", value, i), Timestamp: now.UnixMilli()},
			Twin: map[string]*mqtt.MsgTwin{lagProperty: {Actual: &mqtt.TwinValue{Value: &value}}}}
		b, err := json.Marshal(msg)
		if err != nil {
			r.Error = err.Error()
			break
		}
		mu.Lock()
		sent[i] = now
		mu.Unlock()
		l.pc.Publish(mqtt.DeviceTopic(mqtt.KindTwinUpdate, mqtt.DeviceID{Namespace: l.ns, Name: deviceName(i)}).String(), 1, false, b)
	}
	r.PublishSeconds = time.Since(start).Seconds()

	// Each report gets a few minutes: cloudcore writes statuses at its
	// kubeQPS.
	deadline := time.NewTimer(3*time.Minute + time.Duration(count)*10*time.Millisecond)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for r.Error == "" {
		select {
		case err := <-watchDone:
			if err != nil {
				r.Error = "watch: " + err.Error()
			}
		case <-tick.C:
			if k := l.refused.Load() - refusedBefore; k > 0 {
				r.Error = fmt.Sprintf("the edge refused %d reports, the last: %v", k, l.lastRefuse.Load())
			} else if l.edge.exited() {
				r.Error = "edgecore exited; see " + l.edge.logFile
			}
			continue
		case <-deadline.C:
			r.Error = "timed out"
		case <-ctx.Done():
			r.Error = ctx.Err().Error()
		}
		break
	}
	cancel()
	mu.Lock()
	defer mu.Unlock()
	if r.Error == "" && seen < count {
		r.Error = fmt.Sprintf("the watch ended with %d of %d reports seen", seen, count)
	}
	var got []time.Duration
	for _, d := range lag {
		if d > 0 {
			got = append(got, d)
		}
	}
	if s := bench.Summarize(got); s != nil {
		r.Latency = *s
		r.P90Ms = float64(bench.Percentile(got, 90)) / float64(time.Millisecond)
	}
	return r
}

// watch watches the Devices from resourceVersion rv, calling seen with each
// added or changed one until it returns true (then watch returns nil) or
// ctx ends. A watch the API server closes is opened again where it ended.
func (l *lagRun) watch(ctx context.Context, rv string, seen func(*devicesapi.Device) bool) error {
	for ctx.Err() == nil {
		w, err := l.dc.Get().Namespace(l.ns).Resource(devicesapi.DevicesResource).
			VersionedParams(&metav1.ListOptions{Watch: true, ResourceVersion: rv, AllowWatchBookmarks: true}, metav1.ParameterCodec).
			Watch(ctx)
		if err != nil {
			return err
		}
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Error:
				w.Stop()
				return apierrors.FromObject(ev.Object)
			case watch.Added, watch.Modified, watch.Bookmark:
				if m, err := meta.Accessor(ev.Object); err == nil {
					rv = m.GetResourceVersion()
				}
				if d, ok := ev.Object.(*devicesapi.Device); ok && ev.Type != watch.Bookmark && seen(d) {
					w.Stop()
					return nil
				}
			}
		}
		w.Stop()
	}
	return nil
}

// reported is the reported value of lagProperty in d's status.
func reported(d *devicesapi.Device) string {
	for _, t := range d.Status.Twins {
		if t.PropertyName == lagProperty {
			return t.Reported.Value
		}
	}
	return ""
}
