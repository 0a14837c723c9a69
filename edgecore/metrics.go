package edgecore

import (
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tether-edge/tether/edgecore/store"
	"github.com/tether-edge/tether/histogram"
)

// The metrics edgecore exports (Metrics), served by the metaserver at
// /metrics to its node and metrics clients (bearer tokens in the
// credentials directory). Read from the components at scrape time.
var (
	mLinkUp       = prometheus.NewDesc("tether_edge_link_up", "1 while the node has a session with the hub.", nil, nil)
	mSessions     = prometheus.NewDesc("tether_edge_sessions_total", "Sessions opened with the hub since start (reconnects).", nil, nil)
	mObjFrames    = prometheus.NewDesc("tether_edge_object_frames_total", "Upserts and deletes received from the hub.", nil, nil)
	mResyncUps    = prometheus.NewDesc("tether_edge_last_resync_messages", "Upserts and deletes of the last resync.", nil, nil)
	mOutbox       = prometheus.NewDesc("tether_edge_outbox_messages", "Upstream messages queued until the hub acknowledges them.", nil, nil)
	mOutboxOldest = prometheus.NewDesc("tether_edge_outbox_oldest_age_seconds", "Age of the oldest queued upstream message (0 when the outbox is empty).", nil, nil)
	mStoreBytes   = prometheus.NewDesc("tether_edge_store_size_bytes", "Size of the node's store file.", nil, nil)
	mTwinUpdates  = prometheus.NewDesc("tether_edge_twin_updates_total", "Twin update messages devices published.", nil, nil)
	mCertExpiry   = prometheus.NewDesc("tether_edge_client_certificate_expiry_timestamp_seconds", "When the node's client certificate expires (Unix time).", nil, nil)
	mScrapeErrors = prometheus.NewDesc("tether_edge_metrics_errors_total", "Reads of the store that failed while metrics were collected.", nil, nil)
	mPodSync      = prometheus.NewDesc("tether_edge_pod_sync_duration_seconds", "How long the container runtime took to sync a pod (operation sync) or to kill one (operation kill).", []string{"operation"}, nil)
)

type edgeCollector struct {
	ec *EdgeCore
	// errors counts failed reads of the store (scrapes may run at once).
	errors atomic.Int64
}

func (c *edgeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mLinkUp, mSessions, mObjFrames, mResyncUps, mOutbox, mOutboxOldest,
		mStoreBytes, mTwinUpdates, mCertExpiry, mScrapeErrors, mPodSync} {
		ch <- d
	}
}

func (c *edgeCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	ec := c.ec
	st := ec.Agent.State()
	up := 0.0
	if st.Connected {
		up = 1
	}
	gauge(mLinkUp, up)
	counter(mSessions, int64(st.Sessions))
	counter(mObjFrames, int64(st.ObjectFrames))
	if r := st.LastResync; r != nil {
		gauge(mResyncUps, float64(r.Upserts+r.Deletes))
	}
	var (
		n      int
		oldest time.Time
		ok     bool
	)
	err := ec.DB.View(func(tx *store.Tx) (err error) {
		n = tx.OutboxLen()
		oldest, ok, err = tx.OutboxOldest()
		return err
	})
	if err != nil {
		c.errors.Add(1)
		ec.cfg.Logger.Warn("metrics: read the outbox", slog.Any("err", err))
	}
	gauge(mOutbox, float64(n))
	age := 0.0
	if ok {
		age = max(time.Since(oldest).Seconds(), 0)
	}
	gauge(mOutboxOldest, age)
	if fi, err := os.Stat(ec.DB.Path()); err == nil {
		gauge(mStoreBytes, float64(fi.Size()))
	}
	if ec.Devices != nil {
		counter(mTwinUpdates, ec.Devices.Updates())
	}
	if ec.creds != nil {
		if leaf := ec.creds.Leaf(); leaf != nil {
			gauge(mCertExpiry, float64(leaf.NotAfter.UnixNano())/1e9)
		}
	}
	counter(mScrapeErrors, c.errors.Load())
	if ec.Pods != nil {
		for op, l := range map[string]*histogram.Latency{"sync": ec.Pods.SyncLatency(), "kill": ec.Pods.KillLatency()} {
			h := l.Snapshot()
			ch <- prometheus.MustNewConstHistogram(mPodSync, h.Count, h.Sum, h.Buckets, op)
		}
	}
}

// Metrics returns a registry of edgecore's metrics (names start with
// tether_edge_), the Go runtime's and the process's.
func (ec *EdgeCore) Metrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(&edgeCollector{ec: ec}, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// MetricDescs describes edgecore's own metrics (for the alert rules' and
// the dashboard's tests).
func MetricDescs() []*prometheus.Desc {
	ch := make(chan *prometheus.Desc, 64)
	go func() { (&edgeCollector{}).Describe(ch); close(ch) }()
	var ds []*prometheus.Desc
	for d := range ch {
		ds = append(ds, d)
	}
	return ds
}
