//! `kvd proxy`: etcd grpc-proxy's flags (`etcd grpc-proxy start`), each
//! with a `KVD_<FLAG>` variable and a key of the same name in the YAML
//! file of `--config` (flags > variables > file > defaults), validated
//! into a `core::proxy::ProxyConfig`. SIGINT/SIGTERM stop it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::core::proxy::register::Registration;
use crate::core::proxy::{self, cache, Listen, ProxyConfig, ProxyError};
use crate::core::tls::{TlsFiles, TlsPolicy};
use crate::modes::common::connection::ConnArgs;
use crate::modes::common::duration::parse_duration;
use crate::modes::ExitCode;

/// Flags of `kvd proxy`.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProxyArgs {
    /// YAML file with these settings (keys are the flag names)
    #[arg(long, alias = "config-file", env = "KVD_CONFIG", value_name = "PATH")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where clients connect: host:port, or unix://PATH [default: 127.0.0.1:23790]
    #[arg(long, env = "KVD_LISTEN_ADDR", value_name = "ADDR")]
    pub listen_addr: Option<String>,
    /// Comma-separated cluster endpoints [default: 127.0.0.1:2379]
    #[arg(long, env = "KVD_ENDPOINTS", value_name = "URLS")]
    pub endpoints: Option<String>,
    /// Re-read the endpoints from the membership this often (0: never) [default: 0]
    #[arg(
        long,
        env = "KVD_ENDPOINTS_AUTO_SYNC_INTERVAL",
        value_name = "DURATION"
    )]
    pub endpoints_auto_sync_interval: Option<String>,
    /// Find the cluster's endpoints in DNS SRV records of this domain
    #[arg(long, env = "KVD_DISCOVERY_SRV", value_name = "DOMAIN")]
    pub discovery_srv: Option<String>,
    /// Service name suffix of the SRV records
    #[arg(long, env = "KVD_DISCOVERY_SRV_NAME", value_name = "NAME")]
    pub discovery_srv_name: Option<String>,
    /// Timeout to connect to a member [default: 2s]
    #[arg(long, env = "KVD_DIAL_TIMEOUT", value_name = "DURATION")]
    pub dial_timeout: Option<String>,
    /// CA bundle verifying the members (TLS to the cluster)
    #[arg(long, env = "KVD_CACERT", value_name = "PATH")]
    pub cacert: Option<PathBuf>,
    /// Client certificate presented to the members
    #[arg(long, env = "KVD_CERT", value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert
    #[arg(long, env = "KVD_KEY", value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// username[:password] the proxy acts as for clients that send no token
    #[arg(long, env = "KVD_USER", value_name = "USER")]
    pub user: Option<String>,
    /// Password of --user
    #[arg(long, env = "KVD_PASSWORD", value_name = "PASSWORD")]
    pub password: Option<String>,
    /// Certificate of the proxy's own port (TLS for its clients)
    #[arg(long, env = "KVD_CERT_FILE", value_name = "PATH")]
    pub cert_file: Option<PathBuf>,
    /// Private key of --cert-file
    #[arg(long, env = "KVD_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// CA bundle that client certificates must chain to
    #[arg(long, env = "KVD_TRUSTED_CA_FILE", value_name = "PATH")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Serve TLS with a generated self-signed certificate
    #[arg(long, env = "KVD_AUTO_TLS")]
    #[serde(default)]
    pub auto_tls: bool,
    /// Directory for --auto-tls certificates [default: default.proxy]
    #[arg(long, env = "KVD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Keys seen by clients live under this prefix
    #[arg(long, env = "KVD_NAMESPACE", value_name = "PREFIX")]
    pub namespace: Option<String>,
    /// Extra listener for /metrics and /health, e.g. http://127.0.0.1:9379
    #[arg(long, env = "KVD_METRICS_ADDR", value_name = "URL")]
    pub metrics_addr: Option<String>,
    /// Client URL registered under --resolver-prefix
    #[arg(long, env = "KVD_ADVERTISE_CLIENT_URL", value_name = "URL")]
    pub advertise_client_url: Option<String>,
    /// Register the proxy under this prefix (with --resolver-ttl)
    #[arg(long, env = "KVD_RESOLVER_PREFIX", value_name = "PREFIX")]
    pub resolver_prefix: Option<String>,
    /// Lease TTL of the registration, seconds
    #[arg(long, env = "KVD_RESOLVER_TTL", value_name = "SECONDS")]
    pub resolver_ttl: Option<i64>,
    /// Serve every serializable read from the cluster (no cache)
    #[arg(long, env = "KVD_NO_CACHE")]
    #[serde(default)]
    pub no_cache: bool,
    /// Most cached serializable reads [default: 2048]
    #[arg(long, env = "KVD_CACHE_SIZE", value_name = "N")]
    pub cache_size: Option<usize>,
    /// Longest a cached read is served [default: 5s]
    #[arg(long, env = "KVD_CACHE_MAX_AGE", value_name = "DURATION")]
    pub cache_max_age: Option<String>,
    /// Log level: debug, info, warn, error [default: info]
    #[arg(long, env = "KVD_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
}

