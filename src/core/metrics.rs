//! Prometheus metrics, served as text on `GET /metrics` of the client port.
//! Names follow etcd's where the meaning is the same, so existing dashboards
//! keep working (`etcd_disk_wal_fsync_duration_seconds`, …).

use std::sync::LazyLock;

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Registry, TextEncoder};

/// The member's metrics (one member per process).
pub struct Metrics {
    /// Where every metric is registered.
    registry: Registry,
    /// Duration of each fsync of the Raft log, seconds (count = number of fsyncs).
    pub fsync: Histogram,
    /// Time from a proposal's submission to its answer once applied,
    /// seconds (this member's proposals only; timeouts are not observed).
    pub proposal_duration: Histogram,
    /// Puts applied (each put of a txn counts), etcd 3.5's counter.
    pub puts: IntCounter,
    /// Delete requests applied (each of a txn counts).
    pub deletes: IntCounter,
    /// Txns applied.
    pub txns: IntCounter,
    /// Ranges served by this member (each of a txn counts).
    pub ranges: IntCounter,
    /// Ready batches handled by the Raft task.
    pub readies: IntCounter,
    /// Proposals accepted by this member's Raft task.
    pub proposals: IntCounter,
    /// Log entries applied to the state machine.
    pub applied: IntCounter,
    /// 1 while a leader is known.
    pub has_leader: IntGauge,
    /// Leader changes seen by this member.
    pub leader_changes: IntCounter,
    /// Watchers registered on this member (etcd's gauge of the same name).
    pub watchers: IntGauge,
    /// Watchers off the live path, catching up from storage.
    pub slow_watchers: IntGauge,
    /// Times a watcher was moved off the live path (its queue was full, or
    /// revisions were dropped before dispatch).
    pub watchers_unsynced: IntCounter,
    /// Events dispatched to the watch hub.
    pub watch_events: IntCounter,
    /// Snapshots streamed to followers completely.
    pub snapshot_sent: IntCounter,
    /// Snapshots received from the leader completely (staged).
    pub snapshot_received: IntCounter,
    /// Snapshots applied to this member's state machine.
    pub snapshot_applied: IntCounter,
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

// Proof for the `expect`s of these constructors (and the histogram's
// below): prometheus fails only on an invalid metric name, help text or
// bucket list, and all of them are constants checked by the
// `metrics_render` tests (member and proxy).

/// An integer counter with a constant name and help text.
#[allow(clippy::expect_used)]
pub fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("constant metric name is valid")
}

/// An integer gauge with a constant name and help text.
#[allow(clippy::expect_used)]
pub fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("constant metric name is valid")
}

impl Metrics {
    #[allow(clippy::expect_used)]
    fn new() -> Self {
        let fsync = Histogram::with_opts(
            HistogramOpts::new(
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by the Raft task.",
            )
            .buckets(vec![
                0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048,
                4.096, 8.192,
            ]),
        )
        .expect("constant histogram options are valid");
        let proposal_duration = Histogram::with_opts(
            HistogramOpts::new(
                "kvd_server_proposal_duration_seconds",
                "Time from a proposal's submission to its applied answer.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512,
                1.024, 2.048, 4.096, 8.192,
            ]),
        )
        .expect("constant histogram options are valid");
        let m = Self {
            registry: Registry::new(),
            fsync,
            proposal_duration,
            puts: counter(
                "etcd_mvcc_put_total",
                "Total number of puts seen by this member.",
            ),
            deletes: counter(
                "etcd_mvcc_delete_total",
                "Total number of deleteRanges seen by this member.",
            ),
            txns: counter(
                "etcd_mvcc_txn_total",
                "Total number of txns seen by this member.",
            ),
            ranges: counter(
                "etcd_mvcc_range_total",
                "Total number of ranges seen by this member.",
            ),
            readies: counter("kvd_raft_readies_total", "Raft Ready batches handled."),
            proposals: counter(
                "etcd_server_proposals_committed_total",
                "Proposals accepted by this member.",
            ),
            applied: counter(
                "etcd_server_proposals_applied_total",
                "Raft log entries applied to the state machine.",
            ),
            has_leader: gauge("etcd_server_has_leader", "1 if a leader exists."),
            leader_changes: counter(
                "etcd_server_leader_changes_seen_total",
                "Leader changes seen.",
            ),
            watchers: gauge(
                "etcd_debugging_mvcc_watcher_total",
                "Total number of watchers.",
            ),
            slow_watchers: gauge(
                "etcd_debugging_mvcc_slow_watcher_total",
                "Total number of unsynced slow watchers.",
            ),
            watchers_unsynced: counter(
                "kvd_watch_unsynced_total",
                "Times a watcher was moved off the live path to catch up from storage.",
            ),
            watch_events: counter(
                "etcd_debugging_mvcc_events_total",
                "Total number of events sent by this member.",
            ),
            snapshot_sent: counter(
                "etcd_network_snapshot_send_success",
                "Snapshots streamed to followers.",
            ),
            snapshot_received: counter(
                "etcd_network_snapshot_receive_success",
                "Snapshots received from the leader.",
            ),
            snapshot_applied: counter(
                "kvd_snapshots_applied_total",
                "Snapshots applied to the state machine.",
            ),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 18] = [
            Box::new(m.proposal_duration.clone()),
            Box::new(m.puts.clone()),
            Box::new(m.deletes.clone()),
            Box::new(m.txns.clone()),
            Box::new(m.ranges.clone()),
            Box::new(m.snapshot_sent.clone()),
            Box::new(m.snapshot_received.clone()),
            Box::new(m.snapshot_applied.clone()),
            Box::new(m.fsync.clone()),
            Box::new(m.readies.clone()),
            Box::new(m.proposals.clone()),
            Box::new(m.applied.clone()),
            Box::new(m.has_leader.clone()),
            Box::new(m.leader_changes.clone()),
            Box::new(m.watchers.clone()),
            Box::new(m.slow_watchers.clone()),
            Box::new(m.watchers_unsynced.clone()),
            Box::new(m.watch_events.clone()),
        ];
        register(&m.registry, collectors);
        m
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

/// Registers `collectors` and the `process_*` metrics (resident memory
/// and the rest, as etcd exports them; etcdctl check datascale reads the
/// first) in `registry`; a refusal is logged.
pub fn register(
    registry: &Registry,
    collectors: impl IntoIterator<Item = Box<dyn prometheus::core::Collector>>,
) {
    for c in collectors {
        if let Err(e) = registry.register(c) {
            tracing::warn!("metric not registered: {e}");
        }
    }
    let process = prometheus::process_collector::ProcessCollector::for_self();
    if let Err(e) = registry.register(Box::new(process)) {
        tracing::warn!("process metrics not registered: {e}");
    }
}

/// `registry` in Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        return format!("# metrics unavailable: {e}\n");
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render() {
        METRICS.readies.inc();
        METRICS.fsync.observe(0.002);
        let text = METRICS.render();
        assert!(text.contains("kvd_raft_readies_total 1"), "{text}");
        assert!(
            text.contains("etcd_disk_wal_fsync_duration_seconds_count 1"),
            "{text}"
        );
    }
}
