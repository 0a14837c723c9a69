package edgecore

import (
	"fmt"
	"net"
	"os"

	corev1 "k8s.io/api/core/v1"

	"github.com/tether-edge/tether/edgecore/staticpods"
	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/protocol"
)

// nodePods are the pods the node runs, for the kubelet API: those in the
// store (the cloud's) and the static pods.
type nodePods struct {
	db     *store.DB
	static *staticpods.Source
}

func (n nodePods) Pod(namespace, name string) (*corev1.Pod, error) {
	var p *corev1.Pod
	err := n.db.View(func(tx *store.Tx) error {
		o, err := tx.ObjectByName(protocol.KindPod, namespace, name)
		if err != nil || o == nil {
			return err
		}
		p, err = protocol.DecodePod(o.Data)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read pod %s/%s: %w", namespace, name, err)
	}
	if p != nil {
		return p, nil
	}
	if n.static != nil {
		for _, p := range n.static.Pods() {
			if p.Namespace == namespace && p.Name == name {
				return p, nil
			}
		}
	}
	return nil, nil
}

func (n nodePods) List() ([]*corev1.Pod, error) {
	var out []*corev1.Pod
	err := n.db.View(func(tx *store.Tx) error {
		return tx.ForEachObject(protocol.KindPod, func(o *protocol.Object) error {
			p, err := protocol.DecodePod(o.Data)
			if err != nil {
				return err
			}
			out = append(out, p)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	if n.static != nil {
		out = append(out, n.static.Pods()...)
	}
	return out, nil
}

// listenOwnerOnly listens on a unix socket only its owner may use (mode
// 0600), replacing a stale one.
func listenOwnerOnly(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
