package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// setns moves the calling OS thread into the network namespace open as fd.
func setns(fd uintptr) error {
	return unix.Setns(int(fd), unix.CLONE_NEWNET)
}

// Do runs f on an OS thread that is in ns, and waits for it. f must do its
// work on the calling goroutine: a goroutine it starts runs in whatever
// namespace its thread is in. Sockets and TUN devices f makes stay in ns
// afterwards. For the host's namespace (nil) it calls f directly.
func (ns *Namespace) Do(f func() error) error {
	if ns == nil {
		return f()
	}
	target, err := os.Open(ns.path())
	if err != nil {
		return fmt.Errorf("netns %s: %w", ns.Name, err)
	}
	defer target.Close()
	done := make(chan error, 1)
	// A goroutine of its own: if the thread cannot be moved back, it stays
	// locked and the runtime ends it with the goroutine, so no other
	// goroutine ever runs in ns by accident.
	go func() {
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", syscall.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("netns: own namespace: %w", err)
			return
		}
		defer self.Close()
		if err := setns(target.Fd()); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("netns %s: setns: %w", ns.Name, err)
			return
		}
		ferr := f()
		if err := setns(self.Fd()); err != nil {
			done <- fmt.Errorf("netns %s: setns back: %w (after %v)", ns.Name, err, ferr)
			return // the thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

// Listen opens a listener inside ns (net.Listen's arguments).
func (ns *Namespace) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := ns.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// DialContext opens a TCP connection from inside ns. addr must hold an IP
// address, not a host name (resolving would run on other threads, in the
// host's namespace). Only the socket is made on a thread in ns; the connect
// waits in the runtime's poller like any dial, so thousands of nodes may
// dial at once without holding a thread each. Its signature is that of
// net.Dialer.DialContext, so it can be a hollow node's dialer.
func (ns *Namespace) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if ns == nil {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	c, err := ns.dial(ctx, network, addr)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("netns %s: %w", ns.Name, err)}
	}
	return c, nil
}

func (ns *Namespace) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%s: want ip:port: %w", addr, err)
	}
	var (
		family int
		sa     syscall.Sockaddr
	)
	switch {
	case network != "tcp" && network != "tcp4" && network != "tcp6":
		return nil, fmt.Errorf("network %q: only tcp", network)
	case ap.Addr().Is4() || ap.Addr().Is4In6():
		family = syscall.AF_INET
		sa = &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	default:
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	var fd int
	err = ns.Do(func() error {
		var err error
		fd, err = syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	// os.NewFile sees a non-blocking descriptor and hands it to the poller.
	f := os.NewFile(uintptr(fd), "dial "+addr)
	defer f.Close() // net.FileConn holds a copy
	if err := syscall.Connect(fd, sa); err != nil && err != syscall.EINPROGRESS && err != syscall.EINTR {
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(aLongTimeAgo) })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		f.SetWriteDeadline(d)
	}
	var cerr error
	werr := rc.Write(func(fd uintptr) bool {
		// Writable: the connect finished one way or the other.
		n, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ERROR)
		if err != nil {
			cerr = err
			return true
		}
		switch e := syscall.Errno(n); e {
		case 0:
		case syscall.EINPROGRESS, syscall.EALREADY, syscall.EINTR:
			return false
		default:
			cerr = e
			return true
		}
		if _, err := syscall.Getpeername(int(fd)); err == syscall.ENOTCONN {
			return false // not finished yet: wait for writability
		}
		return true
	})
	if ctx.Err() != nil {
		return nil, fmt.Errorf("connect %s: %w", addr, ctx.Err())
	}
	if err := errors.Join(werr, cerr); err != nil {
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	return c, nil
}

var aLongTimeAgo = time.Unix(1, 0)
