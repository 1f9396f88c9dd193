//! The settings of `kvd serve` as its sources give them (flags, `KVD_*`
//! variables, the YAML file with etcd's keys), merged with etcd's precedence
//! and defaults and validated into a [`ServeConfig`], with every refusal
//! worded by flag as etcd words it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::config::{AuthSettings, ClusterState, HttpFace, ServeConfig};
use crate::core::urls::{
    lower_first, parse_initial_cluster, parse_url_list, InitialClusterError, ParsedUrl, UrlError,
    CLIENT_URL_SCHEMES, PEER_URL_SCHEMES,
};
use crate::modes::serve::security::{
    self, or_block, TransportSecurity, DEFAULT_AUTH_TOKEN, DEFAULT_AUTH_TOKEN_TTL,
    DEFAULT_BCRYPT_COST,
};

#[cfg(test)]
mod tests;

/// etcd's default member name (`--name`).
pub const DEFAULT_NAME: &str = "default";
/// etcd's default `--listen-client-urls` (and so `--advertise-client-urls`).
pub const DEFAULT_LISTEN_CLIENT_URLS: &str = "http://127.0.0.1:2379";
/// etcd's default `--listen-peer-urls` (and so `--initial-advertise-peer-urls`).
pub const DEFAULT_LISTEN_PEER_URLS: &str = "http://127.0.0.1:2380";
/// Default `--initial-cluster-state`.
pub const DEFAULT_INITIAL_CLUSTER_STATE: &str = "new";
/// Default `--initial-cluster-token` (etcd's is `etcd-cluster`).
pub const DEFAULT_INITIAL_CLUSTER_TOKEN: &str = "kvd-cluster";
/// Default `--heartbeat-interval`, milliseconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Default `--election-timeout`, milliseconds.
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 1000;
/// Longest `--election-timeout` accepted, milliseconds (etcd's limit).
pub const MAX_ELECTION_TIMEOUT_MS: u64 = 50_000;
/// Default `--snapshot-count`, applied entries.
pub const DEFAULT_SNAPSHOT_COUNT: u64 = 10_000;
/// Default `--quota-backend-bytes`, bytes (0 = no limit).
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 0;
/// Default `--backend-cache-bytes`: the storage engine's block cache, bytes
/// (16 MiB; see `core::storage` for the whole memory budget).
pub const DEFAULT_BACKEND_CACHE_BYTES: u64 = 16 << 20;
/// Default `--max-request-bytes`, bytes (1.5 MiB, etcd's).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1_572_864;
/// Default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// Default `--log-level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Values `--log-level` accepts.
pub const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

/// Why a configuration was rejected. Every message is one lowercase line;
/// `kvd serve` prints it as `error: <message>` and exits with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read config file {}: {message}", path.display())]
    ReadFile {
        /// The file as given.
        path: PathBuf,
        /// The I/O error, lowercased.
        message: String,
    },
    /// The `--config` file is not valid YAML for [`ServeOptions`] (syntax,
    /// wrong type, or an unknown key).
    #[error("invalid config file {}: {message}", path.display())]
    ParseFile {
        /// The file as given.
        path: PathBuf,
        /// serde_yaml's message, with its line and column.
        message: String,
    },
    /// A URL in a URL-list setting is unusable.
    #[error("invalid url {url:?} in --{flag}: {reason}")]
    Url {
        /// The setting's flag name, without dashes (`listen-client-urls`).
        flag: &'static str,
        /// The URL as written.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Any other invalid value or inconsistent combination; the message names
    /// the flag(s), in etcd's wording where etcd has a check of its own.
    #[error("{0}")]
    Invalid(String),
}

