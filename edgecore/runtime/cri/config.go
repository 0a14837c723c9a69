package cri

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/edgecore/events"
	"github.com/tether-edge/tether/edgecore/satoken"
)

// Config configures the CRI runtime. It is the `cri:` section of edgecore's
// configuration; zero values take the defaults Validate fills in.
type Config struct {
	// Endpoint is containerd's CRI socket, a path or a unix:// URL (default
	// /run/containerd/containerd.sock).
	Endpoint string `json:"endpoint,omitempty"`
	// PauseImage is the sandbox image containerd is configured with (its
	// sandbox_image). When set, New checks that it is present, since with no
	// registry a missing pause image stops every pod. Image garbage
	// collection never removes it (nor, when unset, the sandbox_image
	// containerd reports in its status).
	PauseImage string `json:"pauseImage,omitempty"`
	// RootDir holds the pods' volumes, in <rootDir>/pods/<uid>/volumes
	// (default /var/lib/tether/edgecore; edgecore passes its dataDir).
	RootDir string `json:"rootDir,omitempty"`
	// PodLogDir holds the containers' logs, in
	// <podLogDir>/<namespace>_<name>_<uid>/<container>/<attempt>.log
	// (default /var/log/pods).
	PodLogDir string `json:"podLogDir,omitempty"`
	// CgroupParent is the cgroupfs parent of the pod cgroups, each
	// <cgroupParent>/pod<uid> (default /tether). containerd must use the
	// cgroupfs driver (SystemdCgroup = false, its default).
	CgroupParent string `json:"cgroupParent,omitempty"`
	// CgroupRoot is where the cgroup file systems are mounted, used to
	// remove pod cgroups (default /sys/fs/cgroup).
	CgroupRoot string `json:"cgroupRoot,omitempty"`
	// ClusterDNS are the name servers of pods with dnsPolicy ClusterFirst;
	// when empty such pods use the node's resolv.conf, as Default does.
	ClusterDNS []string `json:"clusterDNS,omitempty"`
	// ClusterDomain is the cluster's DNS domain (default cluster.local).
	ClusterDomain string `json:"clusterDomain,omitempty"`
	// RequestTimeout bounds each CRI call except image pulls (default 2m).
	RequestTimeout metav1.Duration `json:"requestTimeout,omitempty"`
	// PullTimeout bounds an image pull (default 15m).
	PullTimeout metav1.Duration `json:"pullTimeout,omitempty"`
	// BackoffInitial and BackoffMax bound the restart and pull back-off
	// (default 10s doubling to 5m, as the kubelet does).
	BackoffInitial metav1.Duration `json:"backoffInitial,omitempty"`
	BackoffMax     metav1.Duration `json:"backoffMax,omitempty"`
	// ContainerLogMaxSize is the size at which a container's log is
	// rotated (default 10Mi); ContainerLogMaxFiles how many files of a
	// container's log are kept, the current one included (default 5).
	ContainerLogMaxSize  resource.Quantity `json:"containerLogMaxSize,omitempty"`
	ContainerLogMaxFiles int               `json:"containerLogMaxFiles,omitempty"`
	// RelistPeriod is how often containers are listed to notice state
	// changes between syncs (default 1s).
	RelistPeriod metav1.Duration `json:"relistPeriod,omitempty"`
	// ImageGCHighThresholdPercent is the use of the image file system, in
	// percent, at which unused images are removed (default 85, as the
	// kubelet; 100 turns the periodic collection off, not the one under
	// disk pressure); ImageGCLowThresholdPercent the use they are removed
	// down to (default 80), least recently used first.
	ImageGCHighThresholdPercent int `json:"imageGCHighThresholdPercent,omitempty"`
	ImageGCLowThresholdPercent  int `json:"imageGCLowThresholdPercent,omitempty"`
	// ImageMinimumGCAge is how long an image is kept after edgecore first
	// saw it, used or not (default 2m, as the kubelet).
	ImageMinimumGCAge metav1.Duration `json:"imageMinimumGCAge,omitempty"`
	// ImageGCPeriod is how often the image file system's use is checked
	// (default 5m, as the kubelet).
	ImageGCPeriod metav1.Duration `json:"imageGCPeriod,omitempty"`

	// NodeName and NodeIP are the node's, for the downward API, the pods'
	// host IP and host-network pods' IP. edgecore fills them in.
	NodeName string `json:"-"`
	NodeIP   string `json:"-"`
	// HeldImages, if set, returns the images of the pods the node holds,
	// running or not (the store's pods, also while the cloud is away, and
	// the static pods): image garbage collection never removes them.
	// When it fails, no image is removed.
	HeldImages func() ([]string, error) `json:"-"`
	// Notify, if set, is called (from any goroutine, never blocking for
	// long) when a pod needs a sync: a container changed state, a probe
	// result changed, a back-off or a pull ended.
	Notify func() `json:"-"`
	// InCluster, if set, is the in-cluster API at the edge the pods are
	// given, as the kubelet gives them the cluster's: the
	// KUBERNETES_SERVICE_HOST/PORT variables (and the kubelet's other
	// KUBERNETES_* service variables), a token of the node's own in the
	// serviceAccountToken source of a projected volume (the API server's
	// kube-api-access-* volume), and in that volume's ca.crt (from the
	// kube-root-ca.crt ConfigMap) the CA of the edge listener. Without it
	// no token is projected and the variables are not set.
	InCluster *InClusterAPI `json:"-"`
	// Events, if set, takes the events the runtime emits about pods, as
	// the kubelet's: Pulling, Pulled, Failed, BackOff, Created, Started,
	// Killing, Unhealthy... (edgecore passes its events.Recorder).
	Events Recorder `json:"-"`
}

