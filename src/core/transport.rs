//! Peer transport over QUIC (quinn + rustls), ALPN `kvd-raft/1`.
//!
//! Every stream starts with one kind byte:
//! - `R` (unidirectional): Raft messages, length-delimited frames (u32
//!   big-endian length, then an `eraftpb.Message`). Each member dials every
//!   peer it sends to and keeps one such stream per peer; a pair of members
//!   thus uses two connections, one per direction (see ARCHITECTURE.md).
//! - `S` (unidirectional, on a connection of its own): a Raft snapshot. The
//!   `MsgSnapshot` frame, then the state machine in chunks (see
//!   `core::snapshot`), so that a large snapshot never delays the heartbeats
//!   on the `R` stream.
//! - `M` (bidirectional): "who is in the cluster": answered with the member
//!   list and the answering member's applied index, used by a member joining
//!   with `--initial-cluster-state existing` (etcd's
//!   `GetClusterFromRemotePeers`) and by a member that lost touch with the
//!   cluster to learn whether it was removed (etcd's peers answer such a
//!   member "410 Gone").
//!
//! Without configured peer certificates every member generates a
//! self-signed one (etcd's `--peer-auto-tls`): traffic is encrypted but
//! peers are not authenticated, and a warning says so.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use etcd_client::proto::{PbMemberListResponse, PbResponseHeader};
use prost::Message as _;
use protobuf::Message as _;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use raft::eraftpb::{Message, MessageType};
use raft::SnapshotStatus;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, Semaphore};

use crate::core::members;
use crate::core::node::{Event, NodeHandle, Outbox};
use crate::core::snapshot::{SnapshotReceiver, SnapshotSource};
use crate::core::storage::Storage;

/// The ALPN protocol of the peer port.
pub const ALPN: &[u8] = b"kvd-raft/1";
/// Room a Raft message frame may take beyond the largest client request:
/// raft-rs batches entries up to 1 MiB (`max_size_per_msg`) but always sends
/// at least one, so a frame holds at most one request plus that much.
const FRAME_OVERHEAD: usize = 2 * 1024 * 1024;
/// A frame's buffer starts at most this large and grows only as its bytes
/// arrive, so a peer's claimed length is never allocated up front.
const FRAME_INITIAL_CAPACITY: usize = 64 * 1024;
/// Concurrent inbound peer connections; more are refused at once. Each peer
/// uses one for Raft messages plus short-lived ones for snapshots and
/// member-list requests, so this is far above any real cluster's need.
const MAX_INBOUND_CONNECTIONS: usize = 256;
/// QUIC application error code when closing a connection over bad input.
const CLOSE_MALFORMED: u32 = 2;
/// Messages queued per peer before new ones are dropped (Raft retries).
const PEER_QUEUE: usize = 4096;

const KIND_RAFT: u8 = b'R';
const KIND_SNAPSHOT: u8 = b'S';
const KIND_MEMBERS: u8 = b'M';

/// One peer's outgoing queue and where it is reached.
struct Peer {
    /// Raft messages to send.
    tx: mpsc::Sender<Message>,
    /// Its peer URLs (shared with the sending task, which re-reads them).
    urls: Arc<RwLock<Vec<String>>>,
}

/// The QUIC endpoint and the per-peer senders.
#[derive(Clone)]
pub struct Transport {
    /// The endpoint (server and client).
    endpoint: quinn::Endpoint,
    /// Per-peer outgoing queues, by member id.
    peers: Arc<RwLock<HashMap<u64, Peer>>>,
    /// Set once the Raft task exists: where inbound messages go.
    node: Arc<OnceLock<NodeHandle>>,
    /// The database, to answer member-list requests.
    storage: Storage,
    /// Snapshots this member serves to followers, by token.
    snapshots: SnapshotSource,
    /// Where an incoming snapshot is staged before the Raft task applies it.
    receiver: SnapshotReceiver,
    /// The runtime the transport's tasks run on (the Raft task's thread,
    /// which calls [`Outbox`], has none of its own).
    rt: tokio::runtime::Handle,
    /// Largest Raft message frame accepted from a peer, bytes.
    max_frame: usize,
    /// Bounds concurrent inbound connections ([`MAX_INBOUND_CONNECTIONS`]).
    inbound: Arc<Semaphore>,
}

