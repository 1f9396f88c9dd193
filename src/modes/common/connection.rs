//! The connection flags of every client mode (etcdctl's global flags and
//! defaults), and the [`ClientConfig`] they make.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::core::client::{normalize_endpoints, ClientConfig, ClientTls};
use crate::modes::common::duration::parse_duration;

/// Where the cluster is and how to talk to it (etcdctl's flag names,
/// defaults and `ETCDCTL_*` variables; `KVD_*` ones too, see
/// [`alias_kvd_env`]). Global: the flags may stand before or after a
/// subcommand.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Comma-separated client endpoints, host:port or http(s)://host:port
    #[arg(
        long,
        global = true,
        value_name = "URLS",
        env = "ETCDCTL_ENDPOINTS",
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: String,

    /// Timeout to connect to an endpoint (Go duration: 500ms, 2s, 1m)
    #[arg(long, global = true, value_name = "DURATION", env = "ETCDCTL_DIAL_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub dial_timeout: Duration,

    /// Timeout of the whole command, e.g. 5s (Go duration)
    #[arg(long, global = true, value_name = "DURATION", env = "ETCDCTL_COMMAND_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub command_timeout: Duration,

    /// Verify the server's certificate with this CA bundle (PEM); implies TLS
    #[arg(long, global = true, value_name = "PATH", env = "ETCDCTL_CACERT")]
    pub cacert: Option<PathBuf>,

    /// Client certificate (PEM) for client-certificate authentication; needs --key
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "ETCDCTL_CERT",
        requires = "key"
    )]
    pub cert: Option<PathBuf>,

    /// Private key (PEM) of --cert
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "ETCDCTL_KEY",
        requires = "cert"
    )]
    pub key: Option<PathBuf>,

    /// username[:password] for authentication (prompted if the password is missing)
    #[arg(long, global = true, value_name = "USER", env = "ETCDCTL_USER")]
    pub user: Option<String>,

    /// Password for authentication (with --user NAME)
    #[arg(long, global = true, value_name = "PASSWORD", env = "ETCDCTL_PASSWORD")]
    pub password: Option<String>,

    /// Domain name to query for SRV records describing cluster endpoints
    #[arg(
        short = 'd',
        long,
        global = true,
        value_name = "DOMAIN",
        env = "ETCDCTL_DISCOVERY_SRV"
    )]
    pub discovery_srv: Option<String>,

    /// Service name to query when using DNS discovery
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        env = "ETCDCTL_DISCOVERY_SRV_NAME",
        default_value = ""
    )]
    pub discovery_srv_name: String,

    /// Accept insecure SRV records describing cluster endpoints
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_DISCOVERY", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub insecure_discovery: bool,
}

impl ConnArgs {
    /// With `--discovery-srv`, replaces `--endpoints` by the endpoints of
    /// the domain's `_etcd-client…` SRV records (none found: `--endpoints`
    /// stays, as etcdctl).
    ///
    /// # Errors
    /// etcdctl's `dns lookup errors: …` when both lookups fail.
    pub async fn discover(&mut self) -> Result<(), String> {
        let Some(domain) = self.discovery_srv.as_deref().filter(|d| !d.is_empty()) else {
            return Ok(());
        };
        let found = crate::modes::common::discovery::endpoints(
            domain,
            &self.discovery_srv_name,
            self.insecure_discovery,
        )
        .await?;
        if !found.is_empty() {
            self.endpoints = found.join(",");
        }
        Ok(())
    }

    /// The client these flags describe: endpoints normalized (`https://`
    /// when TLS flags are given), the certificate files read, requests
    /// bounded by `--command-timeout`.
    ///
    /// # Errors
    /// One line naming the flag: an unusable endpoint or an unreadable file.
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        let tls = self.tls()?;
        let endpoints =
            normalize_endpoints(&self.endpoints, tls.is_some()).map_err(|e| e.to_string())?;
        Ok(ClientConfig {
            endpoints,
            dial_timeout: self.dial_timeout,
            request_timeout: self.command_timeout,
            tls,
            keep_alive: None,
            user: self.credentials(),
        })
    }

    /// The user and password to log in with (etcdctl's `authCfgFromCmd`):
    /// with `--password` the whole `--user` is the name; else
    /// `NAME:PASSWORD`, or a prompt for the password (none if left empty).
    fn credentials(&self) -> Option<(String, String)> {
        let user = self.user.as_ref()?;
        if let Some(password) = &self.password {
            return Some((user.clone(), password.clone()));
        }
        if let Some((name, password)) = user.split_once(':') {
            return Some((name.to_string(), password.to_string()));
        }
        let password = rpassword::prompt_password("Password: ").unwrap_or_default();
        (!password.is_empty()).then(|| (user.clone(), password))
    }

    /// TLS material from `--cacert`, `--cert` and `--key`; `None` without them.
    fn tls(&self) -> Result<Option<ClientTls>, String> {
        if self.cacert.is_none() && self.cert.is_none() {
            return Ok(None);
        }
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read --{flag} {}: {e}", path.display()))
        };
        let mut tls = ClientTls::default();
        if let Some(path) = &self.cacert {
            tls.ca = Some(read("cacert", path)?);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            tls.identity = Some((read("cert", cert)?, read("key", key)?));
        }
        Ok(Some(tls))
    }
}

/// The flags whose `ETCDCTL_<NAME>` variable may also be given as
/// `KVD_<NAME>` (etcdctl's global flags).
pub const CLIENT_ENV: [&str; 17] = [
    "ENDPOINTS",
    "DIAL_TIMEOUT",
    "COMMAND_TIMEOUT",
    "KEEPALIVE_TIME",
    "KEEPALIVE_TIMEOUT",
    "CACERT",
    "CERT",
    "KEY",
    "USER",
    "PASSWORD",
    "INSECURE_TRANSPORT",
    "INSECURE_SKIP_TLS_VERIFY",
    "INSECURE_DISCOVERY",
    "DISCOVERY_SRV",
    "DISCOVERY_SRV_NAME",
    "WRITE_OUT",
    "HEX",
];

/// For the client modes: each `KVD_<NAME>` of [`CLIENT_ENV`] counts as
/// `ETCDCTL_<NAME>` when that is unset (an explicit `ETCDCTL_*` wins).
/// Call before parsing arguments, while the process has one thread.
pub fn alias_kvd_env() {
    for name in CLIENT_ENV {
        let etcdctl = format!("ETCDCTL_{name}");
        if std::env::var_os(&etcdctl).is_none() {
            if let Some(v) = std::env::var_os(format!("KVD_{name}")) {
                std::env::set_var(&etcdctl, v);
            }
        }
    }
}
