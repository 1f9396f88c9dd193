//! Peer transport over QUIC (quinn + rustls), ALPN `kvd-raft/1`.
//!
//! Every stream starts with one kind byte:
//! - `R` (unidirectional): Raft messages, length-delimited frames (u32
//!   big-endian length, then an `eraftpb.Message`). Each member dials every
//!   peer it sends to and keeps one such stream per peer; a pair of members
//!   thus uses two connections, one per direction (see ARCHITECTURE.md).
//! - `S` (unidirectional, on a connection of its own): a Raft snapshot. The
//!   `MsgSnapshot` frame, then the state machine in chunks (see
//!   `core::raft::snapshot`), so that a large snapshot never delays the heartbeats
//!   on the `R` stream. The receiver closes that connection with code 3
//!   once it has staged the snapshot; only then is it reported delivered.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use etcd_client::proto::{PbMemberListResponse, PbResponseHeader};
use prost::Message as _;
use raft::eraftpb::{Message, MessageType};
use raft::SnapshotStatus;
use tokio::sync::{mpsc, Semaphore};

mod admission;
pub mod frame;
pub mod pins;
pub mod tls;

use crate::core::config::PeerTls;

pub use frame::{max_frame, read_frame};
pub use tls::auto_tls_client_config;

use crate::core::framing::FrameError;
use crate::core::members;
use crate::core::raft::snapshot::{SnapshotReceiver, SnapshotSource};
use crate::core::raft::{Event, NodeHandle, Outbox};
use crate::core::storage::Storage;
use crate::core::types::MemberId;

/// The ALPN protocol of the peer port.
pub const ALPN: &[u8] = b"kvd-raft/1";
/// Messages queued per peer before new ones are dropped (Raft retries).
const PEER_QUEUE: usize = 4096;
/// Unidirectional streams a peer may keep open on one connection.
const MAX_UNI_STREAMS: u32 = 4;
/// Bidirectional streams a peer may keep open on one connection.
const MAX_BIDI_STREAMS: u32 = 2;
/// Streams, over all connections, whose first frame is still being read:
/// before it, nobody knows which member (if any) the sender speaks for, so
/// what they may hold is bounded by this times the largest frame.
const MAX_UNADMITTED_STREAMS: usize = 16;

/// Longest wait, once a snapshot's bytes are acknowledged, for its receiver
/// to say it has staged it (see `staged`).
const SNAPSHOT_STAGE_WAIT: Duration = Duration::from_secs(30);

/// Longest wait for the connections to close at shutdown.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

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
    /// The Raft thread's runtime (`core::raft::thread`): the endpoint, its
    /// connections and the Raft streams run there, beside the Raft task.
    rt: tokio::runtime::Handle,
    /// The main runtime: snapshot transfers, which must not hold the Raft
    /// thread while they read or stage a whole state.
    bulk_rt: tokio::runtime::Handle,
    /// Largest Raft message frame accepted from a peer, bytes.
    max_frame: usize,
    /// Bounds concurrent inbound connections ([`admission::MAX_INBOUND_CONNECTIONS`]).
    inbound: Arc<Semaphore>,
    /// Bounds strangers' connections ([`admission::MAX_STRANGERS`]).
    strangers: Arc<Semaphore>,
    /// Bounds handshakes in flight per address
    /// ([`admission::MAX_HANDSHAKES_PER_ADDRESS`]).
    handshakes: admission::Handshakes,
    /// Bounds streams not yet admitted ([`MAX_UNADMITTED_STREAMS`]).
    unadmitted: Arc<Semaphore>,
    /// Members removed so far: a Raft stream admitted before the latest
    /// removal is admitted again at its next message, so that a removed
    /// member's open stream is cut (etcd drops removed members' messages).
    removals: Arc<AtomicU64>,
    /// This member's fingerprint when members pin each other (no peer CA).
    fingerprint: Option<String>,
    /// Rebuilds the TLS configuration when a peer certificate file changes.
    reload: Arc<tls::PeerReload>,
    /// The dialing side's TLS (replaced on reload).
    client: Arc<RwLock<quinn::ClientConfig>>,
}