impl Transport {
    /// Binds the peer endpoint on `addr` (UDP) with a self-signed certificate.
    /// `max_request_bytes` (`--max-request-bytes`) sizes the largest Raft
    /// message frame accepted from a peer (that plus [`FRAME_OVERHEAD`]).
    ///
    /// # Errors
    /// Certificate generation, TLS configuration or bind errors.
    pub fn bind(
        addr: SocketAddr,
        storage: Storage,
        snapshots: SnapshotSource,
        receiver: SnapshotReceiver,
        max_request_bytes: usize,
    ) -> anyhow::Result<Self> {
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

        let client = auto_tls_client_config()?;

        let mut endpoint = quinn::Endpoint::server(server, addr)?;
        endpoint.set_default_client_config(client);
        Ok(Self {
            endpoint,
            peers: Arc::new(RwLock::new(HashMap::new())),
            node: Arc::new(OnceLock::new()),
            storage,
            snapshots,
            receiver,
            rt: tokio::runtime::Handle::current(),
            max_frame: max_frame(max_request_bytes),
            inbound: Arc::new(Semaphore::new(MAX_INBOUND_CONNECTIONS)),
        })
    }

    /// The bound UDP address.
    ///
    /// # Errors
    /// The socket's address cannot be read.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Starts sending to member `id` at the first reachable of `peer_urls`;
    /// for a known member, only updates its URLs.
    pub fn add_peer(&self, id: u64, peer_urls: Vec<String>) {
        let Ok(mut peers) = self.peers.write() else {
            return;
        };
        if let Some(p) = peers.get(&id) {
            if let Ok(mut urls) = p.urls.write() {
                *urls = peer_urls;
            }
            return;
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let urls = Arc::new(RwLock::new(peer_urls));
        peers.insert(
            id,
            Peer {
                tx,
                urls: urls.clone(),
            },
        );
        let this = self.clone();
        self.rt
            .spawn(async move { this.send_loop(id, urls, rx).await });
    }

    /// Stops sending to member `id` (it was removed).
    pub fn remove_peer(&self, id: u64) {
        if let Ok(mut peers) = self.peers.write() {
            peers.remove(&id);
        }
    }

    /// Starts accepting peers; inbound messages are stepped into `node`.
    pub fn start(&self, node: NodeHandle) {
        let _ = self.node.set(node);
        let this = self.clone();
        self.rt.spawn(async move { this.accept_loop().await });
    }

    /// Closes the endpoint.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
    }

    /// An [`Outbox`] for the Raft task.
    pub fn outbox(&self) -> Box<dyn Outbox> {
        Box::new(self.clone())
    }

