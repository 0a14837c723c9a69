package nodestatus

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Thresholds are the eviction thresholds the pressure conditions are
// computed against, as the kubelet's evictionHard.
type Thresholds struct {
	// MemoryAvailable: MemoryPressure when the memory available
	// (/proc/meminfo MemAvailable) is below it, in bytes (kubelet default
	// memory.available<100Mi).
	MemoryAvailable int64
	// NodeFSAvailablePercent: DiskPressure when the data directory's file
	// system has less than this percent of its blocks available
	// (nodefs.available<10%).
	NodeFSAvailablePercent int
	// ImageFSAvailablePercent: DiskPressure when the container runtime's
	// image file system has less than this percent available
	// (imagefs.available<15%).
	ImageFSAvailablePercent int
	// PIDAvailablePercent: PIDPressure when fewer than this percent of the
	// process IDs are free (pid.available<10%; the kubelet has no default).
	PIDAvailablePercent int
	// TransitionPeriod is how long a pressure condition stays True after
	// its signal went back under the threshold, so that it does not flap
	// (the kubelet's evictionPressureTransitionPeriod, 5m).
	TransitionPeriod time.Duration
}

// DefaultThresholds are the kubelet's defaults (and 10% of the PIDs).
func DefaultThresholds() Thresholds {
	return Thresholds{MemoryAvailable: 100 << 20, NodeFSAvailablePercent: 10, ImageFSAvailablePercent: 15,
		PIDAvailablePercent: 10, TransitionPeriod: 5 * time.Minute}
}

// FS is a file system's size and free space, in bytes; Total 0 means not
// measured.
type FS struct {
	Avail, Total uint64
}

// RuntimeCondition is one of the container runtime's conditions, as the CRI
// Status call reports them (RuntimeReady, NetworkReady).
type RuntimeCondition struct {
	Type    string
	Status  bool
	Reason  string
	Message string
}

// The CRI's required runtime conditions.
const (
	RuntimeReady = "RuntimeReady"
	NetworkReady = "NetworkReady"
)

// RuntimeSignal is what the container runtime answered to its status
// call.
type RuntimeSignal struct {
	// Down is why the runtime did not answer (empty: it answered). It
	// should not change from one failed call to the next (a gRPC code, not
	// a whole error), or every sample is a change.
	Down string
	// Conditions are the runtime's conditions when it answered.
	Conditions []RuntimeCondition
}

// Signals are what the sampler measured at one time. A zero field was not
// measured and puts no pressure.
type Signals struct {
	// Runtime is nil when there is no runtime to watch (the in-memory one).
	Runtime *RuntimeSignal
	// MemAvailable and MemTotal are /proc/meminfo's, in bytes.
	MemAvailable, MemTotal int64
	// NodeFS is the data directory's file system; ImageFS the runtime's
	// image file system (zero when it is not known or the same as NodeFS).
	NodeFS, ImageFS FS
	// PIDsUsed is the number of processes and threads, PIDsMax how many
	// there can be.
	PIDsUsed, PIDsMax int64
}

// Pressure says which signals are past their threshold now (without the
// transition period): what the reclaiming (image GC, eviction) acts on.
type Pressure struct {
	Memory, NodeFS, ImageFS, PID bool
}

// Any is whether any signal is past its threshold.
func (p Pressure) Any() bool { return p.Memory || p.NodeFS || p.ImageFS || p.PID }

// Disk is whether a file system is past its threshold.
func (p Pressure) Disk() bool { return p.NodeFS || p.ImageFS }

