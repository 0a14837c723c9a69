// Package edgecore wires the edge side of Tether: the store (bbolt), the
// agent (the session with the cloud hub), the pod manager, the container
// runtime, the metaserver, and the device twins over MQTT with their
// embedded broker. The binary in cmd/edgecore reads a Config and calls Run; the
// simulator runs many of them in one process the same way.
package edgecore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tether-edge/tether/devices/broker"

	"github.com/tether-edge/tether/edgecore/accessreview"
	"github.com/tether-edge/tether/edgecore/agent"
	"github.com/tether-edge/tether/edgecore/apirelay"
	"github.com/tether-edge/tether/edgecore/credentials"
	"github.com/tether-edge/tether/edgecore/devicetwin"
	"github.com/tether-edge/tether/edgecore/events"
	"github.com/tether-edge/tether/edgecore/kubeletserver"
	"github.com/tether-edge/tether/edgecore/link"
	"github.com/tether-edge/tether/edgecore/metaserver"
	"github.com/tether-edge/tether/edgecore/nodestats"
	"github.com/tether-edge/tether/edgecore/nodestatus"
	"github.com/tether-edge/tether/edgecore/pods"
	"github.com/tether-edge/tether/edgecore/resolver"
	"github.com/tether-edge/tether/edgecore/runtime"
	"github.com/tether-edge/tether/edgecore/runtime/cri"
	"github.com/tether-edge/tether/edgecore/runtime/fake"
	"github.com/tether-edge/tether/edgecore/satoken"
	"github.com/tether-edge/tether/edgecore/staticpods"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/edgecore/svcproxy"
	"github.com/tether-edge/tether/protocol"
	"github.com/tether-edge/tether/streams"
)

// Config is edgecore's whole configuration, read from one YAML file. Zero
// values take the defaults that validate fills in.
type Config struct {
	// NodeName is the node's name in Kubernetes (default: the host name).
	NodeName string `json:"nodeName,omitempty"`
	// Cloud says how to reach the hub.
	Cloud CloudConfig `json:"cloud"`
	// DataDir holds the store (default /var/lib/tether/edgecore).
	DataDir string `json:"dataDir,omitempty"`
	// Runtime is the container runtime: "cri" (the default: containerd
	// through the CRI API, configured by CRI) or "fake" (in memory, for
	// the simulator and tests: pods are reported Running and Ready but
	// nothing runs; edgecore warns so at start). "fake" is only ever used
	// when asked for by name.
	Runtime string `json:"runtime,omitempty"`
	// CRI configures the "cri" runtime: containerd's socket, the pause
	// image, the pod log directory, the pod cgroup parent... (fields:
	// cri.Config; its rootDir defaults to dataDir).
	CRI cri.Config `json:"cri,omitempty"`
	// NodeIP is the address reported for the node (default: the first
	// non-loopback IPv4 address).
	NodeIP string `json:"nodeIP,omitempty"`
	// Labels are put on the Node when the hub creates it.
	Labels map[string]string `json:"labels,omitempty"`
	// MaxPods is the node's pod capacity (default 110).
	MaxPods int `json:"maxPods,omitempty"`
	// ReconnectInitial and ReconnectMax bound the reconnect back-off
	// (default 1s and 2s; each delay is drawn from [0, d], d doubling from
	// ReconnectInitial to the cap). The cap is ReconnectMax, or the bound
	// the hub advertised in its last Welcome if that is larger (it sizes
	// it to its fleet: a hub of 10,000 nodes asks for about 10s), so that
	// the node is back within seconds of the hub's return however long it
	// was away, and a fleet comes back no faster than the hub takes it.
	// A hub that sheds a connection (503) says when to come back; that is
	// honoured instead.
	ReconnectInitial metav1.Duration `json:"reconnectInitial,omitempty"`
	ReconnectMax     metav1.Duration `json:"reconnectMax,omitempty"`
	// NodeStatusInterval is how often the node status is reported when
	// nothing in it changed (default 5m); it is checked for changes every
	// minute (or NodeStatusInterval, if shorter) and a change is reported
	// at once. The node's liveness does not depend on it: the cloud renews
	// the node's Lease while the link is up.
	NodeStatusInterval metav1.Duration `json:"nodeStatusInterval,omitempty"`
	// PodResyncInterval is how often every pod is synced with the runtime
	// (default 10s).
	PodResyncInterval metav1.Duration `json:"podResyncInterval,omitempty"`
	// StaticPodPath is the directory of static pod manifests (default
	// /etc/tether/manifests; a missing directory is watched for). "-"
	// turns static pods off (no directory is read or watched).
	StaticPodPath string `json:"staticPodPath,omitempty"`
	// OutboxMax bounds the updates queued while the cloud is away
	// (default 10000; statuses are coalesced per pod, events dropped first).
	OutboxMax int `json:"outboxMax,omitempty"`
	// NodeEvents records the events about the node that the kubelet
	// records: Starting at each start, and NodeReady, NodeNotReady,
	// NodeHasSufficientMemory, NodeHasDiskPressure... when its conditions
	// change (all of them at start) (default true; the simulator's hollow
	// nodes turn it off). Events about pods are always recorded.
	NodeEvents *bool `json:"nodeEvents,omitempty"`
	// PodWorkers is how many pods are synced or killed at once (default 8;
	// one pod is never synced twice at once).
	PodWorkers int `json:"podWorkers,omitempty"`
	// MetaServer is the read-only Kubernetes API on loopback for the
	// node's applications (see package metaserver).
	MetaServer MetaServerConfig `json:"metaserver,omitempty"`
	// Devices configures the device twins over MQTT (see package
	// devicetwin) and the broker they use.
	Devices DevicesConfig `json:"devices,omitempty"`
	// DNS is the resolver that answers the cluster's Service names to the
	// node's pods from the store (see package resolver). Off by default.
	DNS DNSConfig `json:"dns,omitempty"`
	// InCluster gives the node's pods the Kubernetes API at the edge,
	// as client-go's in-cluster config finds it (see packages satoken,
	// accessreview and metaserver). Off by default.
	InCluster InClusterConfig `json:"inCluster,omitempty"`
	// Services routes the traffic of the node's pods, and of the host, to
	// ClusterIPs: a ready endpoint the node holds, with or without the
	// cloud (see package svcproxy). On by default with dns.enable and the
	// cri runtime: a pod that resolves a Service's name expects its
	// ClusterIP to answer.
	Services ServicesConfig `json:"services,omitempty"`
	// NodeHealth says how the node's conditions (Ready, MemoryPressure,
	// DiskPressure, PIDPressure) are measured, and the thresholds of
	// pressure (see package nodestatus).
	NodeHealth NodeHealthConfig `json:"nodeHealth,omitempty"`

	// Logger is where edgecore logs (default slog.Default()).
	Logger *slog.Logger `json:"-"`
	// RuntimeImpl, if set, is used instead of the one Runtime names.
	RuntimeImpl runtime.Runtime `json:"-"`
	// CommitHook, if set, hears each commit of objects from the cloud
	// before they are acknowledged (agent.Config.CommitHook); it must not
	// block. The simulator times dispatch with it. The dialer the
	// simulator routes each node through is Cloud.Dialer.
	CommitHook func(agent.Commit) `json:"-"`
	// KubeletSocket is the unix socket (mode 0600) where edgecore serves
	// its kubelet API on the box, for `edgecore ctl logs|exec` with or
	// without the cloud (default dataDir/kubelet.sock; "-": none).
	KubeletSocket string `json:"kubeletSocket,omitempty"`
	// KubeletStats, if set, serves the kubelet API's /stats/summary and
	// /metrics/resource (package kubeletserver) instead of EdgeCore.Stats
	// (the node from /proc, its pods from the CRI runtime).
	KubeletStats http.Handler `json:"-"`
}

