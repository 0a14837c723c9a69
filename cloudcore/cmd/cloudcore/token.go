package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/tether-edge/tether/cloudcore"
	"github.com/tether-edge/tether/cloudcore/certs"
	"github.com/tether-edge/tether/cloudcore/jointoken"
	"github.com/tether-edge/tether/pki"
)

const tokenUsage = `usage:
  cloudcore token create [--kubeconfig PATH] (--cloud HOST:PORT | --config cloudcore.yaml) [--ttl 24h] [--uses N] [--node NAME] [--description TEXT] [--ca-namespace NS] [--ca-secret NAME]
  cloudcore token list   [--kubeconfig PATH]
  cloudcore token delete [--kubeconfig PATH] ID

Join tokens are Secrets kube-system/bootstrap-token-<id>; deleting one revokes
it. The kubeconfig is the operator's (default $KUBECONFIG, then ~/.kube/config),
with rights on Secrets in kube-system and, for create, in the CA's namespace.`

// runToken runs `cloudcore token <command> ...`: args are what follows
// "token". The join command goes to stdout, everything else to stderr.
func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, tokenUsage)
		return errors.New("token: want a command: create, list or delete")
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("cloudcore token "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, tokenUsage)
		fmt.Fprintln(stderr, "\nflags of "+cmd+":")
		fs.PrintDefaults()
	}
	kubeconfig := fs.String("kubeconfig", "", "the operator's kubeconfig (default $KUBECONFIG, then ~/.kube/config)")
	switch cmd {
	case "create":
		var (
			cloud       = fs.String("cloud", "", "HOST:PORT at which edges reach the hub (required unless --config)")
			configFile  = fs.String("config", "", "cloudcore.yaml to take the hub's address from: the first of certDNSNames, certIPs and the port of listenAddr")
			opts        jointoken.Options
			caNamespace = fs.String("ca-namespace", certs.DefaultNamespace, "namespace of the CA Secret")
			caSecret    = fs.String("ca-secret", certs.DefaultCASecret, "name of the CA Secret")
		)
		fs.DurationVar(&opts.TTL, "ttl", jointoken.DefaultTTL, "how long the token is valid")
		fs.IntVar(&opts.Uses, "uses", 0, "how many nodes may join with it (0: any number)")
		fs.StringVar(&opts.Node, "node", "", "the only node name it joins (default: any)")
		fs.StringVar(&opts.Description, "description", "", "a note shown by list and kubectl")
		if err := parseFlags(fs, args, 0); err != nil {
			return err
		}
		if opts.TTL <= 0 {
			return fmt.Errorf("--ttl %s: must be positive", opts.TTL)
		}
		addr, err := cloudAddr(*cloud, *configFile)
		if err != nil {
			return err
		}
		client, err := kubeClient(*kubeconfig)
		if err != nil {
			return err
		}
		log := slog.New(slog.NewTextHandler(stderr, nil))
		return createToken(ctx, client, addr, *caNamespace, *caSecret, opts, time.Now(), stdout, stderr, log)
	case "list":
		if err := parseFlags(fs, args, 0); err != nil {
			return err
		}
		client, err := kubeClient(*kubeconfig)
		if err != nil {
			return err
		}
		return listTokens(ctx, client, time.Now(), stdout)
	case "delete":
		if err := parseFlags(fs, args, 1); err != nil {
			return err
		}
		client, err := kubeClient(*kubeconfig)
		if err != nil {
			return err
		}
		id := fs.Arg(0)
		if err := jointoken.Delete(ctx, client, id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "join token %s deleted\n", id)
		return nil
	default:
		fmt.Fprintln(stderr, tokenUsage)
		return fmt.Errorf("token: unknown command %q: want create, list or delete", cmd)
	}
}

// parseFlags parses args allowing flags after the positional arguments
// (`delete ID --kubeconfig k`), and wants exactly positional of them.
func parseFlags(fs *flag.FlagSet, args []string, positional int) error {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != positional {
		fs.Usage()
		return fmt.Errorf("%s: want %d argument(s), got %d", fs.Name(), positional, len(pos))
	}
	// Leave the positional arguments where fs.Arg finds them.
	return fs.Parse(append([]string{"--"}, pos...))
}

