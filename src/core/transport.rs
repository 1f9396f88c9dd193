//! Peer transport: Raft messages over QUIC (quinn + rustls), ALPN `kvd-raft/1`.
//!
//! Each member dials every peer it sends to and keeps one long-lived
//! unidirectional stream per peer, carrying length-delimited frames (u32
//! big-endian length, then an `eraftpb.Message`). Inbound connections are
//! accepted on the peer port and their frames are stepped into the Raft
//! task. A pair of members thus uses two connections, one per direction:
//! each side owns its sending path and its reconnects, with no negotiation
//! over who dials (recorded in ARCHITECTURE.md).
//!
//! Without configured peer certificates every member generates a
//! self-signed one (etcd's `--peer-auto-tls`): traffic is encrypted but
//! peers are not authenticated, and a warning says so.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use protobuf::Message as _;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use raft::eraftpb::Message;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::sync::mpsc;

use crate::core::node::{Event, NodeHandle, Outbox};

/// The ALPN protocol of the peer port.
pub const ALPN: &[u8] = b"kvd-raft/1";
/// Largest frame accepted from a peer, bytes.
const MAX_FRAME: usize = 256 * 1024 * 1024;
/// Messages queued per peer before new ones are dropped (Raft retries).
const PEER_QUEUE: usize = 4096;

/// The QUIC endpoint and the per-peer senders.
#[derive(Clone)]
pub struct Transport {
    /// The endpoint (server and client).
    endpoint: quinn::Endpoint,
    /// Per-peer outgoing queues, by member id.
    peers: Arc<RwLock<HashMap<u64, mpsc::Sender<Message>>>>,
    /// Set once the Raft task exists: where inbound messages go.
    node: Arc<OnceLock<NodeHandle>>,
}

