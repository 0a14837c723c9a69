package simulator

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Directive is one command of a scenario script, in the format of
// github.com/cockroachdb/datadriven (which the tests run the scripts with):
//
//	# a comment
//	pods create n=100 rate=50/s nodes=(0-9, 12)
//	----
//	created 100 pods
//
// The line after "----" up to a blank line is the expected output.
type Directive struct {
	Cmd  string
	Args []Arg
	// Input is the text between the command line and "----" (unused by
	// the simulator's commands so far).
	Input string
	// Expected is the expected output; HasExpected is false when the
	// directive had no "----".
	Expected    string
	HasExpected bool
	// Line is the command's line number in its file, from 1.
	Line int
}

// Arg is an argument: key, key=value or key=(v1, v2, ...).
type Arg struct {
	Key  string
	Vals []string
}

func (d Directive) String() string {
	var b strings.Builder
	b.WriteString(d.Cmd)
	for _, a := range d.Args {
		b.WriteString(" " + a.Key)
		switch len(a.Vals) {
		case 0:
		case 1:
			b.WriteString("=" + a.Vals[0])
		default:
			b.WriteString("=(" + strings.Join(a.Vals, ", ") + ")")
		}
	}
	return b.String()
}

// ParseScript reads a scenario script.
func ParseScript(r io.Reader) ([]Directive, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var (
		out  []Directive
		line int
	)
	next := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		line++
		return sc.Text(), true
	}
	for {
		l, ok := next()
		if !ok {
			break
		}
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		d := Directive{Line: line}
		var err error
		if d.Cmd, d.Args, err = ParseLine(t); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		var input []string
		for {
			l, ok := next()
			if !ok || l == "----" {
				d.HasExpected = ok
				break
			}
			if strings.TrimSpace(l) == "" && len(input) == 0 {
				break // a directive without "----"
			}
			input = append(input, l)
		}
		d.Input = strings.Join(input, "\n")
		if d.HasExpected {
			var exp []string
			l, ok := next()
			if ok && l == "----" { // the two-separator form: blank lines allowed
				for {
					l, ok := next()
					if !ok {
						return nil, fmt.Errorf("line %d: expected output not closed by ----/----", d.Line)
					}
					if l == "----" {
						if l2, ok2 := next(); ok2 && l2 == "----" {
							break
						} else {
							exp = append(exp, l, l2)
							continue
						}
					}
					exp = append(exp, l)
				}
			} else {
				for ok && strings.TrimSpace(l) != "" {
					exp = append(exp, l)
					l, ok = next()
				}
			}
			d.Expected = strings.Join(exp, "\n")
		}
		out = append(out, d)
	}
	return out, sc.Err()
}

// ParseLine parses a command line: a command and arguments of the forms
// key, key=value and key=(v1, v2, ...).
func ParseLine(l string) (string, []Arg, error) {
	l = strings.TrimSpace(l)
	cmd, rest, _ := strings.Cut(l, " ")
	if cmd == "" {
		return "", nil, fmt.Errorf("no command in %q", l)
	}
	var args []Arg
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimSpace(rest) {
		i := strings.IndexAny(rest, " =")
		if i < 0 {
			args = append(args, Arg{Key: rest})
			break
		}
		a := Arg{Key: rest[:i]}
		if a.Key == "" {
			return "", nil, fmt.Errorf("empty argument name in %q", l)
		}
		rest = rest[i:]
		if rest[0] == ' ' {
			args = append(args, a)
			continue
		}
		rest = rest[1:] // '='
		switch {
		case rest == "" || rest[0] == ' ':
			a.Vals = []string{""}
		case rest[0] == '(':
			end := strings.IndexByte(rest, ')')
			if end < 0 {
				return "", nil, fmt.Errorf("unclosed ( in %q", l)
			}
			for _, v := range strings.Split(rest[1:end], ",") {
				a.Vals = append(a.Vals, strings.TrimSpace(v))
			}
			rest = rest[end+1:]
		default:
			v, r, _ := strings.Cut(rest, " ")
			a.Vals, rest = []string{v}, r
		}
		args = append(args, a)
	}
	return cmd, args, nil
}

// Command runs a scenario command that is not built in; see
// Config.Commands.
type Command func(ctx context.Context, s *Sim, args []Arg) (string, error)

