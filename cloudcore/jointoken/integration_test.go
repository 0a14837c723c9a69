//go:build integration

package jointoken_test

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/tether-edge/tether/cloudcore/jointoken"
	"github.com/tether-edge/tether/controlplane"
)

// TestJoinTokens runs against a real API server with bootstrap-token
// authentication on: a token is a plain Secret in kube-system that does not
// authenticate to the API server; concurrent consumers of its last use
// have one winner; deleting the Secret revokes it.
func TestJoinTokens(t *testing.T) {
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: t.TempDir(), Logger: log,
		APIServerArgs: []string{"--enable-bootstrap-token-auth=true"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	client, err := kubernetes.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()

	tok, err := jointoken.Create(ctx, client, jointoken.Options{Uses: 3, Description: "integration"}, now)
	if err != nil {
		t.Fatal(err)
	}

	// A plain list of Secrets in kube-system shows it.
	l, err := client.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var found *corev1.Secret
	for i := range l.Items {
		if l.Items[i].Name == "bootstrap-token-"+tok.ID {
			found = &l.Items[i]
		}
	}
	if found == nil || found.Type != corev1.SecretTypeBootstrapToken || string(found.Data["token-secret"]) != tok.Secret {
		t.Fatalf("kube-system has no Secret bootstrap-token-%s of type %s holding the token", tok.ID, corev1.SecretTypeBootstrapToken)
	}

	// It never authenticates to the API server.
	rc := rest.AnonymousClientConfig(cp.RESTConfig())
	rc.BearerToken = tok.String()
	_, err = kubernetes.NewForConfigOrDie(rc).CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if !apierrors.IsUnauthorized(err) {
		t.Errorf("the join token as a bearer token: %v, want Unauthorized", err)
	}

	if tok2, err := jointoken.Check(ctx, client, tok.String(), "edge-1", now); err != nil || tok2.Uses != 3 {
		t.Fatalf("check: %+v, %v", tok2.Uses, err)
	}
	if err := jointoken.Consume(ctx, client, tok.String(), "edge-1", now); err != nil {
		t.Fatalf("consume: %v", err)
	}

	// Five replicas race for the last use: one wins.
	if err := jointoken.Consume(ctx, client, tok.String(), "edge-2", now); err != nil {
		t.Fatalf("consume: %v", err)
	}
	errs := make([]error, 5)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = jointoken.Consume(ctx, client, tok.String(), "edge-x", now) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, jointoken.ErrUsedUp):
			t.Errorf("racing consume: %v, want success or ErrUsedUp", err)
		}
	}
	if won != 1 {
		t.Errorf("%d racing consumers won the last use, want 1", won)
	}

	// Deleting the Secret, as an operator would with kubectl, revokes it.
	tok, err = jointoken.Create(ctx, client, jointoken.Options{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := jointoken.Consume(ctx, client, tok.String(), "edge-3", now); err != nil {
		t.Fatalf("consume: %v", err)
	}
	if err := client.CoreV1().Secrets("kube-system").Delete(ctx, "bootstrap-token-"+tok.ID, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := jointoken.Consume(ctx, client, tok.String(), "edge-3", now); !errors.Is(err, jointoken.ErrUnknown) {
		t.Errorf("consume a deleted token: %v, want ErrUnknown", err)
	}
	list, err := jointoken.List(ctx, client)
	if err != nil || len(list) != 1 || list[0].Uses != 0 || list[0].Description != "integration" {
		t.Errorf("list: %+v, %v; want the used-up token only", list, err)
	}
}
