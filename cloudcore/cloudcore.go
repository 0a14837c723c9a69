// Package cloudcore wires the cloud side of Tether: the dispatcher (which
// objects each edge node holds), the hub (one websocket session per node) and
// the status writer (what nodes report, written to the API server). The
// binary in cmd/cloudcore reads a Config and calls Run; tests and the
// simulator embed it the same way.
//
// New loads cloudcore's CA from its Secret (tether-system/tether-ca), or
// creates it (package certs), and issues the hub's serving certificate from
// it. Edges join through the hub's join endpoint with a join token (package
// enroll, tokens from package jointoken) and connect with the client
// certificate they get.
//
// At start, before anything else, Run installs the device CRDs
// (manifests/crds) unless Config.SkipCRDInstall is set: it creates the
// missing ones, updates those that differ and waits until the API server
// serves them. manifests/cloudcore/rbac.yaml holds the rights cloudcore
// needs.
package cloudcore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"crypto/tls"
	"crypto/x509"

	"golang.org/x/sync/errgroup"
	authenticationv1 "k8s.io/api/authentication/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/tether-edge/tether/cloudcore/autonomy"
	"github.com/tether-edge/tether/cloudcore/certs"
	"github.com/tether-edge/tether/cloudcore/dispatch"
	"github.com/tether-edge/tether/cloudcore/enroll"
	"github.com/tether-edge/tether/cloudcore/hub"
	"github.com/tether-edge/tether/cloudcore/kubeletproxy"
	"github.com/tether-edge/tether/cloudcore/status"
	"github.com/tether-edge/tether/pki"
)

