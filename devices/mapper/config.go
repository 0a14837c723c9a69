package mapper

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Defaults of Config.
const (
	DefaultMetaserver = "http://127.0.0.1:10550"
	// DefaultMetaserverTokenFile is where an edgecore with the default
	// dataDir writes the devices client's token.
	DefaultMetaserverTokenFile = "/var/lib/tether/edgecore/credentials/metaserver-devices.token"
	DefaultBrokerURL           = "tcp://127.0.0.1:1883"
	DefaultCollectCycle        = time.Second
	DefaultTimeout             = time.Second
)

// Config configures the mapper (modbus-mapper's flags set it).
type Config struct {
	// NodeName is the edge node whose devices the mapper serves: those
	// with spec.nodeName equal to it and protocol "modbus". Required.
	NodeName string
	// Metaserver is the URL of the edge's metaserver, where the mapper
	// lists and watches devices and models (default DefaultMetaserver).
	// http only: the metaserver listens on loopback without TLS.
	Metaserver string
	// MetaserverTokenFile holds the bearer token the metaserver knows the
	// mapper by (default DefaultMetaserverTokenFile: the devices client
	// edgecore provisions, which reads the node, its devices and models,
	// and nothing else). It is read again on every request, so a new one
	// is picked up.
	MetaserverTokenFile string
	// BrokerURL is the MQTT broker the edge's twin uses, tcp://host:port
	// (mqtt:// is the same; default DefaultBrokerURL), or ssl://host:port
	// (mqtts:// is the same) for MQTT over TLS.
	BrokerURL string
	// TLS is the client TLS configuration (the CA to trust) of an ssl://
	// BrokerURL: required with one, refused without.
	TLS *tls.Config
	// Username and Password, when Username is set, are sent to the broker.
	Username string
	Password string
	// ClientID is the MQTT client id (default tether-modbus-mapper-<node>).
	ClientID string
	// CollectCycle is how often a property is read when its Device says
	// nothing (collectCycle 0; default DefaultCollectCycle).
	CollectCycle time.Duration
	// Timeout bounds one Modbus request when the device's configData has
	// no timeout (default DefaultTimeout).
	Timeout time.Duration
	// Logger is where the mapper logs (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.NodeName == "" {
		return errors.New("mapper: nodeName: required: the edge node whose devices to serve")
	}
	if errs := validation.IsDNS1123Subdomain(c.NodeName); len(errs) > 0 {
		return fmt.Errorf("mapper: nodeName %q: %s", c.NodeName, strings.Join(errs, "; "))
	}
	if c.Metaserver == "" {
		c.Metaserver = DefaultMetaserver
	}
	if u, err := url.Parse(c.Metaserver); err != nil || u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("mapper: metaserver %q: want http://host:port, the edge metaserver's address", c.Metaserver)
	}
	if c.MetaserverTokenFile == "" {
		c.MetaserverTokenFile = DefaultMetaserverTokenFile
	}
	if _, err := os.Stat(c.MetaserverTokenFile); err != nil {
		return fmt.Errorf("mapper: metaserverTokenFile: %w (edgecore writes it in its credentials directory)", err)
	}
	if c.BrokerURL == "" {
		c.BrokerURL = DefaultBrokerURL
	}
	if err := validateBrokerURL(c.BrokerURL); err != nil {
		return fmt.Errorf("mapper: brokerURL: %w", err)
	}
	if u, _ := url.Parse(c.BrokerURL); (u.Scheme == "ssl" || u.Scheme == "mqtts") != (c.TLS != nil) {
		return fmt.Errorf("mapper: brokerURL %q: a TLS configuration (CA file) is required with ssl:// and refused with tcp://", c.BrokerURL)
	}
	if c.Username == "" && c.Password != "" {
		return errors.New("mapper: password: set without a username")
	}
	if c.ClientID == "" {
		c.ClientID = "tether-modbus-mapper-" + c.NodeName
	}
	if len(c.ClientID) > 65535 {
		return errors.New("mapper: clientID: longer than 65535 bytes")
	}
	if c.CollectCycle == 0 {
		c.CollectCycle = DefaultCollectCycle
	}
	if c.CollectCycle < minCycle {
		return fmt.Errorf("mapper: collectCycle %s: want at least %s", c.CollectCycle, minCycle)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Timeout < time.Millisecond {
		return fmt.Errorf("mapper: timeout %s: want at least 1ms", c.Timeout)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// validateBrokerURL checks tcp://host:port or mqtt://host:port, or with
// TLS ssl://host:port or mqtts://host:port.
func validateBrokerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL like tcp://127.0.0.1:1883", s)
	}
	switch u.Scheme {
	case "tcp", "mqtt", "ssl", "mqtts":
	default:
		return fmt.Errorf("%q: scheme %q, want tcp, mqtt, ssl or mqtts", s, u.Scheme)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return fmt.Errorf("%q: want host and port", s)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("%q: want only tcp://host:port (credentials go in username and password)", s)
	}
	return nil
}
