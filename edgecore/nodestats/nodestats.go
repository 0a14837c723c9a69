// Package nodestats serves the node's resource usage as a kubelet does, for
// metrics-server and kubectl top: /stats/summary (the kubelet's Summary API,
// k8s.io/kubelet/pkg/apis/stats/v1alpha1) and /metrics/resource (Prometheus
// text with the kubelet's names: node_cpu_usage_seconds_total,
// node_memory_working_set_bytes, container_cpu_usage_seconds_total,
// container_memory_working_set_bytes, container_start_time_seconds,
// pod_cpu_usage_seconds_total, pod_memory_working_set_bytes,
// resource_scrape_error).
//
// The node's figures come from the kernel (/proc/stat, /proc/meminfo, statfs
// of the data directory), the pods' and containers' from the container
// runtime (CRI ListContainerStats, see Runtime). The handler has no
// authentication of its own: it is mounted only in the node's kubelet-style
// API, reached through the tunnel, where each request was authenticated
// and authorized (a SubjectAccessReview on nodes/stats or nodes/metrics)
// before it left the cloud. It opens no port.
package nodestats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// Container is one running container's usage, as the runtime reports it.
type Container struct {
	Name      string
	StartTime time.Time
	// At is when the runtime took the figures.
	At time.Time
	// CPUNanos is the CPU time the container used, cumulative.
	CPUNanos uint64
	// MemoryWorkingSet and MemoryUsage are in bytes.
	MemoryWorkingSet, MemoryUsage uint64
	// RootfsUsed is the bytes of its writable layer.
	RootfsUsed uint64
}

// Pod is one pod's running containers.
type Pod struct {
	Namespace, Name, UID string
	StartTime            time.Time
	Containers           []Container
}

// FsUsage is what the runtime's image store uses.
type FsUsage struct {
	At         time.Time
	Mountpoint string
	UsedBytes  uint64
	InodesUsed uint64
}

// Runtime reports the node's pods' usage (cri.Runtime does).
type Runtime interface {
	// PodStats lists the node's pods with running containers and their
	// usage.
	PodStats(ctx context.Context) ([]Pod, error)
	// ImageFs is the use of the file system that holds the images.
	ImageFs(ctx context.Context) (FsUsage, error)
}