// CloudConfig says how to reach the hub.
type CloudConfig struct {
	// URL is the hub's address, wss://host:port/v1/connect.
	URL string `json:"url"`
	// CAFile is the CA bundle the hub's certificate must chain to
	// (required; edgecore join writes it after checking it against the
	// join token's pin). The system's roots are never trusted.
	CAFile string `json:"caFile"`
	// CredentialsFile holds the node's private key and client certificate
	// (PEM, mode 0600; written by edgecore join, replaced on each renewal).
	// The certificate names the node: nodeName must match it.
	CredentialsFile string `json:"credentialsFile"`
	// Token and TokenFile are refused: shared bootstrap tokens are gone;
	// run edgecore join.
	Token     string `json:"token,omitempty"`
	TokenFile string `json:"tokenFile,omitempty"`
	// DialTimeout bounds connecting and the handshake (default 15s).
	DialTimeout metav1.Duration `json:"dialTimeout,omitempty"`

	// Dialer, if set, opens sessions instead of a dialer built from the
	// fields above (the simulator's hollow nodes); CredentialsFile is then
	// not read.
	Dialer agent.Dialer `json:"-"`
}

// NodeHealthConfig says how the node's conditions are computed, as the
// kubelet computes them. Ready is False, with the reason, while the
// container runtime does not answer its CRI Status call
// (ContainerRuntimeDown) or reports RuntimeReady or NetworkReady false
// (ContainerRuntimeNotReady, NetworkNotReady). The pressure conditions
// compare what is available with the thresholds below, the kubelet's
// evictionHard defaults. Under disk pressure every unused image old
// enough (cri.imageMinimumGCAge) is removed; when that frees nothing, or
// memory or PIDs are short, one pod per period is evicted (see
// pods.EvictionOrder; never a static or critical pod). A change is
// reported at once (queued in the outbox while the cloud is away), not at
// the next nodeStatusInterval.
type NodeHealthConfig struct {
	// Period is how often the signals are measured (default 5s). A
	// runtime that stops answering makes the node NotReady within two
	// periods (one to notice, one for the call to time out).
	Period metav1.Duration `json:"period,omitempty"`
	// MemoryAvailable: MemoryPressure while /proc/meminfo's MemAvailable
	// is below it (default 100Mi: memory.available<100Mi).
	MemoryAvailable resource.Quantity `json:"memoryAvailable,omitempty"`
	// NodeFSAvailablePercent: DiskPressure while the data directory's
	// file system has less than this percent available (default 10:
	// nodefs.available<10%).
	NodeFSAvailablePercent int `json:"nodefsAvailablePercent,omitempty"`
	// ImageFSAvailablePercent: DiskPressure while containerd's image file
	// system, if another one, has less than this percent available
	// (default 15: imagefs.available<15%).
	ImageFSAvailablePercent int `json:"imagefsAvailablePercent,omitempty"`
	// PIDAvailablePercent: PIDPressure while fewer than this percent of
	// the process IDs (the lower of kernel.pid_max and
	// kernel.threads-max) are free (default 10).
	PIDAvailablePercent int `json:"pidAvailablePercent,omitempty"`
	// PressureTransitionPeriod is how long a pressure condition stays
	// True after its signal cleared (default 5m, the kubelet's
	// evictionPressureTransitionPeriod).
	PressureTransitionPeriod metav1.Duration `json:"pressureTransitionPeriod,omitempty"`
}

func (h *NodeHealthConfig) validate() error {
	for name, d := range map[string]*metav1.Duration{"period": &h.Period, "pressureTransitionPeriod": &h.PressureTransitionPeriod} {
		if d.Duration < 0 {
			return fmt.Errorf("nodeHealth.%s: %s is negative", name, d.Duration)
		}
	}
	if h.Period.Duration == 0 {
		h.Period.Duration = 5 * time.Second
	}
	if h.PressureTransitionPeriod.Duration == 0 {
		h.PressureTransitionPeriod.Duration = 5 * time.Minute
	}
	if h.MemoryAvailable.Sign() < 0 {
		return fmt.Errorf("nodeHealth.memoryAvailable: %s is negative", h.MemoryAvailable.String())
	}
	if h.MemoryAvailable.IsZero() {
		h.MemoryAvailable = resource.MustParse("100Mi")
	}
	for _, p := range []struct {
		name string
		v    *int
		def  int
	}{{"nodefsAvailablePercent", &h.NodeFSAvailablePercent, 10}, {"imagefsAvailablePercent", &h.ImageFSAvailablePercent, 15},
		{"pidAvailablePercent", &h.PIDAvailablePercent, 10}} {
		if *p.v == 0 {
			*p.v = p.def
		}
		if *p.v < 1 || *p.v > 99 {
			return fmt.Errorf("nodeHealth.%s: %d is not in 1..99", p.name, *p.v)
		}
	}
	return nil
}

// thresholds are the engine's.
func (h *NodeHealthConfig) thresholds() nodestatus.Thresholds {
	return nodestatus.Thresholds{MemoryAvailable: h.MemoryAvailable.Value(), NodeFSAvailablePercent: h.NodeFSAvailablePercent,
		ImageFSAvailablePercent: h.ImageFSAvailablePercent, PIDAvailablePercent: h.PIDAvailablePercent,
		TransitionPeriod: h.PressureTransitionPeriod.Duration}
}

// MetaServerConfig configures the metaserver.
type MetaServerConfig struct {
	// Enable runs the metaserver (default true).
	Enable *bool `json:"enable,omitempty"`
	// Addr is the loopback address it listens on (default 127.0.0.1:10550;
	// any other host than a loopback one is refused: it serves secrets over
	// plain HTTP). Callers need a token from dataDir/credentials
	// (metaserver-node.token reads everything, metaserver-devices.token
	// the node and its devices; see package metaserver).
	Addr string `json:"addr,omitempty"`
}

// DNSConfig configures the edge resolver.
type DNSConfig struct {
	// Enable runs the resolver (default false).
	Enable bool `json:"enable,omitempty"`
	// Addr is the UDP address it listens on, one every pod reaches
	// (default <nodeIP>:53). With the cri runtime and cri.clusterDNS
	// empty, pods of dnsPolicy ClusterFirst get its IP as their name
	// server, so the port must then be 53.
	Addr string `json:"addr,omitempty"`
	// Allowed are the source networks (CIDRs) answered: the pod network,
	// such as 10.88.0.0/16 for containerd's default bridge. Loopback is
	// always allowed; nothing else is, so the resolver is never open to
	// the LAN or beyond.
	Allowed []string `json:"allowed,omitempty"`
	// Upstreams are the resolvers ("ip" or "ip:port") other names go to
	// (default the nameservers of /etc/resolv.conf).
	Upstreams []string `json:"upstreams,omitempty"`
	// Rate and Burst bound the queries per second of one source address
	// (default 200, burst 400).
	Rate  float64 `json:"rate,omitempty"`
	Burst int     `json:"burst,omitempty"`
}

