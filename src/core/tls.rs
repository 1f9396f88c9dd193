//! TLS material for the client port and the peer port: certificate files
//! read (and read again when they change on disk, so that a renewed
//! certificate serves new connections without a restart), etcd's
//! `--cipher-suites` and `--tls-min-version`/`--tls-max-version`, the
//! trusted CA and CRL that verify client certificates, auto TLS
//! (a self-signed certificate kept in the data dir), and the Common Name
//! that etcd takes as the user of a certificate-authenticated client.
//!
//! Matches etcd's `pkg/transport` (`TLSInfo`): certificates reloaded per
//! handshake, TLS 1.2 as the lowest version by default, cipher suites
//! named as Go names them (TLS 1.2 only; TLS 1.3's are fixed).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, SupportedCipherSuite, SupportedProtocolVersion};

/// A TLS protocol version as etcd's flags name it (`TLS1.2`, `TLS1.3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    /// Parses etcd's spelling (`TLS1.2`, `TLS1.3`).
    ///
    /// # Errors
    /// etcd's `unexpected TLS version "…" (must be one of: TLS1.2, TLS1.3)`
    /// for anything else, TLS1.0 and TLS1.1 included.
    pub fn parse(flag: &str, text: &str) -> Result<Self, String> {
        match text {
            "TLS1.2" => Ok(Self::Tls12),
            "TLS1.3" => Ok(Self::Tls13),
            other => Err(format!(
                "--{flag}: unexpected TLS version {other:?} (must be one of: TLS1.2, TLS1.3)"
            )),
        }
    }

    /// etcd's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tls12 => "TLS1.2",
            Self::Tls13 => "TLS1.3",
        }
    }

    fn rustls(self) -> &'static SupportedProtocolVersion {
        match self {
            Self::Tls12 => &rustls::version::TLS12,
            Self::Tls13 => &rustls::version::TLS13,
        }
    }
}

/// The version and cipher policy of one port (etcd's `--cipher-suites`,
/// `--tls-min-version`, `--tls-max-version`, shared by both ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPolicy {
    /// TLS 1.2 cipher suites allowed, Go's names; empty = rustls' set.
    pub cipher_suites: Vec<String>,
    /// Lowest version accepted (default TLS 1.2).
    pub min_version: TlsVersion,
    /// Highest version accepted (default TLS 1.3).
    pub max_version: TlsVersion,
}

impl Default for TlsPolicy {
    fn default() -> Self {
        Self {
            cipher_suites: Vec::new(),
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
        }
    }
}

/// Go's names of the TLS 1.3 suites: etcd accepts them in
/// `--cipher-suites` and ignores them (TLS 1.3's suites are fixed).
const TLS13_NAMES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// The TLS 1.2 suite Go calls `name`, if rustls implements it.
fn cipher_suite(name: &str) -> Option<SupportedCipherSuite> {
    // Go spells the ChaCha20 suites with and without the hash suffix.
    let name = match name {
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        other => other,
    };
    rustls::crypto::ring::ALL_CIPHER_SUITES
        .iter()
        .copied()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .find(|s| format!("{:?}", s.suite()) == name)
}

impl TlsPolicy {
    /// Checks the policy as etcd does at start-up.
    ///
    /// # Errors
    /// etcd's one-line refusals: an unknown cipher suite (and, as rustls
    /// has no CBC or RSA key-exchange suites, one of those); a list
    /// without an ECDHE AES_128_GCM_SHA256 suite, which HTTP/2 requires;
    /// cipher suites with only TLS 1.3 enabled; a minimum above the maximum.
    pub fn validate(&self) -> Result<(), String> {
        for name in &self.cipher_suites {
            if cipher_suite(name).is_none() && !TLS13_NAMES.contains(&name.as_str()) {
                return Err(format!(
                    "unexpected TLS cipher suite {name:?} (kvd supports the ECDHE AES-GCM and ChaCha20-Poly1305 suites)"
                ));
            }
        }
        let tls12 = self
            .cipher_suites
            .iter()
            .filter(|n| cipher_suite(n).is_some());
        if tls12.clone().count() > 0
            && !tls12
                .clone()
                .any(|n| n.ends_with("_WITH_AES_128_GCM_SHA256"))
        {
            return Err("http2: TLSConfig.CipherSuites is missing an HTTP/2-required AES_128_GCM_SHA256 cipher (need at least one of TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 or TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)".to_string());
        }
        if self.min_version > self.max_version {
            return Err(format!(
                "min version ({}) is greater than max version ({})",
                self.min_version.name(),
                self.max_version.name()
            ));
        }
        if !self.cipher_suites.is_empty()
            && self.min_version == TlsVersion::Tls13
            && self.max_version == TlsVersion::Tls13
        {
            return Err(
                "cipher suites cannot be configured when only TLS1.3 is enabled".to_string(),
            );
        }
        Ok(())
    }