/// The settings of one source (command line + `KVD_*` environment, or the
/// YAML file), each `None` when that source leaves it unset.
///
/// Deserializes from etcd's config-file keys (`data-dir`, `initial-cluster`,
/// …); URL lists are comma-separated strings as in etcd's YAML. Unknown keys
/// are rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeOptions {
    /// `name`: the member's name.
    pub name: Option<String>,
    /// `data-dir`: the member's data directory.
    pub data_dir: Option<PathBuf>,
    /// `listen-client-urls`: comma-separated client URLs to bind.
    pub listen_client_urls: Option<String>,
    /// `advertise-client-urls`: comma-separated client URLs to advertise.
    pub advertise_client_urls: Option<String>,
    /// `listen-peer-urls`: comma-separated peer URLs to bind.
    pub listen_peer_urls: Option<String>,
    /// `initial-advertise-peer-urls`: comma-separated peer URLs to advertise.
    pub initial_advertise_peer_urls: Option<String>,
    /// `initial-cluster`: `name=peer-url,…`.
    pub initial_cluster: Option<String>,
    /// `initial-cluster-state`: `new` or `existing`.
    pub initial_cluster_state: Option<String>,
    /// `initial-cluster-token`.
    pub initial_cluster_token: Option<String>,
    /// `heartbeat-interval`, milliseconds.
    pub heartbeat_interval: Option<u64>,
    /// `election-timeout`, milliseconds.
    pub election_timeout: Option<u64>,
    /// `snapshot-count`, applied entries.
    pub snapshot_count: Option<u64>,
    /// `quota-backend-bytes`, bytes (0 = no limit).
    pub quota_backend_bytes: Option<u64>,
    /// `backend-cache-bytes`, bytes (kvd only).
    pub backend_cache_bytes: Option<u64>,
    /// `max-request-bytes`, bytes.
    pub max_request_bytes: Option<usize>,
    /// `max-txn-ops`.
    pub max_txn_ops: Option<usize>,
    /// `log-level`: trace, debug, info, warn or error.
    pub log_level: Option<String>,
    /// `auto-promote`: promote caught-up learners (kvd only).
    pub auto_promote: Option<bool>,
    /// `batch-scheduling`: the member's threads under SCHED_BATCH (kvd
    /// only; default true). Read by the binary before any thread starts.
    pub batch_scheduling: Option<bool>,
    /// `client-transport-security`: the client port's TLS.
    pub client_transport_security: Option<TransportSecurity>,
    /// `peer-transport-security`: the peer port's TLS.
    pub peer_transport_security: Option<TransportSecurity>,
    /// `cipher-suites`: TLS 1.2 suites, Go's names.
    pub cipher_suites: Option<Vec<String>>,
    /// `tls-min-version`: TLS1.2 or TLS1.3.
    pub tls_min_version: Option<String>,
    /// `tls-max-version`: TLS1.2 or TLS1.3.
    pub tls_max_version: Option<String>,
    /// `auth-token`: `simple` or `jwt,…`.
    pub auth_token: Option<String>,
    /// `auth-token-ttl`, seconds.
    pub auth_token_ttl: Option<u64>,
    /// `bcrypt-cost`.
    pub bcrypt_cost: Option<u32>,
    /// `cors`: comma-separated origins allowed by CORS, or `*`.
    pub cors: Option<String>,
    /// `enable-v2`: serve the v2 keys API.
    pub enable_v2: Option<bool>,
    /// `enable-ui`: serve the web console at /ui/.
    pub enable_ui: Option<bool>,
    /// `discovery`: a v2 discovery URL to bootstrap from.
    pub discovery: Option<String>,
    /// `discovery-srv`: a DNS domain whose SRV records list the members.
    pub discovery_srv: Option<String>,
    /// `discovery-srv-name`: a suffix of the SRV service names.
    pub discovery_srv_name: Option<String>,
}

