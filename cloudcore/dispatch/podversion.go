package dispatch

import (
	"crypto/sha256"
	"encoding/base64"
	"sync"

	corev1 "k8s.io/api/core/v1"
)

// podVersionPrefix starts every pod's sync version, so that it is never
// mistaken for a resourceVersion (an edge that held a pod by its
// resourceVersion gets it once again, then holds it by its sync version).
const podVersionPrefix = "s1."

// podVersions are the pods' sync versions: the version of a pod as the hub
// and the edge compare it. It changes when anything the edge uses changes
// (spec, labels, annotations, owners, finalizers, deletion, the conditions
// of its readiness gates) and not when only the rest of the status does: the edge writes the status itself, so an update of the
// status alone is not sent back down (it would be the whole pod again, for
// nothing). The pod the edge receives carries the status of that moment.
//
// Kubernetes 1.31 does not bump metadata.generation of pods, so the version
// is a hash of the pod without its status, resourceVersion and managedFields,
// computed once per resourceVersion and kept by UID until the pod is
// deleted. Every replica of cloudcore computes the same version from the
// same pod.
type podVersions struct {
	m sync.Map // UID -> podVersion
}

type podVersion struct {
	rv, v string
}

// get returns p's sync version.
func (pv *podVersions) get(p *corev1.Pod) string {
	if e, ok := pv.m.Load(p.UID); ok && e.(podVersion).rv == p.ResourceVersion {
		return e.(podVersion).v
	}
	v := syncVersion(p)
	pv.m.Store(p.UID, podVersion{rv: p.ResourceVersion, v: v})
	return v
}

// forget drops p's entry (the pod was deleted). A session computing a
// Desired set from the cache just before the deletion may store the entry
// again: one stale entry per such race, kept until the process ends.
func (pv *podVersions) forget(p *corev1.Pod) { pv.m.Delete(p.UID) }

// PodVersion is p's version as the hub sends it and the edge holds it (see
// podVersions): compare it, not p's resourceVersion, with what an edge
// holds.
func PodVersion(p *corev1.Pod) string { return syncVersion(p) }

// syncVersion hashes the protobuf encoding of p without its status,
// resourceVersion and managedFields. The encoding is deterministic (the
// generated code sorts map keys). The conditions of p's readiness gates are
// the exception: another controller sets them, and the edge needs them to
// report the pod Ready (a pod without gates hashes as before).
func syncVersion(p *corev1.Pod) string {
	c := *p // ObjectMeta and Spec are values: the cached pod is not changed
	c.Status = corev1.PodStatus{}
	for _, g := range p.Spec.ReadinessGates {
		for _, cond := range p.Status.Conditions {
			if cond.Type == g.ConditionType {
				c.Status.Conditions = append(c.Status.Conditions, corev1.PodCondition{Type: cond.Type, Status: cond.Status})
			}
		}
	}
	c.ResourceVersion = ""
	c.ManagedFields = nil
	b, err := c.Marshal()
	if err != nil {
		// Cannot happen for a pod the informer decoded; the
		// resourceVersion then is a version that is never stale.
		return p.ResourceVersion
	}
	sum := sha256.Sum256(b)
	return podVersionPrefix + base64.RawURLEncoding.EncodeToString(sum[:16])
}
