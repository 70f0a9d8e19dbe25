package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meridian-id/meridian/node"
)

// mountMetrics serves GET /metrics on the node's HTTP server. The libraries
// expose snapshot structs; this is the only place they become Prometheus
// metrics, read at scrape time so nothing is double-counted or stale.
func mountMetrics(n *node.Node) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &nodeCollector{n: n})
	n.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
}

type nodeCollector struct{ n *node.Node }

var (
	labels = []string{"region", "node"}
	mDesc  = func(name, help string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc("meridian_"+name, help, append(append([]string(nil), labels...), extra...), nil)
	}
	descAppends        = mDesc("writer_appends_total", "Successful appends through the writer.")
	descEvents         = mDesc("writer_events_total", "Events appended.")
	descRejected       = mDesc("writer_rejected_total", "Appends refused, by reason.", "reason")
	descKeysCreated    = mDesc("writer_data_keys_created_total", "Data keys created by this node.")
	descLogLast        = mDesc("log_last_seq", "Last sequence of the event log.")
	descLogFirst       = mDesc("log_first_seq", "First retained sequence of the event log.")
	descLogFsyncs      = mDesc("log_fsyncs_total", "WAL fsyncs of the event log.")
	descLogBatch       = mDesc("log_mean_batch_records", "Mean records per group commit.")
	descShipped        = mDesc("shipper_shipped_seq", "Log sequence acknowledged by the origin stream.")
	descBacklog        = mDesc("shipper_backlog", "Records in the log not yet acknowledged by the origin stream.")
	descPubErrs        = mDesc("shipper_publish_errors_total", "Failed publishes to the origin stream.")
	descApplied        = mDesc("projector_messages_total", "Inbox messages applied.")
	descQuarantined    = mDesc("projector_quarantined_total", "Inbox messages quarantined as undecodable.")
	descInboxSeq       = mDesc("projector_inbox_seq", "Inbox sequence applied to the read model.")
	descLagEvents      = mDesc("replication_lag_events", "Events of an origin not yet applied here (unknown: absent).", "origin")
	descLagSeconds     = mDesc("replication_lag_seconds", "Age of the newest applied heartbeat of an origin (unknown: absent).", "origin")
	descReady          = mDesc("replication_ready", "1 once the region's streams are provisioned and the shipper runs.")
	descHeartbeatsSent = mDesc("heartbeats_sent_total", "Heartbeats appended by this node.")
	descClaims         = mDesc("claims_total", "Uniqueness claim operations, by outcome.", "outcome")
	descClaimLatency   = mDesc("claim_latency_seconds", "Latency of taking a claim, by quantile.", "quantile")
	descReaped         = mDesc("claims_reaped_total", "Orphaned claims released by the reaper.")
	descKeyCache       = mDesc("keystore_cache_lookups_total", "Key-store lookups of an identity, by whether the cache answered.", "result")
	descKeyEvictions   = mDesc("keystore_cache_evictions_total", "Key-store cache entries evicted to make room.")
	descKeyCached      = mDesc("keystore_cache_entries", "Identities in the key-store cache now.")
	descKeyCapacity    = mDesc("keystore_cache_capacity", "Bound of the key-store cache, in identities.")
	descKeysDestroyed  = mDesc("keystore_keys_destroyed_total", "Data keys destroyed by erasure.")
	descPebbleBudget   = mDesc("pebble_budget_bytes", "Bound of the node's Pebble memory outside the Go heap: its shared block cache with room for every database's memtables.")
	descPebbleMemory   = mDesc("pebble_memory_bytes", "What the node's Pebble databases hold outside the Go heap now, by part.", "part")
)

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	lv := []string{n.Region(), n.ID()}
	gauge := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(lv, extra...)...)
	}
	counter := func(d *prometheus.Desc, v uint64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append(lv, extra...)...)
	}
	w := n.Writer().Metrics()
	counter(descAppends, w.Appends)
	counter(descEvents, w.Events)
	counter(descKeysCreated, w.KeysCreated)
	counter(descRejected, w.Invalid, "invalid")
	counter(descRejected, w.TooLarge, "too_large")
	counter(descRejected, w.WrongRegion, "wrong_region")
	counter(descRejected, w.Unavailable, "unavailable")
	k := n.Keys().Metrics()
	counter(descKeyCache, k.CacheHits, "hit")
	counter(descKeyCache, k.CacheMisses, "miss")
	counter(descKeyEvictions, k.CacheEvictions)
	gauge(descKeyCached, float64(k.CacheEntries))
	gauge(descKeyCapacity, float64(k.CacheCapacity))
	counter(descKeysDestroyed, k.Destroyed)
	gauge(descPebbleBudget, float64(n.PebbleBudget()))
	pm := n.PebbleMemory()
	gauge(descPebbleMemory, float64(pm.MemTables), "memtables")
	gauge(descPebbleMemory, float64(pm.BlockCache), "block_cache")
	l := n.Log().Metrics()
	gauge(descLogLast, float64(l.LastSeq))
	gauge(descLogFirst, float64(l.FirstSeq))
	counter(descLogFsyncs, l.Fsyncs)
	gauge(descLogBatch, l.MeanBatchRecords)
	st := n.Status()
	ready := 0.0
	if st.Ready {
		ready = 1
	}
	gauge(descReady, ready)
	counter(descHeartbeatsSent, st.Heartbeats.Sent)
	if st.Shipper != nil {
		gauge(descShipped, float64(st.Shipper.Shipped))
		gauge(descBacklog, float64(st.Shipper.Backlog))
		counter(descPubErrs, st.Shipper.PublishErrs)
	}
	p := n.Projector().Metrics()
	counter(descApplied, p.Messages)
	counter(descQuarantined, p.Quarantined)
	gauge(descInboxSeq, float64(p.InboxSeq))
	if cm, ok := n.ClaimsMetrics(); ok {
		for outcome, v := range map[string]uint64{"created": cm.Created, "refreshed": cm.Refreshed, "taken": cm.Taken,
			"released": cm.Released, "unavailable": cm.Unavailable} {
			counter(descClaims, v, outcome)
		}
		gauge(descClaimLatency, cm.ClaimLatency.P50.Seconds(), "0.5")
		gauge(descClaimLatency, cm.ClaimLatency.P99.Seconds(), "0.99")
		counter(descReaped, cm.Reaped)
	}
	for _, o := range st.Origins {
		if o.LagEvents != nil {
			gauge(descLagEvents, float64(*o.LagEvents), o.Region)
		}
		if o.LagSeconds != nil {
			gauge(descLagSeconds, *o.LagSeconds, o.Region)
		}
	}
}
