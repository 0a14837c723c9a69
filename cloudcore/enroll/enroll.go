// Package enroll gives edge nodes their identity and checks it: the join
// endpoint (a join token and a certificate request in, the node's client
// certificate out), the renewal of a certificate that expired while the node
// was offline, in-session renewals, and the check the hub makes of every
// session (the node exists, is an edge node, and was not revoked).
//
// A join registers the Node (with the edge role label) and records on it a
// fresh random identity, AnnotationIdentity; the node's certificates carry
// it (package pki). A session or a renewal is accepted only while the Node
// exists and holds the identity of the certificate: `kubectl delete node X`
// revokes X at once, and a node that joins again gets a new identity, which
// revokes its older certificates. Nothing per node is kept anywhere but on
// its Node, so every cloudcore replica decides the same.
//
// The HTTP endpoints share the hub's listener (Handlers):
//
//	GET  /v1/ca      the CA bundle the hub's certificate chains to (public)
//	POST /v1/join    {token, nodeName, csr} -> {certificate, ca}
//	POST /v1/renew   with the node's (possibly expired) client certificate:
//	                 {csr} -> {certificate, ca}
package enroll

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/tether-edge/tether/cloudcore/status"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

// AnnotationIdentity on a Node holds the identity its certificates carry.
const AnnotationIdentity = "tether.io/node-identity"

// Paths of the endpoints.
const (
	PathCA    = "/v1/ca"
	PathJoin  = "/v1/join"
	PathRenew = "/v1/renew"
)

// MaxRequestSize bounds a join or renewal request body.
const MaxRequestSize = 32 << 10

// Tokens checks join tokens (bootstrap: a join token without its CA pin).
// Errors are meant for the person joining and never hold the token.
type Tokens interface {
	// Check reports whether bootstrap may join node now, without using
	// it, and the node name it is scoped to ("" for any).
	Check(ctx context.Context, bootstrap, node string) (scope string, err error)
	// Consume checks again and uses the token once.
	Consume(ctx context.Context, bootstrap, node string) error
}

// Nodes reads and registers Node objects.
type Nodes interface {
	// Get returns the Node, from a cache unless live; an error satisfying
	// apierrors.IsNotFound if there is none.
	Get(ctx context.Context, name string, live bool) (*corev1.Node, error)
	// Register creates the Node of an edge node, or, if it exists, sets
	// its identity: the annotation AnnotationIdentity = id.
	Register(ctx context.Context, name, id string) error
}

// Config configures the Service.
type Config struct {
	// CA issues the node certificates and verifies them.
	CA *pki.CA
	// Bundle is the PEM the edges trust the hub with (the CA, and the
	// operator's CA if the hub serves a certificate of theirs); its pin is
	// what join tokens carry.
	Bundle []byte
	// ClientValidity is how long a node certificate is valid (default
	// one year).
	ClientValidity time.Duration
	// RenewGrace is how long after its expiry a certificate may still be
	// renewed (default 90 days).
	RenewGrace time.Duration
	// Tokens checks join tokens; nil refuses every join (a Service used
	// for Direct only).
	Tokens Tokens
	Nodes  Nodes
	Log    *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c *Config) validate() error {
	if c.CA == nil || len(c.Bundle) == 0 || c.Nodes == nil || c.Log == nil {
		return errors.New("enroll: CA, Bundle, Nodes and Log are required")
	}
	if c.ClientValidity == 0 {
		c.ClientValidity = 365 * 24 * time.Hour
	}
	if c.RenewGrace == 0 {
		c.RenewGrace = 90 * 24 * time.Hour
	}
	if c.ClientValidity < time.Minute || c.RenewGrace < 0 {
		return fmt.Errorf("enroll: client validity %s (at least 1m), renew grace %s (not negative)",
			c.ClientValidity, c.RenewGrace)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Service is the enrollment service.
type Service struct {
	cfg   Config
	stats stats
	// verified remembers the node certificates verified (Authenticate).
	verified *verifiedCerts
}

type stats struct {
	joined, joinRefused, renewed, renewRefused, sessionRefused atomic.Int64
}

// Stats are the service's counters since start.
type Stats struct {
	Joined         int64 `json:"joined"`
	JoinRefused    int64 `json:"joinRefused"`
	Renewed        int64 `json:"renewed"`
	RenewRefused   int64 `json:"renewRefused"`
	SessionRefused int64 `json:"sessionRefused"`
}

// New builds the service.
func New(cfg Config) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, verified: newVerifiedCerts(cfg.CA)}, nil
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{Joined: s.stats.joined.Load(), JoinRefused: s.stats.joinRefused.Load(),
		Renewed: s.stats.renewed.Load(), RenewRefused: s.stats.renewRefused.Load(),
		SessionRefused: s.stats.sessionRefused.Load()}
}

