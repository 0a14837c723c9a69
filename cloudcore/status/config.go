package status

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// Config configures a Writer. A zero field takes its default.
type Config struct {
	// Workers is the number of concurrent API writers of everything but
	// Leases (default 8). It bounds the writes in flight on top of the
	// client's own QPS and Burst.
	Workers int

	// LeaseWorkers is the number of concurrent Lease renewals (default 32).
	// Leases have a lane of their own, so that renewals (one per connected
	// node every RenewInterval) and status writes never wait for each
	// other: a pod status does not queue behind thousands of renewals, and
	// a burst of pod statuses does not let Leases expire.
	LeaseWorkers int

	// LeaseClient, if set, renews the Leases; cloudcore gives it a rate
	// limit of its own (default: the client of everything else).
	LeaseClient kubernetes.Interface

	// LeaseDuration is spec.leaseDurationSeconds of node Leases (default
	// 40s). It is a whole number of seconds, at least one.
	LeaseDuration time.Duration

	// RenewInterval is the least time between two renewals of one node's
	// Lease, however often the node sends heartbeats (default
	// LeaseDuration/4). It is below LeaseDuration.
	RenewInterval time.Duration

	// MaxRetries is how often a write that failed with a retryable error
	// (a timeout, 429, a 5xx, a 403, a conflict on a Node or Lease, a
	// transport error) is retried before its messages are given up (default 5).
	MaxRetries int

	// RetryBaseDelay is the back-off before the first retry of an object;
	// it doubles with each further retry (default 200ms).
	RetryBaseDelay time.Duration

	// RetryMaxDelay caps the back-off between retries (default 10s).
	RetryMaxDelay time.Duration

	// WriteTimeout bounds each API call (default 10s).
	WriteTimeout time.Duration

	// MirrorNamespaces are the namespaces an edge may create mirror pods
	// in. Empty means every namespace but the system ones: kube-system,
	// kube-public and kube-node-lease. A list replaces that default
	// entirely, so a cluster that wants edges to mirror static pods into
	// kube-system lists it (with every other namespace it allows).
	MirrorNamespaces []string

	// Clock tells the time for Lease renewals and retry back-off (default
	// the real clock). Tests inject a fake one.
	Clock clock.WithTicker
}

// validate rejects bad values and fills in defaults.
func (c *Config) validate() error {
	if c.Workers < 0 {
		return fmt.Errorf("workers %d is negative", c.Workers)
	}
	if c.Workers == 0 {
		c.Workers = 8
	}
	if c.LeaseWorkers < 0 {
		return fmt.Errorf("lease workers %d is negative", c.LeaseWorkers)
	}
	if c.LeaseWorkers == 0 {
		c.LeaseWorkers = 32
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = 40 * time.Second
	}
	if c.LeaseDuration < time.Second || c.LeaseDuration%time.Second != 0 || c.LeaseDuration > 24*time.Hour {
		return fmt.Errorf("lease duration %v: want whole seconds from 1s to 24h", c.LeaseDuration)
	}
	if c.RenewInterval == 0 {
		c.RenewInterval = c.LeaseDuration / 4
	}
	if c.RenewInterval < 0 || c.RenewInterval >= c.LeaseDuration {
		return fmt.Errorf("renew interval %v: want 0 < interval < lease duration %v", c.RenewInterval, c.LeaseDuration)
	}
	if c.MaxRetries < 0 {
		return fmt.Errorf("max retries %d is negative", c.MaxRetries)
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 5
	}
	if c.RetryBaseDelay < 0 || c.RetryMaxDelay < 0 || c.WriteTimeout < 0 {
		return fmt.Errorf("retry delays %v and %v and write timeout %v: want none negative",
			c.RetryBaseDelay, c.RetryMaxDelay, c.WriteTimeout)
	}
	if c.RetryBaseDelay == 0 {
		c.RetryBaseDelay = 200 * time.Millisecond
	}
	if c.RetryMaxDelay == 0 {
		c.RetryMaxDelay = 10 * time.Second
	}
	if c.RetryMaxDelay < c.RetryBaseDelay {
		return fmt.Errorf("retry max delay %v is below the base delay %v", c.RetryMaxDelay, c.RetryBaseDelay)
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 10 * time.Second
	}
	for _, ns := range c.MirrorNamespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return fmt.Errorf("mirror namespace %q: %s", ns, strings.Join(errs, "; "))
		}
	}
	if c.Clock == nil {
		c.Clock = clock.RealClock{}
	}
	return nil
}

// systemNamespaces are the namespaces no mirror pod goes to unless
// Config.MirrorNamespaces lists them.
var systemNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

// mirrorNamespaceAllowed reports whether an edge may create a mirror pod in
// namespace ns.
func (c *Config) mirrorNamespaceAllowed(ns string) bool {
	if len(c.MirrorNamespaces) > 0 {
		return slices.Contains(c.MirrorNamespaces, ns)
	}
	return !slices.Contains(systemNamespaces, ns)
}