// InClusterAPI is the in-cluster API the pods are given.
type InClusterAPI struct {
	// Host and Port are the listener's (KUBERNETES_SERVICE_HOST, _PORT).
	Host string
	Port int
	// CACert is the PEM of the CA the pods trust for it (their ca.crt).
	CACert []byte
	// Tokens mints the pods' tokens (*satoken.Issuer is one).
	Tokens TokenMinter
}

// TokenMinter mints a pod's service-account token, valid from now until
// the returned expiry.
type TokenMinter interface {
	Mint(p satoken.Pod, now time.Time) (string, time.Time, error)
}

// Recorder takes events; it must not block (events.Recorder does not).
type Recorder interface {
	Record(events.Event)
}

// Validate fills in defaults and checks the fields; its errors start with
// the field's name.
func (c *Config) Validate() error {
	if c.Endpoint == "" {
		c.Endpoint = "/run/containerd/containerd.sock"
	}
	ep := strings.TrimPrefix(c.Endpoint, "unix://")
	if !filepath.IsAbs(ep) {
		return fmt.Errorf("endpoint: %q is not an absolute socket path or unix:///path URL", c.Endpoint)
	}
	c.Endpoint = ep
	for name, p := range map[string]*string{"rootDir": &c.RootDir, "podLogDir": &c.PodLogDir,
		"cgroupRoot": &c.CgroupRoot} {
		if *p != "" && !filepath.IsAbs(*p) {
			return fmt.Errorf("%s: %q is not an absolute path", name, *p)
		}
	}
	if c.RootDir == "" {
		c.RootDir = "/var/lib/tether/edgecore"
	}
	if c.PodLogDir == "" {
		c.PodLogDir = "/var/log/pods"
	}
	if c.CgroupRoot == "" {
		c.CgroupRoot = "/sys/fs/cgroup"
	}
	if c.CgroupParent == "" {
		c.CgroupParent = "/tether"
	}
	if !strings.HasPrefix(c.CgroupParent, "/") || strings.Contains(c.CgroupParent, "..") || strings.HasSuffix(c.CgroupParent, ".slice") {
		return fmt.Errorf("cgroupParent: %q is not an absolute cgroupfs path like /tether (the systemd driver is not supported)", c.CgroupParent)
	}
	c.CgroupParent = filepath.Clean(c.CgroupParent)
	for _, s := range c.ClusterDNS {
		if net.ParseIP(s) == nil {
			return fmt.Errorf("clusterDNS: %q is not an IP address", s)
		}
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = "cluster.local"
	}
	if c.PauseImage != "" && strings.ContainsAny(c.PauseImage, " \t\n") {
		return fmt.Errorf("pauseImage: %q is not an image reference", c.PauseImage)
	}
	for _, d := range []struct {
		name string
		v    *metav1.Duration
		def  time.Duration
	}{
		{"requestTimeout", &c.RequestTimeout, 2 * time.Minute},
		{"pullTimeout", &c.PullTimeout, 15 * time.Minute},
		{"backoffInitial", &c.BackoffInitial, 10 * time.Second},
		{"backoffMax", &c.BackoffMax, 5 * time.Minute},
		{"relistPeriod", &c.RelistPeriod, time.Second},
		{"imageMinimumGCAge", &c.ImageMinimumGCAge, 2 * time.Minute},
		{"imageGCPeriod", &c.ImageGCPeriod, 5 * time.Minute},
	} {
		if d.v.Duration < 0 {
			return fmt.Errorf("%s: %s is negative", d.name, d.v.Duration)
		}
		if d.v.Duration == 0 {
			d.v.Duration = d.def
		}
	}
	if c.ContainerLogMaxSize.Sign() < 0 {
		return fmt.Errorf("containerLogMaxSize: %s is negative", c.ContainerLogMaxSize.String())
	}
	if c.ContainerLogMaxSize.IsZero() {
		c.ContainerLogMaxSize = resource.MustParse("10Mi")
	}
	if c.ContainerLogMaxFiles < 0 || c.ContainerLogMaxFiles == 1 {
		return fmt.Errorf("containerLogMaxFiles: %d, want at least 2", c.ContainerLogMaxFiles)
	}
	if c.ContainerLogMaxFiles == 0 {
		c.ContainerLogMaxFiles = 5
	}
	if c.BackoffMax.Duration < c.BackoffInitial.Duration {
		return fmt.Errorf("backoffMax: %s is below backoffInitial %s", c.BackoffMax.Duration, c.BackoffInitial.Duration)
	}
	if c.ImageGCHighThresholdPercent == 0 {
		c.ImageGCHighThresholdPercent = 85
	}
	if c.ImageGCLowThresholdPercent == 0 {
		c.ImageGCLowThresholdPercent = 80
	}
	if h := c.ImageGCHighThresholdPercent; h < 1 || h > 100 {
		return fmt.Errorf("imageGCHighThresholdPercent: %d is not in 1..100", h)
	}
	if l := c.ImageGCLowThresholdPercent; l < 1 || l >= c.ImageGCHighThresholdPercent {
		return fmt.Errorf("imageGCLowThresholdPercent: %d, want 1 or more and below imageGCHighThresholdPercent %d",
			l, c.ImageGCHighThresholdPercent)
	}
	if ic := c.InCluster; ic != nil && (net.ParseIP(ic.Host) == nil || ic.Port < 1 || ic.Port > 65535 ||
		len(ic.CACert) == 0 || ic.Tokens == nil) {
		return errors.New("inCluster: want an IP host, a port, a CA and a token minter")
	}
	if c.NodeIP != "" && net.ParseIP(c.NodeIP) == nil {
		return errors.New("nodeIP: not an IP address")
	}
	return nil
}