func (c *Config) validateDNS() error {
	d := &c.DNS
	if !d.Enable {
		return nil
	}
	if d.Addr == "" {
		ip := c.NodeIP
		if ip == "" {
			ip = nodestatus.FirstIPv4()
		}
		if ip == "" {
			return errors.New("dns.addr: no node IP to listen on: set dns.addr or nodeIP")
		}
		d.Addr = net.JoinHostPort(ip, "53")
	}
	ap, err := netip.ParseAddrPort(d.Addr)
	if err != nil {
		return fmt.Errorf("dns.addr: %w", err)
	}
	for _, a := range d.Allowed {
		if _, err := netip.ParsePrefix(a); err != nil {
			return fmt.Errorf("dns.allowed: %w", err)
		}
	}
	if d.Rate < 0 {
		return fmt.Errorf("dns.rate: %v is negative", d.Rate)
	}
	if d.Burst < 0 {
		return fmt.Errorf("dns.burst: %d is negative", d.Burst)
	}
	if c.Runtime == "cri" && len(c.CRI.ClusterDNS) == 0 {
		if ap.Port() != 53 {
			return fmt.Errorf("dns.addr: %s: pods find a name server on port 53 only (or set cri.clusterDNS)", d.Addr)
		}
		c.CRI.ClusterDNS = []string{ap.Addr().String()}
	}
	return nil
}

// ServicesConfig configures Service routing.
type ServicesConfig struct {
	// Proxy turns the routing on or off (default: on when dns.enable is
	// true and the runtime is cri, off otherwise). It needs CAP_NET_ADMIN:
	// edgecore does not start when the rules cannot be applied. The rules
	// stay in the kernel while edgecore restarts; edgecore reset removes
	// them.
	Proxy *bool `json:"proxy,omitempty"`
	// ServiceCIDR is the cluster's service range, the API server's
	// --service-cluster-ip-range (default 10.96.0.0/12, kubeadm's; IPv4,
	// /8 or narrower). ClusterIPs inside it are routed; every other
	// address in it is rejected, so traffic for a ClusterIP the node does
	// not serve never leaves by the default route. A Service whose
	// ClusterIP is outside it is not routed (logged).
	ServiceCIDR string `json:"serviceCIDR,omitempty"`
	// Sources are the networks (CIDRs) whose traffic may use ClusterIPs:
	// the pod network (default dns.allowed). The host's own traffic always
	// may; any other source (a host of the LAN that routes the service
	// range to the node) is rejected like an unrouted ClusterIP. Empty, and
	// dns.allowed empty: any source may (as with kube-proxy; edgecore warns
	// at start). NodePorts are for any source.
	Sources []string `json:"sources,omitempty"`
	// Table is the nftables table (family inet) edgecore owns (default
	// "tether"; another name must start with "tether", so that neither
	// edgecore nor edgecore reset ever replaces a table of another
	// program); only for running several edgecores on one host (tests).
	Table string `json:"table,omitempty"`
}

func (c *Config) validateServices() error {
	s := &c.Services
	if s.Proxy == nil {
		on := c.DNS.Enable && c.Runtime == "cri" && c.RuntimeImpl == nil
		s.Proxy = &on
	}
	if s.ServiceCIDR == "" {
		s.ServiceCIDR = "10.96.0.0/12"
	}
	p, err := netip.ParsePrefix(s.ServiceCIDR)
	if err != nil {
		return fmt.Errorf("services.serviceCIDR: %w", err)
	}
	if !p.Addr().Is4() || p.Bits() < 8 {
		return fmt.Errorf("services.serviceCIDR: %s: want an IPv4 range of /8 or narrower", s.ServiceCIDR)
	}
	if p != p.Masked() {
		return fmt.Errorf("services.serviceCIDR: %s has host bits set (%s?)", s.ServiceCIDR, p.Masked())
	}
	if len(s.Sources) == 0 {
		s.Sources = slices.Clone(c.DNS.Allowed)
	}
	for _, src := range s.Sources {
		p, err := netip.ParsePrefix(src)
		if err != nil {
			return fmt.Errorf("services.sources: %w", err)
		}
		if !p.Addr().Is4() {
			return fmt.Errorf("services.sources: %s: IPv4 only (Services are routed over IPv4)", src)
		}
	}
	if s.Table == "" {
		s.Table = "tether"
	}
	if err := checkTableName(s.Table); err != nil {
		return fmt.Errorf("services.table: %w", err)
	}
	return nil
}

// checkTableName accepts "tether" and up to 32 letters, digits, '-' and
// '_' starting with it.
func checkTableName(n string) error {
	if !strings.HasPrefix(n, "tether") || len(n) > 32 {
		return fmt.Errorf("%q: want a name starting with tether, at most 32 characters", n)
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%q: only letters, digits, '-' and '_'", n)
		}
	}
	return nil
}

// resolverConfig is the resolver's Config of d.
func (d *DNSConfig) resolverConfig(domain string) resolver.Config {
	allowed := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for _, a := range d.Allowed {
		allowed = append(allowed, netip.MustParsePrefix(a)) // checked by validateDNS
	}
	return resolver.Config{Addr: d.Addr, Domain: domain, Upstreams: d.Upstreams, Allowed: allowed,
		Rate: d.Rate, Burst: d.Burst}
}

// InClusterConfig configures the in-cluster API at the edge: a TLS
// listener of the metaserver on the resolver's address, which the pods get
// as KUBERNETES_SERVICE_HOST/PORT and kubernetes.default.svc, with tokens
// of the node's own in their kube-api-access volumes.
type InClusterConfig struct {
	// Enable runs it. It needs dns.enable, dns.allowed (the pod network:
	// the only sources served) and the cri runtime; by default it is on
	// when they are there, as every kubelet's pods get the API.
	Enable *bool `json:"enable,omitempty"`
	// Port is the listener's TCP port on the resolver's address (default
	// 10551). Pods reach it as KUBERNETES_SERVICE_PORT.
	Port int `json:"port,omitempty"`
	// TokenLifetime is the life of a pod's token, renewed at 80% of it
	// (default 1h, 1m to 168h).
	TokenLifetime metav1.Duration `json:"tokenLifetime,omitempty"`
	// AccessRefresh is how often the cloud's answers on what each service
	// account may read are asked again while online (default 10m).
	AccessRefresh metav1.Duration `json:"accessRefresh,omitempty"`
	// AccessMaxAge is how long such an answer is used with the cloud away
	// (default 72h); past it reads are refused until the cloud is back.
	AccessMaxAge metav1.Duration `json:"accessMaxAge,omitempty"`
	// RefuseWrites refuses the pods' writes (405; 503 with the cloud
	// away) instead of relaying them to the cloud's API server with a
	// token of the pod's service account (default false: relayed, see
	// package apirelay; a hub older than protocol 7 gets them refused).
	RefuseWrites bool `json:"refuseWrites,omitempty"`
	// WriteTimeout bounds a relayed write, from the pod's request to the
	// cloud's answer (default 15s; past it 504).
	WriteTimeout metav1.Duration `json:"writeTimeout,omitempty"`
}

