//go:build integration

package cloudcore

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/tether-edge/tether/protocol"
)

// The API relay against a real API server, with cloudcore's own rights
// (rbac.yaml and policy.yaml): a pod's write is done as the pod's service
// account (allowed what its RBAC allows, refused by the API server what it
// does not), never with cloudcore's or the admin's rights; only for a pod
// bound to the asking node with its UID and service account.
func TestAPIRelayIntegration(t *testing.T) {
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	cp, admin := startControlPlane(t, log)
	applyRBAC(t, admin)
	const ns = "store"
	// writer may create configmaps in its namespace, nothing else.
	storeNamespace(t, admin, ns, "writer", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"configmaps"},
		Verbs: []string{"create"}})
	no := false
	mkPod := func(name, node, sa string) *corev1.Pod {
		p, err := admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa, AutomountServiceAccountToken: &no,
				Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	pos := mkPod("pos", "edge-1", "writer")
	elsewhere := mkPod("elsewhere", "edge-2", "writer")

	// cloudcore's identity, not the admin's, for the TokenRequests and the
	// informer.
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
	defer stop()
	inf.Start(ictx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced) {
		t.Fatal("pods informer did not sync")
	}
	// The relay's API server connection is built from the admin's config:
	// none of its credentials may be used.
	relay, err := newAPIRelay(cp.RESTConfig(), pods.Lister(), tokenRequests{create: func(ctx context.Context, ns, sa string,
		tr *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
		return cc.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	}}, log)
	if err != nil {
		t.Fatal(err)
	}
	write := func(node string, p *corev1.Pod, sa, method, path, query string, body any) *protocol.APIResponse {
		b, _ := json.Marshal(body)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return relay.Relay(rctx, node, &protocol.APIRequest{ID: 1, Namespace: ns, Pod: p.Name, PodUID: string(p.UID), ServiceAccount: sa,
			Method: method, Path: path, Query: query, ContentType: "application/json", Body: b})
	}
	cm := map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "from-edge"},
		"data": map[string]string{"k": "v"}}

	res := write("edge-1", pos, "writer", "POST", "/api/v1/namespaces/store/configmaps", "fieldManager=pos", cm)
	if res.Status != http.StatusCreated {
		t.Fatalf("create a configmap as writer: %d %s", res.Status, res.Body)
	}
	got, err := admin.CoreV1().ConfigMaps(ns).Get(ctx, "from-edge", metav1.GetOptions{})
	if err != nil || got.Data["k"] != "v" {
		t.Fatalf("the configmap in the API server: %+v %v", got, err)
	}
	if len(got.ManagedFields) == 0 || got.ManagedFields[0].Manager != "pos" {
		t.Errorf("managed fields %+v: the query (fieldManager) was not relayed", got.ManagedFields)
	}

	// What writer may not do: the API server refuses it, naming the
	// service account (not cloudcore, not the admin).
	for name, c := range map[string]struct{ method, path string }{
		"create a secret":        {"POST", "/api/v1/namespaces/store/secrets"},
		"update the configmap":   {"PUT", "/api/v1/namespaces/store/configmaps/from-edge"},
		"delete the configmap":   {"DELETE", "/api/v1/namespaces/store/configmaps/from-edge"},
		"create in another ns":   {"POST", "/api/v1/namespaces/default/configmaps"},
		"patch a node":           {"PATCH", "/api/v1/nodes/edge-1"},
		"evict another pod":      {"POST", "/api/v1/namespaces/store/pods/elsewhere/eviction"},
		"patch its pod's status": {"PATCH", "/api/v1/namespaces/store/pods/pos/status"},
	} {
		body := any(cm)
		if c.method == "PATCH" {
			body = map[string]any{}
		}
		res := write("edge-1", pos, "writer", c.method, c.path, "", body)
		if res.Status != http.StatusForbidden || !strings.Contains(string(res.Body), "system:serviceaccount:store:writer") {
			t.Errorf("%s: %d %s, want 403 from the API server for the service account", name, res.Status, res.Body)
		}
	}

	// Attackers: a pod of another node, a forged UID, another service
	// account: refused by the relay (no token asked).
	for name, c := range map[string]struct {
		node string
		pod  *corev1.Pod
		sa   string
	}{
		"another node's pod":      {"edge-1", elsewhere, "writer"},
		"the pod from edge-2":     {"edge-2", pos, "writer"},
		"another service account": {"edge-1", pos, "other"},
		"a forged UID": {"edge-1", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pos", UID: "0000"}},
			"writer"},
	} {
		res := write(c.node, c.pod, c.sa, "POST", "/api/v1/namespaces/store/configmaps", "", cm)
		if res.Status != http.StatusForbidden || !strings.Contains(string(res.Body), "own pods") {
			t.Errorf("%s: %d %s, want the relay's 403", name, res.Status, res.Body)
		}
	}

	// Latency of a relayed write, cloudcore to the API server (dry-run
	// creates, one token cached).
	var d []time.Duration
	for range 100 {
		began := time.Now()
		res := write("edge-1", pos, "writer", "POST", "/api/v1/namespaces/store/configmaps", "dryRun=All",
			map[string]any{"metadata": map[string]any{"generateName": "bench-"}})
		if res.Status != http.StatusCreated {
			t.Fatalf("dry-run create: %d %s", res.Status, res.Body)
		}
		d = append(d, time.Since(began))
	}
	slices.Sort(d)
	t.Logf("relayed write, cloudcore to the API server: p50 %s p99 %s", d[50], d[99])

	// The pod deleted: its token is dead with it; the relay refuses.
	if err := admin.CoreV1().Pods(ns).Delete(ctx, "pos", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		res := write("edge-1", pos, "writer", "POST", "/api/v1/namespaces/store/configmaps", "dryRun=All", cm)
		if res.Status == http.StatusForbidden || res.Status == http.StatusUnauthorized {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a deleted pod's write: %d %s", res.Status, res.Body)
		}
	}
}
