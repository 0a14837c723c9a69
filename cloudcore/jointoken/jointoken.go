package jointoken

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/tether-edge/tether/pki"
)

// Where tokens live and the keys of their Secrets. The names follow
// k8s.io/cluster-bootstrap/token/api, which is not a dependency of this
// module; the last three are Tether's own.
const (
	Namespace    = metav1.NamespaceSystem
	SecretPrefix = "bootstrap-token-"
	SecretType   = corev1.SecretTypeBootstrapToken

	KeyID          = "token-id"
	KeySecret      = "token-secret"
	KeyExpiration  = "expiration"
	KeyDescription = "description"
	// KeyUsageJoin set to "true" marks a Tether join token. It is a
	// usage-bootstrap-* key, as Kubernetes names the uses of a token.
	KeyUsageJoin = "usage-bootstrap-tether-join"
	// KeyUsesLeft is how many more joins the token allows; absent means no
	// limit.
	KeyUsesLeft = "tether-uses-left"
	// KeyNode is the only node name the token may join as; absent means any.
	KeyNode = "tether-node"
)

// DefaultTTL is how long a token lives when Options.TTL is zero.
const DefaultTTL = 24 * time.Hour

// Unlimited is Token.Uses of a token without a limit on its uses.
const Unlimited = -1

// createAttempts bounds the retries of Create when a random id is taken.
const createAttempts = 5

// Options say what token Create makes.
type Options struct {
	// TTL is how long the token is valid from now (default DefaultTTL).
	// Negative is an error.
	TTL time.Duration
	// Uses is how many nodes may join with the token; 0 means no limit.
	// Negative is an error.
	Uses int
	// Node, if set, is the only node name the token joins; it must be a
	// valid node name.
	Node string
	// Description is shown by List and kubectl; free text.
	Description string
}

func (o *Options) validate() error {
	switch {
	case o.TTL < 0:
		return fmt.Errorf("ttl %s: must not be negative", o.TTL)
	case o.TTL == 0:
		o.TTL = DefaultTTL
	}
	if o.Uses < 0 {
		return fmt.Errorf("uses %d: must not be negative (0 means no limit)", o.Uses)
	}
	if o.Node != "" {
		if errs := validation.IsDNS1123Subdomain(o.Node); len(errs) > 0 {
			return fmt.Errorf("node %q: %s", o.Node, strings.Join(errs, "; "))
		}
	}
	return nil
}

// Token is a join token as stored.
type Token struct {
	// ID is the public part, also the Secret's name suffix.
	ID string
	// Secret is the private part. Create sets it; List leaves it empty, so
	// a listing shows no secrets (kubectl can read them, for those who may).
	Secret string
	// Expires is when the token stops being accepted; zero means never (a
	// Secret without an expiration, which Create does not make).
	Expires time.Time
	// Uses is the number of uses left, or Unlimited.
	Uses int
	// Node is the only node name the token joins, or "" for any.
	Node string
	// Description is the operator's note.
	Description string
}

// String returns the bootstrap token "<id>.<secret>".
func (t Token) String() string { return t.ID + "." + t.Secret }

// SecretName returns the name of the Secret of the token with id.
func SecretName(id string) string { return SecretPrefix + id }

// JoinString returns the string an operator hands to `edgecore join`:
// "<id>.<secret>.<hex>", the bootstrap token and the CA pin caHash (as
// pki.Hash returns it) without its "sha256:" prefix.
func JoinString(t Token, caHash string) string { return pki.JoinToken(t.String(), caHash) }

// ParseJoinString splits a join string into the bootstrap token
// "<id>.<secret>" and the CA pin "sha256:<hex>". Its errors wrap
// ErrMalformed.
func ParseJoinString(s string) (bootstrap, caHash string, err error) {
	return pki.ParseJoinToken(s)
}

// ParseBootstrap splits a bootstrap token "<id>.<secret>". Its errors wrap
// ErrMalformed.
func ParseBootstrap(s string) (id, secret string, err error) { return pki.ParseBootstrapToken(s) }

// Create makes a token valid from now for opts.TTL and stores it. A random
// id already taken is drawn again.
func Create(ctx context.Context, client kubernetes.Interface, opts Options, now time.Time) (Token, error) {
	if err := opts.validate(); err != nil {
		return Token{}, fmt.Errorf("create join token: %w", err)
	}
	uses := Unlimited
	if opts.Uses > 0 {
		uses = opts.Uses
	}
	for attempt := 0; attempt < createAttempts; attempt++ {
		id, err := randomString(pki.BootstrapIDLen)
		if err != nil {
			return Token{}, fmt.Errorf("create join token: %w", err)
		}
		secret, err := randomString(pki.BootstrapSecretLen)
		if err != nil {
			return Token{}, fmt.Errorf("create join token: %w", err)
		}
		t := Token{ID: id, Secret: secret, Expires: now.Add(opts.TTL).UTC().Truncate(time.Second),
			Uses: uses, Node: opts.Node, Description: opts.Description}
		_, err = client.CoreV1().Secrets(Namespace).Create(ctx, t.secret(), metav1.CreateOptions{})
		switch {
		case err == nil:
			return t, nil
		case apierrors.IsAlreadyExists(err):
			continue
		default:
			return Token{}, fmt.Errorf("create join token secret %s/%s: %w", Namespace, SecretName(id), err)
		}
	}
	return Token{}, fmt.Errorf("create join token: %d random ids were all taken", createAttempts)
}