// Exec runs one directive and returns its output. An error is a command
// that could not be carried out (bad arguments, an API error); a failed
// expectation is output ("FAIL ..."), so that a script shows every result.
func (s *Sim) Exec(ctx context.Context, d Directive) (string, error) {
	a := newArgs(d.Args)
	var out string
	var err error
	switch d.Cmd {
	case "nodes":
		out, err = s.cmdNodes(a)
	case "enroll":
		var sel []int
		if sel, err = a.nodes(s, "nodes", nil); err == nil {
			var e Enrollment
			e, err = s.Enroll(ctx, sel)
			out = fmt.Sprintf("enrolled %d", e.Nodes)
		}
	case "connect":
		out, err = s.cmdConnect(ctx, a)
	case "wait-connected":
		out, err = s.cmdWaitConnected(ctx, a)
	case "pods":
		out, err = s.cmdPods(ctx, a)
	case "cut":
		var sel []int
		if sel, err = a.nodes(s, "nodes", nil); err == nil {
			out = fmt.Sprintf("cut %d", s.Cut(sel))
		}
	case "heal":
		var sel []int
		if sel, err = a.nodes(s, "nodes", nil); err == nil {
			out = fmt.Sprintf("healed %d", s.Heal(sel))
		}
	case "reboot-offline":
		var sel []int
		if sel, err = a.nodes(s, "nodes", []int{}); err == nil {
			if err = s.RebootOffline(ctx, sel); err == nil {
				out = fmt.Sprintf("rebooted %d offline", len(sel))
			}
		}
	case "restart-hub":
		out, err = s.cmdRestartHub(ctx, a)
	case "wait-resynced":
		out, err = s.cmdWaitResynced(ctx, a)
	case "wait-ready":
		var d time.Duration
		if d, err = a.duration("timeout", 5*time.Minute); err != nil {
			break
		}
		rctx, cancel := context.WithTimeout(ctx, d)
		var r Storm
		r, err = s.WaitReady(rctx)
		cancel()
		if err == nil {
			s.note("every Node (%d) Ready with its Lease renewed, %s after the hub's return or the wait's start", r.APINodes, roundDur(r.APIReady))
			out = "every Node Ready"
		}
	case "idle":
		out, err = s.cmdIdle(ctx, a)
	case "kill-replica":
		out, err = s.cmdKillReplica(ctx, a)
	case "wait-balanced":
		var d, hold time.Duration
		if d, err = a.duration("timeout", 5*time.Minute); err != nil {
			break
		}
		if hold, err = a.duration("quiet", 10*time.Second); err == nil {
			bctx, cancel := context.WithTimeout(ctx, d)
			var b Balance
			b, err = s.WaitBalanced(bctx, hold)
			cancel()
			if err == nil {
				s.note("rebalance: %s", b)
				s.balances = append(s.balances, b)
				out = "replicas balanced"
			}
		}
	case "start-replica":
		var i int
		if i, err = a.integer("i", -1); err == nil {
			if err = s.StartReplica(ctx, i); err == nil {
				out = fmt.Sprintf("replica %d started", i)
			}
		}
	case "sleep":
		var dur time.Duration
		if dur, err = a.duration("for", 0); err == nil {
			err = sleepUntil(ctx, time.Now().Add(dur))
			out = "slept " + dur.String()
		}
	case "mark-storm":
		if _, joined := s.cloud.(*joinedCloud); !joined {
			err = errors.New("mark-storm: only in a Sim that joined another's hub (--join-hub); restart-hub marks its own")
			break
		}
		s.MarkStorm()
		out = "storm marked"
	case "signal":
		// Tell another tether-sim sharing the hub (it waits with await).
		var f string
		if f, _, err = a.single("file"); err == nil {
			if f == "" {
				err = errors.New("signal: file= is required")
				break
			}
			err = os.WriteFile(f, nil, 0o600)
			out = "signalled"
		}
	case "await":
		var f string
		var d time.Duration
		if f, _, err = a.single("file"); err != nil {
			break
		}
		if d, err = a.duration("timeout", 30*time.Minute); err == nil {
			actx, cancel := context.WithTimeout(ctx, d)
			err = poll(actx, 20*time.Millisecond, func() bool { _, err := os.Stat(f); return err == nil })
			cancel()
			out = "awaited"
		}
	case "reset-latencies":
		s.ResetLatencies()
		out = "latencies reset"
	case "expect":
		out, err = s.cmdExpect(ctx, a)
	case "report":
		out = strings.TrimRight(s.Summary(), "\n")
	default:
		if c, ok := s.cfg.Commands[d.Cmd]; ok {
			// An extension command checks its own arguments.
			out, err = c(ctx, s, d.Args)
			if err != nil {
				return out, fmt.Errorf("line %d: %s: %w", d.Line, d.Cmd, err)
			}
			return out, nil
		}
		return "", fmt.Errorf("line %d: unknown command %q", d.Line, d.Cmd)
	}
	if err == nil {
		err = a.unused()
	}
	if err != nil {
		return out, fmt.Errorf("line %d: %s: %w", d.Line, d.Cmd, err)
	}
	return out, nil
}

