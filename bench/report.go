package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"time"
)

// SchemaVersion is the version of the Report's JSON shape. Fields are only
// ever added; a field that is removed or changes meaning bumps it.
const SchemaVersion = 1

// Report is everything one run of the suite measured. Figures the run could
// not obtain are nil, and Unavailable (here or in a Scale) says why.
type Report struct {
	// Schema is SchemaVersion at the time of the run.
	Schema int `json:"schema"`
	// Started and Finished bound the run.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Machine is where the run took place and what code it ran.
	Machine Machine `json:"machine"`
	// Args are the suite's command-line arguments.
	Args []string `json:"args,omitempty"`
	// Link is the emulated network between the hollow nodes and cloudcore,
	// nil for loopback.
	Link *Link `json:"link,omitempty"`
	// Scales holds the figures measured at each node count, in increasing
	// order of Nodes.
	Scales []Scale `json:"scales"`
	// EdgecoreIdle is the resident memory of the real edgecore binary, one
	// node, connected and idle.
	EdgecoreIdle *EdgecoreIdle `json:"edgecoreIdle,omitempty"`
	// Twin holds the device twin figures.
	Twin *Twin `json:"twin,omitempty"`
	// DeviceLag is the time from a device's twin report on MQTT to the
	// reported value in its Device's status in the API server, with the
	// real edgecore and cloudcore binaries.
	DeviceLag *DeviceLag `json:"deviceLag,omitempty"`
	// GoBenchmarks are the module's Go micro-benchmarks, as `go test -bench`
	// printed them.
	GoBenchmarks []GoBenchmark `json:"goBenchmarks,omitempty"`
	// Targets is the verdict on each target, filled by Evaluate.
	Targets []TargetResult `json:"targets"`
	// Unavailable maps the name of a top-level figure (edgecoreIdle, twin,
	// deviceLag, goBenchmarks) the run could not obtain to the reason.
	Unavailable map[string]string `json:"unavailable,omitempty"`
	// Errors are failures of the run that did not stop it.
	Errors []string `json:"errors,omitempty"`
}

// Link is an emulated link (package simulator/netns).
type Link struct {
	// DelayMs is the delay each way, LossPercent the packets dropped.
	DelayMs     float64 `json:"delayMs"`
	LossPercent float64 `json:"lossPercent"`
}

// Scale is what the suite measured with Nodes hollow edge nodes connected to
// one cloudcore.
type Scale struct {
	// Nodes is the number of hollow edge nodes started.
	Nodes int `json:"nodes"`
	// Processes is the number of simulator processes the nodes ran in
	// (past one process's file limit the rest join its hub from others);
	// 0 in reports from before it was counted. The churn's pods, so the
	// latencies, are on the first process's nodes.
	Processes int `json:"processes,omitempty"`
	// Connected is how many of them were connected when the measurements
	// started, and ConnectSeconds how long it took from the first start
	// until then.
	Connected      int     `json:"connected"`
	ConnectSeconds float64 `json:"connectSeconds"`
	// Enrolled is how many nodes were enrolled for this count (those not
	// enrolled for a smaller one), and EnrollSeconds how long that took,
	// before the connect started: each node's key made, its Node
	// registered (registration happens at enrollment, no longer on a
	// node's first status report) and its client certificate issued.
	// Zero in reports from before nodes had certificates of their own.
	Enrolled      int     `json:"enrolled,omitempty"`
	EnrollSeconds float64 `json:"enrollSeconds,omitempty"`
	// CloudcoreIdle is cloudcore's resource use with every node connected
	// and nothing changing; CloudcoreChurn while pods are created and
	// deleted.
	CloudcoreIdle  *ProcessUsage `json:"cloudcoreIdle,omitempty"`
	CloudcoreChurn *ProcessUsage `json:"cloudcoreChurn,omitempty"`
	// Dispatch is the time from the API server's watch event of a pod bound
	// to a node to the node's commit of it.
	Dispatch *Latency `json:"dispatch,omitempty"`
	// CreateToRunning is the time from a pod's creation to its Running
	// phase in the API server.
	CreateToRunning *Latency `json:"createToRunning,omitempty"`
	// Churn describes the pod churn that produced the two latencies above.
	Churn *Churn `json:"churn,omitempty"`
	// Storm is every node reconnecting after a hub restart.
	Storm *Storm `json:"storm,omitempty"`
	// IdleBandwidth is the traffic per node with nothing changing.
	IdleBandwidth *Bandwidth `json:"idleBandwidth,omitempty"`
	// IdleLink is the same window counted at the IP layer on the emulated
	// link, when the fleet ran behind one (Report.Link).
	IdleLink *Bandwidth `json:"idleLink,omitempty"`
	// Unavailable maps the JSON name of a figure above that this scale could
	// not obtain to the reason.
	Unavailable map[string]string `json:"unavailable,omitempty"`
}

