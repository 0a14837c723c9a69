// Package mosquittotest runs Debian's Mosquitto broker (package mosquitto)
// for tests, on a free loopback port with a username and password, and
// finds the mosquitto binaries and clients (package mosquitto-clients,
// mosquitto_pub and mosquitto_sub) that tests play devices with.
//
// A Broker is also the address and credentials of any other MQTT broker
// (edgecore's embedded one), so that a test talks to either the same way.
//
// Subscribe runs mosquitto_sub into a Recorder, which keeps messages by
// topic for a test to wait for (a paho client's handler can fill one too),
// and Publish runs mosquitto_pub.
package mosquittotest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// User and Pass are the credentials Start's brokers want.
const (
	User = "edge"
	Pass = "s3cret"
)

// listenTimeout bounds how long Start waits for a broker to listen; a
// mosquitto listens within milliseconds on an idle machine, but not on
// one running other tests.
const listenTimeout = time.Minute

// Broker is an MQTT broker's address and the credentials it wants.
type Broker struct {
	Host, Port string
	User, Pass string
}

// URL is the broker's address as MQTT clients take it: "tcp://host:port".
func (b *Broker) URL() string { return "tcp://" + net.JoinHostPort(b.Host, b.Port) }

// ClientArgs are the flags of mosquitto_pub and mosquitto_sub that connect
// to the broker: -h, -p, -u and -P. Each call returns a new slice, for the
// caller to append to.
func (b *Broker) ClientArgs() []string {
	return []string{"-h", b.Host, "-p", b.Port, "-u", b.User, "-P", b.Pass}
}

// LookPath finds a Mosquitto program (mosquitto, mosquitto_passwd,
// mosquitto_pub, mosquitto_sub) on PATH or in /usr/sbin or /usr/bin, which
// a non-root PATH may lack. It fails the test if the program is missing.
func LookPath(t testing.TB, name string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name, "/usr/bin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatalf("%s not found: install mosquitto and mosquitto-clients (make deps)", name)
	return ""
}

// Start runs mosquitto on a free loopback port, accepting User with Pass
// and no anonymous client, and waits until it listens. The broker keeps no
// persistence file, queues up to 100000 messages a client (tests that
// flood a slow client lose none), and is killed when the test ends, or by
// the kernel if the test process dies first. Its errors, warnings and
// notices (connections, refused logins) are logged if the test failed.
func Start(t testing.TB) *Broker {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwords")
	if err := os.WriteFile(pw, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(LookPath(t, "mosquitto_passwd"), "-b", pw, User, Pass).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	bin := LookPath(t, "mosquitto")
	// Another process may take the free port before mosquitto binds it:
	// mosquitto then exits, and a new port is tried.
	var lastErr error
	for attempt := range 3 {
		b, err := start(t, bin, filepath.Join(dir, fmt.Sprint(attempt)), pw)
		if err == nil {
			return b
		}
		if !errors.Is(err, errExited) {
			t.Fatal(err)
		}
		lastErr = err
	}
	t.Fatal(lastErr)
	return nil
}

var errExited = errors.New("mosquitto exited before it listened")

// start runs one mosquitto with its configuration and log in dir. It fails
// with errExited if mosquitto ends before it listens.
func start(t testing.TB, bin, dir, passwords string) (*Broker, error) {
	t.Helper()
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	b := &Broker{Host: "127.0.0.1", Port: port, User: User, Pass: Pass}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "mosquitto.conf")
	// "user root" keeps a mosquitto started as root from switching to the
	// mosquitto user, who could not read the test's files.
	err = os.WriteFile(conf, fmt.Appendf(nil, `listener %s %s
allow_anonymous false
password_file %s
persistence false
user root
max_queued_messages 100000
log_dest stderr
log_type error
log_type warning
log_type notice
`, b.Port, b.Host, passwords), 0o600)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "mosquitto.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close() // mosquitto has its own descriptor
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mosquitto: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	log := func() string { out, _ := os.ReadFile(logf.Name()); return string(out) }

	deadline := time.Now().Add(listenTimeout)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(b.Host, b.Port), time.Second)
		if err == nil {
			c.Close()
		}
		// Checked after the dial too: what answered may be the process
		// that took the port.
		select {
		case <-exited:
			return nil, fmt.Errorf("%w on port %s: %s (log: %s)", errExited, b.Port, cmd.ProcessState, log())
		default:
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return nil, fmt.Errorf("mosquitto does not listen on %s after %v: %v (log: %s)", b.Port, listenTimeout, err, log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("mosquitto on port %s, log:\n%s", b.Port, log())
		}
	})
	return b, nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}