macro_rules! take {
    ($args:ident, $file:ident, $($field:ident),*) => {
        $( if $args.$field.is_none() { $args.$field = $file.$field.take(); } )*
    };
}

impl ProxyArgs {
    /// Flags and variables over the `--config` file.
    ///
    /// # Errors
    /// The file cannot be read or parsed.
    pub fn merged(&self) -> Result<Self, String> {
        let mut args = self.clone();
        let Some(path) = &self.config else {
            return Ok(args);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --config {}: {e}", path.display()))?;
        let mut file: ProxyArgs =
            serde_yaml::from_str(&text).map_err(|e| format!("--config {}: {e}", path.display()))?;
        take!(
            args,
            file,
            listen_addr,
            endpoints,
            endpoints_auto_sync_interval,
            discovery_srv,
            discovery_srv_name,
            dial_timeout,
            cacert,
            cert,
            key,
            user,
            password,
            cert_file,
            key_file,
            trusted_ca_file,
            data_dir,
            namespace,
            metrics_addr,
            advertise_client_url,
            resolver_prefix,
            resolver_ttl,
            cache_size,
            cache_max_age,
            log_level
        );
        args.auto_tls |= file.auto_tls;
        args.no_cache |= file.no_cache;
        Ok(args)
    }

    /// The log level to start logging with.
    pub fn log_level(&self) -> String {
        self.log_level.clone().unwrap_or_else(|| "info".to_string())
    }

    /// The validated configuration (DNS discovery resolved).
    ///
    /// # Errors
    /// One line naming the flag at fault.
    pub async fn config(&self) -> Result<ProxyConfig, String> {
        let duration = |flag: &str, v: &Option<String>, default: Duration| match v {
            Some(s) => parse_duration(s).map_err(|e| format!("--{flag}: {e}")),
            None => Ok(default),
        };
        let listen_addr = self.listen_addr.as_deref().unwrap_or("127.0.0.1:23790");
        let listen = match listen_addr.strip_prefix("unix://") {
            Some(path) => Listen::Unix(PathBuf::from(path)),
            None => Listen::Tcp(socket_addr("listen-addr", listen_addr)?),
        };
        let mut endpoints = self
            .endpoints
            .clone()
            .unwrap_or_else(|| "127.0.0.1:2379".to_string());
        if let Some(domain) = &self.discovery_srv {
            let name = self.discovery_srv_name.clone().unwrap_or_default();
            let found = crate::modes::common::discovery::endpoints(domain, &name, false)
                .await
                .map_err(|e| format!("--discovery-srv {domain}: {e}"))?;
            endpoints = found.join(",");
        }
        let conn = ConnArgs {
            endpoints,
            dial_timeout: duration("dial-timeout", &self.dial_timeout, Duration::from_secs(2))?,
            command_timeout: Duration::from_secs(5),
            cacert: self.cacert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            // Looked up above, with the proxy's own rules.
            discovery_srv: None,
            discovery_srv_name: String::new(),
            insecure_discovery: false,
        };
        if conn.cert.is_some() != conn.key.is_some() {
            return Err("--cert and --key go together".to_string());
        }
        let upstream = conn.client_config()?;
        let auto_sync = duration(
            "endpoints-auto-sync-interval",
            &self.endpoints_auto_sync_interval,
            Duration::ZERO,
        )?;
        let tls = (self.cert_file.is_some() || self.auto_tls).then(|| TlsFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            trusted_ca_file: self.trusted_ca_file.clone(),
            auto_tls: self.auto_tls,
            ..TlsFiles::default()
        });
        if let Some(files) = &tls {
            files.validate("")?;
            if matches!(listen, Listen::Unix(_)) {
                return Err(
                    "--cert-file/--auto-tls cannot be used with a unix:// --listen-addr"
                        .to_string(),
                );
            }
        }
        if self.trusted_ca_file.is_some() && tls.is_none() {
            return Err(
                "--trusted-ca-file needs --cert-file and --key-file (or --auto-tls)".to_string(),
            );
        }
        let metrics_addr = match &self.metrics_addr {
            Some(url) => {
                let hostport = url
                    .strip_prefix("http://")
                    .unwrap_or(url)
                    .trim_end_matches('/');
                if url.starts_with("https://") {
                    return Err(format!("--metrics-addr {url}: only http:// is served"));
                }
                Some(socket_addr("metrics-addr", hostport)?)
            }
            None => None,
        };
        let register = match (&self.resolver_prefix, self.resolver_ttl) {
            (None, None) => None,
            (Some(_), None) | (Some(_), Some(..=0)) => {
                return Err(format!(
                    "invalid resolver-ttl {}",
                    self.resolver_ttl.unwrap_or(0)
                ))
            }
            (None, Some(_)) => return Err("invalid resolver-prefix \"\"".to_string()),
            (Some(prefix), Some(ttl)) => {
                let Some(url) = self.advertise_client_url.clone().filter(|u| !u.is_empty()) else {
                    return Err("invalid advertise-client-url \"\"".to_string());
                };
                Some(Registration {
                    advertise_client_url: url,
                    prefix: prefix.clone(),
                    ttl,
                    hostname: hostname(),
                })
            }
        };
        let cache = (!self.no_cache).then(|| -> Result<_, String> {
            Ok((
                self.cache_size.unwrap_or(cache::DEFAULT_MAX_ENTRIES),
                duration("cache-max-age", &self.cache_max_age, cache::DEFAULT_MAX_AGE)?,
            ))
        });
        Ok(ProxyConfig {
            listen,
            upstream,
            auto_sync: (!auto_sync.is_zero()).then_some(auto_sync),
            namespace: self.namespace.clone().unwrap_or_default().into_bytes(),
            tls,
            tls_policy: TlsPolicy::default(),
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("default.proxy")),
            metrics_addr,
            cache: cache.transpose()?,
            register,
        })
    }
}

fn socket_addr(flag: &str, s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("--{flag} {s:?} is not host:port"))
}

/// This host's name (`/proc/sys/kernel/hostname`, else "kvd-proxy").
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kvd-proxy".to_string())
}

/// Runs `kvd proxy` until SIGINT/SIGTERM: 0 after a clean stop, 2 for a
/// configuration it cannot use, 1 when serving fails.
pub async fn run(args: ProxyArgs) -> ExitCode {
    let cfg = match args.config().await {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::USAGE;
        }
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::modes::serve::wait_for_signal().await;
        stop_tx.send_replace(true);
    });
    match proxy::run(cfg, stop).await {
        Ok(()) => ExitCode::OK,
        Err(ProxyError::Config(e)) => {
            eprintln!("error: {e}");
            ExitCode::USAGE
        }
        Err(ProxyError::Other(e)) => {
            eprintln!("error: {e}");
            ExitCode::ERROR
        }
    }
}