// Config configures the handler.
type Config struct {
	// NodeName is the node's name.
	NodeName string
	// Runtime reports the pods; nil serves the node's figures only.
	Runtime Runtime
	// FsPath is the directory whose file system is the node's (edgecore's
	// data directory; default /).
	FsPath string
	// ProcDir is where procfs is mounted (default /proc).
	ProcDir string
	// Timeout bounds the runtime's calls of one request (default 10s).
	Timeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.NodeName == "" {
		return errors.New("nodestats: no NodeName")
	}
	if c.FsPath == "" {
		c.FsPath = "/"
	}
	if c.ProcDir == "" {
		c.ProcDir = "/proc"
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Paths the handler serves.
const (
	SummaryPath  = "/stats/summary"
	ResourcePath = "/metrics/resource"
)

type handler struct {
	cfg Config

	mu sync.Mutex
	// last holds the previous CPU sample per container ("" for the node)
	// to compute a rate; only the keys of the last request are kept.
	// Guarded by mu.
	last map[string]cpuSample
}

type cpuSample struct {
	nanos uint64
	at    time.Time
}

// NewHandler returns the handler of SummaryPath and ResourcePath (GET and
// HEAD; 404 for any other path).
func NewHandler(cfg Config) (http.Handler, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &handler{cfg: cfg, last: map[string]cpuSample{}}, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != SummaryPath && r.URL.Path != ResourcePath {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.Timeout)
	defer cancel()
	s, err := h.sample(ctx, r.URL.Path == SummaryPath && r.URL.Query().Get("only_cpu_and_memory") != "true")
	if r.URL.Path == ResourcePath {
		// As the kubelet: what could be read, and resource_scrape_error 1
		// when the containers could not.
		if err != nil && s.machineErr != nil {
			h.cfg.Logger.Warn("node stats", slog.Any("err", err))
			http.Error(w, "node stats unavailable", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		writeResource(w, s)
		return
	}
	if err != nil {
		h.cfg.Logger.Warn("node stats", slog.Any("err", err))
		http.Error(w, "node stats unavailable", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(h.summary(s))
}

// snapshot is one reading of the node and its pods.
type snapshot struct {
	at         time.Time
	m          machine
	machineErr error
	fs         *fsUsage
	imageFs    *FsUsage
	pods       []Pod
	podsErr    error
	// rates are the CPU rates in nanocores since the last request, by
	// container key ("" for the node), when there was one.
	rates map[string]uint64
}

func containerKey(p *Pod, c *Container) string { return p.UID + "/" + c.Name }

// sample reads the node and its pods. Its error is the first failure; the
// snapshot holds what could be read.
func (h *handler) sample(ctx context.Context, withFs bool) (snapshot, error) {
	s := snapshot{at: h.cfg.Now(), rates: map[string]uint64{}}
	s.m, s.machineErr = readMachine(h.cfg.ProcDir)
	var errs []error
	if s.machineErr != nil {
		errs = append(errs, s.machineErr)
	}
	if withFs {
		if fs, err := statFS(h.cfg.FsPath); err == nil {
			s.fs = &fs
		} else {
			errs = append(errs, err)
		}
	}
	if h.cfg.Runtime != nil {
		s.pods, s.podsErr = h.cfg.Runtime.PodStats(ctx)
		if s.podsErr != nil {
			errs = append(errs, fmt.Errorf("pod stats: %w", s.podsErr))
		}
		if withFs {
			if fs, err := h.cfg.Runtime.ImageFs(ctx); err == nil {
				s.imageFs = &fs
			}
		}
	}
	for i := range s.pods {
		p := &s.pods[i]
		sort.Slice(p.Containers, func(a, b int) bool { return p.Containers[a].Name < p.Containers[b].Name })
	}
	sort.Slice(s.pods, func(a, b int) bool {
		if s.pods[a].Namespace != s.pods[b].Namespace {
			return s.pods[a].Namespace < s.pods[b].Namespace
		}
		return s.pods[a].Name < s.pods[b].Name
	})
	h.rates(&s)
	return s, errors.Join(errs...)
}

// rates computes the CPU rates since the last request and keeps this one's
// samples.
func (h *handler) rates(s *snapshot) {
	now := map[string]cpuSample{}
	if s.machineErr == nil {
		now[""] = cpuSample{nanos: s.m.cpuNanos, at: s.at}
	}
	for i := range s.pods {
		p := &s.pods[i]
		for j := range p.Containers {
			c := &p.Containers[j]
			now[containerKey(p, c)] = cpuSample{nanos: c.CPUNanos, at: c.At}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, cur := range now {
		prev, ok := h.last[k]
		if !ok || !cur.at.After(prev.at) || cur.nanos < prev.nanos {
			continue
		}
		s.rates[k] = uint64(float64(cur.nanos-prev.nanos) / cur.at.Sub(prev.at).Seconds())
	}
	h.last = now
}

func ptr[T any](v T) *T { return &v }

// summary builds the Summary API's answer.
func (h *handler) summary(s snapshot) *statsapi.Summary {
	at := metav1.NewTime(s.at)
	node := statsapi.NodeStats{NodeName: h.cfg.NodeName, StartTime: metav1.NewTime(s.m.boot)}
	node.CPU = &statsapi.CPUStats{Time: at, UsageCoreNanoSeconds: ptr(s.m.cpuNanos)}
	if r, ok := s.rates[""]; ok {
		node.CPU.UsageNanoCores = ptr(r)
	}
	node.Memory = &statsapi.MemoryStats{Time: at, AvailableBytes: ptr(s.m.memAvailable),
		UsageBytes: ptr(s.m.memTotal - min(s.m.memFree, s.m.memTotal)), WorkingSetBytes: ptr(s.m.workingSet())}
	if s.fs != nil {
		node.Fs = &statsapi.FsStats{Time: at, AvailableBytes: ptr(s.fs.available), CapacityBytes: ptr(s.fs.capacity),
			UsedBytes: ptr(s.fs.used), InodesFree: ptr(s.fs.inodesFree), Inodes: ptr(s.fs.inodes),
			InodesUsed: ptr(s.fs.inodes - min(s.fs.inodesFree, s.fs.inodes))}
	}
	if s.imageFs != nil {
		node.Runtime = &statsapi.RuntimeStats{ImageFs: &statsapi.FsStats{Time: metav1.NewTime(s.imageFs.At),
			UsedBytes: ptr(s.imageFs.UsedBytes), InodesUsed: ptr(s.imageFs.InodesUsed)}}
	}
	sum := &statsapi.Summary{Node: node, Pods: []statsapi.PodStats{}}
	for i := range s.pods {
		p := &s.pods[i]
		ps := statsapi.PodStats{PodRef: statsapi.PodReference{Name: p.Name, Namespace: p.Namespace, UID: p.UID},
			StartTime: metav1.NewTime(p.StartTime)}
		var cpu, ws, usage, rate uint64
		hasRate := true
		var last time.Time
		for j := range p.Containers {
			c := &p.Containers[j]
			ct := metav1.NewTime(c.At)
			cs := statsapi.ContainerStats{Name: c.Name, StartTime: metav1.NewTime(c.StartTime),
				CPU:    &statsapi.CPUStats{Time: ct, UsageCoreNanoSeconds: ptr(c.CPUNanos)},
				Memory: &statsapi.MemoryStats{Time: ct, WorkingSetBytes: ptr(c.MemoryWorkingSet), UsageBytes: ptr(c.MemoryUsage)},
				Rootfs: &statsapi.FsStats{Time: ct, UsedBytes: ptr(c.RootfsUsed)}}
			if r, ok := s.rates[containerKey(p, c)]; ok {
				cs.CPU.UsageNanoCores = ptr(r)
				rate += r
			} else {
				hasRate = false
			}
			ps.Containers = append(ps.Containers, cs)
			cpu, ws, usage = cpu+c.CPUNanos, ws+c.MemoryWorkingSet, usage+c.MemoryUsage
			if c.At.After(last) {
				last = c.At
			}
		}
		pt := metav1.NewTime(last)
		ps.CPU = &statsapi.CPUStats{Time: pt, UsageCoreNanoSeconds: ptr(cpu)}
		if hasRate {
			ps.CPU.UsageNanoCores = ptr(rate)
		}
		ps.Memory = &statsapi.MemoryStats{Time: pt, WorkingSetBytes: ptr(ws), UsageBytes: ptr(usage)}
		sum.Pods = append(sum.Pods, ps)
	}
	return sum
}

// writeResource writes the /metrics/resource answer: the kubelet's
// resource metrics in the Prometheus text format, times in milliseconds.
func writeResource(w io.Writer, s snapshot) {
	type series struct {
		labels string
		value  float64
		at     time.Time
	}
	family := func(name, kind, help string, ss []series) {
		fmt.Fprintf(w, "# HELP %s [STABLE] %s\n# TYPE %s %s\n", name, help, name, kind)
		for _, x := range ss {
			fmt.Fprintf(w, "%s%s %s", name, x.labels, strconv.FormatFloat(x.value, 'g', -1, 64))
			if !x.at.IsZero() {
				fmt.Fprintf(w, " %d", x.at.UnixMilli())
			}
			fmt.Fprintln(w)
		}
	}
	var cCPU, cMem, cStart, pCPU, pMem []series
	for i := range s.pods {
		p := &s.pods[i]
		var cpu, mem uint64
		var last time.Time
		for j := range p.Containers {
			c := &p.Containers[j]
			l := fmt.Sprintf(`{container=%q,namespace=%q,pod=%q}`, c.Name, p.Namespace, p.Name)
			cCPU = append(cCPU, series{l, float64(c.CPUNanos) / 1e9, c.At})
			cMem = append(cMem, series{l, float64(c.MemoryWorkingSet), c.At})
			cStart = append(cStart, series{l, float64(c.StartTime.UnixNano()) / 1e9, c.At})
			cpu, mem = cpu+c.CPUNanos, mem+c.MemoryWorkingSet
			if c.At.After(last) {
				last = c.At
			}
		}
		l := fmt.Sprintf(`{namespace=%q,pod=%q}`, p.Namespace, p.Name)
		pCPU = append(pCPU, series{l, float64(cpu) / 1e9, last})
		pMem = append(pMem, series{l, float64(mem), last})
	}
	family("container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the container in core-seconds", cCPU)
	family("container_memory_working_set_bytes", "gauge", "Current working set of the container in bytes", cMem)
	family("container_start_time_seconds", "gauge", "Start time of the container since unix epoch in seconds", cStart)
	if s.machineErr == nil {
		family("node_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the node in core-seconds",
			[]series{{"", float64(s.m.cpuNanos) / 1e9, s.at}})
		family("node_memory_working_set_bytes", "gauge", "Current working set of the node in bytes",
			[]series{{"", float64(s.m.workingSet()), s.at}})
	}
	family("pod_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the pod in core-seconds", pCPU)
	family("pod_memory_working_set_bytes", "gauge", "Current working set of the pod in bytes", pMem)
	scrapeErr := 0.0
	if s.podsErr != nil {
		scrapeErr = 1
	}
	family("resource_scrape_error", "gauge", "1 if there was an error while getting container metrics, 0 otherwise",
		[]series{{"", scrapeErr, time.Time{}}})
}
