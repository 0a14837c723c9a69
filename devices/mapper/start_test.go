package mapper

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/devices/broker"
	"github.com/tether-edge/tether/devices/modbus"
	"github.com/tether-edge/tether/devices/mqtt"
	"github.com/tether-edge/tether/edgecore/metaserver"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// edge is the part of an edge node the mapper talks to: its store served
// by the metaserver, and a broker.
type edge struct {
	db *store.DB
	ms *metaserver.Server
	// tokenFile is the metaserver's token for device mappers.
	tokenFile string
	rvs       map[string]int
	mqtt      string // broker URL
}

func startEdge(t testing.TB, brokerURL string) *edge {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "edge.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	creds := filepath.Join(t.TempDir(), "credentials")
	clients, err := metaserver.LocalClients(creds)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := metaserver.New(metaserver.Config{Addr: "127.0.0.1:0", NodeName: "edge-1", StateDir: t.TempDir(),
		Clients:    clients,
		NodeStatus: func() *corev1.NodeStatus { return &corev1.NodeStatus{} }, Logger: testLogger()}, db)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	msDone := make(chan error, 1)
	go func() { msDone <- ms.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-msDone
	})
	<-ms.Ready()
	if brokerURL == "" {
		b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", Logger: testLogger(), Users: []broker.User{
			{Name: watcherUser, Password: watcherPass, Role: broker.RoleEdge},
			{Name: mapperUser, Password: mapperPass, Role: broker.RoleDevice},
		}})
		if err != nil {
			t.Fatal(err)
		}
		bDone := make(chan error, 1)
		go func() { bDone <- b.Start(ctx) }()
		t.Cleanup(func() {
			cancel()
			<-bDone
		})
		brokerURL = b.URL()
	}
	return &edge{db: db, ms: ms, rvs: map[string]int{}, mqtt: brokerURL,
		tokenFile: metaserver.TokenFile(creds, metaserver.DevicesClient)}
}

// The users of the embedded broker of startEdge: the mapper has a mapper's
// rights (broker.RoleDevice), the watcher plays the edge.
const (
	mapperUser  = "mapper"
	mapperPass  = "mapper-s3cret"
	watcherUser = "edge"
	watcherPass = "edge-s3cret"
)