// Handlers are the HTTP endpoints, by path, for the hub's listener.
func (s *Service) Handlers() map[string]http.Handler {
	return map[string]http.Handler{
		PathCA:    http.HandlerFunc(s.serveCA),
		PathJoin:  http.HandlerFunc(s.serveJoin),
		PathRenew: http.HandlerFunc(s.serveRenew),
	}
}

// JoinRequest is the body of POST /v1/join.
type JoinRequest struct {
	// Token is the bootstrap part of the join token, "<id>.<secret>".
	Token    string `json:"token"`
	NodeName string `json:"nodeName"`
	// CSR is a PEM certificate request for the node's key.
	CSR string `json:"csr"`
}

// RenewRequest is the body of POST /v1/renew.
type RenewRequest struct {
	CSR string `json:"csr"`
}

// Issued is the answer to a join or a renewal.
type Issued struct {
	// Certificate is the node's client certificate, PEM.
	Certificate string `json:"certificate"`
	// CA is the bundle to trust the hub with, PEM.
	CA string `json:"ca"`
}

// refusal is an error with the HTTP status it answers.
type refusal struct {
	status int
	msg    string
}

func (r *refusal) Error() string { return r.msg }

func refuse(status int, format string, args ...any) error {
	return &refusal{status: status, msg: fmt.Sprintf(format, args...)}
}

func (s *Service) serveCA(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Write(s.cfg.Bundle)
}

func (s *Service) serveJoin(w http.ResponseWriter, r *http.Request) {
	var req JoinRequest
	cert, err := func() ([]byte, error) {
		if err := decode(w, r, &req); err != nil {
			return nil, err
		}
		return s.join(r.Context(), &req)
	}()
	if err != nil {
		s.stats.joinRefused.Add(1)
		s.cfg.Log.Warn("join refused", slog.String("node", req.NodeName), slog.String("remote", r.RemoteAddr),
			slog.String("reason", err.Error()))
		answerError(w, err)
		return
	}
	s.stats.joined.Add(1)
	s.cfg.Log.Info("node joined", slog.String("node", req.NodeName), slog.String("remote", r.RemoteAddr))
	answer(w, &Issued{Certificate: string(cert), CA: string(s.cfg.Bundle)})
}

