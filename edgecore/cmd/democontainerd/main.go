// Command democontainerd runs a private containerd for the demo: its own
// config, socket, state and pod network, with a pause and a busybox image
// built on this machine (no registry is needed), until SIGINT or SIGTERM.
// It is package critest's containerd, the one the integration tests use.
//
//	democontainerd --dir .run/containerd --ready-file .run/containerd.ready
//
// Once ready it writes "<endpoint> <pause image> <busybox image>" to the
// ready file. It needs root, containerd, runc, the CNI plugins and
// busybox-static.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tether-edge/tether/edgecore/runtime/cri/critest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "democontainerd:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", ".run/containerd", "directory for containerd's config, socket, state and logs")
	ready := flag.String("ready-file", "", "file to write \"<endpoint> <pause image> <busybox image>\" to once ready")
	flag.Parse()
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	os.RemoveAll(abs)
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	c, err := critest.Start(startCtx, critest.Options{Dir: abs})
	cancel()
	if err != nil {
		return err
	}
	defer c.Stop()
	fmt.Printf("containerd ready: endpoint %s, images %s and %s, pod network %s\n",
		c.Endpoint, c.PauseImage, c.BusyboxImage, c.Subnet)
	if *ready != "" {
		line := fmt.Sprintf("%s %s %s\n", c.Endpoint, c.PauseImage, c.BusyboxImage)
		if err := os.WriteFile(*ready, []byte(line), 0o644); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return nil
}
