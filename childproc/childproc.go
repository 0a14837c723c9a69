// Package childproc runs a program as a child process that does not
// outlive this one: the control plane's components, cloudcore and edgecore
// binaries in the benchmarks and the simulator, joined simulator
// processes.
//
// Start takes an *exec.Cmd as the caller made it (exec.Command, or
// netns.Namespace.Command for a program in a network namespace) and adds:
//
//   - a process group of the child's own (Setpgid), so that Stop signals
//     whatever the child started too;
//   - Pdeathsig SIGKILL, so that the kernel kills the child when this
//     process dies without stopping it (a crash, SIGKILL);
//   - the child's stdout and stderr appended to a log file, unless the
//     caller set them;
//   - Stop: SIGTERM to the group, SIGKILL after a grace period, then
//     SIGKILL to what is left of the group.
//
// Pdeathsig fires when the thread that forked the child exits, not the
// process, and the Go runtime may end threads (a goroutine that exits
// while locked to its thread takes the thread with it). So Start forks and
// waits for the child on a goroutine of its own, locked to its OS thread:
// that thread lives exactly as long as the child.
package childproc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// Options are Start's options.
type Options struct {
	// Log, if set, is the file the child's stdout and stderr are appended
	// to, where the command leaves them nil; Header, if set, is written to
	// it first.
	Log    string
	Header string
}

// Process is a child started by Start.
type Process struct {
	cmd      *exec.Cmd
	log      string
	done     chan struct{} // closed once the child exited and was reaped
	err      error         // cmd.Wait's error; read only after done is closed
	stopping atomic.Bool   // Stop was called
}

// Start starts cmd (see the package doc). cmd must not have been started;
// its SysProcAttr, if set, keeps its other fields.
func Start(cmd *exec.Cmd, opts Options) (*Process, error) {
	var logFile *os.File
	if opts.Log != "" {
		f, err := os.OpenFile(opts.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("childproc: open log: %w", err)
		}
		logFile = f
		if opts.Header != "" {
			fmt.Fprintln(f, opts.Header)
		}
		if cmd.Stdout == nil {
			cmd.Stdout = f
		}
		if cmd.Stderr == nil {
			cmd.Stderr = f
		}
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	p := &Process{cmd: cmd, log: opts.Log, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Never unlocked: when this goroutine returns, the runtime ends the
		// thread, which is fine because the child is gone by then.
		runtime.LockOSThread()
		if logFile != nil {
			defer logFile.Close()
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("childproc: start %s: %w", cmd.Path, err)
	}
	return p, nil
}

// Pid is the child's process id, which is also its process group's.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Log is the path of the child's log file ("" if none).
func (p *Process) Log() string { return p.log }

// Done is closed once the child has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the child has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the child exited (cmd.Wait's error: nil for status 0, an
// *exec.ExitError otherwise), or nil while it runs.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Stopping reports whether Stop was called: an exit since was asked for.
func (p *Process) Stopping() bool { return p.stopping.Load() }

// StopResult says how Stop went.
type StopResult struct {
	// Killed: the child outlived the grace period after SIGTERM and got
	// SIGKILL.
	Killed bool
	// Leftovers: members of the child's process group outlived it and got
	// SIGKILL.
	Leftovers bool
}

// Stop sends SIGTERM to the child's process group, waits up to grace for
// the child to exit, then sends SIGKILL. It returns once the child has been
// reaped and no other member of its group is left. Calling it again, or
// after the child exited, only sweeps the group.
func (p *Process) Stop(grace time.Duration) StopResult {
	var r StopResult
	p.stopping.Store(true)
	pgid := p.Pid() // Setpgid makes the child the leader of a group with its pid.
	if !p.Exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
			r.Killed = true
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	}
	// Anything the child started that is still in its group.
	r.Leftovers = syscall.Kill(-pgid, syscall.SIGKILL) == nil
	return r
}

// Signalled reports whether err, a Process's Err, is an exit by a signal
// (as Stop's SIGTERM or SIGKILL cause) rather than an exit status.
func Signalled(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && !ee.Exited()
}