func (c *Config) validateInCluster() error {
	ic := &c.InCluster
	if ic.Enable == nil {
		on := c.DNS.Enable && len(c.DNS.Allowed) > 0 && c.Runtime == "cri" && c.RuntimeImpl == nil
		ic.Enable = &on
	}
	if !*ic.Enable {
		return nil
	}
	if !c.DNS.Enable || len(c.DNS.Allowed) == 0 {
		return errors.New("inCluster: needs dns.enable and dns.allowed (the pod network it serves)")
	}
	if c.Runtime != "cri" && c.RuntimeImpl == nil {
		return errors.New("inCluster: needs the cri runtime (which gives the pods their tokens)")
	}
	if ic.Port == 0 {
		ic.Port = 10551
	}
	if ic.Port < 0 || ic.Port > 65535 {
		return fmt.Errorf("inCluster.port: %d is not a TCP port", ic.Port)
	}
	if ic.TokenLifetime.Duration == 0 {
		ic.TokenLifetime.Duration = satoken.DefaultLifetime
	}
	if d := ic.TokenLifetime.Duration; d < time.Minute || d > 7*24*time.Hour {
		return fmt.Errorf("inCluster.tokenLifetime: %s is not between 1m and 168h", d)
	}
	if ic.AccessRefresh.Duration == 0 {
		ic.AccessRefresh.Duration = 10 * time.Minute
	}
	if ic.AccessMaxAge.Duration == 0 {
		ic.AccessMaxAge.Duration = 72 * time.Hour
	}
	if ic.WriteTimeout.Duration == 0 {
		ic.WriteTimeout.Duration = 15 * time.Second
	}
	if d := ic.WriteTimeout.Duration; d < time.Second || d > 5*time.Minute {
		return fmt.Errorf("inCluster.writeTimeout: %s is not between 1s and 5m", d)
	}
	if ic.AccessRefresh.Duration < time.Second || ic.AccessMaxAge.Duration < ic.AccessRefresh.Duration {
		return fmt.Errorf("inCluster: accessRefresh %s must be 1s or more and at most accessMaxAge %s",
			ic.AccessRefresh.Duration, ic.AccessMaxAge.Duration)
	}
	return nil
}

// addr is the in-cluster listener's address: the resolver's IP, Port.
func (c *Config) inClusterAddr() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddrPort(c.DNS.Addr).Addr(), uint16(c.InCluster.Port)) // checked by validateDNS
}

// inClusterService is where the pods reach the in-cluster API: with
// Service routing (services.proxy), the default/kubernetes Service's
// ClusterIP, port 443, which svcproxy DNATs to the listener, so pods keep
// the cluster's KUBERNETES_SERVICE_HOST; that ClusterIP is the first
// address of services.serviceCIDR, the one the API server gives it.
// Without the routing, the listener's own address.
func (c *Config) inClusterService() (addr netip.AddrPort, routed bool) {
	if c.Services.Proxy == nil || !*c.Services.Proxy {
		return c.inClusterAddr(), false
	}
	return netip.AddrPortFrom(netip.MustParsePrefix(c.Services.ServiceCIDR).Addr().Next(), 443), true // checked by validateServices
}

// DevicesConfig configures the device twins.
type DevicesConfig struct {
	// Enable serves the device twins (default true).
	Enable *bool `json:"enable,omitempty"`
	// MQTT says which broker devices and mappers meet the edge on.
	MQTT MQTTConfig `json:"mqtt,omitempty"`
	// ReportInterval is the least time between two saves of the twins,
	// each of which queues the changed devices' status for the cloud
	// (default 1s; a change after a quiet spell is saved within about
	// 20ms).
	ReportInterval metav1.Duration `json:"reportInterval,omitempty"`
}

// MQTTConfig says which MQTT broker to use.
//
// The embedded broker (see package devices/broker) always wants
// credentials. edgecore connects with username and password when set (the
// broker gives them edgecore's rights), else with a random password it
// makes at each start. A mapper connects as user MapperUsername with the
// password in MapperPasswordFile(dataDir) (made at the first start, mode
// 0600 in a 0700 directory, kept across restarts): it may publish reports
// and requests and read what edgecore answers, not drive devices. An
// external broker's users and ACLs are its operator's (for Mosquitto: a
// password_file, and an acl_file that lets only edgecore's user write
// $hw/events/device/+/+/twin/update/delta, .../result, .../document and
// .../updated, and $hw/events/node/+/membership/{updated,get/result}).
type MQTTConfig struct {
	// Broker is "embedded" (default: edgecore runs the broker, see
	// package broker) or "external" (a broker such as Mosquitto at URL).
	Broker string `json:"broker,omitempty"`
	// Addr is where the embedded broker listens (default 127.0.0.1:1883,
	// the port KubeEdge mappers use; a non-loopback host lets devices on
	// the network in: it needs certFile and keyFile, or allowInsecure).
	Addr string `json:"addr,omitempty"`
	// URL is the external broker, tcp://host:port or ssl://host:port
	// (default tcp://127.0.0.1:1883).
	URL string `json:"url,omitempty"`
	// Username and Password (or PasswordFile, a file holding it) are
	// edgecore's credentials on either broker. Empty with the embedded
	// broker: a random password, made at each start; with an external
	// one: no credentials.
	Username     string `json:"username,omitempty"`
	Password     string `json:"password,omitempty"`
	PasswordFile string `json:"passwordFile,omitempty"`
	// AllowAnonymous lets clients without credentials into the embedded
	// broker, with a mapper's rights (default false; loopback addr only).
	AllowAnonymous bool `json:"allowAnonymous,omitempty"`
	// CertFile and KeyFile (PEM) make the embedded broker serve MQTT over
	// TLS only (mappers then connect to ssl://addr, trusting the CA that
	// issued the certificate).
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
	// AllowInsecure lets the embedded broker listen on an addr that is not
	// loopback without certFile and keyFile (default false: edgecore
	// refuses to start so): passwords, readings and commands then cross
	// the network in clear.
	AllowInsecure bool `json:"allowInsecure,omitempty"`
	// CAFile is the CA bundle an external broker's certificate must chain
	// to: required with an ssl:// url.
	CAFile string `json:"caFile,omitempty"`
	// MaxClients bounds the embedded broker's clients (default 64).
	MaxClients int `json:"maxClients,omitempty"`
	// MapperProtocols gives each of these protocols a mapper user of its
	// own on the embedded broker, MapperProtocolUsername(p)
	// ("mapper-<p>"), with its password in MapperProtocolPasswordFile
	// (made like the mappers' password): it may use the topics of the
	// node's devices whose spec.protocol.protocolName is p only (not the
	// membership topics, which list every device), so that a mapper of
	// one protocol cannot read or forge another's devices.
	// The user MapperUsername keeps every device's topics.
	MapperProtocols []string `json:"mapperProtocols,omitempty"`
	// ClientID is edgecore's MQTT client id (default
	// tether-edgecore-<nodeName>).
	ClientID string `json:"clientID,omitempty"`

	// filePassword is what validate read from PasswordFile. It is kept
	// apart from Password so that validating again does not see both set,
	// and so that the password never shows in the configuration written
	// out.
	filePassword string
}

// password is the password to use: Password, or PasswordFile's.
func (m *MQTTConfig) password() string {
	if m.PasswordFile != "" {
		return m.filePassword
	}
	return m.Password
}

