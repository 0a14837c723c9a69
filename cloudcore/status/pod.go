package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"

	"github.com/tether-edge/tether/protocol"
)

// writePodStatus patches the status of a pod bound to node. With an order
// (o not zero) the write is fenced (fence.go).
func (w *Writer) writePodStatus(ctx context.Context, node string, o protocol.StatusOrder, m *protocol.PodStatus) error {
	if m == nil || len(m.Status) == 0 {
		return reject(errors.New("pod status is empty"))
	}
	status, err := protocol.DecodePodStatus(m.Status)
	if err != nil {
		return reject(err)
	}
	pod, err := w.lister.Pod(m.Namespace, m.Name)
	switch {
	case apierrors.IsNotFound(err):
		return reject(fmt.Errorf("pod %s/%s is gone", m.Namespace, m.Name))
	case err != nil:
		return fmt.Errorf("get pod %s/%s: %w", m.Namespace, m.Name, err)
	}
	fenced := !o.IsZero()
	for attempt := 1; ; attempt++ {
		if err := ownPod(node, pod, m.UID); err != nil {
			return err
		}
		var rec protocol.StatusOrder
		var recorded bool
		if fenced {
			if rec, recorded = w.recordedFence(pod.Annotations[FenceAnnotation], pod.Namespace+"/"+pod.Name); recorded && !rec.Before(o) {
				if o == rec {
					w.stats.unchanged.Add(1) // written already: a resend
				} else {
					w.stats.stale.Add(1)
					w.log.Info("stale pod status dropped: a newer report of the pod was written", slog.String("pod", pod.Namespace+"/"+pod.Name),
						slog.String("order", formatFence(o)), slog.String("recorded", formatFence(rec)))
				}
				return nil
			}
		}
		patch, changed, err := podStatusPatch(pod.UID, &pod.Status, status.DeepCopy())
		if err != nil {
			return reject(err)
		}
		// Unchanged needs no write, unfenced, or when the recorded report
		// is the edge's previous one of the pod: no other report lies
		// between them that a replica left behind could still write.
		if !changed && (!fenced || recorded && m.Prev != 0 && rec == protocol.StatusOrder{Epoch: o.Epoch, Seq: m.Prev}) {
			w.stats.unchanged.Add(1)
			return nil
		}
		if fenced {
			if patch, err = fencedPatch(patch, pod.ResourceVersion, o); err != nil {
				return reject(err)
			}
		}
		w.log.Debug("patching pod status", slog.String("pod", pod.Namespace+"/"+pod.Name),
			slog.String("resourceVersion", pod.ResourceVersion), slog.String("patch", string(patch)))
		_, err = w.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
		// When the UID precondition fails (the pod was deleted and made again)
		// the API server answers Invalid (metadata.uid is immutable), which
		// classify rejects.
		switch {
		case fenced && apierrors.IsConflict(err) && attempt < fenceAttempts:
			// Changed since read: read it from the API server (the cache
			// may lag) and decide again.
			w.stats.fenceConflicts.Add(1)
			pod, err = w.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				return reject(fmt.Errorf("pod %s/%s is gone: %w", m.Namespace, m.Name, err))
			case err != nil:
				return fmt.Errorf("get pod %s/%s: %w", m.Namespace, m.Name, err)
			}
			continue
		case apierrors.IsNotFound(err):
			return reject(fmt.Errorf("pod %s/%s is gone: %w", pod.Namespace, pod.Name, err))
		case err != nil:
			return fmt.Errorf("patch pod %s/%s status: %w", pod.Namespace, pod.Name, err)
		}
		if changed {
			w.stats.podStatuses.Add(1)
		} else {
			w.stats.fenceOnly.Add(1)
		}
		return nil
	}
}

// ownPod returns a rejection unless pod has the UID the edge names, and a
// refusal (RefusedNotOwnPod) unless it is bound to node.
func ownPod(node string, pod *corev1.Pod, uid string) error {
	if pod.Spec.NodeName != node {
		return refuse(RefusedNotOwnPod, fmt.Errorf("pod %s/%s is bound to node %q, not %s", pod.Namespace, pod.Name, pod.Spec.NodeName, node))
	}
	if string(pod.UID) != uid {
		return reject(fmt.Errorf("pod %s/%s has uid %s, not %s", pod.Namespace, pod.Name, pod.UID, uid))
	}
	return nil
}

