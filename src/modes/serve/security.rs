//! The security settings of `kvd serve`: TLS on the client and peer ports
//! and the auth token, as etcd's flags and YAML keys name them
//! (`client-transport-security`, `peer-transport-security`,
//! `cipher-suites`, `tls-min-version`, `tls-max-version`, `auth-token`,
//! `auth-token-ttl`, `bcrypt-cost`), merged and validated.

use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use crate::core::config::{PeerTls, TlsFiles, TlsPolicy, TlsVersion};

/// etcd's default `--auth-token`.
pub const DEFAULT_AUTH_TOKEN: &str = "simple";
/// etcd's default `--auth-token-ttl`, seconds.
pub const DEFAULT_AUTH_TOKEN_TTL: u64 = 300;
/// etcd's default `--bcrypt-cost` (Go's `bcrypt.DefaultCost`).
pub const DEFAULT_BCRYPT_COST: u32 = 10;

/// One port's `*-transport-security` block of the YAML file (etcd's
/// `securityConfig` keys, plus `crl-file`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TransportSecurity {
    /// `cert-file`.
    pub cert_file: Option<PathBuf>,
    /// `key-file`.
    pub key_file: Option<PathBuf>,
    /// `client-cert-auth`.
    pub client_cert_auth: Option<bool>,
    /// `trusted-ca-file`.
    pub trusted_ca_file: Option<PathBuf>,
    /// `crl-file` (the flags' `--client-crl-file`, `--peer-crl-file`).
    pub crl_file: Option<PathBuf>,
    /// `auto-tls`.
    pub auto_tls: Option<bool>,
    /// `allowed-cn` (peer only).
    pub allowed_cn: Option<String>,
    /// `allowed-hostname` (peer only).
    pub allowed_hostname: Option<String>,
}

impl TransportSecurity {
    /// Field by field, `self` where set, else `lower`.
    #[must_use]
    pub fn or(self, lower: Self) -> Self {
        Self {
            cert_file: self.cert_file.or(lower.cert_file),
            key_file: self.key_file.or(lower.key_file),
            client_cert_auth: self.client_cert_auth.or(lower.client_cert_auth),
            trusted_ca_file: self.trusted_ca_file.or(lower.trusted_ca_file),
            crl_file: self.crl_file.or(lower.crl_file),
            auto_tls: self.auto_tls.or(lower.auto_tls),
            allowed_cn: self.allowed_cn.or(lower.allowed_cn),
            allowed_hostname: self.allowed_hostname.or(lower.allowed_hostname),
        }
    }

    fn files(&self) -> TlsFiles {
        TlsFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            trusted_ca_file: self.trusted_ca_file.clone(),
            client_cert_auth: self.client_cert_auth.unwrap_or(false),
            crl_file: self.crl_file.clone(),
            auto_tls: self.auto_tls.unwrap_or(false),
        }
    }
}

/// Merges two optional blocks field by field.
pub fn or_block(
    upper: Option<TransportSecurity>,
    lower: Option<TransportSecurity>,
) -> Option<TransportSecurity> {
    match (upper, lower) {
        (Some(u), Some(l)) => Some(u.or(l)),
        (u, l) => u.or(l),
    }
}