// secret returns the Secret that stores t.
func (t Token) secret() *corev1.Secret {
	data := map[string][]byte{
		KeyID:          []byte(t.ID),
		KeySecret:      []byte(t.Secret),
		KeyExpiration:  []byte(t.Expires.UTC().Format(time.RFC3339)),
		KeyDescription: []byte(t.Description),
		KeyUsageJoin:   []byte("true"),
	}
	if t.Uses != Unlimited {
		data[KeyUsesLeft] = []byte(strconv.Itoa(t.Uses))
	}
	if t.Node != "" {
		data[KeyNode] = []byte(t.Node)
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SecretName(t.ID), Namespace: Namespace,
			Labels: map[string]string{"app.kubernetes.io/part-of": "tether"}},
		Type: SecretType,
		Data: data,
	}
}

// List returns the Tether join tokens, sorted by id, without their secrets.
// Bootstrap tokens of other uses (kubeadm's) are left out.
func List(ctx context.Context, client kubernetes.Interface) ([]Token, error) {
	l, err := client.CoreV1().Secrets(Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: "type=" + string(SecretType),
	})
	if err != nil {
		return nil, fmt.Errorf("list join tokens: %w", err)
	}
	var out []Token
	for i := range l.Items {
		t, _, ok := parseSecret(&l.Items[i])
		if !ok {
			continue
		}
		t.Secret = ""
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Token) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Delete deletes the token with id, which revokes it. Deleting a token that
// does not exist, or a bootstrap token that is not a Tether join token, is
// an error wrapping ErrUnknown.
func Delete(ctx context.Context, client kubernetes.Interface, id string) error {
	if err := checkID(id); err != nil {
		return fmt.Errorf("delete join token: %w", err)
	}
	secrets := client.CoreV1().Secrets(Namespace)
	s, err := secrets.Get(ctx, SecretName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("delete join token %s: %w", id, ErrUnknown)
	}
	if err != nil {
		return fmt.Errorf("delete join token %s: %w", id, err)
	}
	if _, _, ok := parseSecret(s); !ok {
		return fmt.Errorf("delete join token %s: %w", id, ErrUnknown)
	}
	err = secrets.Delete(ctx, s.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &s.UID}})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("delete join token %s: %w", id, ErrUnknown)
	case err != nil:
		return fmt.Errorf("delete join token %s: %w", id, err)
	}
	return nil
}

// checkID checks the form of a token id; its error never repeats it.
func checkID(id string) error {
	_, _, err := pki.ParseBootstrapToken(id + "." + strings.Repeat("0", pki.BootstrapSecretLen))
	return err
}

// parseSecret reads a Tether join token from s. ok is false for a Secret
// that is not one: of another type, without the usage key, without an id
// matching its name or without a secret. A token whose expiration or uses
// left cannot be read is returned with corrupt saying which; the checks
// refuse it once the secret matched.
func parseSecret(s *corev1.Secret) (t Token, corrupt error, ok bool) {
	if s.Type != SecretType || string(s.Data[KeyUsageJoin]) != "true" {
		return Token{}, nil, false
	}
	t.ID = string(s.Data[KeyID])
	t.Secret = string(s.Data[KeySecret])
	if s.Name != SecretName(t.ID) || t.Secret == "" {
		return Token{}, nil, false
	}
	t.Node = string(s.Data[KeyNode])
	t.Description = string(s.Data[KeyDescription])
	t.Uses = Unlimited
	if v, present := s.Data[KeyUsesLeft]; present {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 0 {
			corrupt = fmt.Errorf("join token %s has an unreadable %s (%w): create a new one with `cloudcore token create`", t.ID, KeyUsesLeft, ErrUsedUp)
			n = 0
		}
		t.Uses = n
	}
	if v, present := s.Data[KeyExpiration]; present {
		exp, err := time.Parse(time.RFC3339, string(v))
		if err != nil {
			corrupt = fmt.Errorf("join token %s has an unreadable %s (%w): create a new one with `cloudcore token create`", t.ID, KeyExpiration, ErrExpired)
		}
		t.Expires = exp
	}
	return t, corrupt, true
}

// randomString returns n characters a-z, 0-9 drawn uniformly from
// crypto/rand.
func randomString(n int) (string, error) {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	const limit = 256 - 256%len(alphabet) // reject bytes above the last whole cycle
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("random: %w", err)
		}
		for _, b := range buf {
			if int(b) < limit && len(out) < n {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}