// Config is cloudcore's whole configuration. Zero values take the defaults
// that validate fills in.
type Config struct {
	// Kubeconfig is the path of the kubeconfig to reach the API server.
	// Empty means in-cluster configuration.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	// ListenAddr is where the hub listens for edge nodes (default
	// 0.0.0.0:10000).
	ListenAddr string `json:"listenAddr,omitempty"`
	// Namespace holds cloudcore's CA Secret (default tether-system), named
	// CASecret (default tether-ca). Every replica loads it; the first one
	// creates it (package cloudcore/certs).
	Namespace string `json:"namespace,omitempty"`
	CASecret  string `json:"caSecret,omitempty"`
	// TLSCertFile and TLSKeyFile are an operator's serving certificate for
	// the hub, reloaded when the files change; TLSCAFile is then required:
	// the CA bundle that certificate chains to, which edges are given at
	// join. When both are empty, the hub serves a certificate issued by
	// cloudcore's CA, renewed after two thirds of ServingCertValidity.
	TLSCertFile string `json:"tlsCertFile,omitempty"`
	TLSKeyFile  string `json:"tlsKeyFile,omitempty"`
	TLSCAFile   string `json:"tlsCAFile,omitempty"`
	// CertDNSNames and CertIPs go into the hub's certificate (default
	// localhost, the host name, 127.0.0.1): the names edges reach it by.
	CertDNSNames []string `json:"certDNSNames,omitempty"`
	CertIPs      []string `json:"certIPs,omitempty"`
	// ServingCertValidity is the life of the hub's certificate (default
	// 90 days).
	ServingCertValidity metav1.Duration `json:"servingCertValidity,omitempty"`
	// ClientCertValidity is the life of a node's client certificate
	// (default 1 year); edges renew it after 70-90% of it.
	ClientCertValidity metav1.Duration `json:"clientCertValidity,omitempty"`
	// RenewGracePeriod is how long after expiry a node (offline meanwhile)
	// may still renew its certificate with it (default 90 days); later it
	// must join again with a new token.
	RenewGracePeriod metav1.Duration `json:"renewGracePeriod,omitempty"`
	// Tokens and TokenFile are refused: shared bootstrap tokens are gone.
	// Each edge joins with a join token (`cloudcore token create`) and
	// connects with a certificate of its own.
	Tokens    []string `json:"tokens,omitempty"`
	TokenFile string   `json:"tokenFile,omitempty"`
	// HeartbeatInterval is how often edges send heartbeats (default 30s);
	// a session silent for SessionTimeout (default 2.5x) is closed. Node
	// Leases do not wait for heartbeats: cloudcore renews the Lease of every
	// connected node each leaseDuration/4, so a link that dies without a
	// word shows as the node NotReady after at most sessionTimeout plus the
	// controller manager's node-monitor-grace-period.
	HeartbeatInterval metav1.Duration `json:"heartbeatInterval,omitempty"`
	SessionTimeout    metav1.Duration `json:"sessionTimeout,omitempty"`
	// LeaseDuration of node Leases (default 40s).
	LeaseDuration metav1.Duration `json:"leaseDuration,omitempty"`
	// KubeQPS and KubeBurst limit cloudcore's requests to the API server,
	// Lease renewals apart. Unset, the limit follows the nodes connected:
	// 100 requests/s, or 0.2 per connected node if that is more (2,000/s
	// at 10,000 nodes), with a burst of twice that; cloudcore speaks for
	// all its nodes, where each kubelet would have a budget of its own.
	// KubeBurst defaults to twice KubeQPS. Lease renewals have a client of
	// their own with no client-side limit, as each kubelet renews its own
	// Lease: they are bounded by one per connected node every
	// leaseDuration/4 and by LeaseWorkers in flight, and never wait behind
	// pod and device statuses, nor these behind them.
	KubeQPS   float32 `json:"kubeQPS,omitempty"`
	KubeBurst int     `json:"kubeBurst,omitempty"`
	// StatusWorkers is the number of concurrent API writers of statuses,
	// events and mirror pods (default 32).
	StatusWorkers int `json:"statusWorkers,omitempty"`
	// LeaseWorkers is the number of concurrent Lease renewals (default 32).
	LeaseWorkers int `json:"leaseWorkers,omitempty"`
	// InformerResync is the informers' resync period (default 0: none).
	InformerResync metav1.Duration `json:"informerResync,omitempty"`
	// SkipCRDInstall leaves the device CRDs (manifests/crds) to the
	// operator: cloudcore neither creates nor updates them, and needs no
	// rights on customresourcedefinitions. Without the CRDs it dispatches
	// pods and no devices, and checks for them every DeviceCRDPoll.
	SkipCRDInstall bool `json:"skipCRDInstall,omitempty"`
	// DeviceCRDPoll is how often cloudcore checks whether the device CRDs
	// are served when they were not at start (default 30s).
	DeviceCRDPoll metav1.Duration `json:"deviceCRDPoll,omitempty"`
	// HealthAddr is a plain HTTP listener for /healthz (cloudcore serves)
	// and /readyz (caches synced and the hub listening), kept off the
	// tunnel's port, which serves edges only (default 127.0.0.1:10001;
	// "-": none). It opens with the hub, once the caches are synced.
	HealthAddr string `json:"healthAddr,omitempty"`
	// HandshakeTimeout closes a connection that has not finished its TLS
	// handshake and request header, and bounds the websocket and Hello
	// exchange (default 10s). IdleTimeout closes a keep-alive connection
	// idle between requests (default 30s); ReadTimeout bounds a whole
	// request to the join and renewal endpoints (default 30s). Sessions
	// have their own timeout (SessionTimeout).
	HandshakeTimeout metav1.Duration `json:"handshakeTimeout,omitempty"`
	IdleTimeout      metav1.Duration `json:"idleTimeout,omitempty"`
	ReadTimeout      metav1.Duration `json:"readTimeout,omitempty"`
	// MaxConns caps the hub's open connections (default 12,000, for
	// 10,000 nodes; at most RLIMIT_NOFILE less 1,024), MaxConnsPerIP those
	// from one address (default 32: the boxes of a store behind one NAT;
	// raise it behind a TCP proxy or a carrier-grade NAT), and
	// AcceptRate/AcceptBurst new connections per second (defaults 1,500
	// and 1,500), AcceptRatePerIP/AcceptBurstPerIP those of one address
	// (defaults 4 and 32; raise them with maxConnsPerIP). A connection
	// past MaxConns, MaxConnsPerIP or AcceptRatePerIP is closed at once,
	// before its TLS handshake; one past AcceptRate waits, not accepted
	// yet, in the listen backlog for its turn.
	MaxConns         int     `json:"maxConns,omitempty"`
	MaxConnsPerIP    int     `json:"maxConnsPerIP,omitempty"`
	AcceptRate       float64 `json:"acceptRate,omitempty"`
	AcceptBurst      int     `json:"acceptBurst,omitempty"`
	AcceptRatePerIP  float64 `json:"acceptRatePerIP,omitempty"`
	AcceptBurstPerIP int     `json:"acceptBurstPerIP,omitempty"`
	// SessionRate/SessionBurst pace the sessions the hub starts (defaults
	// 1,000 a second and 1,000 at once: 10,000 nodes back in about 10 s).
	// An authenticated edge past them is answered 503 with a Retry-After
	// that spreads the edges turned away at that rate; the hub also tells
	// edges how long their back-off may grow (its sessions / SessionRate,
	// at least 2 s), so a fleet coming back after an outage arrives about
	// as fast as the hub takes it, and one node is back within seconds.
	SessionRate float64 `json:"sessionRate,omitempty"`
	// MaxHandshakes caps the connections in their TLS handshake at once
	// (default 1,024); past it the hub stops accepting until one ends, so
	// a fleet reconnecting together never makes the hub run handshakes
	// until they time out, and the edges waiting in the listen backlog
	// keep the ClientHello they sent.
	MaxHandshakes int `json:"maxHandshakes,omitempty"`
	SessionBurst  int `json:"sessionBurst,omitempty"`
	// DrainTime is how long a graceful stop (SIGTERM) spends sending the
	// replica's edges away (default 5s): the hub stops listening and
	// /readyz fails, then its sessions are closed one by one, evenly over
	// DrainTime, and each edge reconnects at once to another replica.
	// The other components run until the drain is over. Keep it below the
	// pod's terminationGracePeriodSeconds (30s in manifests/cloudcore).
	DrainTime metav1.Duration `json:"drainTime,omitempty"`
	// RebalanceRate is the most edge sessions per second a replica sends
	// away to even out the replicas' loads (default 20; -1 turns
	// rebalancing off). With peers (peerAddr and peers or peerService)
	// each replica asks the others their sessions every 2 s over the peer
	// channel; one holding more than its share ceil(total/replicas) plus
	// a slack (the larger of 2 and 5%), or more than its share while a
	// peer holds less than the share less the slack, asks its excess to
	// reconnect, as a drain does, and the Service spreads them: a replica
	// that restarted gets its share back, within the slack. Nothing moves while a replica starts or drains,
	// nor for RebalanceSettle (default 15s) after the set of live replicas
	// changed; with one replica, never.
	RebalanceRate   float64         `json:"rebalanceRate,omitempty"`
	RebalanceSettle metav1.Duration `json:"rebalanceSettle,omitempty"`
	// MaxInventory is the most objects an edge's Hello may list (default
	// 20,000).
	MaxInventory int `json:"maxInventory,omitempty"`
	// MaxUpstreamInFlight is the most messages of one node waiting for
	// their API write (default 256): at it, the hub stops reading the
	// node's session. UpstreamRate and UpstreamBurst limit each node's
	// messages (defaults 50/s and 200; heartbeats and acks not counted):
	// statuses and certificate requests past it wait, Events past it are
	// dropped (and counted).
	MaxUpstreamInFlight int     `json:"maxUpstreamInFlight,omitempty"`
	UpstreamRate        float64 `json:"upstreamRate,omitempty"`
	UpstreamBurst       int     `json:"upstreamBurst,omitempty"`
	// KubeletProxySocket, if set, is the unix socket (made with mode 0600)
	// where cloudcore serves the API server's egress proxy to edge nodes'
	// kubelet API (package kubeletproxy): kubectl logs, exec, attach,
	// port-forward and the node proxy for edge pods. Point the API
	// server's --egress-selector-config-file at it (egress "cluster",
	// proxyProtocol HTTPConnect, transport uds); cloudcore then runs on the
	// API server's host. Empty: off.
	KubeletProxySocket string `json:"kubeletProxySocket,omitempty"`
	// KubeletProxyAddr, if set, is a TCP address (host:port) where the same
	// proxy takes CONNECTs to edge nodes' kubelet port only, never dialing
	// anything else: for clients that reach kubelets themselves through an
	// HTTPS proxy (metrics-server with HTTPS_PROXY=http://<this> and
	// --kubelet-preferred-address-types=Hostname). Each request is
	// authenticated and authorized as on the socket (its bearer token by
	// TokenReview, then nodes/metrics, nodes/stats, ...).
	KubeletProxyAddr string `json:"kubeletProxyAddr,omitempty"`
	// KubeletProxyNoDirectDial refuses the API server's other "cluster"
	// traffic (to pods, services, webhooks, ordinary nodes) instead of
	// dialing it directly. Set it only where the API server reaches
	// nothing but edge nodes.
	KubeletProxyNoDirectDial bool `json:"kubeletProxyNoDirectDial,omitempty"`
	// PeerAddr, if set, is the TCP address (host:port) where this replica
	// serves its peers, the other cloudcore replicas, streams to the edge
	// nodes whose session it holds: a kubelet proxy request (kubectl logs,
	// exec, ...) that reaches a replica without the node's session is
	// relayed by the one with it. Mutual TLS with peer certificates of the
	// CA the replicas share (pki.IssuePeer): edge nodes' certificates are
	// refused. Empty: off (one replica).
	PeerAddr string `json:"peerAddr,omitempty"`
	// Peers are the other replicas' PeerAddr (host:port), asked when a
	// node's session is not here. PeerService finds them instead: the
	// name of a headless Service in Namespace whose EndpointSlices list
	// the replicas' pods, with a port named "peer" (addresses of this
	// host are skipped).
	Peers       []string `json:"peers,omitempty"`
	PeerService string   `json:"peerService,omitempty"`
	// MaxStreamsPerNode and MaxStreams cap the kubelet API streams open to
	// one node and in total (defaults 32 and 1,024; package hub).
	MaxStreamsPerNode int `json:"maxStreamsPerNode,omitempty"`
	MaxStreams        int `json:"maxStreams,omitempty"`
	// Autonomy keeps the pods of an edge node whose link dropped from being
	// evicted (package cloudcore/autonomy); on unless Autonomy.Disabled.
	Autonomy autonomy.Config `json:"autonomy,omitempty"`

	// Listener, if set, is used instead of listening on ListenAddr (tests).
	Listener net.Listener `json:"-"`
	// PeerListener, if set, is used instead of listening on PeerAddr
	// (tests).
	PeerListener net.Listener `json:"-"`
	// KubeletProxyListener, if set, is used instead of
	// KubeletProxySocket (tests).
	KubeletProxyListener net.Listener `json:"-"`
	// HealthListener, if set, is used instead of listening on HealthAddr
	// (tests, and the simulator's cloudcore in a network namespace).
	HealthListener net.Listener `json:"-"`
	// Logger is where cloudcore logs (default slog.Default()).
	Logger *slog.Logger `json:"-"`
}

