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

use etcd_client::proto::{
    PbClusterServer, PbKvServer, PbLeaseServer, PbMaintenanceServer, PbMember, PbWatchServer,
};
use prost::Message as _;
use tokio::sync::watch;

use crate::core::api::{cluster, http, kv, lease, maintenance, watch as watch_api, ApiContext};
use crate::core::config::{ClusterState, ServeConfig};
use crate::core::lease::Lessor;
use crate::core::members;
use crate::core::mvcc;
use crate::core::node::{self, Event, NodeConfig, NodeHandle};
use crate::core::proposal::{ConfChangeContext, MemberAttributes, Op};
use crate::core::raft_log::RaftLog;
use crate::core::snapshot::{self, SnapshotReceiver, SnapshotSource};
use crate::core::storage::{self, Storage};
use crate::core::transport::Transport;
use crate::core::watch::{WatchConfig, WatchHub};
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType};

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

/// gRPC messages may exceed `--max-request-bytes` by this much of framing
/// before the transport refuses them (etcd's `grpcOverheadBytes`).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Runs a member until SIGINT/SIGTERM.
///
/// # Errors
/// [`ServeError::Config`] for configuration the data dir rejects; [`ServeError::Other`]
/// for I/O, bind or storage failures.
pub async fn run(cfg: ServeConfig) -> Result<(), ServeError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    run_until(cfg, stop_rx).await
}

/// Runs a member until `stop` turns true.
///
/// # Errors
/// As [`run`].
pub async fn run_until(cfg: ServeConfig, stop: watch::Receiver<bool>) -> Result<(), ServeError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
        ServeError::Other(anyhow::anyhow!(
            "cannot create data dir {}: {e}",
            cfg.data_dir.display()
        ))
    })?;
    let storage = Storage::open(&cfg.data_dir).map_err(|e| {
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
    let transport = Transport::bind(
        peer_addr,
        storage.clone(),
        source.clone(),
        receiver,
        cfg.max_request_bytes,
    )
    .map_err(|e| anyhow::anyhow!("cannot listen for peers on {peer_addr}: {e:#}"))?;
    let (member_id, cluster_id, log) =
        open_or_bootstrap(&cfg, &storage, &source, &transport).await?;
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
        lessor.granted(id, ttl);
    }
    let watch_hub = WatchHub::new(&storage, WatchConfig::default())?;
    let tick = cfg.heartbeat_interval.max(Duration::from_millis(1));
    let election_ticks =
        (cfg.election_timeout.as_millis() / tick.as_millis().max(1)).max(2) as usize;
    let (handle, raft_thread) = node::start(
        NodeConfig {
            member_id,
            cluster_id,
            tick,
            election_ticks,
            events: watch_hub.clone(),
            lessor: lessor.clone(),
            snapshot_count: cfg.snapshot_count,
            auto_promote: cfg.auto_promote,
            data_dir: cfg.data_dir.clone(),
        },
        storage.clone(),
        log,
        transport.outbox(),
    )?;
    transport.start(handle.clone());

    let ctx = ApiContext {
        node: handle.clone(),
        storage: storage.clone(),
        max_request_bytes: cfg.max_request_bytes,
        max_txn_ops: cfg.max_txn_ops,
        request_timeout: Duration::from_secs(5) + 2 * cfg.election_timeout,
        lessor,
    };
    // Bind now (so the ports are taken and connections queue), but serve
    // only once this member has published its attributes through Raft, as
    // etcd does (`ReadyNotify`): clients never see a member that is not
    // yet part of the replicated membership.
    let mut listeners = Vec::new();
    for addr in &cfg.listen_client_addrs {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for clients on {addr}: {e}"))?;
        listeners.push((*addr, listener));
    }
    let attrs = MemberAttributes {
        member_id,
        name: cfg.name.clone(),
        client_urls: cfg.advertise_client_urls.clone(),
    };
    // Stop on a signal, or once this member has been removed from the cluster.
    let (halt_tx, halt) = watch::channel(false);
    let mut removed = handle.status.removed.subscribe();
    {
        let mut stop = stop.clone();
        let mut removed = removed.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = removed.wait_for(|r| *r) => {}
            }
            halt_tx.send_replace(true);
        });
    }
    let mut stop = halt;
    let removal_check = tokio::spawn(watch_for_removal(
        handle.clone(),
        transport.clone(),
        storage.clone(),
        cfg.election_timeout,
    ));
    let mut servers = Vec::new();
    let mut stop_early = stop.clone();
    tokio::select! {
        _ = publish(handle.clone(), attrs, ctx.request_timeout) => {
            for (addr, listener) in listeners {
                tracing::info!(%addr, "serving client requests");
                let router = client_router(&ctx, &cfg, &watch_hub);
                let mut stop = stop.clone();
                servers.push(tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(async move {
                            let _ = stop.wait_for(|s| *s).await;
                        })
                        .await
                }));
            }
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
    let _ = tokio::task::spawn_blocking(move || raft_thread.join()).await;
    transport.close();
    storage
        .sync()
        .map_err(|e| anyhow::anyhow!("final sync: {e}"))?;
    if *removed.borrow_and_update() {
        return Err(ServeError::Other(anyhow::anyhow!(
            "the member has been permanently removed from the cluster"
        )));
    }
    Ok(())
}

