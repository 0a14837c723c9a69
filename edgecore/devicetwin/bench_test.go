package devicetwin

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tether-edge/tether/devices/mqtt"
	"github.com/tether-edge/tether/protocol"
)

// BenchmarkTwinUpdates measures twin updates per second through the twin
// component end to end: a paho client publishes twin/update (QoS 1) for
// devices on the embedded broker, with at most `window` updates awaiting
// their result; the component decodes, checks, applies, publishes result,
// document and delta, and saves the twins and queues the statuses in bbolt
// every ReportInterval (1s, the default). Each op is one update answered.
func BenchmarkTwinUpdates(b *testing.B) {
	for _, bc := range []struct{ devices, window int }{{1, 1}, {1, 64}, {100, 64}} {
		b.Run(fmt.Sprintf("devices=%d/window=%d", bc.devices, bc.window), func(b *testing.B) {
			benchTwinUpdates(b, bc.devices, bc.window)
		})
	}
}

func benchTwinUpdates(b *testing.B, devices, window int) {
	db := openStore(b)
	br, _ := startBroker(b, "127.0.0.1:0")
	objs := []any{thermoModel}
	for i := range devices {
		objs = append(objs, thermoDevice("d"+strconv.Itoa(i), "22", 1))
	}
	putObjects(b, db, nil, objs...)
	startTwin(b, db, br.URL(), func(c *Config) { c.ReportInterval, c.FlushDelay = time.Second, 20*time.Millisecond })

	var answered, failed atomic.Int64
	slots := make(chan struct{}, window)
	c := paho.NewClient(paho.NewClientOptions().AddBroker(br.URL()).SetClientID("bench").SetUsername(testUser).SetPassword(testPass))
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	defer c.Disconnect(100)
	tok := c.Subscribe("$hw/events/device/+/+/twin/update/result", 1, func(_ paho.Client, m paho.Message) {
		if strings.Contains(string(m.Payload()), `"code"`) {
			failed.Add(1)
		}
		answered.Add(1)
		<-slots
	})
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	// Wait until the component answers (it subscribes asynchronously).
	var ready atomic.Bool
	tok = c.Subscribe(devTopic("d0", "twin/get/result"), 1, func(paho.Client, paho.Message) { ready.Store(true) })
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	for deadline := time.Now().Add(wait); !ready.Load(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("the component does not answer")
		}
		c.Publish(devTopic("d0", "twin/get"), 1, false, `{"event_id":"ready","timestamp":0}`)
	}

	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		slots <- struct{}{}
		c.Publish(topicOf(i%devices), 1, false, update(i, i/devices))
	}
	for answered.Load() < int64(b.N) {
		time.Sleep(100 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d updates refused", n)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "updates/s")
}

func topicOf(i int) string { return devTopic("d"+strconv.Itoa(i), "twin/update") }

func update(i, v int) string {
	return `{"event_id":"b` + strconv.Itoa(i) + `","timestamp":0,"twin":{"temperature":{"actual":{"value":"` +
		strconv.Itoa(v%100) + `"}}}}`
}

// BenchmarkDeviceChange measures what one Device change costs the
// component with 10,000 devices of one model stored (all served): its
// desired value changes in the store (not timed), then the component
// reads the store and upserts the device into the engine. reread=all is
// after ObjectsChanged, which reads every device and model again;
// reread=changed after ObjectsCommitted, which reads that device only.
func BenchmarkDeviceChange(b *testing.B) {
	const devices = 10000
	db := openStore(b)
	objs := []any{thermoModel}
	for i := range devices {
		objs = append(objs, thermoDevice(fmt.Sprintf("d%05d", i), "22", 1))
	}
	putObjects(b, db, nil, objs...)
	tw := offline(b, db)
	if err := tw.syncObjects(time.Now(), changes{all: true}); err != nil {
		b.Fatal(err)
	}
	if len(tw.devs) != devices {
		b.Fatalf("%d devices, want %d", len(tw.devs), devices)
	}
	id := mqtt.DeviceID{Namespace: "default", Name: "d00042"}
	for _, all := range []bool{true, false} {
		name := "reread=changed"
		if all {
			name = "reread=all"
		}
		b.Run(name, func(b *testing.B) {
			var desired string
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				desired = strconv.Itoa(20 + i%50)
				d := thermoDevice(id.Name, desired, tw.devs[id].applied.Version+1)
				o := object(b, d, "", rvSeq.Add(1))
				storeOp{put: []*protocol.Object{o}}.apply(b, db)
				b.StartTimer()
				c := changes{all: true}
				if !all {
					c = changes{}
					c.add([]protocol.ObjectRef{o.Ref()})
				}
				if err := tw.syncObjects(time.Now(), c); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if got := tw.devs[id].applied.Desired["temperature"]; got != desired {
				b.Fatalf("desired temperature %q in the engine, want %q", got, desired)
			}
		})
	}
}
