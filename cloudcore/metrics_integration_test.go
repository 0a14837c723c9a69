//go:build integration

package cloudcore

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestMetricsEndpoint scrapes cloudcore's /metrics on the hub's listener as
// Prometheus would, with a ServiceAccount token allowed get on /metrics;
// and as callers that must be refused: no credentials, a token without the
// right, a bad token, another method.
func TestMetricsEndpoint(t *testing.T) {
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cp, client := startControlPlane(t, log)
	applyRBAC(t, client)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cc := runCloudcore(t, Config{Kubeconfig: writeKubeconfig(t, cp, cloudcoreUser), SkipCRDInstall: true,
		Listener: ln, Logger: log})

	// The scraper's rights, as manifests/cloudcore/deploy.yaml's
	// tether-metrics-reader gives them.
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "monitoring"}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token := func(sa string) string {
		t.Helper()
		if _, err := client.CoreV1().ServiceAccounts("monitoring").Create(ctx,
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		tr, err := client.CoreV1().ServiceAccounts("monitoring").CreateToken(ctx, sa,
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	prom, other := token("prometheus"), token("other")
	if _, err := client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "tether-metrics-reader"},
		Rules:      []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "prometheus-tether-metrics"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "tether-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "monitoring", Name: "prometheus"}}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cc.Bundle)
	hc := &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	get := func(method, tok string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, "https://"+ln.Addr().String()+"/metrics", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		name, method, token string
		want                int
	}{
		{"no credentials", http.MethodGet, "", http.StatusUnauthorized},
		{"a bad token", http.MethodGet, "not-a-token", http.StatusUnauthorized},
		{"a token without get /metrics", http.MethodGet, other, http.StatusForbidden},
		{"POST", http.MethodPost, prom, http.StatusMethodNotAllowed},
	} {
		if code, body := get(c.method, c.token); code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.want)
		} else if strings.Contains(body, "tether_") {
			t.Errorf("%s: metrics in a refusal", c.name)
		}
	}
	// RBAC may take a moment to see the new binding.
	var code int
	var body string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if code, body = get(http.MethodGet, prom); code == http.StatusOK {
			break
		}
	}
	if code != http.StatusOK {
		t.Fatalf("the scraper: %d %s", code, body)
	}
	for _, m := range []string{"tether_hub_sessions 0", "tether_leader 1", "tether_ca_certificate_expiry_timestamp_seconds",
		`tether_api_writes_total{kind="pod_status"}`, "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
	t.Logf("/metrics: %d lines, %d of them tether_", strings.Count(body, "\n"), strings.Count(body, "\ntether_"))
	// A flood on one keep-alive connection (the hub's limits per address
	// on new connections do not come into it): past metricsBurst (20)
	// requests, less what metricsRate (5/s) refills meanwhile, they are
	// refused 429 before any review, with no metrics in the answer.
	const flood = 60
	byCode := map[int]int{}
	for range flood {
		code, body := get(http.MethodGet, prom)
		byCode[code]++
		if code == http.StatusTooManyRequests && strings.Contains(body, "tether_") {
			t.Fatal("metrics in a 429")
		}
	}
	if byCode[http.StatusTooManyRequests] == 0 || byCode[http.StatusOK]+byCode[http.StatusTooManyRequests] != flood {
		t.Errorf("%d requests in a row: %v by status, want 429s past the burst and nothing else but 200", flood, byCode)
	}
	t.Logf("/metrics flood of %d requests in a row: %v by status", flood, byCode)
}
