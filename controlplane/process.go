package controlplane

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tether-edge/tether/childproc"
)

// process is one running component, a child process that dies with us
// (package childproc: its own process group, Pdeathsig, its log file).
type process struct {
	component Component
	proc      *childproc.Process
	logPath   string

	done     chan struct{} // closed once the process has exited and been reaped
	waitErr  error         // the exit status; read only after done is closed
	stopping atomic.Bool   // set by stop, so the exit is not reported as unexpected
	healthy  atomic.Bool   // set once the component answered its health check
}

// startProcess starts bin with args, its stdout and stderr appended to
// logPath, with childproc (its own process group, so stop can signal
// everything it spawned, and Pdeathsig=SIGKILL from a thread that lives as
// long as the child, so it dies with us). onExit runs after the child was
// reaped.
func startProcess(component Component, bin string, args []string, logPath string, onExit func(*process)) (*process, error) {
	return startProcessEnv(component, bin, args, nil, logPath, onExit)
}

// startProcessEnv is startProcess with env added to the child's
// environment.
func startProcessEnv(component Component, bin string, args, env []string, logPath string, onExit func(*process)) (*process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(childEnv(), env...)
	proc, err := childproc.Start(cmd, childproc.Options{Log: logPath,
		Header: fmt.Sprintf("==== %s tether/controlplane: %s %s", time.Now().UTC().Format(time.RFC3339), bin, strings.Join(args, " "))})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", component, err)
	}
	p := &process{component: component, proc: proc, logPath: logPath, done: make(chan struct{})}
	go func() {
		<-proc.Done()
		p.waitErr = proc.Err()
		close(p.done)
		if onExit != nil {
			onExit(p)
		}
	}()
	return p, nil
}

// childEnv is our environment without variables that would change how the
// components behave behind our flags' back.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ETCD_") || strings.HasPrefix(kv, "KUBECONFIG=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (p *process) pid() int { return p.proc.Pid() }

// exited reports whether the process has exited (and waitErr is set).
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes an exit, with the end of the component's log.
func (p *process) exitError() error {
	return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", p.component, p.waitErr, p.logPath, tail(p.logPath, 20))
}

// stop sends SIGTERM to the process group, waits up to grace, then sends
// SIGKILL. It returns once the process has been reaped and no other member
// of its group is left. It reports whether SIGKILL was needed.
func (p *process) stop(grace time.Duration, log *slog.Logger) (killed bool) {
	p.stopping.Store(true)
	r := p.proc.Stop(grace)
	<-p.done
	if r.Killed {
		log.Warn("component ignored SIGTERM, killed it",
			slog.String("component", string(p.component)), slog.Duration("grace", grace))
	}
	if r.Leftovers {
		log.Warn("killed leftover processes of component", slog.String("component", string(p.component)))
	}
	return r.Killed
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	defer f.Close()
	const maxRead = 16 << 10
	if st, err := f.Stat(); err == nil && st.Size() > maxRead {
		if _, err := f.Seek(-maxRead, io.SeekEnd); err != nil {
			return fmt.Sprintf("(cannot read log: %v)", err)
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// errPortInUse marks a start that failed because another process took one
// of the ports we picked; Start then retries with new ports.
var errPortInUse = errors.New("port already in use")

func (p *process) portInUse() bool {
	return strings.Contains(tail(p.logPath, 40), "address already in use")
}
