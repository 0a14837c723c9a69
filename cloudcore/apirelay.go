package cloudcore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"

	"github.com/tether-edge/tether/cloudcore/hub"
	"github.com/tether-edge/tether/protocol"
)

// apiRelay relays the writes of the edges' pods to the API server
// (hub.APIRelay): the edge's in-cluster API takes a pod's create, update,
// patch or delete, and cloudcore sends it on with a token of the pod's own
// service account, so that the API server's authentication, authorizers
// and admission decide exactly as for the pod anywhere in the cluster.
//
// # How cloudcore acts for a pod's service account
//
// cloudcore obtains a TokenRequest for the pod's ServiceAccount, bound to
// the pod (boundObjectRef kind Pod, name and UID), for the API server's own
// audience, valid for relayTokenLife (10 min, the API server's least);
// cached per pod and asked again when 80% of its life is gone. It asks
// only for a pod the dispatcher's informer shows bound to the asking node
// with the UID and service account the request names, as the node
// authorizer lets a kubelet ask tokens for its own pods only; a forged pod,
// another node's pod or another service account gets 403 and no token is
// asked. The API server itself refuses a token bound to a pod that does
// not exist with that UID, and the token dies with the pod.
//
// Rights: create on serviceaccounts/token (rbac.yaml), narrowed by the
// ValidatingAdmissionPolicy tether-cloudcore-tokens (policy.yaml): a
// token cloudcore asks must be bound to a Pod, for the API server's
// audience, for at most an hour. Trade-off against impersonation (rejected:
// impersonate on serviceaccounts is a right no policy can narrow to
// "pods of edge nodes" either, it hides the pod from the audit log's
// authentication, and manifests_test forbids it): with TokenRequest the
// API server authenticates a real token of the service account, bound to
// the pod, so audit logs name the pod (authentication.kubernetes.io/pod-name)
// and bound-token checks apply; the price is a TokenRequest per pod every
// 8 minutes of writes, and that cloudcore (like any kubelet's node
// authorizer would not allow, but like the pod itself could) may obtain a
// token of any pod's service account in the cluster: the policy cannot
// see the pod's node. The token never leaves cloudcore: the edge holds only
// its own node-signed tokens (edgecore/satoken).
type apiRelay struct {
	pods   corelisters.PodLister
	tokens tokenSource
	// base is the API server's URL; client reaches it with no credential
	// of cloudcore's (only the CA): every request carries a pod's token.
	base   *url.URL
	client *http.Client
	log    *slog.Logger
	now    func() time.Time

	mu    sync.Mutex
	cache map[relayKey]relayToken // guarded by mu
}

// relayTokenLife is the life of the tokens the relay asks; the API server
// takes no less.
const relayTokenLife = 10 * time.Minute

// maxRelayTokens bounds the token cache (pods that wrote in the last 10
// minutes); when full, expired entries go, and if none did it starts empty.
const maxRelayTokens = 10000

// tokenSource asks the API server for a token of a pod's service account,
// bound to the pod.
type tokenSource interface {
	Token(ctx context.Context, namespace, sa, pod, uid string, life time.Duration) (string, time.Time, error)
}

type relayKey struct{ namespace, pod, uid, sa string }

type relayToken struct {
	token      string
	renewAt    time.Time
	expiration time.Time
}

