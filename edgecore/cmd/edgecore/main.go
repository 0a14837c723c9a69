// Command edgecore runs Tether's edge side on an edge machine: it keeps the
// objects the cloud sent in a local store, runs the node's pods, serves its
// devices' twins over MQTT (on its embedded broker by default), and reports
// their status, whether or not the cloud is reachable.
//
//	edgecore join --cloud HOST:PORT --token TOKEN [--node-name NAME] [--config /etc/tether/edgecore.yaml] [--install-service]
//	edgecore --config /etc/tether/edgecore.yaml
//	edgecore reset [--config /etc/tether/edgecore.yaml] [--remove-data] --yes
//	edgecore --version
//
//	edgecore ctl [--socket PATH] pods | logs [-f] POD | exec [-i] [-t] POD -- CMD...
//
// ctl reads the logs of this node's pods and runs commands in them on the
// box itself, with or without the cloud (package ctl).
//
// join makes the node's key, gets its certificate with a join token from
// `cloudcore token create` and writes the configuration edgecore runs with;
// with --install-service it also writes /etc/systemd/system/edgecore.service
// and enables and starts it (package edgecore/install). reset undoes a
// join: the unit, the node's credentials, the Service routing rules (the
// nftables table inet tether), and with --remove-data the data directory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/edgecore"
	"github.com/tether-edge/tether/edgecore/ctl"
	"github.com/tether-edge/tether/edgecore/install"
	"github.com/tether-edge/tether/edgecore/join"
	"github.com/tether-edge/tether/edgecore/svcproxy"
)

// version is stamped at build time by make release (hack/release.sh):
// -ldflags "-X main.version=$(git describe --always --dirty)".
var version = "dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "edgecore:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) > 1 && os.Args[1] == "join" {
		return runJoin(os.Args[2:])
	}
	if len(os.Args) > 1 && os.Args[1] == "reset" {
		return runReset(os.Args[2:])
	}
	if len(os.Args) > 1 && os.Args[1] == "ctl" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err := ctl.Main(ctx, os.Args[2:], ctl.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
		var ee *ctl.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.Code)
		}
		return err
	}
	configFile := flag.String("config", "/etc/tether/edgecore.yaml", "YAML configuration file (see edgecore.Config)")
	logLevel := flag.String("log-level", "info", "debug, info, warn or error")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("edgecore", version)
		return nil
	}
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

func runJoin(args []string) error {
	fs := flag.NewFlagSet("edgecore join", flag.ContinueOnError)
	var o join.Options
	fs.StringVar(&o.Cloud, "cloud", "", "the hub's HOST:PORT (required)")
	fs.StringVar(&o.Token, "token", "", "join token from `cloudcore token create` (required)")
	fs.StringVar(&o.NodeName, "node-name", "", "the node's name (default: the host name)")
	fs.StringVar(&o.ConfigPath, "config", "/etc/tether/edgecore.yaml",
		"edgecore configuration to write (settings already in it are kept)")
	fs.StringVar(&o.PKIDir, "pki-dir", "", "where to write ca.crt and node.pem (default: pki/ beside --config)")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Second, "bound of each request to the cloud")
	installService := fs.Bool("install-service", false,
		"also write "+install.UnitDir+"/"+install.UnitName+" (running this binary) and enable and start it with systemctl")
	root := fs.String("root", "/", "directory the unit is written below (for tests and image builds; systemctl --root)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Cloud == "" || o.Token == "" {
		return fmt.Errorf("join: --cloud and --token are required (see `cloudcore token create`)")
	}
	start := time.Now()
	res, err := join.Join(context.Background(), o)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	fmt.Printf("node %s joined in %s; certificate valid until %s\n", res.NodeName,
		time.Since(start).Round(time.Millisecond), res.NotAfter.UTC().Format(time.RFC3339))
	fmt.Printf("wrote %s, %s, %s\n", res.ConfigPath, res.CAFile, res.CredentialsFile)
	if !*installService {
		fmt.Printf("run: edgecore --config %s\n", res.ConfigPath)
		return nil
	}
	inst, err := install.InstallService(context.Background(), install.Options{Root: *root, ConfigPath: res.ConfigPath})
	if inst != nil {
		fmt.Printf("wrote %s\n", inst.UnitPath)
		for _, c := range inst.Systemctl {
			fmt.Printf("ran: %s\n", c)
		}
		if inst.Note != "" {
			fmt.Println(inst.Note)
		}
	}
	if err != nil {
		return fmt.Errorf("join: the node joined, but its service: %w", err)
	}
	return nil
}

// nftTable is the Service routing table of the configuration at path
// (services.table, default "tether"; also when the file does not read or
// names a table edgecore would refuse).
func nftTable(path string) string {
	var cfg struct {
		Services struct {
			Table string `json:"table"`
		} `json:"services"`
	}
	if b, err := os.ReadFile(path); err == nil {
		_ = yaml.Unmarshal(b, &cfg)
	}
	if !strings.HasPrefix(cfg.Services.Table, "tether") { // as edgecore requires
		return "tether"
	}
	return cfg.Services.Table
}

// runReset undoes a join (package edgecore/install): without --yes it only
// lists what it would remove.
func runReset(args []string) error {
	fs := flag.NewFlagSet("edgecore reset", flag.ContinueOnError)
	var o install.Options
	fs.StringVar(&o.ConfigPath, "config", "/etc/tether/edgecore.yaml", "the configuration edgecore join wrote")
	fs.StringVar(&o.Root, "root", "/", "directory the unit was written below (as for join --root)")
	fs.BoolVar(&o.RemoveData, "remove-data", false, "also remove the data directory: the store, pod volumes and logs")
	yes := fs.Bool("yes", false, "do it: without --yes, reset lists what it would remove and changes nothing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("reset: unexpected arguments %q", fs.Args())
	}
	paths, err := install.Plan(o)
	if err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	if !*yes {
		fmt.Printf("edgecore reset would stop and disable %s, take cloud and nodeName out of %s, and remove:\n",
			install.UnitName, o.ConfigPath)
		for _, p := range paths {
			fmt.Println("  " + p)
		}
		fmt.Printf("  the nftables table inet %s (the Service routing rules)\n", nftTable(o.ConfigPath))
		return fmt.Errorf("reset: nothing done; run again with --yes")
	}
	removed, err := install.Reset(context.Background(), o)
	for _, p := range removed {
		fmt.Println("removed", p)
	}
	if err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	// After the unit stopped: edgecore no longer puts the table back.
	table := nftTable(o.ConfigPath)
	if err := (svcproxy.Kernel{Table: table}).Remove(); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	fmt.Println("removed the nftables table inet " + table)
	fmt.Println("reset done; the pods keep running in containerd until it removes them")
	return nil
}
