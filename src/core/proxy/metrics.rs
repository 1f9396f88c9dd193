//! The proxy's Prometheus metrics on `GET /metrics` (its client port and
//! `--metrics-addr`), with etcd grpc-proxy's names (`server/proxy/
//! grpcproxy/metrics.go`) for what it also counts, `kvd_proxy_*` for the
//! rest, and the `process_*` metrics.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntGauge, Registry};

use crate::core::metrics::{counter, gauge};

/// The proxy's metrics (one proxy per process).
pub struct ProxyMetrics {
    registry: Registry,
    /// Serializable reads answered from the cache.
    pub cache_hits: IntCounter,
    /// Serializable reads the cache could not answer.
    pub cache_misses: IntCounter,
    /// Entries in the cache.
    pub cache_keys: IntGauge,
    /// Local watchers served by an upstream watch they share with others.
    pub watchers_coalescing: IntGauge,
    /// Events delivered to local watchers beyond the first copy.
    pub events_coalescing: IntCounter,
    /// Upstream watches open now.
    pub upstream_watches: IntGauge,
    /// Local watchers now.
    pub local_watchers: IntGauge,
    /// Lease keep-alives answered by a renewal already in flight.
    pub keepalives_coalesced: IntCounter,
}

/// The process-wide proxy metrics.
pub static PROXY_METRICS: LazyLock<ProxyMetrics> = LazyLock::new(ProxyMetrics::new);

impl ProxyMetrics {
    fn new() -> Self {
        let m = Self {
            registry: Registry::new(),
            cache_hits: counter(
                "etcd_grpc_proxy_cache_hits_total",
                "Total number of cache hits",
            ),
            cache_misses: counter(
                "etcd_grpc_proxy_cache_misses_total",
                "Total number of cache misses",
            ),
            cache_keys: gauge(
                "etcd_grpc_proxy_cache_keys_total",
                "Total number of keys/ranges cached",
            ),
            watchers_coalescing: gauge(
                "etcd_grpc_proxy_watchers_coalescing_total",
                "Total number of current watchers coalescing",
            ),
            events_coalescing: counter(
                "etcd_grpc_proxy_events_coalescing_total",
                "Total number of events coalescing",
            ),
            upstream_watches: gauge(
                "kvd_proxy_upstream_watches",
                "Watches the proxy holds open on the cluster.",
            ),
            local_watchers: gauge(
                "kvd_proxy_local_watchers",
                "Watchers of the proxy's clients.",
            ),
            keepalives_coalesced: counter(
                "kvd_proxy_lease_keepalives_coalesced_total",
                "Lease keep-alives answered by a renewal already in flight.",
            ),
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 8] = [
            Box::new(m.cache_hits.clone()),
            Box::new(m.cache_misses.clone()),
            Box::new(m.cache_keys.clone()),
            Box::new(m.watchers_coalescing.clone()),
            Box::new(m.events_coalescing.clone()),
            Box::new(m.upstream_watches.clone()),
            Box::new(m.local_watchers.clone()),
            Box::new(m.keepalives_coalesced.clone()),
        ];
        crate::core::metrics::register(&m.registry, collectors);
        m
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        crate::core::metrics::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_metrics_render() {
        PROXY_METRICS.cache_hits.inc();
        let text = PROXY_METRICS.render();
        // Other tests of this process count too: names and types only.
        for line in [
            "# TYPE etcd_grpc_proxy_cache_hits_total counter",
            "# TYPE etcd_grpc_proxy_cache_misses_total counter",
            "# TYPE etcd_grpc_proxy_cache_keys_total gauge",
            "# TYPE etcd_grpc_proxy_watchers_coalescing_total gauge",
            "# TYPE etcd_grpc_proxy_events_coalescing_total counter",
            "# TYPE kvd_proxy_upstream_watches gauge",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        assert!(
            !text.contains("etcd_grpc_proxy_cache_hits_total 0\n"),
            "{text}"
        );
    }
}
