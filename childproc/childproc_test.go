package childproc

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitLog waits until the log at path holds want.
func waitLog(t *testing.T, path, want string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("log %s never held %q: %q", path, want, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gone reports whether pid no longer runs (gone, or a zombie not yet
// reaped by its new parent).
func gone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && strings.HasPrefix(string(b[i+1:]), " Z")
}

func waitGone(t *testing.T, pid int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs after %s", pid, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A child that exits on SIGTERM stops within the grace period; its exit by
// the signal is reported, its output and the header are in the log.
func TestStopTerm(t *testing.T) {
	log := filepath.Join(t.TempDir(), "child.log")
	p, err := Start(exec.Command("sh", "-c", "echo started; exec sleep 60"), Options{Log: log, Header: "==== test child"})
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, log, "started")
	if p.Exited() || p.Err() != nil {
		t.Fatalf("running child: exited %v, err %v", p.Exited(), p.Err())
	}
	r := p.Stop(30 * time.Second)
	if r.Killed {
		t.Error("a child that exits on SIGTERM was killed")
	}
	if !p.Exited() || !p.Stopping() {
		t.Errorf("after Stop: exited %v, stopping %v", p.Exited(), p.Stopping())
	}
	var ee *exec.ExitError
	if err := p.Err(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM || !Signalled(err) {
		t.Errorf("exit: %v, want killed by SIGTERM", err)
	}
	b, _ := os.ReadFile(log)
	if !strings.HasPrefix(string(b), "==== test child\nstarted\n") {
		t.Errorf("log: %q", b)
	}
}

// A child that ignores SIGTERM gets SIGKILL once the grace period is over.
func TestStopKillAfterGrace(t *testing.T) {
	log := filepath.Join(t.TempDir(), "child.log")
	p, err := Start(exec.Command("sh", "-c", `trap "" TERM; echo trapped; while :; do sleep 0.1; done`), Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, log, "trapped")
	const grace = 300 * time.Millisecond
	start := time.Now()
	r := p.Stop(grace)
	took := time.Since(start)
	if !r.Killed {
		t.Error("Stop did not report the SIGKILL")
	}
	if took < grace {
		t.Errorf("stopped after %s, before the grace period of %s", took, grace)
	}
	var ee *exec.ExitError
	if err := p.Err(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("exit: %v, want killed by SIGKILL", err)
	}
}

// An exit status is reported as it is.
func TestExitStatus(t *testing.T) {
	p, err := Start(exec.Command("sh", "-c", "exit 3"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
		var ee *exec.ExitError
		if err := p.Err(); !errors.As(err, &ee) || ee.ExitCode() != 3 || Signalled(err) {
			t.Errorf("exit %v, want exit status 3", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the child did not exit")
	}
	if r := p.Stop(time.Second); r.Killed || r.Leftovers {
		t.Errorf("Stop after the exit: %+v", r)
	}
	if _, err := Start(exec.Command(filepath.Join(t.TempDir(), "no-such-program")), Options{}); err == nil {
		t.Error("started a program that does not exist")
	}
}

// What the child started in its process group goes with it.
func TestStopKillsTheGroup(t *testing.T) {
	log := filepath.Join(t.TempDir(), "child.log")
	p, err := Start(exec.Command("sh", "-c", `sleep 60 & echo "grandchild $!"; wait`), Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	b := waitLog(t, log, "grandchild ")
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(b, "grandchild ")))
	if err != nil {
		t.Fatalf("log %q: %v", b, err)
	}
	p.Stop(10 * time.Second)
	waitGone(t, pid, 10*time.Second)
}

// The child outlives the goroutine, and the thread, that started it: a
// goroutine that exits locked to its thread ends the thread, which would
// fire Pdeathsig had the child been forked from it.
func TestChildOutlivesStartingThread(t *testing.T) {
	got := make(chan *Process, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		p, err := Start(exec.Command("sleep", "60"), Options{})
		if err != nil {
			t.Error(err)
		}
		got <- p
	}()
	p := <-got
	if p == nil {
		t.FailNow()
	}
	defer p.Stop(10 * time.Second)
	select {
	case <-p.Done():
		t.Fatalf("the child died with the thread that started it: %v", p.Err())
	case <-time.After(time.Second):
	}
}

// The main goroutine keeps the main thread, which the runtime never ends:
// the goroutines of the tests run on threads that may end.
func init() { runtime.LockOSThread() }

// helperEnv makes the test binary a parent that starts a child, prints
// its pid and dies without stopping it.
const helperEnv = "CHILDPROC_TEST_PARENT"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		p, err := Start(exec.Command("sleep", "60"), Options{})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println(p.Pid())
		select {} // killed by the test
	}
	os.Exit(m.Run())
}

// Pdeathsig: the kernel kills the child when its parent process dies
// without stopping it.
func TestChildDiesWithParent(t *testing.T) {
	parent := exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), helperEnv+"=1")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		parent.Process.Kill()
		t.Fatalf("helper parent: %q %v", line, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		parent.Process.Kill()
		t.Fatalf("helper parent said %q", line)
	}
	if gone(pid) {
		t.Fatalf("child %d not running while its parent lives", pid)
	}
	parent.Process.Kill()
	parent.Wait()
	waitGone(t, pid, 10*time.Second)
}
