package kubeletproxy

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// User is an authenticated caller.
type User struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string][]string
}

// Authorizer authenticates and authorizes requests to nodes, as a kubelet
// with webhook authentication and authorization does.
type Authorizer interface {
	// Authenticate returns who made r, or an error if nobody is proven.
	Authenticate(ctx context.Context, r *http.Request) (*User, error)
	// Authorize reports whether u may do a, with the authorizer's reason.
	Authorize(ctx context.Context, u *User, a Attributes) (ok bool, reason string, err error)
}

// The ConfigMap where the API server publishes its client CA
// (client-ca-file), as for any delegated authentication.
const (
	AuthConfigMapNamespace = "kube-system"
	AuthConfigMapName      = "extension-apiserver-authentication"
)

// KubeAuth is the Authorizer of the API server's delegated
// authentication and authorization: client certificates verified against
// the cluster's client CA (reloaded every ReloadEvery), bearer tokens
// through a TokenReview, and a SubjectAccessReview per request, cached
// (allowed 5 minutes, denied 30 seconds, as the kubelet's defaults).
type KubeAuth struct {
	client kubernetes.Interface
	log    *slog.Logger
	// ReloadEvery is how often the client CA is read again (default 1m).
	ReloadEvery time.Duration
	// AllowTTL and DenyTTL are how long SubjectAccessReview answers are
	// kept (defaults 5m and 30s).
	AllowTTL, DenyTTL time.Duration

	pool atomic.Pointer[x509.CertPool]

	mu sync.Mutex
	// cache holds SubjectAccessReview answers by request; guarded by mu.
	cache map[string]decision
}

type decision struct {
	ok      bool
	reason  string
	expires time.Time
}

// maxCached bounds the answers kept; at it, the cache starts over.
const maxCached = 10000

// NewKubeAuth builds a KubeAuth; Start loads the client CA.
func NewKubeAuth(client kubernetes.Interface, log *slog.Logger) *KubeAuth {
	return &KubeAuth{client: client, log: log, ReloadEvery: time.Minute, AllowTTL: 5 * time.Minute,
		DenyTTL: 30 * time.Second, cache: map[string]decision{}}
}

// Start loads the client CA, then again every ReloadEvery until ctx ends.
// A CA that cannot be read is logged; client certificates are refused
// until it can.
func (k *KubeAuth) Start(ctx context.Context) error {
	t := time.NewTicker(k.ReloadEvery)
	defer t.Stop()
	for {
		if err := k.Reload(ctx); err != nil {
			k.log.Warn("kubelet proxy: cannot read the cluster's client CA; client certificates are refused",
				slog.Any("err", err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Reload reads the client CA now.
func (k *KubeAuth) Reload(ctx context.Context) error {
	cm, err := k.client.CoreV1().ConfigMaps(AuthConfigMapNamespace).Get(ctx, AuthConfigMapName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	pem := cm.Data["client-ca-file"]
	if pem == "" {
		return fmt.Errorf("%s/%s has no client-ca-file", AuthConfigMapNamespace, AuthConfigMapName)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(pem)) {
		return fmt.Errorf("%s/%s: client-ca-file holds no certificate", AuthConfigMapNamespace, AuthConfigMapName)
	}
	k.pool.Store(pool)
	return nil
}

// Authenticate implements Authorizer.
func (k *KubeAuth) Authenticate(ctx context.Context, r *http.Request) (*User, error) {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		pool := k.pool.Load()
		if pool == nil {
			return nil, errors.New("the cluster's client CA is not loaded")
		}
		leaf := r.TLS.PeerCertificates[0]
		inter := x509.NewCertPool()
		for _, c := range r.TLS.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		if leaf.Subject.CommonName == "" {
			return nil, errors.New("client certificate: no common name")
		}
		return &User{Name: leaf.Subject.CommonName, Groups: append(slices.Clone(leaf.Subject.Organization),
			"system:authenticated")}, nil
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return nil, errors.New("no client certificate or bearer token")
	}
	if len(tok) > 8<<10 {
		return nil, errors.New("bearer token too long")
	}
	tr, err := k.client.AuthenticationV1().TokenReviews().Create(ctx,
		&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: tok}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token review: %w", err)
	}
	if !tr.Status.Authenticated {
		return nil, errors.New("invalid bearer token")
	}
	u := tr.Status.User
	extra := map[string][]string{}
	for key, v := range u.Extra {
		extra[key] = v
	}
	return &User{Name: u.Username, UID: u.UID, Groups: u.Groups, Extra: extra}, nil
}

// Authorize implements Authorizer.
func (k *KubeAuth) Authorize(ctx context.Context, u *User, a Attributes) (bool, string, error) {
	return k.review(ctx, u, []string{a.Verb, a.Subresource, a.Node}, authorizationv1.SubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: a.Verb, Version: "v1", Resource: "nodes",
			Subresource: a.Subresource, Name: a.Node}})
}

// AuthorizePath reports whether u may use verb on the non-resource URL
// path (a SubjectAccessReview with nonResourceAttributes, as the API
// server's components authorize their /metrics), with the authorizer's
// reason; answers are cached as Authorize's.
func (k *KubeAuth) AuthorizePath(ctx context.Context, u *User, verb, path string) (bool, string, error) {
	return k.review(ctx, u, []string{verb, "path", path}, authorizationv1.SubjectAccessReviewSpec{
		NonResourceAttributes: &authorizationv1.NonResourceAttributes{Verb: verb, Path: path}})
}

// review asks the API server whether u may do what spec says (its user
// fields are filled from u), through the cache, by u and what.
func (k *KubeAuth) review(ctx context.Context, u *User, what []string, spec authorizationv1.SubjectAccessReviewSpec) (bool, string, error) {
	key := strings.Join(append([]string{u.Name, u.UID, strings.Join(u.Groups, ","), fmt.Sprint(u.Extra)}, what...), "\x00")
	now := time.Now()
	k.mu.Lock()
	d, ok := k.cache[key]
	k.mu.Unlock()
	if ok && now.Before(d.expires) {
		return d.ok, d.reason, nil
	}
	extra := map[string]authorizationv1.ExtraValue{}
	for key, v := range u.Extra {
		extra[key] = v
	}
	spec.User, spec.UID, spec.Groups, spec.Extra = u.Name, u.UID, u.Groups, extra
	sar, err := k.client.AuthorizationV1().SubjectAccessReviews().Create(ctx,
		&authorizationv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("subject access review: %w", err)
	}
	d = decision{ok: sar.Status.Allowed, reason: sar.Status.Reason, expires: now.Add(k.DenyTTL)}
	if d.ok {
		d.expires = now.Add(k.AllowTTL)
	}
	k.mu.Lock()
	if len(k.cache) >= maxCached {
		clear(k.cache)
	}
	k.cache[key] = d
	k.mu.Unlock()
	return d.ok, d.reason, nil
}
