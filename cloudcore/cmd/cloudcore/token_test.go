package main

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/tether-edge/tether/cloudcore/jointoken"
	"github.com/tether-edge/tether/pki"
)

func TestCloudAddr(t *testing.T) {
	dir := t.TempDir()
	write := func(name, yaml string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	both := write("both.yaml", "listenAddr: 0.0.0.0:443\ncertDNSNames: [hub.example.com, hub]\ncertIPs: [10.0.0.1]\n")
	ips := write("ips.yaml", "certIPs: ['fd00::1']\n")
	none := write("none.yaml", "listenAddr: :10001\n")
	bad := write("bad.yaml", "listenAdr: :10001\n")
	for _, tc := range []struct {
		name, cloud, config string
		want                string // or the error says it
		err                 bool
	}{
		{name: "flag", cloud: "hub:10000", want: "hub:10000"},
		{name: "flag wins over the file", cloud: "other:1", config: both, want: "other:1"},
		{name: "dns name and listen port", config: both, want: "hub.example.com:443"},
		{name: "ip and default port", config: ips, want: "[fd00::1]:10000"},
		{name: "neither", err: true, want: "--cloud HOST:PORT is required"},
		{name: "no names in the file", config: none, err: true, want: "no certDNSNames or certIPs"},
		{name: "unknown field", config: bad, err: true, want: "listenAdr"},
		{name: "no port", cloud: "hub", err: true, want: "want HOST:PORT"},
		{name: "bad port", cloud: "hub:http", err: true, want: "port 1-65535"},
		{name: "no host", cloud: ":10000", err: true, want: "with a host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cloudAddr(tc.cloud, tc.config)
			switch {
			case tc.err && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("err %v, want one saying %q", err, tc.want)
			case !tc.err && (err != nil || got != tc.want):
				t.Errorf("cloudAddr = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestRunTokenUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "want a command"},
		{[]string{"revoke"}, `unknown command "revoke"`},
		{[]string{"delete", "--kubeconfig", "k"}, "want 1 argument(s), got 0"},
		{[]string{"delete", "abc123", "def456"}, "want 1 argument(s), got 2"},
		{[]string{"list", "extra"}, "want 0 argument(s), got 1"},
		{[]string{"create", "--kubeconfig", "k"}, "--cloud HOST:PORT is required"},
		{[]string{"create", "--cloud", "hub:1", "--ttl", "0s"}, "--ttl 0s: must be positive"},
		{[]string{"create", "--uses", "x"}, "invalid value"},
	} {
		var stderr bytes.Buffer
		err := runToken(t.Context(), tc.args, io.Discard, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("token %q: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}

// TestCreateToken runs create against a fake clientset: the command it
// prints parses back, and its pin is that of the CA in the Secret.
func TestCreateToken(t *testing.T) {
	client := fake.NewSimpleClientset()
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	var stdout, stderr bytes.Buffer
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := createToken(t.Context(), client, "hub.example.com:10000", "tether-system", "tether-ca",
		jointoken.Options{TTL: 2 * time.Hour, Uses: 1, Node: "edge-1"}, now, &stdout, &stderr, log)
	if err != nil {
		t.Fatal(err)
	}
	checkJoinCommand(t, client, stdout.String(), "hub.example.com:10000", "edge-1")
	for _, want := range []string{"expires at 2026-12-06T12:00:00Z (in 2h0m0s)", "1 use", "for node edge-1 only"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q does not say %q", stderr.String(), want)
		}
	}

	var list bytes.Buffer
	if err := listTokens(t.Context(), client, now, &list); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(list.String()), "\n"); len(lines) != 2 ||
		!strings.Contains(lines[1], "2026-12-06T12:00:00Z  1") || !strings.Contains(lines[1], "edge-1") {
		t.Errorf("list:\n%s", list.String())
	}
}

// checkJoinCommand checks that out is one line, `edgecore join --cloud
// <cloud> --token <join token>` and `--node-name <node>` if node is set,
// whose token parses and is stored, and whose pin is the hash of the CA in
// tether-system/tether-ca. It returns the bootstrap token.
func checkJoinCommand(t *testing.T, client kubernetes.Interface, out, cloud, node string) string {
	t.Helper()
	fields := strings.Fields(out)
	if strings.Count(out, "\n") != 1 || len(fields) < 6 || strings.Join(fields[:5], " ") != "edgecore join --cloud "+cloud+" --token" {
		t.Fatalf("printed %q, want one line `edgecore join --cloud %s --token ...`", out, cloud)
	}
	if want := []string{"--node-name", node}; node != "" && strings.Join(fields[6:], " ") != strings.Join(want, " ") ||
		node == "" && len(fields) != 6 {
		t.Errorf("printed %q: want --node-name only if scoped (node %q)", out, node)
	}
	bootstrap, pin, err := jointoken.ParseJoinString(fields[5])
	if err != nil {
		t.Fatal(err)
	}
	s, err := client.CoreV1().Secrets("tether-system").Get(t.Context(), "tether-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertsPEM(s.Data[corev1.TLSCertKey])
	if err != nil || len(certs) != 1 {
		t.Fatalf("CA secret: %d certs, %v", len(certs), err)
	}
	if want := pki.Hash(certs[0]); pin != want {
		t.Errorf("pin %s, want the CA's %s", pin, want)
	}
	id, _, _ := jointoken.ParseBootstrap(bootstrap)
	if _, err := client.CoreV1().Secrets("kube-system").Get(t.Context(), "bootstrap-token-"+id, metav1.GetOptions{}); err != nil {
		t.Errorf("the printed token is not stored: %v", err)
	}
	return bootstrap
}
