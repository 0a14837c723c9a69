package netns

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// DefaultPrefix starts the name of every namespace a Network makes unless
// Options.Prefix says otherwise.
const DefaultPrefix = "tether-"

// runDir is where ip netns keeps its named namespaces.
const runDir = "/var/run/netns"

// Options configures New.
type Options struct {
	// Prefix starts every namespace name (default DefaultPrefix): lower-case
	// letters, digits and '-', at most 20 characters.
	Prefix string
	// Logger receives what the network makes and removes (default
	// slog.Default()).
	Logger *slog.Logger
}

func (o *Options) validate() error {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if err := checkName(o.Prefix, 20); err != nil {
		return fmt.Errorf("prefix: %w", err)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// checkName accepts names of lower-case letters, digits and '-', up to max.
func checkName(s string, max int) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("%q: want 1 to %d characters", s, max)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%q: only a-z, 0-9 and '-' are allowed", s)
		}
	}
	return nil
}

// Network is the namespaces and links one run made. Its methods are safe
// for concurrent use.
type Network struct {
	prefix string // prefix + pid + "-"
	log    *slog.Logger

	mu sync.Mutex
	// namespaces and links are what this network made, in order; guarded
	// by mu.
	namespaces []*Namespace
	links      []*Link
	// nextSubnet numbers the links' /30 subnets; guarded by mu.
	nextSubnet int
	closed     bool // guarded by mu
}

// New checks that this process may make namespaces and returns an empty
// network. It removes nothing: call Sweep for that.
func New(opts Options) (*Network, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("netns: network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("netns: the ip command (iproute2) is missing: %w", err)
	}
	pid := os.Getpid()
	return &Network{
		prefix:     fmt.Sprintf("%s%d-", opts.Prefix, pid),
		log:        opts.Logger,
		nextSubnet: subnetBase(pid),
	}, nil
}

// Namespace is a network namespace made by a Network. A nil *Namespace
// stands for the host's namespace, the one this process started in.
type Namespace struct {
	// Name is the full name, as `ip netns list` shows it.
	Name string
}

// String returns the namespace's name, "host" for nil.
func (ns *Namespace) String() string {
	if ns == nil {
		return "host"
	}
	return ns.Name
}

// path is the namespace's bind mount.
func (ns *Namespace) path() string { return filepath.Join(runDir, ns.Name) }

// Namespace makes a namespace named <prefix><pid>-<name> with its loopback
// up and IPv6 off. name: lower-case letters, digits and '-', at most 24 characters.
func (n *Network) Namespace(ctx context.Context, name string) (*Namespace, error) {
	if err := checkName(name, 24); err != nil {
		return nil, fmt.Errorf("netns: namespace name: %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, errors.New("netns: network closed")
	}
	ns := &Namespace{Name: n.prefix + name}
	for _, have := range n.namespaces {
		if have.Name == ns.Name {
			return nil, fmt.Errorf("netns: namespace %s exists", ns.Name)
		}
	}
	if err := ip(ctx, nil, "netns", "add", ns.Name); err != nil {
		return nil, err
	}
	n.namespaces = append(n.namespaces, ns)
	if err := ip(ctx, ns, "link", "set", "lo", "up"); err != nil {
		return nil, err
	}
	// Links carry IPv4 only: without IPv6 no router solicitations or
	// neighbour discovery add to their counters.
	for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
		if err := ns.Sysctl(ctx, k, "1"); err != nil {
			return nil, err
		}
	}
	n.log.Debug("namespace made", slog.String("netns", ns.Name))
	return ns, nil
}

// Lookup returns the namespace named name that runs already (another
// process's Network made it), e.g. to dial from it in a second process.
func Lookup(name string) (*Namespace, error) {
	ns := &Namespace{Name: name}
	if err := checkName(name, 64); err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	if _, err := os.Stat(ns.path()); err != nil {
		return nil, fmt.Errorf("netns: namespace %s: %w", name, err)
	}
	return ns, nil
}

// Close stops the links and removes the namespaces the network made. It
// returns every failure, and removes what it can.
func (n *Network) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	var errs []error
	for _, l := range n.links {
		errs = append(errs, l.close())
	}
	for i := len(n.namespaces) - 1; i >= 0; i-- {
		ns := n.namespaces[i]
		if err := ip(context.Background(), nil, "netns", "del", ns.Name); err != nil {
			errs = append(errs, err)
		} else {
			n.log.Debug("namespace removed", slog.String("netns", ns.Name))
		}
	}
	return errors.Join(errs...)
}

// Sweep removes the namespaces named <prefix><pid>-* whose process pid is
// gone: what runs that crashed left behind. It returns the names removed.
// Namespaces of live processes, this one included, are left alone, so runs
// may go on side by side.
func Sweep(ctx context.Context, prefix string) ([]string, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := checkName(prefix, 20); err != nil {
		return nil, fmt.Errorf("netns: prefix: %w", err)
	}
	entries, err := os.ReadDir(runDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		pid, ok := ownerPID(e.Name(), prefix)
		if !ok || alive(pid) {
			continue
		}
		if err := ip(ctx, nil, "netns", "del", e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

// ownerPID parses <prefix><pid>-<name>.
func ownerPID(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	p, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(p)
	if err != nil || pid <= 0 || strconv.Itoa(pid) != p {
		return 0, false
	}
	return pid, true
}

// alive reports whether process pid exists.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// ip runs ip(8), in ns (-n) unless ns is nil, and returns its output in the
// error when it fails.
func ip(ctx context.Context, ns *Namespace, args ...string) error {
	if ns != nil {
		args = append([]string{"-n", ns.Name}, args...)
	}
	return run(ctx, "ip", args...)
}

func run(ctx context.Context, name string, args ...string) error {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// Command returns a command that runs name in ns (ip netns exec), or
// directly for the host's namespace. ip execs the program, so the command's
// process is the program's.
func (ns *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if ns == nil {
		return exec.CommandContext(ctx, name, args...)
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Sysctl sets a sysctl of ns's own (net.*), e.g.
// net.ipv4.ip_local_port_range to "1024 65535" for many dialers.
func (ns *Namespace) Sysctl(ctx context.Context, key, value string) error {
	if ns == nil {
		return errors.New("netns: refusing to change the host's sysctls")
	}
	if !strings.HasPrefix(key, "net.") {
		return fmt.Errorf("netns: sysctl %s: only net.* is per namespace", key)
	}
	return run(ctx, "ip", "netns", "exec", ns.Name, "sysctl", "-q", "-w", key+"="+value)
}

// subnets is 198.18.0.0/15 cut into /30s: 2^15 of them.
var subnets = netip.MustParsePrefix("198.18.0.0/15")

const subnetCount = 1 << 15

// subnetBase spreads the links of concurrent runs over the range, so that
// their host-side addresses do not collide.
func subnetBase(pid int) int {
	h := fnv.New32a()
	fmt.Fprint(h, pid)
	return int(h.Sum32() % subnetCount)
}

// subnet returns the two addresses of the i-th /30 (mod the range).
func subnet(i int) (a, b netip.Addr) {
	base := subnets.Addr().As4()
	off := uint32(i%subnetCount) * 4
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	v += off
	a = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v + 1)})
	b = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v + 2)})
	return a, b
}
