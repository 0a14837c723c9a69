package edgecore

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tether-edge/tether/edgecore/metaserver"
	"github.com/tether-edge/tether/edgecore/runtime/fake"
)

// TestMetrics scrapes edgecore's /metrics on its metaserver as a
// Prometheus agent on the box would (the metrics client's token): the
// names pass promlint and start with tether_edge_, and the values follow
// the node: offline, a pod's status waits in the outbox and ages.
func TestMetrics(t *testing.T) {
	dir := t.TempDir()
	storeWebPod(t, filepath.Join(dir, "edge.db"))
	ec, err := New(Config{NodeName: "edge-1", Cloud: unreachableCloud(), DataDir: dir, StaticPodPath: NoStaticPods,
		RuntimeImpl: fake.New("10.0.0.1"), PodResyncInterval: metav1.Duration{Duration: 200 * time.Millisecond},
		MetaServer: MetaServerConfig{Addr: "127.0.0.1:0"},
		Devices:    DevicesConfig{MQTT: MQTTConfig{Addr: "127.0.0.1:0"}},
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- ec.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
		ec.Close()
	})
	<-ec.MetaServer.Ready()
	tok, err := os.ReadFile(metaserver.TokenFile(ec.CredentialsDir(), metaserver.MetricsClient))
	if err != nil {
		t.Fatal(err)
	}
	scrape := func() (string, map[string]float64) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ec.MetaServer.Addr()+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
		}
		families, err := new(expfmt.TextParser).TextToMetricFamilies(strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		vals := map[string]float64{}
		for name, f := range families {
			for _, m := range f.Metric {
				switch {
				case m.Gauge != nil:
					vals[name] = m.Gauge.GetValue()
				case m.Counter != nil:
					vals[name] = m.Counter.GetValue()
				case m.Histogram != nil:
					for _, l := range m.Label {
						vals[name+"_count/"+l.GetValue()] = float64(m.Histogram.GetSampleCount())
					}
				}
			}
		}
		return string(body), vals
	}
	poll(t, "the pod's status queued", func() bool { _, v := scrape(); return v["tether_edge_outbox_messages"] >= 1 })
	time.Sleep(1100 * time.Millisecond)
	body, v := scrape()
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "tether_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
	for name, want := range map[string]func(float64) bool{
		"tether_edge_link_up":                   func(x float64) bool { return x == 0 }, // the cloud is unreachable
		"tether_edge_outbox_messages":           func(x float64) bool { return x >= 1 },
		"tether_edge_outbox_oldest_age_seconds": func(x float64) bool { return x >= 1 },
		"tether_edge_store_size_bytes":          func(x float64) bool { return x > 0 },
		"tether_edge_twin_updates_total":        func(x float64) bool { return x == 0 },
		"tether_edge_metrics_errors_total":      func(x float64) bool { return x == 0 },
		// The pod was synced (its status is what waits in the outbox).
		"tether_edge_pod_sync_duration_seconds_count/sync": func(x float64) bool { return x >= 1 },
		"tether_edge_pod_sync_duration_seconds_count/kill": func(x float64) bool { return x == 0 },
	} {
		if x, ok := v[name]; !ok || !want(x) {
			t.Errorf("%s = %v (present %v)", name, x, ok)
		}
	}
	for name := range v {
		if !strings.HasPrefix(name, "tether_edge_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			t.Errorf("metric %s: not tether_edge_", name)
		}
	}
	t.Logf("outbox %v messages, oldest %.1fs, store %v bytes", v["tether_edge_outbox_messages"],
		v["tether_edge_outbox_oldest_age_seconds"], v["tether_edge_store_size_bytes"])
}