// ProcessUsage is a process's resource use over a window (see Sampler),
// with the figures per node.
type ProcessUsage struct {
	Usage
	// Nodes is the node count the per-node figures divide by.
	Nodes int `json:"nodes"`
	// RSSPerNodeBytes is RSSPeakBytes / Nodes.
	RSSPerNodeBytes float64 `json:"rssPerNodeBytes"`
	// CPUMillicoresPerNode is 1000 * CPUCores / Nodes.
	CPUMillicoresPerNode float64 `json:"cpuMillicoresPerNode"`
}

// PerNode attaches u's per-node figures for nodes nodes.
func PerNode(u Usage, nodes int) *ProcessUsage {
	p := &ProcessUsage{Usage: u, Nodes: nodes}
	if nodes > 0 {
		p.RSSPerNodeBytes = float64(u.RSSPeakBytes) / float64(nodes)
		p.CPUMillicoresPerNode = 1000 * u.CPUCores / float64(nodes)
	}
	return p
}

// Latency summarizes a set of durations, in milliseconds.
type Latency struct {
	// Samples is the number of durations summarized.
	Samples int     `json:"samples"`
	P50Ms   float64 `json:"p50Ms"`
	P99Ms   float64 `json:"p99Ms"`
	MaxMs   float64 `json:"maxMs"`
}

// Summarize returns the nearest-rank p50, p99 and maximum of d (which it
// sorts), or nil when d is empty.
func Summarize(d []time.Duration) *Latency {
	if len(d) == 0 {
		return nil
	}
	slices.Sort(d)
	ms := func(x time.Duration) float64 { return float64(x) / float64(time.Millisecond) }
	return &Latency{Samples: len(d), P50Ms: ms(Percentile(d, 50)), P99Ms: ms(Percentile(d, 99)), MaxMs: ms(d[len(d)-1])}
}

// Percentile is the nearest-rank p-th percentile of sorted: the smallest
// value that at least p% of the values do not exceed. sorted must not be
// empty.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Churn is the pod workload of a scale's latency figures.
type Churn struct {
	// Pods is the number of pods created (and deleted afterwards).
	Pods int `json:"pods"`
	// PerSecond is the creation rate aimed at.
	PerSecond float64 `json:"perSecond"`
	// Seconds is how long the churn ran.
	Seconds float64 `json:"seconds"`
	// DispatchEarly is how many pods the edge committed before the
	// simulator knew them bound (its watch event, or the create call's
	// return for a pod created bound): their dispatch time counts as zero.
	DispatchEarly int `json:"dispatchEarly"`
	// DownBytesPerPod is the nodes' downstream link bytes (TLS records)
	// from the first create until every pod was Running and the statuses
	// settled, over the pods created: the pod itself, and anything sent
	// again after the edge's status writes.
	DownBytesPerPod float64 `json:"downBytesPerPod,omitempty"`
	// Error says why the churn did not finish (pods not Running or not
	// deleted in time); the latencies then cover the pods that made it.
	Error string `json:"error,omitempty"`
}

// Storm is a reconnect storm: the hub restarts and every node reconnects.
type Storm struct {
	// Nodes is the number of nodes that had to reconnect.
	Nodes int `json:"nodes"`
	// Seconds is the time from the hub accepting connections again until
	// every node was connected and resynced.
	Seconds float64 `json:"seconds"`
	// BytesSent is what the hub sent during the storm (frames, down), and
	// BytesReceived what it received (up).
	BytesSent     int64 `json:"bytesSent"`
	BytesReceived int64 `json:"bytesReceived"`
	// Resynced is how many nodes were resynced when the storm ended (equal
	// to Nodes unless the deadline passed).
	Resynced int `json:"resynced"`
	// LinkBytesSent and LinkBytesReceived are the IP bytes on the emulated
	// link from the hub's stop until every node resynced, down and up,
	// when the fleet ran behind one.
	LinkBytesSent     int64 `json:"linkBytesSent,omitempty"`
	LinkBytesReceived int64 `json:"linkBytesReceived,omitempty"`
}

// Bandwidth is traffic per node over a window of Seconds.
type Bandwidth struct {
	Seconds float64 `json:"seconds"`
	// UplinkBitsPerSecond is edge to cloud, DownlinkBitsPerSecond cloud to
	// edge, each per node.
	UplinkBitsPerSecond   float64 `json:"uplinkBitsPerSecond"`
	DownlinkBitsPerSecond float64 `json:"downlinkBitsPerSecond"`
	// Layer says what was counted: "tls" (TLS records as each node's
	// connection reads and writes them: websocket frames and TLS overhead)
	// or "ip" (IP packets on an emulated link: TCP and IP headers and
	// acknowledgements too).
	Layer string `json:"layer"`
}

// EdgecoreIdle is the real edgecore binary's memory, one node, connected
// and idle.
type EdgecoreIdle struct {
	RSSBytes int64 `json:"rssBytes"`
	// Runtime is the container runtime edgecore ran with.
	Runtime string `json:"runtime"`
	// SettleSeconds is how long after the node became Ready RSS was read.
	SettleSeconds float64 `json:"settleSeconds"`
	// Link is the node's traffic while idle, when it ran in a network
	// namespace of its own behind an emulated link (Layer "ip"), with the
	// link's one-way delay.
	Link        *Bandwidth `json:"link,omitempty"`
	LinkDelayMs float64    `json:"linkDelayMs,omitempty"`
}

