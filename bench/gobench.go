package bench

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// GoBenchFailures returns the failure lines of `go test -bench` output:
// "FAIL <package>", "--- FAIL: <benchmark>" and panics (a benchmark past
// -timeout panics with "test timed out").
func GoBenchFailures(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "FAIL\t") || strings.HasPrefix(l, "FAIL ") || strings.HasPrefix(l, "--- FAIL") || strings.HasPrefix(l, "panic: ") {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

// ParseGoBenchmarks reads the output of `go test -bench` (any number of
// packages) and returns its result lines. Other lines are skipped; a line
// that starts like a result but does not parse is an error naming it.
func ParseGoBenchmarks(r io.Reader) ([]GoBenchmark, error) {
	var (
		out []GoBenchmark
		pkg string
		n   int
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		n++
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		f := strings.Fields(line)
		// A result: name, iterations, then value-unit pairs. A benchmark
		// that logs prints its name alone on a line first.
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		iters, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue // e.g. "BenchmarkX --- FAIL"
		}
		b := GoBenchmark{Package: pkg, Name: f[0], Iterations: iters, Metrics: map[string]float64{}}
		if i := strings.LastIndexByte(b.Name, '-'); i > 0 {
			if procs, err := strconv.Atoi(b.Name[i+1:]); err == nil {
				b.Name, b.Procs = b.Name[:i], procs
			}
		}
		for i := 2; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: %s: value %q: %w", n, f[0], f[i], err)
			}
			b.Metrics[f[i+1]] = v
		}
		out = append(out, b)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read benchmark output: %w", err)
	}
	return out, nil
}