// Reasons of the conditions. Those of NotReady tell which signal.
const (
	ReasonReady                  = "EdgeReady"
	ReasonRuntimeDown            = "ContainerRuntimeDown"
	ReasonRuntimeNotReady        = "ContainerRuntimeNotReady"
	ReasonNetworkNotReady        = "NetworkNotReady"
	ReasonSufficientMemory       = "EdgeHasSufficientMemory"
	ReasonInsufficientMemory     = "EdgeHasInsufficientMemory"
	ReasonNoDiskPressure         = "EdgeHasNoDiskPressure"
	ReasonDiskPressure           = "EdgeHasDiskPressure"
	ReasonSufficientPID          = "EdgeHasSufficientPID"
	ReasonInsufficientPID        = "EdgeHasInsufficientPID"
	messageReady                 = "edgecore is posting ready status"
	messageRuntimeDownPrefix     = "container runtime is down: "
	messageRuntimeNotReadyPrefix = "container runtime not ready: "
	messageNetworkNotReadyPrefix = "container runtime network not ready: "
)

// conditionOrder is the order conditions are reported in, the kubelet's.
var conditionOrder = []corev1.NodeConditionType{corev1.NodeMemoryPressure, corev1.NodeDiskPressure,
	corev1.NodePIDPressure, corev1.NodeReady}

type condition struct {
	status          corev1.ConditionStatus
	reason, message string
	transition      time.Time
}

// Engine computes the node's conditions from signals, as the kubelet does:
// Ready from the runtime's answer and conditions, the pressure conditions
// from the thresholds, kept True for TransitionPeriod after the signal
// cleared. Transition times change only when a condition's status does.
// It does no IO and is not safe for concurrent use.
type Engine struct {
	th    Thresholds
	conds map[corev1.NodeConditionType]*condition
	// lastPressure is when each pressure signal was last past its
	// threshold.
	lastPressure map[corev1.NodeConditionType]time.Time
}

// NewEngine returns an engine with every condition unknown until the first
// Observe.
func NewEngine(th Thresholds) *Engine {
	return &Engine{th: th, conds: map[corev1.NodeConditionType]*condition{},
		lastPressure: map[corev1.NodeConditionType]time.Time{}}
}

// Output is the result of one observation.
type Output struct {
	// Conditions are the node's conditions, heartbeat set to the time
	// observed.
	Conditions []corev1.NodeCondition
	// Changed says a condition's status, reason or message changed (always
	// on the first observation): report the status now.
	Changed bool
	// Pressure is what is past its threshold now.
	Pressure Pressure
}

// Observe takes the signals measured at now and returns the conditions.
func (e *Engine) Observe(now time.Time, s Signals) Output {
	var out Output
	th := e.th
	out.Pressure.Memory = s.MemTotal > 0 && th.MemoryAvailable > 0 && s.MemAvailable < th.MemoryAvailable
	out.Pressure.NodeFS = below(s.NodeFS, th.NodeFSAvailablePercent)
	out.Pressure.ImageFS = below(s.ImageFS, th.ImageFSAvailablePercent)
	out.Pressure.PID = s.PIDsMax > 0 && th.PIDAvailablePercent > 0 &&
		(s.PIDsMax-s.PIDsUsed)*100 < int64(th.PIDAvailablePercent)*s.PIDsMax

	var changed bool
	set := func(t corev1.NodeConditionType, st corev1.ConditionStatus, reason, message string) {
		c := e.conds[t]
		switch {
		case c == nil:
			e.conds[t] = &condition{status: st, reason: reason, message: message, transition: now}
			changed = true
		case c.status != st:
			c.status, c.reason, c.message, c.transition = st, reason, message, now
			changed = true
		case c.reason != reason || c.message != message:
			c.reason, c.message = reason, message
			changed = true
		}
	}
	// pressure sets a pressure condition, True while the signal is past
	// its threshold and TransitionPeriod after.
	pressure := func(t corev1.NodeConditionType, past bool, falseReason, falseMsg, trueReason, trueMsg string) {
		if past {
			e.lastPressure[t] = now
		}
		last, seen := e.lastPressure[t]
		if past || seen && now.Sub(last) < th.TransitionPeriod {
			set(t, corev1.ConditionTrue, trueReason, trueMsg)
			return
		}
		set(t, corev1.ConditionFalse, falseReason, falseMsg)
	}
	pressure(corev1.NodeMemoryPressure, out.Pressure.Memory,
		ReasonSufficientMemory, "edgecore has sufficient memory available",
		ReasonInsufficientMemory, fmt.Sprintf("edgecore has insufficient memory available (memory.available<%s)",
			resource.NewQuantity(th.MemoryAvailable, resource.BinarySI)))
	pressure(corev1.NodeDiskPressure, out.Pressure.Disk(),
		ReasonNoDiskPressure, "edgecore has no disk pressure",
		ReasonDiskPressure, diskMessage(out.Pressure, th))
	pressure(corev1.NodePIDPressure, out.Pressure.PID,
		ReasonSufficientPID, "edgecore has sufficient PID available",
		ReasonInsufficientPID, fmt.Sprintf("edgecore has insufficient PID available (pid.available<%d%%)", th.PIDAvailablePercent))
	reason, message := readiness(s.Runtime)
	st := corev1.ConditionTrue
	if reason != ReasonReady {
		st = corev1.ConditionFalse
	}
	set(corev1.NodeReady, st, reason, message)

	out.Changed = changed
	out.Conditions = e.Conditions(now)
	return out
}

