package status

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/protocol"
)

// EventComponent is source.component and reportingComponent of the events the
// Writer creates.
const EventComponent = "tether-edgecore"

// writeEvent creates an event about the node's Node n, a pod bound to it or
// a Device attached to it.
func (w *Writer) writeEvent(ctx context.Context, n *corev1.Node, m *protocol.Event) error {
	if m == nil {
		return reject(errors.New("event is empty"))
	}
	ev, err := w.newEvent(n, m)
	if err != nil {
		return err
	}
	_, err = w.client.CoreV1().Events(ev.Namespace).Create(ctx, ev, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		// A resend of an event that was written: the name is a hash of it.
		w.stats.unchanged.Add(1)
		return nil
	case err != nil:
		return fmt.Errorf("create event %s/%s: %w", ev.Namespace, ev.Name, err)
	}
	w.stats.events.Add(1)
	return nil
}

// newEvent returns the core/v1 Event for m, or a refusal
// (RefusedEventNotOwn) when its involved object is not the node's Node n, a
// pod bound to it or a Device attached to it.
func (w *Writer) newEvent(n *corev1.Node, m *protocol.Event) (*corev1.Event, error) {
	node := n.Name
	involved := corev1.ObjectReference{APIVersion: "v1", Kind: m.InvolvedKind, Name: m.Name, UID: types.UID(m.UID)}
	var namespace string
	notOwn := func(err error) error {
		if refusalOf(err) != 0 {
			return refuse(RefusedEventNotOwn, fmt.Errorf("event: %w", err))
		}
		return err
	}
	switch m.InvolvedKind {
	case "Node":
		if m.Name != node {
			return nil, refuse(RefusedEventNotOwn, fmt.Errorf("event about node %q, not %s", m.Name, node))
		}
		namespace = metav1.NamespaceDefault
	case "Pod":
		pod, err := w.lister.Pod(m.Namespace, m.Name)
		switch {
		case apierrors.IsNotFound(err):
			return nil, reject(fmt.Errorf("event about pod %s/%s, which is gone", m.Namespace, m.Name))
		case err != nil:
			return nil, fmt.Errorf("get pod %s/%s: %w", m.Namespace, m.Name, err)
		}
		uid := m.UID
		if uid == "" {
			uid = string(pod.UID)
		}
		if err := ownPod(node, pod, uid); err != nil {
			return nil, notOwn(err)
		}
		involved.Namespace, involved.UID = pod.Namespace, pod.UID
		namespace = pod.Namespace
	case api.DeviceKind:
		dev, err := w.lister.Device(m.Namespace, m.Name)
		switch {
		case apierrors.IsNotFound(err):
			return nil, reject(fmt.Errorf("event about device %s/%s, which is gone", m.Namespace, m.Name))
		case err != nil:
			return nil, fmt.Errorf("get device %s/%s: %w", m.Namespace, m.Name, err)
		}
		uid := m.UID
		if uid == "" {
			uid = string(dev.UID)
		}
		if err := ownDevice(node, dev, uid); err != nil {
			return nil, notOwn(err)
		}
		involved.APIVersion = api.SchemeGroupVersion.String()
		involved.Namespace, involved.UID = dev.Namespace, dev.UID
		namespace = dev.Namespace
	default:
		return nil, refuse(RefusedEventNotOwn, fmt.Errorf("event about a %q: only events about the node, its pods and its devices are written", m.InvolvedKind))
	}

	now := w.cfg.Clock.Now()
	first, last := msTime(m.FirstTime, now), msTime(m.LastTime, now)
	if last.Before(first) {
		last = first
	}
	count := max(m.Count, 1)
	return &corev1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: eventName(node, m), Namespace: namespace},
		InvolvedObject:      involved,
		Reason:              m.Reason,
		Message:             m.Message,
		Type:                m.Type,
		Source:              corev1.EventSource{Component: EventComponent, Host: node},
		FirstTimestamp:      metav1.NewTime(first),
		LastTimestamp:       metav1.NewTime(last),
		Count:               count,
		ReportingController: EventComponent,
		ReportingInstance:   node,
	}, nil
}

// msTime converts milliseconds since the epoch to a time, or returns def for 0.
func msTime(ms int64, def time.Time) time.Time {
	if ms <= 0 {
		return def
	}
	return time.UnixMilli(ms)
}

// eventName names the event after its object and a hash of its content, so
// that a resent event is created once.
func eventName(node string, m *protocol.Event) string {
	h := fnv.New64a()
	for _, s := range []string{node, m.InvolvedKind, m.Namespace, m.Name, m.UID, m.Type, m.Reason, m.Message,
		strconv.FormatInt(int64(m.Count), 10), strconv.FormatInt(m.FirstTime, 10), strconv.FormatInt(m.LastTime, 10)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	suffix := fmt.Sprintf(".%016x", h.Sum64())
	name := m.Name
	if len(name) > 253-len(suffix) {
		name = strings.TrimRight(name[:253-len(suffix)], ".-")
	}
	return name + suffix
}
