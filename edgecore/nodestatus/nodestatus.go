// Package nodestatus describes the edge machine as a Kubernetes NodeStatus:
// capacity, addresses, system info and conditions, read from the machine.
//
// The conditions are computed as the kubelet computes them, by a pure
// Engine (signals and time in, conditions out) driven by a Monitor that
// measures the signals: Ready is False while the container runtime does not
// answer its CRI Status call or reports RuntimeReady or NetworkReady false;
// MemoryPressure, DiskPressure (the data directory's and the image file
// system) and PIDPressure compare /proc/meminfo, statfs and the task count
// with Thresholds (the kubelet's evictionHard defaults). Under pressure the
// Monitor asks a Reclaimer to free space (image garbage collection).
package nodestatus

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KubeletPort is the kubelet endpoint the node reports (protocol.KubeletPort).
const KubeletPort = 10250

// KubeletVersion is what the node reports as its kubelet version.
const KubeletVersion = "v1.31.4-tether"

// Source builds the node's status.
type Source struct {
	// NodeName is the node's name, reported as its hostname address.
	NodeName string
	// InternalIP is reported as the node's address; empty means the first
	// non-loopback IPv4 address of the machine.
	InternalIP string
	// MaxPods is the pod capacity.
	MaxPods int
	// DataDir is where ephemeral storage is measured.
	DataDir string
	// RuntimeVersion is the container runtime, as "name://version".
	RuntimeVersion string
	// Conditions, if set, returns the node's conditions with heartbeat now
	// (Monitor.Conditions); when unset or before its first sample the
	// node reports itself Ready with no pressure.
	Conditions func(now time.Time) []corev1.NodeCondition
	// Now is the clock (default time.Now).
	Now func() time.Time

	startOnce sync.Once
	// start is the transition time of the default conditions.
	start metav1.Time
}

// Status returns the node status now, with every condition's heartbeat set
// to now.
func (s *Source) Status() *corev1.NodeStatus {
	now := metav1.NewTime(time.Now())
	if s.Now != nil {
		now = metav1.NewTime(s.Now())
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(goruntime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(memTotal(), resource.BinarySI),
		corev1.ResourcePods:   *resource.NewQuantity(int64(s.MaxPods), resource.DecimalSI),
	}
	if n := diskTotal(s.DataDir); n > 0 {
		capacity[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(n, resource.BinarySI)
	}
	s.startOnce.Do(func() { s.start = now })
	cond := func(t corev1.NodeConditionType, st corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: st, Reason: reason, Message: msg,
			LastHeartbeatTime: now, LastTransitionTime: s.start}
	}
	var conds []corev1.NodeCondition
	if s.Conditions != nil {
		conds = s.Conditions(now.Time)
	}
	if conds == nil {
		conds = []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, ReasonSufficientMemory, "edgecore has sufficient memory available"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, ReasonNoDiskPressure, "edgecore has no disk pressure"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, ReasonSufficientPID, "edgecore has sufficient PID available"),
			cond(corev1.NodeReady, corev1.ConditionTrue, ReasonReady, messageReady),
		}
	}
	ip := s.InternalIP
	if ip == "" {
		ip = FirstIPv4()
	}
	addrs := []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: s.NodeName}}
	if ip != "" {
		addrs = append([]corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}, addrs...)
	}
	return &corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity.DeepCopy(),
		Conditions:  conds,
		Addresses:   addrs,
		// The API server asks its egress proxy (cloudcore) for
		// <node name>:<this port>; nothing listens on it at the edge.
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: KubeletPort}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID:               readTrim("/etc/machine-id"),
			SystemUUID:              readTrim("/sys/class/dmi/id/product_uuid"),
			BootID:                  readTrim("/proc/sys/kernel/random/boot_id"),
			KernelVersion:           readTrim("/proc/sys/kernel/osrelease"),
			OSImage:                 osImage(),
			ContainerRuntimeVersion: s.RuntimeVersion,
			KubeletVersion:          KubeletVersion,
			// KubeProxyVersion stays empty: no kube-proxy runs (the
			// field is deprecated, as in the kubelet since 1.31).
			OperatingSystem: goruntime.GOOS,
			Architecture:    goruntime.GOARCH,
		},
	}
}

// FirstIPv4 returns the first non-loopback IPv4 address of the machine, or "".
func FirstIPv4() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}

func osImage() string {
	f, err := os.Open("/etc/os-release")
	if err != nil {
		return "Linux"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "Linux"
}

func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func diskTotal(dir string) int64 {
	if dir == "" {
		return 0
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Blocks) * int64(st.Bsize)
}

// String is for logs.
func (s *Source) String() string { return fmt.Sprintf("node %s", s.NodeName) }
