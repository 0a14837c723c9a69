package cloudcore

import (
	"context"
	"errors"

	"k8s.io/client-go/kubernetes"
)

// joinTokens is enroll.Tokens over bootstrap-token Secrets.
// TODO(lead): wired to cloudcore/jointoken when that branch lands.
type joinTokens struct{ client kubernetes.Interface }

func (t joinTokens) Consume(ctx context.Context, bootstrap, node string, scopedOnly bool) error {
	return errors.New("join tokens are not wired yet")
}
