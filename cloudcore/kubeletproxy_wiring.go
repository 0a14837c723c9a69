package cloudcore

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/tether-edge/tether/cloudcore/dispatch"
	"github.com/tether-edge/tether/cloudcore/hub"
)

// kubeletNodes routes the kubelet proxy: edge nodes from the dispatcher's
// cache, streams through this replica's hub. (With several replicas, a
// node whose session is on another one is not reachable from here yet.)
type kubeletNodes struct {
	d *dispatch.Dispatcher
	h *hub.Hub
}

func (n kubeletNodes) IsEdgeNode(node string) bool { return n.d.IsEdgeNode(node) }

func (n kubeletNodes) OpenStream(node string) (net.Conn, error) { return n.h.OpenStream(node) }

// listenUnix listens on a unix socket only its owner may use (the API
// server, running as the same user or root): a stale socket is replaced.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("kubelet proxy socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	// Made in a directory of mode 0700 (if cloudcore made it), then set
	// to 0600: the umask is the whole process's, not changed here.
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("kubelet proxy socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("kubelet proxy socket: %w", err)
	}
	return ln, nil
}
