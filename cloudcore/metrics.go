package cloudcore

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"
)

// The metrics cloudcore exports (Metrics). Counters come from the
// components' own counters at scrape time (hub.Stats, status.Stats), so
// nothing is counted twice and the hot paths take no extra lock.
var (
	mSessions   = prometheus.NewDesc("tether_hub_sessions", "Edge nodes with a live session on this replica.", nil, nil)
	mConns      = prometheus.NewDesc("tether_hub_connections", "Open connections to the hub, sessions included.", nil, nil)
	mResumed    = prometheus.NewDesc("tether_hub_tls_resumed_total", "Requests to the hub on a resumed TLS session (a session ticket: no certificate signatures).", nil, nil)
	mRefused    = prometheus.NewDesc("tether_hub_connections_refused_total", "Connections or handshakes refused, by reason (session_rate: shed with 503 and a Retry-After).", []string{"reason"}, nil)
	mWaits      = prometheus.NewDesc("tether_hub_accept_waits_total", "Connections that waited in the listen backlog, not accepted, by what they waited for (max_handshakes: a place among the handshakes in progress; accept_rate: the accept rate).", []string{"reason"}, nil)
	mWaitTime   = prometheus.NewDesc("tether_hub_accept_wait_seconds_total", "Time connections waited in the listen backlog for a handshake place or the accept rate.", nil, nil)
	mFrames     = prometheus.NewDesc("tether_hub_frames_total", "Protocol frames, by direction (in: from edges).", []string{"direction"}, nil)
	mBytes      = prometheus.NewDesc("tether_hub_frame_bytes_total", "Protocol frame bytes, by direction (in: from edges).", []string{"direction"}, nil)
	mBadFrames  = prometheus.NewDesc("tether_hub_bad_frames_total", "Frames from edges that did not decode or validate.", nil, nil)
	mObjects    = prometheus.NewDesc("tether_hub_object_messages_total", "Upserts and deletes sent to edges.", nil, nil)
	mResyncs    = prometheus.NewDesc("tether_hub_resyncs_total", "Resyncs (a session's first reconcile after its Hello).", nil, nil)
	mResyncMsgs = prometheus.NewDesc("tether_hub_resync_messages_total", "Upserts and deletes sent in resyncs.", nil, nil)
	mResyncB    = prometheus.NewDesc("tether_hub_resync_bytes_total", "Bytes of the upserts and deletes sent in resyncs.", nil, nil)
	mRevoked    = prometheus.NewDesc("tether_hub_sessions_revoked_total", "Sessions closed because the node was revoked or its certificate expired.", nil, nil)
	mCerts      = prometheus.NewDesc("tether_hub_certificate_requests_total", "In-session certificate renewals, by result.", []string{"result"}, nil)
	mUpPaused   = prometheus.NewDesc("tether_hub_upstream_paused_total", "Times a session stopped reading at maxUpstreamInFlight.", nil, nil)
	mUpThrottle = prometheus.NewDesc("tether_hub_upstream_throttled_total", "Statuses that waited for a node's upstreamRate.", nil, nil)
	mEvDropped  = prometheus.NewDesc("tether_hub_events_dropped_total", "Events dropped past a node's upstreamRate.", nil, nil)
	mRelayed    = prometheus.NewDesc("tether_hub_relayed_writes_total", "Writes of edge pods relayed to the API server (relayed: answered, by the API server or a refusal of the relay; refused: 429 over maxRelayInFlight).", []string{"result"}, nil)
	mWrites     = prometheus.NewDesc("tether_api_writes_total", "Successful API writes for edges, by kind (node_conditions_repair: conditions written back over the controller-manager's Unknown while the node is connected).", []string{"kind"}, nil)
	mAPIErrors  = prometheus.NewDesc("tether_api_write_errors_total", "API writes that failed (API server or transport errors), retried or not.", nil, nil)
	mWriteFate  = prometheus.NewDesc("tether_api_messages_total", "Upstream messages that needed no write, were coalesced, retried, rejected, given up, or dropped as stale (a newer report of the object was written already: the status fence).", []string{"result"}, nil)
	mFenceConf  = prometheus.NewDesc("tether_api_fence_conflicts_total", "Fenced status writes that found the object changed since read and read it again to decide anew.", nil, nil)
	mAPIRefused = prometheus.NewDesc("tether_api_messages_refused_total", "Upstream messages refused because the node may not write the object, by reason.", []string{"reason"}, nil)
	mWriteTime  = prometheus.NewDesc("tether_api_write_duration_seconds", "Time an upstream message's API write took (its API calls; a retry is another), by the message's kind.", []string{"kind"}, nil)
	mLeader     = prometheus.NewDesc("tether_leader", "1 if this replica runs the cluster-wide singletons (holds the leader Lease).", nil, nil)
	mCAExpiry   = prometheus.NewDesc("tether_ca_certificate_expiry_timestamp_seconds", "When cloudcore's CA certificate expires (Unix time).", nil, nil)
	mSrvExpiry  = prometheus.NewDesc("tether_hub_serving_certificate_expiry_timestamp_seconds", "When the hub's serving certificate expires (Unix time).", nil, nil)
	mNodeExpiry = prometheus.NewDesc("tether_hub_node_certificate_expiry_timestamp_seconds", "When the client certificate of each connected node expires (Unix time), as the hub sees it.", []string{"node"}, nil)
	mPeerStream = prometheus.NewDesc("tether_peer_streams_total", "Kubelet API streams through a peer replica: forwarded (this replica lacked the node's session), served (relayed for a peer).", []string{"direction"}, nil)
	mSendQueue  = prometheus.NewDesc("tether_hub_send_queue_frames", "Frames queued to send to edges, over all sessions.", nil, nil)
	mUnacked    = prometheus.NewDesc("tether_hub_unacknowledged_messages", "Object messages sent to edges and not yet acknowledged (the sessions' windows in use).", nil, nil)
	mAckTime    = prometheus.NewDesc("tether_hub_ack_duration_seconds", "Time from an object message queued for an edge to the edge's acknowledgement.", nil, nil)
	mDispatch   = prometheus.NewDesc("tether_hub_dispatch_duration_seconds", "Time from a change of a node's objects to the first message it queued for the node.", nil, nil)
	mPeerRefuse = prometheus.NewDesc("tether_peer_requests_refused_total", "Peer stream requests refused after the handshake (bad request or stream limit).", nil, nil)
	mRebalanced = prometheus.NewDesc("tether_hub_rebalanced_sessions_total", "Sessions this replica sent away (to reconnect through the Service) to even out the replicas' loads.", nil, nil)
)

