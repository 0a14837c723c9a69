package nodestatus

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

const gi = 1 << 30

// healthy are the signals of a node with nothing short and a ready runtime.
func healthy() Signals {
	return Signals{
		Runtime:      &RuntimeSignal{Conditions: []RuntimeCondition{{Type: RuntimeReady, Status: true}, {Type: NetworkReady, Status: true}}},
		MemAvailable: 2 * gi, MemTotal: 4 * gi,
		NodeFS: FS{Avail: 50 * gi, Total: 100 * gi}, ImageFS: FS{Avail: 50 * gi, Total: 100 * gi},
		PIDsUsed: 500, PIDsMax: 32768,
	}
}

func status(out Output, t corev1.NodeConditionType) corev1.NodeCondition {
	for _, c := range out.Conditions {
		if c.Type == t {
			return c
		}
	}
	return corev1.NodeCondition{}
}

func TestEngineConditions(t *testing.T) {
	type want struct {
		status corev1.ConditionStatus
		reason string
		msg    string // a part of the message
	}
	cases := []struct {
		name     string
		edit     func(*Signals)
		cond     corev1.NodeConditionType
		want     want
		pressure Pressure
	}{
		{"healthy: ready", func(*Signals) {}, corev1.NodeReady, want{"True", ReasonReady, "ready"}, Pressure{}},
		{"healthy: no disk pressure", func(*Signals) {}, corev1.NodeDiskPressure, want{"False", ReasonNoDiskPressure, ""}, Pressure{}},
		{"no runtime to watch: ready", func(s *Signals) { s.Runtime = nil }, corev1.NodeReady, want{"True", ReasonReady, ""}, Pressure{}},
		{"runtime does not answer", func(s *Signals) { s.Runtime = &RuntimeSignal{Down: "CRI status: Unavailable"} },
			corev1.NodeReady, want{"False", ReasonRuntimeDown, "container runtime is down: CRI status: Unavailable"}, Pressure{}},
		{"runtime not ready", func(s *Signals) {
			s.Runtime.Conditions[0] = RuntimeCondition{Type: RuntimeReady, Reason: "Starting", Message: "plugins loading"}
		}, corev1.NodeReady, want{"False", ReasonRuntimeNotReady, "RuntimeReady=false reason:Starting message:plugins loading"}, Pressure{}},
		{"network not ready", func(s *Signals) {
			s.Runtime.Conditions[1] = RuntimeCondition{Type: NetworkReady, Reason: "NetworkPluginNotReady", Message: "cni plugin not initialized"}
		}, corev1.NodeReady, want{"False", ReasonNetworkNotReady, "NetworkReady=false reason:NetworkPluginNotReady"}, Pressure{}},
		{"runtime and network not ready: runtime first", func(s *Signals) {
			s.Runtime.Conditions[0].Status, s.Runtime.Conditions[1].Status = false, false
		}, corev1.NodeReady, want{"False", ReasonRuntimeNotReady, ""}, Pressure{}},
		{"network condition missing", func(s *Signals) { s.Runtime.Conditions = s.Runtime.Conditions[:1] },
			corev1.NodeReady, want{"False", ReasonNetworkNotReady, "NetworkReady missing"}, Pressure{}},
		{"memory at the threshold: no pressure", func(s *Signals) { s.MemAvailable = 100 << 20 },
			corev1.NodeMemoryPressure, want{"False", ReasonSufficientMemory, ""}, Pressure{}},
		{"memory below 100Mi", func(s *Signals) { s.MemAvailable = 100<<20 - 1 },
			corev1.NodeMemoryPressure, want{"True", ReasonInsufficientMemory, "memory.available<100Mi"}, Pressure{Memory: true}},
		{"memory unknown: no pressure", func(s *Signals) { s.MemAvailable, s.MemTotal = 0, 0 },
			corev1.NodeMemoryPressure, want{"False", ReasonSufficientMemory, ""}, Pressure{}},
		{"nodefs 10% free: no pressure", func(s *Signals) { s.NodeFS.Avail = 10 * gi },
			corev1.NodeDiskPressure, want{"False", ReasonNoDiskPressure, ""}, Pressure{}},
		{"nodefs under 10%", func(s *Signals) { s.NodeFS.Avail = 10*gi - 1 },
			corev1.NodeDiskPressure, want{"True", ReasonDiskPressure, "nodefs.available<10%"}, Pressure{NodeFS: true}},
		{"imagefs under 15%", func(s *Signals) { s.ImageFS.Avail = 14 * gi },
			corev1.NodeDiskPressure, want{"True", ReasonDiskPressure, "imagefs.available<15%"}, Pressure{ImageFS: true}},
		{"both file systems", func(s *Signals) { s.ImageFS.Avail, s.NodeFS.Avail = 0, 0 },
			corev1.NodeDiskPressure, want{"True", ReasonDiskPressure, "nodefs.available<10%, imagefs.available<15%"}, Pressure{NodeFS: true, ImageFS: true}},
		{"imagefs unknown", func(s *Signals) { s.ImageFS = FS{} },
			corev1.NodeDiskPressure, want{"False", ReasonNoDiskPressure, ""}, Pressure{}},
		{"pids under 10% free", func(s *Signals) { s.PIDsUsed = 30000 },
			corev1.NodePIDPressure, want{"True", ReasonInsufficientPID, "pid.available<10%"}, Pressure{PID: true}},
		{"disk full does not make the node NotReady", func(s *Signals) { s.NodeFS.Avail = 0 },
			corev1.NodeReady, want{"True", ReasonReady, ""}, Pressure{NodeFS: true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := healthy()
			c.edit(&s)
			out := NewEngine(DefaultThresholds()).Observe(time.Unix(1000, 0), s)
			got := status(out, c.cond)
			if got.Status != c.want.status || got.Reason != c.want.reason || !strings.Contains(got.Message, c.want.msg) {
				t.Errorf("%s = %s %s %q, want %s %s ~%q", c.cond, got.Status, got.Reason, got.Message, c.want.status, c.want.reason, c.want.msg)
			}
			if out.Pressure != c.pressure {
				t.Errorf("pressure %+v, want %+v", out.Pressure, c.pressure)
			}
			if !out.Changed || len(out.Conditions) != 4 {
				t.Errorf("first observation: changed %v, %d conditions", out.Changed, len(out.Conditions))
			}
		})
	}
}