// put stores device resources as the edge agent does (JSON data, a new
// resourceVersion each time) and tells the metaserver.
func (e *edge) put(t testing.TB, objs ...interface {
	metav1.Object
	runtime.Object
}) {
	t.Helper()
	err := e.db.Update(func(tx *store.Tx) error {
		for _, o := range objs {
			kind := protocol.KindDevice
			if _, ok := o.(*api.DeviceModel); ok {
				kind = protocol.KindDeviceModel
			}
			if o.GetUID() == "" {
				o.SetUID(types.UID(kind.String() + "-" + o.GetNamespace() + "-" + o.GetName()))
			}
			k := kind.String() + string(o.GetUID())
			e.rvs[k]++
			o.SetResourceVersion(strconv.Itoa(e.rvs[k]))
			data, err := json.Marshal(o)
			if err != nil {
				return err
			}
			if err := tx.PutObject(&protocol.Object{Kind: kind, UID: string(o.GetUID()), Namespace: o.GetNamespace(),
				Name: o.GetName(), ResourceVersion: o.GetResourceVersion(), Data: data}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e.ms.ObjectsChanged(nil, nil)
}

func (e *edge) startMapper(t testing.TB) {
	t.Helper()
	m, err := New(Config{NodeName: "edge-1", Metaserver: "http://" + e.ms.Addr(), MetaserverTokenFile: e.tokenFile, BrokerURL: e.mqtt,
		Username: mapperUser, Password: mapperPass, CollectCycle: 100 * time.Millisecond, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mapper: %v", err)
		}
	})
}

// watcher is an MQTT client of the test: it records what is published on
// the device topics and publishes deltas as the edge would.
type watcher struct {
	*recorder
	c paho.Client
}

func newWatcher(t testing.TB, brokerURL string) *watcher {
	t.Helper()
	w := &watcher{recorder: newRecorder()}
	w.c = paho.NewClient(paho.NewClientOptions().AddBroker(brokerURL).SetClientID("test-watcher-" + t.Name()).
		SetUsername(watcherUser).SetPassword(watcherPass))
	if tok := w.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { w.c.Disconnect(100) })
	tok := w.c.Subscribe("$hw/events/device/#", 1, func(_ paho.Client, m paho.Message) {
		w.recorder.Publish(m.Topic(), m.Payload())
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return w
}

func (w *watcher) delta(t testing.TB, id mqtt.DeviceID, delta map[string]string) {
	t.Helper()
	b, _ := json.Marshal(mqtt.TwinDelta{BaseMessage: mqtt.BaseMessage{EventID: "d1", Timestamp: time.Now().UnixMilli()},
		Twin: map[string]*mqtt.MsgTwin{}, Delta: delta})
	if tok := w.c.Publish(mqtt.DeviceTopic(mqtt.KindTwinUpdateDelta, id).String(), 1, false, b); !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("publish delta timed out")
	}
}

// The whole mapper: devices from a real metaserver (list and watch), MQTT
// through the embedded broker, our Modbus server as the device.
func TestMapperStart(t *testing.T) {
	dev, _ := startModbus(t, "")
	e := startEdge(t, "")
	w := newWatcher(t, e.mqtt)
	id := mqtt.DeviceID{Namespace: "home", Name: "t1"}
	d := thermostat("t1", "127.0.0.1", portOf(t, dev.Addr()))
	e.put(t, thermostatModel(), d)
	e.startMapper(t)

	w.next(t, "state online", state(id, mqtt.StateOnline))
	w.next(t, "temperature 21.5", actual(id, "temperature", "21.5"))

	sent := time.Now()
	w.delta(t, id, map[string]string{"setpoint": "22.5"})
	w.next(t, "setpoint 22.5", actual(id, "setpoint", "22.5"))
	t.Logf("delta on MQTT to reported value on MQTT: %v", time.Since(sent))
	if got := dev.HoldingRegisters(1, 1)[0]; got != 225 {
		t.Fatalf("setpoint register %d", got)
	}

	// The Device changes in the store: the mapper follows without a restart.
	dev.SetInputRegisters(7, 300)
	d.Spec.Properties[0].Visitors.ConfigData["offset"] = float64(7)
	e.put(t, d)
	w.next(t, "temperature from register 7", actual(id, "temperature", "30"))

	// A second device appears.
	d2 := thermostat("t2", "127.0.0.1", portOf(t, dev.Addr()))
	e.put(t, d2)
	w.next(t, "t2 online", state(mqtt.DeviceID{Namespace: "home", Name: "t2"}, mqtt.StateOnline))
}

// A desired value through the embedded broker: from the delta's publication
// to the register written (ns/op is the whole round trip: delta, write,
// read back, reported value seen on MQTT).
func BenchmarkDeltaToRegister(b *testing.B) {
	writes := make(chan time.Time, 16)
	dev, err := modbus.NewServer(modbus.ServerConfig{Addr: "127.0.0.1:0", Logger: testLogger(),
		OnWrite: func(modbus.Write) { writes <- time.Now() }})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go dev.Start(ctx)
	<-dev.Ready()
	dev.SetHoldingRegisters(1, 200)
	e := startEdge(b, "")
	w := newWatcher(b, e.mqtt)
	id := mqtt.DeviceID{Namespace: "home", Name: "t1"}
	d := thermostat("t1", "127.0.0.1", portOf(b, dev.Addr()))
	d.Spec.Properties = d.Spec.Properties[1:2] // the setpoint only
	d.Spec.Properties[0].CollectCycle = 60_000 // reads do not get in the way
	e.put(b, thermostatModel(), d)
	e.startMapper(b)
	w.next(b, "setpoint 20", actual(id, "setpoint", "20"))

	var toRegister time.Duration
	i := 0
	for b.Loop() {
		i++
		v := strconv.Itoa(10 + i%20)
		sent := time.Now()
		w.delta(b, id, map[string]string{"setpoint": v})
		toRegister += (<-writes).Sub(sent)
		w.next(b, "setpoint "+v, actual(id, "setpoint", v))
	}
	b.ReportMetric(float64(toRegister.Microseconds())/float64(b.N), "µs-to-register/op")
}