// The brokers of MQTTConfig.Broker.
const (
	BrokerEmbedded = "embedded"
	BrokerExternal = "external"
)

func (c *Config) validate() error {
	if c.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("nodeName: empty and no host name: %w", err)
		}
		c.NodeName = strings.ToLower(h)
	}
	if err := protocol.ValidateNodeName(c.NodeName); err != nil {
		return fmt.Errorf("nodeName: %w", err)
	}
	u, err := url.Parse(c.Cloud.URL)
	if err != nil || c.Cloud.URL == "" {
		return fmt.Errorf("cloud.url: %q is not a URL like wss://cloud.example:10000/v1/connect", c.Cloud.URL)
	}
	if u.Scheme != "wss" {
		return fmt.Errorf("cloud.url: scheme %q, want wss (the tunnel is always TLS)", u.Scheme)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/connect"
		c.Cloud.URL = u.String()
	}
	if c.Cloud.Token != "" || c.Cloud.TokenFile != "" {
		return errors.New("cloud.token: shared bootstrap tokens (cloud.token, cloud.tokenFile) are no longer accepted; " +
			"join this node with `edgecore join --cloud HOST:PORT --token T` (the token from `cloudcore token create`)")
	}
	if c.Cloud.Dialer == nil {
		if c.Cloud.CAFile == "" {
			return errors.New("cloud.caFile: required (edgecore join writes it)")
		}
		if _, err := os.Stat(c.Cloud.CAFile); err != nil {
			return fmt.Errorf("cloud.caFile: %w", err)
		}
		if c.Cloud.CredentialsFile == "" {
			return errors.New("cloud.credentialsFile: required (edgecore join writes it)")
		}
	}
	if c.Cloud.DialTimeout.Duration == 0 {
		c.Cloud.DialTimeout.Duration = 15 * time.Second
	}
	if c.DataDir == "" {
		c.DataDir = "/var/lib/tether/edgecore"
	}
	if c.KubeletSocket == "" {
		c.KubeletSocket = filepath.Join(c.DataDir, "kubelet.sock")
	}
	if c.Runtime == "" {
		c.Runtime = "cri"
	}
	if err := c.validateDNS(); err != nil {
		return err
	}
	if err := c.validateInCluster(); err != nil {
		return err
	}
	if err := c.validateServices(); err != nil {
		return err
	}
	switch {
	case c.RuntimeImpl != nil, c.Runtime == "fake":
	case c.Runtime == "cri":
		if c.CRI.RootDir == "" {
			c.CRI.RootDir = c.DataDir
		}
		if err := c.CRI.Validate(); err != nil {
			return fmt.Errorf("cri.%w", err)
		}
	default:
		return fmt.Errorf("runtime: %q is not one of: fake, cri", c.Runtime)
	}
	if c.NodeIP != "" && net.ParseIP(c.NodeIP) == nil {
		return fmt.Errorf("nodeIP: %q is not an IP address", c.NodeIP)
	}
	if c.MaxPods == 0 {
		c.MaxPods = 110
	}
	if c.MaxPods < 0 {
		return fmt.Errorf("maxPods: %d is negative", c.MaxPods)
	}
	for name, d := range map[string]*metav1.Duration{"reconnectInitial": &c.ReconnectInitial,
		"reconnectMax": &c.ReconnectMax, "nodeStatusInterval": &c.NodeStatusInterval,
		"podResyncInterval": &c.PodResyncInterval, "cloud.dialTimeout": &c.Cloud.DialTimeout} {
		if d.Duration < 0 {
			return fmt.Errorf("%s: %s is negative", name, d.Duration)
		}
	}
	if c.ReconnectInitial.Duration == 0 {
		c.ReconnectInitial.Duration = time.Second
	}
	if c.ReconnectMax.Duration == 0 {
		c.ReconnectMax.Duration = 2 * time.Second
	}
	if c.ReconnectMax.Duration < c.ReconnectInitial.Duration {
		return fmt.Errorf("reconnectMax: %s is below reconnectInitial %s", c.ReconnectMax.Duration, c.ReconnectInitial.Duration)
	}
	if c.StaticPodPath == "" {
		c.StaticPodPath = "/etc/tether/manifests"
	}
	if c.OutboxMax < 0 {
		return fmt.Errorf("outboxMax: %d is negative", c.OutboxMax)
	}
	if c.NodeEvents == nil {
		on := true
		c.NodeEvents = &on
	}
	if c.PodWorkers < 0 {
		return fmt.Errorf("podWorkers: %d is negative", c.PodWorkers)
	}
	if c.MetaServer.Enable == nil {
		on := true
		c.MetaServer.Enable = &on
	}
	if c.MetaServer.Addr == "" {
		c.MetaServer.Addr = metaserver.DefaultAddr
	}
	if err := metaserver.ValidateAddr(c.MetaServer.Addr); err != nil {
		return fmt.Errorf("metaserver.addr: %w", err)
	}
	if err := c.Devices.validate(); err != nil {
		return err
	}
	if err := c.NodeHealth.validate(); err != nil {
		return err
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

func (d *DevicesConfig) validate() error {
	if d.Enable == nil {
		on := true
		d.Enable = &on
	}
	if !*d.Enable {
		return nil
	}
	m := &d.MQTT
	if m.Broker == "" {
		m.Broker = BrokerEmbedded
	}
	if m.PasswordFile != "" {
		if m.Password != "" {
			return errors.New("devices.mqtt.passwordFile: set password or passwordFile, not both")
		}
		b, err := os.ReadFile(m.PasswordFile)
		if err != nil {
			return fmt.Errorf("devices.mqtt.passwordFile: %w", err)
		}
		m.filePassword = strings.TrimSpace(string(b))
	}
	if m.password() != "" && m.Username == "" {
		return errors.New("devices.mqtt.password: set without devices.mqtt.username")
	}
	switch m.Broker {
	case BrokerEmbedded:
		for field, set := range map[string]bool{"url": m.URL != "", "caFile": m.CAFile != ""} {
			if set {
				return fmt.Errorf("devices.mqtt.%s: only for broker %s (the embedded broker listens on devices.mqtt.addr)", field, BrokerExternal)
			}
		}
		if m.Addr == "" {
			m.Addr = broker.DefaultAddr
		}
		if _, _, err := net.SplitHostPort(m.Addr); err != nil {
			return fmt.Errorf("devices.mqtt.addr: %q is not host:port: %w", m.Addr, err)
		}
		if m.AllowAnonymous && !broker.IsLoopback(m.Addr) {
			return fmt.Errorf("devices.mqtt.allowAnonymous: the embedded broker listens on %s, not a loopback address: "+
				"anyone on the network could drive readings; turn allowAnonymous off (mappers then use %s's credentials)", m.Addr, MapperUsername)
		}
		if m.Username == MapperUsername {
			return fmt.Errorf("devices.mqtt.username: %q is the mappers' user", MapperUsername)
		}
		if m.Username != "" && m.Password == "" {
			return errors.New("devices.mqtt.username: set without a password (the embedded broker admits no empty password)")
		}
		if (m.CertFile == "") != (m.KeyFile == "") {
			return errors.New("devices.mqtt.certFile: set with keyFile, or neither")
		}
		if !broker.IsLoopback(m.Addr) && m.CertFile == "" && !m.AllowInsecure {
			return fmt.Errorf("devices.mqtt.addr: the embedded broker listens on %s, not a loopback address, without TLS: "+
				"passwords and readings would cross the network in clear; set certFile and keyFile "+
				"(or allowInsecure: true, to accept that)", m.Addr)
		}
		if m.MaxClients < 0 {
			return fmt.Errorf("devices.mqtt.maxClients: %d is negative", m.MaxClients)
		}
		seen := map[string]bool{}
		for _, p := range m.MapperProtocols {
			if !protocolName.MatchString(p) {
				return fmt.Errorf("devices.mqtt.mapperProtocols: %q is not a protocol name (lower case letters, digits and '-', at most 53)", p)
			}
			if seen[p] {
				return fmt.Errorf("devices.mqtt.mapperProtocols: %q given twice", p)
			}
			seen[p] = true
			if m.Username == MapperProtocolUsername(p) {
				return fmt.Errorf("devices.mqtt.username: %q is the user of the %s mappers", m.Username, p)
			}
		}
	case BrokerExternal:
		for field, set := range map[string]bool{"addr": m.Addr != "", "certFile": m.CertFile != "", "keyFile": m.KeyFile != "",
			"allowAnonymous": m.AllowAnonymous, "maxClients": m.MaxClients != 0, "allowInsecure": m.AllowInsecure,
			"mapperProtocols": len(m.MapperProtocols) > 0} {
			if set {
				return fmt.Errorf("devices.mqtt.%s: only for broker %s (an external broker is at devices.mqtt.url, and its operator configures it)", field, BrokerEmbedded)
			}
		}
		if m.URL == "" {
			m.URL = "tcp://127.0.0.1:1883"
		}
		if err := devicetwin.ValidateBrokerURL(m.URL); err != nil {
			return fmt.Errorf("devices.mqtt.url: %w", err)
		}
		if devicetwin.IsTLSURL(m.URL) != (m.CAFile != "") {
			return fmt.Errorf("devices.mqtt.caFile: required with an ssl:// url and only with one (url %s)", m.URL)
		}
	default:
		return fmt.Errorf("devices.mqtt.broker: %q is neither %s nor %s", m.Broker, BrokerEmbedded, BrokerExternal)
	}
	if d.ReportInterval.Duration < 0 {
		return fmt.Errorf("devices.reportInterval: %s is negative", d.ReportInterval.Duration)
	}
	if d.ReportInterval.Duration == 0 {
		d.ReportInterval.Duration = time.Second
	}
	return nil
}

// NoStaticPods as StaticPodPath turns static pods off.
const NoStaticPods = "-"

// EdgeCore is a configured edgecore.
type EdgeCore struct {
	cfg   Config
	DB    *store.DB
	Agent *agent.Agent
	Pods  *pods.Manager
	// Static is the static pod source; nil when static pods are off.
	Static *staticpods.Source
	// MetaServer is the local Kubernetes API; nil when disabled.
	MetaServer *metaserver.Server
	// Access holds the cloud's answers on what the pods' service accounts
	// may read through the in-cluster API; nil when it is disabled.
	Access *accessreview.Cache
	// Resolver answers the pods' DNS queries; nil when disabled.
	Resolver *resolver.Server
	// Proxy routes ClusterIPs; nil when disabled.
	Proxy *svcproxy.Proxy
	// Devices serves the device twins over MQTT; nil when disabled.
	Devices *devicetwin.Twin
	// Broker is the embedded MQTT broker; nil when devices are disabled or
	// use an external broker.
	Broker *broker.Broker
	// Runtime is the container runtime the pods run in.
	Runtime runtime.Runtime
	// Events records events about the node and its pods in the outbox.
	Events *events.Recorder
	// Stats serves the node's resource usage as a kubelet does
	// (nodestats.SummaryPath and nodestats.ResourcePath), its pods' from
	// the CRI runtime; with another runtime, the node's alone. It has no
	// authentication of its own: the kubelet API (Kubelet) serves it,
	// unless Config.KubeletStats replaces it.
	Stats http.Handler
	// Health measures the node's conditions.
	Health *nodestatus.Monitor
	// criRuntime is the CRI runtime edgecore made, if it made one: Run
	// starts it, Close closes it.
	criRuntime *cri.Runtime
	// creds are the node's credentials; nil with Config.Cloud.Dialer.
	creds *credentials.Credentials
	// Kubelet is the kubelet API (logs, exec, attach, port-forward),
	// served on the streams the hub opens through the tunnel (streamLn).
	Kubelet  *kubeletserver.Server
	streamLn *streams.Listener
}

// New checks cfg, opens the store and builds the components; nothing runs
// until Run. Close the store with Close after Run returns.
func New(cfg Config) (*EdgeCore, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	log := cfg.Logger.With(slog.String("node", cfg.NodeName))
	dialer := cfg.Cloud.Dialer
	var creds *credentials.Credentials
	if dialer == nil {
		pem, err := os.ReadFile(cfg.Cloud.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cloud.caFile: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cloud.caFile: %s holds no PEM certificate", cfg.Cloud.CAFile)
		}
		creds, err = credentials.Load(cfg.Cloud.CredentialsFile, log.With(slog.String("component", "credentials")))
		if err != nil {
			return nil, fmt.Errorf("cloud.credentialsFile: %w", err)
		}
		if n := creds.Node(); n != cfg.NodeName {
			return nil, fmt.Errorf("cloud.credentialsFile: the certificate is for node %q, nodeName is %q", n, cfg.NodeName)
		}
		dialer = &renewingDialer{
			link:  &link.Dialer{URL: cfg.Cloud.URL, TLS: creds.ClientTLS(roots), Timeout: cfg.Cloud.DialTimeout.Duration},
			creds: creds, roots: roots, hub: hubHTTPS(cfg.Cloud.URL),
		}
	}
	// The store owns the outbox and its bound, and tells the agent of
	// every commit that queued something: the components that queue need
	// no link to the agent.
	db, _, err := store.OpenOrRecover(filepath.Join(cfg.DataDir, "edge.db"), store.Options{OutboxMax: cfg.OutboxMax}, log)
	if err != nil {
		return nil, err
	}
	rec, err := events.New(events.Config{Logger: log.With(slog.String("component", "events"))}, db, nil)
	if err != nil {
		db.Close()
		return nil, err
	}
	ec := &EdgeCore{cfg: cfg, DB: db, Events: rec, creds: creds}
	// The notification points come first, so that every component is
	// built with what it notifies: nothing refers to a component built
	// later.
	podChanges := pods.NewChanges()
	nodeStatusChanged := agent.NewSignal()
	var static pods.StaticPods // nil, not a nil *staticpods.Source, when off
	if cfg.StaticPodPath != NoStaticPods {
		ec.Static = staticpods.New(cfg.StaticPodPath, cfg.NodeName, podChanges.Changed, ec.badManifest,
			log.With(slog.String("component", "staticpods")))
		static = ec.Static
	}
	// The in-cluster API at the edge: the pods' credentials and the
	// cloud's answers on what they may read.
	var (
		podCreds  *satoken.Credentials
		access    *accessreview.Cache
		inCluster *metaserver.InClusterConfig
		relay     *apirelay.Relay
	)
	if ic := cfg.InCluster; *ic.Enable {
		podCreds, err = satoken.Load(CredentialsDir(cfg.DataDir), cfg.NodeName, ic.TokenLifetime.Duration)
		if err != nil {
			db.Close()
			return nil, err
		}
		addr := cfg.inClusterAddr()
		var more []net.IP
		if svc, routed := cfg.inClusterService(); routed {
			more = append(more, svc.Addr().AsSlice())
		}
		certPEM, keyPEM, err := podCreds.ServingCert(addr.Addr().AsSlice(), cfg.CRI.ClusterDomain, more...)
		if err != nil {
			db.Close()
			return nil, err
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("in-cluster serving certificate: %w", err)
		}
		access, err = accessreview.New(accessreview.Config{StateFile: filepath.Join(cfg.DataDir, "access-reviews.json"),
			Resources: metaserver.ServedResources(), Refresh: ic.AccessRefresh.Duration, MaxAge: ic.AccessMaxAge.Duration,
			Logger: log.With(slog.String("component", "accessreview"))}, db)
		if err != nil {
			db.Close()
			return nil, err
		}
		var allowed []netip.Prefix
		for _, a := range cfg.DNS.Allowed {
			allowed = append(allowed, netip.MustParsePrefix(a)) // checked by validateDNS
		}
		inCluster = &metaserver.InClusterConfig{Addr: addr.String(), Certificate: cert, Allowed: allowed,
			Tokens: podCreds.Issuer, Authorizer: access}
		if !ic.RefuseWrites {
			relay, err = apirelay.New(apirelay.Config{Timeout: ic.WriteTimeout.Duration,
				Logger: log.With(slog.String("component", "apirelay"))})
			if err != nil {
				db.Close()
				return nil, err
			}
			inCluster.Writes = relay
		}
	}
	rt := cfg.RuntimeImpl
	runtimeVersion := "custom://"
	var criRT *cri.Runtime
	if rt == nil {
		ip := cfg.NodeIP
		if ip == "" {
			ip = nodestatus.FirstIPv4()
		}
		switch cfg.Runtime {
		case "cri":
			c := cfg.CRI
			c.NodeName, c.NodeIP = cfg.NodeName, ip
			c.Notify = podChanges.Changed
			c.Events = rec
			c.HeldImages = func() ([]string, error) { return pods.Images(db, static) }
			if inCluster != nil {
				a, _ := cfg.inClusterService()
				c.InCluster = &cri.InClusterAPI{Host: a.Addr().String(), Port: int(a.Port()), CACert: podCreds.CA.CertPEM(),
					Tokens: podCreds.Issuer}
			}
			criRT, err = cri.New(context.Background(), c, cri.StoreObjects(db), log.With(slog.String("component", "cri")))
			if err != nil {
				db.Close()
				return nil, err
			}
			rt, runtimeVersion = criRT, criRT.Version()
		default:
			log.Warn("runtime: fake: the in-memory runtime reports pods Running and Ready, but no container runs; " +
				"set runtime: cri (the default) to run them in containerd")
			rt, runtimeVersion = fake.New(ip), "fake://0"
		}
	}
	ec.Runtime, ec.criRuntime = rt, criRT
	ec.Access = access
	statsCfg := nodestats.Config{NodeName: cfg.NodeName, FsPath: cfg.DataDir, Logger: log.With(slog.String("component", "nodestats"))}
	if criRT != nil {
		statsCfg.Runtime = criRT
	}
	if ec.Stats, err = nodestats.NewHandler(statsCfg); err != nil {
		if criRT != nil {
			criRT.Close()
		}
		db.Close()
		return nil, err
	}
	closeAll := func() {
		if criRT != nil {
			criRT.Close()
		}
		if ec.Broker != nil {
			ec.Broker.Close()
		}
		db.Close()
	}
	// The node's condition events, observed on the monitor's goroutine.
	var condEvents *events.NodeConditions
	if *cfg.NodeEvents {
		condEvents = &events.NodeConditions{Node: cfg.NodeName, Recorder: rec}
	}
	health := nodestatus.MonitorConfig{Period: cfg.NodeHealth.Period.Duration, Thresholds: cfg.NodeHealth.thresholds(),
		DataDir: cfg.DataDir, Logger: log.With(slog.String("component", "nodestatus")),
		Changed: func(conds []corev1.NodeCondition) {
			nodeStatusChanged.Notify()
			if condEvents != nil {
				condEvents.Observe(conds)
			}
		}}
	reported := pods.NewReported()
	ec.Pods, err = pods.New(pods.Config{ResyncInterval: cfg.PodResyncInterval.Duration,
		PodWorkers: cfg.PodWorkers, Reported: reported, Changes: podChanges, Static: static},
		db, rt, log.With(slog.String("component", "pods")))
	if err != nil {
		closeAll()
		return nil, err
	}
	if criRT != nil {
		// Only a runtime that runs something frees anything by evicting.
		health.Runtime = criProbe{criRT}
		health.Reclaim = &reclaimer{rt: criRT, pods: ec.Pods, log: log.With(slog.String("component", "nodestatus"))}
	}
	ec.Health = nodestatus.NewMonitor(health)
	ns := &nodestatus.Source{NodeName: cfg.NodeName, InternalIP: cfg.NodeIP, MaxPods: cfg.MaxPods,
		DataDir: cfg.DataDir, RuntimeVersion: runtimeVersion, Conditions: ec.Health.Conditions}
	obs := observers{ec.Pods}
	if access != nil {
		obs = append(obs, access)
	}
	if *cfg.MetaServer.Enable {
		clients, err := metaserver.LocalClients(ec.CredentialsDir())
		if err != nil {
			// Served to nobody rather than not at all: a full disk must
			// not stop the node.
			log.Error("metaserver: no credentials: every request will be refused", slog.Any("err", err))
		}
		ec.MetaServer, err = metaserver.New(metaserver.Config{Addr: cfg.MetaServer.Addr, NodeName: cfg.NodeName,
			Clients: clients, PodStatuses: reported,
			// Read at scrape time, once Run started every component.
			Metrics: promhttp.HandlerFor(ec.Metrics(), promhttp.HandlerOpts{}),
			// Ready while the store is open (a closed bbolt refuses View).
			Ready:      func() error { return db.View(func(*store.Tx) error { return nil }) },
			NodeLabels: cfg.Labels, NodeStatus: ns.Status, NodeInterval: cfg.NodeStatusInterval.Duration,
			StateDir: cfg.DataDir, InCluster: inCluster, Logger: log.With(slog.String("component", "metaserver"))}, db)
		if err != nil {
			closeAll()
			return nil, err
		}
		obs = append(obs, ec.MetaServer)
	}
	if cfg.DNS.Enable {
		rc := cfg.DNS.resolverConfig(cfg.CRI.ClusterDomain)
		if inCluster != nil {
			rc.APIServer, _ = cfg.inClusterService()
		}
		ec.Resolver, err = resolver.New(rc, db, log.With(slog.String("component", "resolver")))
		if err != nil {
			closeAll()
			return nil, err
		}
		obs = append(obs, ec.Resolver)
	}
	if *cfg.Services.Proxy {
		var sources []netip.Prefix
		for _, src := range cfg.Services.Sources {
			sources = append(sources, netip.MustParsePrefix(src)) // checked by validateServices
		}
		if len(sources) == 0 {
			log.Warn("services.sources is empty (and dns.allowed): any host that routes the service range to this node reaches its ClusterIPs; " +
				"set services.sources to the pod network")
		}
		pc := svcproxy.Config{ServiceCIDR: netip.MustParsePrefix(cfg.Services.ServiceCIDR),
			Sources: sources, NodeName: cfg.NodeName, Pods: reported,
			Kernel: svcproxy.Kernel{Table: cfg.Services.Table}, Logger: log.With(slog.String("component", "svcproxy"))}
		if inCluster != nil {
			pc.APIService, _ = cfg.inClusterService()
			pc.APIServer = cfg.inClusterAddr()
		}
		ec.Proxy, err = svcproxy.New(pc, db)
		if err != nil {
			closeAll()
			return nil, err
		}
		obs = append(obs, ec.Proxy)
	}
	if d := cfg.Devices; *d.Enable {
		m, err := mqttSetup(cfg.DataDir, cfg.NodeName, d.MQTT, db, log.With(slog.String("component", "broker")))
		if err != nil {
			closeAll()
			return nil, err
		}
		url := d.MQTT.URL
		if m.broker != nil {
			ec.Broker, err = broker.New(*m.broker)
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("devices.mqtt.addr: %w", err)
			}
			url = ec.Broker.URL()
		}
		ec.Devices, err = devicetwin.New(devicetwin.Config{NodeName: cfg.NodeName, BrokerURL: url, TLS: m.clientTLS,
			Username: m.username, Password: m.password, ClientID: d.MQTT.ClientID,
			ReportInterval: d.ReportInterval.Duration,
			Logger:         log.With(slog.String("component", "devicetwin"))}, db, nil)
		if err != nil {
			closeAll()
			return nil, err
		}
		obs = append(obs, ec.Devices)
	}
	ec.streamLn = streams.NewListener(64)
	var krt kubeletserver.Runtime
	if criRT != nil {
		krt = criRT
	}
	stats := cfg.KubeletStats
	if stats == nil {
		stats = ec.Stats
	}
	ec.Kubelet, err = kubeletserver.New(kubeletserver.Config{NodeName: cfg.NodeName, Runtime: krt,
		Pods: nodePods{db: db}, Stats: stats, Logger: log.With(slog.String("component", "kubelet"))})
	if err != nil {
		closeAll()
		return nil, err
	}
	ec.Agent, err = agent.New(agent.Config{
		Streams:            ec.streamLn.Offer,
		NodeName:           cfg.NodeName,
		Labels:             cfg.Labels,
		Backoff:            link.Backoff{Initial: cfg.ReconnectInitial.Duration, Max: cfg.ReconnectMax.Duration},
		NodeStatusInterval: cfg.NodeStatusInterval.Duration,
		NodeStatusChanged:  nodeStatusChanged,
		CommitHook:         cfg.CommitHook,
		Credentials:        agentCredentials(creds),
		Reviews:            agentReviews(access),
		Relay:              agentRelay(relay),
	}, db, dialer,
		func() (*corev1.NodeStatus, error) { return ns.Status(), nil },
		obs,
		log.With(slog.String("component", "agent")))
	if err != nil {
		closeAll()
		return nil, err
	}
	ec.Kubelet.SetPods(nodePods{db: db, static: ec.Static})
	return ec, nil
}