// Conditions returns the conditions of the last observation with heartbeat
// now, in the kubelet's order; none before the first.
func (e *Engine) Conditions(now time.Time) []corev1.NodeCondition {
	var conds []corev1.NodeCondition
	for _, t := range conditionOrder {
		c := e.conds[t]
		if c == nil {
			continue
		}
		conds = append(conds, corev1.NodeCondition{Type: t, Status: c.status, Reason: c.reason, Message: c.message,
			LastHeartbeatTime: metav1.NewTime(now), LastTransitionTime: metav1.NewTime(c.transition)})
	}
	return conds
}

// below reports whether fs has less than pct percent available.
func below(fs FS, pct int) bool {
	return fs.Total > 0 && pct > 0 && fs.Avail*100 < uint64(pct)*fs.Total
}

func diskMessage(p Pressure, th Thresholds) string {
	switch {
	case p.NodeFS && p.ImageFS:
		return fmt.Sprintf("edgecore has disk pressure (nodefs.available<%d%%, imagefs.available<%d%%)",
			th.NodeFSAvailablePercent, th.ImageFSAvailablePercent)
	case p.ImageFS:
		return fmt.Sprintf("edgecore has disk pressure (imagefs.available<%d%%)", th.ImageFSAvailablePercent)
	case p.NodeFS:
		return fmt.Sprintf("edgecore has disk pressure (nodefs.available<%d%%)", th.NodeFSAvailablePercent)
	}
	// Within the transition period: the message stays that of the
	// pressure, without saying which file system any longer.
	return "edgecore has disk pressure"
}

// readiness is the Ready condition's reason and message for the runtime's
// answer, in the kubelet's order: a runtime that does not answer, then its
// RuntimeReady, then its NetworkReady condition (a required condition it
// does not report counts as false).
func readiness(rs *RuntimeSignal) (reason, message string) {
	if rs == nil {
		return ReasonReady, messageReady
	}
	if rs.Down != "" {
		return ReasonRuntimeDown, messageRuntimeDownPrefix + rs.Down
	}
	for _, want := range []struct{ typ, reason, prefix string }{
		{RuntimeReady, ReasonRuntimeNotReady, messageRuntimeNotReadyPrefix},
		{NetworkReady, ReasonNetworkNotReady, messageNetworkNotReadyPrefix},
	} {
		var found *RuntimeCondition
		for i := range rs.Conditions {
			if rs.Conditions[i].Type == want.typ {
				found = &rs.Conditions[i]
			}
		}
		if found == nil {
			return want.reason, fmt.Sprintf("%s%s missing from the runtime's status", want.prefix, want.typ)
		}
		if !found.Status {
			return want.reason, fmt.Sprintf("%s%s=false reason:%s message:%s", want.prefix, want.typ, found.Reason, found.Message)
		}
	}
	return ReasonReady, messageReady
}
