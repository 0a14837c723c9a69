package controlplane

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// process is one running component.
type process struct {
	component Component
	cmd       *exec.Cmd
	logPath   string

	done     chan struct{} // closed once the process has exited and been reaped
	waitErr  error         // the exit status; read only after done is closed
	stopping atomic.Bool   // set by stop, so the exit is not reported as unexpected
	healthy  atomic.Bool   // set once the component answered its health check
}

// startProcess starts bin with args, its stdout and stderr appended to
// logPath. The child gets its own process group, so stop can signal
// everything it spawned, and Pdeathsig=SIGKILL, so it dies with us.
//
// Pdeathsig fires when the thread that forked the child exits, not the
// process. The Go runtime may retire threads, so the child is started and
// waited for by one goroutine locked to its OS thread: the thread lives
// exactly as long as the child. onExit runs after the child was reaped.
func startProcess(component Component, bin string, args []string, logPath string, onExit func(*process)) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", component, err)
	}
	fmt.Fprintf(logFile, "==== %s tether/controlplane: %s %s\n",
		time.Now().UTC().Format(time.RFC3339), bin, strings.Join(args, " "))

	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &process{component: component, cmd: cmd, logPath: logPath, done: make(chan struct{})}

	started := make(chan error, 1)
	go func() {
		// Never unlocked: when this goroutine returns, the runtime ends the
		// thread, which is fine because the child is gone by then.
		runtime.LockOSThread()
		defer logFile.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		close(p.done)
		if onExit != nil {
			onExit(p)
		}
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", component, err)
	}
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

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
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
	pgid := p.pid() // Setpgid makes the child the leader of a group with its pid.
	if !p.exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
			log.Warn("component ignored SIGTERM, killing it",
				slog.String("component", string(p.component)), slog.Duration("grace", grace))
			killed = true
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	}
	// Anything the component spawned that is still in its group.
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err == nil {
		log.Warn("killed leftover processes of component", slog.String("component", string(p.component)))
	}
	return killed
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
