package metaserver

import (
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The attacker's side of the metaserver: who gets what.
func TestAuthentication(t *testing.T) {
	f := newFixture(t, Config{})
	f.put(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "db", UID: "s1", ResourceVersion: "1"},
		Data: map[string][]byte{"password": []byte("s3cret")}})
	f.sync()
	cases := []struct {
		name, path, host, token string
		want                    int
	}{
		{"no token", "/api/v1/secrets", "127.0.0.1:10550", "", http.StatusUnauthorized},
		{"wrong token", "/api/v1/secrets", "127.0.0.1:10550", "x" + nodeToken, http.StatusUnauthorized},
		{"no token, discovery", "/api", "127.0.0.1:10550", "", http.StatusUnauthorized},
		{"no token, unknown path", "/nothing", "127.0.0.1:10550", "", http.StatusUnauthorized},
		{"rebinding Host", "/api/v1/secrets", "rebind.attacker.example:10550", nodeToken, http.StatusForbidden},
		{"rebinding Host, no port", "/api/v1/secrets", "attacker.example", nodeToken, http.StatusForbidden},
		{"devices client: secrets", "/api/v1/secrets", "127.0.0.1:10550", devicesToken, http.StatusForbidden},
		{"devices client: one secret", "/api/v1/namespaces/team-a/secrets/db", "localhost:10550", devicesToken, http.StatusForbidden},
		{"devices client: pods", "/api/v1/pods", "127.0.0.1:10550", devicesToken, http.StatusForbidden},
		{"devices client: configmaps", "/api/v1/configmaps", "127.0.0.1:10550", devicesToken, http.StatusForbidden},
		{"devices client: devices", "/apis/devices.tether.io/v1beta1/devices", "127.0.0.1:10550", devicesToken, http.StatusOK},
		{"devices client: its node", "/api/v1/nodes", "[::1]:10550", devicesToken, http.StatusOK},
		{"node client: secrets", "/api/v1/secrets", "localhost:10550", nodeToken, http.StatusOK},
		{"health needs nothing", "/healthz", "127.0.0.1:10550", "", http.StatusOK},
	}
	refused := int64(0)
	for _, c := range cases {
		r := httptest.NewRequest(http.MethodGet, c.path, nil)
		r.Host, r.RemoteAddr = c.host, "127.0.0.1:40000"
		if c.token != "" {
			r.Header.Set("Authorization", "Bearer "+c.token)
		}
		w := httptest.NewRecorder()
		f.s.Handler().ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, w.Code, w.Body, c.want)
		}
		if w.Code != http.StatusOK && w.Code != http.StatusNotFound {
			refused++
		}
		if c.want != http.StatusOK && w.Body.Len() > 0 && contains(w.Body.Bytes(), "s3cret") {
			t.Errorf("%s: the secret in a refusal", c.name)
		}
	}
	if got := f.s.Refused(); got != refused {
		t.Errorf("refused counter %d, want %d", got, refused)
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }

// No clients: nobody is served, and a short token is refused at start.
func TestNoAnonymousAccess(t *testing.T) {
	f := newFixture(t, Config{Clients: []Client{}})
	if code := f.request(http.MethodGet, "/api/v1/pods", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("no clients configured: %d, want 401", code)
	}
	if err := (&Config{Addr: "127.0.0.1:0", NodeName: node, StateDir: t.TempDir(),
		NodeStatus: func() *corev1.NodeStatus { return &corev1.NodeStatus{} },
		Clients:    []Client{{Name: "weak", Token: "short"}}}).validate(); err == nil {
		t.Fatal("a short token was accepted")
	}
}

// LocalClients makes the token files once (0600 in a 0700 directory) and
// reads them back after a restart.
func TestLocalClients(t *testing.T) {
	dir := t.TempDir() + "/credentials"
	first, err := LocalClients(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LocalClients(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 3 || len(again) != 3 {
		t.Fatalf("clients %d then %d, want 3", len(first), len(again))
	}
	seen := map[string]bool{}
	for i := range first {
		if first[i].Token != again[i].Token || seen[first[i].Token] {
			t.Fatalf("tokens %v then %v", first, again)
		}
		seen[first[i].Token] = true
	}
	for _, c := range first {
		fi, err := os.Stat(TokenFile(dir, c.Name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", c.Name, err, fi.Mode())
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", fi.Mode())
	}
}

// TestMetricsAccess checks who may read /metrics: the node and metrics
// clients; the metrics client nothing else; mappers (devices) and callers
// without a token not.
func TestMetricsAccess(t *testing.T) {
	const metricsToken = "metrics-token-0123456789abcdef012345"
	clients := append(slices.Clone(testClients), Client{Name: MetricsClient, Token: metricsToken,
		Resources: []string{MetricsResource}})
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.Write([]byte("tether_edge_link_up 1\n"))
	})
	f := newFixture(t, Config{Clients: clients, Metrics: metrics})
	for _, c := range []struct {
		name, path, token string
		want              int
	}{
		{"no token", "/metrics", "", http.StatusUnauthorized},
		{"devices client", "/metrics", devicesToken, http.StatusForbidden},
		{"node client", "/metrics", nodeToken, http.StatusOK},
		{"metrics client", "/metrics", metricsToken, http.StatusOK},
		{"metrics client: secrets", "/api/v1/secrets", metricsToken, http.StatusForbidden},
		{"metrics client: pods", "/api/v1/pods", metricsToken, http.StatusForbidden},
	} {
		r := httptest.NewRequest(http.MethodGet, c.path, nil)
		r.Host, r.RemoteAddr = "127.0.0.1:10550", "127.0.0.1:40000"
		if c.token != "" {
			r.Header.Set("Authorization", "Bearer "+c.token)
		}
		w := httptest.NewRecorder()
		f.s.Handler().ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, w.Code, w.Body, c.want)
		}
		if c.want == http.StatusOK && !strings.Contains(w.Body.String(), "tether_edge_link_up 1") {
			t.Errorf("%s: body %q", c.name, w.Body)
		}
	}
	// Without a handler there is no /metrics.
	g := newFixture(t, Config{})
	if code := g.request(http.MethodGet, "/metrics", "", nil); code != http.StatusNotFound {
		t.Errorf("no Metrics: /metrics answered %d, want 404", code)
	}
}
