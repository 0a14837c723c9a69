//go:build integration

package e2e

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/edgecore/nodestatus"
	"github.com/tether-edge/tether/testimages"
)

var inClusterImage struct {
	once sync.Once
	err  error
}

// importInClusterImage builds the client-go test program and imports its
// image into the private containerd, once per run.
func importInClusterImage(t *testing.T) {
	t.Helper()
	ctd := containerd(t)
	inClusterImage.once.Do(func() {
		files, err := testimages.BuildInClusterClient(t.Context(), t.TempDir())
		if err == nil {
			err = ctd.ImportImage(t.Context(), testimages.InClusterClient, files)
		}
		inClusterImage.err = err
	})
	if inClusterImage.err != nil {
		t.Fatal(inClusterImage.err)
	}
}

// freePortOn is a TCP port free on ip now.
func freePortOn(t *testing.T, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// A client-go program in an edge pod, with rest.InClusterConfig(), lists and
// watches the pods of its namespace through the edge's in-cluster API, with
// the cloud and with the cloud cut; it is refused (403) the secrets its
// service account may not read, and its writes get 405 online and 503 with
// the cloud cut. Its pods list is timed in the pod (p50/p99 of 200 lists).
func TestInClusterAPI(t *testing.T) {
	ns := namespace(t)
	c := startCloud(t)
	importInClusterImage(t)
	// The pod calls the kubernetes Service's ClusterIP, which the edge's
	// proxy DNATs to the in-cluster listener.
	blackholeServices(t)
	e := newCRIEdge(t, c, "e2e-incluster")
	ip := nodestatus.FirstIPv4()
	if ip == "" {
		t.Skip("no non-loopback IPv4 address for the resolver and the in-cluster listener")
	}
	port := freePortOn(t, ip)
	e.dns = edgecore.DNSConfig{Enable: true, Addr: net.JoinHostPort(ip, "53"), Upstreams: []string{"127.0.0.1:9"},
		Allowed: []string{containerd(t).Subnet}}
	e.tweak = func(cfg *edgecore.Config) {
		on := true
		cfg.InCluster = edgecore.InClusterConfig{Enable: &on, Port: port}
	}
	e.start()

	// Service account "reader" may read the pods of its namespace and
	// create configmaps, nothing else.
	ctx := t.Context()
	if _, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "reader"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"create"}}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "pod-reader"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "pod-reader"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "reader", Namespace: ns}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db"},
		StringData: map[string]string{"password": "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	p := barePod(ns, "app", e.name)
	p.Spec.AutomountServiceAccountToken = nil // the API server's kube-api-access volume
	p.Spec.ServiceAccountName = "reader"
	p.Spec.Containers[0].Image = testimages.InClusterClient
	p.Spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent
	p.Spec.Containers[0].Command = []string{"/incluster"}
	p = createPod(t, p)
	if !strings.HasPrefix(p.Spec.Volumes[0].Name, "kube-api-access-") {
		t.Fatalf("the API server added no kube-api-access volume: %+v", p.Spec.Volumes)
	}
	p = waitPod(t, ns, p.Name, 90*time.Second, "Running and Ready", runningAndReady)
	log := e.logFile(p, 0)
	// The cluster's KUBERNETES_SERVICE_HOST (the first address of the
	// service range, port 443), routed by the edge to its listener.
	waitFileHolds(t, log, "config host https://10.96.0.1:443", 30*time.Second)
	if got, want := fmt.Sprint(endpointsOf(e, "default/kubernetes")), fmt.Sprint([]string{net.JoinHostPort(ip, fmt.Sprint(port))}); got != want {
		t.Errorf("default/kubernetes routed to %s, want the in-cluster listener %s", got, want)
	}
	waitFileHolds(t, log, "pods ok app", 30*time.Second)
	waitFileHolds(t, log, "secrets error 403", 10*time.Second)
	waitFileHolds(t, log, "create ok", 10*time.Second)
	waitFileHolds(t, log, "screate error 403", 10*time.Second)
	waitFileHolds(t, log, "watch ADDED app", 10*time.Second)
	// The ConfigMaps it created are in the API server; no Secret is.
	cms, err := client.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created := 0
	for _, cm := range cms.Items {
		if strings.HasPrefix(cm.Name, "incluster-") {
			created++
		}
	}
	if created == 0 {
		t.Error("no ConfigMap created by the pod in the API server")
	}
	if secrets, err := client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); err != nil || len(secrets.Items) != 1 {
		t.Errorf("secrets %v %v: the pod's refused create made one", secrets, err)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "wbench n=50") {
		waitFileHolds(t, log, "wbench n=50", 30*time.Second)
		b, _ = os.ReadFile(log)
	}
	if m := regexp.MustCompile(`wbench n=50 p50=(\S+) p99=(\S+)`).FindStringSubmatch(string(b)); m != nil {
		t.Logf("write relayed to the API server, in the pod (client-go, dry-run create, TLS, keep-alive): p50 %s p99 %s", m[1], m[2])
	}
	if n := e.ec.MetaServer.WritesRelayed(); n == 0 {
		t.Error("no write counted as relayed")
	}

	e.link.Cut()
	b, err = os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	cutAt := len(b)
	var after string
	eventually(t, 60*time.Second, "the program's reads, refusals and a timed list with the cloud cut", func() (bool, error) {
		b, err := os.ReadFile(log)
		if err != nil || len(b) < cutAt {
			return false, err
		}
		after = string(b[cutAt:])
		for _, want := range []string{"pods ok app", "secrets error 403", "create error 503", "the cloud is unreachable",
			"rewatch ADDED app", "bench n=200"} {
			if !strings.Contains(after, want) {
				return false, fmt.Errorf("no %q after the cut: %q", want, tailString(after, 600))
			}
		}
		return true, nil
	})
	if strings.Contains(after, "pods error") || strings.Contains(after, "\nbench error") {
		t.Errorf("a list failed with the cloud cut: %s", tailString(after, 600))
	}
	if m := regexp.MustCompile(`bench n=200 p50=(\S+) p99=(\S+)`).FindStringSubmatch(after); m != nil {
		t.Logf("pods list through the in-cluster listener with the cloud cut, in the pod (client-go, TLS, keep-alive): p50 %s p99 %s", m[1], m[2])
	}
	if n := e.ec.MetaServer.WritesRefused(); n == 0 {
		t.Error("no write counted as refused with the cloud cut")
	}
}
