package cri

import (
	"context"
	"fmt"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/tether-edge/tether/edgecore/nodestats"
)

var _ nodestats.Runtime = (*Runtime)(nil)

// PodStats implements nodestats.Runtime: this node's ready sandboxes with
// their running containers and what containerd reports of their usage
// (ListContainerStats). A container whose stats are missing is left out.
func (r *Runtime) PodStats(ctx context.Context) ([]nodestats.Pod, error) {
	sel := map[string]string{labelManaged: managedBy, labelNode: r.cfg.NodeName}
	cctx, cancel := r.call(ctx)
	defer cancel()
	sbs, err := r.rs.ListPodSandbox(cctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}, LabelSelector: sel}})
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	cs, err := r.rs.ListContainers(cctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}, LabelSelector: sel}})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	st, err := r.rs.ListContainerStats(cctx, &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{
		LabelSelector: sel}})
	if err != nil {
		return nil, fmt.Errorf("list container stats: %w", err)
	}
	stats := make(map[string]*runtimeapi.ContainerStats, len(st.Stats))
	for _, s := range st.Stats {
		stats[s.GetAttributes().GetId()] = s
	}
	pods := make(map[string]*nodestats.Pod, len(sbs.Items))
	for _, sb := range sbs.Items {
		m := sb.GetMetadata()
		pods[sb.Id] = &nodestats.Pod{Namespace: m.GetNamespace(), Name: m.GetName(), UID: m.GetUid(),
			StartTime: time.Unix(0, sb.CreatedAt)}
	}
	for _, c := range cs.Containers {
		p, s := pods[c.PodSandboxId], stats[c.Id]
		if p == nil || s == nil {
			continue
		}
		ct := nodestats.Container{Name: c.GetMetadata().GetName(), StartTime: time.Unix(0, c.CreatedAt),
			CPUNanos:         s.GetCpu().GetUsageCoreNanoSeconds().GetValue(),
			MemoryWorkingSet: s.GetMemory().GetWorkingSetBytes().GetValue(),
			MemoryUsage:      s.GetMemory().GetUsageBytes().GetValue(),
			RootfsUsed:       s.GetWritableLayer().GetUsedBytes().GetValue()}
		if ts := s.GetCpu().GetTimestamp(); ts > 0 {
			ct.At = time.Unix(0, ts)
		} else {
			ct.At = time.Now()
		}
		p.Containers = append(p.Containers, ct)
	}
	out := make([]nodestats.Pod, 0, len(pods))
	for _, p := range pods {
		if len(p.Containers) > 0 {
			out = append(out, *p)
		}
	}
	return out, nil
}

// ImageFs implements nodestats.Runtime: containerd's ImageFsInfo.
func (r *Runtime) ImageFs(ctx context.Context) (nodestats.FsUsage, error) {
	cctx, cancel := r.call(ctx)
	defer cancel()
	resp, err := r.is.ImageFsInfo(cctx, &runtimeapi.ImageFsInfoRequest{})
	if err != nil {
		return nodestats.FsUsage{}, fmt.Errorf("image fs info: %w", err)
	}
	var u nodestats.FsUsage
	for _, f := range resp.GetImageFilesystems() {
		u.UsedBytes += f.GetUsedBytes().GetValue()
		u.InodesUsed += f.GetInodesUsed().GetValue()
		u.Mountpoint = f.GetFsId().GetMountpoint()
		u.At = time.Unix(0, f.GetTimestamp())
	}
	return u, nil
}
