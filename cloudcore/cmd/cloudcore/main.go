// Command cloudcore runs Tether's cloud side next to the Kubernetes API
// server: it holds one websocket session per edge node and syncs pods,
// configmaps, secrets, devices and device models down and node, pod and
// device status up. At start it installs the device CRDs unless
// --skip-crd-install (or skipCRDInstall in the file) says the operator
// applies manifests/crds.
//
//	cloudcore --config cloudcore.yaml
//	cloudcore --kubeconfig ~/.kube/config --listen 0.0.0.0:10000
//
// `cloudcore token` manages the join tokens edge nodes join with (package
// cloudcore/jointoken), with the operator's kubeconfig:
//
//	cloudcore token create --cloud hub.example.com:10000 --uses 1 --node edge-1
//	cloudcore token list
//	cloudcore token delete ID
//
// create prints the command to run on the node, `edgecore join --cloud ...
// --token <id>.<secret>.<CA hash>`, the CA hash pinning the CA that
// cloudcore keeps in the Secret tether-system/tether-ca (created if
// missing).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/pki"
)

// version is stamped at build time by make release (hack/release.sh):
// -ldflags "-X main.version=$(git describe --always --dirty)".
var version = "dev"

func main() {
	var err error
	if len(os.Args) > 1 && os.Args[1] == "token" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err = runToken(ctx, os.Args[2:], os.Stdout, os.Stderr)
		stop()
	} else {
		err = run()
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "cloudcore:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		configFile = flag.String("config", "", "YAML configuration file (see cloudcore.Config)")
		kubeconfig = flag.String("kubeconfig", "", "kubeconfig of the API server (overrides the file)")
		listen     = flag.String("listen", "", "address the hub listens on (overrides the file)")
		logLevel   = flag.String("log-level", "info", "debug, info, warn or error")
		skipCRDs   = flag.Bool("skip-crd-install", false, "do not create or update the device CRDs (sets skipCRDInstall)")
		showVer    = flag.Bool("version", false, "print the version and exit")
		proxySock  = flag.String("kubelet-proxy-socket", "", "unix socket of the API server's egress proxy to edge kubelets (overrides kubeletProxySocket)")
	)
	flag.Parse()
	if *showVer {
		fmt.Println("cloudcore", version)
		return nil
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	var cfg cloudcore.Config
	if *configFile != "" {
		b, err := os.ReadFile(*configFile)
		if err != nil {
			return err
		}
		if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
			return fmt.Errorf("config %s: %w", *configFile, err)
		}
	}
	override(&cfg.Kubeconfig, *kubeconfig)
	override(&cfg.ListenAddr, *listen)
	override(&cfg.KubeletProxySocket, *proxySock)
	if *skipCRDs {
		cfg.SkipCRDInstall = true
	}
	cfg.Logger = log

	cc, err := cloudcore.New(cfg)
	if err != nil {
		return err
	}
	log.Info("edges join with `cloudcore token create`; the CA's pin", slog.String("hash", pki.Hash(cc.CA.Cert)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cc.Run(ctx)
}

func override(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}
