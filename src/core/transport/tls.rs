//! TLS for the peer port (QUIC, so TLS 1.3 only) and the QUIC transport
//! settings. Two modes:
//! - **with `--peer-trusted-ca-file`**: mutual TLS. Each side verifies the
//!   other's certificate against the CA (and CRL), the server requires a
//!   client certificate, and `--peer-cert-allowed-cn` /
//!   `--peer-cert-allowed-hostname` hold both directions to that name, as
//!   etcd's `VerifyPeerCertificate` does; a stranger cannot finish the
//!   handshake, so it cannot open a stream, let alone send a Raft message;
//! - **without**: each member presents its own certificate (the given
//!   `--peer-cert-file`, or a self-signed one kept in the data dir), and
//!   members pin each other's fingerprints (`pins`): where etcd's
//!   `--peer-auto-tls` authenticates no one, a stranger here cannot speak
//!   for a member that has published its fingerprint.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;

use crate::core::config::PeerTls;
use crate::core::tls::{read_certs, read_crls, read_key, read_roots};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::core::transport::ALPN;

/// The handshake-signature methods of a verifier holding a crypto
/// provider (`self.0`): signatures are always checked, whatever the
/// verifier decides about the certificate.
macro_rules! signatures_by_provider {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.0.signature_verification_algorithms;
            rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algorithms = &self.0.signature_verification_algorithms;
            rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    };
}

/// The handshake-signature methods of a verifier wrapping another
/// (`self.inner`), which checks them.
macro_rules! signatures_by_inner {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

/// The QUIC server side of auto TLS: a fresh self-signed certificate,
/// TLS 1.3, ALPN `kvd-raft/1`, no client authentication.
///
/// # Errors
/// Certificate generation or rustls/quinn refusing the configuration.
pub fn auto_tls_server_config() -> anyhow::Result<quinn::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let generated = rcgen::generate_simple_self_signed(vec!["kvd".to_string()])?;
    let cert = CertificateDer::from(generated.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    server_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut server =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls)?));
    server.transport_config(transport_config());
    Ok(server)
}

/// The QUIC client side of auto TLS: ALPN `kvd-raft/1`, TLS 1.3, any server
/// certificate accepted (signatures still checked). Peers use it to dial
/// each other when no peer CA is configured; tests use it to act as a peer.
///
/// # Errors
/// rustls or quinn refusing the configuration.
pub fn auto_tls_client_config() -> anyhow::Result<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_no_client_auth();
    client_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls)?));
    client.transport_config(transport_config());
    Ok(client)
}

/// The peer endpoint's server and client sides for `peer`. With a trusted
/// CA: mutual TLS as described above; without: this member's certificate
/// (`--peer-cert-file`, or one made for `hosts` and kept in `auto_dir`),
/// asked of every peer and pinned.
///
/// # Errors
/// One line: an unreadable file, a certificate rustls refuses.
pub fn peer_configs(
    peer: &PeerTls,
    auto_dir: &Path,
    hosts: &[String],
) -> anyhow::Result<PeerConfigs> {
    let Some(ca) = &peer.files.trusted_ca_file else {
        // No CA: members pin each other's certificates (see `pins`); this
        // member's own is the given one or a self-signed one kept in the
        // data dir, so that its fingerprint outlives restarts.
        let (cert, key) = match (&peer.files.cert_file, &peer.files.key_file) {
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ => crate::core::tls::auto_certificate(auto_dir, hosts).map_err(anyhow::Error::msg)?,
        };
        let chain = read_certs(&cert).map_err(anyhow::Error::msg)?;
        let key = read_key(&key).map_err(anyhow::Error::msg)?;
        let own = chain
            .first()
            .map(crate::core::tls::fingerprint)
            .unwrap_or_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(AnyClientCert(provider)))
            .with_single_cert(chain.clone(), key.clone_key())?;
        server_tls.alpn_protocols = vec![ALPN.to_vec()];
        let mut server =
            quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls)?));
        server.transport_config(transport_config());
        return Ok(PeerConfigs {
            server,
            client: client_config_with_identity(chain, key)?,
            pinned_fingerprint: Some(own),
        });
    };
    let (Some(cert), Some(key)) = (&peer.files.cert_file, &peer.files.key_file) else {
        anyhow::bail!("--peer-trusted-ca-file needs --peer-cert-file and --peer-key-file");
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = read_roots(ca).map_err(anyhow::Error::msg)?;
    let crls = match &peer.files.crl_file {
        Some(path) => read_crls(path).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    let chain = read_certs(cert).map_err(anyhow::Error::msg)?;
    let key = read_key(key).map_err(anyhow::Error::msg)?;
    let names = AllowedNames {
        cn: peer.allowed_cn.clone(),
        hostname: peer.allowed_hostname.clone(),
    };

    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .with_crls(crls.clone())
            .allow_unknown_revocation_status()
            .build()?;
    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(NamedClient {
            inner: client_verifier,
            names: names.clone(),
        }))
        .with_single_cert(chain.clone(), key.clone_key())?;
    server_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut server =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls)?));
    server.transport_config(transport_config());

    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .with_crls(crls)
        .allow_unknown_revocation_status()
        .build()?;
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NamedServer {
            inner: server_verifier,
            names,
        }))
        .with_client_auth_cert(chain, key)?;
    client_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls)?));
    client.transport_config(transport_config());
    Ok(PeerConfigs {
        server,
        client,
        pinned_fingerprint: None,
    })
}