impl ServeOptions {
    /// Parses YAML text with etcd's config-file keys. An empty document (or
    /// one of comments only) sets nothing.
    ///
    /// # Errors
    /// [`ConfigError::ParseFile`] (naming `path`) on invalid YAML, a value of
    /// the wrong type, or an unknown key.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let parsed: Option<ServeOptions> =
            serde_yaml::from_str(text).map_err(|e| ConfigError::ParseFile {
                path: path.to_path_buf(),
                message: one_line(&e.to_string()),
            })?;
        Ok(parsed.unwrap_or_default())
    }

    /// Reads and parses a YAML config file (see [`ServeOptions::from_yaml`]).
    ///
    /// # Errors
    /// [`ConfigError::ReadFile`] if the file cannot be read;
    /// [`ConfigError::ParseFile`] if it is not valid.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::ReadFile {
            path: path.to_path_buf(),
            message: lower_first(&e.to_string()),
        })?;
        Self::from_yaml(&text, path)
    }

    /// Field by field, keeps `self`'s value where set and takes `lower`'s otherwise.
    #[must_use]
    pub fn or(self, lower: ServeOptions) -> ServeOptions {
        ServeOptions {
            name: self.name.or(lower.name),
            data_dir: self.data_dir.or(lower.data_dir),
            listen_client_urls: self.listen_client_urls.or(lower.listen_client_urls),
            advertise_client_urls: self.advertise_client_urls.or(lower.advertise_client_urls),
            listen_peer_urls: self.listen_peer_urls.or(lower.listen_peer_urls),
            initial_advertise_peer_urls: self
                .initial_advertise_peer_urls
                .or(lower.initial_advertise_peer_urls),
            initial_cluster: self.initial_cluster.or(lower.initial_cluster),
            initial_cluster_state: self.initial_cluster_state.or(lower.initial_cluster_state),
            initial_cluster_token: self.initial_cluster_token.or(lower.initial_cluster_token),
            heartbeat_interval: self.heartbeat_interval.or(lower.heartbeat_interval),
            election_timeout: self.election_timeout.or(lower.election_timeout),
            snapshot_count: self.snapshot_count.or(lower.snapshot_count),
            quota_backend_bytes: self.quota_backend_bytes.or(lower.quota_backend_bytes),
            backend_cache_bytes: self.backend_cache_bytes.or(lower.backend_cache_bytes),
            max_request_bytes: self.max_request_bytes.or(lower.max_request_bytes),
            max_txn_ops: self.max_txn_ops.or(lower.max_txn_ops),
            log_level: self.log_level.or(lower.log_level),
            auto_promote: self.auto_promote.or(lower.auto_promote),
            batch_scheduling: self.batch_scheduling.or(lower.batch_scheduling),
            client_transport_security: or_block(
                self.client_transport_security,
                lower.client_transport_security,
            ),
            peer_transport_security: or_block(
                self.peer_transport_security,
                lower.peer_transport_security,
            ),
            cipher_suites: self.cipher_suites.or(lower.cipher_suites),
            tls_min_version: self.tls_min_version.or(lower.tls_min_version),
            tls_max_version: self.tls_max_version.or(lower.tls_max_version),
            auth_token: self.auth_token.or(lower.auth_token),
            auth_token_ttl: self.auth_token_ttl.or(lower.auth_token_ttl),
            bcrypt_cost: self.bcrypt_cost.or(lower.bcrypt_cost),
            cors: self.cors.or(lower.cors),
            enable_v2: self.enable_v2.or(lower.enable_v2),
            enable_ui: self.enable_ui.or(lower.enable_ui),
            discovery: self.discovery.or(lower.discovery),
            discovery_srv: self.discovery_srv.or(lower.discovery_srv),
            discovery_srv_name: self.discovery_srv_name.or(lower.discovery_srv_name),
        }
    }

    /// Fills unset values with etcd's defaults and validates the result.
    ///
    /// Defaults that depend on others: `data-dir` = `./<name>.kvd`,
    /// `advertise-client-urls` = `listen-client-urls`,
    /// `initial-advertise-peer-urls` = `listen-peer-urls`, `initial-cluster` =
    /// `<name>=<each initial-advertise-peer-url>`. Hosts must be IP literals
    /// or `localhost` (taken as 127.0.0.1).
    ///
    /// # Errors
    /// [`ConfigError::Url`] for an unparsable URL, a wrong scheme, a missing
    /// port, a path, or a host name; [`ConfigError::Invalid`] for any other
    /// bad value or inconsistency (own name missing from `initial-cluster`,
    /// advertised peer URLs not matching it, election timeout under 5×
    /// heartbeat, …).
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let name = self.name.unwrap_or_else(|| DEFAULT_NAME.to_string());
        if name.is_empty() {
            return Err(invalid("--name must not be empty"));
        }
        if name.contains(['=', ',']) {
            return Err(invalid(format!(
                "--name {name:?} must not contain '=' or ','"
            )));
        }

        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from(format!("./{name}.kvd")));
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("--data-dir must not be empty"));
        }

        let listen_client_urls = self
            .listen_client_urls
            .unwrap_or_else(|| DEFAULT_LISTEN_CLIENT_URLS.to_string());
        let listen_client = url_list(
            "listen-client-urls",
            &listen_client_urls,
            &CLIENT_URL_SCHEMES,
        )?;
        let client_tls =
            security::client_files(self.client_transport_security.as_ref()).map_err(invalid)?;
        // etcd refuses an https URL with nothing to serve it with.
        if let Some(u) = listen_client.iter().find(|u| u.scheme == "https") {
            if !client_tls.enabled() {
                return Err(invalid(format!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for client url {} with HTTPS scheme",
                    u.raw
                )));
            }
        }
        let client_tls_addrs = listen_client
            .iter()
            .filter(|u| u.scheme == "https")
            .map(|u| u.addr)
            .collect();
        let listen_client_addrs = listen_client.into_iter().map(|u| u.addr).collect();
        let peer_tls =
            security::peer_tls(self.peer_transport_security.as_ref()).map_err(invalid)?;
        let tls_policy = security::tls_policy(
            self.cipher_suites.clone(),
            self.tls_min_version.as_deref(),
            self.tls_max_version.as_deref(),
        )
        .map_err(invalid)?;
        let token = self
            .auth_token
            .clone()
            .unwrap_or_else(|| DEFAULT_AUTH_TOKEN.to_string());
        let auth = AuthSettings {
            jwt: security::jwt_options(&token).map_err(invalid)?,
            token,
            token_ttl: Duration::from_secs(self.auth_token_ttl.unwrap_or(DEFAULT_AUTH_TOKEN_TTL)),
            bcrypt_cost: self.bcrypt_cost.unwrap_or(DEFAULT_BCRYPT_COST),
        };
        auth.validate().map_err(invalid)?;
        let advertise_client_urls = self.advertise_client_urls.unwrap_or(listen_client_urls);
        let advertised_client = url_list(
            "advertise-client-urls",
            &advertise_client_urls,
            &CLIENT_URL_SCHEMES,
        )?;

        let listen_peer_urls = self
            .listen_peer_urls
            .unwrap_or_else(|| DEFAULT_LISTEN_PEER_URLS.to_string());
        let listen_peer_addrs = url_list("listen-peer-urls", &listen_peer_urls, &PEER_URL_SCHEMES)?
            .into_iter()
            .map(|u| u.addr)
            .collect();
        let initial_advertise_peer_urls =
            self.initial_advertise_peer_urls.unwrap_or(listen_peer_urls);
        let advertised_peer = url_list(
            "initial-advertise-peer-urls",
            &initial_advertise_peer_urls,
            &PEER_URL_SCHEMES,
        )?;

        let initial_cluster_text = self.initial_cluster.unwrap_or_else(|| {
            advertised_peer
                .iter()
                .map(|u| format!("{name}={}", u.raw))
                .collect::<Vec<_>>()
                .join(",")
        });
        let cluster =
            parse_initial_cluster(&initial_cluster_text).map_err(initial_cluster_error)?;

        let initial_cluster_state = match self
            .initial_cluster_state
            .as_deref()
            .unwrap_or(DEFAULT_INITIAL_CLUSTER_STATE)
        {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            other => {
                return Err(invalid(format!(
                    "invalid value {other:?} for --initial-cluster-state: valid values are \"new\" and \"existing\""
                )))
            }
        };

        // etcd's hasLocalMember, checked for both states.
        let Some(own) = cluster.iter().find(|(member, _)| member.name == name) else {
            return Err(invalid(format!(
                "couldn't find local name {name:?} in the initial cluster configuration"
            )));
        };
        // etcd's advertiseMatchesCluster, checked only when bootstrapping.
        if initial_cluster_state == ClusterState::New {
            advertise_matches_cluster(&name, &advertised_peer, &own.1)?;
        }

        let initial_cluster_token = self
            .initial_cluster_token
            .unwrap_or_else(|| DEFAULT_INITIAL_CLUSTER_TOKEN.to_string());
        if initial_cluster_token.is_empty() {
            return Err(invalid("--initial-cluster-token must not be empty"));
        }

        let heartbeat_ms = self
            .heartbeat_interval
            .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL_MS);
        let election_ms = self.election_timeout.unwrap_or(DEFAULT_ELECTION_TIMEOUT_MS);
        if heartbeat_ms == 0 {
            return Err(invalid("--heartbeat-interval must be greater than 0"));
        }
        if heartbeat_ms.saturating_mul(5) > election_ms {
            return Err(invalid(format!(
                "--election-timeout[{election_ms}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat_ms}ms]"
            )));
        }
        if election_ms > MAX_ELECTION_TIMEOUT_MS {
            return Err(invalid(format!(
                "--election-timeout[{election_ms}ms] is too long, and should be set less than {MAX_ELECTION_TIMEOUT_MS}ms"
            )));
        }

        let snapshot_count = self.snapshot_count.unwrap_or(DEFAULT_SNAPSHOT_COUNT);
        if snapshot_count == 0 {
            return Err(invalid("--snapshot-count must be greater than 0"));
        }
        let max_request_bytes = self.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if max_request_bytes == 0 {
            return Err(invalid("--max-request-bytes must be greater than 0"));
        }
        let max_txn_ops = self.max_txn_ops.unwrap_or(DEFAULT_MAX_TXN_OPS);
        if max_txn_ops == 0 {
            return Err(invalid("--max-txn-ops must be greater than 0"));
        }

        let cors: Vec<String> = self
            .cors
            .as_deref()
            .unwrap_or("*")
            .split(',')
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .collect();
        let log_level = self
            .log_level
            .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string())
            .to_ascii_lowercase();
        if !LOG_LEVELS.contains(&log_level.as_str()) {
            return Err(invalid(format!(
                "invalid value {log_level:?} for --log-level: valid values are {}",
                LOG_LEVELS.join(", ")
            )));
        }

        Ok(ServeConfig {
            name,
            data_dir,
            listen_client_addrs,
            advertise_client_urls: advertised_client.into_iter().map(|u| u.raw).collect(),
            listen_peer_addrs,
            initial_advertise_peer_urls: advertised_peer.into_iter().map(|u| u.raw).collect(),
            initial_cluster: cluster.into_iter().map(|(member, _)| member).collect(),
            initial_cluster_state,
            initial_cluster_token,
            heartbeat_interval: Duration::from_millis(heartbeat_ms),
            election_timeout: Duration::from_millis(election_ms),
            snapshot_count,
            max_request_bytes,
            max_txn_ops,
            quota_backend_bytes: self
                .quota_backend_bytes
                .unwrap_or(DEFAULT_QUOTA_BACKEND_BYTES),
            backend_cache_bytes: self
                .backend_cache_bytes
                .unwrap_or(DEFAULT_BACKEND_CACHE_BYTES),
            log_level,
            auto_promote: self.auto_promote.unwrap_or(false),
            client_tls,
            client_tls_addrs,
            peer_tls,
            tls_policy,
            auth,
            http: HttpFace {
                cors,
                enable_v2: self.enable_v2.unwrap_or(true),
                enable_ui: self.enable_ui.unwrap_or(false),
            },
        })
    }
}