// kubeletConditions are the pod conditions the node owns. Others (readiness
// gates, DisruptionTarget and the like) belong to other writers.
var kubeletConditions = []corev1.PodConditionType{
	corev1.PodScheduled, corev1.PodReady, corev1.PodInitialized, corev1.ContainersReady,
	corev1.PodReadyToStartContainers,
}

// podStatusPatch returns the strategic merge patch from old to the status the
// edge reported, with the pod UID as a precondition, like the kubelet's
// PatchPodStatus, and whether it changes anything. Fields the node does not
// own are kept when the edge left them out: conditions of other writers, the
// QoS class, the nominated node and the resource claim statuses. reported is
// modified.
func podStatusPatch(uid types.UID, old, reported *corev1.PodStatus) (patch []byte, changed bool, err error) {
	for _, c := range old.Conditions {
		if !slices.Contains(kubeletConditions, c.Type) &&
			!slices.ContainsFunc(reported.Conditions, func(r corev1.PodCondition) bool { return r.Type == c.Type }) {
			reported.Conditions = append(reported.Conditions, c)
		}
	}
	if reported.QOSClass == "" {
		reported.QOSClass = old.QOSClass
	}
	if reported.NominatedNodeName == "" {
		reported.NominatedNodeName = old.NominatedNodeName
	}
	if len(reported.ResourceClaimStatuses) == 0 {
		reported.ResourceClaimStatuses = old.ResourceClaimStatuses
	}

	oldJSON, err := json.Marshal(&corev1.Pod{Status: *old})
	if err != nil {
		return nil, false, fmt.Errorf("pod status patch: %w", err)
	}
	// The UID only in the new object makes it appear in the patch, where the
	// API server takes it as a precondition.
	newJSON, err := json.Marshal(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: uid}, Status: *reported})
	if err != nil {
		return nil, false, fmt.Errorf("pod status patch: %w", err)
	}
	patch, err = strategicpatch.CreateTwoWayMergePatch(oldJSON, newJSON, corev1.Pod{})
	if err != nil {
		return nil, false, fmt.Errorf("pod status patch: %w", err)
	}
	uidOnly, err := json.Marshal(map[string]map[string]types.UID{"metadata": {"uid": uid}})
	if err != nil {
		return nil, false, fmt.Errorf("pod status patch: %w", err)
	}
	return patch, !bytes.Equal(patch, uidOnly), nil
}

// deletePod deletes a terminated pod bound to node, at once and only if it
// still has the UID the edge names. A pod that is gone counts as deleted.
func (w *Writer) deletePod(ctx context.Context, node string, m *protocol.PodTerminated) error {
	if m == nil {
		return reject(errors.New("pod terminated message is empty"))
	}
	pod, err := w.lister.Pod(m.Namespace, m.Name)
	switch {
	case apierrors.IsNotFound(err):
		w.stats.unchanged.Add(1)
		return nil
	case err != nil:
		return fmt.Errorf("get pod %s/%s: %w", m.Namespace, m.Name, err)
	case string(pod.UID) != m.UID:
		// A pod of the same name replaced it: the one the edge ran is gone.
		w.stats.unchanged.Add(1)
		return nil
	}
	if err := ownPod(node, pod, m.UID); err != nil {
		return err
	}
	if pod.DeletionTimestamp == nil {
		return reject(fmt.Errorf("pod %s/%s is not being deleted", pod.Namespace, pod.Name))
	}
	grace := int64(0)
	uid := pod.UID
	err = w.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &grace,
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		// Gone, or replaced by a pod of the same name (the UID precondition
		// failed): either way the pod the edge ran is no more.
		w.stats.unchanged.Add(1)
		return nil
	case err != nil:
		return fmt.Errorf("delete pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	w.stats.podDeletes.Add(1)
	return nil
}
