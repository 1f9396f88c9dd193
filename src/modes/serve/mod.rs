//! `kvd serve`: the flags of a cluster member (etcd's names and defaults),
//! turned once into a validated [`ServeConfig`] and handed to
//! [`crate::core::server::run`].
//!
//! Precedence, highest first: a flag on the command line, its `KVD_<FLAG>`
//! environment variable (clap merges these two), a key of the `--config`
//! YAML file, etcd's default. Unlike etcd, which ignores every other flag
//! when `--config-file` is given, a flag here always overrides the file.

use std::path::PathBuf;

use clap::Args;

pub mod discovery;
pub mod options;
pub mod security;

use crate::core::config::ServeConfig;
use crate::core::server::{self, ServeError};
use crate::modes::ExitCode;
use options::{ConfigError, ServeOptions};

/// The flags of `kvd serve`. Every flag is optional so that the config file
/// and the defaults can fill what the command line leaves unset; the defaults
/// shown are applied by [`ServeOptions::resolve`].
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// YAML config file with etcd's keys (see config/example.yaml); flags and
    /// KVD_* variables override its values
    #[arg(
        long = "config",
        visible_alias = "config-file",
        env = "KVD_CONFIG_FILE",
        value_name = "PATH"
    )]
    pub config: Option<PathBuf>,

    /// Human-readable name of this member [default: default]
    #[arg(long, env = "KVD_NAME", value_name = "NAME")]
    pub name: Option<String>,

    /// Directory of the member's data [default: ./<name>.kvd]
    #[arg(long, env = "KVD_DATA_DIR", value_name = "PATH")]
    pub data_dir: Option<PathBuf>,

    /// Comma-separated URLs to serve clients on (http or https; host an IP or
    /// localhost) [default: http://127.0.0.1:2379]
    #[arg(long, env = "KVD_LISTEN_CLIENT_URLS", value_name = "URLS")]
    pub listen_client_urls: Option<String>,

    /// Comma-separated client URLs advertised to clients and the cluster
    /// [default: --listen-client-urls]
    #[arg(long, env = "KVD_ADVERTISE_CLIENT_URLS", value_name = "URLS")]
    pub advertise_client_urls: Option<String>,

    /// Comma-separated URLs to listen on for peer traffic (QUIC over UDP;
    /// http, https or quic) [default: http://127.0.0.1:2380]
    #[arg(long, env = "KVD_LISTEN_PEER_URLS", value_name = "URLS")]
    pub listen_peer_urls: Option<String>,

    /// Comma-separated peer URLs advertised to the other members
    /// [default: --listen-peer-urls]
    #[arg(long, env = "KVD_INITIAL_ADVERTISE_PEER_URLS", value_name = "URLS")]
    pub initial_advertise_peer_urls: Option<String>,

    /// Bootstrap membership, name=peer-url[,name=peer-url...]
    /// [default: <name>=<initial-advertise-peer-urls>]
    #[arg(long, env = "KVD_INITIAL_CLUSTER", value_name = "MEMBERS")]
    pub initial_cluster: Option<String>,

    /// Whether to bootstrap a new cluster or join an existing one [default: new]
    #[arg(
        long,
        env = "KVD_INITIAL_CLUSTER_STATE",
        value_name = "STATE",
        value_parser = ["new", "existing"]
    )]
    pub initial_cluster_state: Option<String>,

    /// Token that keeps clusters bootstrapped from the same --initial-cluster
    /// apart [default: kvd-cluster]
    #[arg(long, env = "KVD_INITIAL_CLUSTER_TOKEN", value_name = "TOKEN")]
    pub initial_cluster_token: Option<String>,

    /// Raft heartbeat interval, milliseconds [default: 100]
    #[arg(long, env = "KVD_HEARTBEAT_INTERVAL", value_name = "MS")]
    pub heartbeat_interval: Option<u64>,

    /// Raft election timeout, milliseconds; at least 5x the heartbeat
    /// interval [default: 1000]
    #[arg(long, env = "KVD_ELECTION_TIMEOUT", value_name = "MS")]
    pub election_timeout: Option<u64>,

    /// Applied entries between Raft snapshots [default: 10000]
    #[arg(long, env = "KVD_SNAPSHOT_COUNT", value_name = "N")]
    pub snapshot_count: Option<u64>,

    /// Backend size that raises the NOSPACE alarm, bytes; 0 = no limit
    /// [default: 0]
    #[arg(long, env = "KVD_QUOTA_BACKEND_BYTES", value_name = "BYTES")]
    pub quota_backend_bytes: Option<u64>,

    /// The storage engine's block cache, bytes (kvd only; memtables and
    /// journals have fixed budgets, see ARCHITECTURE.md) [default: 16777216]
    #[arg(long, env = "KVD_BACKEND_CACHE_BYTES", value_name = "BYTES")]
    pub backend_cache_bytes: Option<u64>,

    /// Largest client request accepted, bytes [default: 1572864]
    #[arg(long, env = "KVD_MAX_REQUEST_BYTES", value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,

    /// Most operations in one transaction [default: 128]
    #[arg(long, env = "KVD_MAX_TXN_OPS", value_name = "N")]
    pub max_txn_ops: Option<usize>,

    /// Log level: trace, debug, info, warn or error; RUST_LOG, when set,
    /// overrides it [default: info]
    #[arg(long, env = "KVD_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Promote a learner to a voting member as soon as it has caught up with
    /// the leader (kvd only; etcd's learners are promoted by hand)
    #[arg(long, env = "KVD_AUTO_PROMOTE", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub auto_promote: Option<bool>,

    /// Run the member's threads under Linux's SCHED_BATCH policy (no
    /// wake-up preemption: more work per thread switch; kvd only)
    /// [default: true]
    #[arg(long, env = "KVD_BATCH_SCHEDULING", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub batch_scheduling: Option<bool>,

    /// TLS and auth token flags.
    #[command(flatten)]
    pub security: security::SecurityArgs,

    /// Comma-separated origins allowed to call the HTTP endpoints from a
    /// browser (CORS), or * for any [default: *]
    #[arg(long, env = "KVD_CORS", value_name = "ORIGINS")]
    pub cors: Option<String>,

    /// Serve etcd's v2 keys API (/v2/keys) over the v3 key space
    /// [default: true]
    #[arg(long, env = "KVD_ENABLE_V2", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub enable_v2: Option<bool>,

    /// Serve the web console at /ui/ on the client port (assets embedded;
    /// with --client-cert-auth only over TLS) [default: false]
    #[arg(long, env = "KVD_ENABLE_UI", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub enable_ui: Option<bool>,

    /// Bootstrap from a v2 discovery URL (etcd's discovery protocol; any
    /// cluster serving /v2/keys can host it) instead of --initial-cluster
    #[arg(long, env = "KVD_DISCOVERY", value_name = "URL")]
    pub discovery: Option<String>,

    /// Bootstrap from the DNS SRV records _etcd-server-ssl._tcp.DOMAIN and
    /// _etcd-server._tcp.DOMAIN instead of --initial-cluster
    #[arg(long, env = "KVD_DISCOVERY_SRV", value_name = "DOMAIN")]
    pub discovery_srv: Option<String>,

    /// Suffix of the SRV service names queried by --discovery-srv
    /// (_etcd-server-NAME._tcp.DOMAIN)
    #[arg(long, env = "KVD_DISCOVERY_SRV_NAME", value_name = "NAME")]
    pub discovery_srv_name: Option<String>,
}

