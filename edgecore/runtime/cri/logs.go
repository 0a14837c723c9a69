package cri

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// rotateLog rotates a running container's log as the kubelet does, when it
// is over ContainerLogMaxSize: the file is renamed with a timestamp suffix,
// containerd reopens it (ReopenContainerLog), and rotated files beyond
// ContainerLogMaxFiles-1 are removed, oldest first.
func (r *Runtime) rotateLog(ctx context.Context, st *runtimeapi.ContainerStatus) {
	max := r.cfg.ContainerLogMaxSize.Value()
	if st.LogPath == "" || max <= 0 {
		return
	}
	fi, err := os.Stat(st.LogPath)
	if err != nil || fi.Size() < max {
		return
	}
	rotated := st.LogPath + "." + time.Now().UTC().Format("20060102-150405.000")
	if err := os.Rename(st.LogPath, rotated); err != nil {
		r.log.Warn("rotate container log", slog.String("path", st.LogPath), slog.Any("err", err))
		return
	}
	cctx, cancel := r.call(ctx)
	_, err = r.rs.ReopenContainerLog(cctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: st.Id})
	cancel()
	if err != nil {
		// The container keeps writing to the renamed file: take it back.
		os.Rename(rotated, st.LogPath)
		r.log.Warn("reopen container log", slog.String("path", st.LogPath), slog.Any("err", err))
		return
	}
	old, _ := filepath.Glob(st.LogPath + ".*")
	sort.Strings(old)
	for len(old) > r.cfg.ContainerLogMaxFiles-1 {
		os.Remove(old[0])
		old = old[1:]
	}
}