// Run runs edgecore until ctx ends or a component fails. Pods are started
// from the store at once, whether or not the cloud can be reached.
func (ec *EdgeCore) Run(ctx context.Context) error {
	ec.Health.Sample(ctx) // the first status reported is measured
	g, ctx := errgroup.WithContext(ctx)
	if *ec.cfg.NodeEvents {
		node := events.NodeObject(ec.cfg.NodeName)
		ec.Events.Record(events.Eventf(node, events.Normal, events.Starting, "Starting edgecore."))
	}
	g.Go(func() error { return ec.Events.Start(ctx) })
	g.Go(func() error { return ec.Health.Start(ctx) })
	if ec.Static != nil {
		ec.Static.Scan() // static pods start with the others, before any watch
		g.Go(func() error { return ec.Static.Start(ctx) })
	}
	g.Go(func() error { return ec.Pods.Start(ctx) })
	if ec.criRuntime != nil {
		g.Go(func() error { return ec.criRuntime.Start(ctx) })
	}
	g.Go(func() error { return ec.Agent.Start(ctx) })
	g.Go(func() error { return ec.Kubelet.Serve(ctx, ec.streamLn) })
	if ec.cfg.KubeletSocket != "-" {
		ln, err := listenOwnerOnly(ec.cfg.KubeletSocket)
		if err != nil {
			// Local debugging is not worth stopping the node for.
			ec.cfg.Logger.Error("kubelet API socket: edgecore ctl will not work", slog.Any("err", err))
		} else {
			g.Go(func() error { return ec.Kubelet.Serve(ctx, ln) })
		}
	}
	if ec.MetaServer != nil {
		g.Go(func() error { return ec.MetaServer.Start(ctx) })
	}
	if ec.Access != nil {
		g.Go(func() error { return ec.Access.Start(ctx) })
	}
	if ec.Resolver != nil {
		g.Go(func() error { return ec.Resolver.Start(ctx) })
	}
	if ec.Proxy != nil {
		g.Go(func() error { return ec.Proxy.Start(ctx) })
	}
	if ec.Broker != nil {
		g.Go(func() error { return ec.Broker.Start(ctx) })
	}
	if ec.Devices != nil {
		g.Go(func() error { return ec.Devices.Start(ctx) })
	}
	return g.Wait()
}

