//! The validated configuration of a serving member: what `core::server`
//! runs with. `modes::serve` builds it once from flags, `KVD_<FLAG>`
//! variables and the YAML file; nothing below `core` reads argv or env.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::core::tls::{TlsFiles, TlsPolicy, TlsVersion};
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
    /// The client port's certificates (`--cert-file`, `--key-file`,
    /// `--trusted-ca-file`, `--client-cert-auth`, `--client-crl-file`,
    /// `--auto-tls`).
    pub client_tls: TlsFiles,
    /// Those of `listen_client_addrs` whose URL is `https://`: they speak
    /// TLS with `client_tls`; the others h2c.
    pub client_tls_addrs: Vec<SocketAddr>,
    /// The peer port's certificates and the names peers must carry.
    pub peer_tls: PeerTls,
    /// `--cipher-suites`, `--tls-min-version`, `--tls-max-version` (both ports).
    pub tls_policy: TlsPolicy,
    /// `--auth-token`, `--auth-token-ttl`, `--bcrypt-cost`.
    pub auth: AuthSettings,
    /// `--cors`, `--enable-v2`, `--enable-ui`: the HTTP face of the client port.
    pub http: HttpFace,
}

/// The HTTP face of the client port beside gRPC: the JSON gateway
/// (always), the v2 keys API, the web console and CORS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpFace {
    /// `--cors`: origins whose browsers may call the HTTP endpoints; `*`
    /// (etcd's default) any.
    pub cors: Vec<String>,
    /// `--enable-v2`: serve `/v2/keys`, `/v2/members`, `/v2/stats/self`
    /// (kvd's default: on; etcd 3.4's: off).
    pub enable_v2: bool,
    /// `--enable-ui`: serve the web console at `/ui/` (default off).
    pub enable_ui: bool,
}

impl Default for HttpFace {
    fn default() -> Self {
        Self {
            cors: vec!["*".to_string()],
            enable_v2: true,
            enable_ui: false,
        }
    }
}

/// How users authenticate (etcd's `--auth-token`, `--auth-token-ttl`,
/// `--bcrypt-cost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// `simple`, or `jwt,pub-key=PATH,priv-key=PATH,sign-method=METHOD[,ttl=DURATION]`.
    pub token: String,
    /// The JWT options parsed from `token` (`None`: simple tokens).
    pub jwt: Option<crate::core::auth::jwt::JwtOptions>,
    /// How long a simple token lives after its last use.
    pub token_ttl: Duration,
    /// bcrypt cost of new password hashes.
    pub bcrypt_cost: u32,
}

impl AuthSettings {
    /// Checks the values as etcd does at start-up.
    ///
    /// # Errors
    /// One line naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        let kind = self.token.split(',').next().unwrap_or_default();
        if kind != "simple" && kind != "jwt" {
            return Err(format!(
                "unknown token type {kind:?} for --auth-token (simple or jwt)"
            ));
        }
        if let Some(jwt) = &self.jwt {
            crate::core::auth::jwt::JwtProvider::load(jwt)?;
        }
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(format!(
                "--bcrypt-cost {} is out of range [4, 31]",
                self.bcrypt_cost
            ));
        }
        if self.token_ttl.is_zero() {
            return Err("--auth-token-ttl must be greater than 0".to_string());
        }
        Ok(())
    }
}

/// The peer port's TLS (etcd's `--peer-*` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerTls {
    /// `--peer-cert-file`, `--peer-key-file`, `--peer-trusted-ca-file`,
    /// `--peer-client-cert-auth`, `--peer-crl-file`, `--peer-auto-tls`.
    pub files: TlsFiles,
    /// `--peer-cert-allowed-cn`: the Common Name a peer's certificate must carry.
    pub allowed_cn: Option<String>,
    /// `--peer-cert-allowed-hostname`: a name a peer's certificate must be valid for.
    pub allowed_hostname: Option<String>,
}
