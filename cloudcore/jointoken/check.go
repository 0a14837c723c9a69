package jointoken

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/tether-edge/tether/pki"
)

// Errors of Check and Consume, to test with errors.Is. Their messages are
// meant for the person at the edge who typed the token; none repeats the
// secret.
var (
	// ErrMalformed: the string is not "<id>.<secret>" (or, for
	// ParseJoinString, "<id>.<secret>.<ca-hash>").
	ErrMalformed = pki.ErrMalformedToken
	// ErrUnknown: no token with that id, a wrong secret, or a bootstrap
	// token that is not a Tether join token. The three read the same, so
	// that a guess learns nothing.
	ErrUnknown = errors.New("unknown join token: it does not exist, was deleted, or its secret is wrong; " +
		"check it, or create a new one with `cloudcore token create`")
	// ErrExpired: the token's expiration has passed.
	ErrExpired = errors.New("join token expired")
	// ErrUsedUp: the token had a limit on its uses and all are spent.
	ErrUsedUp = errors.New("join token used up")
	// ErrOtherNode: the token joins another node name only.
	ErrOtherNode = errors.New("join token is for another node")
)

// conflictBackoff paces Consume's retries when another consumer updated the
// token first. Each conflict means some other join spent a use, so the
// retries are bounded by the uses of the token and the replicas racing.
var conflictBackoff = wait.Backoff{Steps: 10, Duration: 5 * time.Millisecond, Factor: 2, Jitter: 0.5, Cap: time.Second}

// Check tells whether the bootstrap token "<id>.<secret>" may join node
// now, without spending a use, and returns the token (without its secret).
// It is advisory: call it before expensive work, and Consume at the end,
// which alone decides. Errors wrap ErrMalformed, ErrUnknown, ErrExpired,
// ErrUsedUp or ErrOtherNode, or are failures to reach the API server.
func Check(ctx context.Context, client kubernetes.Interface, bootstrap, node string, now time.Time) (Token, error) {
	id, secret, err := ParseBootstrap(bootstrap)
	if err != nil {
		return Token{}, err
	}
	s, err := client.CoreV1().Secrets(Namespace).Get(ctx, SecretName(id), metav1.GetOptions{})
	if err != nil {
		return Token{}, getError(id, err)
	}
	t, err := validate(s, secret, node, now)
	if err != nil {
		return Token{}, err
	}
	t.Secret = ""
	return t, nil
}

// Consume spends one use of the bootstrap token "<id>.<secret>" for node:
// it checks what Check checks and, for a token with a limit, writes the
// uses left with an Update conditioned on the resourceVersion it read,
// reading again and checking again on a conflict. Two consumers can never
// both spend the last use: the loser gets ErrUsedUp. Errors are those of
// Check, or a failure to reach the API server or to win against
// concurrent joins after several retries.
func Consume(ctx context.Context, client kubernetes.Interface, bootstrap, node string, now time.Time) error {
	id, secret, err := ParseBootstrap(bootstrap)
	if err != nil {
		return err
	}
	secrets := client.CoreV1().Secrets(Namespace)
	err = retry.RetryOnConflict(conflictBackoff, func() error {
		s, err := secrets.Get(ctx, SecretName(id), metav1.GetOptions{})
		if err != nil {
			return getError(id, err)
		}
		t, err := validate(s, secret, node, now)
		if err != nil {
			return err
		}
		if t.Uses == Unlimited {
			return nil
		}
		s = s.DeepCopy()
		s.Data[KeyUsesLeft] = []byte(strconv.Itoa(t.Uses - 1))
		_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return ErrUnknown // deleted since the Get: revoked
		case err != nil && !apierrors.IsConflict(err):
			return fmt.Errorf("join token %s: spend a use: %w", id, err)
		}
		return err // nil, or a conflict to retry
	})
	if apierrors.IsConflict(err) {
		return fmt.Errorf("join token %s: too many joins at once, try again: %w", id, err)
	}
	return err
}

// getError maps the error of getting the Secret of token id.
func getError(id string, err error) error {
	if apierrors.IsNotFound(err) {
		return ErrUnknown
	}
	return fmt.Errorf("join token %s: get secret: %w", id, err)
}

// validate checks s against the secret presented, node and now. The secret
// is compared in constant time before anything about the token but its
// existence is told.
func validate(s *corev1.Secret, secret, node string, now time.Time) (Token, error) {
	t, corrupt, ok := parseSecret(s)
	if !ok || subtle.ConstantTimeCompare([]byte(t.Secret), []byte(secret)) != 1 {
		return Token{}, ErrUnknown
	}
	if corrupt != nil {
		return Token{}, corrupt
	}
	if !t.Expires.IsZero() && !now.Before(t.Expires) {
		return Token{}, fmt.Errorf("%w at %s: create a new one with `cloudcore token create`",
			ErrExpired, t.Expires.UTC().Format(time.RFC3339))
	}
	if t.Node != "" && t.Node != node {
		return Token{}, fmt.Errorf("%w: it joins the node named %q only, not %q: "+
			"run `edgecore join` with --node-name %s, or create a token for this node with `cloudcore token create --node NAME`",
			ErrOtherNode, t.Node, node, t.Node)
	}
	if t.Uses == 0 {
		return Token{}, fmt.Errorf("%w: every use it allowed is spent: create a new one with `cloudcore token create`", ErrUsedUp)
	}
	return t, nil
}
