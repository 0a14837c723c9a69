package main

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/tether-edge/tether/simulator"
)

// TestMain makes the test binary a joined simulator process when the
// suite under test starts one (it runs os.Executable()).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == joinedCommand {
		if err := runJoined(os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestShare(t *testing.T) {
	for _, tc := range []struct {
		n, per int
		want   []int
	}{
		{100, 50, []int{50, 50}},
		{10000, 9900, []int{9900, 100}},
		{120, 50, []int{50, 50, 20}},
		{30, 50, []int{30}},
		{50, 50, []int{50}},
	} {
		if got := processes(tc.n, tc.per); got != len(tc.want) {
			t.Errorf("processes(%d, %d) = %d, want %d", tc.n, tc.per, got, len(tc.want))
		}
		sum := 0
		for i, w := range tc.want {
			if got := share(tc.n, tc.per, i); got != w {
				t.Errorf("share(%d, %d, %d) = %d, want %d", tc.n, tc.per, i, got, w)
			}
			sum += w
		}
		if sum != tc.n || share(tc.n, tc.per, len(tc.want)) != 0 {
			t.Errorf("%d nodes, %d a process: shares %v", tc.n, tc.per, tc.want)
		}
	}
}

// fakePart is a part with set answers; it records what it was asked.
type fakePart struct {
	nodes, enrolled int
	enrollTook      time.Duration
	connect         simulator.ConnectResult
	bw              simulator.Bandwidth
	storm           simulator.Storm
	err             error
}

func (f *fakePart) enroll(_ context.Context, n int) (simulator.Enrollment, error) {
	e := simulator.Enrollment{Nodes: n - f.enrolled, Took: f.enrollTook}
	f.enrolled = n
	return e, nil
}
func (f *fakePart) grow(_ context.Context, n int, _ float64) error { f.nodes = n; return nil }
func (f *fakePart) waitConnected(context.Context, time.Duration) (simulator.ConnectResult, error) {
	return f.connect, f.err
}
func (f *fakePart) idle(context.Context, time.Duration) (simulator.Bandwidth, error) {
	return f.bw, f.err
}
func (f *fakePart) waitResynced(context.Context, time.Duration) (simulator.Storm, error) {
	return f.storm, f.err
}

// The fleet grows part by part, starting joined parts when a count needs
// them, and adds the parts' figures up.
func TestFleetJoinsParts(t *testing.T) {
	local := &fakePart{}
	var joined []*fakePart
	fl := &fleet{parts: []part{local}, perProcess: 50}
	fl.addPart = func(context.Context, int) (part, error) {
		p := &fakePart{enrollTook: time.Second}
		joined = append(joined, p)
		return p, nil
	}
	ctx := t.Context()
	local.enrollTook = time.Second
	if e, err := fl.enroll(ctx, 30); err != nil || e.Nodes != 30 || e.Took != time.Second || len(joined) != 0 {
		t.Fatalf("30 nodes enrolled: %+v %v, %d joined", e, err, len(joined))
	}
	if err := fl.grow(ctx, 30, 100); err != nil || local.nodes != 30 || len(joined) != 0 {
		t.Fatalf("30 nodes: %v, local %d, %d joined", err, local.nodes, len(joined))
	}
	// The parts enroll one after the other: their times add up.
	e, err := fl.enroll(ctx, 100)
	if err != nil || e.Nodes != 70 || e.Took != 2*time.Second || len(joined) != 1 || joined[0].enrolled != 50 {
		t.Fatalf("100 nodes enrolled: %+v %v, %d joined", e, err, len(joined))
	}
	if err := fl.grow(ctx, 100, 100); err != nil || local.nodes != 50 || len(joined) != 1 || joined[0].nodes != 50 {
		t.Fatalf("100 nodes: %v, local %d, %d joined", err, local.nodes, len(joined))
	}

	local.connect = simulator.ConnectResult{Nodes: 50, Connected: 50, Registered: 50, ConnectTime: 2 * time.Second}
	joined[0].connect = simulator.ConnectResult{Nodes: 50, Connected: 49, Registered: 50, ConnectTime: 3 * time.Second}
	joined[0].err = errors.New("one node late")
	r, err := fl.waitConnected(ctx, time.Minute)
	if err == nil || r.Nodes != 100 || r.Connected != 99 || r.Registered != 100 || r.ConnectTime != 3*time.Second {
		t.Errorf("connected %+v %v", r, err)
	}
	joined[0].err = nil

	local.bw = simulator.Bandwidth{Nodes: 50, Window: time.Minute, UpBitsPerSecond: 100, DownBitsPerSecond: 10}
	joined[0].bw = simulator.Bandwidth{Nodes: 25, Window: time.Minute, UpBitsPerSecond: 400, DownBitsPerSecond: 40}
	if b, err := fl.idle(ctx, time.Minute); err != nil || b.Nodes != 75 || b.UpBitsPerSecond != 200 || b.DownBitsPerSecond != 20 {
		t.Errorf("idle %+v %v, want 75 nodes, 200 up, 20 down", b, err)
	}

	t0 := time.Now()
	local.storm = simulator.Storm{Nodes: 50, Resynced: 50, Down: 2 * time.Second, Back: t0.Add(2 * time.Second),
		End: t0.Add(5 * time.Second), WireUp: 10, WireDown: 100}
	joined[0].storm = simulator.Storm{Nodes: 50, Resynced: 48, Down: 3 * time.Second, Back: t0.Add(1900 * time.Millisecond),
		End: t0.Add(7 * time.Second), WireUp: 20, WireDown: 200}
	st, err := fl.waitResynced(ctx, time.Minute)
	if err != nil || st.Nodes != 100 || st.Resynced != 98 || st.WireUp != 30 || st.WireDown != 300 {
		t.Errorf("storm %+v %v", st, err)
	}
	if !st.Back.Equal(t0.Add(1900*time.Millisecond)) || st.Took != 5100*time.Millisecond || st.Down != 1900*time.Millisecond {
		t.Errorf("storm back %s took %s down %s; want from the first node back anywhere to the last end", st.Back.Sub(t0), st.Took, st.Down)
	}
}