fn client_router(ctx: &ApiContext, cfg: &ServeConfig, hub: &Arc<WatchHub>) -> axum::Router {
    // Every service refuses messages above the limit before decoding them
    // (etcd's `MaxRecvMsgSize` on its whole gRPC server).
    let limit = cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let grpc = tonic::service::Routes::new(
        PbKvServer::new(kv::KvService { ctx: ctx.clone() }).max_decoding_message_size(limit),
    )
    .add_service(
        PbMaintenanceServer::new(maintenance::MaintenanceService { ctx: ctx.clone() })
            .max_decoding_message_size(limit),
    )
    .add_service(
        PbClusterServer::new(cluster::ClusterService { ctx: ctx.clone() })
            .max_decoding_message_size(limit),
    )
    .add_service(
        PbLeaseServer::new(lease::LeaseService::new(
            ctx.clone(),
            cfg.heartbeat_interval,
            cfg.election_timeout,
        ))
        .max_decoding_message_size(limit),
    )
    .add_service(
        PbWatchServer::new(watch_api::WatchService {
            ctx: ctx.clone(),
            hub: hub.clone(),
        })
        .max_decoding_message_size(limit),
    );
    grpc.into_axum_router()
        .layer(axum::middleware::map_response(
            crate::core::api::grpc_edge_statuses,
        ))
        .merge(http::router(ctx.clone()))
}