    /// The crypto provider (ring) with the allowed suites.
    pub fn provider(&self) -> Arc<CryptoProvider> {
        let mut provider = rustls::crypto::ring::default_provider();
        if !self.cipher_suites.is_empty() {
            let allowed: Vec<SupportedCipherSuite> = self
                .cipher_suites
                .iter()
                .filter_map(|n| cipher_suite(n))
                .collect();
            provider.cipher_suites.retain(|s| {
                s.version() == &rustls::version::TLS13
                    || allowed.iter().any(|a| a.suite() == s.suite())
            });
        }
        Arc::new(provider)
    }

    /// The protocol versions between the minimum and the maximum.
    pub fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        [TlsVersion::Tls12, TlsVersion::Tls13]
            .into_iter()
            .filter(|v| *v >= self.min_version && *v <= self.max_version)
            .map(TlsVersion::rustls)
            .collect()
    }
}

/// One port's certificate settings (etcd's `--cert-file`, `--key-file`,
/// `--trusted-ca-file`, `--client-cert-auth`, `--client-crl-file`,
/// `--auto-tls`, or their `--peer-` twins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The port's certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// CA bundle (PEM) that verifies the other side's certificates.
    pub trusted_ca_file: Option<PathBuf>,
    /// Take a verified client certificate's Common Name as the user
    /// (with `trusted_ca_file`; etcd's `--client-cert-auth`). A trusted CA
    /// alone already requires a certificate, as in etcd.
    pub client_cert_auth: bool,
    /// Revoked certificates (PEM or DER CRLs), refused in the handshake.
    pub crl_file: Option<PathBuf>,
    /// Without `cert_file`: serve a self-signed certificate kept in the data dir.
    pub auto_tls: bool,
}

impl TlsFiles {
    /// Whether this port speaks TLS at all.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.auto_tls
    }

    /// Checks the combination as etcd does at start-up.
    ///
    /// # Errors
    /// One line naming the flags (`prefix` is `""` or `"peer-"`): a
    /// certificate without its key or the reverse, client certificate
    /// authentication without a CA.
    pub fn validate(&self, prefix: &str) -> Result<(), String> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(format!(
                "--{prefix}cert-file and --{prefix}key-file must be given together"
            ));
        }
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            return Err(format!(
                "--{prefix}client-cert-auth needs --{prefix}trusted-ca-file"
            ));
        }
        if self.crl_file.is_some() && self.trusted_ca_file.is_none() {
            return Err(format!(
                "--{prefix}crl-file needs --{prefix}trusted-ca-file"
            ));
        }
        Ok(())
    }
}

/// Reads every certificate of a PEM file.
///
/// # Errors
/// One line naming the file: unreadable, or no certificate in it.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificate file {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read certificate file {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "certificate file {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// One line naming the file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read key file {}: {e}", path.display()))
}

/// A root store of the CA certificates in a PEM file.
///
/// # Errors
/// One line naming the file: unreadable, empty, or a certificate webpki
/// cannot use as a trust anchor.
pub fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("trusted CA file {}: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

/// The CRLs of a file, PEM (`X509 CRL` blocks) or one DER CRL.
///
/// # Errors
/// One line naming the file.
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read CRL file {}: {e}", path.display()))?;
    let pem: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("CRL file {}: {e}", path.display()))?;
    if pem.is_empty() {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    Ok(pem)
}

