package cloudcore

import (
	"context"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/tether-edge/tether/cloudcore/jointoken"
)

// joinTokens is enroll.Tokens over bootstrap-token Secrets.
type joinTokens struct{ client kubernetes.Interface }

func (t joinTokens) Consume(ctx context.Context, bootstrap, node string, scopedOnly bool) error {
	return jointoken.Consume(ctx, t.client, bootstrap, node, scopedOnly, time.Now())
}
