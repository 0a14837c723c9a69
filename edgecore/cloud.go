package edgecore

import (
	"context"
	"crypto/x509"
	"net/url"
	"time"

	"github.com/tether-edge/tether/edgecore/accessreview"
	"github.com/tether-edge/tether/edgecore/agent"
	"github.com/tether-edge/tether/edgecore/apirelay"
	"github.com/tether-edge/tether/edgecore/credentials"
	"github.com/tether-edge/tether/edgecore/link"
	"github.com/tether-edge/tether/protocol"
)

// renewingDialer dials the hub with the node's certificate; one that expired
// while the node was offline is first renewed through the hub's renewal
// endpoint (within the hub's grace period).
type renewingDialer struct {
	link  *link.Dialer
	creds *credentials.Credentials
	roots *x509.CertPool
	// hub is the hub's https://host:port.
	hub string
}

func (d *renewingDialer) Dial(ctx context.Context, hello *protocol.Hello) (*link.Conn, error) {
	if d.creds.Expired(time.Now()) {
		rctx, cancel := context.WithTimeout(ctx, d.link.Timeout)
		err := d.creds.RenewExpired(rctx, d.hub, d.roots)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	return d.link.Dial(ctx, hello)
}

// hubHTTPS turns the hub's wss:// URL into its https://host:port.
func hubHTTPS(wss string) string {
	u, err := url.Parse(wss)
	if err != nil {
		return ""
	}
	return (&url.URL{Scheme: "https", Host: u.Host}).String()
}

// agentCredentials is creds as the agent's interface (nil stays nil).
func agentCredentials(creds *credentials.Credentials) agent.Credentials {
	if creds == nil {
		return nil
	}
	return creds
}

// agentRelay is relay as the agent's Relay: nil (no interface holding a
// nil pointer) when writes are not relayed.
func agentRelay(relay *apirelay.Relay) agent.Relay {
	if relay == nil {
		return nil
	}
	return relay
}

// agentReviews is access as the agent's Reviews: nil (no interface holding
// a nil pointer) when the in-cluster API is off.
func agentReviews(access *accessreview.Cache) agent.Reviews {
	if access == nil {
		return nil
	}
	return access
}