// Twin holds the device twin figures.
type Twin struct {
	// UpdatesPerSecond is the twin update throughput end to end at the
	// edge (MQTT in, twin, store, MQTT out), 0 if not measured.
	UpdatesPerSecond float64 `json:"updatesPerSecond"`
	// EngineUpdatesPerSecond is the twin engine alone (no MQTT, no store),
	// 0 if not measured.
	EngineUpdatesPerSecond float64 `json:"engineUpdatesPerSecond,omitempty"`
	// DeviceToAPI is the lag from a device reporting a value to the API
	// server holding it; nil if not measured.
	DeviceToAPI *Latency `json:"deviceToAPI,omitempty"`
	// Source names what produced the figures (a Go benchmark or a scenario).
	Source string `json:"source"`
}

// DeviceLag is the lag from a device reporting a value to the API server
// holding it: Devices devices of one edge node (the edgecore binary, its
// embedded MQTT broker) each publish a twin/update, and a watch on the API
// server sees the value in the Device's status (edgecore saves and queues
// it, the link carries it, cloudcore writes the status, rate limited by
// its kubeQPS).
type DeviceLag struct {
	// Devices is the number of devices on the node.
	Devices int `json:"devices"`
	// ServedSeconds is the time from the first Device's creation in the
	// API server until the edge served all of them on MQTT.
	ServedSeconds float64 `json:"servedSeconds"`
	// Burst is every device reporting at once; Steady is reports at a
	// steady rate. Nil when the round did not run.
	Burst  *LagRound `json:"burst,omitempty"`
	Steady *LagRound `json:"steady,omitempty"`
}

// LagRound is one round of device reports, each device reporting at most
// once.
type LagRound struct {
	// Reports is the number of reports published, PerSecond the rate aimed
	// at (0: all at once) and PublishSeconds how long publishing took.
	Reports        int     `json:"reports"`
	PerSecond      float64 `json:"perSecond"`
	PublishSeconds float64 `json:"publishSeconds"`
	// Latency summarizes the lag of the reports that reached the API
	// server (its Samples); P90Ms is its 90th percentile.
	Latency
	P90Ms float64 `json:"p90Ms"`
	// Error says why the round ended before every report reached the API
	// server.
	Error string `json:"error,omitempty"`
}

// GoBenchmark is one line of `go test -bench` output.
type GoBenchmark struct {
	// Package is the import path the benchmark belongs to.
	Package string `json:"package"`
	// Name is the benchmark's name without the -GOMAXPROCS suffix.
	Name string `json:"name"`
	// Procs is the GOMAXPROCS suffix (0 if none).
	Procs      int   `json:"procs"`
	Iterations int64 `json:"iterations"`
	// Metrics maps each unit (ns/op, B/op, allocs/op and custom ones) to its
	// value.
	Metrics map[string]float64 `json:"metrics"`
}

// Write writes r as indented JSON to path.
func (r *Report) Write(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// Read reads a report written by Write. It refuses a report of another
// schema version and unknown fields.
func Read(r io.Reader) (*Report, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var rep Report
	if err := dec.Decode(&rep); err != nil {
		return nil, fmt.Errorf("decode report: %w", err)
	}
	if rep.Schema != SchemaVersion {
		return nil, fmt.Errorf("report schema %d: this code reads schema %d", rep.Schema, SchemaVersion)
	}
	return &rep, nil
}

// ReadFile reads the report at path.
func ReadFile(path string) (*Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(f)
}

// Scale returns the scale measured at nodes nodes, or nil.
func (r *Report) Scale(nodes int) *Scale {
	for i := range r.Scales {
		if r.Scales[i].Nodes == nodes {
			return &r.Scales[i]
		}
	}
	return nil
}

// AddScale adds s, keeping Scales sorted by node count. A second scale with
// the same node count is an error.
func (r *Report) AddScale(s Scale) error {
	if s.Nodes <= 0 {
		return fmt.Errorf("scale: nodes %d: want > 0", s.Nodes)
	}
	if r.Scale(s.Nodes) != nil {
		return fmt.Errorf("scale: %d nodes measured twice", s.Nodes)
	}
	r.Scales = append(r.Scales, s)
	slices.SortFunc(r.Scales, func(a, b Scale) int { return a.Nodes - b.Nodes })
	return nil
}

// SetUnavailable records why figure (its JSON name) of s was not obtained.
func (s *Scale) SetUnavailable(figure string, why error) {
	if s.Unavailable == nil {
		s.Unavailable = map[string]string{}
	}
	s.Unavailable[figure] = reason(why)
}

// SetUnavailable records why the top-level figure (its JSON name) was not
// obtained.
func (r *Report) SetUnavailable(figure string, why error) {
	if r.Unavailable == nil {
		r.Unavailable = map[string]string{}
	}
	r.Unavailable[figure] = reason(why)
}

func reason(err error) string {
	if err == nil {
		return "not measured"
	}
	return err.Error()
}

// ErrNotAvailable is the reason for a figure whose producer does not exist
// yet.
var ErrNotAvailable = errors.New("not available")
