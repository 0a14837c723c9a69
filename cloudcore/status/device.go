package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/tether-edge/tether/devices/api"
	"github.com/tether-edge/tether/protocol"
)

// maxOlder bounds the resourceVersions remembered per Device written ahead
// of the informer cache (deviceWrite.older).
const maxOlder = 64

// deviceWrite is what the Writer last wrote to a Device's status, kept until
// the informer cache shows that write or a later one. Without it, a status
// the cache does not show yet could be taken for the current one, and a
// report equal to the stale cached status would be skipped although the API
// server holds another: the report would be lost.
type deviceWrite struct {
	namespace, name string
	// status and rv are the Device's status and resourceVersion as the
	// write returned them.
	status api.DeviceStatus
	rv     string
	// older are the resourceVersions the cache may still show that precede
	// rv: the cache's when the Writer wrote, and its own earlier writes.
	older []string
}

// DeviceStatus writes the status of a Device whose spec.nodeName is node:
// the reported value of every twin, the desired value the edge had seen,
// the state and when the device was last online. m carries the whole
// reported set, so the status is replaced, not merged. Messages are
// coalesced per device (the newest replaces older unwritten ones), and a
// status equal to the Device's current one is not written. A report with an
// order (o not zero) is fenced (fence.go), its order recorded in the
// status's reportOrder.
func (w *Writer) DeviceStatus(node string, o protocol.StatusOrder, m *protocol.DeviceStatus, done func(error)) {
	var uid string
	if m != nil {
		uid = m.UID
	}
	w.enqueueOrdered(key{kind: kindDeviceStatus, node: node, id: uid}, o, m, done)
}

func (w *Writer) writeDeviceStatus(ctx context.Context, node string, o protocol.StatusOrder, m *protocol.DeviceStatus) error {
	if m == nil {
		return reject(errors.New("device status message is empty"))
	}
	if err := validateDeviceStatus(m); err != nil {
		return reject(fmt.Errorf("device %s/%s: %w", m.Namespace, m.Name, err))
	}
	dev, err := w.lister.Device(m.Namespace, m.Name)
	if apierrors.IsNotFound(err) {
		return reject(fmt.Errorf("device %s/%s is gone", m.Namespace, m.Name))
	}
	if err != nil {
		return fmt.Errorf("get device %s/%s: %w", m.Namespace, m.Name, err)
	}
	if err := ownDevice(node, dev, m.UID); err != nil {
		return err
	}
	var model *api.DeviceModel
	if ref := dev.Spec.DeviceModelRef; ref != nil && ref.Name != "" {
		// Only for the twins' type metadata: a missing model leaves it out.
		model, _ = w.lister.DeviceModel(dev.Namespace, ref.Name)
	}
	want := deviceStatusOf(m, model)
	fenced := !o.IsZero()
	if fenced {
		want.ReportOrder = formatFence(o)
	}
	object := "device/" + dev.Namespace + "/" + dev.Name
	cur, rv, older, sure := w.deviceBasis(dev)
	reread := false
	// readLive makes the API server's Device the basis, once.
	readLive := func() error {
		live, err := w.devices.GetDevice(ctx, dev.Namespace, dev.Name)
		if apierrors.IsNotFound(err) {
			return reject(fmt.Errorf("device %s/%s is gone", dev.Namespace, dev.Name))
		}
		if err != nil {
			return fmt.Errorf("get device %s/%s: %w", dev.Namespace, dev.Name, err)
		}
		if err := ownDevice(node, live, m.UID); err != nil {
			return err
		}
		older = append(older, rv)
		cur, rv, sure, reread = &live.Status, live.ResourceVersion, true, true
		return nil
	}
	for {
		var rec protocol.StatusOrder
		var recorded bool
		if fenced {
			// A basis older than the API server's (an unsure cache) records
			// an order no newer than the API server's: stale here is stale
			// there.
			if rec, recorded = w.recordedFence(cur.ReportOrder, object); recorded && !rec.Before(o) {
				if rec == o {
					w.stats.unchanged.Add(1)
					w.stats.deviceUnchanged.Add(1)
				} else {
					w.stats.stale.Add(1)
					w.log.Info("stale device status dropped: a newer report of the device was written", slog.String("device", dev.Namespace+"/"+dev.Name),
						slog.String("order", formatFence(o)), slog.String("recorded", formatFence(rec)))
				}
				return nil
			}
		}
		same := *cur
		same.ReportOrder = want.ReportOrder
		// Unfenced, the recorded order stays (the patch leaves it out).
		if equality.Semantic.DeepEqual(&same, &want) &&
			(!fenced || recorded && m.Prev != 0 && rec == protocol.StatusOrder{Epoch: o.Epoch, Seq: m.Prev}) {
			if sure {
				w.stats.unchanged.Add(1)
				w.stats.deviceUnchanged.Add(1)
				return nil
			}
			// The cache may be behind the Writer's own last write: ask.
			if err := readLive(); err != nil {
				return err
			}
			continue
		}
		patch, err := deviceStatusPatch(rv, &want)
		if err != nil {
			return reject(err)
		}
		w.log.Debug("patching device status", slog.String("device", dev.Namespace+"/"+dev.Name),
			slog.String("resourceVersion", rv), slog.String("patch", string(patch)))
		// The resourceVersion is the precondition: the API server writes
		// only over the version the status was compared with, which is a
		// version of the Device with the UID the edge named. (A UID in the
		// patch would be no precondition: for the status of a custom
		// resource the API server keeps the stored metadata.)
		got, err := w.devices.PatchDeviceStatus(ctx, dev.Namespace, dev.Name, patch)
		switch {
		case apierrors.IsNotFound(err):
			return reject(fmt.Errorf("device %s/%s is gone: %w", dev.Namespace, dev.Name, err))
		case apierrors.IsConflict(err) && !reread:
			// Changed meanwhile (often its spec, or a newer report written
			// by another replica) or made again: compare with what the API
			// server holds now, its recorded order included, and try once
			// more; a second conflict is retried after a back-off.
			if err := readLive(); err != nil {
				return err
			}
			continue
		case err != nil:
			return fmt.Errorf("patch device %s/%s status: %w", dev.Namespace, dev.Name, err)
		}
		if fenced && equality.Semantic.DeepEqual(&same, &want) {
			w.stats.fenceOnly.Add(1)
		} else {
			w.stats.deviceStatuses.Add(1)
		}
		w.rememberDevice(got, append(older, rv))
		return nil
	}
}

