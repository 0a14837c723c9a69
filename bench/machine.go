package bench

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// Machine is where a run took place and what code it ran.
type Machine struct {
	// Cores is the number of CPUs the Go runtime sees.
	Cores int `json:"cores"`
	// CPUModel is the first "model name" of /proc/cpuinfo.
	CPUModel string `json:"cpuModel,omitempty"`
	// MemoryBytes is MemTotal of /proc/meminfo.
	MemoryBytes int64 `json:"memoryBytes,omitempty"`
	// Kernel is /proc/sys/kernel/osrelease.
	Kernel string `json:"kernel,omitempty"`
	// GoVersion is the Go release that built the suite.
	GoVersion string `json:"goVersion"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	// GitCommit is the commit of the work tree the suite ran in (empty when
	// git could not tell) and GitDirty whether tracked files differed
	// from it.
	GitCommit string `json:"gitCommit,omitempty"`
	GitDirty  bool   `json:"gitDirty,omitempty"`
}

// ThisMachine describes the machine the caller runs on; dir is a directory of
// the git work tree (empty: the current directory). Facts it cannot read are
// left empty.
func ThisMachine(ctx context.Context, dir string) Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.CPUModel = procField(b, "model name")
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(procField(b, "MemTotal")); len(f) == 2 && f[1] == "kB" {
			if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				m.MemoryBytes = kb << 10
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	if c, err := git("rev-parse", "HEAD"); err == nil {
		m.GitCommit = c
		if st, err := git("status", "--porcelain", "--untracked-files=no"); err == nil {
			m.GitDirty = st != ""
		}
	}
	return m
}

// procField returns the value of the first "name: value" line of a /proc
// file, trimmed.
func procField(b []byte, name string) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