func (c *Config) validate() error {
	if c.ListenAddr == "" {
		c.ListenAddr = "0.0.0.0:10000"
	}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil && c.Listener == nil {
		return fmt.Errorf("listenAddr %q: %w", c.ListenAddr, err)
	}
	if c.Namespace == "" {
		c.Namespace = certs.DefaultNamespace
	}
	if c.CASecret == "" {
		c.CASecret = certs.DefaultCASecret
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("tlsCertFile and tlsKeyFile: set both or neither")
	}
	if c.TLSCertFile != "" && c.TLSCAFile == "" {
		return errors.New("tlsCAFile: required with tlsCertFile (the CA bundle edges verify the hub with)")
	}
	if len(c.Tokens) > 0 || c.TokenFile != "" {
		return errors.New("tokens, tokenFile: shared bootstrap tokens are no longer accepted; " +
			"create a join token per edge with `cloudcore token create` and join it with `edgecore join`")
	}
	if c.ServingCertValidity.Duration == 0 {
		c.ServingCertValidity.Duration = 90 * 24 * time.Hour
	}
	if c.ClientCertValidity.Duration == 0 {
		c.ClientCertValidity.Duration = 365 * 24 * time.Hour
	}
	if c.RenewGracePeriod.Duration == 0 {
		c.RenewGracePeriod.Duration = 90 * 24 * time.Hour
	}
	if c.ServingCertValidity.Duration < 3*time.Second || c.ClientCertValidity.Duration < time.Minute ||
		c.RenewGracePeriod.Duration < 0 {
		return fmt.Errorf("servingCertValidity %s (at least 3s), clientCertValidity %s (at least 1m), "+
			"renewGracePeriod %s (not negative)", c.ServingCertValidity, c.ClientCertValidity, c.RenewGracePeriod)
	}
	if c.HeartbeatInterval.Duration == 0 {
		c.HeartbeatInterval.Duration = 30 * time.Second
	}
	if c.SessionTimeout.Duration == 0 {
		c.SessionTimeout.Duration = c.HeartbeatInterval.Duration * 5 / 2
	}
	if c.HeartbeatInterval.Duration < 0 || c.SessionTimeout.Duration <= c.HeartbeatInterval.Duration {
		return fmt.Errorf("heartbeatInterval %s, sessionTimeout %s: want 0 < heartbeatInterval < sessionTimeout",
			c.HeartbeatInterval, c.SessionTimeout)
	}
	if c.DrainTime.Duration == 0 {
		c.DrainTime.Duration = 5 * time.Second
	}
	if (c.RebalanceRate < 0 && c.RebalanceRate != -1) || c.RebalanceSettle.Duration < 0 {
		return fmt.Errorf("rebalanceRate %g, rebalanceSettle %s: want a rate >= 0 (or -1: off) and a settle >= 0",
			c.RebalanceRate, c.RebalanceSettle)
	}
	if c.DrainTime.Duration < 0 || c.DrainTime.Duration > 10*time.Minute {
		return fmt.Errorf("drainTime %s: want 0 to 10m", c.DrainTime)
	}
	if c.LeaseDuration.Duration == 0 {
		c.LeaseDuration.Duration = 40 * time.Second
	}
	if c.LeaseDuration.Duration < 2*time.Second {
		return fmt.Errorf("leaseDuration %s: want at least 2s", c.LeaseDuration)
	}
	if c.KubeQPS < 0 || c.KubeBurst < 0 {
		return errors.New("kubeQPS and kubeBurst must not be negative")
	}
	if c.KubeBurst > 0 && c.KubeQPS == 0 {
		return errors.New("kubeBurst is set but kubeQPS is not: the burst of the scaled limit follows it")
	}
	if c.KubeQPS > 0 && c.KubeBurst == 0 {
		c.KubeBurst = max(1, int(2*c.KubeQPS))
	}
	if c.StatusWorkers == 0 {
		c.StatusWorkers = 32
	}
	if c.StatusWorkers < 0 || c.LeaseWorkers < 0 {
		return errors.New("statusWorkers and leaseWorkers must not be negative")
	}
	if c.InformerResync.Duration < 0 {
		return fmt.Errorf("informerResync %s: must not be negative", c.InformerResync)
	}
	if c.DeviceCRDPoll.Duration == 0 {
		c.DeviceCRDPoll.Duration = 30 * time.Second
	}
	if c.DeviceCRDPoll.Duration < 0 {
		return fmt.Errorf("deviceCRDPoll %s: must not be negative", c.DeviceCRDPoll)
	}
	if c.KubeletProxyAddr != "" {
		if _, _, err := net.SplitHostPort(c.KubeletProxyAddr); err != nil {
			return fmt.Errorf("kubeletProxyAddr %q: %w", c.KubeletProxyAddr, err)
		}
	}
	if c.PeerAddr != "" {
		if _, _, err := net.SplitHostPort(c.PeerAddr); err != nil {
			return fmt.Errorf("peerAddr %q: %w", c.PeerAddr, err)
		}
	}
	for i, a := range c.Peers {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("peers[%d] %q: %w", i, a, err)
		}
	}
	if c.PeerService != "" && len(c.Peers) > 0 {
		return errors.New("peers and peerService: set one")
	}
	if errs := validation.IsDNS1035Label(c.PeerService); c.PeerService != "" && len(errs) > 0 {
		return fmt.Errorf("peerService %q: %s", c.PeerService, strings.Join(errs, "; "))
	}
	for i, ip := range c.CertIPs {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("certIPs[%d]: %q is not an IP address", i, ip)
		}
	}
	if err := c.Autonomy.Validate(); err != nil {
		return fmt.Errorf("autonomy: %w", err)
	}
	switch c.HealthAddr {
	case "":
		c.HealthAddr = "127.0.0.1:10001"
	case "-":
	default:
		if _, _, err := net.SplitHostPort(c.HealthAddr); err != nil {
			return fmt.Errorf("healthAddr %q: %w", c.HealthAddr, err)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// healthAddr is HealthAddr for the hub ("" for none).
func (c *Config) healthAddr() string {
	if c.HealthAddr == "-" {
		return ""
	}
	return c.HealthAddr
}

// CloudCore is a configured cloudcore.
type CloudCore struct {
	cfg        Config
	Hub        *hub.Hub
	Dispatcher *dispatch.Dispatcher
	Status     *status.Writer
	// CA is cloudcore's certificate authority (from its Secret).
	CA *pki.CA
	// Bundle is the PEM edges trust the hub with; its pin (pki.Hash) is in
	// every join token.
	Bundle []byte
	// Enroll joins nodes and checks their identity.
	Enroll *enroll.Service
	// KubeletProxy is the API server's egress proxy to edge nodes; nil
	// when off (no KubeletProxySocket).
	KubeletProxy *kubeletproxy.Proxy
	// KubeletProxyTCP serves KubeletProxyAddr (edge nodes only); nil
	// when unset.
	KubeletProxyTCP *kubeletproxy.Proxy
	// Peers relays kubelet API streams between replicas; nil when off
	// (no PeerAddr, Peers or PeerService).
	Peers    *kubeletproxy.Peers
	kubeAuth *kubeletproxy.KubeAuth
	serving  *certs.Serving
	client   kubernetes.Interface
	// election runs the cluster-wide singletons (the autonomy
	// controller) on one replica at a time.
	election *election
	// autonomy is the autonomy controller this replica last ran as the
	// leader, nil before.
	autonomy atomic.Pointer[autonomy.Controller]
	// crdClient installs the CRDs; nil with Config.SkipCRDInstall.
	crdClient apiextensions.Interface
	// limiter is the client's rate limit when Config.KubeQPS is unset; nil
	// otherwise.
	limiter *scaledLimiter
}

// New checks cfg and builds cloudcore; nothing runs until Run.
func New(cfg Config) (*CloudCore, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	log := cfg.Logger
	rc, err := restConfig(cfg.Kubeconfig)
	if err != nil {
		return nil, err
	}
	var limiter *scaledLimiter
	if cfg.KubeQPS > 0 {
		rc.QPS, rc.Burst = cfg.KubeQPS, cfg.KubeBurst
	} else {
		limiter = newScaledLimiter()
		rc.RateLimiter = limiter
	}
	rc.UserAgent = "tether-cloudcore"
	// The built-in kinds (pods, nodes, leases, ...) travel as protobuf, as
	// between the Kubernetes components: decoding the watch events and the
	// answers to the status writes as JSON was an eighth of cloudcore's CPU
	// in a reconnect storm. Custom resources (devices) and the CRDs keep
	// JSON (rc), which is all the API server serves for them.
	krc := rest.CopyConfig(rc)
	krc.ContentType = "application/vnd.kubernetes.protobuf"
	krc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	client, err := kubernetes.NewForConfig(krc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	lrc := rest.CopyConfig(krc)
	lrc.RateLimiter, lrc.QPS, lrc.Burst = nil, -1, 0 // no client-side limit, see KubeQPS
	lrc.UserAgent = "tether-cloudcore-leases"
	leaseClient, err := kubernetes.NewForConfig(lrc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes lease client: %w", err)
	}
	cc := &CloudCore{cfg: cfg, limiter: limiter, client: client}
	if err := cc.loadCerts(); err != nil {
		return nil, err
	}

	if !cfg.SkipCRDInstall {
		if cc.crdClient, err = apiextensions.NewForConfig(rc); err != nil {
			return nil, fmt.Errorf("apiextensions client: %w", err)
		}
	}
	devices, err := dispatch.NewDevicesClient(rc)
	if err != nil {
		return nil, err
	}
	cc.Dispatcher, err = dispatch.New(client, devices,
		dispatch.Config{Resync: cfg.InformerResync.Duration, DevicePoll: cfg.DeviceCRDPoll.Duration},
		log.With(slog.String("component", "dispatch")))
	if err != nil {
		return nil, err
	}
	cc.Status, err = status.New(client, status.RESTDeviceClient(devices),
		status.InformerLister(cc.Dispatcher.Pods(), cc.Dispatcher.Nodes(), cc.Dispatcher),
		status.Config{Workers: cfg.StatusWorkers, LeaseWorkers: cfg.LeaseWorkers, LeaseClient: leaseClient,
			LeaseDuration: cfg.LeaseDuration.Duration},
		log.With(slog.String("component", "status")))
	if err != nil {
		return nil, err
	}
	cc.Enroll, err = enroll.New(enroll.Config{
		CA:             cc.CA,
		Bundle:         cc.Bundle,
		ClientValidity: cfg.ClientCertValidity.Duration,
		RenewGrace:     cfg.RenewGracePeriod.Duration,
		Tokens:         joinTokens{client},
		Nodes:          &enroll.KubeNodes{Client: client, Lister: cc.Dispatcher.Nodes()},
		Log:            log.With(slog.String("component", "enroll")),
	})
	if err != nil {
		return nil, err
	}
	// The kubelet proxy's and /metrics' authentication and authorization,
	// delegated to the API server.
	cc.kubeAuth = kubeletproxy.NewKubeAuth(client, log.With(slog.String("component", "auth")))
	relay, err := newAPIRelay(rc, cc.Dispatcher.Pods(), tokenRequests{create: func(ctx context.Context, ns, sa string,
		tr *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
		return client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
	}}, log.With(slog.String("component", "relay")))
	if err != nil {
		return nil, err
	}
	handlers := cc.Enroll.Handlers()
	handlers["/metrics"] = cc.metricsHandler()
	// Session tickets any replica can open (keys derived from the CA): a
	// fleet reconnecting after an outage resumes without signatures, and
	// without its certificates verified again (enroll's entries).
	tickets, err := certs.NewTicketKeys(cc.CA, cc.Enroll, nil)
	if err != nil {
		return nil, err
	}
	cc.Hub, err = hub.New(hub.Config{
		Addr: cfg.ListenAddr,
		TLS: &tls.Config{GetCertificate: cc.serving.GetCertificate, MinVersion: tls.VersionTLS12,
			ClientAuth: tls.RequestClientCert, WrapSession: tickets.Wrap, UnwrapSession: tickets.Unwrap},
		Auth:              cc.Enroll,
		Reviews:           &accessReviewer{client: client, pods: cc.Dispatcher.Pods()},
		Relay:             relay,
		Handlers:          handlers,
		HeartbeatInterval: cfg.HeartbeatInterval.Duration,
		SessionTimeout:    cfg.SessionTimeout.Duration,
		// Twice per renewal interval (LeaseDuration/4): a renewal is
		// never more than half an interval late.
		AliveInterval:       cfg.LeaseDuration.Duration / 8,
		HandshakeTimeout:    cfg.HandshakeTimeout.Duration,
		IdleTimeout:         cfg.IdleTimeout.Duration,
		ReadTimeout:         cfg.ReadTimeout.Duration,
		MaxConns:            cfg.MaxConns,
		MaxConnsPerIP:       cfg.MaxConnsPerIP,
		AcceptRate:          cfg.AcceptRate,
		AcceptBurst:         cfg.AcceptBurst,
		AcceptRatePerIP:     cfg.AcceptRatePerIP,
		AcceptBurstPerIP:    cfg.AcceptBurstPerIP,
		SessionRate:         cfg.SessionRate,
		MaxHandshakes:       cfg.MaxHandshakes,
		SessionBurst:        cfg.SessionBurst,
		DrainTime:           cfg.DrainTime.Duration,
		MaxInventory:        cfg.MaxInventory,
		MaxUpstreamInFlight: cfg.MaxUpstreamInFlight,
		UpstreamRate:        cfg.UpstreamRate,
		UpstreamBurst:       cfg.UpstreamBurst,
		MaxStreamsPerNode:   cfg.MaxStreamsPerNode,
		MaxStreams:          cfg.MaxStreams,
		HealthAddr:          cfg.healthAddr(),
		HealthListener:      cfg.HealthListener,
		PeerLoads:           cc.peerLoads(cfg),
		Rebalance:           hub.RebalanceConfig{Rate: max(cfg.RebalanceRate, 0), Settle: cfg.RebalanceSettle.Duration},
	}, cc.Dispatcher, cc.Status, log.With(slog.String("component", "hub")))
	if err != nil {
		return nil, err
	}
	cc.Dispatcher.SetNotifier(cc.Hub)
	if cfg.PeerAddr != "" || cfg.PeerListener != nil || len(cfg.Peers) > 0 || cfg.PeerService != "" {
		if cc.Peers, err = kubeletproxy.NewPeers(kubeletproxy.PeerConfig{
			CA:       cc.CA,
			Local:    kubeletNodes{d: cc.Dispatcher, h: cc.Hub}.localStream,
			Discover: peerDiscovery(cfg, client),
			Load:     cc.Hub.Load,
			Logger:   log.With(slog.String("component", "peers")),
		}); err != nil {
			return nil, err
		}
	}
	if cfg.KubeletProxySocket != "" || cfg.KubeletProxyListener != nil || cfg.KubeletProxyAddr != "" {
		plog := log.With(slog.String("component", "kubeletproxy"))
		pcfg := kubeletproxy.Config{
			Nodes:  kubeletNodes{cc.Dispatcher, cc.Hub, cc.Peers},
			Certs:  kubeletproxy.NodeCerts(cc.CA, cfg.ServingCertValidity.Duration),
			Auth:   cc.kubeAuth,
			Logger: plog,
		}
		if cfg.KubeletProxyAddr != "" {
			if cc.KubeletProxyTCP, err = kubeletproxy.New(pcfg); err != nil { // DirectDial off
				return nil, err
			}
		}
		if cfg.KubeletProxySocket != "" || cfg.KubeletProxyListener != nil {
			pcfg.DirectDial = !cfg.KubeletProxyNoDirectDial
			if cc.KubeletProxy, err = kubeletproxy.New(pcfg); err != nil {
				return nil, err
			}
		}
	}
	if !cfg.Autonomy.Disabled {
		// Checked here, made anew each time this replica is elected.
		if _, err := autonomy.New(client, cfg.Autonomy, cfg.InformerResync.Duration, log); err != nil {
			return nil, err
		}
	}
	cc.election = newElection(leaseClient, cfg.Namespace, log.With(slog.String("component", "leader")))
	return cc, nil
}

// loadCerts loads (or creates) the CA from its Secret and makes the hub's
// serving certificate.
func (cc *CloudCore) loadCerts() error {
	cfg := cc.cfg
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ca, err := certs.LoadOrCreateCA(ctx, cc.client, cfg.Namespace, cfg.CASecret, cfg.Logger)
	if err != nil {
		return err
	}
	cc.CA, cc.Bundle = ca, ca.CertPEM()
	if cfg.TLSCertFile != "" {
		b, err := os.ReadFile(cfg.TLSCAFile)
		if err != nil {
			return fmt.Errorf("tlsCAFile: %w", err)
		}
		if _, err := pki.ParseCertsPEM(b); err != nil {
			return fmt.Errorf("tlsCAFile %s: %w", cfg.TLSCAFile, err)
		}
		cc.Bundle = append(cc.Bundle, b...)
		cc.serving, err = certs.NewFileServing(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.Logger)
		return err
	}
	dns := append([]string{"localhost"}, cfg.CertDNSNames...)
	if h, err := os.Hostname(); err == nil {
		dns = append(dns, h)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1)}
	for _, s := range cfg.CertIPs {
		ips = append(ips, net.ParseIP(s))
	}
	cc.serving, err = certs.NewIssuedServing(ca, dns, ips, cfg.ServingCertValidity.Duration,
		cfg.Logger.With(slog.String("component", "certs")))
	return err
}

// Leading reports whether this replica runs the cluster-wide singletons now
// (it holds LeaderLease).
func (cc *CloudCore) Leading() bool { return cc.election.Leading() }

// AutonomyStats returns the counters of the autonomy controller this
// replica runs (or last ran) as the leader; zero if it never led.
func (cc *CloudCore) AutonomyStats() autonomy.Stats {
	if a := cc.autonomy.Load(); a != nil {
		return a.Stats()
	}
	return autonomy.Stats{}
}

// Serving is the hub's serving certificate now.
func (cc *CloudCore) Serving() *x509.Certificate { return cc.serving.Leaf() }

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		rc, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig: none given and not in a cluster: %w", err)
		}
		return rc, nil
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	return rc, nil
}