/// The Common Name of a certificate's subject (the user name etcd takes
/// from a verified client certificate), if it has one.
pub fn common_name(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Whether a certificate's subject alternative names cover `host` (a DNS
/// name, `*.` wildcards matching one label, or an IP address), as Go's
/// `VerifyHostname` decides without its CN fallback.
pub fn valid_for_host(der: &CertificateDer<'_>, host: &str) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let ip: Option<std::net::IpAddr> = host.parse().ok();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    san.value.general_names.iter().any(|name| match name {
        GeneralName::DNSName(dns) => {
            let dns = dns.trim_end_matches('.').to_ascii_lowercase();
            match dns.strip_prefix("*.") {
                Some(suffix) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => ip.is_none() && dns == host,
            }
        }
        GeneralName::IPAddress(bytes) => match (ip, bytes.len()) {
            (Some(std::net::IpAddr::V4(v4)), 4) => v4.octets().as_slice() == *bytes,
            (Some(std::net::IpAddr::V6(v6)), 16) => v6.octets().as_slice() == *bytes,
            _ => false,
        },
        _ => false,
    })
}

/// The SHA-256 fingerprint of a certificate, lowercase hex.
pub fn fingerprint(der: &CertificateDer<'_>) -> String {
    use sha2::Digest as _;
    crate::core::snapshot::hex(&sha2::Sha256::digest(der.as_ref()))
}

/// Writes a self-signed certificate for `hosts` into `dir` (`cert.pem`,
/// `key.pem`, the key 0600) unless both exist; returns their paths. etcd's
/// auto TLS keeps them under `<data-dir>/fixtures/client` and `…/peer`.
///
/// # Errors
/// Certificate generation or file I/O, one line.
pub fn auto_certificate(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), String> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut names = hosts.to_vec();
    names.push("localhost".to_string());
    names.dedup();
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot generate the auto TLS certificate: {e}"))?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", cert.display()))?;
    Ok((cert, key))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A server side that re-reads its files when they change: every new
/// connection asks [`ServerTls::config`], which stats the files and builds
/// a new rustls configuration only when one changed (etcd reads them on
/// each handshake).
pub struct ServerTls {
    files: TlsFiles,
    cert_key: (PathBuf, PathBuf),
    policy: TlsPolicy,
    alpn: Vec<Vec<u8>>,
    cached: Mutex<Option<Built>>,
}

