package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ErrNotFound is returned when a pod or container has no container or
// sandbox in containerd (yet, or any more).
var ErrNotFound = errors.New("not found in the container runtime")

// container returns the newest container named name of the pod.
func (r *Runtime) container(ctx context.Context, uid types.UID, name string) (*runtimeapi.Container, error) {
	list, err := r.listContainers(ctx, uid, "")
	if err != nil {
		return nil, err
	}
	list = slices.DeleteFunc(list, func(c *runtimeapi.Container) bool { return c.Metadata.GetName() != name })
	if len(list) == 0 {
		return nil, fmt.Errorf("container %s of pod %s: %w", name, uid, ErrNotFound)
	}
	slices.SortFunc(list, func(a, b *runtimeapi.Container) int {
		if a.Metadata.GetAttempt() != b.Metadata.GetAttempt() {
			return int(b.Metadata.GetAttempt()) - int(a.Metadata.GetAttempt())
		}
		return int((b.CreatedAt - a.CreatedAt) / 1e6)
	})
	return list[0], nil
}

// ContainerLog returns the log file of the pod's container named name (the
// newest attempt), or with previous the one of the attempt before it, and
// the ID of the newest container.
func (r *Runtime) ContainerLog(ctx context.Context, uid types.UID, name string, previous bool) (path, id string, err error) {
	c, err := r.container(ctx, uid, name)
	if err != nil {
		return "", "", err
	}
	cctx, cancel := r.call(ctx)
	defer cancel()
	st, err := r.rs.ContainerStatus(cctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.Id})
	if err != nil {
		return "", "", fmt.Errorf("container status: %w", err)
	}
	path = st.GetStatus().GetLogPath()
	if path == "" {
		return "", "", fmt.Errorf("container %s of pod %s has no log file", name, uid)
	}
	if !previous {
		return path, c.Id, nil
	}
	// Attempts are <dir>/<attempt>.log: the previous one is the highest
	// below the current attempt whose file is still there.
	cur := c.Metadata.GetAttempt()
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return "", "", fmt.Errorf("container logs: %w", err)
	}
	best, found := uint64(0), false
	for _, e := range entries {
		n, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok {
			continue
		}
		a, err := strconv.ParseUint(n, 10, 32)
		if err != nil || a >= uint64(cur) {
			continue
		}
		if !found || a > best {
			best, found = a, true
		}
	}
	if !found {
		return "", "", fmt.Errorf("previous terminated container %s of pod %s: %w", name, uid, ErrNotFound)
	}
	return filepath.Join(filepath.Dir(path), strconv.FormatUint(best, 10)+".log"), c.Id, nil
}

// ContainerRunning reports whether the container with id runs.
func (r *Runtime) ContainerRunning(ctx context.Context, id string) (bool, error) {
	cctx, cancel := r.call(ctx)
	defer cancel()
	st, err := r.rs.ContainerStatus(cctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		return false, err
	}
	return st.GetStatus().GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING, nil
}

// ExecURL asks containerd for the streaming URL of cmd in the pod's
// container named name.
func (r *Runtime) ExecURL(ctx context.Context, uid types.UID, name string, cmd []string, stdin, stdout, stderr, tty bool) (string, error) {
	c, err := r.container(ctx, uid, name)
	if err != nil {
		return "", err
	}
	cctx, cancel := r.call(ctx)
	defer cancel()
	resp, err := r.rs.Exec(cctx, &runtimeapi.ExecRequest{ContainerId: c.Id, Cmd: cmd, Tty: tty, Stdin: stdin,
		Stdout: stdout, Stderr: stderr})
	if err != nil {
		return "", fmt.Errorf("exec: %w", err)
	}
	return resp.Url, nil
}

// AttachURL asks containerd for the streaming URL to attach to the pod's
// container named name.
func (r *Runtime) AttachURL(ctx context.Context, uid types.UID, name string, stdin, stdout, stderr, tty bool) (string, error) {
	c, err := r.container(ctx, uid, name)
	if err != nil {
		return "", err
	}
	cctx, cancel := r.call(ctx)
	defer cancel()
	resp, err := r.rs.Attach(cctx, &runtimeapi.AttachRequest{ContainerId: c.Id, Tty: tty, Stdin: stdin,
		Stdout: stdout, Stderr: stderr})
	if err != nil {
		return "", fmt.Errorf("attach: %w", err)
	}
	return resp.Url, nil
}

// PortForwardURL asks containerd for the streaming URL to forward ports of
// the pod's sandbox.
func (r *Runtime) PortForwardURL(ctx context.Context, uid types.UID, ports []int32) (string, error) {
	sbs, err := r.listSandboxes(ctx, uid)
	if err != nil {
		return "", err
	}
	var ready *runtimeapi.PodSandbox
	for _, s := range sbs {
		if s.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			ready = s
			break
		}
	}
	if ready == nil {
		return "", fmt.Errorf("ready sandbox of pod %s: %w", uid, ErrNotFound)
	}
	cctx, cancel := r.call(ctx)
	defer cancel()
	resp, err := r.rs.PortForward(cctx, &runtimeapi.PortForwardRequest{PodSandboxId: ready.Id, Port: ports})
	if err != nil {
		return "", fmt.Errorf("port forward: %w", err)
	}
	return resp.Url, nil
}
