package main

import (
	"bytes"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tether-edge/tether/bench"
)

// The device lag goes into report.json, reads back the same, and has its
// line in the text, with the rounds' rate, percentiles and failures.
func TestDeviceLagReport(t *testing.T) {
	rep := &bench.Report{Schema: bench.SchemaVersion, Started: time.Unix(0, 0).UTC(), Finished: time.Unix(60, 0).UTC(),
		DeviceLag: &bench.DeviceLag{Devices: 1000, ServedSeconds: 12.5,
			Burst: &bench.LagRound{Reports: 1000, PublishSeconds: 0.2,
				Latency: bench.Latency{Samples: 1000, P50Ms: 3300, P99Ms: 8200, MaxMs: 8900}, P90Ms: 6100},
			Steady: &bench.LagRound{Reports: 1000, PerSecond: 50, PublishSeconds: 20,
				Latency: bench.Latency{Samples: 990, P50Ms: 662, P99Ms: 1350, MaxMs: 1500}, P90Ms: 900, Error: "timed out"},
		}}
	path := filepath.Join(t.TempDir(), "report.json")
	if err := rep.Write(path); err != nil {
		t.Fatal(err)
	}
	back, err := bench.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.DeviceLag, rep.DeviceLag) {
		t.Errorf("read back %+v, want %+v", back.DeviceLag, rep.DeviceLag)
	}
	var b bytes.Buffer
	if err := bench.WriteText(&b, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"device→API server lag, 1000 devices on the edgecore binary: all at once p50/p90/p99/max 3.30s / 6.10s / 8.20s / 8.90s; " +
			"steady 50/s p50/p90/p99/max 662ms / 900ms / 1.35s / 1.50s (990 of 1000)",
		"device lag round of 1000 reports did not finish: timed out",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
}
