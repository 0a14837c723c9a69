package status

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/protocol"
)

// MirrorAnnotation marks a mirror pod; its value is the static pod's config
// hash. The name is the kubelet's, so that kubectl and controllers treat
// Tether's mirror pods as they treat a kubelet's.
const MirrorAnnotation = corev1.MirrorPodAnnotationKey

// MirrorPod makes the mirror of one of the node's static pods match what the
// edge asks for: created, replaced when its config hash changed, or deleted.
func (w *Writer) MirrorPod(node string, m *protocol.MirrorPod, done func(error)) {
	var id string
	if m != nil {
		id = m.Namespace + "/" + m.Name
	}
	w.enqueue(key{kind: kindMirrorPod, node: node, id: id}, m, done)
}

func (w *Writer) writeMirrorPod(ctx context.Context, node string, m *protocol.MirrorPod) error {
	if m == nil {
		return reject(errors.New("mirror pod message is empty"))
	}
	cur, err := w.lister.Pod(m.Namespace, m.Name)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("get pod %s/%s: %w", m.Namespace, m.Name, err)
	}
	if apierrors.IsNotFound(err) {
		cur = nil
	}
	if cur != nil {
		if _, mirror := cur.Annotations[MirrorAnnotation]; !mirror || cur.Spec.NodeName != node {
			return reject(fmt.Errorf("pod %s/%s exists and is not a mirror pod of node %s", m.Namespace, m.Name, node))
		}
	}
	if m.Delete {
		if cur == nil {
			w.stats.unchanged.Add(1)
			return nil
		}
		return w.deleteMirror(ctx, cur)
	}
	want, err := protocol.DecodePod(m.Pod)
	if err != nil {
		return reject(err)
	}
	hash, ok := want.Annotations[MirrorAnnotation]
	switch {
	case !ok || hash == "":
		return reject(fmt.Errorf("mirror pod %s/%s has no %s annotation", m.Namespace, m.Name, MirrorAnnotation))
	case want.Spec.NodeName != node || want.Namespace != m.Namespace || want.Name != m.Name:
		return reject(fmt.Errorf("mirror pod %s/%s does not match node %s or its own name", want.Namespace, want.Name, node))
	}
	if cur != nil {
		if cur.Annotations[MirrorAnnotation] == hash && cur.DeletionTimestamp == nil {
			w.stats.unchanged.Add(1)
			return nil
		}
		// The static pod changed: the kubelet, too, replaces the mirror.
		if err := w.deleteMirror(ctx, cur); err != nil {
			return err
		}
	}
	want.ResourceVersion, want.UID = "", ""
	if _, err := w.client.CoreV1().Pods(want.Namespace).Create(ctx, want, metav1.CreateOptions{}); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// The informer has not seen a mirror created a moment ago, or
			// an old one is still going: ask the API server itself.
			live, gerr := w.client.CoreV1().Pods(want.Namespace).Get(ctx, want.Name, metav1.GetOptions{})
			if gerr == nil && live.Annotations[MirrorAnnotation] == hash && live.Spec.NodeName == node && live.DeletionTimestamp == nil {
				w.stats.unchanged.Add(1)
				return nil
			}
			return fmt.Errorf("create mirror pod %s/%s: a pod of that name still exists: %w", want.Namespace, want.Name, err)
		}
		return fmt.Errorf("create mirror pod %s/%s: %w", want.Namespace, want.Name, err)
	}
	w.stats.mirrorWrites.Add(1)
	return nil
}

func (w *Writer) deleteMirror(ctx context.Context, cur *corev1.Pod) error {
	grace := int64(0)
	uid := cur.UID
	err := w.client.CoreV1().Pods(cur.Namespace).Delete(ctx, cur.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &grace, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete mirror pod %s/%s: %w", cur.Namespace, cur.Name, err)
	}
	w.stats.mirrorWrites.Add(1)
	return nil
}
