//go:build integration

package cloudcore_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tether-edge/tether/cloudcore/autonomy"
	"github.com/tether-edge/tether/controlplane"
	manifests "github.com/tether-edge/tether/manifests/cloudcore"
	"github.com/tether-edge/tether/manifests/crds"
)

const (
	edgeLabel = "node-role.kubernetes.io/edge"
	appNS     = "apps"
	// The policies of policy.yaml.
	nodesPolicy   = "tether-cloudcore-nodes"
	podsPolicy    = "tether-cloudcore-pods"
	edgePolicy    = "tether-cloudcore-edge-nodes"
	secretsPolicy = "tether-cloudcore-secrets"
	crdsPolicy    = "tether-cloudcore-crds"
	tokensPolicy  = "tether-cloudcore-tokens"
	// rbac: refused by RBAC, not by a policy.
	rbac = "rbac"
	// invalid: refused by the API server's validation of the object.
	invalid = "invalid"
)

var (
	dryCreate = metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	dryUpdate = metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}}
	dryPatch  = metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}}
	dryDelete = metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}
)

// TestRights applies rbac.yaml and policy.yaml to a real API server and,
// acting as cloudcore's ServiceAccount, makes a dry-run request for each
// thing cloudcore does (which must pass) and for each thing it must not do
// (which the API server must refuse, by RBAC or by the named policy).
// Rights that no request can probe without doing harm are asked with a
// SelfSubjectAccessReview.
func TestRights(t *testing.T) {
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	admin := kubernetes.NewForConfigOrDie(cp.RESTConfig())
	applyCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := manifests.Apply(applyCtx, admin); err != nil {
		t.Fatal(err)
	}
	// Applying again updates in place.
	if err := manifests.Apply(applyCtx, admin); err != nil {
		t.Fatalf("apply again: %v", err)
	}
	f := setup(t, admin)
	asCC := rest.CopyConfig(cp.RESTConfig())
	asCC.Impersonate = rest.ImpersonationConfig{UserName: manifests.ServiceAccount}
	asCC.WarningHandler = rest.NoWarnings{} // tether-ca's dummy PEM
	cc := kubernetes.NewForConfigOrDie(asCC)
	ccExt := apiextensions.NewForConfigOrDie(asCC)

	// cloudcore/apirelay.go's TokenRequest, for the ServiceAccount of pod
	// on-edge, edited.
	tokenFor := func(edit func(*authenticationv1.TokenRequest)) error {
		p, err := admin.CoreV1().Pods(appNS).Get(ctx, "on-edge", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		secs := int64(600)
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs,
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}}}
		if edit != nil {
			edit(tr)
		}
		_, err = cc.CoreV1().ServiceAccounts(appNS).CreateToken(ctx, "default", tr, metav1.CreateOptions{})
		return err
	}
	unbound := func(tr *authenticationv1.TokenRequest) { tr.Spec.BoundObjectRef = nil }

	// The bindings take a moment to load: wait until each policy refuses
	// a request of its own.
	began := time.Now()
	probes := map[string]func() error{
		nodesPolicy: func() error {
			_, err := cc.CoreV1().Nodes().Create(ctx, node("probe", nil), dryCreate)
			return err
		},
		podsPolicy: func() error {
			_, err := cc.CoreV1().Pods(appNS).Create(ctx, pod("probe", "edge-1", false), dryCreate)
			return err
		},
		edgePolicy: func() error {
			return patchPodStatus(ctx, cc, appNS, "on-worker")
		},
		secretsPolicy: func() error {
			_, err := cc.CoreV1().Secrets("kube-system").Update(ctx, f.ordinary, dryUpdate)
			return err
		},
		crdsPolicy: func() error {
			_, err := ccExt.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd("probes.example.com"), dryCreate)
			return err
		},
		tokensPolicy: func() error { return tokenFor(unbound) },
	}
	for policy, probe := range probes {
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
			err := probe()
			if refusedBy(err, policy) == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("policy %s not in force within a minute: its probe got %v", policy, err)
			}
		}
	}
	t.Logf("policies in force %s after they were applied", time.Since(began).Round(time.Millisecond))

	mirror := func(name, node string, edit func(*corev1.Pod)) error {
		p := pod(name, node, true)
		if edit != nil {
			edit(p)
		}
		_, err := cc.CoreV1().Pods(p.Namespace).Create(ctx, p, dryCreate)
		return err
	}
	patchNode := func(name, patch string, sub ...string) error {
		_, err := cc.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), dryPatch, sub...)
		return err
	}
	patchPod := func(name, patch string, sub ...string) error {
		_, err := cc.CoreV1().Pods(appNS).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), dryPatch, sub...)
		return err
	}
	updateLease := func(ns, name string) error {
		l, err := admin.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		holder := "edge"
		l.Spec.HolderIdentity = &holder
		_, err = cc.CoordinationV1().Leases(ns).Update(ctx, l, dryUpdate)
		return err
	}
	createLease := func(ns, name string) error {
		_, err := cc.CoordinationV1().Leases(ns).Create(ctx, lease(ns, name), dryCreate)
		return err
	}
	updateToken := func(name string, edit func(*corev1.Secret)) error {
		s, err := admin.CoreV1().Secrets("kube-system").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		edit(s)
		_, err = cc.CoreV1().Secrets("kube-system").Update(ctx, s, dryUpdate)
		return err
	}
	createSecret := func(ns, name string, typ corev1.SecretType) error {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: typ,
			Data: map[string][]byte{corev1.TLSCertKey: []byte("cert"), corev1.TLSPrivateKeyKey: []byte("key")}}
		_, err := cc.CoreV1().Secrets(ns).Create(ctx, s, dryCreate)
		return err
	}
	deletePod := func(ns, name string) error {
		p, err := admin.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		grace := int64(0)
		opts := dryDelete
		opts.GracePeriodSeconds, opts.Preconditions = &grace, &metav1.Preconditions{UID: &p.UID}
		return cc.CoreV1().Pods(ns).Delete(ctx, name, opts)
	}
	tolerate := func(name string) error {
		// cloudcore/autonomy's patch.
		p, err := admin.CoreV1().Pods(appNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want, changed := autonomy.Rewrite(p.Spec.Tolerations)
		if !changed {
			t.Fatalf("pod %s: no tolerations to add", name)
		}
		b, _ := json.Marshal(map[string]any{
			"metadata": map[string]any{"uid": p.UID, "resourceVersion": p.ResourceVersion},
			"spec":     map[string]any{"tolerations": want}})
		_, err = cc.CoreV1().Pods(appNS).Patch(ctx, name, types.MergePatchType, b, dryPatch)
		return err
	}
	vol := func(v corev1.VolumeSource) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "v", VolumeSource: v}}
		}
	}

	cases := []struct {
		name string
		do   func() error
		want string // "" (allowed), rbac, or the policy that refuses
	}{
		// The kubelet proxy: delegated authentication and authorization.
		{"review a token (kubelet proxy)", func() error {
			_, err := cc.AuthenticationV1().TokenReviews().Create(ctx,
				&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: "not-a-token"}}, metav1.CreateOptions{})
			return err
		}, ""},
		{"review a user's access to a node (kubelet proxy)", func() error {
			_, err := cc.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
				Spec: authorizationv1.SubjectAccessReviewSpec{User: "someone", ResourceAttributes: &authorizationv1.ResourceAttributes{
					Verb: "get", Resource: "nodes", Subresource: "proxy", Name: "edge-1"}}}, metav1.CreateOptions{})
			return err
		}, ""},
		{"read the cluster's client CA (kubelet proxy)", func() error {
			_, err := cc.CoreV1().ConfigMaps("kube-system").Get(ctx, "extension-apiserver-authentication", metav1.GetOptions{})
			return err
		}, ""},

		// Leases: kube-node-lease only, of edge nodes only.
		{"update a kube-system Lease", func() error { return updateLease("kube-system", "kube-controller-manager") }, rbac},
		{"create a kube-system Lease", func() error { return createLease("kube-system", "edge-1") }, rbac},
		{"update the Lease of a non-edge node", func() error { return updateLease(corev1.NamespaceNodeLease, "worker-1") }, edgePolicy},
		{"create the Lease of a non-edge node", func() error { return createLease(corev1.NamespaceNodeLease, "worker-2") }, edgePolicy},
		{"update the Lease of an edge node", func() error { return updateLease(corev1.NamespaceNodeLease, "edge-1") }, ""},
		{"create the Lease of an edge node", func() error { return createLease(corev1.NamespaceNodeLease, "edge-2") }, ""},
		{"create the leader Lease", func() error { return createLease("tether-system", "tether-cloudcore-leader") }, ""},
		{"update another tether-system Lease", func() error {
			if _, err := admin.CoordinationV1().Leases("tether-system").Create(ctx, lease("tether-system", "other"),
				metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
			return updateLease("tether-system", "other")
		}, rbac},

		// Pods: create mirror pods without references, on edge nodes.
		{"create a mirror pod on an edge node", func() error {
			return mirror("static-edge-1", "edge-1", func(p *corev1.Pod) {
				p.Spec.Volumes = []corev1.Volume{
					{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/app"}}},
					{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
					{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
						Items: []corev1.DownwardAPIVolumeFile{{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}},
				}
				p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "A", Value: "1"},
					{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}}}
			})
		}, ""},
		{"create a mirror pod of a node not registered yet", func() error { return mirror("static-new", "edge-9", nil) }, ""},
		{"create an ordinary pod", func() error {
			_, err := cc.CoreV1().Pods(appNS).Create(ctx, pod("ordinary", "edge-1", false), dryCreate)
			return err
		}, podsPolicy},
		{"create a privileged pod in kube-system with a ServiceAccount", func() error {
			p := pod("evil", "edge-1", false)
			p.Namespace, p.Spec.ServiceAccountName = "kube-system", "admin"
			yes := true
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &yes}
			_, err := cc.CoreV1().Pods(p.Namespace).Create(ctx, p, dryCreate)
			return err
		}, podsPolicy},
		{"create a mirror pod on a non-edge node", func() error { return mirror("static-worker", "worker-1", nil) }, edgePolicy},
		{"create a mirror pod bound to no node", func() error { return mirror("static-unbound", "", nil) }, invalid}, // API validation refuses it first
		{"create a mirror pod with a ConfigMap volume", func() error {
			return mirror("static-cm", "edge-1", vol(corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}))
		}, podsPolicy},
		{"create a mirror pod with a projected ConfigMap", func() error {
			return mirror("static-projected", "edge-1", vol(corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}}}))
		}, podsPolicy},
		{"create a mirror pod with a PersistentVolumeClaim", func() error {
			return mirror("static-pvc", "edge-1", vol(corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}))
		}, podsPolicy},
		{"create a mirror pod with a Secret volume", func() error {
			return mirror("static-secret", "edge-1", vol(corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}))
		}, "secret"}, // the ServiceAccount admission plugin refuses it first
		{"create a mirror pod with an environment variable from a ConfigMap", func() error {
			return mirror("static-env-cm", "edge-1", func(p *corev1.Pod) {
				p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "A", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "a"}}}}
			})
		}, podsPolicy},
		{"create a mirror pod with envFrom a ConfigMap in an init container", func() error {
			return mirror("static-envfrom-cm", "edge-1", func(p *corev1.Pod) {
				c := p.Spec.Containers[0]
				c.Name = "init"
				c.EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}
				p.Spec.InitContainers = []corev1.Container{c}
			})
		}, podsPolicy},
		{"create a mirror pod with a ServiceAccount", func() error {
			return mirror("static-sa", "edge-1", func(p *corev1.Pod) { p.Spec.ServiceAccountName = "default" })
		}, "service account"}, // the ServiceAccount admission plugin refuses it first

		// Pods: status, tolerations and deletion of pods of edge nodes.
		{"patch the status of a pod of an edge node", func() error { return patchPodStatus(ctx, cc, appNS, "on-edge") }, ""},
		{"patch the status of a pod of a non-edge node", func() error { return patchPodStatus(ctx, cc, appNS, "on-worker") }, edgePolicy},
		{"change a pod's labels through its status", func() error {
			return patchPod("on-edge", `{"metadata":{"labels":{"app":"other"}}}`, "status")
		}, podsPolicy},
		{"add disconnect tolerations to a pod of an edge node", func() error { return tolerate("on-edge") }, ""},
		{"add disconnect tolerations to a pod of a non-edge node", func() error { return tolerate("on-worker") }, edgePolicy},
		{"add another toleration", func() error {
			return patchPod("on-edge", `{"spec":{"tolerations":[{"key":"dedicated","operator":"Exists"}]}}`)
		}, podsPolicy},
		{"change a pod's labels", func() error { return patchPod("on-edge", `{"metadata":{"labels":{"app":"other"}}}`) }, podsPolicy},
		{"change a pod's image", func() error {
			return patchPod("on-edge", `{"spec":{"containers":[{"name":"app","image":"evil:latest"}]}}`)
		}, podsPolicy},
		{"delete a pod being deleted on an edge node", func() error { return deletePod(appNS, "deleting-on-edge") }, ""},
		{"delete a mirror pod of an edge node", func() error { return deletePod(appNS, "mirror-on-edge") }, ""},
		{"delete a running pod of an edge node", func() error { return deletePod(appNS, "on-edge") }, podsPolicy},
		{"delete a mirror pod of a non-edge node", func() error { return deletePod(appNS, "mirror-on-worker") }, edgePolicy},
		{"delete a pod being deleted on a non-edge node", func() error { return deletePod(appNS, "deleting-on-worker") }, edgePolicy},

		// Nodes: edge nodes only.
		{"patch the status of an edge node", func() error {
			return patchNode("edge-1", `{"status":{"conditions":[{"type":"Ready","status":"True","reason":"EdgeReady"}]}}`, "status")
		}, ""},
		{"add labels an edge may ask for", func() error {
			return patchNode("edge-1", `{"metadata":{"labels":{"topology.kubernetes.io/zone":"z1","example.com/site":"plant-3"}}}`)
		}, ""},
		{"create an edge node", func() error {
			_, err := cc.CoreV1().Nodes().Create(ctx, node("edge-3", map[string]string{edgeLabel: "", corev1.LabelHostname: "edge-3"}), dryCreate)
			return err
		}, ""},
		{"patch the status of a non-edge node", func() error {
			return patchNode("worker-1", `{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Hijacked"}]}}`, "status")
		}, nodesPolicy},
		{"add the edge label to a non-edge node", func() error {
			return patchNode("worker-1", `{"metadata":{"labels":{"`+edgeLabel+`":""}}}`)
		}, nodesPolicy},
		{"remove the edge label from an edge node", func() error {
			return patchNode("edge-1", `{"metadata":{"labels":{"`+edgeLabel+`":null}}}`)
		}, nodesPolicy},
		{"give an edge node the control-plane role", func() error {
			return patchNode("edge-1", `{"metadata":{"labels":{"node-role.kubernetes.io/control-plane":""}}}`)
		}, nodesPolicy},
		{"change an edge node's spec", func() error { return patchNode("edge-1", `{"spec":{"unschedulable":true}}`) }, nodesPolicy},
		{"create a node without the edge label", func() error {
			_, err := cc.CoreV1().Nodes().Create(ctx, node("worker-9", map[string]string{corev1.LabelHostname: "worker-9"}), dryCreate)
			return err
		}, nodesPolicy},
		{"create an edge node with the control-plane role", func() error {
			_, err := cc.CoreV1().Nodes().Create(ctx, node("edge-4", map[string]string{edgeLabel: "", "node-role.kubernetes.io/control-plane": ""}), dryCreate)
			return err
		}, nodesPolicy},

		// Secrets: tether-ca, and the join tokens.
		{"create the tether-ca Secret", func() error { return createSecret("tether-system", "tether-ca", corev1.SecretTypeTLS) }, ""},
		{"create another Secret in tether-system", func() error { return createSecret("tether-system", "other", corev1.SecretTypeTLS) }, secretsPolicy},
		{"create tether-ca of another type", func() error { return createSecret("tether-system", "tether-ca", corev1.SecretTypeOpaque) }, secretsPolicy},
		{"create a Secret in kube-system", func() error { return createSecret("kube-system", "tether-ca", corev1.SecretTypeTLS) }, rbac},
		{"count down a join token", func() error {
			return updateToken("bootstrap-token-abcdef", func(s *corev1.Secret) { s.Data["tether-uses-left"] = []byte("2") })
		}, ""},
		{"delete a join token", func() error {
			return cc.CoreV1().Secrets("kube-system").Delete(ctx, "bootstrap-token-abcdef", dryDelete)
		}, ""},
		{"update an ordinary kube-system Secret", func() error {
			_, err := cc.CoreV1().Secrets("kube-system").Update(ctx, f.ordinary, dryUpdate)
			return err
		}, secretsPolicy},
		{"delete an ordinary kube-system Secret", func() error { return cc.CoreV1().Secrets("kube-system").Delete(ctx, "ordinary", dryDelete) }, secretsPolicy},
		{"update a bootstrap token not for joining edges", func() error {
			return updateToken("bootstrap-token-k8s123", func(s *corev1.Secret) { s.Data["description"] = []byte("x") })
		}, secretsPolicy},
		{"delete a bootstrap token not for joining edges", func() error {
			return cc.CoreV1().Secrets("kube-system").Delete(ctx, "bootstrap-token-k8s123", dryDelete)
		}, secretsPolicy},
		{"give a join token the authentication usage", func() error {
			return updateToken("bootstrap-token-abcdef", func(s *corev1.Secret) { s.Data["usage-bootstrap-authentication"] = []byte("true") })
		}, secretsPolicy},
		{"give a join token extra groups", func() error {
			return updateToken("bootstrap-token-abcdef", func(s *corev1.Secret) { s.Data["auth-extra-groups"] = []byte("system:masters") })
		}, secretsPolicy},
		{"extend a join token", func() error {
			return updateToken("bootstrap-token-abcdef", func(s *corev1.Secret) { s.Data["expiration"] = []byte("2099-01-01T00:00:00Z") })
		}, secretsPolicy},
		{"change a join token's secret", func() error {
			return updateToken("bootstrap-token-abcdef", func(s *corev1.Secret) { s.Data["token-secret"] = []byte("fedcba9876543210") })
		}, secretsPolicy},
		{"drop a join token's usage", func() error {
			return updateToken("bootstrap-token-abcdef", func(s *corev1.Secret) { delete(s.Data, "usage-bootstrap-tether-join") })
		}, secretsPolicy},
		{"update a Secret in another namespace", func() error {
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "app"}}
			_, err := cc.CoreV1().Secrets(appNS).Update(ctx, s, dryUpdate)
			return err
		}, rbac},

		// CRDs: Tether's own only.
		{"create Tether's CRDs", func() error {
			all, err := crds.CRDs()
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range all {
				if _, err := ccExt.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, c, dryCreate); err != nil {
					return err
				}
			}
			return nil
		}, ""},
		{"create another CRD", func() error {
			_, err := ccExt.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd("widgets.example.com"), dryCreate)
			return err
		}, crdsPolicy},

		// Service-account tokens (the API relay): bound to a pod, short,
		// for the API server only.
		{"ask a token of a pod's service account, bound to the pod", func() error { return tokenFor(nil) }, ""},
		{"ask a token of the longest life allowed", func() error {
			return tokenFor(func(tr *authenticationv1.TokenRequest) { secs := int64(3600); tr.Spec.ExpirationSeconds = &secs })
		}, ""},
		{"ask a token bound to nothing", func() error { return tokenFor(unbound) }, tokensPolicy},
		{"ask a token of two hours", func() error {
			return tokenFor(func(tr *authenticationv1.TokenRequest) { secs := int64(7200); tr.Spec.ExpirationSeconds = &secs })
		}, tokensPolicy},
		// The API server's default, filled in before the policy sees it, is
		// an hour.
		{"ask a token without an expiration (the API server's default)", func() error {
			return tokenFor(func(tr *authenticationv1.TokenRequest) { tr.Spec.ExpirationSeconds = nil })
		}, ""},
		{"ask a token for another audience", func() error {
			return tokenFor(func(tr *authenticationv1.TokenRequest) { tr.Spec.Audiences = []string{"vault"} })
		}, tokensPolicy},
		{"ask a token for the API server and another audience", func() error {
			return tokenFor(func(tr *authenticationv1.TokenRequest) {
				tr.Spec.Audiences = []string{"https://kubernetes.default.svc.cluster.local", "vault"}
			})
		}, tokensPolicy},
		{"ask a token bound to a Secret", func() error {
			return tokenFor(func(tr *authenticationv1.TokenRequest) {
				tr.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: "s", UID: "u"}
			})
		}, tokensPolicy},
		{"ask a token of kube-system's admin, bound to nothing", func() error {
			secs := int64(600)
			_, err := cc.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, "admin",
				&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs}}, metav1.CreateOptions{})
			return err
		}, tokensPolicy},

		// Events, anywhere.
		{"create an event", func() error {
			ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "on-edge.1"},
				InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: appNS, Name: "on-edge"}, Reason: "Started", Type: corev1.EventTypeNormal}
			_, err := cc.CoreV1().Events(appNS).Create(ctx, ev, dryCreate)
			return err
		}, ""},
	}
	for _, c := range cases {
		err := c.do()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v, want it allowed", c.name, err)
		case c.want == "":
		case c.want == rbac:
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "cannot") {
				t.Errorf("%s: %v, want Forbidden by RBAC", c.name, err)
			}
		case c.want == invalid:
			if !apierrors.IsInvalid(err) {
				t.Errorf("%s: %v, want Invalid", c.name, err)
			}
		case strings.HasPrefix(c.want, "tether-"):
			if err := refusedBy(err, c.want); err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
		default:
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: %v, want Forbidden naming %q", c.name, err, c.want)
			}
		}
	}

	// What dispatch reads: Services and EndpointSlices, cluster-wide.
	for _, ra := range []authorizationv1.ResourceAttributes{
		{Verb: "list", Resource: "services"},
		{Verb: "watch", Resource: "services"},
		{Verb: "get", Resource: "services", Namespace: appNS},
		{Verb: "list", Group: "discovery.k8s.io", Resource: "endpointslices"},
		{Verb: "watch", Group: "discovery.k8s.io", Resource: "endpointslices"},
	} {
		review, err := cc.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !review.Status.Allowed {
			t.Errorf("cloudcore may not %s %s/%s in %q", ra.Verb, ra.Group, ra.Resource, ra.Namespace)
		}
	}

	// What no request can probe without harm: RBAC alone must refuse it.
	for _, ra := range []authorizationv1.ResourceAttributes{
		{Verb: "create", Resource: "services", Namespace: appNS},
		{Verb: "update", Resource: "services", Namespace: appNS},
		{Verb: "delete", Resource: "services", Namespace: appNS},
		{Verb: "create", Group: "discovery.k8s.io", Resource: "endpointslices", Namespace: appNS},
		{Verb: "update", Group: "discovery.k8s.io", Resource: "endpointslices", Namespace: appNS},
		{Verb: "list", Resource: "endpoints"},
		{Verb: "create", Resource: "pods", Subresource: "exec", Namespace: "kube-system"},
		{Verb: "create", Resource: "pods", Subresource: "attach", Namespace: appNS},
		{Verb: "create", Resource: "pods", Subresource: "portforward", Namespace: appNS},
		{Verb: "create", Resource: "pods", Subresource: "eviction", Namespace: appNS},
		{Verb: "create", Resource: "pods", Subresource: "binding", Namespace: appNS},
		{Verb: "patch", Resource: "pods", Subresource: "ephemeralcontainers", Namespace: appNS},
		{Verb: "deletecollection", Resource: "pods", Namespace: appNS},
		{Verb: "update", Resource: "pods", Namespace: appNS},
		{Verb: "delete", Resource: "nodes"},
		{Verb: "get", Resource: "nodes", Subresource: "proxy"},
		{Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: "kube-system", Name: "kube-controller-manager"},
		{Verb: "delete", Group: "coordination.k8s.io", Resource: "leases", Namespace: corev1.NamespaceNodeLease},
		{Verb: "update", Resource: "secrets", Namespace: appNS},
		{Verb: "create", Resource: "secrets", Namespace: appNS},
		{Verb: "impersonate", Resource: "serviceaccounts"},
		{Verb: "impersonate", Resource: "users"},
		{Verb: "update", Resource: "configmaps", Namespace: "kube-system"},
		{Verb: "escalate", Group: "rbac.authorization.k8s.io", Resource: "clusterroles"},
		{Verb: "bind", Group: "rbac.authorization.k8s.io", Resource: "clusterroles"},
		{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings"},
		{Verb: "delete", Group: "admissionregistration.k8s.io", Resource: "validatingadmissionpolicybindings"},
		{Verb: "update", Group: "admissionregistration.k8s.io", Resource: "validatingadmissionpolicies"},
		{Verb: "delete", Group: "apiextensions.k8s.io", Resource: "customresourcedefinitions", Name: "devices.devices.tether.io"},
		{Verb: "create", Group: "certificates.k8s.io", Resource: "certificatesigningrequests"},
	} {
		review, err := cc.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx,
			&authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &ra}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if review.Status.Allowed {
			t.Errorf("cloudcore may %s %s/%s %s in %q", ra.Verb, ra.Resource, ra.Subresource, ra.Name, ra.Namespace)
		}
	}
}

