package status

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

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
// A mirror pod that NodeRestriction would not let a kubelet create is
// refused (RefusedMirrorForbidden; see checkMirrorPod).
func (w *Writer) MirrorPod(node string, m *protocol.MirrorPod, done func(error)) {
	var id string
	if m != nil {
		id = m.Namespace + "/" + m.Name
	}
	w.enqueue(key{kind: kindMirrorPod, node: node, id: id}, m, done)
}

// writeMirrorPod creates, replaces or deletes a mirror pod of n, the node's
// Node. A mirror pod to create must pass checkMirrorPod; it is created owned
// by the Node, so that deleting the Node (which revokes it) deletes its
// mirror pods too.
func (w *Writer) writeMirrorPod(ctx context.Context, n *corev1.Node, m *protocol.MirrorPod) error {
	if m == nil {
		return reject(errors.New("mirror pod message is empty"))
	}
	node := n.Name
	cur, err := w.lister.Pod(m.Namespace, m.Name)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("get pod %s/%s: %w", m.Namespace, m.Name, err)
	}
	if apierrors.IsNotFound(err) {
		cur = nil
	}
	if cur != nil {
		if _, mirror := cur.Annotations[MirrorAnnotation]; !mirror || cur.Spec.NodeName != node {
			return refuse(RefusedMirrorForbidden, fmt.Errorf("pod %s/%s exists and is not a mirror pod of node %s", m.Namespace, m.Name, node))
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
	if want.Namespace != m.Namespace || want.Name != m.Name {
		return reject(fmt.Errorf("mirror pod %s/%s does not match its message's name %s/%s", want.Namespace, want.Name, m.Namespace, m.Name))
	}
	if reasons := checkMirrorPod(n, want, w.cfg.mirrorNamespaceAllowed); len(reasons) > 0 {
		return refuse(RefusedMirrorForbidden, fmt.Errorf("mirror pod %s/%s: %s", want.Namespace, want.Name, strings.Join(reasons, "; ")))
	}
	hash := want.Annotations[MirrorAnnotation]
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
	// What checkMirrorPod let through of a service account: the default
	// one without a token, which the API server refuses to name in a
	// mirror pod.
	want.Spec.ServiceAccountName, want.Spec.DeprecatedServiceAccount = "", ""
	if n.UID != "" {
		yes := true
		want.OwnerReferences = []metav1.OwnerReference{{APIVersion: corev1.SchemeGroupVersion.String(), Kind: "Node",
			Name: node, UID: n.UID, Controller: &yes}}
	}
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

// checkMirrorPod returns why node n may not create mirror pod p, or
// nothing. The rules are the NodeRestriction admission plugin's for a
// kubelet's mirror pods, with the service account admission plugin's, so
// that a node can use a mirror pod neither to reach objects it does not hold
// nor to place a pod on another node:
//
//   - the kubernetes.io/config.mirror annotation is set, spec.nodeName is
//     the node, the namespace is allowed (Config.MirrorNamespaces);
//   - no owner but the Node itself (a controller reference, without
//     blockOwnerDeletion); the Writer sets that reference anyway;
//   - no service account: serviceAccountName is empty, or "default" with
//     automountServiceAccountToken false (then cleared), and
//     automountServiceAccountToken is never true;
//   - no reference to a secret (volumes of any type, env, envFrom, image
//     pull secrets), a configmap (volumes, env, envFrom), a
//     persistentvolumeclaim, or a resource claim; no projected volume (a
//     service account token, a cluster trust bundle, secrets or
//     configmaps) and no ephemeral volume (it creates a claim).
//
// Privileged containers, host namespaces (hostNetwork, hostPID, hostIPC)
// and hostPath volumes are allowed, as NodeRestriction allows them: a
// static pod runs on the edge whatever the cloud thinks of it, and the
// mirror only shows it. Pod Security admission of the namespace still
// applies to the mirror pod in the API server.
func checkMirrorPod(n *corev1.Node, p *corev1.Pod, namespaceAllowed func(string) bool) []string {
	var reasons []string
	add := func(format string, args ...any) { reasons = append(reasons, fmt.Sprintf(format, args...)) }
	node := n.Name
	if hash, ok := p.Annotations[MirrorAnnotation]; !ok || hash == "" {
		add("it has no %s annotation", MirrorAnnotation)
	}
	if p.Spec.NodeName != node {
		add("spec.nodeName is %q, not the node %s", p.Spec.NodeName, node)
	}
	if !namespaceAllowed(p.Namespace) {
		add("namespace %s is not allowed for mirror pods", p.Namespace)
	}
	switch len(p.OwnerReferences) {
	case 0:
	case 1:
		o := p.OwnerReferences[0]
		switch {
		case o.APIVersion != corev1.SchemeGroupVersion.String() || o.Kind != "Node" || o.Name != node ||
			o.UID != "" && o.UID != n.UID:
			add("it is owned by %s %s (%s), not by its Node", o.Kind, o.Name, o.APIVersion)
		case o.Controller != nil && !*o.Controller:
			add("its owner reference to its Node is not a controller reference")
		case o.BlockOwnerDeletion != nil && *o.BlockOwnerDeletion:
			add("its owner reference sets blockOwnerDeletion")
		}
	default:
		add("it has %d owner references; only its Node may own it", len(p.OwnerReferences))
	}

	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = p.Spec.DeprecatedServiceAccount
	}
	automount := p.Spec.AutomountServiceAccountToken
	switch {
	case sa != "" && sa != "default":
		add("it references service account %q", sa)
	case sa == "default" && (automount == nil || *automount):
		add("it uses service account \"default\" without automountServiceAccountToken: false")
	case automount != nil && *automount:
		add("automountServiceAccountToken is true")
	}

	if names := mirrorRefs(p, secretNames); len(names) > 0 {
		add("it references secrets %s", strings.Join(names, ", "))
	}
	if names := mirrorRefs(p, configMapNames); len(names) > 0 {
		add("it references configmaps %s", strings.Join(names, ", "))
	}
	for _, v := range p.Spec.Volumes {
		switch {
		case v.Projected != nil:
			add("volume %q is a projected volume", v.Name)
		case v.PersistentVolumeClaim != nil:
			add("volume %q references persistentvolumeclaim %s", v.Name, v.PersistentVolumeClaim.ClaimName)
		case v.Ephemeral != nil:
			add("volume %q is an ephemeral volume, which creates a persistentvolumeclaim", v.Name)
		}
	}
	if len(p.Spec.ResourceClaims) > 0 {
		add("it references resource claims")
	}
	return reasons
}

// mirrorRefs returns the sorted names visit finds in p.
func mirrorRefs(p *corev1.Pod, visit func(p *corev1.Pod, add func(string))) []string {
	var names []string
	visit(p, func(name string) {
		if name != "" && !slices.Contains(names, name) {
			names = append(names, name)
		}
	})
	slices.Sort(names)
	return names
}

// allEnv calls f with the env and envFrom of every container of p: init,
// regular and ephemeral.
func allEnv(p *corev1.Pod, f func(envFrom []corev1.EnvFromSource, env []corev1.EnvVar)) {
	for _, c := range p.Spec.InitContainers {
		f(c.EnvFrom, c.Env)
	}
	for _, c := range p.Spec.Containers {
		f(c.EnvFrom, c.Env)
	}
	for _, c := range p.Spec.EphemeralContainers {
		f(c.EnvFrom, c.Env)
	}
}

// secretNames calls add with the name of every secret p references, as
// Kubernetes' VisitPodSecretNames finds them.
func secretNames(p *corev1.Pod, add func(string)) {
	ref := func(r *corev1.LocalObjectReference) {
		if r != nil {
			add(r.Name)
		}
	}
	for _, s := range p.Spec.ImagePullSecrets {
		add(s.Name)
	}
	allEnv(p, func(envFrom []corev1.EnvFromSource, env []corev1.EnvVar) {
		for _, e := range envFrom {
			if e.SecretRef != nil {
				add(e.SecretRef.Name)
			}
		}
		for _, e := range env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				add(e.ValueFrom.SecretKeyRef.Name)
			}
		}
	})
	for _, v := range p.Spec.Volumes {
		s := &v.VolumeSource
		switch {
		case s.Secret != nil:
			add(s.Secret.SecretName)
		case s.Projected != nil:
			for _, src := range s.Projected.Sources {
				if src.Secret != nil {
					add(src.Secret.Name)
				}
			}
		case s.AzureFile != nil:
			add(s.AzureFile.SecretName)
		case s.CephFS != nil:
			ref(s.CephFS.SecretRef)
		case s.Cinder != nil:
			ref(s.Cinder.SecretRef)
		case s.FlexVolume != nil:
			ref(s.FlexVolume.SecretRef)
		case s.ISCSI != nil:
			ref(s.ISCSI.SecretRef)
		case s.RBD != nil:
			ref(s.RBD.SecretRef)
		case s.ScaleIO != nil:
			ref(s.ScaleIO.SecretRef)
		case s.StorageOS != nil:
			ref(s.StorageOS.SecretRef)
		case s.CSI != nil:
			ref(s.CSI.NodePublishSecretRef)
		}
	}
}

// configMapNames calls add with the name of every configmap p references.
func configMapNames(p *corev1.Pod, add func(string)) {
	allEnv(p, func(envFrom []corev1.EnvFromSource, env []corev1.EnvVar) {
		for _, e := range envFrom {
			if e.ConfigMapRef != nil {
				add(e.ConfigMapRef.Name)
			}
		}
		for _, e := range env {
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
				add(e.ValueFrom.ConfigMapKeyRef.Name)
			}
		}
	})
	for _, v := range p.Spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			add(v.ConfigMap.Name)
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.ConfigMap != nil {
					add(src.ConfigMap.Name)
				}
			}
		}
	}
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
