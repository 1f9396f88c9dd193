//! Starts and stops a serving member: storage, Raft node, peer transport and
//! the client-facing gRPC/HTTP server.
//!
//! Start-up order: open the data dir and check it belongs to this member and
//! cluster; bootstrap or load the Raft log; bind the peer endpoint; start the
//! Raft task; serve clients; publish this member's client URLs through Raft.
//! Shutdown (SIGINT/SIGTERM) stops accepting clients, stops the Raft task,
//! closes the peer endpoint and syncs the database before returning.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

mod bootstrap;
mod membership;
pub mod restore;

use crate::core::api::listener::{self, ClientConn, ClientListener};
use crate::core::api::{self, ApiContext};
use crate::core::auth::AuthStore;
use crate::core::client::ClientTls;
use crate::core::config::ServeConfig;
use crate::core::lease::Lessor;
use crate::core::members;
use crate::core::mvcc;
use crate::core::raft::proposal::MemberAttributes;
use crate::core::raft::snapshot::{SnapshotReceiver, SnapshotSource};
use crate::core::raft::thread::RaftThread;
use crate::core::raft::{self as raft_task, Event, NodeConfig};
use crate::core::storage::Storage;
use crate::core::tls::ServerTls;
use crate::core::transport::Transport;
use crate::core::types::{ClusterId, LeaseId, MemberId};
use crate::core::watch::{WatchConfig, WatchHub};

/// Why `kvd serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable (exit code 2), e.g. a data dir of another cluster.
    #[error("{0}")]
    Config(String),
    /// Anything else (exit code 1).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// How long shutdown waits for client connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Runs a member until `stop` turns true (the serve mode turns SIGINT and