/// Loads this member's identity and Raft log, or bootstraps them for a new
/// cluster; refuses a data dir that belongs to another member or cluster.
async fn open_or_bootstrap(
    cfg: &ServeConfig,
    s: &Storage,
    source: &SnapshotSource,
    transport: &Transport,
) -> Result<(u64, u64, RaftLog), ServeError> {
    if let Some(mut log) = RaftLog::load(s.clone(), source.clone())? {
        if let Some(meta) = snapshot::interrupted_restore(s)? {
            // A crash interrupted applying a snapshot: apply it again.
            tracing::warn!(
                index = meta.index,
                "finishing an interrupted snapshot apply"
            );
            snapshot::apply_staged(s, &cfg.data_dir, &meta)?;
            log.apply_snapshot(&meta)?;
            s.sync()?;
            snapshot::finish_restore(s, &cfg.data_dir, meta.index)?;
        }
        let name = s
            .meta_string(storage::META_MEMBER_NAME)?
            .unwrap_or_default();
        let token = s
            .meta_string(storage::META_CLUSTER_TOKEN)?
            .unwrap_or_default();
        if token != cfg.initial_cluster_token {
            return Err(ServeError::Config(format!(
                "data dir {} belongs to cluster {token:?}, not --initial-cluster-token {:?}",
                cfg.data_dir.display(),
                cfg.initial_cluster_token
            )));
        }
        if name != cfg.name {
            return Err(ServeError::Config(format!(
                "data dir {} belongs to member {name:?}, not --name {:?}",
                cfg.data_dir.display(),
                cfg.name
            )));
        }
        let member_id = s.meta_u64(storage::META_MEMBER_ID)?;
        let cluster_id = s.meta_u64(storage::META_CLUSTER_ID)?;
        let bootstrapped = s.meta_string(storage::META_BOOTSTRAP)?;
        if bootstrapped.as_deref() == Some("new") && cfg.initial_cluster_state == ClusterState::New
        {
            let (_, configured) = initial_ids(cfg);
            if configured != cluster_id {
                return Err(ServeError::Config(format!(
                    "data dir {} belongs to cluster {cluster_id:x}, but --initial-cluster \
                     describes cluster {configured:x}",
                    cfg.data_dir.display()
                )));
            }
        }
        return Ok((member_id, cluster_id, log));
    }
    if cfg.initial_cluster_state == ClusterState::Existing {
        return join_existing(cfg, s, source, transport).await;
    }
    let token = &cfg.initial_cluster_token;
    let initial: Vec<(u64, &crate::core::config::InitialMember)> = cfg
        .initial_cluster
        .iter()
        .map(|m| (members::member_id(&m.peer_urls, token), m))
        .collect();
    let Some((member_id, _)) = initial.iter().find(|(_, m)| m.name == cfg.name) else {
        return Err(ServeError::Config(format!(
            "couldn't find local name {:?} in the initial cluster configuration",
            cfg.name
        )));
    };
    let member_id = *member_id;
    let (_, cluster_id) = initial_ids(cfg);
    let mut tx = s.db.write_tx();
    let mut entries = Vec::new();
    for (i, (id, m)) in initial.iter().enumerate() {
        let record = PbMember {
            id: *id,
            name: m.name.clone(),
            peer_ur_ls: m.peer_urls.clone(),
            client_ur_ls: Vec::new(),
            is_learner: false,
        };
        tx.insert(&s.members, members::key(*id), record.encode_to_vec());
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddNode);
        cc.node_id = *id;
        cc.set_context(
            ConfChangeContext {
                id: 0,
                origin: 0,
                member: Some(record),
            }
            .encode_to_vec()
            .into(),
        );
        let mut e = Entry::default();
        e.set_entry_type(EntryType::EntryConfChange);
        e.term = 1;
        e.index = i as u64 + 1;
        e.set_data(
            protobuf::Message::write_to_bytes(&cc)
                .map_err(anyhow::Error::from)?
                .into(),
        );
        entries.push(e);
    }
    tx.insert(&s.meta, storage::META_MEMBER_ID, member_id.to_be_bytes());
    tx.insert(&s.meta, storage::META_CLUSTER_ID, cluster_id.to_be_bytes());
    tx.insert(&s.meta, storage::META_MEMBER_NAME, cfg.name.as_bytes());
    tx.insert(&s.meta, storage::META_CLUSTER_TOKEN, token.as_bytes());
    tx.insert(&s.meta, storage::META_BOOTSTRAP, b"new");
    tx.commit().map_err(anyhow::Error::from)?;
    let log = RaftLog::bootstrap(s.clone(), source.clone(), entries)?;
    Ok((member_id, cluster_id, log))
}