// newAPIRelay builds the relay for the API server of rc, with rc's CA but
// none of its credentials.
func newAPIRelay(rc *rest.Config, pods corelisters.PodLister, tokens tokenSource, log *slog.Logger) (*apiRelay, error) {
	anon := rest.AnonymousClientConfig(rc)
	anon.Timeout = 0 // the hub's RelayTimeout bounds each request
	client, err := rest.HTTPClientFor(anon)
	if err != nil {
		return nil, fmt.Errorf("api relay: %w", err)
	}
	base, _, err := rest.DefaultServerUrlFor(anon)
	if err != nil {
		return nil, fmt.Errorf("api relay: %w", err)
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &apiRelay{pods: pods, tokens: tokens, base: base, client: client, log: log, now: time.Now,
		cache: map[relayKey]relayToken{}}, nil
}

// Relay implements hub.APIRelay.
func (a *apiRelay) Relay(ctx context.Context, node string, r *protocol.APIRequest) *protocol.APIResponse {
	if err := a.podOf(node, r); err != nil {
		a.log.Warn("relayed write refused", slog.String("node", node), slog.String("pod", r.Namespace+"/"+r.Pod),
			slog.String("reason", err.Error()))
		return hub.StatusResponse(http.StatusForbidden, metav1.StatusReasonForbidden,
			"the cloud relays writes only of the node's own pods: "+err.Error())
	}
	tok, err := a.token(ctx, r)
	if err != nil {
		a.log.Warn("relayed write: no token for the pod's service account", slog.String("node", node),
			slog.String("pod", r.Namespace+"/"+r.Pod), slog.Any("err", err))
		return hub.StatusResponse(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			fmt.Sprintf("the cloud could not get a token of service account %s/%s for the pod: %v", r.Namespace,
				r.ServiceAccount, err))
	}
	u := *a.base
	u.Path = strings.TrimSuffix(u.Path, "/") + r.Path
	u.RawPath = ""
	u.RawQuery = r.Query
	req, err := http.NewRequestWithContext(ctx, r.Method, u.String(), bytes.NewReader(r.Body))
	if err != nil {
		return hub.StatusResponse(http.StatusBadRequest, metav1.StatusReasonBadRequest, "malformed request: "+err.Error())
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	if r.ContentType != "" {
		req.Header.Set("Content-Type", r.ContentType)
	}
	accept := r.Accept
	if accept == "" {
		accept = "application/json"
	}
	req.Header.Set("Accept", accept)
	ua := "tether-relay"
	if r.UserAgent != "" {
		ua = r.UserAgent + " tether-relay"
	}
	req.Header.Set("User-Agent", ua)
	resp, err := a.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return hub.StatusResponse(http.StatusGatewayTimeout, metav1.StatusReasonTimeout, "the API server did not answer in time")
		}
		return hub.StatusResponse(http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable,
			"the cloud cannot reach the API server")
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, protocol.MaxAPIResponseBody+1))
	if err != nil {
		return hub.StatusResponse(http.StatusBadGateway, metav1.StatusReasonInternalError, "reading the API server's answer: "+err.Error())
	}
	if len(body) > protocol.MaxAPIResponseBody {
		return hub.StatusResponse(http.StatusBadGateway, metav1.StatusReasonInternalError,
			fmt.Sprintf("the API server's answer is over %d bytes, more than the relay carries", protocol.MaxAPIResponseBody))
	}
	if resp.StatusCode == http.StatusUnauthorized {
		// The token was refused (the pod went, the key rotated): ask a
		// new one next time.
		a.forget(r)
	}
	out := &protocol.APIResponse{Status: resp.StatusCode, ContentType: resp.Header.Get("Content-Type"), Body: body}
	for _, w := range resp.Header.Values("Warning") {
		if len(out.Warnings) < protocol.MaxAPIWarnings && len(w) <= 1024 && !strings.ContainsAny(w, "\r\n") {
			out.Warnings = append(out.Warnings, w)
		}
	}
	if len(out.ContentType) > 256 {
		out.ContentType = ""
	}
	return out
}

// podOf checks that the request's pod is bound to node with the UID and
// service account named, in the informer's cache (the edge's word is not
// taken).
func (a *apiRelay) podOf(node string, r *protocol.APIRequest) error {
	p, err := a.pods.Pods(r.Namespace).Get(r.Pod)
	if err != nil {
		return fmt.Errorf("pod %s/%s: %w", r.Namespace, r.Pod, err)
	}
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	switch {
	case p.Spec.NodeName != node:
		return fmt.Errorf("pod %s/%s is not bound to node %s", r.Namespace, r.Pod, node)
	case string(p.UID) != r.PodUID:
		return fmt.Errorf("pod %s/%s has another UID", r.Namespace, r.Pod)
	case sa != r.ServiceAccount:
		return fmt.Errorf("pod %s/%s runs as service account %q, not %q", r.Namespace, r.Pod, sa, r.ServiceAccount)
	}
	return nil
}

// token returns a cached token of the pod's service account, or asks one.
func (a *apiRelay) token(ctx context.Context, r *protocol.APIRequest) (string, error) {
	k := relayKey{r.Namespace, r.Pod, r.PodUID, r.ServiceAccount}
	now := a.now()
	a.mu.Lock()
	t, ok := a.cache[k]
	a.mu.Unlock()
	if ok && now.Before(t.renewAt) {
		return t.token, nil
	}
	tok, exp, err := a.tokens.Token(ctx, r.Namespace, r.ServiceAccount, r.Pod, r.PodUID, relayTokenLife)
	if err != nil {
		return "", err
	}
	life := exp.Sub(now)
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.cache) >= maxRelayTokens {
		for k, t := range a.cache {
			if !now.Before(t.expiration) {
				delete(a.cache, k)
			}
		}
		if len(a.cache) >= maxRelayTokens {
			clear(a.cache)
		}
	}
	a.cache[k] = relayToken{token: tok, renewAt: now.Add(life * 8 / 10), expiration: exp}
	return tok, nil
}

func (a *apiRelay) forget(r *protocol.APIRequest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.cache, relayKey{r.Namespace, r.Pod, r.PodUID, r.ServiceAccount})
}

// tokenRequests asks the API server for bound service-account tokens
// (TokenRequest).
type tokenRequests struct {
	create func(ctx context.Context, namespace, sa string, tr *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error)
}

func (t tokenRequests) Token(ctx context.Context, namespace, sa, pod, uid string, life time.Duration) (string, time.Time, error) {
	secs := int64(life / time.Second)
	tr, err := t.create(ctx, namespace, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &secs,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod, UID: types.UID(uid)},
	}})
	if err != nil {
		var st apierrors.APIStatus
		if errors.As(err, &st) {
			return "", time.Time{}, fmt.Errorf("token request: %s", st.Status().Message)
		}
		return "", time.Time{}, fmt.Errorf("token request: %w", err)
	}
	if tr.Status.Token == "" {
		return "", time.Time{}, errors.New("token request: no token in the answer")
	}
	return tr.Status.Token, tr.Status.ExpirationTimestamp.Time, nil
}