// collector is cloudcore's prometheus.Collector.
type collector struct{ cc *CloudCore }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mSessions, mConns, mRefused, mWaits, mWaitTime, mFrames, mBytes, mBadFrames, mObjects, mResyncs,
		mResyncMsgs, mResyncB, mRevoked, mCerts, mUpPaused, mUpThrottle, mEvDropped, mRelayed, mWrites, mAPIErrors, mWriteFate, mFenceConf,
		mAPIRefused, mWriteTime, mLeader, mCAExpiry, mSrvExpiry, mNodeExpiry, mPeerStream, mPeerRefuse,
		mSendQueue, mUnacked, mAckTime, mDispatch, mRebalanced, mResumed} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	h := c.cc.Hub.Stats()
	gauge(mSessions, float64(h.Sessions))
	gauge(mConns, float64(h.Conns))
	gauge(mSendQueue, float64(h.SendQueue))
	gauge(mUnacked, float64(h.Unacknowledged))
	ch <- prometheus.MustNewConstHistogram(mAckTime, h.AckLatency.Count, h.AckLatency.Sum, h.AckLatency.Buckets)
	ch <- prometheus.MustNewConstHistogram(mDispatch, h.DispatchLatency.Count, h.DispatchLatency.Sum, h.DispatchLatency.Buckets)
	for reason, v := range map[string]int64{
		"certificate_or_hello": h.Refused - h.IdentityRefused - h.InventoryRefused, "identity": h.IdentityRefused,
		"inventory": h.InventoryRefused, "max_conns": h.ConnsRefusedTotal, "max_conns_per_ip": h.ConnsRefusedPerIP,
		"accept_rate_per_ip": h.ConnsRefusedRatePerIP, "handshake_timeout": h.ConnsClosedNew, "session_rate": h.Shed,
	} {
		counter(mRefused, max(v, 0), reason)
	}
	counter(mWaits, h.AcceptWaitsHandshakes, "max_handshakes")
	counter(mWaits, h.AcceptWaitsRate, "accept_rate")
	ch <- prometheus.MustNewConstMetric(mWaitTime, prometheus.CounterValue, h.AcceptWait.Seconds())
	counter(mFrames, h.FramesIn, "in")
	counter(mFrames, h.FramesOut, "out")
	counter(mBytes, h.BytesIn, "in")
	counter(mBytes, h.BytesOut, "out")
	counter(mBadFrames, h.BadFrames)
	counter(mResumed, h.TLSResumed)
	counter(mObjects, h.ObjectMessages)
	counter(mResyncs, h.Resyncs)
	counter(mResyncMsgs, h.ResyncMessages)
	counter(mResyncB, h.ResyncBytes)
	counter(mRevoked, h.Revoked)
	counter(mCerts, h.CertsIssued, "issued")
	counter(mCerts, h.CertsRefused, "refused")
	counter(mUpPaused, h.UpstreamPaused)
	counter(mUpThrottle, h.UpstreamThrottled)
	counter(mEvDropped, h.EventsDropped)
	counter(mRelayed, h.Relayed, "relayed")
	counter(mRelayed, h.RelayRefused, "refused")
	counter(mRebalanced, h.Rebalanced)

	s := c.cc.Status.Stats()
	for kind, v := range map[string]int64{
		"node_label_patch": s.NodeLabelPatches, "node_status": s.NodeStatuses, "pod_status": s.PodStatuses,
		"pod_delete": s.PodDeletes, "event": s.Events, "lease_create": s.LeaseCreates, "lease_renewal": s.LeaseRenewals,
		"mirror_pod": s.MirrorWrites, "device_status": s.DeviceStatuses, "node_conditions_repair": s.NodeRepairs,
	} {
		counter(mWrites, v, kind)
	}
	counter(mAPIErrors, s.APIErrors)
	counter(mFenceConf, s.FenceConflicts)
	for kind, hist := range s.WriteLatency {
		ch <- prometheus.MustNewConstHistogram(mWriteTime, hist.Count, hist.Sum, hist.Buckets, snake(kind))
	}
	for result, v := range map[string]int64{"unchanged": s.Unchanged, "coalesced": s.Coalesced, "retried": s.Retries,
		"rejected": s.Rejected, "given_up": s.GivenUp, "stale": s.Stale, "fence_only": s.FenceOnly} {
		counter(mWriteFate, v, result)
	}
	r := s.Refused
	for reason, v := range map[string]int64{"not_edge_node": r.NotEdgeNode, "node_missing": r.NodeMissing,
		"not_own_pod": r.NotOwnPod, "not_own_device": r.NotOwnDevice, "event_not_own": r.EventNotOwn,
		"mirror_forbidden": r.MirrorForbidden} {
		counter(mAPIRefused, v, reason)
	}

	leading := 0.0
	if c.cc.election != nil && c.cc.election.Leading() {
		leading = 1
	}
	gauge(mLeader, leading)
	if c.cc.CA != nil && c.cc.CA.Cert != nil {
		gauge(mCAExpiry, unix(c.cc.CA.Cert.NotAfter))
	}
	if leaf := c.cc.Serving(); leaf != nil {
		gauge(mSrvExpiry, unix(leaf.NotAfter))
	}
	c.cc.Hub.CertExpiries(func(node string, notAfter time.Time) { gauge(mNodeExpiry, unix(notAfter), node) })
	if p := c.cc.Peers; p != nil {
		counter(mPeerStream, p.Forwarded.Load(), "forwarded")
		counter(mPeerStream, p.Served.Load(), "served")
		counter(mPeerRefuse, p.Refused.Load())
	}
}