/// A configuration and the modification times of the files it was built from.
type Built = (Vec<Option<SystemTime>>, Arc<rustls::ServerConfig>);

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The server side of `files` (which must be [`TlsFiles::enabled`]);
    /// auto TLS writes its certificate into `auto_dir` for `hosts`. Builds
    /// the configuration once, so that a bad file fails start-up.
    ///
    /// # Errors
    /// One line: an unreadable or unusable file, or rustls refusing it.
    pub fn new(
        files: TlsFiles,
        policy: TlsPolicy,
        alpn: Vec<Vec<u8>>,
        auto_dir: &Path,
        hosts: &[String],
    ) -> Result<Self, String> {
        let cert_key = match (&files.cert_file, &files.key_file) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ => auto_certificate(auto_dir, hosts)?,
        };
        let tls = Self {
            files,
            cert_key,
            policy,
            alpn,
            cached: Mutex::new(None),
        };
        tls.config()?;
        Ok(tls)
    }

    /// Whether a verified certificate's Common Name is the user
    /// (`--client-cert-auth`).
    pub fn cn_is_user(&self) -> bool {
        self.files.client_cert_auth
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        let paths = [
            Some(&self.cert_key.0),
            Some(&self.cert_key.1),
            self.files.trusted_ca_file.as_ref(),
            self.files.crl_file.as_ref(),
        ];
        paths
            .iter()
            .flatten()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// The configuration for a new connection, rebuilt when a file changed.
    /// A file that has become unusable keeps the last good configuration
    /// (and is logged), as a renewal in progress must not stop the port.
    ///
    /// # Errors
    /// Only before any configuration was built: the reason, one line.
    pub fn config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let stamps = self.stamps();
        let mut cached = self
            .cached
            .lock()
            .map_err(|_| "TLS configuration lock poisoned".to_string())?;
        if let Some((seen, config)) = cached.as_ref() {
            if *seen == stamps {
                return Ok(config.clone());
            }
        }
        match self.build() {
            Ok(config) => {
                if cached.is_some() {
                    tracing::info!(cert = %self.cert_key.0.display(), "reloaded TLS files");
                }
                *cached = Some((stamps, config.clone()));
                Ok(config)
            }
            Err(e) => match cached.as_ref() {
                Some((_, config)) => {
                    tracing::warn!("cannot reload TLS files, keeping the previous ones: {e}");
                    Ok(config.clone())
                }
                None => Err(e),
            },
        }
    }

    fn build(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let provider = self.policy.provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.policy.versions())
            .map_err(|e| format!("TLS settings: {e}"))?;
        let builder = match &self.files.trusted_ca_file {
            Some(ca) => {
                let mut verifier =
                    WebPkiClientVerifier::builder_with_provider(read_roots(ca)?, provider);
                if let Some(crl) = &self.files.crl_file {
                    // A CRL of one CA must not refuse certificates of
                    // another (etcd compares serial numbers only).
                    verifier = verifier
                        .with_crls(read_crls(crl)?)
                        .allow_unknown_revocation_status();
                }
                let verifier = verifier
                    .build()
                    .map_err(|e| format!("trusted CA file {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let certs = read_certs(&self.cert_key.0)?;
        let key = read_key(&self.cert_key.1)?;
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("certificate {}: {e}", self.cert_key.0.display()))?;
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_cipher_suite_names_map_to_rustls() {
        assert!(cipher_suite("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256").is_some());
        assert!(cipher_suite("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305").is_some());
        assert!(cipher_suite("TLS_RSA_WITH_AES_128_CBC_SHA").is_none());
        assert!(cipher_suite("TLS_AES_128_GCM_SHA256").is_none());
        let only13 = TlsPolicy {
            cipher_suites: vec!["TLS_AES_128_GCM_SHA256".into()],
            ..TlsPolicy::default()
        };
        assert_eq!(only13.validate(), Ok(()));
        let no_aes128 = TlsPolicy {
            cipher_suites: vec!["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".into()],
            ..TlsPolicy::default()
        };
        assert!(no_aes128.validate().unwrap_err().starts_with("http2:"));
        let policy = TlsPolicy {
            cipher_suites: vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()],
            ..TlsPolicy::default()
        };
        assert_eq!(policy.validate(), Ok(()));
        let provider = policy.provider();
        // Three TLS 1.3 suites and the one TLS 1.2 suite asked for.
        assert_eq!(provider.cipher_suites.len(), 4);
    }

    #[test]
    fn versions_follow_etcd_spelling() {
        assert_eq!(
            TlsVersion::parse("tls-min-version", "TLS1.3"),
            Ok(TlsVersion::Tls13)
        );
        assert!(TlsVersion::parse("tls-min-version", "TLS1.1").is_err());
        assert!(TlsVersion::parse("tls-min-version", "1.2").is_err());
        let policy = TlsPolicy {
            min_version: TlsVersion::Tls13,
            max_version: TlsVersion::Tls12,
            ..TlsPolicy::default()
        };
        assert!(policy.validate().is_err());
        assert_eq!(TlsPolicy::default().versions().len(), 2);
    }

    #[test]
    fn auto_certificate_is_kept_and_names_its_common_name() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = auto_certificate(dir.path(), &["127.0.0.1".into()]).unwrap();
        let first = std::fs::read(&cert).unwrap();
        let again = auto_certificate(dir.path(), &["127.0.0.1".into()]).unwrap();
        assert_eq!(again, (cert.clone(), key.clone()));
        assert_eq!(std::fs::read(&cert).unwrap(), first);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let der = read_certs(&cert).unwrap().remove(0);
        assert_eq!(fingerprint(&der).len(), 64);
        let tls = ServerTls::new(
            TlsFiles {
                auto_tls: true,
                ..TlsFiles::default()
            },
            TlsPolicy::default(),
            vec![b"h2".to_vec()],
            dir.path(),
            &[],
        )
        .unwrap();
        assert!(Arc::ptr_eq(&tls.config().unwrap(), &tls.config().unwrap()));
    }
}