// refusedBy returns nil if err is policy's Forbidden, by one of its
// validations: not because an expression failed or the binding is not
// ready (its Node informer not synced), which a failurePolicy of Fail
// turns into a refusal too.
func refusedBy(err error, policy string) error {
	switch {
	case err == nil:
		return errors.New("allowed, want refused by " + policy)
	case !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "ValidatingAdmissionPolicy '"+policy+"'"):
		return errors.New(err.Error() + ", want Forbidden by " + policy)
	case strings.Contains(err.Error(), "resulted in error"), strings.Contains(err.Error(), "failed to configure"):
		return errors.New(err.Error() + ", want refused by a validation of " + policy + ", not by an error")
	}
	return nil
}

// fixture holds what setup made that the cases need.
type fixture struct {
	ordinary *corev1.Secret
}

// setup makes, as the administrator: the edge nodes edge-1 and edge-2, the
// non-edge nodes worker-1 and worker-2; the Leases of edge-1 and worker-1; pods of each node
// (running, being deleted, mirror); a ServiceAccount "admin" in
// kube-system; an ordinary Secret, a join token and a kubeadm bootstrap
// token in kube-system.
func setup(t *testing.T, admin kubernetes.Interface) fixture {
	t.Helper()
	ctx := t.Context()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(admin.CoreV1().Nodes().Create(ctx, node("edge-1", map[string]string{edgeLabel: ""}), metav1.CreateOptions{}))
	must(admin.CoreV1().Nodes().Create(ctx, node("edge-2", map[string]string{edgeLabel: ""}), metav1.CreateOptions{}))
	must(admin.CoreV1().Nodes().Create(ctx, node("worker-1", map[string]string{"node-role.kubernetes.io/worker": ""}), metav1.CreateOptions{}))
	must(admin.CoreV1().Nodes().Create(ctx, node("worker-2", nil), metav1.CreateOptions{}))
	for _, l := range []*coordinationv1.Lease{
		lease("kube-system", "kube-controller-manager"),
		lease(corev1.NamespaceNodeLease, "edge-1"),
		lease(corev1.NamespaceNodeLease, "worker-1"),
	} {
		must(admin.CoordinationV1().Leases(l.Namespace).Create(ctx, l, metav1.CreateOptions{}))
	}
	must(admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appNS}}, metav1.CreateOptions{}))
	// Without kube-controller-manager nobody makes the ServiceAccounts
	// that ordinary pods need.
	for _, sa := range []*corev1.ServiceAccount{
		{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "default"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "admin"}},
	} {
		must(admin.CoreV1().ServiceAccounts(sa.Namespace).Create(ctx, sa, metav1.CreateOptions{}))
	}
	for _, p := range []*corev1.Pod{
		pod("on-edge", "edge-1", false), pod("on-worker", "worker-1", false),
		pod("deleting-on-edge", "edge-1", false), pod("deleting-on-worker", "worker-1", false),
		pod("mirror-on-edge", "edge-1", true), pod("mirror-on-worker", "worker-1", true),
	} {
		must(admin.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}))
	}
	// A pod bound to a node is deleted gracefully: it stays, being deleted.
	for _, name := range []string{"deleting-on-edge", "deleting-on-worker"} {
		if err := admin.CoreV1().Pods(appNS).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f := fixture{ordinary: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "ordinary"},
		Data: map[string][]byte{"password": []byte("hunter2")}}}
	for _, s := range []*corev1.Secret{
		f.ordinary,
		{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "bootstrap-token-abcdef"},
			Type: corev1.SecretTypeBootstrapToken,
			Data: map[string][]byte{"token-id": []byte("abcdef"), "token-secret": []byte("0123456789abcdef"),
				"expiration": []byte("2030-01-01T00:00:00Z"), "usage-bootstrap-tether-join": []byte("true"), "tether-uses-left": []byte("3")}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "bootstrap-token-k8s123"},
			Type: corev1.SecretTypeBootstrapToken,
			Data: map[string][]byte{"token-id": []byte("k8s123"), "token-secret": []byte("0123456789abcdef"),
				"usage-bootstrap-authentication": []byte("true"), "usage-bootstrap-signing": []byte("true")}},
	} {
		must(admin.CoreV1().Secrets(s.Namespace).Create(ctx, s, metav1.CreateOptions{}))
	}
	return f
}

func node(name string, labels map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func lease(ns, name string) *coordinationv1.Lease {
	holder, secs := name, int32(40)
	return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs}}
}

// pod returns a pod of appNS bound to node ("" for none), a mirror pod if
// mirror.
func pod(name, node string, mirror bool) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}}
	if mirror {
		p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "0123abcd"}
	}
	return p
}

func crd(name string) *apiextensionsv1.CustomResourceDefinition {
	plural, group, _ := strings.Cut(name, ".")
	return &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{Group: group, Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: plural, Kind: "Widget"},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{Type: "object"}}}}}}
}

// patchPodStatus patches a pod's status as cloudcore/status does: a
// strategic merge patch with the pod's UID as a precondition.
func patchPodStatus(ctx context.Context, c kubernetes.Interface, ns, name string) error {
	p, err := c.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	patch := `{"metadata":{"uid":"` + string(p.UID) + `"},"status":{"phase":"Running","podIP":"10.0.0.7"}}`
	_, err = c.CoreV1().Pods(ns).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), dryPatch, "status")
	return err
}