impl ServeArgs {
    /// The settings given on the command line or in `KVD_*` variables
    /// (`None` where neither sets one); `--config` is not among them.
    #[must_use]
    pub fn options(&self) -> ServeOptions {
        ServeOptions {
            name: self.name.clone(),
            data_dir: self.data_dir.clone(),
            listen_client_urls: self.listen_client_urls.clone(),
            advertise_client_urls: self.advertise_client_urls.clone(),
            listen_peer_urls: self.listen_peer_urls.clone(),
            initial_advertise_peer_urls: self.initial_advertise_peer_urls.clone(),
            initial_cluster: self.initial_cluster.clone(),
            initial_cluster_state: self.initial_cluster_state.clone(),
            initial_cluster_token: self.initial_cluster_token.clone(),
            heartbeat_interval: self.heartbeat_interval,
            election_timeout: self.election_timeout,
            snapshot_count: self.snapshot_count,
            quota_backend_bytes: self.quota_backend_bytes,
            backend_cache_bytes: self.backend_cache_bytes,
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops,
            log_level: self.log_level.clone(),
            auto_promote: self.auto_promote,
            batch_scheduling: self.batch_scheduling,
            client_transport_security: self.security.client_block(),
            peer_transport_security: self.security.peer_block(),
            cipher_suites: self.security.cipher_suite_list(),
            tls_min_version: self.security.tls_min_version.clone(),
            tls_max_version: self.security.tls_max_version.clone(),
            auth_token: self.security.auth_token.clone(),
            auth_token_ttl: self.security.auth_token_ttl,
            bcrypt_cost: self.security.bcrypt_cost,
            cors: self.cors.clone(),
            enable_v2: self.enable_v2,
            enable_ui: self.enable_ui,
            discovery: self.discovery.clone(),
            discovery_srv: self.discovery_srv.clone(),
            discovery_srv_name: self.discovery_srv_name.clone(),
        }
    }

    /// Reads `--config` (if any) and builds the validated config with the
    /// precedence flags > `KVD_<FLAG>` > file > defaults.
    ///
    /// # Errors
    /// A [`ConfigError`] for an unreadable or invalid file, or any value
    /// [`ServeOptions::resolve`] rejects; the caller exits with [`ExitCode::USAGE`].
    pub fn load(&self) -> Result<ServeConfig, ConfigError> {
        options::load(self.options(), self.config.as_deref())
    }

    /// The flags merged over `--config` (precedence flags > `KVD_<FLAG>` >
    /// file), not yet resolved: the discovery flags still to run.
    ///
    /// # Errors
    /// [`ConfigError::ReadFile`] / [`ConfigError::ParseFile`] for the file.
    pub fn merged(&self) -> Result<ServeOptions, ConfigError> {
        options::merge(self.options(), self.config.as_deref())
    }
}

/// Runs a member with a config from [`ServeArgs::load`] until it is shut
/// down, prints any error as one `error: …` line on stderr, and returns the
/// process exit code: [`ExitCode::OK`], [`ExitCode::ERROR`] for a runtime failure, or
/// [`ExitCode::USAGE`] for a configuration the data dir rejects.
///
/// Under systemd (`Type=notify`, `NOTIFY_SOCKET` set) it sends `READY=1`
/// once the member serves clients and `STOPPING=1` when a signal stops it.
pub async fn run(cfg: ServeConfig) -> ExitCode {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        notify_systemd(sd_notify::NotifyState::Stopping);
        stop_tx.send_replace(true);
    });
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        if ready.await.is_ok() {
            notify_systemd(sd_notify::NotifyState::Ready);
        }
    });
    match server::run(cfg, stop, ready_tx).await {
        Ok(()) => ExitCode::OK,
        Err(ServeError::Config(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::USAGE
        }
        Err(ServeError::Other(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::ERROR
        }
    }
}

/// Tells systemd `state` when it started this process with a
/// `NOTIFY_SOCKET` (nothing otherwise).
fn notify_systemd(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
