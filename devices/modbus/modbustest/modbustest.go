// Package modbustest runs a real Modbus TCP device for tests: pymodbus's
// server (Debian's python3-pymodbus, run with /usr/bin/python3) playing the
// device described in pymodbus_device.py.
package modbustest

import (
	"bufio"
	_ "embed"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

//go:embed pymodbus_device.py
var script []byte

// Python is Debian's interpreter, which has python3-pymodbus (the python3
// first on PATH may be another one).
const Python = "/usr/bin/python3"

// The tables of the pymodbus device (see pymodbus_device.py): addresses 0
// to Size-1 of each table exist; holding register i holds 10*i, input
// register i 1000+i, coil i is i%2 == 0, discrete input i is i%3 == 0.
const Size = 200

// Pymodbus is a running pymodbus device.
type Pymodbus struct {
	// Addr is its host:port.
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// StartPymodbus starts a pymodbus device on a free loopback port, answering
// as unit only (0: every unit), and stops it when the test ends. It fails
// the test if python3-pymodbus is missing or the device does not start.
func StartPymodbus(t testing.TB, unit int) string {
	return Start(t, unit).Addr
}

// Start is StartPymodbus returning the device, which Stop ends early (say,
// to make it unreachable).
func Start(t testing.TB, unit int) *Pymodbus {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pymodbus_device.py")
	if err := os.WriteFile(path, script, 0o600); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		p, err := start(path, port, unit)
		if err == nil {
			t.Cleanup(p.Stop)
			return p
		}
		lastErr = err
	}
	t.Fatalf("pymodbus device: %v (is python3-pymodbus installed? hack/install-deps.sh installs it)", lastErr)
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func start(path string, port, unit int) (*Pymodbus, error) {
	cmd := exec.Command(Python, path, strconv.Itoa(port), strconv.Itoa(unit))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Pymodbus{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				close(ready)
			}
		}
	}()
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	select {
	case <-ready:
	case <-p.done:
		return nil, fmt.Errorf("exited at start: %s", stderr.String())
	case <-time.After(30 * time.Second):
		p.Stop()
		return nil, fmt.Errorf("not ready after 30s: %s", stderr.String())
	}
	// "ready" comes half a second after the server was started; check it
	// really listens (another process may hold the port).
	conn, err := net.DialTimeout("tcp", p.Addr, 5*time.Second)
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("not listening on %s: %v: %s", p.Addr, err, stderr.String())
	}
	conn.Close()
	return p, nil
}

// Stop kills the device and waits for it to exit. It may be called more
// than once.
func (p *Pymodbus) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	// Its own process group, so nothing it started outlives it.
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}
