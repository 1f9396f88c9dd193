//! The validated configuration of a serving member (`kvd serve`).
//!
//! `modes/serve` parses flags, `KVD_<FLAG>` environment overrides and the YAML
//! file once into a [`ServeConfig`]; nothing below `core` reads argv or env.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::{Host, Url};

/// Whether this member bootstraps a new cluster or joins an existing one
/// (etcd's `--initial-cluster-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `--initial-cluster`.
    New,
    /// Join a cluster that already exists (the member was added with `member add`).
    Existing,
}

/// One entry of `--initial-cluster`: `name=peer-url[,name=peer-url…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    /// The member's `--name`.
    pub name: String,
    /// Its advertised peer URLs, as written (`http://`, `https://` or `quic://`).
    pub peer_urls: Vec<String>,
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
    /// `tracing` filter (`--log-level`: debug, info, warn, error).
    pub log_level: String,
    /// Promote a learner to voter once it has caught up (`--auto-promote`;
    /// etcd has no such option).
    pub auto_promote: bool,
}

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
/// Default `--max-request-bytes`, bytes (1.5 MiB, etcd's).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1_572_864;
/// Default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// Default `--log-level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Values `--log-level` accepts.
pub const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

/// URL schemes accepted for peer URLs (peers always talk QUIC; the scheme is
/// kept as written so etcd's `http://`/`https://` peer URLs work unchanged).
pub const PEER_URL_SCHEMES: [&str; 3] = ["http", "https", "quic"];
/// URL schemes accepted for client URLs.
pub const CLIENT_URL_SCHEMES: [&str; 2] = ["http", "https"];

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
/// are rejected. TLS settings will join this struct later.
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
    /// `max-request-bytes`, bytes.
    pub max_request_bytes: Option<usize>,
    /// `max-txn-ops`.
    pub max_txn_ops: Option<usize>,
    /// `log-level`: trace, debug, info, warn or error.
    pub log_level: Option<String>,
    /// `auto-promote`: promote caught-up learners (kvd only).
    pub auto_promote: Option<bool>,
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
            max_request_bytes: self.max_request_bytes.or(lower.max_request_bytes),
            max_txn_ops: self.max_txn_ops.or(lower.max_txn_ops),
            log_level: self.log_level.or(lower.log_level),
            auto_promote: self.auto_promote.or(lower.auto_promote),
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
        let listen_client_addrs = parse_url_list(
            "listen-client-urls",
            &listen_client_urls,
            &CLIENT_URL_SCHEMES,
        )?
        .into_iter()
        .map(|u| u.addr)
        .collect();
        let advertise_client_urls = self.advertise_client_urls.unwrap_or(listen_client_urls);
        let advertised_client = parse_url_list(
            "advertise-client-urls",
            &advertise_client_urls,
            &CLIENT_URL_SCHEMES,
        )?;

        let listen_peer_urls = self
            .listen_peer_urls
            .unwrap_or_else(|| DEFAULT_LISTEN_PEER_URLS.to_string());
        let listen_peer_addrs =
            parse_url_list("listen-peer-urls", &listen_peer_urls, &PEER_URL_SCHEMES)?
                .into_iter()
                .map(|u| u.addr)
                .collect();
        let initial_advertise_peer_urls =
            self.initial_advertise_peer_urls.unwrap_or(listen_peer_urls);
        let advertised_peer = parse_url_list(
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
        let cluster = parse_initial_cluster(&initial_cluster_text)?;

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
            log_level,
            auto_promote: self.auto_promote.unwrap_or(false),
        })
    }
}

/// Builds the validated config of `kvd serve` with the precedence
/// `overrides` (explicit flags, then `KVD_<FLAG>` environment, already merged
/// by the caller) > `config_file` > etcd's defaults.
///
/// # Errors
/// [`ConfigError::ReadFile`] / [`ConfigError::ParseFile`] for the file, and
/// whatever [`ServeOptions::resolve`] rejects.
pub fn load(
    overrides: ServeOptions,
    config_file: Option<&Path>,
) -> Result<ServeConfig, ConfigError> {
    let file = match config_file {
        Some(path) => ServeOptions::from_file(path)?,
        None => ServeOptions::default(),
    };
    overrides.or(file).resolve()
}