// Run runs cloudcore until ctx ends or a component fails. It installs the
// device CRDs first (unless Config.SkipCRDInstall); the hub starts listening
// once the dispatcher's caches are synced. When ctx ends (SIGTERM), the hub
// drains first (DrainTime: its edges sent away one by one; the messages of
// each not written yet are given up as its session ends, and the edge sends
// them again to the replica it reaches next), then every component stops.
func (cc *CloudCore) Run(outer context.Context) error {
	if cc.crdClient != nil {
		if err := installCRDs(outer, cc.crdClient, cc.cfg.Logger.With(slog.String("component", "crds"))); err != nil {
			return err
		}
	}
	inner, stop := context.WithCancel(context.WithoutCancel(outer))
	defer stop()
	g, ctx := errgroup.WithContext(inner)
	g.Go(func() error {
		select {
		case <-ctx.Done():
			return nil
		case <-outer.Done():
		}
		dctx, cancel := context.WithTimeout(ctx, cc.cfg.DrainTime.Duration+10*time.Second)
		defer cancel()
		if err := cc.Hub.Drain(dctx); err != nil {
			cc.cfg.Logger.Warn("hub drain cut short", slog.Any("err", err))
		}
		stop()
		return nil
	})
	synced := make(chan struct{})
	g.Go(func() error {
		if err := cc.Dispatcher.Start(ctx); err != nil {
			if outer.Err() != nil {
				return nil // stopped while its caches synced: a clean stop
			}
			return err
		}
		close(synced)
		<-ctx.Done()
		cc.Dispatcher.Shutdown()
		return nil
	})
	g.Go(func() error { return cc.Status.Start(ctx) })
	g.Go(func() error { return cc.serving.Start(ctx) })
	if cc.limiter != nil {
		g.Go(func() error {
			t := time.NewTicker(limiterResize)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
					cc.limiter.resize(int(cc.Hub.Stats().Sessions))
				}
			}
		})
	}
	if !cc.cfg.Autonomy.Disabled {
		g.Go(func() error {
			return cc.election.run(ctx, func(ctx context.Context) error {
				a, err := autonomy.New(cc.client, cc.cfg.Autonomy, cc.cfg.InformerResync.Duration,
					cc.cfg.Logger.With(slog.String("component", "autonomy")))
				if err != nil {
					return err
				}
				cc.autonomy.Store(a)
				return a.Start(ctx)
			})
		})
	}
	if cc.kubeAuth != nil {
		g.Go(func() error { return cc.kubeAuth.Start(ctx) })
	}
	if cc.KubeletProxy != nil {
		ln := cc.cfg.KubeletProxyListener
		if ln == nil {
			var err error
			if ln, err = listenUnix(cc.cfg.KubeletProxySocket); err != nil {
				return err
			}
		}
		g.Go(func() error { return cc.KubeletProxy.Serve(ctx, ln) })
	}
	if cc.Peers != nil && (cc.cfg.PeerListener != nil || cc.cfg.PeerAddr != "") {
		ln := cc.cfg.PeerListener
		if ln == nil {
			var err error
			if ln, err = net.Listen("tcp", cc.cfg.PeerAddr); err != nil {
				return fmt.Errorf("peerAddr: %w", err)
			}
		}
		g.Go(func() error { return cc.Peers.Serve(ctx, ln) })
	}
	if cc.KubeletProxyTCP != nil {
		ln, err := net.Listen("tcp", cc.cfg.KubeletProxyAddr)
		if err != nil {
			return fmt.Errorf("kubeletProxyAddr: %w", err)
		}
		g.Go(func() error { return cc.KubeletProxyTCP.Serve(ctx, ln) })
	}
	g.Go(func() error {
		select {
		case <-synced:
		case <-ctx.Done():
			return nil
		}
		if cc.cfg.Listener != nil {
			return cc.Hub.Serve(ctx, cc.cfg.Listener)
		}
		return cc.Hub.Start(ctx)
	})
	return g.Wait()
}
