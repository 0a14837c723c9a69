package mapper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"

	"github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/devices/mqtt"
)

// event is one input of the owner goroutine: deviceEvent, modelEvent,
// deltaEvent, connectedEvent or resultEvent.
type event interface{ event() }

// deviceEvent: a Device was added or changed (Device set) or deleted (nil).
type deviceEvent struct {
	key    string // namespace/name
	device *api.Device
}

// modelEvent: a DeviceModel was added or changed (Model set) or deleted.
type modelEvent struct {
	key   string
	model *api.DeviceModel
}

// deltaEvent: the edge's twin/update/delta for a device.
type deltaEvent struct {
	id    mqtt.DeviceID
	delta map[string]string
}

// connectedEvent: the broker connection (re)opened and the subscriptions
// are in place.
type connectedEvent struct{}

// resultEvent: the edge refused an update or state of a device.
type resultEvent struct {
	id     mqtt.DeviceID
	kind   mqtt.Kind
	code   int
	reason string
}

func (deviceEvent) event()    {}
func (modelEvent) event()     {}
func (deltaEvent) event()     {}
func (connectedEvent) event() {}
func (resultEvent) event()    {}

// running is a started worker.
type running struct {
	cfg    deviceConfig
	inbox  *inbox
	cancel context.CancelFunc
	done   chan struct{}
}

// owner is the state of the owner goroutine: the devices and models the
// metaserver has, and a worker per served device.
type owner struct {
	node    string
	def     defaults
	pub     Publisher
	log     *slog.Logger
	devices map[string]*api.Device      // by namespace/name
	models  map[string]*api.DeviceModel // by namespace/name
	workers map[mqtt.DeviceID]*running
	// problems holds the last configuration error logged per device, so
	// that each is logged once, not at every event.
	problems map[mqtt.DeviceID]string
	// refused holds the last error result logged per device and topic.
	refused map[string]string
	wg      sync.WaitGroup
}

func newOwner(node string, def defaults, pub Publisher, log *slog.Logger) *owner {
	return &owner{node: node, def: def, pub: pub, log: log,
		devices: map[string]*api.Device{}, models: map[string]*api.DeviceModel{},
		workers: map[mqtt.DeviceID]*running{}, problems: map[mqtt.DeviceID]string{}, refused: map[string]string{}}
}

// run applies events until ctx ends, then stops every worker.
func (o *owner) run(ctx context.Context, events <-chan event) {
	defer o.stopAll()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			o.apply(ctx, ev)
		}
	}
}

func (o *owner) apply(ctx context.Context, ev event) {
	switch ev := ev.(type) {
	case deviceEvent:
		if ev.device == nil {
			delete(o.devices, ev.key)
		} else {
			o.devices[ev.key] = ev.device
		}
		o.reconcile(ctx, ev.key)
	case modelEvent:
		if ev.model == nil {
			delete(o.models, ev.key)
		} else {
			o.models[ev.key] = ev.model
		}
		for key, d := range o.devices {
			if d.Namespace+"/"+modelName(d) == ev.key {
				o.reconcile(ctx, key)
			}
		}
	case deltaEvent:
		if w := o.workers[ev.id]; w != nil {
			w.inbox.putDesired(ev.delta)
		}
	case connectedEvent:
		for _, w := range o.workers {
			w.inbox.putResend()
		}
	case resultEvent:
		if o.workers[ev.id] == nil {
			return
		}
		k := ev.id.String() + " " + ev.kind.String()
		msg := fmt.Sprintf("%d %s", ev.code, ev.reason)
		if o.refused[k] != msg {
			o.refused[k] = msg
			o.log.Warn("the edge refused a report", slog.String("device", ev.id.String()), slog.String("topic", ev.kind.String()),
				slog.Int("code", ev.code), slog.String("reason", ev.reason))
		}
	}
}

// reconcile brings the worker of the device stored under key in line with
// its Device and model: started, restarted with a new configuration, or
// stopped.
func (o *owner) reconcile(ctx context.Context, key string) {
	d := o.devices[key]
	var id mqtt.DeviceID
	if d != nil {
		id = mqtt.DeviceID{Namespace: d.Namespace, Name: d.Name}
	} else {
		ns, name, _ := strings.Cut(key, "/")
		id = mqtt.DeviceID{Namespace: ns, Name: name}
	}
	if d == nil || d.Spec.NodeName != o.node || d.Spec.Protocol.ProtocolName != ProtocolName {
		if o.workers[id] != nil {
			o.log.Info("modbus device no longer served", slog.String("device", id.String()))
		}
		o.stop(id)
		delete(o.problems, id)
		return
	}
	cfg, propErrs, err := resolve(d, o.models[d.Namespace+"/"+modelName(d)], o.def)
	problem := ""
	if err != nil {
		problem = err.Error()
	} else if len(propErrs) > 0 {
		problem = errors.Join(propErrs...).Error()
	}
	if problem != o.problems[id] {
		switch {
		case errors.Is(err, errNoModel):
			o.log.Info("modbus device waits for its model", slog.String("device", id.String()), slog.String("err", problem))
		case problem != "":
			o.log.Error("modbus device configuration", slog.String("device", id.String()), slog.String("err", problem),
				slog.Bool("served", err == nil))
		}
		o.problems[id] = problem
	}
	if err != nil {
		o.stop(id)
		return
	}
	if w := o.workers[id]; w != nil && reflect.DeepEqual(w.cfg, cfg) {
		return
	}
	o.stop(id)
	o.start(ctx, cfg)
}

func (o *owner) start(ctx context.Context, cfg deviceConfig) {
	w, err := newWorker(cfg, o.pub, o.log)
	if err != nil {
		o.log.Error("modbus device", slog.String("device", cfg.id.String()), slog.Any("err", err))
		return
	}
	wctx, cancel := context.WithCancel(ctx)
	r := &running{cfg: cfg, inbox: w.inbox, cancel: cancel, done: make(chan struct{})}
	o.workers[cfg.id] = r
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		defer close(r.done)
		w.run(wctx)
	}()
}

// stop stops the device's worker, if any, and waits for it.
func (o *owner) stop(id mqtt.DeviceID) {
	r := o.workers[id]
	if r == nil {
		return
	}
	r.cancel()
	<-r.done
	delete(o.workers, id)
}

func (o *owner) stopAll() {
	for _, r := range o.workers {
		r.cancel()
	}
	o.wg.Wait()
	clear(o.workers)
}