/// Joins a cluster this member was added to (`member add`): asks the peers
/// of `--initial-cluster` for the member list, finds itself in it by its
/// advertised peer URLs, and starts with an empty log; the leader sends the
/// log or a snapshot (etcd's `GetClusterFromRemotePeers`).
async fn join_existing(
    cfg: &ServeConfig,
    s: &Storage,
    source: &SnapshotSource,
    transport: &Transport,
) -> Result<(u64, u64, RaftLog), ServeError> {
    let own: Vec<String> = cfg.initial_advertise_peer_urls.clone();
    let peers: Vec<String> = cfg
        .initial_cluster
        .iter()
        .filter(|m| m.name != cfg.name)
        .flat_map(|m| m.peer_urls.clone())
        .collect();
    let resp = transport.fetch_members(&peers).await.map_err(|e| {
        ServeError::Other(anyhow::anyhow!(
            "cannot fetch the member list from --initial-cluster peers: {e:#}"
        ))
    })?;
    let cluster_id = resp.header.as_ref().map_or(0, |h| h.cluster_id);
    let same = |m: &PbMember| m.peer_ur_ls.iter().any(|u| own.contains(u));
    let Some(me) = resp.members.iter().find(|m| same(m)) else {
        return Err(ServeError::Config(format!(
            "this member ({}) is not in the cluster's member list; add it first with \
             `kvd member add {} --peer-urls={}`",
            own.join(","),
            cfg.name,
            own.join(",")
        )));
    };
    let member_id = me.id;
    let mut tx = s.db.write_tx();
    for m in &resp.members {
        tx.insert(&s.members, members::key(m.id), m.encode_to_vec());
    }
    tx.insert(&s.meta, storage::META_MEMBER_ID, member_id.to_be_bytes());
    tx.insert(&s.meta, storage::META_CLUSTER_ID, cluster_id.to_be_bytes());
    tx.insert(&s.meta, storage::META_MEMBER_NAME, cfg.name.as_bytes());
    tx.insert(
        &s.meta,
        storage::META_CLUSTER_TOKEN,
        cfg.initial_cluster_token.as_bytes(),
    );
    tx.insert(&s.meta, storage::META_BOOTSTRAP, b"existing");
    tx.commit().map_err(anyhow::Error::from)?;
    // An empty configuration: the leader's log or snapshot brings it.
    let log = RaftLog::bootstrap(s.clone(), source.clone(), Vec::new())?;
    Ok((member_id, cluster_id, log))
}

/// A member cut off from the cluster (no leader for a while) asks its peers
/// for the member list; when a peer that has applied more than this member
/// no longer lists it, it was removed while it could not hear of it, and it
/// stops (etcd: peers answer a removed member "410 Gone" and it exits).
async fn watch_for_removal(
    node: NodeHandle,
    transport: Transport,
    storage: Storage,
    election_timeout: Duration,
) {
    let me = node.status.member_id;
    let mut leaderless_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(election_timeout).await;
        if node
            .status
            .leader
            .load(std::sync::atomic::Ordering::Relaxed)
            != 0
        {
            leaderless_since = None;
            continue;
        }
        let since = *leaderless_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() < 2 * election_timeout {
            continue;
        }
        let applied = *node.applied.borrow();
        let peers: Vec<String> = members::list(&storage)
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.id != me)
            .flat_map(|m| m.peer_ur_ls)
            .collect();
        for url in peers {
            let Ok(resp) = transport.fetch_members(std::slice::from_ref(&url)).await else {
                continue;
            };
            let their_applied = resp.header.as_ref().map_or(0, |h| h.revision.max(0) as u64);
            if their_applied > applied && !resp.members.iter().any(|m| m.id == me) {
                tracing::warn!(
                    "{url} no longer lists this member: it was removed from the cluster"
                );
                node.status.removed.send_replace(true);
                return;
            }
        }
    }
}

/// The member ids of `--initial-cluster` and the cluster id they make.
fn initial_ids(cfg: &ServeConfig) -> (Vec<u64>, u64) {
    let token = &cfg.initial_cluster_token;
    let ids: Vec<u64> = cfg
        .initial_cluster
        .iter()
        .map(|m| members::member_id(&m.peer_urls, token))
        .collect();
    let cluster_id = members::cluster_id(&ids, token);
    (ids, cluster_id)
}

/// Publishes this member's name and client URLs through Raft, retrying
/// until it is applied (etcd's `publishV3`).
async fn publish(node: NodeHandle, attrs: MemberAttributes, timeout: Duration) {
    loop {
        match node.propose(Op::Publish(attrs.clone()), timeout).await {
            Ok(_) => {
                tracing::info!("published member attributes");
                return;
            }
            Err(e) => {
                tracing::debug!("publish: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

impl From<fjall::Error> for ServeError {
    fn from(e: fjall::Error) -> Self {
        Self::Other(e.into())
    }
}