func (s *Sim) cmdNodes(a *args) (string, error) {
	n, err := a.integer("n", -1)
	if err != nil {
		return "", err
	}
	if n < 1 {
		return "", fmt.Errorf("n: want a count of nodes to add, >= 1")
	}
	s.AddNodes(n)
	return fmt.Sprintf("nodes +%d (%d)", n, s.Nodes()), nil
}

func (s *Sim) cmdConnect(ctx context.Context, a *args) (string, error) {
	sel, err := a.nodes(s, "nodes", nil)
	if err != nil {
		return "", err
	}
	rate, err := a.rate("rate", 0)
	if err != nil {
		return "", err
	}
	n, err := s.Connect(ctx, sel, rate)
	return fmt.Sprintf("started %d", n), err
}

func (s *Sim) cmdWaitConnected(ctx context.Context, a *args) (string, error) {
	timeout, err := a.duration("timeout", 2*time.Minute)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := s.WaitConnected(ctx)
	s.note("connect: %d nodes: all connected in %s; memory %s", r.Nodes, roundDur(r.ConnectTime), r.Memory)
	out := fmt.Sprintf("connected %d/%d, registered %d/%d", r.Connected, r.Nodes, r.Registered, r.Nodes)
	if err != nil {
		return "FAIL " + out + " after " + timeout.String(), nil
	}
	return out, nil
}

func (s *Sim) cmdPods(ctx context.Context, a *args) (string, error) {
	sel, err := a.nodes(s, "nodes", nil)
	if err != nil {
		return "", err
	}
	rate, err := a.rate("rate", 0)
	if err != nil {
		return "", err
	}
	switch {
	case a.flag("create"):
		n, err := a.integer("n", -1)
		if err != nil {
			return "", err
		}
		if n < 1 {
			return "", fmt.Errorf("n: want a count of pods, >= 1")
		}
		t0 := time.Now()
		got, err := s.CreatePods(ctx, n, rate, sel)
		s.note("created %d pods in %s", got, roundDur(time.Since(t0)))
		return fmt.Sprintf("created %d pods", got), err
	case a.flag("delete"):
		n := -1
		if !a.flag("all") {
			if n, err = a.integer("n", -1); err != nil {
				return "", err
			}
			if n < 0 {
				return "", fmt.Errorf("want n=<count> or all")
			}
		}
		got, err := s.DeletePods(ctx, n, rate, sel)
		return fmt.Sprintf("deleted %d pods", got), err
	}
	return "", fmt.Errorf("want pods create or pods delete")
}

func (s *Sim) cmdRestartHub(ctx context.Context, a *args) (string, error) {
	down, err := a.duration("down", 0)
	if err != nil {
		return "", err
	}
	if err := s.RestartHub(ctx, down); err != nil {
		return "", err
	}
	return "hub restarted", nil
}

func (s *Sim) cmdWaitResynced(ctx context.Context, a *args) (string, error) {
	timeout, err := a.duration("timeout", 2*time.Minute)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := s.WaitResynced(ctx)
	if r.Nodes == 0 && err != nil && s.storm == nil {
		return "", err
	}
	s.note("storm: %s", r)
	out := fmt.Sprintf("resynced %d/%d", r.Resynced, r.Nodes)
	if err != nil {
		return "FAIL " + out + " after " + timeout.String(), nil
	}
	return out, nil
}

