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
// a Device attached to it. When the edge sends an event again with a higher
// count or a later last time (it aggregates repeats, as the kubelet's
// correlator does), the Event created the first time is updated instead:
// its name is a hash of what does not change (see eventName). Only an
// Event that this node's events made is updated: one of that name with
// another source or involved object is refused.
func (w *Writer) writeEvent(ctx context.Context, n *corev1.Node, m *protocol.Event) error {
	if m == nil {
		return reject(errors.New("event is empty"))
	}
	ev, err := w.newEvent(n, m)
	if err != nil {
		return err
	}
	events := w.client.CoreV1().Events(ev.Namespace)
	_, err = events.Create(ctx, ev, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
	case err != nil:
		return fmt.Errorf("create event %s/%s: %w", ev.Namespace, ev.Name, err)
	default:
		w.stats.events.Add(1)
		return nil
	}
	cur, err := events.Get(ctx, ev.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get event %s/%s: %w", ev.Namespace, ev.Name, err)
	}
	if cur.Source.Host != ev.Source.Host || cur.Source.Component != ev.Source.Component ||
		cur.InvolvedObject != ev.InvolvedObject || cur.Reason != ev.Reason || cur.Type != ev.Type || cur.Message != ev.Message {
		return refuse(RefusedEventNotOwn, fmt.Errorf("event %s/%s exists and is not this event of node %s", ev.Namespace, ev.Name, n.Name))
	}
	if cur.Count >= ev.Count && !ev.LastTimestamp.After(cur.LastTimestamp.Time) {
		// A resend of what was written, or an older count.
		w.stats.unchanged.Add(1)
		return nil
	}
	cur.Count = max(cur.Count, ev.Count)
	if ev.LastTimestamp.After(cur.LastTimestamp.Time) {
		cur.LastTimestamp = ev.LastTimestamp
	}
	// A conflict (another writer updated it meanwhile) is retried.
	if _, err := events.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update event %s/%s: %w", ev.Namespace, ev.Name, err)
	}
	w.stats.eventUpdates.Add(1)
	return nil
}

// newEvent returns the core/v1 Event for m, or a refusal
// (RefusedEventNotOwn) when its involved object is not the node's Node n, a
// pod bound to it or a Device attached to it.
func (w *Writer) newEvent(n *corev1.Node, m *protocol.Event) (*corev1.Event, error) {
	node := n.Name
	involved := corev1.ObjectReference{APIVersion: "v1", Kind: m.InvolvedKind, Name: m.Name, UID: types.UID(m.UID),
		FieldPath: m.FieldPath}
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
		if h, mirror := pod.Annotations[MirrorAnnotation]; mirror && uid == h {
			// A static pod's: the edge knows it by its UID, the hash its
			// mirror carries; the Event names the mirror, so that kubectl
			// describe shows it.
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

// eventName names the event after its object and a hash of what an
// aggregated event keeps (all but its count and last time), so that a
// resent event is created once and a newer count updates it.
func eventName(node string, m *protocol.Event) string {
	h := fnv.New64a()
	for _, s := range []string{node, m.InvolvedKind, m.Namespace, m.Name, m.UID, m.FieldPath, m.Type, m.Reason, m.Message,
		strconv.FormatInt(m.FirstTime, 10)} {
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
