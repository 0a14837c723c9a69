// Command modbus-mapper bridges the Modbus TCP devices of an edge node to
// the device twin topics on MQTT (package devices/mapper): it learns the
// node's devices from the edge's metaserver, reads their properties on
// their collect cycle, reports values and state, and writes desired values.
//
//	modbus-mapper --node store-0421-pi [--metaserver http://127.0.0.1:10550]
//	    [--broker tcp://127.0.0.1:1883] [--username u --password-file f]
//	    [--ca-file ca.crt, with --broker ssl://host:8883]
//
// edgecore's embedded broker wants credentials: the mappers' user is
// "mapper" and its password is in <edgecore dataDir>/credentials/mqtt-mapper.password
// (edgecore makes it at its first start). With that user the mapper may
// report and read what edgecore answers; only edgecore may publish deltas.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/tether-edge/tether/devices/mapper"
)

// version is stamped at build time by make release (hack/release.sh):
// -ldflags "-X main.version=$(git describe --always --dirty)".
var version = "dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "modbus-mapper:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg mapper.Config
	flag.StringVar(&cfg.NodeName, "node", "", "the edge node whose devices to serve (required)")
	flag.StringVar(&cfg.Metaserver, "metaserver", mapper.DefaultMetaserver, "URL of the edge's metaserver")
	flag.StringVar(&cfg.MetaserverTokenFile, "metaserver-token-file", mapper.DefaultMetaserverTokenFile,
		"the metaserver's token for device mappers (edgecore's credentials/metaserver-devices.token)")
	flag.StringVar(&cfg.BrokerURL, "broker", mapper.DefaultBrokerURL, "MQTT broker of the edge's device twin, tcp://host:port")
	flag.StringVar(&cfg.Username, "username", "", "MQTT username, if the broker wants one")
	passwordFile := flag.String("password-file", "", "file holding the MQTT password (edgecore's embedded broker: <dataDir>/credentials/mqtt-mapper.password, user mapper; "+
		"with mapperProtocols [modbus]: mqtt-mapper-modbus.password, user mapper-modbus, which may use the modbus devices' topics only)")
	caFile := flag.String("ca-file", "", "CA bundle (PEM) the broker's certificate must chain to, with --broker ssl://host:port")
	flag.StringVar(&cfg.ClientID, "client-id", "", "MQTT client id (default tether-modbus-mapper-<node>)")
	flag.DurationVar(&cfg.CollectCycle, "collect-cycle", mapper.DefaultCollectCycle, "how often a property is read when its Device says nothing")
	flag.DurationVar(&cfg.Timeout, "timeout", mapper.DefaultTimeout, "bound of one Modbus request when the device says nothing")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if *showVersion {
		fmt.Println("modbus-mapper", version)
		return nil
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if *passwordFile != "" {
		b, err := os.ReadFile(*passwordFile)
		if err != nil {
			return fmt.Errorf("--password-file: %w", err)
		}
		cfg.Password = strings.TrimRight(string(b), "\r\n")
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("--ca-file: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--ca-file: %s holds no PEM certificate", *caFile)
		}
		cfg.TLS = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	m, err := mapper.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return m.Start(ctx)
}