impl Transport {
    /// Binds the peer endpoint on `addr` (UDP) with a self-signed certificate.
    ///
    /// # Errors
    /// Certificate generation, TLS configuration or bind errors.
    pub fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let generated = rcgen::generate_simple_self_signed(vec!["kvd".to_string()])?;
        let cert = CertificateDer::from(generated.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            generated.signing_key.serialize_der(),
        ));
        tracing::warn!(
            "no peer certificates configured: peer traffic is encrypted with a self-signed \
             certificate but peers are not authenticated"
        );
        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)?;
        server_tls.alpn_protocols = vec![ALPN.to_vec()];
        let mut server =
            quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls)?));
        server.transport_config(transport_config());

        let mut client_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
            .with_no_client_auth();
        client_tls.alpn_protocols = vec![ALPN.to_vec()];
        let mut client =
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls)?));
        client.transport_config(transport_config());

        let mut endpoint = quinn::Endpoint::server(server, addr)?;
        endpoint.set_default_client_config(client);
        Ok(Self {
            endpoint,
            peers: Arc::new(RwLock::new(HashMap::new())),
            node: Arc::new(OnceLock::new()),
        })
    }

    /// The bound UDP address.
    ///
    /// # Errors
    /// The socket's address cannot be read.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Starts sending to member `id` at the first reachable of `peer_urls`.
    pub fn add_peer(&self, id: u64, peer_urls: Vec<String>) {
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        if let Ok(mut peers) = self.peers.write() {
            peers.insert(id, tx);
        }
        let this = self.clone();
        tokio::spawn(async move { this.send_loop(id, peer_urls, rx).await });
    }

    /// Starts accepting peers; inbound messages are stepped into `node`.
    pub fn start(&self, node: NodeHandle) {
        let _ = self.node.set(node);
        let this = self.clone();
        tokio::spawn(async move { this.accept_loop().await });
    }

    /// Closes the endpoint.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
    }

    /// An [`Outbox`] for the Raft task.
    pub fn outbox(&self) -> Box<dyn Outbox> {
        Box::new(self.clone())
    }

    async fn accept_loop(self) {
        while let Some(incoming) = self.endpoint.accept().await {
            let this = self.clone();
            tokio::spawn(async move {
                match incoming.await {
                    Ok(conn) => {
                        while let Ok(stream) = conn.accept_uni().await {
                            let this = this.clone();
                            tokio::spawn(async move { this.receive_stream(stream).await });
                        }
                    }
                    Err(e) => tracing::debug!("peer handshake failed: {e}"),
                }
            });
        }
    }

    async fn receive_stream(self, mut stream: quinn::RecvStream) {
        let Some(node) = self.node.get() else {
            return;
        };
        let mut len = [0u8; 4];
        loop {
            if stream.read_exact(&mut len).await.is_err() {
                return;
            }
            let n = u32::from_be_bytes(len) as usize;
            if n > MAX_FRAME {
                tracing::warn!("peer frame of {n} bytes refused");
                return;
            }
            let mut buf = vec![0u8; n];
            if stream.read_exact(&mut buf).await.is_err() {
                return;
            }
            match Message::parse_from_bytes(&buf) {
                Ok(m) => {
                    if node.send(Event::Step(Box::new(m))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!("undecodable peer message: {e}");
                    return;
                }
            }
        }
    }

    async fn send_loop(self, id: u64, peer_urls: Vec<String>, mut rx: mpsc::Receiver<Message>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.connect(&peer_urls).await {
                Ok((conn, mut stream)) => {
                    backoff = Duration::from_millis(50);
                    let mut buf = Vec::new();
                    while let Some(first) = rx.recv().await {
                        buf.clear();
                        let mut ok = encode_frame(&first, &mut buf);
                        while let Ok(m) = rx.try_recv() {
                            ok &= encode_frame(&m, &mut buf);
                            if buf.len() > 4 * 1024 * 1024 {
                                break;
                            }
                        }
                        if !ok {
                            continue;
                        }
                        if stream.write_all(&buf).await.is_err() {
                            break;
                        }
                    }
                    if rx.is_closed() {
                        conn.close(0u32.into(), b"peer removed");
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(peer = format_args!("{id:x}"), "connect failed: {e:#}");
                    if let Some(node) = self.node.get() {
                        let _ = node.send(Event::Unreachable(id));
                    }
                    // Drop what queued meanwhile: Raft resends what matters.
                    while rx.try_recv().is_ok() {}
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn connect(
        &self,
        peer_urls: &[String],
    ) -> anyhow::Result<(quinn::Connection, quinn::SendStream)> {
        let mut last = anyhow::anyhow!("no peer URL");
        for url in peer_urls {
            match self.connect_one(url).await {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn connect_one(
        &self,
        url: &str,
    ) -> anyhow::Result<(quinn::Connection, quinn::SendStream)> {
        let addr = resolve_url(url).await?;
        let conn =
            tokio::time::timeout(Duration::from_secs(2), self.endpoint.connect(addr, "kvd")?)
                .await??;
        let stream = conn.open_uni().await?;
        Ok((conn, stream))
    }
}

impl Outbox for Transport {
    fn send(&self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        let Ok(peers) = self.peers.read() else {
            return;
        };
        for m in msgs {
            if let Some(tx) = peers.get(&m.to) {
                // A full queue drops the message; Raft retransmits.
                let _ = tx.try_send(m);
            }
        }
    }
}

fn encode_frame(m: &Message, buf: &mut Vec<u8>) -> bool {
    match m.write_to_bytes() {
        Ok(bytes) => {
            buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            buf.extend_from_slice(&bytes);
            true
        }
        Err(e) => {
            tracing::error!("cannot encode raft message: {e}");
            false
        }
    }
}

/// Resolves a peer URL (`http://`, `https://` or `quic://` host:port) to a
/// socket address.
///
/// # Errors
/// An unparsable URL, a missing port, or a name that does not resolve.
pub async fn resolve_url(url: &str) -> anyhow::Result<SocketAddr> {
    let u = url::Url::parse(url)?;
    let host = u
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("no host in {url}"))?;
    let port = u
        .port()
        .ok_or_else(|| anyhow::anyhow!("no port in {url}"))?;
    let host = host.to_string();
    let mut addrs = tokio::net::lookup_host(format!("{host}:{port}")).await?;
    addrs
        .next()
        .ok_or_else(|| anyhow::anyhow!("{url} does not resolve"))
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_millis(500)));
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(5)) {
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

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
