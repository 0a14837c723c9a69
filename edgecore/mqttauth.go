package edgecore

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"

	"github.com/tether-edge/tether/devices/broker"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/pki"
	"github.com/tether-edge/tether/protocol"
)

// MapperUsername is the embedded broker's user for mappers (see
// MQTTConfig); its password is in MapperPasswordFile.
const MapperUsername = "mapper"

// edgeUsername is edgecore's own user on the embedded broker when
// devices.mqtt.username is not set.
const edgeUsername = "edgecore"

// CredentialsDir is the directory (mode 0700) of the node's local
// credentials, under the data directory.
func CredentialsDir(dataDir string) string { return filepath.Join(dataDir, "credentials") }

// MapperPasswordFile is the file holding the password of MapperUsername on
// the embedded broker: give it to mappers (modbus-mapper --password-file).
func MapperPasswordFile(dataDir string) string {
	return filepath.Join(CredentialsDir(dataDir), "mqtt-"+MapperUsername+".password")
}

// MapperProtocolUsername is the embedded broker's user for the mappers of
// protocol (MQTTConfig.MapperProtocols).
func MapperProtocolUsername(protocol string) string { return MapperUsername + "-" + protocol }

// MapperProtocolPasswordFile is the file holding the password of
// MapperProtocolUsername(protocol).
func MapperProtocolPasswordFile(dataDir, protocol string) string {
	return filepath.Join(CredentialsDir(dataDir), "mqtt-"+MapperProtocolUsername(protocol)+".password")
}

// protocolName is what MQTTConfig.MapperProtocols takes: a DNS label short
// enough that "mqtt-mapper-<p>.password" is one too.
var protocolName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,51}[a-z0-9])?$`)

// protocolDevices is the set of the store's devices (those of this node)
// whose spec.protocol.protocolName is protocol: what its mapper user may
// touch. It reads the store at each call (a bbolt read and a small JSON
// decode: microseconds), so that it follows the devices the hub sends.
type protocolDevices struct {
	db       *store.DB
	protocol string
}

func (p protocolDevices) Has(namespace, name string) bool {
	var has bool
	p.db.View(func(tx *store.Tx) error {
		o, err := tx.ObjectByName(protocol.KindDevice, namespace, name)
		if err != nil || o == nil {
			return err
		}
		var d struct {
			Spec struct {
				Protocol struct {
					ProtocolName string `json:"protocolName"`
				} `json:"protocol"`
			} `json:"spec"`
		}
		has = json.Unmarshal(o.Data, &d) == nil && d.Spec.Protocol.ProtocolName == p.protocol
		return nil
	})
	return has
}

// mqttClient is how edgecore's twin connects to its broker, and the
// embedded broker's configuration (nil with an external broker).
type mqttClient struct {
	broker             *broker.Config
	username, password string
	clientTLS          *tls.Config
}

// mqttSetup makes the credentials and TLS configurations of cfg (checked by
// validate): for the embedded broker, edgecore's user (the configured one,
// or edgeUsername with a random password) and the mappers' (its password
// read from MapperPasswordFile, or made and written there).
func mqttSetup(dataDir, node string, cfg MQTTConfig, db *store.DB, log *slog.Logger) (*mqttClient, error) {
	m := &mqttClient{username: cfg.Username, password: cfg.password()}
	if cfg.Broker == BrokerExternal {
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("devices.mqtt.caFile: %w", err)
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("devices.mqtt.caFile: %s holds no PEM certificate", cfg.CAFile)
			}
			m.clientTLS = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		}
		return m, nil
	}
	if m.username == "" {
		pw, err := pki.RandomSecret()
		if err != nil {
			return nil, err
		}
		m.username, m.password = edgeUsername, pw
	}
	mapperPW, err := mapperPassword(dataDir)
	if err != nil {
		// A full disk must not stop the node: the mappers' user gets a
		// password nobody knows until the file can be written (at a later
		// start), and the device twin itself runs.
		log.Error("devices.mqtt: cannot write the mappers' password: mappers cannot connect until it can be",
			slog.String("file", MapperPasswordFile(dataDir)), slog.Any("err", err))
		if mapperPW, err = pki.RandomSecret(); err != nil {
			return nil, err
		}
	}
	b := &broker.Config{Addr: cfg.Addr, NodeName: node, AllowAnonymous: cfg.AllowAnonymous, AllowInsecure: cfg.AllowInsecure,
		MaxClients: cfg.MaxClients,
		Logger:     log, Users: []broker.User{
			{Name: m.username, Password: m.password, Role: broker.RoleEdge},
			{Name: MapperUsername, Password: mapperPW, Role: broker.RoleDevice},
		}}
	for _, p := range cfg.MapperProtocols {
		pw, err := pki.SecretFile(MapperProtocolPasswordFile(dataDir, p), 1)
		if err != nil {
			log.Error("devices.mqtt: cannot write a mapper password: its mappers cannot connect until it can be",
				slog.String("file", MapperProtocolPasswordFile(dataDir, p)), slog.Any("err", err))
			if pw, err = pki.RandomSecret(); err != nil {
				return nil, err
			}
		}
		b.Users = append(b.Users, broker.User{Name: MapperProtocolUsername(p), Password: pw, Role: broker.RoleDevice,
			Devices: protocolDevices{db: db, protocol: p}})
	}
	if cfg.CertFile != "" {
		b.TLS, err = broker.LoadTLS(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("devices.mqtt.certFile: %w", err)
		}
		m.clientTLS = pinned(b.TLS.Certificates[0].Certificate[0])
	}
	m.broker = b
	return m, nil
}

// pinned is a client TLS configuration that accepts exactly the
// certificate leaf (DER): edgecore dials its own broker, whose certificate
// it loaded, perhaps for names other than the address it dials.
func pinned(leaf []byte) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The chain and name are not what is checked: VerifyConnection
		// compares the certificate with the one the broker serves.
		InsecureSkipVerify: true, //nolint:gosec // pinned in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, leaf) {
				return errors.New("mqtt: the broker's certificate is not the embedded broker's")
			}
			return nil
		},
	}
}

// mapperPassword reads the mappers' password, or makes one and writes it
// (mode 0600, atomically and durably) in the credentials directory (mode
// 0700), where it stays across restarts so that running mappers keep
// working.
func mapperPassword(dataDir string) (string, error) {
	return pki.SecretFile(MapperPasswordFile(dataDir), 1)
}