/// Merges `overrides` (explicit flags, then `KVD_<FLAG>` environment,
/// already merged by the caller) over `config_file`, not yet resolved.
///
/// # Errors
/// [`ConfigError::ReadFile`] / [`ConfigError::ParseFile`] for the file.
pub fn merge(
    overrides: ServeOptions,
    config_file: Option<&Path>,
) -> Result<ServeOptions, ConfigError> {
    let file = match config_file {
        Some(path) => ServeOptions::from_file(path)?,
        None => ServeOptions::default(),
    };
    Ok(overrides.or(file))
}

/// Builds the validated config of `kvd serve` with the precedence
/// `overrides` > `config_file` > etcd's defaults ([`merge`], then
/// [`ServeOptions::resolve`]).
///
/// # Errors
/// [`ConfigError::ReadFile`] / [`ConfigError::ParseFile`] for the file, and
/// whatever [`ServeOptions::resolve`] rejects.
pub fn load(
    overrides: ServeOptions,
    config_file: Option<&Path>,
) -> Result<ServeConfig, ConfigError> {
    merge(overrides, config_file)?.resolve()
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// A URL-list setting, refused by flag name.
fn url_list(
    flag: &'static str,
    list: &str,
    schemes: &[&str],
) -> Result<Vec<ParsedUrl>, ConfigError> {
    if list.trim().is_empty() {
        return Err(invalid(format!("--{flag} must not be empty")));
    }
    parse_url_list(list, schemes).map_err(|e| url_error(flag, e))
}

fn url_error(flag: &'static str, e: UrlError) -> ConfigError {
    ConfigError::Url {
        flag,
        url: e.url,
        reason: e.reason,
    }
}

/// `--initial-cluster` refusals in etcd's (and kvd's earlier) wording.
fn initial_cluster_error(e: InitialClusterError) -> ConfigError {
    match e {
        InitialClusterError::Empty => invalid("--initial-cluster must not be empty"),
        InitialClusterError::NoName(entry) => invalid(format!(
            "invalid --initial-cluster entry {entry:?}: expected name=peer-url"
        )),
        InitialClusterError::EmptyName(entry) => invalid(format!(
            "invalid --initial-cluster entry {entry:?}: empty member name"
        )),
        InitialClusterError::Url(e) => url_error("initial-cluster", e),
        dup @ InitialClusterError::DuplicateUrl { .. } => invalid(dup.to_string()),
    }
}

/// etcd's check that a bootstrapping member advertises exactly the peer URLs
/// its `--initial-cluster` entry lists (compared after resolving `localhost`).
fn advertise_matches_cluster(
    name: &str,
    advertised: &[ParsedUrl],
    in_cluster: &[ParsedUrl],
) -> Result<(), ConfigError> {
    let advertised_str = advertised
        .iter()
        .map(|u| u.raw.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let missing_from_advertised: Vec<String> = in_cluster
        .iter()
        .filter(|c| !advertised.iter().any(|a| a.same_endpoint(c)))
        .map(|c| format!("{name}={}", c.raw))
        .collect();
    if !missing_from_advertised.is_empty() {
        return Err(invalid(format!(
            "--initial-cluster has {} but missing from --initial-advertise-peer-urls={advertised_str}",
            missing_from_advertised.join(",")
        )));
    }
    let missing_from_cluster: Vec<&str> = advertised
        .iter()
        .filter(|a| !in_cluster.iter().any(|c| c.same_endpoint(a)))
        .map(|a| a.raw.as_str())
        .collect();
    if !missing_from_cluster.is_empty() {
        let own_entry = in_cluster
            .iter()
            .map(|c| format!("{name}={}", c.raw))
            .collect::<Vec<_>>()
            .join(",");
        return Err(invalid(format!(
            "--initial-advertise-peer-urls has {} but missing from --initial-cluster={own_entry}",
            missing_from_cluster.join(",")
        )));
    }
    Ok(())
}

/// `s` folded onto one line.
fn one_line(s: &str) -> String {
    lower_first(&s.split_whitespace().collect::<Vec<_>>().join(" "))
}
