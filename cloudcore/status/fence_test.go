package status

import (
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"

	k8stesting "k8s.io/client-go/testing"

	"github.com/tether-edge/tether/protocol"
)

func TestParseFence(t *testing.T) {
	for _, c := range []struct {
		in   string
		want protocol.StatusOrder
		ok   bool
	}{
		{"1:2", protocol.StatusOrder{Epoch: 1, Seq: 2}, true},
		{"0:0", protocol.StatusOrder{}, true},
		{formatFence(protocol.StatusOrder{Epoch: math.MaxUint64, Seq: math.MaxUint64}),
			protocol.StatusOrder{Epoch: math.MaxUint64, Seq: math.MaxUint64}, true},
		{"", protocol.StatusOrder{}, false},
		{"5", protocol.StatusOrder{}, false},
		{"1:2:3", protocol.StatusOrder{}, false},
		{"-1:2", protocol.StatusOrder{}, false},
		{"1:+2", protocol.StatusOrder{}, false},
		{" 1:2", protocol.StatusOrder{}, false},
		{"18446744073709551616:1", protocol.StatusOrder{}, false}, // 2^64
		{strings.Repeat("0", 40) + "1:1", protocol.StatusOrder{}, false},
		{strings.Repeat("9", 1<<16), protocol.StatusOrder{}, false},
	} {
		got, err := parseFence(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseFence(%.30q) = %+v, %v; want %+v, ok %v", c.in, got, err, c.want, c.ok)
		}
		if c.ok && formatFence(got) != c.in {
			t.Errorf("formatFence(%+v) = %q, want %q", got, formatFence(got), c.in)
		}
	}
}

func TestFencedPatch(t *testing.T) {
	b, err := fencedPatch([]byte(`{"metadata":{"uid":"u1"},"status":{"phase":"Running"}}`), "42", protocol.StatusOrder{Epoch: 7, Seq: 9})
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Metadata struct {
			UID             string            `json:"uid"`
			ResourceVersion string            `json:"resourceVersion"`
			Annotations     map[string]string `json:"annotations"`
		} `json:"metadata"`
		Status map[string]any `json:"status"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	if p.Metadata.UID != "u1" || p.Metadata.ResourceVersion != "42" || len(p.Metadata.Annotations) != 1 ||
		p.Metadata.Annotations[FenceAnnotation] != "7:9" || p.Status["phase"] != "Running" {
		t.Fatalf("fenced patch %s", b)
	}
}

// A report older than the one pending for the same pod is dropped at once
// (acknowledged, counted stale); a newer one replaces it. Written with the
// fake clientset: the API server's side is in fence_integration_test.go.
func TestFenceStalePending(t *testing.T) {
	p := pod("p1", "uid-1", edge1)
	w, client := newWriter(t, Config{}, p)
	at := func(seq uint64) protocol.StatusOrder { return protocol.StatusOrder{Epoch: 3, Seq: seq} }
	r5, r4, r6 := newResult(t), newResult(t), newResult(t)
	// All before any worker runs.
	w.PodStatus(edge1, at(5), podStatusMsg(t, p, running("5")), r5.done)
	w.PodStatus(edge1, at(4), podStatusMsg(t, p, running("4")), r4.done)
	if err := r4.wait(); err != nil {
		t.Fatalf("stale report: %v, want nil", err)
	}
	w.PodStatus(edge1, at(6), podStatusMsg(t, p, running("6")), r6.done)
	start(t, w)
	for _, r := range []*result{r5, r6} {
		if err := r.wait(); err != nil {
			t.Fatal(err)
		}
	}
	patches := actions(client, "patch", "pods")
	if len(patches) != 1 {
		t.Fatalf("%d patches, want 1", len(patches))
	}
	patch := string(patches[0].(k8stesting.PatchAction).GetPatch())
	if !strings.Contains(patch, `"6"`) || !strings.Contains(patch, `"3:6"`) || !strings.Contains(patch, `"resourceVersion"`) {
		t.Fatalf("patch %s: want status 6, its order and the resourceVersion precondition", patch)
	}
	if s := w.Stats(); s.Stale != 1 || s.Coalesced != 1 || s.PodStatuses != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// A Device's status is fenced by its reportOrder (the API server keeps a
// custom resource's metadata on a status write): replica A's late report,
// written over a cache that lags behind replica B's newer write, conflicts,
// is compared with the live Device, and dropped as stale; a repeat of the
// recorded report needs no write, another one moves the order alone.
func TestFenceDeviceStatus(t *testing.T) {
	w, devs := newDeviceWriter(t, Config{}, thermometer(), device("t1", "uid-1", edge1))
	start(t, w)
	at := func(seq uint64) protocol.StatusOrder { return protocol.StatusOrder{Epoch: 9, Seq: seq} }
	report := func(o protocol.StatusOrder, prev uint64, value string) error {
		t.Helper()
		r := newResult(t)
		w.DeviceStatus(edge1, o, &protocol.DeviceStatus{UID: "uid-1", Namespace: devNS, Name: "t1", State: "online", Prev: prev,
			Twins: []protocol.DeviceTwin{{Name: "temperature", Value: value}}}, r.done)
		return r.wait()
	}
	want := func(value, order string) {
		t.Helper()
		st := devs.server("t1").Status
		if len(st.Twins) != 1 || st.Twins[0].Reported.Value != value || st.ReportOrder != order {
			t.Fatalf("status %+v: want temperature %s, reportOrder %s", st, value, order)
		}
	}
	if err := report(at(5), 0, "5"); err != nil {
		t.Fatal(err)
	}
	want("5", "9:5")
	// B writes report 7; A's cache does not show it.
	devs.lag()
	devs.mu.Lock()
	d := devs.devices[devNS+"/t1"].DeepCopy()
	d.Status.Twins[0].Reported.Value, d.Status.ReportOrder = "7", "9:7"
	devs.rv++
	d.ResourceVersion = strconv.Itoa(devs.rv)
	devs.devices[devNS+"/t1"] = d
	devs.mu.Unlock()
	before := w.Stats()
	if err := report(at(6), 5, "6"); err != nil {
		t.Fatalf("stale report: %v, want it acknowledged", err)
	}
	want("7", "9:7")
	if s := w.Stats(); s.Stale != before.Stale+1 || s.DeviceStatuses != before.DeviceStatuses {
		t.Fatalf("stats %+v: want one stale report and no write", s)
	}
	devs.catchUp()
	// A repeat of the recorded report: nothing to write.
	n := devs.numPatches()
	if err := report(at(8), 7, "7"); err != nil {
		t.Fatal(err)
	}
	if devs.numPatches() != n {
		t.Fatalf("a repeat of the recorded report was written: %s", devs.lastPatch())
	}
	want("7", "9:7")
	// The same status after a report that is not the recorded one: the
	// order moves.
	if err := report(at(10), 9, "7"); err != nil {
		t.Fatal(err)
	}
	want("7", "9:10")
	if s := w.Stats(); s.FenceOnly != before.FenceOnly+1 {
		t.Fatalf("stats %+v: want a write of the order alone", s)
	}
}
