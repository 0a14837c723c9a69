//go:build integration

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	devicesapi "github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/devices/mapper"
	"github.com/tether-edge/tether/devices/modbus"
	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/edgecore/metaserver"
)

// devicesClient is a REST client of devices.tether.io/v1beta1 on the API
// server.
func devicesClient(t *testing.T) *rest.RESTClient {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := devicesapi.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(cp.RESTConfig())
	cfg.APIPath = "/apis"
	cfg.GroupVersion = &devicesapi.SchemeGroupVersion
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// demoThermostat reads the demo's DeviceModel and Device
// (manifests/demo/thermostat.yaml), moved to namespace ns, node and the
// Modbus device at port.
func demoThermostat(t *testing.T, ns, node string, port int) (*devicesapi.DeviceModel, *devicesapi.Device) {
	t.Helper()
	b, err := os.ReadFile("../manifests/demo/thermostat.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var model *devicesapi.DeviceModel
	var dev *devicesapi.Device
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatal(err)
		}
		switch tm.Kind {
		case devicesapi.DeviceModelKind:
			model = &devicesapi.DeviceModel{}
			err = yaml.UnmarshalStrict(doc, model)
		case devicesapi.DeviceKind:
			dev = &devicesapi.Device{}
			err = yaml.UnmarshalStrict(doc, dev)
		case "":
			continue
		default:
			t.Fatalf("thermostat.yaml: unexpected kind %q", tm.Kind)
		}
		if err != nil {
			t.Fatalf("thermostat.yaml: %v", err)
		}
	}
	if model == nil || dev == nil {
		t.Fatal("thermostat.yaml: want a DeviceModel and a Device")
	}
	model.Namespace, dev.Namespace = ns, ns
	dev.Spec.NodeName = node
	dev.Spec.Protocol.ConfigData["port"] = int64(port)
	return model, dev
}

// twin returns the reported value of a property in the Device's status.
func twin(d *devicesapi.Device, prop string) (string, bool) {
	for _, tw := range d.Status.Twins {
		if tw.PropertyName == prop {
			return tw.Reported.Value, true
		}
	}
	return "", false
}

