// Command edgecore runs Tether's edge side on an edge machine: it keeps the
// objects the cloud sent in a local store, runs the node's pods, serves its
// devices' twins over MQTT (on its embedded broker by default), and reports
// their status, whether or not the cloud is reachable.
//
//	edgecore --config /etc/tether/edgecore.yaml
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/edgecore"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "edgecore:", err)
		os.Exit(1)
	}
}

func run() error {
	configFile := flag.String("config", "/etc/tether/edgecore.yaml", "YAML configuration file (see edgecore.Config)")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Parse()
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	b, err := os.ReadFile(*configFile)
	if err != nil {
		return err
	}
	var cfg edgecore.Config
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		return fmt.Errorf("config %s: %w", *configFile, err)
	}
	cfg.Logger = log
	ec, err := edgecore.New(cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", *configFile, err)
	}
	defer ec.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return ec.Run(ctx)
}
