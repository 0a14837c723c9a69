package netns

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
)

// DialFunc opens a connection, like net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Forward accepts connections on ln until ctx ends and joins each to a new
// connection that dial opens to target, copying both ways. With ln from
// Namespace.Listen and dial from another namespace's DialContext (or the
// host's), it lets a process inside one namespace reach a service in
// another, e.g. a cloudcore in a namespace reaching the API server on the
// host's loopback. It closes ln and every connection when ctx ends, waits
// for them, and returns nil then, or the error that stopped Accept.
func Forward(ctx context.Context, ln net.Listener, dial DialFunc, target string) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			up, err := dial(ctx, "tcp", target)
			if err != nil {
				return // the client sees its connection closed
			}
			defer up.Close()
			done := context.AfterFunc(ctx, func() { c.Close(); up.Close() })
			defer done()
			var cw sync.WaitGroup
			cw.Add(2)
			pipe := func(dst, src net.Conn) {
				defer cw.Done()
				io.Copy(dst, src)
				// Pass the end of one direction on; the other may still
				// be going.
				if tc, ok := dst.(interface{ CloseWrite() error }); ok {
					tc.CloseWrite()
				} else {
					dst.Close()
				}
			}
			go pipe(up, c)
			go pipe(c, up)
			cw.Wait()
		}()
	}
}