// createToken loads or creates the CA, creates the token and prints the
// command to run on the node.
func createToken(ctx context.Context, client kubernetes.Interface, cloud, caNamespace, caSecret string,
	opts jointoken.Options, now time.Time, stdout, stderr io.Writer, log *slog.Logger) error {
	ca, err := certs.LoadOrCreateCA(ctx, client, caNamespace, caSecret, log)
	if err != nil {
		return err
	}
	t, err := jointoken.Create(ctx, client, opts, now)
	if err != nil {
		return err
	}
	line := fmt.Sprintf("edgecore join --cloud %s --token %s", cloud, jointoken.JoinString(t, pki.Hash(ca.Cert)))
	if t.Node != "" {
		line += " --node-name " + t.Node
	}
	fmt.Fprintln(stdout, line)
	fmt.Fprintf(stderr, "join token %s expires at %s (in %s), %s%s; `cloudcore token delete %s` revokes it\n",
		t.ID, t.Expires.Format(time.RFC3339), opts.TTL, usesText(t.Uses), nodeText(t.Node), t.ID)
	return nil
}

func usesText(n int) string {
	switch n {
	case jointoken.Unlimited:
		return "any number of uses"
	case 1:
		return "1 use"
	}
	return strconv.Itoa(n) + " uses"
}

func nodeText(node string) string {
	if node == "" {
		return ""
	}
	return ", for node " + node + " only"
}

func listTokens(ctx context.Context, client kubernetes.Interface, now time.Time, stdout io.Writer) error {
	tokens, err := jointoken.List(ctx, client)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tEXPIRES\tUSES LEFT\tNODE\tDESCRIPTION")
	for _, t := range tokens {
		exp := "never"
		if !t.Expires.IsZero() {
			exp = t.Expires.UTC().Format(time.RFC3339)
			if !now.Before(t.Expires) {
				exp += " (expired)"
			}
		}
		uses := "any"
		if t.Uses != jointoken.Unlimited {
			uses = strconv.Itoa(t.Uses)
		}
		node := t.Node
		if node == "" {
			node = "<any>"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", t.ID, exp, uses, node, strings.ReplaceAll(t.Description, "\n", " "))
	}
	return w.Flush()
}

// cloudAddr returns the HOST:PORT edges reach the hub at: cloud if set,
// else from cloudcore's configuration file.
func cloudAddr(cloud, configFile string) (string, error) {
	if cloud == "" && configFile == "" {
		return "", errors.New("--cloud HOST:PORT is required (the address at which edges reach the hub), " +
			"or --config cloudcore.yaml to take it from certDNSNames or certIPs and listenAddr")
	}
	if cloud == "" {
		b, err := os.ReadFile(configFile)
		if err != nil {
			return "", err
		}
		var cfg cloudcore.Config
		if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
			return "", fmt.Errorf("config %s: %w", configFile, err)
		}
		host := ""
		switch {
		case len(cfg.CertDNSNames) > 0:
			host = cfg.CertDNSNames[0]
		case len(cfg.CertIPs) > 0:
			host = cfg.CertIPs[0]
		default:
			return "", fmt.Errorf("config %s lists no certDNSNames or certIPs to take the hub's address from: pass --cloud HOST:PORT", configFile)
		}
		port := "10000" // cloudcore's default listenAddr, 0.0.0.0:10000
		if cfg.ListenAddr != "" {
			_, p, err := net.SplitHostPort(cfg.ListenAddr)
			if err != nil {
				return "", fmt.Errorf("config %s: listenAddr %q: %w", configFile, cfg.ListenAddr, err)
			}
			port = p
		}
		cloud = net.JoinHostPort(host, port)
	}
	host, port, err := net.SplitHostPort(cloud)
	if err != nil {
		return "", fmt.Errorf("--cloud %q: want HOST:PORT: %w", cloud, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || host == "" {
		return "", fmt.Errorf("--cloud %q: want HOST:PORT with a host and a port 1-65535", cloud)
	}
	return cloud, nil
}

// kubeClient builds a client from the operator's kubeconfig: path, or else
// $KUBECONFIG or ~/.kube/config, as kubectl finds it.
func kubeClient(path string) (kubernetes.Interface, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w (pass --kubeconfig, the operator's)", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return client, nil
}
