// Package ctl is `edgecore ctl`: kubectl's logs and exec for the pods of
// this node, run on the edge box itself, cloud or no cloud. It talks to
// edgecore's kubelet API on its unix socket (dataDir/kubelet.sock, mode
// 0600: root, or whoever runs edgecore, may use it; nobody else).
//
//	edgecore ctl [--socket PATH] pods
//	edgecore ctl [--socket PATH] logs [-n NS] [-c CONTAINER] [-f] [--tail N] [--previous] [--timestamps] POD
//	edgecore ctl [--socket PATH] exec [-n NS] [-c CONTAINER] [-i] [-t] POD -- COMMAND [ARG...]
package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/util/exec"
)

// DefaultSocket is edgecore's kubelet API socket with the default dataDir.
const DefaultSocket = "/var/lib/tether/edgecore/kubelet.sock"

// IO are the command's streams.
type IO struct {
	In       io.Reader
	Out, Err io.Writer
}

// ExitError is a command run by exec that exited non-zero.
type ExitError struct{ Code int }

func (e *ExitError) Error() string {
	return fmt.Sprintf("command terminated with exit code %d", e.Code)
}

// Main runs `edgecore ctl` with args (after "ctl").
func Main(ctx context.Context, args []string, stdio IO) error {
	fs := flag.NewFlagSet("edgecore ctl", flag.ContinueOnError)
	fs.SetOutput(stdio.Err)
	socket := fs.String("socket", DefaultSocket, "edgecore's kubelet API socket (dataDir/kubelet.sock)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("usage: edgecore ctl [--socket PATH] pods|logs|exec ...")
	}
	c := &client{socket: *socket}
	c.http = &http.Client{Transport: c.transport()}
	rest := fs.Args()[1:]
	switch fs.Arg(0) {
	case "pods":
		return c.pods(ctx, stdio)
	case "logs":
		return c.logs(ctx, rest, stdio)
	case "exec":
		return c.exec(ctx, rest, stdio)
	}
	return fmt.Errorf("unknown command %q: want pods, logs or exec", fs.Arg(0))
}

type client struct {
	socket string
	http   *http.Client
}

func (c *client) transport() *http.Transport {
	return &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", c.socket)
	}}
}

func (c *client) get(ctx context.Context, path string, q url.Values) (*http.Response, error) {
	u := url.URL{Scheme: "http", Host: "edgecore", Path: path, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, "GET", u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("edgecore's kubelet API at %s: %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return resp, nil
}

func (c *client) list(ctx context.Context) ([]corev1.Pod, error) {
	resp, err := c.get(ctx, "/pods", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var l corev1.PodList
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return nil, fmt.Errorf("pods: %w", err)
	}
	return l.Items, nil
}

func (c *client) pods(ctx context.Context, stdio IO) error {
	pods, err := c.list(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdio.Out, "%-20s %-40s %s\n", "NAMESPACE", "NAME", "CONTAINERS")
	for _, p := range pods {
		var names []string
		for _, ct := range p.Spec.Containers {
			names = append(names, ct.Name)
		}
		fmt.Fprintf(stdio.Out, "%-20s %-40s %s\n", p.Namespace, p.Name, strings.Join(names, ","))
	}
	return nil
}

// container returns the container to use: the one named, or the pod's
// first.
func (c *client) container(ctx context.Context, ns, pod, named string) (string, error) {
	if named != "" {
		return named, nil
	}
	pods, err := c.list(ctx)
	if err != nil {
		return "", err
	}
	for _, p := range pods {
		if p.Namespace == ns && p.Name == pod && len(p.Spec.Containers) > 0 {
			return p.Spec.Containers[0].Name, nil
		}
	}
	return "", fmt.Errorf("pod %s/%s is not on this node", ns, pod)
}

func (c *client) logs(ctx context.Context, args []string, stdio IO) error {
	fs := flag.NewFlagSet("edgecore ctl logs", flag.ContinueOnError)
	fs.SetOutput(stdio.Err)
	ns := fs.String("n", "default", "namespace")
	name := fs.String("c", "", "container (default: the pod's first)")
	follow := fs.Bool("f", false, "follow")
	tail := fs.Int("tail", -1, "lines from the end (-1: all)")
	previous := fs.Bool("previous", false, "the previous (terminated) container's log")
	timestamps := fs.Bool("timestamps", false, "prefix each line with its time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: edgecore ctl logs [-n NS] [-c CONTAINER] [-f] [--tail N] [--previous] [--timestamps] POD")
	}
	pod := fs.Arg(0)
	ct, err := c.container(ctx, *ns, pod, *name)
	if err != nil {
		return err
	}
	q := url.Values{}
	if *follow {
		q.Set("follow", "true")
	}
	if *tail >= 0 {
		q.Set("tailLines", strconv.Itoa(*tail))
	}
	if *previous {
		q.Set("previous", "true")
	}
	if *timestamps {
		q.Set("timestamps", "true")
	}
	resp, err := c.get(ctx, "/containerLogs/"+*ns+"/"+pod+"/"+ct, q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(stdio.Out, resp.Body)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (c *client) exec(ctx context.Context, args []string, stdio IO) error {
	fs := flag.NewFlagSet("edgecore ctl exec", flag.ContinueOnError)
	fs.SetOutput(stdio.Err)
	ns := fs.String("n", "default", "namespace")
	name := fs.String("c", "", "container (default: the pod's first)")
	stdin := fs.Bool("i", false, "pass stdin to the command")
	tty := fs.Bool("t", false, "allocate a terminal")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 2 {
		return errors.New("usage: edgecore ctl exec [-n NS] [-c CONTAINER] [-i] [-t] POD -- COMMAND [ARG...]")
	}
	pod, cmd := fs.Arg(0), fs.Args()[1:]
	if cmd[0] == "--" {
		cmd = cmd[1:]
	}
	if len(cmd) == 0 {
		return errors.New("exec: no command given")
	}
	ct, err := c.container(ctx, *ns, pod, *name)
	if err != nil {
		return err
	}
	q := url.Values{"command": cmd, "output": {"1"}}
	if !*tty {
		q.Set("error", "1")
	}
	if *stdin {
		q.Set("input", "1")
	}
	if *tty {
		q.Set("tty", "1")
	}
	u := &url.URL{Scheme: "http", Host: "edgecore", Path: "/exec/" + *ns + "/" + pod + "/" + ct, RawQuery: q.Encode()}
	upgrader, err := spdy.NewRoundTripperWithConfig(spdy.RoundTripperConfig{UpgradeTransport: c.transport(),
		PingPeriod: 0})
	if err != nil {
		return err
	}
	ex, err := remotecommand.NewSPDYExecutorForTransports(upgrader, upgrader, "POST", u)
	if err != nil {
		return err
	}
	opts := remotecommand.StreamOptions{Stdout: stdio.Out, Tty: *tty}
	if *stdin {
		opts.Stdin = stdio.In
	}
	if !*tty {
		opts.Stderr = stdio.Err
	}
	if *tty && *stdin {
		if restore, ok := rawTerminal(stdio.In); ok {
			defer restore()
		}
	}
	err = ex.StreamWithContext(ctx, opts)
	var ee exec.CodeExitError
	if errors.As(err, &ee) {
		return &ExitError{Code: ee.Code}
	}
	return err
}

// rawTerminal puts in, if it is a terminal, in raw mode.
func rawTerminal(in io.Reader) (restore func(), ok bool) {
	f, isFile := in.(*os.File)
	if !isFile {
		return nil, false
	}
	return makeRaw(int(f.Fd()))
}