// ownDevice returns a rejection unless dev has the UID the edge names, and
// a refusal (RefusedNotOwnDevice) unless it is attached to node.
func ownDevice(node string, dev *api.Device, uid string) error {
	if dev.Spec.NodeName != node {
		return refuse(RefusedNotOwnDevice, fmt.Errorf("device %s/%s is attached to node %q, not %s", dev.Namespace, dev.Name, dev.Spec.NodeName, node))
	}
	if string(dev.UID) != uid {
		return reject(fmt.Errorf("device %s/%s has uid %s, not %s", dev.Namespace, dev.Name, dev.UID, uid))
	}
	return nil
}

// validateDeviceStatus checks what the Device CRD's status schema checks of
// the twins, so that a bad report is refused with a message naming the
// property, without a round trip.
func validateDeviceStatus(m *protocol.DeviceStatus) error {
	if len(m.Twins) > api.MaxProperties {
		return fmt.Errorf("%d twins, more than %d", len(m.Twins), api.MaxProperties)
	}
	for i := range m.Twins {
		t := &m.Twins[i]
		if err := api.ValidatePropertyName(t.Name); err != nil {
			return fmt.Errorf("twins[%d]: %w", i, err)
		}
		if len(t.Value) > api.MaxValueLength {
			return fmt.Errorf("twins[%d] (%s): value is %d bytes, more than %d", i, t.Name, len(t.Value), api.MaxValueLength)
		}
		if t.ObservedDesired != nil && len(*t.ObservedDesired) > api.MaxValueLength {
			return fmt.Errorf("twins[%d] (%s): observed desired value is %d bytes, more than %d",
				i, t.Name, len(*t.ObservedDesired), api.MaxValueLength)
		}
	}
	return nil
}