    /// Asks the members at `peer_urls` for the cluster's member list (a member
    /// joining an existing cluster learns its id and its peers this way).
    ///
    /// # Errors
    /// No peer answered.
    pub async fn fetch_members(
        &self,
        peer_urls: &[String],
    ) -> anyhow::Result<PbMemberListResponse> {
        let mut last = anyhow::anyhow!("no peer URL to ask");
        for url in peer_urls {
            let attempt = async {
                let conn = self.dial(url).await?;
                let (mut send, mut recv) = conn.open_bi().await?;
                send.write_all(&[KIND_MEMBERS]).await?;
                send.finish()?;
                let bytes = recv.read_to_end(16 * 1024 * 1024).await?;
                conn.close(0u32.into(), b"done");
                Ok::<_, anyhow::Error>(PbMemberListResponse::decode(bytes.as_slice())?)
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(e)) => last = e.context(format!("asking {url}")),
                Err(_) => last = anyhow::anyhow!("asking {url}: timed out"),
            }
        }
        Err(last)
    }

    async fn accept_loop(self) {
        while let Some(incoming) = self.endpoint.accept().await {
            let Ok(permit) = self.inbound.clone().try_acquire_owned() else {
                tracing::warn!(
                    remote = %incoming.remote_address(),
                    "refusing a peer connection: {MAX_INBOUND_CONNECTIONS} already open"
                );
                incoming.refuse();
                continue;
            };
            let this = self.clone();
            self.rt.spawn(async move {
                match incoming.await {
                    Ok(conn) => this.serve_connection(conn).await,
                    Err(e) => tracing::debug!("peer handshake failed: {e}"),
                }
                drop(permit);
            });
        }
    }

    async fn serve_connection(self, conn: quinn::Connection) {
        loop {
            tokio::select! {
                uni = conn.accept_uni() => match uni {
                    Ok(stream) => {
                        let this = self.clone();
                        let conn = conn.clone();
                        self.rt.spawn(async move { this.receive_uni(conn, stream).await });
                    }
                    Err(_) => return,
                },
                bi = conn.accept_bi() => match bi {
                    Ok((send, recv)) => {
                        let this = self.clone();
                        self.rt.spawn(async move { this.answer_bi(send, recv).await });
                    }
                    Err(_) => return,
                },
            }
        }
    }

    async fn answer_bi(self, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let mut kind = [0u8; 1];
        if recv.read_exact(&mut kind).await.is_err() || kind[0] != KIND_MEMBERS {
            return;
        }
        use crate::core::storage::{META_APPLIED_INDEX, META_CLUSTER_ID, META_MEMBER_ID};
        let cluster_id = self.storage.meta_u64(META_CLUSTER_ID);
        let member_id = self.storage.meta_u64(META_MEMBER_ID);
        let applied = self.storage.meta_u64(META_APPLIED_INDEX);
        let list = members::list(&self.storage);
        if let (Ok(cluster_id), Ok(member_id), Ok(applied), Ok(members)) =
            (cluster_id, member_id, applied, list)
        {
            // `revision` carries the answering member's applied index here
            // (this is kvd's own peer protocol, not an etcd response).
            let resp = PbMemberListResponse {
                header: Some(PbResponseHeader {
                    cluster_id,
                    member_id,
                    revision: applied as i64,
                    raft_term: 0,
                }),
                members,
            };
            let _ = send.write_all(&resp.encode_to_vec()).await;
        }
        let _ = send.finish();
    }

    async fn receive_uni(self, conn: quinn::Connection, mut stream: quinn::RecvStream) {
        let Some(node) = self.node.get() else {
            return;
        };
        let mut kind = [0u8; 1];
        if stream.read_exact(&mut kind).await.is_err() {
            return;
        }
        match kind[0] {
            KIND_RAFT => loop {
                let m = match read_frame(&mut stream, self.max_frame).await {
                    Ok(Some(m)) => m,
                    Ok(None) => return,
                    Err(e) => return refuse(&conn, &e),
                };
                match node.send(Event::Step(Box::new(m))) {
                    // A full queue drops the message; Raft retransmits.
                    Ok(()) | Err(crate::core::errors::EtcdError::TooManyRequests) => {}
                    Err(_) => return,
                }
            },
            KIND_SNAPSHOT => {
                let m = match read_frame(&mut stream, self.max_frame).await {
                    Ok(Some(m)) => m,
                    Ok(None) => return,
                    Err(e) => return refuse(&conn, &e),
                };
                match self.receiver.receive(&m, &mut stream).await {
                    Ok(()) => {
                        let _ = node.send_eventually(Event::Step(Box::new(m))).await;
                    }
                    Err(e) => {
                        tracing::warn!(
                            remote = %conn.remote_address(),
                            "snapshot from {:x} failed: {e:#}",
                            m.from
                        );
                        if e.downcast_ref::<FrameError>().is_some() {
                            conn.close(CLOSE_MALFORMED.into(), b"malformed snapshot");
                        }
                    }
                }
            }
            other => refuse(&conn, &FrameError::UnknownStream(other)),
        }
    }

    async fn send_loop(
        self,
        id: u64,
        urls: Arc<RwLock<Vec<String>>>,
        mut rx: mpsc::Receiver<Message>,
    ) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let current: Vec<String> = urls.read().map(|u| u.clone()).unwrap_or_default();
            match self.connect(&current).await {
                Ok((conn, mut stream)) => {
                    backoff = Duration::from_millis(50);
                    let mut buf = vec![KIND_RAFT];
                    while let Some(first) = rx.recv().await {
                        let mut ok = encode_frame(&first, &mut buf);
                        while let Ok(m) = rx.try_recv() {
                            ok &= encode_frame(&m, &mut buf);
                            if buf.len() > 4 * 1024 * 1024 {
                                break;
                            }
                        }
                        if ok && stream.write_all(&buf).await.is_err() {
                            break;
                        }
                        buf.clear();
                    }
                    if rx.is_closed() {
                        conn.close(0u32.into(), b"peer removed");
                        return;
                    }
                }
                Err(e) => {
                    if rx.is_closed() {
                        return;
                    }
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

    /// Streams the snapshot named in `m` to its recipient on a connection of
    /// its own, then reports the outcome to Raft.
    async fn send_snapshot(self, m: Message) {
        let to = m.to;
        let urls: Vec<String> = self
            .peers
            .read()
            .ok()
            .and_then(|p| {
                p.get(&to)
                    .and_then(|p| p.urls.read().ok().map(|u| u.clone()))
            })
            .unwrap_or_default();
        let result = async {
            let mut last = anyhow::anyhow!("no peer URL");
            for url in &urls {
                match self.dial(url).await {
                    Ok(conn) => {
                        let mut stream = conn.open_uni().await?;
                        let mut head = vec![KIND_SNAPSHOT];
                        encode_frame(&m, &mut head);
                        stream.write_all(&head).await?;
                        self.snapshots.stream(&m, &mut stream).await?;
                        stream.finish()?;
                        stream.stopped().await?;
                        conn.close(0u32.into(), b"snapshot sent");
                        return Ok(());
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
        .await;
        let status = match &result {
            Ok(()) => {
                crate::core::metrics::METRICS.snapshot_sent.inc();
                SnapshotStatus::Finish
            }
            Err(e) => {
                tracing::warn!(
                    peer = format_args!("{to:x}"),
                    "sending snapshot failed: {e:#}"
                );
                SnapshotStatus::Failure
            }
        };
        if let Some(node) = self.node.get() {
            let _ = node
                .send_eventually(Event::SnapshotStatus(to, status))
                .await;
        }
    }

    async fn connect(
        &self,
        peer_urls: &[String],
    ) -> anyhow::Result<(quinn::Connection, quinn::SendStream)> {
        let mut last = anyhow::anyhow!("no peer URL");
        for url in peer_urls {
            match self.dial(url).await {
                Ok(conn) => {
                    let stream = conn.open_uni().await?;
                    return Ok((conn, stream));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn dial(&self, url: &str) -> anyhow::Result<quinn::Connection> {
        let addr = resolve_url(url).await?;
        let conn =
            tokio::time::timeout(Duration::from_secs(2), self.endpoint.connect(addr, "kvd")?)
                .await??;
        Ok(conn)
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
            if m.get_msg_type() == MessageType::MsgSnapshot {
                let this = self.clone();
                self.rt.spawn(async move { this.send_snapshot(m).await });
                continue;
            }
            if let Some(p) = peers.get(&m.to) {
                // A full queue drops the message; Raft retransmits.
                let _ = p.tx.try_send(m);
            }
        }
    }

    fn add_peer(&self, id: u64, peer_urls: Vec<String>) {
        Transport::add_peer(self, id, peer_urls);
    }

    fn remove_peer(&self, id: u64) {
        Transport::remove_peer(self, id);
    }
}

/// Why input from a peer was refused; the connection is then closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A length prefix above the limit (nothing of it was allocated).
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// The length the peer claimed.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended or failed inside a frame.
    #[error("stream ended inside a frame: {0}")]
    Truncated(#[from] std::io::Error),
    /// The frame's bytes are not an `eraftpb.Message`.
    #[error("undecodable raft message: {0}")]
    Undecodable(#[from] protobuf::ProtobufError),
    /// A stream kind byte kvd does not know.
    #[error("unknown stream kind {0}")]
    UnknownStream(u8),
    /// A snapshot record naming a keyspace that does not exist.
    #[error("snapshot record for unknown keyspace {0}")]
    UnknownKeyspace(u8),
}

/// The largest Raft message frame for `--max-request-bytes`, bytes.
pub fn max_frame(max_request_bytes: usize) -> usize {
    max_request_bytes.saturating_add(FRAME_OVERHEAD)
}

/// Reads one length-delimited field (u32 big-endian length, then the
/// bytes) of at most `max` bytes. The buffer grows only as bytes arrive, so
/// a peer that claims 4 GiB and sends nothing costs nothing. `Ok(None)` when
/// the stream ends cleanly before a length.
///
/// # Errors
/// [`FrameError::TooLarge`] or [`FrameError::Truncated`].
pub async fn read_field<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    let first = r.read(&mut len).await?;
    if first == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[first..]).await?;
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Err(FrameError::TooLarge { len: n, max });
    }
    let mut buf = Vec::with_capacity(n.min(FRAME_INITIAL_CAPACITY));
    let got = (&mut *r).take(n as u64).read_to_end(&mut buf).await?;
    if got < n {
        return Err(FrameError::Truncated(
            std::io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    Ok(Some(buf))
}

/// Reads and decodes one Raft message frame of at most `max` bytes;
/// `Ok(None)` at a clean end of stream.
///
/// # Errors
/// As [`read_field`], and [`FrameError::Undecodable`].
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Message>, FrameError> {
    match read_field(r, max).await? {
        Some(bytes) => Ok(Some(Message::parse_from_bytes(&bytes)?)),
        None => Ok(None),
    }
}

/// Logs bad input from a peer and closes its connection; the member keeps
/// serving everyone else.
fn refuse(conn: &quinn::Connection, e: &FrameError) {
    tracing::warn!(
        remote = %conn.remote_address(),
        "closing peer connection: {e}"
    );
    conn.close(CLOSE_MALFORMED.into(), b"malformed frame");
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

/// Resolves a peer URL (`http://`, `https://` or `quic://` host:port) to a
/// socket address.
///
/// # Errors
/// An unparsable URL, a missing port, or a name that does not resolve.
pub async fn resolve_url(url: &str) -> anyhow::Result<SocketAddr> {
    let u = url::Url::parse(url)?;
    let host = u
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("no host in {url}"))?
        .to_string();
    let port = u
        .port()
        .ok_or_else(|| anyhow::anyhow!("no port in {url}"))?;
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
