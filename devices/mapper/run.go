package mapper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/devices/mqtt"
)

// Mapper is the Modbus mapper of one edge node.
type Mapper struct {
	cfg    Config
	log    *slog.Logger
	rest   *rest.RESTClient
	events chan event
}

// New checks cfg and builds a Mapper; it connects to nothing until Start.
func New(cfg Config) (*Mapper, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rc, err := NewRESTClient(cfg.Metaserver, cfg.MetaserverTokenFile)
	if err != nil {
		return nil, fmt.Errorf("mapper: metaserver client: %w", err)
	}
	return &Mapper{cfg: cfg, log: cfg.Logger, rest: rc, events: make(chan event, 256)}, nil
}

// NewRESTClient returns a client-go REST client of the device group
// (devices.tether.io/v1beta1) at host, such as the edge's metaserver, that
// sends the bearer token in tokenFile.
func NewRESTClient(host, tokenFile string) (*rest.RESTClient, error) {
	scheme := runtime.NewScheme()
	if err := api.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return rest.RESTClientFor(&rest.Config{Host: host, APIPath: "/apis", BearerTokenFile: tokenFile, ContentConfig: rest.ContentConfig{
		GroupVersion:         &api.SchemeGroupVersion,
		NegotiatedSerializer: serializer.NewCodecFactory(scheme).WithoutConversion(),
	}})
}

// Start serves the node's Modbus devices until ctx ends. It connects to the
// broker (retrying while it is away), lists and watches devices and models
// on the metaserver (client-go informers, which retry while it is away), and
// runs the owner goroutine, which starts a worker per device.
func (m *Mapper) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	client := paho.NewClient(m.mqttOptions(ctx))
	m.log.Info("modbus mapper starting", slog.String("node", m.cfg.NodeName), slog.String("broker", m.cfg.BrokerURL),
		slog.String("metaserver", m.cfg.Metaserver))
	client.Connect() // ConnectRetry: keeps trying in the background
	defer client.Disconnect(250)

	informersDone := make(chan struct{})
	go func() {
		defer close(informersDone)
		m.runInformers(ctx)
	}()

	o := newOwner(m.cfg.NodeName, defaults{collectCycle: m.cfg.CollectCycle, timeout: m.cfg.Timeout},
		&pahoPublisher{c: client, timeout: 5 * time.Second}, m.log)
	o.run(ctx, m.events)
	<-informersDone
	return nil
}

// send hands an event to the owner goroutine, unless ctx ended.
func (m *Mapper) send(ctx context.Context, ev event) {
	select {
	case m.events <- ev:
	case <-ctx.Done():
	}
}

// The topics the mapper subscribes to.
const (
	filterDelta       = "$hw/events/device/+/+/twin/update/delta"
	filterTwinResult  = "$hw/events/device/+/+/twin/update/result"
	filterStateResult = "$hw/events/device/+/+/state/update/result"
)

func (m *Mapper) mqttOptions(ctx context.Context) *paho.ClientOptions {
	opts := paho.NewClientOptions().AddBroker(m.cfg.BrokerURL).SetClientID(m.cfg.ClientID).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).SetMaxReconnectInterval(10 * time.Second).
		SetKeepAlive(30 * time.Second).SetOrderMatters(false)
	if m.cfg.Username != "" {
		opts.SetUsername(m.cfg.Username).SetPassword(m.cfg.Password)
	}
	if m.cfg.TLS != nil {
		opts.SetTLSConfig(m.cfg.TLS)
	}
	opts.SetConnectionLostHandler(func(_ paho.Client, err error) {
		m.log.Warn("mqtt connection lost", slog.Any("err", err))
	})
	opts.SetOnConnectHandler(func(c paho.Client) {
		filters := map[string]byte{filterDelta: 1, filterTwinResult: 0, filterStateResult: 0}
		tok := c.SubscribeMultiple(filters, func(_ paho.Client, msg paho.Message) { m.onMessage(ctx, msg) })
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			m.log.Error("mqtt subscribe failed; reconnecting", slog.Any("err", tok.Error()))
			// Drop the connection: the reconnect subscribes again.
			go c.Disconnect(0)
			return
		}
		m.log.Info("mqtt connected", slog.String("broker", m.cfg.BrokerURL))
		m.send(ctx, connectedEvent{})
	})
	return opts
}