// deviceStatusOf is the Device status m reports. The type of each twin's
// value, lower case as KubeEdge's twins carry it, comes from the model when
// it has the property.
func deviceStatusOf(m *protocol.DeviceStatus, model *api.DeviceModel) api.DeviceStatus {
	st := api.DeviceStatus{State: m.State}
	if m.LastOnline > 0 {
		st.LastOnlineTime = time.UnixMilli(m.LastOnline).UTC().Format(time.RFC3339)
	}
	if len(m.Twins) > 0 {
		st.Twins = make([]api.Twin, len(m.Twins))
	}
	for i := range m.Twins {
		t := &m.Twins[i]
		tw := api.Twin{PropertyName: t.Name, Reported: api.TwinProperty{Value: t.Value}}
		var meta map[string]string
		if t.Timestamp > 0 {
			meta = map[string]string{"timestamp": strconv.FormatInt(t.Timestamp, 10)}
		}
		if model != nil {
			if p := model.Property(t.Name); p != nil && p.Type != "" {
				if meta == nil {
					meta = map[string]string{}
				}
				meta["type"] = strings.ToLower(string(p.Type))
			}
		}
		tw.Reported.Metadata = meta
		if t.ObservedDesired != nil {
			tw.ObservedDesired.Value = *t.ObservedDesired
		}
		st.Twins[i] = tw
	}
	return st
}

// deviceStatusPatch is the JSON merge patch that replaces the status with
// st, with the resourceVersion rv as a precondition. Fields st leaves empty
// are removed (null), so that the result is st whatever was there.
func deviceStatusPatch(rv string, st *api.DeviceStatus) ([]byte, error) {
	status := map[string]any{"twins": nil, "state": nil, "lastOnlineTime": nil}
	if st.ReportOrder != "" {
		status["reportOrder"] = st.ReportOrder
	}
	if len(st.Twins) > 0 {
		status["twins"] = st.Twins
	}
	if st.State != "" {
		status["state"] = st.State
	}
	if st.LastOnlineTime != "" {
		status["lastOnlineTime"] = st.LastOnlineTime
	}
	b, err := json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": rv}, "status": status})
	if err != nil {
		return nil, fmt.Errorf("device status patch: %w", err)
	}
	return b, nil
}

// deviceBasis returns the status dev has in the API server as far as the
// Writer knows, and its resourceVersion: the Writer's own last write if the
// cache does not show it yet, else the cached one. older are the
// resourceVersions before it that the cache may still show. sure is false
// when the Writer wrote the Device and the cache shows a version it cannot
// place (before or after that write: resourceVersions are not ordered); the
// status is then no reason to skip a write.
func (w *Writer) deviceBasis(dev *api.Device) (st *api.DeviceStatus, rv string, older []string, sure bool) {
	w.devMu.Lock()
	defer w.devMu.Unlock()
	dw := w.devWrites[dev.UID]
	if dw == nil {
		return &dev.Status, dev.ResourceVersion, nil, true
	}
	if slices.Contains(dw.older, dev.ResourceVersion) {
		return &dw.status, dw.rv, slices.Clone(dw.older), true
	}
	delete(w.devWrites, dev.UID)
	if dev.ResourceVersion == dw.rv {
		// The cache caught up.
		return &dev.Status, dev.ResourceVersion, nil, true
	}
	return &dev.Status, dev.ResourceVersion, append(slices.Clone(dw.older), dw.rv), false
}

// rememberDevice keeps the Device as a write returned it until the cache
// shows it; older are the resourceVersions before it the cache may show.
func (w *Writer) rememberDevice(got *api.Device, older []string) {
	if len(older) > maxOlder {
		older = older[len(older)-maxOlder:]
	}
	w.devMu.Lock()
	defer w.devMu.Unlock()
	w.devWrites[got.UID] = &deviceWrite{namespace: got.Namespace, name: got.Name,
		status: got.Status, rv: got.ResourceVersion, older: older}
}

// forgetDeviceWrites drops the remembered writes that the cache shows, and
// those of Devices that are gone.
func (w *Writer) forgetDeviceWrites() {
	w.devMu.Lock()
	defer w.devMu.Unlock()
	for uid, dw := range w.devWrites {
		dev, err := w.lister.Device(dw.namespace, dw.name)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			continue
		case dev.UID == uid && slices.Contains(dw.older, dev.ResourceVersion):
			continue
		}
		delete(w.devWrites, uid)
	}
}