/// The security flags of `kvd serve` (etcd's names; `KVD_*` variables).
#[derive(Debug, Clone, Default, Args)]
pub struct SecurityArgs {
    /// Client port certificate (PEM); https client URLs need it or --auto-tls
    #[arg(long, env = "KVD_CERT_FILE", value_name = "PATH")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of --cert-file
    #[arg(long, env = "KVD_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Require client certificates signed by --trusted-ca-file; their CN is the user
    #[arg(long, env = "KVD_CLIENT_CERT_AUTH", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub client_cert_auth: Option<bool>,
    /// CA bundle (PEM) that verifies client certificates
    #[arg(long, env = "KVD_TRUSTED_CA_FILE", value_name = "PATH")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Revoked client certificates (CRL, PEM or DER)
    #[arg(long, env = "KVD_CLIENT_CRL_FILE", value_name = "PATH")]
    pub client_crl_file: Option<PathBuf>,
    /// Serve clients a self-signed certificate (kept in <data-dir>/fixtures/client)
    #[arg(long, env = "KVD_AUTO_TLS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub auto_tls: Option<bool>,
    /// Peer port certificate (PEM)
    #[arg(long, env = "KVD_PEER_CERT_FILE", value_name = "PATH")]
    pub peer_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --peer-cert-file
    #[arg(long, env = "KVD_PEER_KEY_FILE", value_name = "PATH")]
    pub peer_key_file: Option<PathBuf>,
    /// Require peer certificates signed by --peer-trusted-ca-file
    #[arg(long, env = "KVD_PEER_CLIENT_CERT_AUTH", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub peer_client_cert_auth: Option<bool>,
    /// CA bundle (PEM) that verifies peer certificates
    #[arg(long, env = "KVD_PEER_TRUSTED_CA_FILE", value_name = "PATH")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Revoked peer certificates (CRL, PEM or DER)
    #[arg(long, env = "KVD_PEER_CRL_FILE", value_name = "PATH")]
    pub peer_crl_file: Option<PathBuf>,
    /// The Common Name every peer certificate must carry
    #[arg(long, env = "KVD_PEER_CERT_ALLOWED_CN", value_name = "CN")]
    pub peer_cert_allowed_cn: Option<String>,
    /// A host name every peer certificate must be valid for
    #[arg(long, env = "KVD_PEER_CERT_ALLOWED_HOSTNAME", value_name = "NAME")]
    pub peer_cert_allowed_hostname: Option<String>,
    /// Self-signed peer certificates (members pin each other's fingerprints)
    #[arg(long, env = "KVD_PEER_AUTO_TLS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub peer_auto_tls: Option<bool>,
    /// Comma-separated TLS 1.2 cipher suites (Go's names), both ports
    #[arg(long, env = "KVD_CIPHER_SUITES", value_name = "SUITES")]
    pub cipher_suites: Option<String>,
    /// Lowest TLS version: TLS1.2 or TLS1.3 [default: TLS1.2]
    #[arg(long, env = "KVD_TLS_MIN_VERSION", value_name = "VERSION")]
    pub tls_min_version: Option<String>,
    /// Highest TLS version: TLS1.2 or TLS1.3 [default: TLS1.3]
    #[arg(long, env = "KVD_TLS_MAX_VERSION", value_name = "VERSION")]
    pub tls_max_version: Option<String>,
    /// Auth token provider: simple, or jwt,pub-key=…,priv-key=…,sign-method=… [default: simple]
    #[arg(long, env = "KVD_AUTH_TOKEN", value_name = "TOKEN")]
    pub auth_token: Option<String>,
    /// Lifetime of a simple token since its last use, seconds [default: 300]
    #[arg(long, env = "KVD_AUTH_TOKEN_TTL", value_name = "SECONDS")]
    pub auth_token_ttl: Option<u64>,
    /// bcrypt cost of stored passwords, 4 to 31 [default: 10]
    #[arg(long, env = "KVD_BCRYPT_COST", value_name = "COST")]
    pub bcrypt_cost: Option<u32>,
}

impl SecurityArgs {
    /// The client port's block as the flags give it.
    pub fn client_block(&self) -> Option<TransportSecurity> {
        let block = TransportSecurity {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            client_cert_auth: self.client_cert_auth,
            trusted_ca_file: self.trusted_ca_file.clone(),
            crl_file: self.client_crl_file.clone(),
            auto_tls: self.auto_tls,
            allowed_cn: None,
            allowed_hostname: None,
        };
        (block != TransportSecurity::default()).then_some(block)
    }

    /// The peer port's block as the flags give it.
    pub fn peer_block(&self) -> Option<TransportSecurity> {
        let block = TransportSecurity {
            cert_file: self.peer_cert_file.clone(),
            key_file: self.peer_key_file.clone(),
            client_cert_auth: self.peer_client_cert_auth,
            trusted_ca_file: self.peer_trusted_ca_file.clone(),
            crl_file: self.peer_crl_file.clone(),
            auto_tls: self.peer_auto_tls,
            allowed_cn: self.peer_cert_allowed_cn.clone(),
            allowed_hostname: self.peer_cert_allowed_hostname.clone(),
        };
        (block != TransportSecurity::default()).then_some(block)
    }