/// The socket address a peer or client URL names (`localhost` is 127.0.0.1),
/// e.g. to dial a member's advertised peer URL from [`InitialMember::peer_urls`].
///
/// # Errors
/// [`ConfigError::Url`] (reported under `--initial-cluster`) if the URL is
/// not one [`ServeOptions::resolve`] would accept as a peer URL.
pub fn url_socket_addr(url: &str) -> Result<SocketAddr, ConfigError> {
    parse_url("initial-cluster", url, &PEER_URL_SCHEMES).map(|u| u.addr)
}

/// One URL of a URL-list setting, checked and resolved.
#[derive(Debug, Clone)]
struct ParsedUrl {
    /// As written (trimmed), kept for advertising.
    raw: String,
    /// Lowercased scheme; two URLs are the same endpoint when scheme and address match.
    scheme: String,
    /// Host and port, with `localhost` resolved.
    addr: SocketAddr,
}

impl ParsedUrl {
    fn same_endpoint(&self, other: &ParsedUrl) -> bool {
        self.scheme == other.scheme && self.addr == other.addr
    }
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

/// Splits a comma-separated URL list and checks each URL.
fn parse_url_list(
    flag: &'static str,
    list: &str,
    schemes: &[&str],
) -> Result<Vec<ParsedUrl>, ConfigError> {
    if list.trim().is_empty() {
        return Err(invalid(format!("--{flag} must not be empty")));
    }
    list.split(',')
        .map(|raw| parse_url(flag, raw, schemes))
        .collect()
}

fn parse_url(flag: &'static str, raw: &str, schemes: &[&str]) -> Result<ParsedUrl, ConfigError> {
    let raw = raw.trim();
    let bad = |reason: String| ConfigError::Url {
        flag,
        url: raw.to_string(),
        reason,
    };
    let url = Url::parse(raw).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            bad("missing scheme (expected scheme://host:port)".to_string())
        }
        other => bad(lower_first(&other.to_string())),
    })?;
    let scheme = url.scheme().to_ascii_lowercase();
    if !schemes.contains(&scheme.as_str()) {
        return Err(bad(format!(
            "scheme {scheme:?} is not supported (use {})",
            schemes.join(", ")
        )));
    }
    // `Url` drops a scheme's default port (`http://h:80`), so look at the text.
    let port = match url.port_or_known_default() {
        Some(port) if has_explicit_port(raw) => port,
        _ => return Err(bad("missing port".to_string())),
    };
    let ip = match url.host() {
        None => return Err(bad("missing host".to_string())),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        // Non-special schemes (quic://) keep IPv4 hosts as opaque strings.
        Some(Host::Domain(domain)) => match domain.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) if domain.eq_ignore_ascii_case("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
            // A DNS name (etcd accepts them in advertised URLs): resolved now.
            Err(_) => match std::net::ToSocketAddrs::to_socket_addrs(&(domain, port)) {
                Ok(mut addrs) => match addrs.next() {
                    Some(a) => a.ip(),
                    None => return Err(bad(format!("host {domain:?} does not resolve"))),
                },
                Err(e) => return Err(bad(format!("host {domain:?} does not resolve: {e}"))),
            },
        },
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not contain a path".to_string()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not contain user information".to_string()));
    }
    Ok(ParsedUrl {
        raw: raw.to_string(),
        scheme,
        addr: SocketAddr::new(ip, port),
    })
}

