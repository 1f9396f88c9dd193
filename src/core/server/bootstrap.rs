//! A member's start: load its identity and Raft log from the data dir (and
//! finish a snapshot apply a crash interrupted), bootstrap a new cluster
//! from `--initial-cluster`, or join an existing one by asking its peers.

use etcd_client::proto::PbMember;
use prost::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType};

use crate::core::config::{ClusterState, ServeConfig};
use crate::core::members;
use crate::core::raft::log::RaftLog;
use crate::core::raft::proposal::ConfChangeContext;
use crate::core::raft::snapshot::{self, SnapshotSource};
use crate::core::server::ServeError;
use crate::core::storage::datadir::{self, Bootstrap, Identity};
use crate::core::storage::Storage;
use crate::core::transport::Transport;
use crate::core::urls::InitialMember;

/// Loads this member's identity and Raft log, or bootstraps them for a new
/// cluster; refuses a data dir that belongs to another member or cluster.
/// Returns (member id, cluster id, the Raft log).
///
/// # Errors
/// [`ServeError::Config`] for a data dir of another member or cluster, or a
/// name missing from `--initial-cluster`; [`ServeError::Other`] for storage
/// errors and a failed join.
pub async fn open_or_bootstrap(
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
        let id = datadir::identity(s)?;
        let configured =
            (cfg.initial_cluster_state == ClusterState::New).then(|| initial_cluster_id(cfg));
        datadir::check(
            &cfg.data_dir,
            &id,
            &cfg.name,
            &cfg.initial_cluster_token,
            configured,
        )
        .map_err(|e| ServeError::Config(e.to_string()))?;
        return Ok((id.member_id, id.cluster_id, log));
    }
    if cfg.initial_cluster_state == ClusterState::Existing {
        return join_existing(cfg, s, source, transport).await;
    }
    let (id, records, entries) =
        new_cluster(&cfg.name, &cfg.initial_cluster, &cfg.initial_cluster_token)?;
    datadir::record(s, &id, &records)?;
    let log = RaftLog::bootstrap(s.clone(), source.clone(), entries)?;
    Ok((id.member_id, id.cluster_id, log))
}

/// The identity, member records and first log entries of member `name` of
/// a new cluster described by `initial_cluster` and `token` (for `serve`
/// and `backup restore`, which must agree so that restored members form
/// the cluster their flags describe). The initial membership goes into the
/// log as committed conf changes (term 1, indexes 1..=n), as etcd's
/// `StartNode` does, so a member joining later learns it by replaying the
/// log.
///
/// # Errors
/// [`ServeError::Config`] when `name` is not in `initial_cluster`.
pub fn new_cluster(
    name: &str,
    initial_cluster: &[InitialMember],
    token: &str,
) -> Result<(Identity, Vec<PbMember>, Vec<Entry>), ServeError> {
    let records: Vec<PbMember> = initial_cluster
        .iter()
        .map(|m| PbMember {
            id: members::member_id(&m.peer_urls, token),
            name: m.name.clone(),
            peer_ur_ls: m.peer_urls.clone(),
            client_ur_ls: Vec::new(),
            is_learner: false,
        })
        .collect();
    let Some(me) = records.iter().find(|m| m.name == name) else {
        return Err(ServeError::Config(format!(
            "couldn't find local name {name:?} in the initial cluster configuration"
        )));
    };
    let ids: Vec<u64> = records.iter().map(|m| m.id).collect();
    let id = Identity {
        member_id: me.id,
        cluster_id: members::cluster_id(&ids, token),
        name: name.to_string(),
        token: token.to_string(),
        bootstrap: Some(Bootstrap::New),
    };
    let mut entries = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddNode);
        cc.node_id = record.id;
        cc.set_context(
            ConfChangeContext {
                id: 0,
                origin: 0,
                member: Some(record.clone()),
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
    Ok((id, records, entries))
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
    let id = Identity {
        member_id: me.id,
        cluster_id,
        name: cfg.name.clone(),
        token: cfg.initial_cluster_token.clone(),
        bootstrap: Some(Bootstrap::Existing),
    };
    datadir::record(s, &id, &resp.members)?;
    // An empty configuration: the leader's log or snapshot brings it.
    let log = RaftLog::bootstrap(s.clone(), source.clone(), Vec::new())?;
    Ok((id.member_id, id.cluster_id, log))
}

/// The cluster id `--initial-cluster` describes (from its members' ids).
fn initial_cluster_id(cfg: &ServeConfig) -> u64 {
    let token = &cfg.initial_cluster_token;
    let ids: Vec<u64> = cfg
        .initial_cluster
        .iter()
        .map(|m| members::member_id(&m.peer_urls, token))
        .collect();
    members::cluster_id(&ids, token)
}
