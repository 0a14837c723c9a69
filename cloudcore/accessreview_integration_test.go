//go:build integration

package cloudcore

import (
	"context"
	"io"
	"log/slog"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/tether-edge/tether/protocol"
)

// The edges' access reviews against a real API server, with cloudcore's
// own rights (manifests/cloudcore/rbac.yaml): the answers are the
// cluster's RBAC for the pod's service account, and a node may ask only
// about a pod bound to it, with its UID and service account.
func TestAccessReviewer(t *testing.T) {
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cp, admin := startControlPlane(t, log)
	applyRBAC(t, admin)
	const ns = "store"
	storeNamespace(t, admin, ns, "reader", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"},
		Verbs: []string{"list"}})
	no := false
	pod, err := admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pos"},
		Spec: corev1.PodSpec{NodeName: "edge-1", ServiceAccountName: "reader", AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// cloudcore's identity, not the admin's.
	rc := rest.CopyConfig(cp.RESTConfig())
	rc.Impersonate = rest.ImpersonationConfig{UserName: cloudcoreUser}
	cc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	inf := informers.NewSharedInformerFactory(cc, 0)
	pods := inf.Core().V1().Pods()
	pods.Informer()
	ictx, stop := context.WithCancel(ctx)
	defer inf.Shutdown()
	defer stop() // before Shutdown, which waits for the informers
	inf.Start(ictx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced) {
		t.Fatal("pods informer did not sync")
	}
	rv := &accessReviewer{client: cc, pods: pods.Lister()}
	checks := []protocol.AccessCheck{{Verb: "list", Resource: "pods", Namespace: ns}, {Verb: "list", Resource: "pods"},
		{Verb: "list", Resource: "secrets", Namespace: ns}, {Verb: "get", Resource: "pods", Namespace: ns, Name: "pos"}}
	got, err := rv.Review(ctx, "edge-1", &protocol.AccessReview{Namespace: ns, Pod: "pos", PodUID: string(pod.UID),
		ServiceAccount: "reader", Checks: checks})
	if err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false, false, false}; len(got) != 4 || got[0] != want[0] || got[1] || got[2] || got[3] {
		t.Errorf("answers %v, want %v", got, want)
	}
	for name, r := range map[string]struct {
		node string
		rv   protocol.AccessReview
	}{
		"another node":            {"edge-2", protocol.AccessReview{Namespace: ns, Pod: "pos", PodUID: string(pod.UID), ServiceAccount: "reader"}},
		"another UID":             {"edge-1", protocol.AccessReview{Namespace: ns, Pod: "pos", PodUID: "x", ServiceAccount: "reader"}},
		"another service acct.":   {"edge-1", protocol.AccessReview{Namespace: ns, Pod: "pos", PodUID: string(pod.UID), ServiceAccount: "other"}},
		"a pod that is not there": {"edge-1", protocol.AccessReview{Namespace: ns, Pod: "nope", PodUID: "x", ServiceAccount: "reader"}},
	} {
		r.rv.Checks = checks
		if got, err := rv.Review(ctx, r.node, &r.rv); err == nil {
			t.Errorf("%s: answered %v", name, got)
		}
	}
}

// storeNamespace makes namespace ns with two service accounts, sa and
// "other", and a Role bound to sa only that allows rule.
func storeNamespace(t *testing.T, admin kubernetes.Interface, ns, sa string, rule rbacv1.PolicyRule) {
	t.Helper()
	ctx := t.Context()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{sa, "other"} {
		if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}},
			metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: sa},
		Rules: []rbacv1.PolicyRule{rule}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: sa},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}
