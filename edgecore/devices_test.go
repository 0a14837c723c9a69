package edgecore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	devicesapi "github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/devices/broker"
	"github.com/tether-edge/tether/edgecore/link"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

// deviceEdge runs an edgecore with no reachable cloud, whose store holds a
// DeviceModel and a Device, with the devices config given.
func deviceEdge(t *testing.T, devices DevicesConfig) *EdgeCore {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "edge.db"))
	if err != nil {
		t.Fatal(err)
	}
	model := devicesapi.DeviceModel{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "thermometer"},
		Spec: devicesapi.DeviceModelSpec{Properties: []devicesapi.ModelProperty{{Name: "temperature", Type: devicesapi.TypeFloat}}}}
	dev := devicesapi.Device{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "thermo", Generation: 1},
		Spec: devicesapi.DeviceSpec{DeviceModelRef: &devicesapi.DeviceModelRef{Name: "thermometer"}, NodeName: "edge-1",
			Properties: []devicesapi.DeviceProperty{{Name: "temperature", ReportToCloud: true, Desired: devicesapi.TwinProperty{Value: "21"}}}}}
	err = db.Update(func(tx *store.Tx) error {
		for _, o := range []struct {
			kind protocol.Kind
			v    any
		}{{protocol.KindDeviceModel, model}, {protocol.KindDevice, dev}} {
			b, _ := json.Marshal(o.v)
			name := "thermometer"
			if o.kind == protocol.KindDevice {
				name = "thermo"
			}
			if err := tx.PutObject(&protocol.Object{Kind: o.kind, UID: "uid-" + name, Namespace: "default", Name: name,
				ResourceVersion: "1", Data: b}); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	off := false
	ec, err := New(Config{NodeName: "edge-1", Cloud: unreachableCloud(), Runtime: "fake",
		DataDir: dir, StaticPodPath: NoStaticPods, MetaServer: MetaServerConfig{Enable: &off}, Devices: devices,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ec.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		ec.Close()
	})
	return ec
}

// mapperSecret is the mappers' password edgecore made in its data
// directory, checking the file's and directory's modes.
func mapperSecret(t *testing.T, ec *EdgeCore) string {
	t.Helper()
	for path, mode := range map[string]os.FileMode{CredentialsDir(ec.cfg.DataDir): 0o700 | os.ModeDir, MapperPasswordFile(ec.cfg.DataDir): 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode() != mode {
			t.Fatalf("%s: %v, mode %v, want %v", path, err, fi.Mode(), mode)
		}
	}
	b, err := os.ReadFile(MapperPasswordFile(ec.cfg.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// ask publishes request on topic until a message arrives on topic/result,
// and returns it.
func ask(t *testing.T, url, user, pass, topic, request string) string {
	t.Helper()
	return askTLS(t, url, nil, user, pass, topic, request)
}

func askTLS(t *testing.T, url string, tc *tls.Config, user, pass, topic, request string) string {
	t.Helper()
	got := make(chan string, 16)
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("test-device").SetUsername(user).SetPassword(pass).
		SetTLSConfig(tc))
	if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to %s: %v", url, tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Subscribe(topic+"/result", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	deadline := time.After(30 * time.Second)
	for {
		c.Publish(topic, 1, false, request).WaitTimeout(time.Second)
		select {
		case r := <-got:
			return r
		case <-time.After(300 * time.Millisecond): // edgecore may not be subscribed yet
		case <-deadline:
			t.Fatalf("no answer on %s/result", topic)
		}
	}
}

// TestDevicesEmbeddedBroker: edgecore runs the embedded broker, serves the
// store's devices on it and queues the reports in the outbox.
func TestDevicesEmbeddedBroker(t *testing.T) {
	ec := deviceEdge(t, DevicesConfig{MQTT: MQTTConfig{Addr: "127.0.0.1:0"}})
	if ec.Broker == nil || ec.Devices == nil {
		t.Fatal("no broker or no twin component")
	}
	pw := mapperSecret(t, ec)
	// Anonymous clients and wrong passwords are refused (audit M3).
	for _, u := range [][2]string{{"", ""}, {MapperUsername, "wrong"}, {edgeUsername, pw}} {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(ec.Broker.URL()).SetClientID("intruder").
			SetUsername(u[0]).SetPassword(u[1]).SetAutoReconnect(false))
		if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() == nil {
			c.Disconnect(0)
			t.Errorf("user %q password %q let in", u[0], u[1])
		}
	}
	r := ask(t, ec.Broker.URL(), MapperUsername, pw, "$hw/events/node/edge-1/membership/get", `{"event_id":"m","timestamp":0}`)
	if !strings.Contains(r, `"id":"default/thermo"`) || !strings.Contains(r, `"expected":{"value":"21"`) {
		t.Fatalf("membership %s", r)
	}
	r = ask(t, ec.Broker.URL(), MapperUsername, pw, "$hw/events/device/default/thermo/twin/update",
		`{"event_id":"u","timestamp":0,"twin":{"temperature":{"actual":{"value":"20.5"}}}}`)
	if strings.Contains(r, `"code"`) {
		t.Fatalf("update result %s", r)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ds *protocol.DeviceStatus
		ec.DB.View(func(tx *store.Tx) error {
			return tx.Outbox(0, func(it store.OutboxItem) bool {
				if f, err := protocol.Decode(it.Frame); err == nil && f.DeviceStatus != nil {
					ds = f.DeviceStatus
				}
				return true
			})
		})
		if ds != nil {
			if ds.UID != "uid-thermo" || len(ds.Twins) != 1 || ds.Twins[0].Value != "20.5" {
				t.Fatalf("DeviceStatus %+v", ds)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no DeviceStatus in the outbox")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A second edgecore cannot take the same address.
	off := false
	_, err := New(Config{NodeName: "edge-2", Cloud: unreachableCloud(), Runtime: "fake",
		DataDir: t.TempDir(), StaticPodPath: NoStaticPods, MetaServer: MetaServerConfig{Enable: &off},
		Devices: DevicesConfig{MQTT: MQTTConfig{Addr: ec.Broker.Addr()}}})
	if err == nil || !strings.HasPrefix(err.Error(), "devices.mqtt.addr:") || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("second broker on %s: %v", ec.Broker.Addr(), err)
	}
}

// TestDevicesExternalBroker: edgecore uses a broker it does not run, with
// credentials.
func TestDevicesExternalBroker(t *testing.T) {
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", Users: []broker.User{{Name: "edge", Password: "s3cret", Role: broker.RoleEdge}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Start(ctx) }()
	defer func() { cancel(); <-done }()

	ec := deviceEdge(t, DevicesConfig{MQTT: MQTTConfig{Broker: BrokerExternal, URL: b.URL(), Username: "edge", Password: "s3cret"}})
	if ec.Broker != nil {
		t.Error("an embedded broker runs beside the external one")
	}
	r := ask(t, b.URL(), "edge", "s3cret", "$hw/events/device/default/thermo/twin/get", `{"event_id":"g","timestamp":0}`)
	if !strings.Contains(r, `"temperature":{"expected":{"value":"21"`) {
		t.Fatalf("twin/get %s", r)
	}
}

// TestDevicesEmbeddedBrokerTLS: with certFile and keyFile the embedded
// broker speaks TLS only; edgecore connects to it (pinning the
// certificate, which names no 127.0.0.1 here) and a mapper trusting the CA
// is served.
func TestDevicesEmbeddedBrokerTLS(t *testing.T) {
	ca, err := pki.NewCA("devices-ca")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueServer("edge-1", []string{"edge-1.example"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "mqtt.crt"), filepath.Join(dir, "mqtt.key")
	os.WriteFile(certFile, certPEM, 0o600)
	os.WriteFile(keyFile, keyPEM, 0o600)
	ec := deviceEdge(t, DevicesConfig{MQTT: MQTTConfig{Addr: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile}})
	if !strings.HasPrefix(ec.Broker.URL(), "ssl://") {
		t.Fatalf("broker URL %s", ec.Broker.URL())
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM())
	tc := &tls.Config{RootCAs: roots, ServerName: "edge-1.example", MinVersion: tls.VersionTLS12}
	r := askTLS(t, ec.Broker.URL(), tc, MapperUsername, mapperSecret(t, ec), "$hw/events/device/default/thermo/twin/get",
		`{"event_id":"g","timestamp":0}`)
	if !strings.Contains(r, `"temperature":{"expected":{"value":"21"`) {
		t.Fatalf("twin/get over TLS %s", r)
	}
}

// unreachableCloud is a cloud configuration whose dials fail (nothing
// listens on port 1), for tests of the edge alone.
func unreachableCloud() CloudConfig {
	const url = "wss://127.0.0.1:1/v1/connect"
	return CloudConfig{URL: url, Dialer: &link.Dialer{URL: url, TLS: &tls.Config{}, Timeout: time.Second}}
}

// TestMapperProtocolUsers: with mapperProtocols, each protocol's mapper user
// (its password made in the credentials directory, mode 0600) may use the
// topics of the devices of its protocol only: it gets the twin of its
// device, and may neither ask for another's nor report for it.
func TestMapperProtocolUsers(t *testing.T) {
	ec := deviceEdge(t, DevicesConfig{MQTT: MQTTConfig{Addr: "127.0.0.1:0", MapperProtocols: []string{"modbus", "opcua"}}})
	// A second device, of protocol modbus ("thermo" has none).
	dev := devicesapi.Device{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "meter", Generation: 1},
		Spec: devicesapi.DeviceSpec{DeviceModelRef: &devicesapi.DeviceModelRef{Name: "thermometer"}, NodeName: "edge-1",
			Protocol:   devicesapi.ProtocolConfig{ProtocolName: "modbus"},
			Properties: []devicesapi.DeviceProperty{{Name: "temperature", ReportToCloud: true}}}}
	b, _ := json.Marshal(dev)
	obj := protocol.Object{Kind: protocol.KindDevice, UID: "uid-meter", Namespace: "default", Name: "meter", ResourceVersion: "1", Data: b}
	if err := ec.DB.Update(func(tx *store.Tx) error { return tx.PutObject(&obj) }); err != nil {
		t.Fatal(err)
	}
	ec.Devices.ObjectsChanged(map[protocol.Kind]bool{protocol.KindDevice: true}, []protocol.ObjectRef{obj.Ref()})

	secret := func(p string) string {
		fi, err := os.Stat(MapperProtocolPasswordFile(ec.cfg.DataDir, p))
		if err != nil || fi.Mode() != 0o600 {
			t.Fatalf("%s's password file: %v, mode %v", p, err, fi.Mode())
		}
		b, _ := os.ReadFile(MapperProtocolPasswordFile(ec.cfg.DataDir, p))
		return strings.TrimSpace(string(b))
	}
	url := ec.Broker.URL()
	modbus, opcua := MapperProtocolUsername("modbus"), MapperProtocolUsername("opcua")
	meter := "$hw/events/device/default/meter/twin/get"
	if r := ask(t, url, modbus, secret("modbus"), meter, `{"event_id":"1","timestamp":0}`); !strings.Contains(r, "temperature") {
		t.Fatalf("modbus mapper, twin/get of its device: %s", r)
	}
	// Another protocol's mapper, and a device of no protocol: refused.
	for _, c := range []struct{ user, pass, device string }{{opcua, secret("opcua"), "meter"}, {modbus, secret("modbus"), "thermo"}} {
		cl := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("other-" + c.user + "-" + c.device).SetUsername(c.user).SetPassword(c.pass).
			SetAutoReconnect(false))
		if tok := cl.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("connect %s: %v", c.user, tok.Error())
		}
		topic := "$hw/events/device/default/" + c.device + "/twin/get/result"
		tok := cl.Subscribe(topic, 1, nil)
		if !tok.WaitTimeout(30 * time.Second) {
			t.Fatal("subscribe: no answer")
		}
		if st, ok := tok.(*paho.SubscribeToken); !ok || st.Result()[topic] != 0x80 {
			t.Errorf("%s subscribing to %s: %v, want refused (0x80)", c.user, topic, tok.(*paho.SubscribeToken).Result())
		}
		// A report for the device, QoS 1: refused, the client is
		// disconnected, and the device's twin does not change.
		cl.Publish("$hw/events/device/default/"+c.device+"/twin/update", 1, false,
			`{"event_id":"x","timestamp":0,"twin":{"temperature":{"actual":{"value":"99"}}}}`).WaitTimeout(5 * time.Second)
		deadline := time.Now().Add(20 * time.Second)
		for cl.IsConnectionOpen() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if cl.IsConnectionOpen() {
			t.Errorf("%s reporting for %s stayed connected", c.user, c.device)
		}
		cl.Disconnect(0)
	}
	if r := ask(t, url, modbus, secret("modbus"), meter, `{"event_id":"2","timestamp":0}`); strings.Contains(r, `"value":"99"`) {
		t.Fatalf("a refused report changed the twin: %s", r)
	}
}