/// Whether the authority of `raw` (`scheme://[user@]host[:port]/…`) has a
/// non-empty `:port`.
fn has_explicit_port(raw: &str) -> bool {
    let Some((_, rest)) = raw.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let after_host = if host_port.starts_with('[') {
        host_port.find(']').map_or("", |i| &host_port[i + 1..])
    } else {
        host_port.find(':').map_or("", |i| &host_port[i..])
    };
    after_host.strip_prefix(':').is_some_and(|p| !p.is_empty())
}

/// Parses `name=url,name=url,…` into members in order of first appearance
/// (a name may repeat to give a member several URLs), with their checked URLs.
fn parse_initial_cluster(text: &str) -> Result<Vec<(InitialMember, Vec<ParsedUrl>)>, ConfigError> {
    if text.trim().is_empty() {
        return Err(invalid("--initial-cluster must not be empty"));
    }
    let mut members: Vec<(InitialMember, Vec<ParsedUrl>)> = Vec::new();
    for entry in text.split(',') {
        let entry = entry.trim();
        let Some((name, url)) = entry.split_once('=') else {
            return Err(invalid(format!(
                "invalid --initial-cluster entry {entry:?}: expected name=peer-url"
            )));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(invalid(format!(
                "invalid --initial-cluster entry {entry:?}: empty member name"
            )));
        }
        let url = parse_url("initial-cluster", url, &PEER_URL_SCHEMES)?;
        let duplicate = members
            .iter()
            .flat_map(|(_, urls)| urls)
            .any(|seen| seen.same_endpoint(&url));
        if duplicate {
            return Err(invalid(format!(
                "initial cluster {text} has duplicate url {}",
                url.raw
            )));
        }
        match members.iter_mut().find(|(member, _)| member.name == name) {
            Some((member, urls)) => {
                member.peer_urls.push(url.raw.clone());
                urls.push(url);
            }
            None => members.push((
                InitialMember {
                    name: name.to_string(),
                    peer_urls: vec![url.raw.clone()],
                },
                vec![url],
            )),
        }
    }
    Ok(members)
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

/// `s` with its first character lowercased (for OS and library messages).
fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `s` folded onto one line.
fn one_line(s: &str) -> String {
    lower_first(&s.split_whitespace().collect::<Vec<_>>().join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ServeOptions {
        ServeOptions::default()
    }

    fn err(o: ServeOptions) -> String {
        o.resolve().unwrap_err().to_string()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_arguments_give_etcds_single_node_defaults() {
        let cfg = opts().resolve().unwrap();
        assert_eq!(cfg.name, "default");
        assert_eq!(cfg.data_dir, PathBuf::from("./default.kvd"));
        assert_eq!(cfg.listen_client_addrs, vec![addr("127.0.0.1:2379")]);
        assert_eq!(cfg.advertise_client_urls, vec!["http://127.0.0.1:2379"]);
        assert_eq!(cfg.listen_peer_addrs, vec![addr("127.0.0.1:2380")]);
        assert_eq!(
            cfg.initial_advertise_peer_urls,
            vec!["http://127.0.0.1:2380"]
        );
        assert_eq!(
            cfg.initial_cluster,
            vec![InitialMember {
                name: "default".into(),
                peer_urls: vec!["http://127.0.0.1:2380".into()],
            }]
        );
        assert_eq!(cfg.initial_cluster_state, ClusterState::New);
        assert_eq!(cfg.initial_cluster_token, "kvd-cluster");
        assert_eq!(cfg.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(cfg.election_timeout, Duration::from_millis(1000));
        assert_eq!(cfg.snapshot_count, 10_000);
        assert_eq!(cfg.quota_backend_bytes, 0);
        assert_eq!(cfg.max_request_bytes, 1_572_864);
        assert_eq!(cfg.max_txn_ops, 128);
        assert_eq!(cfg.log_level, "info");
    }

    #[test]
    fn derived_defaults_follow_name_and_urls() {
        let cfg = ServeOptions {
            name: Some("infra1".into()),
            listen_client_urls: Some("http://0.0.0.0:12379".into()),
            listen_peer_urls: Some("quic://127.0.0.1:12380, http://[::1]:12381".into()),
            ..opts()
        }
        .resolve()
        .unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("./infra1.kvd"));
        assert_eq!(cfg.advertise_client_urls, vec!["http://0.0.0.0:12379"]);
        assert_eq!(
            cfg.listen_peer_addrs,
            vec![addr("127.0.0.1:12380"), addr("[::1]:12381")]
        );
        assert_eq!(
            cfg.initial_cluster[0].peer_urls,
            vec!["quic://127.0.0.1:12380", "http://[::1]:12381"]
        );
    }

    #[test]
    fn three_member_cluster_parses_in_order() {
        let cfg = ServeOptions {
            name: Some("infra2".into()),
            listen_peer_urls: Some("http://127.0.0.1:22380".into()),
            initial_cluster: Some(
                "infra1=http://127.0.0.1:2380,infra2=http://127.0.0.1:22380,infra3=http://127.0.0.1:32380"
                    .into(),
            ),
            initial_cluster_state: Some("existing".into()),
            ..opts()
        }
        .resolve()
        .unwrap();
        let names: Vec<_> = cfg
            .initial_cluster
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["infra1", "infra2", "infra3"]);
        assert_eq!(cfg.initial_cluster_state, ClusterState::Existing);
    }

    #[test]
    fn localhost_resolves_to_loopback() {
        let cfg = ServeOptions {
            listen_client_urls: Some("http://localhost:2379".into()),
            listen_peer_urls: Some("http://localhost:2380".into()),
            // Same endpoint as the advertised localhost URL once resolved.
            initial_cluster: Some("default=http://127.0.0.1:2380".into()),
            ..opts()
        }
        .resolve()
        .unwrap();
        assert_eq!(cfg.listen_client_addrs, vec![addr("127.0.0.1:2379")]);
        assert_eq!(cfg.listen_peer_addrs, vec![addr("127.0.0.1:2380")]);
        assert_eq!(
            url_socket_addr("quic://localhost:7").unwrap(),
            addr("127.0.0.1:7")
        );
    }

    #[test]
    fn explicit_default_port_is_accepted() {
        let cfg = ServeOptions {
            listen_client_urls: Some("http://127.0.0.1:80,https://127.0.0.1:443".into()),
            ..opts()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            cfg.listen_client_addrs,
            vec![addr("127.0.0.1:80"), addr("127.0.0.1:443")]
        );
    }

    #[test]
    fn bad_urls_are_rejected_with_the_reason() {
        let cases = [
            ("not a url", "missing scheme (expected scheme://host:port)"),
            (
                "ftp://127.0.0.1:2379",
                "scheme \"ftp\" is not supported (use http, https)",
            ),
            ("quic://127.0.0.1:2379", "scheme \"quic\" is not supported"),
            ("http://127.0.0.1", "missing port"),
            ("http://127.0.0.1:", "missing port"),
            (
                "http://no-such-host.invalid:2379",
                "host \"no-such-host.invalid\" does not resolve",
            ),
            ("http://127.0.0.1:2379/v3", "must not contain a path"),
            ("http://127.0.0.1:99999", "invalid port number"),
        ];
        for (url, reason) in cases {
            let e = err(ServeOptions {
                listen_client_urls: Some(url.into()),
                ..opts()
            });
            assert!(
                e.starts_with(&format!("invalid url {url:?} in --listen-client-urls: ")),
                "{url}: {e}"
            );
            assert!(e.contains(reason), "{url}: {e}");
        }
        let e = err(ServeOptions {
            listen_peer_urls: Some("unix://127.0.0.1:2380".into()),
            ..opts()
        });
        assert!(e.contains("(use http, https, quic)"), "{e}");
        let e = err(ServeOptions {
            listen_client_urls: Some(" ".into()),
            ..opts()
        });
        assert_eq!(e, "--listen-client-urls must not be empty");
    }

    #[test]
    fn own_name_must_be_in_initial_cluster() {
        let e = err(ServeOptions {
            name: Some("infra9".into()),
            initial_cluster: Some("infra1=http://127.0.0.1:2380".into()),
            ..opts()
        });
        assert_eq!(
            e,
            "couldn't find local name \"infra9\" in the initial cluster configuration"
        );
    }

    #[test]
    fn advertised_peer_urls_must_match_own_entry() {
        let e = err(ServeOptions {
            name: Some("infra1".into()),
            initial_advertise_peer_urls: Some("http://127.0.0.1:12380".into()),
            initial_cluster: Some("infra1=http://127.0.0.1:2380".into()),
            ..opts()
        });
        assert_eq!(
            e,
            "--initial-cluster has infra1=http://127.0.0.1:2380 but missing from \
             --initial-advertise-peer-urls=http://127.0.0.1:12380"
        );
        let e = err(ServeOptions {
            name: Some("infra1".into()),
            initial_advertise_peer_urls: Some("http://127.0.0.1:2380,http://127.0.0.1:2381".into()),
            initial_cluster: Some("infra1=http://127.0.0.1:2380".into()),
            ..opts()
        });
        assert_eq!(
            e,
            "--initial-advertise-peer-urls has http://127.0.0.1:2381 but missing from \
             --initial-cluster=infra1=http://127.0.0.1:2380"
        );
        // Joining an existing cluster skips the check, as etcd does.
        ServeOptions {
            name: Some("infra1".into()),
            initial_advertise_peer_urls: Some("http://127.0.0.1:12380".into()),
            initial_cluster: Some("infra1=http://127.0.0.1:2380".into()),
            initial_cluster_state: Some("existing".into()),
            ..opts()
        }
        .resolve()
        .unwrap();
    }

    #[test]
    fn malformed_initial_cluster_is_rejected() {
        let e = err(ServeOptions {
            initial_cluster: Some("default".into()),
            ..opts()
        });
        assert_eq!(
            e,
            "invalid --initial-cluster entry \"default\": expected name=peer-url"
        );
        let e = err(ServeOptions {
            initial_cluster: Some("default=http://127.0.0.1:2380,b=http://localhost:2380".into()),
            ..opts()
        });
        assert!(e.contains("has duplicate url http://localhost:2380"), "{e}");
        let e = err(ServeOptions {
            initial_cluster: Some("default=127.0.0.1:2380".into()),
            ..opts()
        });
        assert!(
            e.starts_with("invalid url \"127.0.0.1:2380\" in --initial-cluster: "),
            "{e}"
        );
    }

    #[test]
    fn initial_cluster_state_must_be_new_or_existing() {
        let e = err(ServeOptions {
            initial_cluster_state: Some("old".into()),
            ..opts()
        });
        assert_eq!(
            e,
            "invalid value \"old\" for --initial-cluster-state: valid values are \"new\" and \"existing\""
        );
    }

    #[test]
    fn election_timeout_must_be_five_heartbeats() {
        let e = err(ServeOptions {
            heartbeat_interval: Some(300),
            election_timeout: Some(1000),
            ..opts()
        });
        assert_eq!(
            e,
            "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]"
        );
        let cfg = ServeOptions {
            heartbeat_interval: Some(200),
            election_timeout: Some(1000),
            ..opts()
        }
        .resolve()
        .unwrap();
        assert_eq!(cfg.heartbeat_interval, Duration::from_millis(200));
        let e = err(ServeOptions {
            election_timeout: Some(60_000),
            ..opts()
        });
        assert!(e.contains("is too long"), "{e}");
        let e = err(ServeOptions {
            heartbeat_interval: Some(0),
            ..opts()
        });
        assert_eq!(e, "--heartbeat-interval must be greater than 0");
    }

    #[test]
    fn log_level_is_checked() {
        let e = err(ServeOptions {
            log_level: Some("loud".into()),
            ..opts()
        });
        assert_eq!(
            e,
            "invalid value \"loud\" for --log-level: valid values are trace, debug, info, warn, error"
        );
        let cfg = ServeOptions {
            log_level: Some("DEBUG".into()),
            ..opts()
        }
        .resolve()
        .unwrap();
        assert_eq!(cfg.log_level, "debug");
    }

    #[test]
    fn yaml_uses_etcds_keys() {
        let yaml = "\
# a comment
name: infra1
data-dir: /var/lib/kvd
listen-client-urls: http://127.0.0.1:2379,http://127.0.0.1:3379
advertise-client-urls: http://127.0.0.1:2379
listen-peer-urls: http://127.0.0.1:2380
initial-advertise-peer-urls: http://127.0.0.1:2380
initial-cluster: infra1=http://127.0.0.1:2380
initial-cluster-state: 'new'
initial-cluster-token: tok
heartbeat-interval: 50
election-timeout: 500
snapshot-count: 7
quota-backend-bytes: 8589934592
max-request-bytes: 1024
max-txn-ops: 3
log-level: warn
";
        let cfg = ServeOptions::from_yaml(yaml, Path::new("f.yaml"))
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(cfg.name, "infra1");
        assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/kvd"));
        assert_eq!(cfg.listen_client_addrs.len(), 2);
        assert_eq!(cfg.initial_cluster_token, "tok");
        assert_eq!(cfg.heartbeat_interval, Duration::from_millis(50));
        assert_eq!(cfg.election_timeout, Duration::from_millis(500));
        assert_eq!(cfg.snapshot_count, 7);
        assert_eq!(cfg.quota_backend_bytes, 8_589_934_592);
        assert_eq!(cfg.max_request_bytes, 1024);
        assert_eq!(cfg.max_txn_ops, 3);
        assert_eq!(cfg.log_level, "warn");
    }

    #[test]
    fn example_config_is_valid_and_all_defaults() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.yaml"));
        let file = ServeOptions::from_file(path).unwrap();
        // It spells out every key (all 17 of ServeOptions)...
        let text = std::fs::read_to_string(path).unwrap();
        let keys: serde_yaml::Mapping = serde_yaml::from_str(&text).unwrap();
        assert_eq!(keys.len(), 17);
        // ...each at its default.
        let from_file = format!("{:?}", file.resolve().unwrap());
        let defaults = format!("{:?}", opts().resolve().unwrap());
        assert_eq!(from_file, defaults);
    }

    #[test]
    fn empty_yaml_sets_nothing() {
        for text in ["", "\n# only a comment\n", "---\n"] {
            assert_eq!(
                ServeOptions::from_yaml(text, Path::new("f")).unwrap(),
                opts()
            );
        }
    }

    #[test]
    fn bad_yaml_is_one_clear_line() {
        let e = ServeOptions::from_yaml("name: a\nenable-v2: true\n", Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid config file c.yaml: unknown field `enable-v2`"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let e = ServeOptions::from_yaml("name: [a\n", Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid config file c.yaml: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = ServeOptions::from_yaml("heartbeat-interval: fast\n", Path::new("c.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn unreadable_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let e = load(opts(), Some(&missing)).unwrap_err().to_string();
        assert!(e.starts_with("cannot read config file "), "{e}");
        assert!(e.contains("no such file or directory"), "{e}");
    }

    #[test]
    fn overrides_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvd.yaml");
        std::fs::write(&path, "name: fromfile\nsnapshot-count: 5\nmax-txn-ops: 9\n").unwrap();
        let cfg = load(
            ServeOptions {
                name: Some("fromflag".into()),
                snapshot_count: Some(6),
                ..opts()
            },
            Some(&path),
        )
        .unwrap();
        assert_eq!(cfg.name, "fromflag");
        assert_eq!(cfg.snapshot_count, 6);
        assert_eq!(cfg.max_txn_ops, 9);
        assert_eq!(cfg.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
        assert_eq!(cfg.data_dir, PathBuf::from("./fromflag.kvd"));
    }
}