// join checks a join request and issues the node's certificate.
func (s *Service) join(ctx context.Context, req *JoinRequest) ([]byte, error) {
	if err := protocol.ValidateNodeName(req.NodeName); err != nil {
		return nil, refuse(http.StatusBadRequest, "node name %q: %v", req.NodeName, err)
	}
	pub, err := pki.ParseNodeCSR([]byte(req.CSR))
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "%v", err)
	}
	if req.Token == "" || s.cfg.Tokens == nil {
		return nil, refuse(http.StatusUnauthorized, "no join token")
	}
	// The token first: a caller without a good one learns nothing about
	// the cluster's nodes.
	scope, err := s.cfg.Tokens.Check(ctx, req.Token, req.NodeName)
	if err != nil {
		return nil, refuse(http.StatusForbidden, "%v", err)
	}
	n, err := s.cfg.Nodes.Get(ctx, req.NodeName, true)
	switch {
	case err == nil:
		if _, edge := n.Labels[status.EdgeRoleLabel]; !edge {
			return nil, refuse(http.StatusForbidden, "node %s exists and is not an edge node (no %s label): "+
				"no certificate is issued for it", req.NodeName, status.EdgeRoleLabel)
		}
		// Joining again replaces the node's identity (revoking its
		// certificates): only with a token made for that name.
		if scope != req.NodeName {
			return nil, refuse(http.StatusForbidden, "node %s exists already: join it again with a token "+
				"created for it (`cloudcore token create --node %s`), or delete the node first",
				req.NodeName, req.NodeName)
		}
	case apierrors.IsNotFound(err):
	default:
		return nil, refuse(http.StatusServiceUnavailable, "cannot read node %s: %v", req.NodeName, err)
	}
	if err := s.cfg.Tokens.Consume(ctx, req.Token, req.NodeName); err != nil {
		return nil, refuse(http.StatusForbidden, "%v", err)
	}
	id, err := newIdentity()
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Nodes.Register(ctx, req.NodeName, id); err != nil {
		return nil, refuse(http.StatusServiceUnavailable, "register node %s: %v", req.NodeName, err)
	}
	return s.cfg.CA.IssueNode(pub, req.NodeName, id, s.cfg.ClientValidity)
}

func (s *Service) serveRenew(w http.ResponseWriter, r *http.Request) {
	var node string
	cert, err := func() ([]byte, error) {
		if err := postOnly(w, r); err != nil { // before the certificate is verified
			return nil, err
		}
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return nil, refuse(http.StatusUnauthorized, "renewal needs the node's client certificate")
		}
		c := r.TLS.PeerCertificates[0]
		n, id, err := s.verifyLate(c)
		node = n
		if err != nil {
			return nil, err
		}
		var req RenewRequest
		if err := decode(w, r, &req); err != nil {
			return nil, err
		}
		return s.Renew(r.Context(), n, id, []byte(req.CSR))
	}()
	if err != nil {
		s.stats.renewRefused.Add(1)
		s.cfg.Log.Warn("renewal refused", slog.String("node", node), slog.String("remote", r.RemoteAddr),
			slog.String("reason", err.Error()))
		answerError(w, err)
		return
	}
	s.cfg.Log.Info("expired certificate renewed", slog.String("node", node), slog.String("remote", r.RemoteAddr))
	answer(w, &Issued{Certificate: string(cert), CA: string(s.cfg.Bundle)})
}

// verifyLate verifies a client certificate that may have expired, within
// the grace period.
func (s *Service) verifyLate(c *x509.Certificate) (node, id string, err error) {
	now := s.cfg.Now()
	at := now
	if now.After(c.NotAfter) {
		if now.Sub(c.NotAfter) > s.cfg.RenewGrace {
			return "", "", refuse(http.StatusForbidden, "the certificate expired at %s, more than the renewal "+
				"grace period (%s) ago: join this node again with a new token (`cloudcore token create`, "+
				"then `edgecore join`)", c.NotAfter.UTC().Format(time.RFC3339), s.cfg.RenewGrace)
		}
		at = c.NotAfter.Add(-time.Second)
	}
	node, id, err = s.cfg.CA.VerifyNode(c, at)
	if err != nil {
		return "", "", refuse(http.StatusUnauthorized, "client certificate: %v", err)
	}
	return node, id, nil
}

// Renew issues a new certificate to a node whose identity was verified, for
// the key of csr, provided the node is still valid.
func (s *Service) Renew(ctx context.Context, node, id string, csr []byte) ([]byte, error) {
	pub, err := pki.ParseNodeCSR(csr)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "%v", err)
	}
	if err := s.Check(ctx, node, id, true); err != nil {
		return nil, err
	}
	cert, err := s.cfg.CA.IssueNode(pub, node, id, s.cfg.ClientValidity)
	if err != nil {
		return nil, err
	}
	s.stats.renewed.Add(1)
	return cert, nil
}

