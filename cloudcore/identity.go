package cloudcore

import (
	"context"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/tether-edge/tether/cloudcore/jointoken"
)

// joinTokens is enroll.Tokens over bootstrap-token Secrets (package
// cloudcore/jointoken).
type joinTokens struct{ client kubernetes.Interface }

func (t joinTokens) Check(ctx context.Context, bootstrap, node string) (string, error) {
	tok, err := jointoken.Check(ctx, t.client, bootstrap, node, time.Now())
	return tok.Node, err
}

func (t joinTokens) Consume(ctx context.Context, bootstrap, node string) error {
	return jointoken.Consume(ctx, t.client, bootstrap, node, time.Now())
}