// A Modbus device through the whole stack: the demo's DeviceModel and
// Device in the API server, cloudcore sends them to the edge, the edge's
// metaserver serves them to the Modbus mapper, which reads our Modbus server
// playing the thermostat; reported values reach the Device status. A desired
// value set in the API server reaches the device's register, and the
// reported value follows. The device gone, the state goes offline.
func TestModbusDevice(t *testing.T) {
	c := startCloud(t)
	e := newEdge(t, c, "edge-modbus")
	// The mapper connects as the modbus mappers' user, which may use the
	// topics of the node's modbus devices only.
	e.devices = edgecore.DevicesConfig{MQTT: edgecore.MQTTConfig{MapperProtocols: []string{"modbus"}}}
	e.start()
	ns := namespace(t)
	waitNodeReady(t, e.name, "True", 60*time.Second)

	// The thermostat: temperature 21.5, setpoint 20.0, power off.
	writes := make(chan modbus.Write, 64)
	dev, err := modbus.NewServer(modbus.ServerConfig{Addr: "127.0.0.1:0", Logger: testLogger(t),
		OnWrite: func(w modbus.Write) {
			select {
			case writes <- w:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	devCtx, cancelDev := context.WithCancel(context.Background())
	devDone := make(chan error, 1)
	go func() { devDone <- dev.Start(devCtx) }()
	var stopOnce sync.Once
	stopDev := func() { stopOnce.Do(func() { cancelDev(); <-devDone }) }
	t.Cleanup(stopDev)
	<-dev.Ready()
	dev.SetInputRegisters(0, 215)
	dev.SetHoldingRegisters(0, 200)
	_, portStr, _ := net.SplitHostPort(dev.Addr())
	port, _ := strconv.Atoi(portStr)

	// The mapper, as on the edge machine: metaserver and broker on loopback.
	if e.ec.MetaServer == nil || e.ec.Broker == nil {
		t.Fatal("the edge runs no metaserver or no embedded broker")
	}
	select {
	case <-e.ec.MetaServer.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("metaserver not listening")
	}
	// The modbus mappers' credentials, from the file edgecore made (as
	// hack/demo.sh gives them to bin/modbus-mapper).
	pw, err := os.ReadFile(edgecore.MapperProtocolPasswordFile(e.dir, "modbus"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := mapper.New(mapper.Config{NodeName: e.name, Metaserver: "http://" + e.ec.MetaServer.Addr(),
		MetaserverTokenFile: metaserver.TokenFile(e.ec.CredentialsDir(), metaserver.DevicesClient),
		BrokerURL:           e.ec.Broker.URL(), Username: edgecore.MapperProtocolUsername("modbus"), Password: strings.TrimSpace(string(pw)),
		Logger: testLogger(t).With(slog.String("side", "mapper"))})
	if err != nil {
		t.Fatal(err)
	}
	mctx, stopMapper := context.WithCancel(context.Background())
	mDone := make(chan error, 1)
	go func() { mDone <- m.Start(mctx) }()
	t.Cleanup(func() { stopMapper(); <-mDone })

	rc := devicesClient(t)
	model, device := demoThermostat(t, ns, e.name, port)
	ctx := t.Context()
	if err := rc.Post().Namespace(ns).Resource("devicemodels").Body(model).Do(ctx).Error(); err != nil {
		t.Fatalf("create model: %v", err)
	}
	if err := rc.Post().Namespace(ns).Resource("devices").Body(device).Do(ctx).Error(); err != nil {
		t.Fatalf("create device: %v", err)
	}
	get := func() (*devicesapi.Device, error) {
		var d devicesapi.Device
		err := rc.Get().Namespace(ns).Resource("devices").Name(device.Name).Do(ctx).Into(&d)
		return &d, err
	}

	// The device's values and state reach the status; the spec's desired
	// setpoint (21) and power (on) reach the device.
	eventually(t, 90*time.Second, "reported temperature 21.5, setpoint 21, power true and state online in the Device status", func() (bool, error) {
		d, err := get()
		if err != nil {
			return false, err
		}
		temp, _ := twin(d, "temperature")
		sp, _ := twin(d, "setpoint")
		pw, _ := twin(d, "power")
		return temp == "21.5" && sp == "21" && pw == "true" && d.Status.State == "online",
			fmt.Errorf("temperature %q setpoint %q power %q state %q", temp, sp, pw, d.Status.State)
	})
	if got := dev.HoldingRegisters(0, 1)[0]; got != 210 {
		t.Fatalf("setpoint register %d, want 210", got)
	}
	if !dev.Coils(0, 1)[0] {
		t.Fatal("power coil off")
	}

	// Set desired values in the API server: each reaches the register, and
	// the reported value follows into the status.
	var toRegister, toStatus []time.Duration
	for _, sp := range []string{"23.5", "19", "22.5", "20", "24"} {
		drain(writes)
		idx := slices.IndexFunc(device.Spec.Properties, func(p devicesapi.DeviceProperty) bool { return p.Name == "setpoint" })
		patch := fmt.Sprintf(`[{"op":"replace","path":"/spec/properties/%d/desired/value","value":%q}]`, idx, sp)
		set := time.Now()
		if err := rc.Patch(types.JSONPatchType).Namespace(ns).Resource("devices").Name(device.Name).Body([]byte(patch)).Do(ctx).Error(); err != nil {
			t.Fatalf("patch desired setpoint: %v", err)
		}
		want := uint16(int16(mustFloat(t, sp)*10 + 0.5))
		deadline := time.After(60 * time.Second)
	wait:
		for {
			select {
			case w := <-writes:
				if w.Function == modbus.FuncWriteSingleRegister && w.Addr == 0 && dev.HoldingRegisters(0, 1)[0] == want {
					toRegister = append(toRegister, time.Since(set))
					break wait
				}
			case <-deadline:
				t.Fatalf("setpoint register %d, want %d", dev.HoldingRegisters(0, 1)[0], want)
			}
		}
		eventually(t, 60*time.Second, "reported setpoint "+sp, func() (bool, error) {
			d, err := get()
			if err != nil {
				return false, err
			}
			v, _ := twin(d, "setpoint")
			return v == sp, fmt.Errorf("reported setpoint %q", v)
		})
		toStatus = append(toStatus, time.Since(set))
	}
	t.Logf("desired value in the API server to the device's register: %v", toRegister)
	t.Logf("desired value in the API server to the reported value in the Device status: %v", toStatus)

	// The device changes by itself: the status follows, within the
	// property's collectCycle (1s in the manifest) and the edge's report
	// interval (1s).
	changed := time.Now()
	dev.SetInputRegisters(0, uint16(0x10000-15)) // -1.5
	eventually(t, 60*time.Second, "reported temperature -1.5", func() (bool, error) {
		d, err := get()
		if err != nil {
			return false, err
		}
		v, _ := twin(d, "temperature")
		return v == "-1.5", fmt.Errorf("reported temperature %q", v)
	})
	t.Logf("register changed on the device to the value in the Device status: %v", time.Since(changed))

	// The device goes away: the mapper reports it offline.
	stopDev()
	eventually(t, 60*time.Second, "state offline in the Device status", func() (bool, error) {
		d, err := get()
		if err != nil {
			return false, err
		}
		return d.Status.State == "offline", fmt.Errorf("state %q", d.Status.State)
	})
}

func mustFloat(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func drain(c chan modbus.Write) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}
