package nodestats

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of /proc/stat's CPU times (USER_HZ, 100 on every
// Linux architecture edgecore runs on).
const userHZ = 100

// machine is what the node's kernel says of it.
type machine struct {
	// cpuNanos is the CPU time spent on everything but idle and iowait,
	// all CPUs together, in nanoseconds.
	cpuNanos uint64
	boot     time.Time
	// Memory, in bytes.
	memTotal, memFree, memAvailable, inactiveFile uint64
}

// workingSet is the memory in use less what the kernel reclaims first
// (inactive file pages), as the kubelet's node working set.
func (m machine) workingSet() uint64 {
	used := m.memTotal - min(m.memFree, m.memTotal)
	return used - min(m.inactiveFile, used)
}

// readMachine reads procDir's stat and meminfo.
func readMachine(procDir string) (machine, error) {
	var m machine
	b, err := os.ReadFile(filepath.Join(procDir, "stat"))
	if err != nil {
		return m, err
	}
	sawCPU := false
	for line := range bytes.Lines(b) {
		f := strings.Fields(string(line))
		switch {
		case len(f) >= 5 && f[0] == "cpu":
			// user nice system idle iowait irq softirq steal (guest and
			// guest_nice are in user and nice already).
			var ticks uint64
			for i, v := range f[1:min(len(f), 9)] {
				if i == 3 || i == 4 {
					continue // idle, iowait
				}
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return m, fmt.Errorf("%s/stat: cpu: %w", procDir, err)
				}
				ticks += n
			}
			m.cpuNanos = ticks * uint64(time.Second/userHZ)
			sawCPU = true
		case len(f) == 2 && f[0] == "btime":
			s, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return m, fmt.Errorf("%s/stat: btime: %w", procDir, err)
			}
			m.boot = time.Unix(s, 0)
		}
	}
	if !sawCPU {
		return m, fmt.Errorf("%s/stat: no cpu line", procDir)
	}
	f, err := os.Open(filepath.Join(procDir, "meminfo"))
	if err != nil {
		return m, err
	}
	defer f.Close()
	fields := map[string]*uint64{"MemTotal:": &m.memTotal, "MemFree:": &m.memFree, "MemAvailable:": &m.memAvailable,
		"Inactive(file):": &m.inactiveFile}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v := strings.Fields(sc.Text())
		if len(v) < 2 {
			continue
		}
		if p, ok := fields[v[0]]; ok {
			kb, err := strconv.ParseUint(v[1], 10, 64)
			if err != nil {
				return m, fmt.Errorf("%s/meminfo: %s %w", procDir, v[0], err)
			}
			*p = kb * 1024
		}
	}
	if m.memTotal == 0 {
		return m, fmt.Errorf("%s/meminfo: no MemTotal", procDir)
	}
	return m, sc.Err()
}

// fsUsage is a file system's size and use.
type fsUsage struct {
	capacity, available, used uint64
	inodes, inodesFree        uint64
}

func statFS(path string) (fsUsage, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return fsUsage{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := uint64(st.Bsize)
	return fsUsage{capacity: st.Blocks * bs, available: st.Bavail * bs, used: (st.Blocks - st.Bfree) * bs,
		inodes: st.Files, inodesFree: st.Ffree}, nil
}