// observers hands what the agent reports to each component that follows
// the store.
type observers []agent.Observer

func (l observers) ObjectsChanged(kinds map[protocol.Kind]bool, refs []protocol.ObjectRef) {
	for _, o := range l {
		o.ObjectsChanged(kinds, refs)
	}
}

func (l observers) Connected() {
	for _, o := range l {
		o.Connected()
	}
}

// badManifest reports a static pod manifest that cannot be used as a
// Warning event on the node.
func (ec *EdgeCore) badManifest(file string, err error) {
	now := time.Now().UnixMilli()
	ev := &protocol.Frame{Event: &protocol.Event{InvolvedKind: "Node", Name: ec.cfg.NodeName,
		Type: "Warning", Reason: "FailedStaticPod", Message: truncate(err.Error(), 1024), FirstTime: now, LastTime: now}}
	uerr := ec.DB.Update(func(tx *store.Tx) error {
		_, err := tx.Enqueue(store.OutboxEvent("static/"+filepath.Base(file)), ev)
		return err
	})
	if uerr != nil {
		ec.cfg.Logger.Error("queue event", slog.Any("err", uerr))
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Close closes the runtime edgecore made, if any, the embedded broker's
// listener (in case Run never ran) and the store.
func (ec *EdgeCore) Close() error {
	if ec.criRuntime != nil {
		ec.criRuntime.Close()
	}
	if ec.Broker != nil {
		ec.Broker.Close()
	}
	return ec.DB.Close()
}

// CredentialsDir holds the local credentials edgecore makes for the node's
// processes (the metaserver's tokens, metaserver.TokenFile): dataDir/credentials.
func (ec *EdgeCore) CredentialsDir() string { return CredentialsDir(ec.cfg.DataDir) }