// snake turns a Go name into a label value: PodStatus is pod_status.
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// metricsRate bounds the /metrics requests the hub answers (a second, and
// the burst): each costs a TokenReview and, uncached, a
// SubjectAccessReview; a scraper asks every 15-60s.
const (
	metricsRate  = 5
	metricsBurst = 20
)

// metricsHandler serves Metrics at /metrics on the hub's listener (TLS) to
// callers the API server vouches for: a bearer token (TokenReview) or a
// client certificate of the cluster's client CA, allowed `get` on the
// non-resource URL /metrics (a SubjectAccessReview), as kube components
// serve theirs. Edges' certificates are of cloudcore's CA: refused.
func (cc *CloudCore) metricsHandler() http.Handler {
	serve := promhttp.HandlerFor(cc.Metrics(), promhttp.HandlerOpts{})
	limit := rate.NewLimiter(metricsRate, metricsBurst)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if !limit.Allow() {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many requests", http.StatusTooManyRequests)
			return
		}
		u, err := cc.kubeAuth.Authenticate(r.Context(), r)
		if err != nil {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		ok, _, err := cc.kubeAuth.AuthorizePath(r.Context(), u, "get", "/metrics")
		if err != nil {
			cc.cfg.Logger.Warn("metrics: authorization failed", slog.Any("err", err))
			http.Error(w, "authorization failed", http.StatusServiceUnavailable)
			return
		}
		if !ok {
			http.Error(w, fmt.Sprintf("Forbidden (user=%s, verb=get, path=/metrics)", u.Name), http.StatusForbidden)
			return
		}
		serve.ServeHTTP(w, r)
	})
}

// Metrics returns a registry of cloudcore's metrics (names start with
// tether_), the Go runtime's and the process's.
func (cc *CloudCore) Metrics() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{cc}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// MetricDescs describes cloudcore's own metrics (for the alert rules' and
// the dashboard's tests).
func MetricDescs() []*prometheus.Desc {
	ch := make(chan *prometheus.Desc, 64)
	go func() { collector{}.Describe(ch); close(ch) }()
	var ds []*prometheus.Desc
	for d := range ch {
		ds = append(ds, d)
	}
	return ds
}
