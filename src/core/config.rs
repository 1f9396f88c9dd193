//! The validated configuration of a serving member: what `core::server`
//! runs with. `modes::serve` builds it once from flags, `KVD_<FLAG>`
//! variables and the YAML file; nothing below `core` reads argv or env.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::core::urls::InitialMember;

/// Whether this member bootstraps a new cluster or joins an existing one
/// (etcd's `--initial-cluster-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    New,
    /// Join a cluster that already exists (the member was added with `member add`).
    Existing,
}

/// Everything `kvd serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// This member's human-readable name (`--name`, default `default`).
    pub name: String,
    /// Directory of the member's fjall database (`--data-dir`, default `./<name>.kvd`).
    pub data_dir: PathBuf,
    /// Addresses the client gRPC/HTTP server binds (from `--listen-client-urls`).
    pub listen_client_addrs: Vec<SocketAddr>,
    /// Client URLs told to clients and peers (`--advertise-client-urls`).
    pub advertise_client_urls: Vec<String>,
    /// Addresses the QUIC peer endpoint binds (from `--listen-peer-urls`, UDP).
    pub listen_peer_addrs: Vec<SocketAddr>,
    /// This member's peer URLs as other members reach them (`--initial-advertise-peer-urls`).
    pub initial_advertise_peer_urls: Vec<String>,
    /// The bootstrap membership (`--initial-cluster`), in the order given.
    pub initial_cluster: Vec<InitialMember>,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`: mixed into member and cluster ids.
    pub initial_cluster_token: String,
    /// Raft heartbeat interval (`--heartbeat-interval`, milliseconds, default 100).
    pub heartbeat_interval: Duration,
    /// Raft election timeout (`--election-timeout`, milliseconds, default 1000).
    pub election_timeout: Duration,
    /// Applied entries between Raft snapshots (`--snapshot-count`, default 10,000).
    pub snapshot_count: u64,
    /// Largest client request accepted, bytes (`--max-request-bytes`, default 1.5 MiB).
    pub max_request_bytes: usize,
    /// Most operations in one transaction (`--max-txn-ops`, default 128).
    pub max_txn_ops: usize,
    /// Backend size alarm threshold, bytes (`--quota-backend-bytes`; 0 = no limit).
    pub quota_backend_bytes: u64,
    /// The storage engine's block cache, bytes (`--backend-cache-bytes`).
    pub backend_cache_bytes: u64,
    /// `tracing` filter (`--log-level`: debug, info, warn, error).
    pub log_level: String,
    /// Promote a learner to voter once it has caught up (`--auto-promote`;
    /// etcd has no such option).
    pub auto_promote: bool,
}
