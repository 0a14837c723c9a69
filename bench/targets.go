package bench

import (
	"fmt"
)

// Status is a target's verdict.
type Status string

const (
	Met         Status = "met"
	Missed      Status = "missed"
	NotMeasured Status = "not measured"
)

// TargetResult is the verdict on one target.
type TargetResult struct {
	// Name is a stable identifier, Description says it in words.
	Name        string `json:"name"`
	Description string `json:"description"`
	// The target is met when Value < Limit; both are in Unit.
	Limit float64  `json:"limit"`
	Unit  string   `json:"unit"`
	Value *float64 `json:"value,omitempty"`
	// Nodes is the node count Value was measured at (0: not tied to one).
	Nodes  int    `json:"nodes,omitempty"`
	Status Status `json:"status"`
	// Note explains a missed or unmeasured target.
	Note string `json:"note,omitempty"`
}

// The targets of issue 5 on a 2-core machine.
const (
	TargetCloudcoreNodes    = 10000
	TargetCloudcoreRSSMiB   = 2048
	TargetDispatchNodes     = 1000
	TargetDispatchP99Ms     = 100
	TargetStormNodes        = 10000
	TargetStormSeconds      = 60
	TargetIdleUplinkKbps    = 0.1
	TargetEdgecoreIdleRSSMB = 25
)

// Evaluate sets r.Targets from r's figures. A target tied to a node count
// that the run did not reach is NotMeasured; its note gives the figure at
// the largest count that was run, for information only.
func Evaluate(r *Report) {
	r.Targets = []TargetResult{
		evalScale(r, TargetResult{
			Name:        "cloudcore-rss",
			Description: fmt.Sprintf("cloudcore RSS with %d nodes", TargetCloudcoreNodes),
			Limit:       TargetCloudcoreRSSMiB, Unit: "MiB", Nodes: TargetCloudcoreNodes,
		}, func(s *Scale) (float64, string) {
			peak := int64(-1)
			for _, u := range []*ProcessUsage{s.CloudcoreIdle, s.CloudcoreChurn} {
				if u != nil {
					peak = max(peak, u.RSSPeakBytes)
				}
			}
			if peak < 0 {
				return -1, why(s, "cloudcoreIdle", "cloudcoreChurn")
			}
			return float64(peak) / (1 << 20), ""
		}),
		evalScale(r, TargetResult{
			Name:        "dispatch-p99",
			Description: fmt.Sprintf("pod dispatch p99 at %d nodes", TargetDispatchNodes),
			Limit:       TargetDispatchP99Ms, Unit: "ms", Nodes: TargetDispatchNodes,
		}, func(s *Scale) (float64, string) {
			if s.Dispatch == nil {
				return -1, why(s, "dispatch")
			}
			return s.Dispatch.P99Ms, ""
		}),
		evalScale(r, TargetResult{
			Name:        "storm-resync",
			Description: fmt.Sprintf("%d-node reconnect storm resynced", TargetStormNodes),
			Limit:       TargetStormSeconds, Unit: "s", Nodes: TargetStormNodes,
		}, func(s *Scale) (float64, string) {
			if s.Storm == nil {
				return -1, why(s, "storm")
			}
			if s.Storm.Resynced < s.Storm.Nodes {
				return s.Storm.Seconds, fmt.Sprintf("only %d of %d nodes resynced", s.Storm.Resynced, s.Storm.Nodes)
			}
			return s.Storm.Seconds, ""
		}),
		evalIdleUplink(r),
		evalEdgecore(r),
	}
}

// evalScale judges a target tied to t.Nodes with value, which returns the
// figure (negative: none) and a note.
func evalScale(r *Report, t TargetResult, value func(*Scale) (float64, string)) TargetResult {
	s := r.Scale(t.Nodes)
	if s == nil {
		t.Status = NotMeasured
		t.Note = fmt.Sprintf("no run at %d nodes", t.Nodes)
		if n := len(r.Scales); n > 0 {
			largest := &r.Scales[n-1]
			if v, _ := value(largest); v >= 0 {
				t.Note += fmt.Sprintf("; %.4g %s at %d nodes", v, t.Unit, largest.Nodes)
			}
		}
		return t
	}
	v, note := value(s)
	if v < 0 {
		t.Status, t.Note = NotMeasured, note
		return t
	}
	t.Value = &v
	t.Note = note
	switch {
	case s.Connected < s.Nodes:
		t.Status = Missed
		t.Note = join(t.Note, fmt.Sprintf("only %d of %d nodes connected", s.Connected, s.Nodes))
	case note != "" || v >= t.Limit:
		t.Status = Missed
	default:
		t.Status = Met
	}
	return t
}

// evalIdleUplink judges the idle uplink at the IP layer when the edgecore
// binary ran behind an emulated link, else at the largest scale measured.
func evalIdleUplink(r *Report) TargetResult {
	t := TargetResult{
		Name:        "idle-uplink",
		Description: "idle uplink per node",
		Limit:       TargetIdleUplinkKbps, Unit: "kbit/s",
		Status: NotMeasured,
	}
	judge := func(b *Bandwidth, nodes int, note string) TargetResult {
		v := b.UplinkBitsPerSecond / 1000
		t.Value, t.Nodes = &v, nodes
		t.Note = fmt.Sprintf("counted at the %s layer%s", b.Layer, note)
		t.Status = Met
		if v >= t.Limit {
			t.Status = Missed
		}
		return t
	}
	if e := r.EdgecoreIdle; e != nil && e.Link != nil {
		return judge(e.Link, 0, ", edgecore binary behind an emulated link")
	}
	for i := len(r.Scales) - 1; i >= 0; i-- {
		if s := &r.Scales[i]; s.IdleLink != nil {
			return judge(s.IdleLink, s.Nodes, ", the fleet behind an emulated link")
		}
	}
	for i := len(r.Scales) - 1; i >= 0; i-- {
		if s := &r.Scales[i]; s.IdleBandwidth != nil {
			return judge(s.IdleBandwidth, s.Nodes, "")
		}
	}
	t.Note = "no scale measured idle bandwidth"
	return t
}

func evalEdgecore(r *Report) TargetResult {
	t := TargetResult{
		Name:        "edgecore-idle-rss",
		Description: "edgecore binary RSS, one node, idle",
		Limit:       TargetEdgecoreIdleRSSMB, Unit: "MB",
		Status: NotMeasured,
	}
	e := r.EdgecoreIdle
	if e == nil {
		t.Note = r.Unavailable["edgecoreIdle"]
		return t
	}
	v := float64(e.RSSBytes) / 1e6
	t.Value = &v
	t.Note = "runtime " + e.Runtime
	t.Status = Met
	if v >= t.Limit {
		t.Status = Missed
	}
	return t
}

// why returns the recorded reasons the given figures of s are missing.
func why(s *Scale, figures ...string) string {
	var note string
	for _, f := range figures {
		if w, ok := s.Unavailable[f]; ok {
			note = join(note, f+": "+w)
		}
	}
	if note == "" {
		note = "not measured"
	}
	return note
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