    /// `--cipher-suites` as a list.
    pub fn cipher_suite_list(&self) -> Option<Vec<String>> {
        self.cipher_suites.as_ref().map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect()
        })
    }
}

/// The client port's TLS, checked.
///
/// # Errors
/// One line naming the flags.
pub fn client_files(block: Option<&TransportSecurity>) -> Result<TlsFiles, String> {
    let block = block.cloned().unwrap_or_default();
    if block.allowed_cn.is_some() || block.allowed_hostname.is_some() {
        return Err(
            "allowed-cn and allowed-hostname apply to peer-transport-security only".to_string(),
        );
    }
    let files = block.files();
    files.validate("")?;
    Ok(files)
}

/// The peer port's TLS, checked (etcd refuses an allowed CN together with
/// an allowed host name).
///
/// # Errors
/// One line naming the flags.
pub fn peer_tls(block: Option<&TransportSecurity>) -> Result<PeerTls, String> {
    let block = block.cloned().unwrap_or_default();
    let files = block.files();
    files.validate("peer-")?;
    if block.allowed_cn.is_some() && block.allowed_hostname.is_some() {
        return Err(
            "--peer-cert-allowed-cn and --peer-cert-allowed-hostname are mutually exclusive"
                .to_string(),
        );
    }
    if (block.allowed_cn.is_some() || block.allowed_hostname.is_some())
        && files.trusted_ca_file.is_none()
    {
        return Err(
            "--peer-cert-allowed-cn and --peer-cert-allowed-hostname need --peer-trusted-ca-file"
                .to_string(),
        );
    }
    Ok(PeerTls {
        files,
        allowed_cn: block.allowed_cn,
        allowed_hostname: block.allowed_hostname,
    })
}

/// `--cipher-suites`, `--tls-min-version` and `--tls-max-version`, checked.
///
/// # Errors
/// One line naming the flag.
pub fn tls_policy(
    cipher_suites: Option<Vec<String>>,
    min: Option<&str>,
    max: Option<&str>,
) -> Result<TlsPolicy, String> {
    let mut policy = TlsPolicy {
        cipher_suites: cipher_suites.unwrap_or_default(),
        ..TlsPolicy::default()
    };
    if let Some(min) = min {
        policy.min_version = TlsVersion::parse("tls-min-version", min)?;
    }
    if let Some(max) = max {
        policy.max_version = TlsVersion::parse("tls-max-version", max)?;
    }
    policy.validate()?;
    Ok(policy)
}

/// The JWT options of `--auth-token jwt,k=v,…` (etcd's keys `pub-key`,
/// `priv-key`, `sign-method`, `ttl`); `None` for other token types.
///
/// # Errors
/// etcd's refusals: a malformed or repeated option, an unknown one, no
/// sign-method, a bad ttl.
pub fn jwt_options(token: &str) -> Result<Option<crate::core::auth::jwt::JwtOptions>, String> {
    let mut parts = token.split(',');
    if parts.next() != Some("jwt") {
        return Ok(None);
    }
    let mut o = crate::core::auth::jwt::JwtOptions {
        pub_key: None,
        priv_key: None,
        sign_method: String::new(),
        ttl: std::time::Duration::from_secs(300),
    };
    let mut seen = std::collections::HashSet::new();
    for part in parts.filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!("invalid auth options: {part:?} is not key=value"));
        };
        if !seen.insert(k.to_string()) {
            return Err(format!("invalid auth options: {k} given twice"));
        }
        match k {
            "pub-key" => o.pub_key = Some(PathBuf::from(v)),
            "priv-key" => o.priv_key = Some(PathBuf::from(v)),
            "sign-method" => o.sign_method = v.to_string(),
            "ttl" => o.ttl = crate::modes::common::duration::parse_duration(v)?,
            other => return Err(format!("invalid auth options: unknown option {other:?}")),
        }
    }
    if o.sign_method.is_empty() {
        return Err("invalid auth options: jwt needs sign-method".to_string());
    }
    Ok(Some(o))
}