/// How often the peer TLS files are looked at for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Watches the peer TLS files (certificate, key, CA, CRL) by modification
/// time and rebuilds the configurations when one changed.
pub struct PeerReload {
    peer: PeerTls,
    auto_dir: std::path::PathBuf,
    hosts: Vec<String>,
    seen: std::sync::Mutex<Vec<Option<std::time::SystemTime>>>,
}

impl PeerReload {
    /// Starts from the files' current times.
    pub fn new(peer: PeerTls, auto_dir: std::path::PathBuf, hosts: Vec<String>) -> Self {
        let reload = Self {
            peer,
            auto_dir,
            hosts,
            seen: std::sync::Mutex::new(Vec::new()),
        };
        let stamps = reload.stamps();
        if let Ok(mut seen) = reload.seen.lock() {
            *seen = stamps;
        }
        reload
    }

    fn stamps(&self) -> Vec<Option<std::time::SystemTime>> {
        let f = &self.peer.files;
        [&f.cert_file, &f.key_file, &f.trusted_ca_file, &f.crl_file]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// New configurations when a file changed and they build; a file
    /// that does not (a renewal half written) keeps the running ones.
    pub fn changed(&self) -> Option<PeerConfigs> {
        let stamps = self.stamps();
        let mut seen = self.seen.lock().ok()?;
        if *seen == stamps {
            return None;
        }
        match peer_configs(&self.peer, &self.auto_dir, &self.hosts) {
            Ok(configs) => {
                *seen = stamps;
                Some(configs)
            }
            Err(e) => {
                tracing::warn!("cannot reload the peer TLS files, keeping the current ones: {e:#}");
                None
            }
        }
    }
}

/// The peer endpoint's two sides and, without a peer CA, the fingerprint
/// this member announces for pinning.
pub struct PeerConfigs {
    /// The accepting side.
    pub server: quinn::ServerConfig,
    /// The dialing side.
    pub client: quinn::ClientConfig,
    /// `Some(own fingerprint)` when members pin each other (no peer CA).
    pub pinned_fingerprint: Option<String>,
}

/// Asks every peer for its certificate and checks only that the handshake
/// is signed with its key; who it may speak for is the pins' decision.
#[derive(Debug)]
struct AnyClientCert(Arc<rustls::crypto::CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    signatures_by_provider!();
}

/// A client side that presents `chain`/`key` and accepts any server
/// certificate: how a stranger with a self-made certificate (or one from
/// the right CA) would dial a member; tests use it.
///
/// # Errors
/// rustls or quinn refusing the configuration.
pub fn client_config_with_identity(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
        .with_client_auth_cert(chain, key)?;
    client_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls)?));
    client.transport_config(transport_config());
    Ok(client)
}

/// `--peer-cert-allowed-cn` / `--peer-cert-allowed-hostname`.
#[derive(Debug, Clone)]
struct AllowedNames {
    cn: Option<String>,
    hostname: Option<String>,
}

impl AllowedNames {
    /// etcd's rule: the leaf's CN equals the allowed CN; or the leaf is
    /// valid (by SAN) for the allowed host name.
    fn check(&self, leaf: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let refused =
            || rustls::Error::General("client certificate authentication failed".to_string());
        if let Some(cn) = &self.cn {
            if crate::core::tls::common_name(leaf).as_deref() != Some(cn.as_str()) {
                return Err(refused());
            }
        }
        if let Some(host) = &self.hostname {
            if !crate::core::tls::valid_for_host(leaf, host) {
                return Err(refused());
            }
        }
        Ok(())
    }
}

/// The CA's verdict on a peer's client certificate, then the allowed name.
#[derive(Debug)]
struct NamedClient {
    inner: Arc<dyn ClientCertVerifier>,
    names: AllowedNames,
}

impl ClientCertVerifier for NamedClient {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.names.check(end_entity)?;
        Ok(verified)
    }

    signatures_by_inner!();
}

/// The CA's verdict on a member's server certificate (for the host of its
/// peer URL), then the allowed name.
#[derive(Debug)]
struct NamedServer {
    inner: Arc<WebPkiServerVerifier>,
    names: AllowedNames,
}

impl ServerCertVerifier for NamedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.names.check(end_entity)?;
        Ok(verified)
    }

    signatures_by_inner!();
}

/// How long a peer connection (or a handshake) may go without a packet
/// from the other side.
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// QUIC settings of every peer connection. A member opens one stream of
/// each kind per connection (the `R` stream, a snapshot's `S` stream on a
/// connection of its own, one `M` request), so a peer may keep at most
/// [`super::MAX_UNI_STREAMS`] unidirectional and
/// [`super::MAX_BIDI_STREAMS`] bidirectional streams open (quinn's default,
/// 100 each, would let one connection hold 100 partial frames).
pub(super) fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(super::MAX_UNI_STREAMS));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(super::MAX_BIDI_STREAMS));
    t.keep_alive_interval(Some(Duration::from_millis(500)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
}

/// Accepts any server certificate (auto TLS: encrypted, not authenticated),
/// while still checking that the handshake signatures are valid.
#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    signatures_by_provider!();
}