impl Transport {
    /// Binds the peer endpoint on `addr` (UDP) with a self-signed certificate.
    /// `max_request_bytes` (`--max-request-bytes`) sizes the largest Raft
    /// message frame accepted from a peer (see [`max_frame`]). The endpoint
    /// and the peer tasks run on `raft_rt` (the Raft thread's runtime);
    /// snapshot transfers on the runtime calling this.
    ///
    /// # Errors
    /// Certificate generation, TLS configuration or bind errors.
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        raft_rt: &tokio::runtime::Handle,
        addr: SocketAddr,
        storage: Storage,
        snapshots: SnapshotSource,
        receiver: SnapshotReceiver,
        max_request_bytes: usize,
        peer_tls: &PeerTls,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let hosts = vec![addr.ip().to_string()];
        let auto_dir = data_dir.join("fixtures").join("peer");
        let configs = tls::peer_configs(peer_tls, &auto_dir, &hosts)?;
        let (server, client) = (configs.server, configs.client);
        let reload = Arc::new(tls::PeerReload::new(peer_tls.clone(), auto_dir, hosts));

        // quinn registers the socket with, and spawns its driver on, the
        // runtime it is created in.
        let endpoint = {
            let _on_raft_thread = raft_rt.enter();
            quinn::Endpoint::server(server, addr)?
        };
        Ok(Self {
            endpoint,
            client: Arc::new(RwLock::new(client)),
            peers: Arc::new(RwLock::new(HashMap::new())),
            node: Arc::new(OnceLock::new()),
            storage,
            snapshots,
            receiver,
            rt: raft_rt.clone(),
            bulk_rt: tokio::runtime::Handle::current(),
            max_frame: max_frame(max_request_bytes),
            inbound: Arc::new(Semaphore::new(admission::MAX_INBOUND_CONNECTIONS)),
            strangers: Arc::new(Semaphore::new(admission::MAX_STRANGERS)),
            handshakes: admission::Handshakes::default(),
            unadmitted: Arc::new(Semaphore::new(MAX_UNADMITTED_STREAMS)),
            removals: Arc::default(),
            fingerprint: configs.pinned_fingerprint,
            reload,
        })
    }

    /// This member's certificate fingerprint when members pin each other
    /// (no peer CA), for its published attributes.
    pub fn pinned_fingerprint(&self) -> Option<String> {
        self.fingerprint.clone()
    }

    /// With pinning: whether the member dialled as `id` answered with the
    /// certificate pinned for it (a member not pinned yet is taken on
    /// first use).
    fn dialed(&self, conn: &quinn::Connection, id: u64) -> bool {
        if self.fingerprint.is_none() {
            return true;
        }
        let fp = pins::peer_fingerprint(conn);
        match pins::pinned(&self.storage.db.read_tx(), &self.storage, id) {
            Ok(Some(pin)) if fp.as_deref() != Some(pin.as_str()) => {
                tracing::warn!(
                    remote = %conn.remote_address(),
                    "refusing a peer: {}",
                    pins::PinError::Mismatch(id)
                );
                conn.close(frame::CLOSE_MALFORMED.into(), b"not the pinned member");
                false
            }
            _ => true,
        }
    }

    /// Whether `conn`'s peer may speak as member `id`: `id` is a member
    /// (etcd refuses removed members' messages too) and, with pinning,
    /// the connection's certificate is the one pinned for it. Refuses
    /// (closes) the connection otherwise.
    fn admit(&self, conn: &quinn::Connection, id: u64) -> bool {
        let checked = if self.fingerprint.is_none() {
            pins::check_member(&self.storage, id)
        } else {
            pins::check(&self.storage, id, pins::peer_fingerprint(conn).as_deref())
        };
        match checked {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(remote = %conn.remote_address(), "refusing a peer: {e}");
                conn.close(frame::CLOSE_MALFORMED.into(), b"not a member");
                false
            }
        }
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

    /// Stops sending to member `id` (it was removed) and has every open
    /// Raft stream checked again before its next message is taken. Call it
    /// once the removal is committed to storage, where that check looks.
    pub fn remove_peer(&self, id: u64) {
        if let Ok(mut peers) = self.peers.write() {
            peers.remove(&id);
        }
        self.removals.fetch_add(1, Ordering::Release);
    }

    /// Starts accepting peers; inbound messages are stepped into `node`.
    pub fn start(&self, node: NodeHandle) {
        let _ = self.node.set(node);
        let this = self.clone();
        self.rt.spawn(async move { this.accept_loop().await });
        // With a peer CA, renewed certificates, CAs and CRLs take effect for
        // new connections without a restart (pinned certificates do not
        // change: their fingerprint is this member's identity).
        if self.fingerprint.is_none() {
            let (reload, endpoint, client) = (
                self.reload.clone(),
                self.endpoint.clone(),
                self.client.clone(),
            );
            self.rt.spawn(async move {
                let mut tick = tokio::time::interval(tls::RELOAD_CHECK);
                loop {
                    tick.tick().await;
                    if let Some(configs) = reload.changed() {
                        endpoint.set_server_config(Some(configs.server));
                        if let Ok(mut c) = client.write() {
                            *c = configs.client;
                        }
                        tracing::info!("reloaded the peer TLS files");
                    }
                }
            });
        }
    }

    /// Closes the endpoint and waits (at most [`CLOSE_GRACE`]) until its
    /// connections have finished closing (each has sent its peer the
    /// close), so that peers stop sending here at once rather than at the
    /// idle timeout. A connection that never had a round trip (a peer that
    /// is down) takes the whole grace. The Raft thread must still
    /// be running: it drives the connections.
    pub async fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(CLOSE_GRACE, self.endpoint.wait_idle()).await;
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
        let kinds = [KIND_RAFT, KIND_SNAPSHOT];
        let first =
            frame::first_frame(&conn, &mut stream, &self.unadmitted, &kinds, self.max_frame);
        let Some((kind, first)) = first.await else {
            return;
        };
        let mut first = Some(first);
        let mut speaker = None;
        let mut admitted_at = 0;
        match kind {
            KIND_RAFT => loop {
                let (m, bytes) = match first.take() {
                    Some(frame) => frame,
                    None => match read_frame(&mut stream, self.max_frame).await {
                        Ok(Some(frame)) => frame,
                        Ok(None) => return,
                        Err(e) => return frame::refuse(&conn, &e),
                    },
                };
                // One stream speaks for one member, checked at its first
                // message and again after any member's removal.
                if speaker.is_some_and(|s| s != m.from) {
                    conn.close(frame::CLOSE_MALFORMED.into(), b"one member per stream");
                    return;
                }
                let removals = self.removals.load(Ordering::Acquire);
                if speaker.is_none() || admitted_at != removals {
                    if !self.admit(&conn, m.from) {
                        return;
                    }
                    speaker = Some(m.from);
                    admitted_at = removals;
                }
                // A snapshot comes on a stream of its own, staged before it
                // is stepped; one named here has nothing behind it.
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    tracing::warn!(
                        remote = %conn.remote_address(),
                        "closing peer connection: a snapshot message on the raft stream"
                    );
                    conn.close(
                        frame::CLOSE_MALFORMED.into(),
                        b"snapshot on the raft stream",
                    );
                    return;
                }
                match node.send_step(m, bytes) {
                    // A full queue drops the message; Raft retransmits.
                    Ok(()) | Err(crate::core::errors::EtcdError::TooManyRequests) => {}
                    Err(_) => return,
                }
            },
            KIND_SNAPSHOT => {
                let Some((m, bytes)) = first else {
                    return;
                };
                if !self.admit(&conn, m.from) {
                    return;
                }
                if m.get_msg_type() != MessageType::MsgSnapshot {
                    conn.close(frame::CLOSE_MALFORMED.into(), b"not a snapshot");
                    return;
                }
                // Staged off the Raft thread (writing and syncing a whole
                // state takes long).
                let (receiver, node) = (self.receiver.clone(), node.clone());
                let staging = self.bulk_rt.spawn(async move {
                    match receiver.receive(&m, &mut stream).await {
                        Ok(()) => {
                            if node.send_step_eventually(m, bytes).await.is_ok() {
                                // Only now may the sender report it delivered
                                // (etcd answers its snapshot POST after saving).
                                conn.close(frame::CLOSE_SNAPSHOT_STAGED.into(), b"staged");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(
                                remote = %conn.remote_address(),
                                "snapshot from {:x} failed: {e:#}",
                                m.from
                            );
                            if e.downcast_ref::<FrameError>().is_some() {
                                conn.close(frame::CLOSE_MALFORMED.into(), b"malformed snapshot");
                            }
                        }
                    }
                });
                let _ = staging.await;
            }
            other => frame::refuse(&conn, &FrameError::UnknownStream(other)),
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
            let connected = match self.connect(&current).await {
                Ok((conn, _)) if !self.dialed(&conn, id) => {
                    Err(anyhow::anyhow!("{}", pins::PinError::Mismatch(id)))
                }
                other => other,
            };
            match connected {
                Ok((conn, mut stream)) => {
                    backoff = Duration::from_millis(50);
                    let mut buf = vec![KIND_RAFT];
                    while let Some(first) = rx.recv().await {
                        let mut ok = frame::encode_frame(&first, &mut buf);
                        while let Ok(m) = rx.try_recv() {
                            ok &= frame::encode_frame(&m, &mut buf);
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
                        let _ = node.send(Event::Unreachable(MemberId(id)));
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
    /// its own, then reports the outcome to Raft: delivered once the
    /// recipient has staged it (`staged`), as etcd's sender waits for the
    /// answer its receiver gives after saving. Reported earlier, the leader
    /// probed the recipient while it was still staging, was refused, and
    /// sent the whole snapshot again.
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
                    Ok(conn) if !self.dialed(&conn, to) => {
                        last = anyhow::anyhow!("{}", pins::PinError::Mismatch(to));
                    }
                    Ok(conn) => {
                        let mut stream = conn.open_uni().await?;
                        let mut head = vec![KIND_SNAPSHOT];
                        frame::encode_frame(&m, &mut head);
                        stream.write_all(&head).await?;
                        self.snapshots.stream(&m, &mut stream).await?;
                        stream.finish()?;
                        match stream.stopped().await {
                            // Closed meanwhile: the close says whether it
                            // was staged.
                            Ok(_) | Err(quinn::StoppedError::ConnectionLost(_)) => {}
                            Err(e) => return Err(e.into()),
                        }
                        return staged(&conn).await;
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
                .send_eventually(Event::SnapshotStatus(MemberId(to), status))
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
        let addr = crate::core::urls::resolve_url(url).await?;
        // The member's certificate must be valid for the host of its peer
        // URL (checked with a peer CA; auto TLS accepts any).
        let host = url::Url::parse(url)?
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
            .unwrap_or_else(|| "kvd".to_string());
        let config = self
            .client
            .read()
            .map_err(|_| anyhow::anyhow!("peer TLS configuration lock poisoned"))?
            .clone();
        let connecting = self.endpoint.connect_with(config, addr, &host)?;
        let conn = tokio::time::timeout(Duration::from_secs(2), connecting).await??;
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
                self.bulk_rt
                    .spawn(async move { this.send_snapshot(m).await });
                continue;
            }
            if let Some(p) = peers.get(&m.to) {
                // A full queue drops the message; Raft retransmits.
                let _ = p.tx.try_send(m);
            }
        }
    }

    fn add_peer(&self, id: MemberId, peer_urls: Vec<String>) {
        Transport::add_peer(self, id.0, peer_urls);
    }

    fn remove_peer(&self, id: MemberId) {
        Transport::remove_peer(self, id.0);
    }
}

/// Waits until the receiver of a snapshot sent on `conn` has staged it: it
/// closes the connection with [`frame::CLOSE_SNAPSHOT_STAGED`] then. A
/// receiver of an earlier kvd never says so: after [`SNAPSHOT_STAGE_WAIT`]
/// the snapshot counts as delivered, as it did for those.
///
/// # Errors
/// The receiver closed the connection otherwise (a malformed or failed
/// snapshot), or it was lost.
async fn staged(conn: &quinn::Connection) -> anyhow::Result<()> {
    let Ok(reason) = tokio::time::timeout(SNAPSHOT_STAGE_WAIT, conn.closed()).await else {
        conn.close(0u32.into(), b"snapshot sent");
        return Ok(());
    };
    match reason {
        quinn::ConnectionError::ApplicationClosed(close)
            if close.error_code == quinn::VarInt::from_u32(frame::CLOSE_SNAPSHOT_STAGED) =>
        {
            Ok(())
        }
        other => Err(anyhow::anyhow!("the receiver did not stage it: {other}")),
    }
}