/// SIGTERM into it), the member is removed from the cluster, or its Raft
/// task fails; returns once every task has drained. `ready` fires once the
/// member has published itself through Raft and serves clients (where etcd
/// tells systemd `READY=1`).
///
/// # Errors
/// [`ServeError::Config`] for configuration the data dir rejects;
/// [`ServeError::Other`] for I/O, bind or storage failures, a failed Raft
/// task, or this member's removal.
pub async fn run(
    cfg: ServeConfig,
    stop: watch::Receiver<bool>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
        ServeError::Other(anyhow::anyhow!(
            "cannot create data dir {}: {e}",
            cfg.data_dir.display()
        ))
    })?;
    let storage =
        Storage::open_with_cache(&cfg.data_dir, cfg.backend_cache_bytes).map_err(|e| {
            ServeError::Other(anyhow::anyhow!(
                "cannot open data dir {}: {e}",
                cfg.data_dir.display()
            ))
        })?;
    let peer_addr = *cfg
        .listen_peer_addrs
        .first()
        .ok_or_else(|| ServeError::Config("no --listen-peer-urls".into()))?;
    let source = SnapshotSource::new(storage.clone());
    let receiver = SnapshotReceiver::new(&cfg.data_dir);
    // The Raft thread drives the peer transport too (`core::raft::thread`).
    let mut raft_thread = RaftThread::spawn()?;
    let transport = Transport::bind(
        raft_thread.handle(),
        peer_addr,
        storage.clone(),
        source.clone(),
        receiver,
        cfg.max_request_bytes,
        &cfg.peer_tls,
        &cfg.data_dir,
    )
    .map_err(|e| anyhow::anyhow!("cannot listen for peers on {peer_addr}: {e:#}"))?;
    let (member_id, cluster_id, log) =
        bootstrap::open_or_bootstrap(&cfg, &storage, &source, &transport).await?;
    tracing::info!(
        name = %cfg.name,
        member_id = format_args!("{member_id:x}"),
        cluster_id = format_args!("{cluster_id:x}"),
        data_dir = %cfg.data_dir.display(),
        "starting member"
    );

    for m in members::list(&storage)? {
        if m.id != member_id {
            transport.add_peer(m.id, m.peer_ur_ls.clone());
        }
    }

    let lessor = Arc::new(Lessor::default());
    for (id, ttl) in mvcc::leases(&storage.db.read_tx(), &storage).map_err(anyhow::Error::from)? {
        lessor.granted(LeaseId(id), ttl);
    }
    let watch_hub = WatchHub::new(&storage, WatchConfig::default())?;
    let mut auth = AuthStore::new(
        storage.clone(),
        cfg.auth.token_ttl,
        cfg.auth.bcrypt_cost,
        cfg.client_tls.client_cert_auth && cfg.client_tls.trusted_ca_file.is_some(),
    );
    if let Some(options) = &cfg.auth.jwt {
        auth.jwt =
            Some(crate::core::auth::jwt::JwtProvider::load(options).map_err(ServeError::Config)?);
    }
    let auth = Arc::new(auth);
    let tick = cfg.heartbeat_interval.max(Duration::from_millis(1));
    let election_ticks =
        (cfg.election_timeout.as_millis() / tick.as_millis().max(1)).max(2) as usize;
    let handle = raft_task::start(
        NodeConfig {
            member_id: MemberId(member_id),
            cluster_id: ClusterId(cluster_id),
            tick,
            election_ticks,
            events: watch_hub.clone(),
            lessor: lessor.clone(),
            auth: auth.clone(),
            snapshot_count: cfg.snapshot_count,
            auto_promote: cfg.auto_promote,
            data_dir: cfg.data_dir.clone(),
        },
        storage.clone(),
        log,
        transport.outbox(),
        &mut raft_thread,
    )?;
    transport.start(handle.clone());

    let client_tls = client_tls(&cfg)?;
    let (local_listener, local) = listener::local();
    let ctx = ApiContext {
        node: handle.clone(),
        storage: storage.clone(),
        max_request_bytes: cfg.max_request_bytes,
        max_txn_ops: cfg.max_txn_ops,
        quota_backend_bytes: cfg.quota_backend_bytes,
        request_timeout: Duration::from_secs(5) + 2 * cfg.election_timeout,
        lessor,
        auth,
        leader_channel: api::forward::LeaderChannel::default(),
        local,
        forward_tls: forward_tls(&cfg)?,
        self_link: Arc::default(),
    };
    // Bind now (so the ports are taken and connections queue), but serve
    // only once this member has published its attributes through Raft, as
    // etcd does (`ReadyNotify`): clients never see a member that is not
    // yet part of the replicated membership.
    let mut listeners = Vec::new();
    for addr in &cfg.listen_client_addrs {
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for clients on {addr}: {e}"))?;
        let tls = cfg
            .client_tls_addrs
            .contains(addr)
            .then(|| client_tls.clone())
            .flatten();
        let scheme = if tls.is_some() { "https" } else { "http" };
        listeners.push((
            format!("{scheme}://{addr}"),
            listener::accept_tcp(tcp, tls).map_err(anyhow::Error::from)?,
        ));
    }
    listeners.push(("in-process".to_string(), local_listener));
    let attrs = MemberAttributes {
        member_id,
        name: cfg.name.clone(),
        client_urls: cfg.advertise_client_urls.clone(),
        peer_fingerprint: transport.pinned_fingerprint().unwrap_or_default(),
    };
    // Stop when asked, once this member has been removed from the cluster,
    // or when the Raft task failed.
    let (halt_tx, halt) = watch::channel(false);
    let mut removed = handle.status.removed.subscribe();
    let mut failed = handle.status.failed.subscribe();
    {
        let mut stop = stop.clone();
        let mut removed = removed.clone();
        let mut failed = failed.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = removed.wait_for(|r| *r) => {}
                _ = failed.wait_for(Option::is_some) => {}
            }
            halt_tx.send_replace(true);
        });
    }
    let mut stop = halt;
    let removal_check = tokio::spawn(membership::watch_for_removal(
        handle.clone(),
        transport.clone(),
        storage.clone(),
        cfg.election_timeout,
    ));
    let mut servers = Vec::new();
    let mut stop_early = stop.clone();
    tokio::select! {
        _ = membership::publish(handle.clone(), attrs, ctx.request_timeout) => {
            for (url, listener) in listeners {
                tracing::info!(%url, "serving client requests");
                let router = api::router(&ctx, &watch_hub, cfg.heartbeat_interval, cfg.election_timeout, &cfg.http)
                    .into_make_service_with_connect_info::<ClientConn>();
                let mut stop = stop.clone();
                servers.push(tokio::spawn(async move {
                    axum::serve::<ClientListener, _, _>(listener, router)
                        .with_graceful_shutdown(async move {
                            let _ = stop.wait_for(|s| *s).await;
                        })
                        .await
                }));
            }
            let _ = ready.send(());
            let _ = stop.wait_for(|s| *s).await;
        }
        _ = stop_early.wait_for(|s| *s) => {}
    }
    tracing::info!("shutting down");
    removal_check.abort();
    // Watch streams never end by themselves: end them so that the servers
    // can drain.
    watch_hub.shutdown();
    // Drain for a bounded time: a client that stopped reading its stream
    // must not keep the member from stopping (etcd also gives up after a
    // grace period).
    let aborts: Vec<_> = servers.iter().map(|s| s.abort_handle()).collect();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join_all(servers)).await;
    if drained.is_err() {
        tracing::warn!(
            "clients did not finish within {SHUTDOWN_GRACE:?}; closing their connections"
        );
        for a in aborts {
            a.abort();
        }
    }
    let _ = handle.send_eventually(Event::Shutdown).await;
    handle.stopped().await;
    transport.close().await;
    raft_thread.finish().await;
    storage
        .sync()
        .map_err(|e| anyhow::anyhow!("final sync: {e}"))?;
    if let Some(failure) = failed.borrow_and_update().clone() {
        return Err(ServeError::Other(anyhow::anyhow!(
            "raft task stopped: {failure}"
        )));
    }
    if *removed.borrow_and_update() {
        return Err(ServeError::Other(anyhow::anyhow!(
            "the member has been permanently removed from the cluster"
        )));
    }
    Ok(())
}