// TestEngineTransitions: transition times move only with a status; a
// pressure stays TransitionPeriod after its signal cleared; Changed says
// when to report.
func TestEngineTransitions(t *testing.T) {
	th := DefaultThresholds()
	th.TransitionPeriod = time.Minute
	e := NewEngine(th)
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	down := healthy()
	down.Runtime = &RuntimeSignal{Down: "CRI status: Unavailable"}
	full := healthy()
	full.NodeFS.Avail = 0

	steps := []struct {
		at      time.Duration
		s       Signals
		changed bool
		ready   corev1.ConditionStatus
		readyTr time.Duration
		disk    corev1.ConditionStatus
		diskTr  time.Duration
	}{
		{0, healthy(), true, "True", 0, "False", 0},
		{5 * time.Second, healthy(), false, "True", 0, "False", 0},
		{10 * time.Second, down, true, "False", 10 * time.Second, "False", 0},
		{15 * time.Second, down, false, "False", 10 * time.Second, "False", 0},
		{20 * time.Second, healthy(), true, "True", 20 * time.Second, "False", 0},
		{25 * time.Second, full, true, "True", 20 * time.Second, "True", 25 * time.Second},
		{30 * time.Second, full, false, "True", 20 * time.Second, "True", 25 * time.Second},
		// Cleared, but within the transition period: still True, the
		// message no longer naming the file system.
		{35 * time.Second, healthy(), true, "True", 20 * time.Second, "True", 25 * time.Second},
		{89 * time.Second, healthy(), false, "True", 20 * time.Second, "True", 25 * time.Second},
		{90 * time.Second, healthy(), true, "True", 20 * time.Second, "False", 90 * time.Second},
	}
	for i, st := range steps {
		out := e.Observe(at(st.at), st.s)
		r, d := status(out, corev1.NodeReady), status(out, corev1.NodeDiskPressure)
		if out.Changed != st.changed || r.Status != st.ready || !r.LastTransitionTime.Time.Equal(at(st.readyTr)) ||
			d.Status != st.disk || !d.LastTransitionTime.Time.Equal(at(st.diskTr)) {
			t.Errorf("step %d (+%s): changed %v, Ready %s since %s, DiskPressure %s since %s; want %v, %s since +%s, %s since +%s",
				i, st.at, out.Changed, r.Status, r.LastTransitionTime.Sub(t0), d.Status, d.LastTransitionTime.Sub(t0),
				st.changed, st.ready, st.readyTr, st.disk, st.diskTr)
		}
		if !r.LastHeartbeatTime.Time.Equal(at(st.at)) {
			t.Errorf("step %d: heartbeat %s", i, r.LastHeartbeatTime)
		}
	}
}

func TestReadSignals(t *testing.T) {
	avail, total, err := ReadMemory("/proc/meminfo")
	if err != nil || total <= 0 || avail <= 0 || avail > total {
		t.Errorf("ReadMemory: %d of %d, %v", avail, total, err)
	}
	used, max, err := ReadPIDs("/proc")
	if err != nil || used <= 0 || max < used {
		t.Errorf("ReadPIDs: %d of %d, %v", used, max, err)
	}
	fs, dev, err := Statfs(t.TempDir())
	if err != nil || fs.Total == 0 || fs.Avail > fs.Total || dev == 0 {
		t.Errorf("Statfs: %+v dev %d, %v", fs, dev, err)
	}
	// Malformed files are errors, not zero pressure made up.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "meminfo"), []byte("MemTotal: x kB\n"), 0o600)
	if _, _, err := ReadMemory(filepath.Join(dir, "meminfo")); err == nil {
		t.Error("ReadMemory of a bad file: no error")
	}
	os.WriteFile(filepath.Join(dir, "loadavg"), []byte("0.1 0.2\n"), 0o600)
	if _, _, err := ReadPIDs(dir); err == nil {
		t.Error("ReadPIDs of a bad file: no error")
	}
}

func TestSourceReportsNoKubeProxy(t *testing.T) {
	s := &Source{NodeName: "n1", MaxPods: 10}
	st := s.Status()
	if st.NodeInfo.KubeProxyVersion != "" {
		t.Errorf("KubeProxyVersion %q, want none", st.NodeInfo.KubeProxyVersion)
	}
	tr := st.Conditions[0].LastTransitionTime
	if st2 := s.Status(); !st2.Conditions[0].LastTransitionTime.Equal(&tr) {
		t.Errorf("default conditions' transition time moved: %s then %s", tr, st2.Conditions[0].LastTransitionTime)
	}
}