func (s *Sim) cmdKillReplica(ctx context.Context, a *args) (string, error) {
	i, err := a.integer("i", -1)
	if err != nil {
		return "", err
	}
	name, _, err := a.single("signal")
	if err != nil {
		return "", err
	}
	var sig syscall.Signal
	switch name {
	case "term", "":
		sig = syscall.SIGTERM
	case "kill":
		sig = syscall.SIGKILL
	default:
		return "", fmt.Errorf("signal=%s: want term or kill", name)
	}
	timeout, err := a.duration("timeout", 2*time.Minute)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := s.KillReplica(ctx, i, sig)
	if r.Nodes == 0 && err != nil {
		return "", err
	}
	s.note("failover: %s", r)
	if err != nil {
		return fmt.Sprintf("FAIL replica %d stopped (%s): %d/%d of its nodes back: %v", i, r.Signal, r.Back, r.Nodes, err), nil
	}
	return fmt.Sprintf("replica %d stopped (%s): every node it held is back", i, r.Signal), nil
}

func (s *Sim) cmdIdle(ctx context.Context, a *args) (string, error) {
	d, err := a.duration("for", 30*time.Second)
	if err != nil {
		return "", err
	}
	b, err := s.Idle(ctx, d)
	if err != nil {
		return "", err
	}
	s.note("idle: %s", b)
	return "idle " + d.String(), nil
}

// args are a directive's arguments; each accessor marks what it read, so
// that unused reports arguments no command knows.
type args struct {
	list []Arg
	used []bool
}

func newArgs(list []Arg) *args { return &args{list: list, used: make([]bool, len(list))} }

func (a *args) find(key string) (*Arg, bool) {
	for i := range a.list {
		if a.list[i].Key == key {
			a.used[i] = true
			return &a.list[i], true
		}
	}
	return nil, false
}

func (a *args) unused() error {
	var bad []string
	for i, x := range a.list {
		if !a.used[i] {
			bad = append(bad, x.Key)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("unknown argument(s) %s", strings.Join(bad, ", "))
	}
	return nil
}

func (a *args) flag(key string) bool {
	_, ok := a.find(key)
	return ok
}

func (a *args) single(key string) (string, bool, error) {
	x, ok := a.find(key)
	if !ok {
		return "", false, nil
	}
	if len(x.Vals) != 1 {
		return "", true, fmt.Errorf("%s: want one value", key)
	}
	return x.Vals[0], true, nil
}

func (a *args) integer(key string, def int) (int, error) {
	v, ok, err := a.single(key)
	if !ok || err != nil {
		return def, err
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return def, fmt.Errorf("%s: %q is not an integer", key, v)
	}
	return n, nil
}

func (a *args) duration(key string, def time.Duration) (time.Duration, error) {
	v, ok, err := a.single(key)
	if !ok || err != nil {
		return def, err
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return def, fmt.Errorf("%s: %q is not a duration like 30s", key, v)
	}
	return d, nil
}

// rate reads "100/s" or "100" (per second).
func (a *args) rate(key string, def float64) (float64, error) {
	v, ok, err := a.single(key)
	if !ok || err != nil {
		return def, err
	}
	f, err := strconv.ParseFloat(strings.TrimSuffix(v, "/s"), 64)
	if err != nil || f <= 0 {
		return def, fmt.Errorf("%s: %q is not a rate like 100/s", key, v)
	}
	return f, nil
}

// nodes reads a node selection: all, an index, a range lo-hi (inclusive),
// or a list of those in parentheses. def is returned when key is absent
// (nil means every node to the commands).
func (a *args) nodes(s *Sim, key string, def []int) ([]int, error) {
	x, ok := a.find(key)
	if !ok {
		if def != nil {
			return nil, fmt.Errorf("%s: required", key)
		}
		return nil, nil
	}
	n := s.Nodes()
	var sel []int
	seen := map[int]bool{}
	for _, v := range x.Vals {
		if v == "all" {
			return allNodes(n), nil
		}
		lo, hi, isRange := strings.Cut(v, "-")
		if !isRange {
			hi = lo
		}
		l, err1 := strconv.Atoi(lo)
		h, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || l < 0 || h < l {
			return nil, fmt.Errorf("%s: %q is not an index or a range lo-hi", key, v)
		}
		if h >= n {
			return nil, fmt.Errorf("%s: %q: there are %d nodes (0-%d)", key, v, n, n-1)
		}
		for i := l; i <= h; i++ {
			if !seen[i] {
				seen[i] = true
				sel = append(sel, i)
			}
		}
	}
	if len(sel) == 0 {
		return nil, fmt.Errorf("%s: empty selection", key)
	}
	return sel, nil
}