// Authenticate verifies the client certificate of a tunnel connection and
// checks the node it names; it returns the node, its identity and the
// certificate's expiry.
func (s *Service) Authenticate(ctx context.Context, certs []*x509.Certificate) (node, id string, notAfter time.Time, err error) {
	if len(certs) == 0 {
		s.stats.sessionRefused.Add(1)
		return "", "", time.Time{}, refuse(http.StatusUnauthorized, "no client certificate: "+
			"this node has not joined (run `edgecore join`)")
	}
	c := certs[0]
	node, id, err = s.verified.verify(c, s.cfg.Now())
	if err != nil {
		s.stats.sessionRefused.Add(1)
		return "", "", time.Time{}, refuse(http.StatusUnauthorized, "client certificate: %v", err)
	}
	if err := s.Check(ctx, node, id, false); err != nil {
		s.stats.sessionRefused.Add(1)
		return "", "", time.Time{}, err
	}
	return node, id, c.NotAfter, nil
}

// TicketEntry is certs.CertMemory's: what a hub session ticket carries of
// leaf, if leaf verifies now (nil otherwise).
func (s *Service) TicketEntry(leaf *x509.Certificate) []byte {
	return s.verified.ticketEntry(leaf, s.cfg.Now())
}

// FromTicket is certs.CertMemory's: remembers the certificate of an entry
// from a ticket that opened, as verified.
func (s *Service) FromTicket(entry []byte) { s.verified.fromTicket(entry) }

// Check reports whether node, with the identity id, may still connect: its
// Node exists, is an edge node and holds that identity. It reads the cache
// first, and the API server when the cache has no such Node (or if live).
func (s *Service) Check(ctx context.Context, node, id string, live bool) error {
	n, err := s.cfg.Nodes.Get(ctx, node, live)
	if apierrors.IsNotFound(err) && !live {
		n, err = s.cfg.Nodes.Get(ctx, node, true)
	}
	switch {
	case apierrors.IsNotFound(err):
		return &Revoked{Node: node, Reason: "its Node was deleted"}
	case err != nil:
		return refuse(http.StatusServiceUnavailable, "cannot read node %s: %v", node, err)
	}
	if _, edge := n.Labels[status.EdgeRoleLabel]; !edge {
		return refuse(http.StatusForbidden, "node %s is not an edge node (no %s label)", node, status.EdgeRoleLabel)
	}
	if n.Annotations[AnnotationIdentity] != id {
		return &Revoked{Node: node, Reason: "it joined again since this certificate was issued"}
	}
	return nil
}

// Revoked is the error of a node whose identity is no longer valid.
type Revoked struct {
	Node, Reason string
}

func (r *Revoked) Error() string {
	return fmt.Sprintf("node %s was revoked (%s): join it again with a new token", r.Node, r.Reason)
}

func newIdentity() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("identity: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// postOnly refuses a request whose method is not POST (405, with Allow).
func postOnly(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return refuse(http.StatusMethodNotAllowed, "POST only")
	}
	return nil
}

func decode(w http.ResponseWriter, r *http.Request, v any) error {
	if err := postOnly(w, r); err != nil {
		return err
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxRequestSize))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return refuse(http.StatusBadRequest, "request body: %v", err)
	}
	return nil
}

// ErrorBody is the JSON of a refusal.
type ErrorBody struct {
	Error string `json:"error"`
}

func answerError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	var rf *refusal
	var rv *Revoked
	switch {
	case errors.As(err, &rf):
		status = rf.status
	case errors.As(err, &rv):
		status = http.StatusForbidden
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(&ErrorBody{Error: err.Error()})
}

func answer(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// Direct registers node and issues it a certificate for pub without a join
// token: for the simulator's hollow nodes and tests, which hold the CA.
func (s *Service) Direct(ctx context.Context, node string, pub crypto.PublicKey) ([]byte, error) {
	if err := protocol.ValidateNodeName(node); err != nil {
		return nil, err
	}
	id, err := newIdentity()
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Nodes.Register(ctx, node, id); err != nil {
		return nil, fmt.Errorf("register node %s: %w", node, err)
	}
	return s.cfg.CA.IssueNode(pub, node, id, s.cfg.ClientValidity)
}
