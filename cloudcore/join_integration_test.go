//go:build integration

package cloudcore

import (
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/cloudcore/enroll"
	"github.com/tether-edge/tether/cloudcore/jointoken"
	"github.com/tether-edge/tether/edgecore/join"
	"github.com/tether-edge/tether/pki"
)

// A cloudcore running as the least-privilege ServiceAccount of
// manifests/cloudcore creates its CA, and nodes join through it: the token's
// use is counted, the Node is created, and a node joins again with a token
// made for it (its identity is replaced), all within the rights and the
// admission policies.
func TestJoinAsServiceAccount(t *testing.T) {
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
	pin := pki.Hash(cc.CA.Cert)
	joinAs := func(node, scope string) error {
		tok, err := jointoken.Create(ctx, client, jointoken.Options{TTL: time.Hour, Uses: 1, Node: scope}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		_, err = join.Join(ctx, join.Options{Cloud: ln.Addr().String(), Token: jointoken.JoinString(tok, pin),
			NodeName: node, ConfigPath: filepath.Join(t.TempDir(), "edgecore.yaml")})
		return err
	}
	if err := joinAs("store-1", ""); err != nil {
		t.Fatalf("join as the ServiceAccount: %v", err)
	}
	n, err := client.CoreV1().Nodes().Get(ctx, "store-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first := n.Annotations[enroll.AnnotationIdentity]
	if err := joinAs("store-1", "store-1"); err != nil {
		t.Fatalf("join again as the ServiceAccount: %v", err)
	}
	n, err = client.CoreV1().Nodes().Get(ctx, "store-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again := n.Annotations[enroll.AnnotationIdentity]; again == "" || again == first {
		t.Fatalf("identity after joining again: %q (was %q)", again, first)
	}
	toks, err := jointoken.List(ctx, client)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		if tok.Uses != 0 {
			t.Errorf("token %s has %d uses left after its one join", tok.ID, tok.Uses)
		}
	}
}
