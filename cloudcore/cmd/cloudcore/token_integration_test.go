//go:build integration

package main

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tether-edge/tether/cloudcore/jointoken"
	"github.com/tether-edge/tether/controlplane"
)

// TestTokenCommands runs `cloudcore token create`, list and delete against
// a real API server with the admin kubeconfig.
func TestTokenCommands(t *testing.T) {
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
	client, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	token := func(args ...string) (stdout, stderr string, err error) {
		var o, e bytes.Buffer
		err = runToken(ctx, append(args[:1:1], append([]string{"--kubeconfig", cp.Kubeconfig()}, args[1:]...)...), &o, &e)
		return o.String(), e.String(), err
	}

	// Without the CA's namespace, an admin's create makes it.
	if _, _, err = token("create", "--cloud", "hub.example.com:10000"); err != nil {
		t.Fatalf("create without the namespace: %v", err)
	}
	if _, err := client.CoreV1().Namespaces().Get(ctx, "tether-system", metav1.GetOptions{}); err != nil {
		t.Fatalf("the CA's namespace: %v", err)
	}

	out, errOut, err := token("create", "--cloud", "hub.example.com:10000", "--uses", "1", "--node", "edge-1", "--ttl", "1h")
	if err != nil {
		t.Fatalf("create: %v\n%s", err, errOut)
	}
	t.Logf("stdout: %sstderr: %s", out, errOut)
	bootstrap := checkJoinCommand(t, client, out, "hub.example.com:10000", "edge-1")
	if !strings.Contains(errOut, "1 use, for node edge-1 only") || !strings.Contains(errOut, "(in 1h0m0s)") {
		t.Errorf("stderr %q: want when it expires and its uses", errOut)
	}
	id, _, _ := jointoken.ParseBootstrap(bootstrap)

	// A second token pins the same CA, now loaded, not created.
	out, _, err = token("create", "--cloud", "hub.example.com:10000")
	if err != nil {
		t.Fatal(err)
	}
	checkJoinCommand(t, client, out, "hub.example.com:10000", "")

	out, _, err = token("list")
	if err != nil || strings.Count(out, "\n") != 4 || !strings.Contains(out, id+"  ") { // a header and three tokens
		t.Errorf("list: %v\n%s", err, out)
	}

	if err := jointoken.Consume(ctx, client, bootstrap, "edge-1", time.Now()); err != nil {
		t.Fatalf("consume the printed token: %v", err)
	}
	if _, _, err := token("delete", id); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if err := jointoken.Consume(ctx, client, bootstrap, "edge-1", time.Now()); !errors.Is(err, jointoken.ErrUnknown) {
		t.Errorf("consume a deleted token: %v, want ErrUnknown", err)
	}
	if _, _, err := token("delete", id); !errors.Is(err, jointoken.ErrUnknown) {
		t.Errorf("delete again: %v, want ErrUnknown", err)
	}
}