// onMessage runs in paho's router: it decodes the message and hands it to
// the owner goroutine.
func (m *Mapper) onMessage(ctx context.Context, msg paho.Message) {
	t, err := mqtt.ParseTopic(msg.Topic())
	if err != nil {
		return
	}
	switch t.Kind {
	case mqtt.KindTwinUpdateDelta:
		var d mqtt.TwinDelta
		if err := json.Unmarshal(msg.Payload(), &d); err != nil {
			m.log.Warn("bad twin delta", slog.String("topic", msg.Topic()), slog.Any("err", err))
			return
		}
		if len(d.Delta) > 0 {
			m.send(ctx, deltaEvent{id: t.Device, delta: d.Delta})
		}
	case mqtt.KindTwinUpdateResult, mqtt.KindStateUpdateResult:
		var r struct {
			Code   int    `json:"code"`
			Reason string `json:"reason"`
		}
		if json.Unmarshal(msg.Payload(), &r) == nil && r.Code != 0 {
			m.send(ctx, resultEvent{id: t.Device, kind: t.Kind, code: r.Code, reason: r.Reason})
		}
	}
}

// runInformers lists and watches devices and models on the metaserver
// until ctx ends, handing each change to the owner goroutine.
func (m *Mapper) runInformers(ctx context.Context) {
	key := func(o metav1.Object) string { return o.GetNamespace() + "/" + o.GetName() }
	_, devices := toolscache.NewInformerWithOptions(toolscache.InformerOptions{
		ListerWatcher: toolscache.NewListWatchFromClient(m.rest, api.DevicesResource, metav1.NamespaceAll, fields.Everything()),
		ObjectType:    &api.Device{},
		Handler: toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { d := o.(*api.Device); m.send(ctx, deviceEvent{key: key(d), device: d}) },
			UpdateFunc: func(_, o any) { d := o.(*api.Device); m.send(ctx, deviceEvent{key: key(d), device: d}) },
			DeleteFunc: func(o any) { m.send(ctx, deviceEvent{key: deletedKey(o)}) },
		},
	})
	_, models := toolscache.NewInformerWithOptions(toolscache.InformerOptions{
		ListerWatcher: toolscache.NewListWatchFromClient(m.rest, api.DeviceModelsResource, metav1.NamespaceAll, fields.Everything()),
		ObjectType:    &api.DeviceModel{},
		Handler: toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { d := o.(*api.DeviceModel); m.send(ctx, modelEvent{key: key(d), model: d}) },
			UpdateFunc: func(_, o any) { d := o.(*api.DeviceModel); m.send(ctx, modelEvent{key: key(d), model: d}) },
			DeleteFunc: func(o any) { m.send(ctx, modelEvent{key: deletedKey(o)}) },
		},
	})
	done := make(chan struct{}, 2)
	go func() { models.Run(ctx.Done()); done <- struct{}{} }()
	go func() { devices.Run(ctx.Done()); done <- struct{}{} }()
	<-done
	<-done
}

// deletedKey is the namespace/name of a deleted object or its tombstone.
func deletedKey(o any) string {
	if t, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
		return t.Key
	}
	k, _ := toolscache.MetaNamespaceKeyFunc(o)
	return k
}

// pahoPublisher publishes with QoS 1, waiting for the broker's
// acknowledgement at most timeout. While the connection is down it fails at
// once instead of queueing: the workers publish again at the next read.
type pahoPublisher struct {
	c       paho.Client
	timeout time.Duration
}

var errNotConnected = errors.New("mqtt: not connected")

func (p *pahoPublisher) Publish(topic string, payload []byte) error {
	if !p.c.IsConnectionOpen() {
		return errNotConnected
	}
	tok := p.c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(p.timeout) {
		return fmt.Errorf("mqtt: publish on %s: no acknowledgement in %s", topic, p.timeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("mqtt: publish on %s: %w", topic, err)
	}
	return nil
}
