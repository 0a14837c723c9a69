package cloudcore

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/tether-edge/tether/cloudcore/jointoken"
)

// joinTokens is enroll.Tokens over bootstrap-token Secrets (package
// cloudcore/jointoken).
type joinTokens struct{ client kubernetes.Interface }

func (t joinTokens) Consume(ctx context.Context, bootstrap, node string, scopedOnly bool) error {
	now := time.Now()
	if scopedOnly {
		tok, err := jointoken.Check(ctx, t.client, bootstrap, node, now)
		if err != nil {
			return err
		}
		if tok.Node != node {
			return fmt.Errorf("join token %s is not for node %s", tok.ID, node)
		}
	}
	return jointoken.Consume(ctx, t.client, bootstrap, node, now)
}