/// The client port's TLS, when it has any: certificate files, or auto TLS
/// kept in `<data-dir>/fixtures/client` (etcd's place). ALPN offers h2
/// (gRPC) and http/1.1 (the HTTP endpoints).
fn client_tls(cfg: &ServeConfig) -> Result<Option<Arc<ServerTls>>, ServeError> {
    if !cfg.client_tls.enabled() || cfg.client_tls_addrs.is_empty() {
        return Ok(None);
    }
    let hosts: Vec<String> = cfg
        .client_tls_addrs
        .iter()
        .map(|a| a.ip().to_string())
        .collect();
    ServerTls::new(
        cfg.client_tls.clone(),
        cfg.tls_policy.clone(),
        vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        &cfg.data_dir.join("fixtures").join("client"),
        &hosts,
    )
    .map(|tls| Some(Arc::new(tls)))
    .map_err(ServeError::Config)
}

/// What this member presents when it calls another member's `https://`
/// client URL: its trusted CA and, with client certificate auth, its own
/// certificate (as etcd's gateway does).
fn forward_tls(cfg: &ServeConfig) -> Result<Option<ClientTls>, ServeError> {
    let files = &cfg.client_tls;
    if !files.enabled() {
        return Ok(None);
    }
    let read = |p: &std::path::Path| {
        std::fs::read(p)
            .map_err(|e| ServeError::Config(format!("cannot read {}: {e}", p.display())))
    };
    let ca = files.trusted_ca_file.as_deref().map(read).transpose()?;
    let identity = match (&files.cert_file, &files.key_file) {
        (Some(c), Some(k)) if files.client_cert_auth => Some((read(c)?, read(k)?)),
        _ => None,
    };
    Ok(Some(ClientTls { ca, identity }))
}

impl From<fjall::Error> for ServeError {
    fn from(e: fjall::Error) -> Self {
        Self::Other(e.into())
    }
}
