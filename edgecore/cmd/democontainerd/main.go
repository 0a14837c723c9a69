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
//
//	democontainerd pods --dir .run/containerd
//
// lists the pods that run in it, as the runtime sees them (the edge's
// truth, also while the cloud is away): one line per ready sandbox,
// "<namespace>/<name> <uid> <ip>", sorted.
//
//	democontainerd rules-off [--table tether]
//
// removes edgecore's Service routing rules (the nftables table inet
// tether), as a power cut does: edgecore puts them back from its store at
// its next start. The demo's power cut and its end use it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tether-edge/tether/edgecore/runtime/cri/critest"
	"github.com/tether-edge/tether/edgecore/svcproxy"
)

func main() {
	run := run
	if len(os.Args) > 1 && os.Args[1] == "pods" {
		run = pods
	}
	if len(os.Args) > 1 && os.Args[1] == "rules-off" {
		run = rulesOff
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "democontainerd:", err)
		os.Exit(1)
	}
}

// rulesOff removes the table of edgecore's Service rules.
func rulesOff() error {
	fs := flag.NewFlagSet("democontainerd rules-off", flag.ContinueOnError)
	table := fs.String("table", "tether", "the nftables table (family inet) edgecore's services.table names")
	if err := fs.Parse(os.Args[2:]); err != nil {
		return err
	}
	if !strings.HasPrefix(*table, "tether") {
		return fmt.Errorf("rules-off: table %q: edgecore's tables start with tether", *table)
	}
	return svcproxy.Kernel{Table: *table}.Remove()
}

func run() error {
	dir := flag.String("dir", ".run/containerd", "directory for containerd's config, socket, state and logs")
	ready := flag.String("ready-file", "", "file to write \"<endpoint> <pause image> <busybox image>\" to once ready")
	subnet := flag.String("subnet", "", "the pod network, a /24 (default: a random one); the same across restarts keeps what names it valid")
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
	c, err := critest.Start(startCtx, critest.Options{Dir: abs, Subnet: *subnet})
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

// pods prints the ready pod sandboxes of the containerd in --dir.
func pods() error {
	fs := flag.NewFlagSet("democontainerd pods", flag.ContinueOnError)
	dir := fs.String("dir", ".run/containerd", "the directory democontainerd runs containerd in")
	if err := fs.Parse(os.Args[2:]); err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+filepath.Join(*dir, "containerd.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	list, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}})
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	var lines []string
	for _, sb := range list.Items {
		st, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.Id})
		if err != nil {
			return fmt.Errorf("pod %s: %w", sb.Id, err)
		}
		ip := "-"
		if n := st.GetStatus().GetNetwork(); n != nil && n.Ip != "" {
			ip = n.Ip
		}
		m := sb.GetMetadata()
		lines = append(lines, fmt.Sprintf("%s/%s %s %s", m.GetNamespace(), m.GetName(), m.GetUid(), ip))
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	return nil
}
