//! The Raft task: the one owner of the `RawNode`.
//!
//! Everything else talks to it through [`NodeHandle`], which sends a closed
//! set of [`Event`]s over a channel. The task runs on its own OS thread
//! (fsync blocks), ticks every heartbeat interval, drains every queued event
//! before handling one Ready (group commit: one fsync per Ready, however
//! many proposals it carries), and answers each proposal by its own id after
//! the entry is committed **and** applied.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use etcd_client::proto::{PbEvent, PbLeaseRevokeRequest, PbMember};
use fjall::Readable;
use prost::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Message, SnapshotMetadata,
};
use raft::{RawNode, StateRole};
use tokio::sync::{oneshot, watch};

use crate::core::errors::EtcdError;
use crate::core::lease::Lessor;
use crate::core::members;
use crate::core::metrics::METRICS;
use crate::core::mvcc::{self, Applier, ApplyResponse};
use crate::core::proposal::{decode_entry, ConfChangeContext, EntryData, Op, RaftRequest};
use crate::core::raft_log::RaftLog;
use crate::core::snapshot;
use crate::core::storage::{self, Storage};

/// The answer to a proposal: the state machine's response or etcd's error.
pub type ProposalResult = Result<ApplyResponse, EtcdError>;

/// The closed set of things the Raft task reacts to.
pub enum Event {
    /// Propose an operation; answered once it is applied here.
    Propose {
        /// The operation.
        op: Op,
        /// Where the answer goes.
        reply: oneshot::Sender<ProposalResult>,
    },
    /// Ask for a ReadIndex; answered with an index the caller waits to be applied.
    ReadIndex {
        /// Where the read index goes.
        reply: oneshot::Sender<Result<u64, EtcdError>>,
    },
    /// Propose a membership change; answered once it is applied here.
    ProposeConfChange {
        /// The Raft change (add, add learner, remove).
        cc: ConfChange,
        /// The member record it concerns.
        member: PbMember,
        /// Where the answer goes.
        reply: oneshot::Sender<ProposalResult>,
    },
    /// As leader, whether learner `id` has caught up (etcd's
    /// `isLearnerReady`: its match index is at least 90% of the leader's).
    LearnerReady {
        /// The learner.
        id: u64,
        /// `Ok(ready)`, or `NotLeader`.
        reply: oneshot::Sender<Result<bool, EtcdError>>,
    },
    /// As leader, hand leadership to `to` (etcd's `MoveLeader`).
    TransferLeader {
        /// The transferee.
        to: u64,
        /// `Ok` once the transfer started, or `NotLeader`/`BadLeaderTransferee`.
        reply: oneshot::Sender<Result<(), EtcdError>>,
    },
    /// The outcome of streaming a snapshot to a follower.
    SnapshotStatus(u64, raft::SnapshotStatus),
    /// A Raft message from a peer.
    Step(Box<Message>),
    /// The transport could not reach this peer.
    Unreachable(u64),
    /// Stop the task.
    Shutdown,
}

/// Volatile facts about the member that the API layer reports; written only
/// by the Raft task.
#[derive(Debug)]
pub struct NodeStatus {
    /// This member's id.
    pub member_id: u64,
    /// The cluster id.
    pub cluster_id: u64,
    /// The current leader (0 = none known).
    pub leader: AtomicU64,
    /// The current Raft term.
    pub term: AtomicU64,
    /// The last Raft log index.
    pub raft_index: AtomicU64,
    /// Whether this member is a learner.
    pub is_learner: std::sync::atomic::AtomicBool,
    /// Set once this member has been removed from the cluster.
    pub removed: watch::Sender<bool>,
}

impl NodeStatus {
    /// The status of a member that knows no leader yet, at term 0.
    pub fn new(member_id: u64, cluster_id: u64) -> Self {
        Self {
            member_id,
            cluster_id,
            leader: AtomicU64::new(0),
            term: AtomicU64::new(0),
            raft_index: AtomicU64::new(0),
            is_learner: std::sync::atomic::AtomicBool::new(false),
            removed: watch::channel(false).0,
        }
    }
}

/// Events the Raft task's queue holds; a full queue refuses proposals with
/// "too many requests" and drops peer messages (Raft retransmits them).
pub const EVENT_QUEUE: usize = 8192;

/// Proposals waiting for their entry to be applied on this member (and,
/// separately, reads waiting for their read index); beyond this, new ones
/// are refused with "too many requests" (etcd bounds the same backlog
/// through its commit/apply gap of 5,000 entries).
pub const MAX_PENDING_PROPOSALS: usize = 16_384;

/// A cheap, cloneable way to reach the Raft task.
#[derive(Clone)]
pub struct NodeHandle {
    /// Events into the task (bounded: [`EVENT_QUEUE`]).
    tx: mpsc::SyncSender<Event>,
    /// Shared status.
    pub status: Arc<NodeStatus>,
    /// The applied index, for read-index waits.
    pub applied: watch::Receiver<u64>,
    /// Revision up to which history has been physically compacted.
    pub compact_done: watch::Receiver<i64>,
}

impl NodeHandle {
    /// Queues an event for the Raft task without waiting.
    ///
    /// # Errors
    /// [`EtcdError::TooManyRequests`] when the queue is full (the event is
    /// dropped), [`EtcdError::Stopped`] when the task has ended.
    pub fn send(&self, ev: Event) -> Result<(), EtcdError> {
        self.tx.try_send(ev).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => EtcdError::TooManyRequests,
            mpsc::TrySendError::Disconnected(_) => EtcdError::Stopped,
        })
    }

    /// Queues an event that must not be dropped (a snapshot's outcome,
    /// shutdown), waiting while the queue is full.
    ///
    /// # Errors
    /// [`EtcdError::Stopped`] when the task has ended.
    pub async fn send_eventually(&self, ev: Event) -> Result<(), EtcdError> {
        let mut ev = ev;
        loop {
            match self.tx.try_send(ev) {
                Ok(()) => return Ok(()),
                Err(mpsc::TrySendError::Disconnected(_)) => return Err(EtcdError::Stopped),
                Err(mpsc::TrySendError::Full(back)) => {
                    ev = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }

    /// Proposes `op` and waits (up to `timeout`) until it is applied here.
    ///
    /// # Errors
    /// The state machine's error for the operation; `NoLeader`,
    /// `LeaderChanged`, `Timeout` or `Stopped` when it could not be ordered.
    pub async fn propose(&self, op: Op, timeout: Duration) -> ProposalResult {
        let (reply, rx) = oneshot::channel();
        self.send(Event::Propose { op, reply })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::Timeout),
        }
    }

    /// Waits until this member has applied everything committed when the
    /// call started, confirmed by the leader (Raft ReadIndex): after it, a
    /// local read is linearizable.
    ///
    /// # Errors
    /// `NoLeader`, `LeaderChanged`, `Timeout` or `Stopped`.
    pub async fn linearizable_barrier(&self, timeout: Duration) -> Result<(), EtcdError> {
        let work = async {
            let (reply, rx) = oneshot::channel();
            self.send(Event::ReadIndex { reply })?;
            let index = rx.await.map_err(|_| EtcdError::Stopped)??;
            let mut applied = self.applied.clone();
            applied
                .wait_for(|a| *a >= index)
                .await
                .map_err(|_| EtcdError::Stopped)?;
            Ok(())
        };
        tokio::time::timeout(timeout, work)
            .await
            .unwrap_or(Err(EtcdError::Timeout))
    }
}

/// Settings of the Raft task, from the serve configuration.
pub struct NodeConfig {
    /// This member's id.
    pub member_id: u64,
    /// The cluster id.
    pub cluster_id: u64,
    /// Tick length (the heartbeat interval).
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_ticks: usize,
    /// Applied entries between log compactions (`--snapshot-count`).
    pub snapshot_count: u64,
    /// Promote learners once they catch up (`--auto-promote`).
    pub auto_promote: bool,
    /// The data dir (where incoming snapshots are staged).
    pub data_dir: std::path::PathBuf,
    /// Where applied changes go.
    pub events: Arc<dyn EventSink>,
    /// Lease clocks (this member decides expiry while it leads).
    pub lessor: Arc<Lessor>,
}

/// Receives the changes of every applied entry, in revision order, right
/// after they are committed to storage; implemented by the watch hub.
///
/// Called on the Raft task: it must never block (a slow watcher is the
/// sink's problem, never the writer's).
pub trait EventSink: Send + Sync + 'static {
    /// `events` all carry `revision` (one entry = one revision).
    fn publish(&self, revision: i64, events: Vec<PbEvent>);
}

/// An [`EventSink`] that drops everything (no watchers).
pub struct NoWatchers;

impl EventSink for NoWatchers {
    fn publish(&self, _revision: i64, _events: Vec<PbEvent>) {}
}

/// Sends outgoing Raft messages; implemented by the peer transport.
pub trait Outbox: Send + 'static {
    /// Queues `msgs` for their peers without blocking.
    fn send(&self, msgs: Vec<Message>);
    /// Starts (or re-targets) sending to member `id`.
    fn add_peer(&self, id: u64, peer_urls: Vec<String>);
    /// Stops sending to member `id`.
    fn remove_peer(&self, id: u64);
}

/// Starts the Raft task on its own thread.
///
/// # Errors
/// raft-rs rejecting the configuration or the stored state, storage errors.
pub fn start(
    cfg: NodeConfig,
    storage: Storage,
    log: RaftLog,
    outbox: Box<dyn Outbox>,
) -> anyhow::Result<(NodeHandle, std::thread::JoinHandle<()>)> {
    let applied_index = storage.meta_u64(storage::META_APPLIED_INDEX)?;
    let mut log = log;
    log.ensure_commit(applied_index)?;
    let raft_cfg = raft::Config {
        id: cfg.member_id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: 1,
        applied: applied_index,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        read_only_option: raft::ReadOnlyOption::Safe,
        ..Default::default()
    };
    raft_cfg.validate()?;
    let logger = slog::Logger::root(crate::core::raft_logging::TracingDrain, slog::o!());
    let raw = RawNode::new(&raft_cfg, log, &logger)?;
    let status = Arc::new(NodeStatus {
        member_id: cfg.member_id,
        cluster_id: cfg.cluster_id,
        leader: AtomicU64::new(0),
        term: AtomicU64::new(raw.raft.term),
        raft_index: AtomicU64::new(raw.raft.raft_log.last_index()),
        is_learner: std::sync::atomic::AtomicBool::new(
            raw.raft.prs().conf().learners().contains(&cfg.member_id),
        ),
        removed: watch::channel(false).0,
    });
    let (tx, rx) = mpsc::sync_channel(EVENT_QUEUE);
    let (applied_tx, applied_rx) = watch::channel(applied_index);
    let compact_done = storage.meta_u64(storage::META_COMPACT_DONE)? as i64;
    let (compact_tx, compact_rx) = watch::channel(compact_done);
    let compactor = Compactor::start(storage.clone(), compact_tx)?;
    let handle = NodeHandle {
        tx,
        status: status.clone(),
        applied: applied_rx,
        compact_done: compact_rx,
    };
    let mut task = RaftTask {
        raw,
        storage,
        outbox,
        status,
        applied_tx,
        applied: applied_index,
        // Ids of this run start above any of an earlier run's (whose entries
        // may be replayed after a restart).
        next_id: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        proposals: HashMap::new(),
        reads: HashMap::new(),
        reads_waiting: Vec::new(),
        compactor,
        tick: cfg.tick,
        events: cfg.events,
        lessor: cfg.lessor,
        snapshot_count: cfg.snapshot_count.max(1),
        auto_promote: cfg.auto_promote,
        promoting: HashMap::new(),
        transfer: None,
        data_dir: cfg.data_dir,
    };
    let thread = std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || {
            if let Err(e) = task.run(rx) {
                // A failed fsync or a corrupt entry: stop, and let a restart
                // recover from the durable state.
                tracing::error!("raft task stopped: {e:#}");
                std::process::exit(1);
            }
        })?;
    Ok((handle, thread))
}

/// The Raft task's state; lives on its own thread.
struct RaftTask {
    /// The one `RawNode`.
    raw: RawNode<RaftLog>,
    /// Database handles for applying entries.
    storage: Storage,
    /// Outgoing messages.
    outbox: Box<dyn Outbox>,
    /// Shared status for the API layer.
    status: Arc<NodeStatus>,
    /// Publishes the applied index.
    applied_tx: watch::Sender<u64>,
    /// The last applied index.
    applied: u64,
    /// Next proposal / read id (unique within this process).
    next_id: u64,
    /// Proposals waiting to be applied, by id.
    proposals: HashMap<u64, oneshot::Sender<ProposalResult>>,
    /// ReadIndex requests waiting for their read state, by id.
    reads: HashMap<u64, oneshot::Sender<Result<u64, EtcdError>>>,
    /// Read states whose index is not applied yet.
    reads_waiting: Vec<(u64, oneshot::Sender<Result<u64, EtcdError>>)>,
    /// Runs physical compaction beside the Raft task.
    compactor: Compactor,
    /// Tick length.
    tick: Duration,
    /// Applied changes go here, for watchers.
    events: Arc<dyn EventSink>,
    /// Lease clocks.
    lessor: Arc<Lessor>,
    /// `--snapshot-count`.
    snapshot_count: u64,
    /// `--auto-promote`.
    auto_promote: bool,
    /// Learners this leader proposed to promote, and when.
    promoting: HashMap<u64, Instant>,
    /// A leader transfer under way: (transferee, started).
    transfer: Option<(u64, Instant)>,
    /// The data dir.
    data_dir: std::path::PathBuf,
}

/// Most events taken from the queue before handling one Ready.
const MAX_EVENTS_PER_READY: usize = 4096;

impl RaftTask {
    fn run(&mut self, rx: mpsc::Receiver<Event>) -> anyhow::Result<()> {
        let mut next_tick = Instant::now() + self.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(ev) => {
                    if !self.handle(ev) {
                        return Ok(());
                    }
                    for ev in rx.try_iter().take(MAX_EVENTS_PER_READY) {
                        if !self.handle(ev) {
                            return Ok(());
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                self.expire_leases();
                self.maybe_auto_promote();
                next_tick += self.tick;
                if next_tick < now {
                    next_tick = now + self.tick;
                }
            }
            self.on_ready()?;
            self.campaign_if_alone()?;
        }
    }

    /// A lone voter need not wait an election timeout to lead (once its
    /// configuration is applied).
    fn campaign_if_alone(&mut self) -> anyhow::Result<()> {
        let me = self.status.member_id;
        if self.raw.raft.state == StateRole::Follower
            && self.raw.raft.leader_id == 0
            && self.raw.raft.prs().conf().voters().ids().iter().eq([me])
        {
            self.raw.campaign()?;
            self.on_ready()?;
        }
        Ok(())
    }

    /// As leader, proposes the revoke of every lease past its deadline.
    fn expire_leases(&mut self) {
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        for id in self.lessor.take_expired() {
            let op = Op::LeaseRevoke(PbLeaseRevokeRequest { id });
            let data = RaftRequest {
                id: 0,
                origin: 0,
                op: Some(op),
            }
            .encode_to_vec();
            if let Err(e) = self.raw.propose(Vec::new(), data) {
                tracing::warn!("cannot propose expiry of lease {id:x}: {e}");
            } else {
                tracing::info!("lease {id:x} expired; revoking");
            }
        }
    }

    /// Handles one event; false on shutdown.
    fn handle(&mut self, ev: Event) -> bool {
        match ev {
            Event::Propose { op, reply } => {
                if self.proposals.len() >= MAX_PENDING_PROPOSALS {
                    let _ = reply.send(Err(EtcdError::TooManyRequests));
                    return true;
                }
                let id = self.next_id;
                self.next_id += 1;
                let data = RaftRequest {
                    id,
                    origin: self.status.member_id,
                    op: Some(op),
                }
                .encode_to_vec();
                match self.raw.propose(Vec::new(), data) {
                    Ok(()) => {
                        METRICS.proposals.inc();
                        self.proposals.insert(id, reply);
                    }
                    Err(_) => {
                        let _ = reply.send(Err(EtcdError::NoLeader));
                    }
                }
            }
            Event::ReadIndex { reply } => {
                if self.raw.raft.leader_id == 0 {
                    let _ = reply.send(Err(EtcdError::NoLeader));
                } else if self.reads.len() + self.reads_waiting.len() >= MAX_PENDING_PROPOSALS {
                    let _ = reply.send(Err(EtcdError::TooManyRequests));
                } else {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.raw.read_index(id.to_be_bytes().to_vec());
                    self.reads.insert(id, reply);
                }
            }
            Event::ProposeConfChange { cc, member, reply } => {
                let id = self.next_id;
                self.next_id += 1;
                let context = ConfChangeContext {
                    id,
                    origin: self.status.member_id,
                    member: Some(member),
                }
                .encode_to_vec();
                let mut cc = cc;
                cc.set_context(context.into());
                match self.raw.propose_conf_change(Vec::new(), cc) {
                    Ok(()) => {
                        self.proposals.insert(id, reply);
                    }
                    Err(_) => {
                        let _ = reply.send(Err(EtcdError::NoLeader));
                    }
                }
            }
            Event::LearnerReady { id, reply } => {
                let _ = reply.send(self.learner_ready(id));
            }
            Event::TransferLeader { to, reply } => {
                let r = if self.raw.raft.state != StateRole::Leader {
                    Err(EtcdError::NotLeader)
                } else if !self.raw.raft.prs().conf().voters().contains(to) {
                    Err(EtcdError::BadLeaderTransferee)
                } else {
                    self.raw.transfer_leader(to);
                    self.transfer = Some((to, Instant::now()));
                    Ok(())
                };
                let _ = reply.send(r);
            }
            Event::SnapshotStatus(id, status) => self.raw.report_snapshot(id, status),
            Event::Step(m) => self.step(*m),
            Event::Unreachable(id) => self.raw.report_unreachable(id),
            Event::Shutdown => return false,
        }
        true
    }

    /// Steps a message from a peer into Raft, after the checks raft-rs
    /// leaves to its user: a message for another member is dropped, and so
    /// is a heartbeat claiming a commit index beyond this member's log,
    /// which raft-rs would treat as fatal (`commit_to` panics); no honest
    /// leader sends one.
    fn step(&mut self, m: Message) {
        if m.to != self.status.member_id {
            tracing::warn!(
                from = format_args!("{:x}", m.from),
                to = format_args!("{:x}", m.to),
                "dropping a raft message addressed to another member"
            );
            return;
        }
        if m.get_msg_type() == raft::eraftpb::MessageType::MsgHeartbeat
            && m.commit > self.raw.raft.raft_log.last_index()
        {
            tracing::warn!(
                from = format_args!("{:x}", m.from),
                commit = m.commit,
                last_index = self.raw.raft.raft_log.last_index(),
                "dropping a heartbeat whose commit index is beyond this member's log"
            );
            return;
        }
        if let Err(e) = self.raw.step(m) {
            tracing::debug!("raft step: {e}");
        }
    }

    /// Handles a Ready in raft-rs 0.7's documented order (lib.rs,
    /// "Processing the Ready State").
    fn on_ready(&mut self) -> anyhow::Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            self.on_soft_state(ss.leader_id, ss.raft_state);
        }
        // 1. Messages that need no persistence go out at once.
        self.outbox.send(ready.take_messages());
        // 2. A snapshot from the leader (the log is never compacted yet).
        if !ready.snapshot().is_empty() {
            let meta = ready.snapshot().get_metadata().clone();
            self.apply_snapshot(&meta)?;
        }
        // 3. Committed entries (already persisted locally: raft-rs only
        //    hands out entries up to min(committed, persisted)).
        self.apply_entries(ready.take_committed_entries())?;
        // 4. Read states: answer once their index is applied.
        for rs in ready.take_read_states() {
            let id = storage::be_u64(&rs.request_ctx);
            if let Some(reply) = self.reads.remove(&id) {
                self.reads_waiting.push((rs.index, reply));
            }
        }
        // 5. Append new entries; 6. the hard state.
        let must_sync = ready.must_sync();
        self.raw.mut_store().append(ready.entries())?;
        if let Some(hs) = ready.hs() {
            self.raw.mut_store().set_hard_state(hs)?;
        }
        // 7. One fsync for everything above: entries, hard state and the
        //    apply transactions of this Ready.
        if must_sync {
            let timer = METRICS.fsync.start_timer();
            self.storage.sync()?;
            timer.observe_duration();
        }
        METRICS.readies.inc();
        // 8. Only now the messages that require persisted state.
        self.outbox.send(ready.take_persisted_messages());
        // 9. Advance, then the light ready.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut hs = self.raw.store().hard_state().clone();
            hs.commit = commit;
            self.raw.mut_store().set_hard_state(&hs)?;
        }
        self.outbox.send(light.take_messages());
        self.apply_entries(light.take_committed_entries())?;
        // 10. advance_apply.
        self.raw.advance_apply();
        self.maybe_compact_log()?;
        self.status
            .raft_index
            .store(self.raw.raft.raft_log.last_index(), Ordering::Relaxed);
        self.status
            .term
            .store(self.raw.raft.term, Ordering::Relaxed);
        self.answer_reads();
        Ok(())
    }

    fn on_soft_state(&mut self, leader: u64, role: StateRole) {
        let old = self.status.leader.swap(leader, Ordering::Relaxed);
        METRICS.has_leader.set(i64::from(leader != 0));
        if role == StateRole::Leader {
            self.lessor.promote();
        }
        if old != leader {
            METRICS.leader_changes.inc();
            tracing::info!(leader = format_args!("{leader:x}"), ?role, "leader changed");
            // Proposals forwarded to the old leader may be lost; answer them
            // now rather than at the timeout (the client retries).
            for (_, reply) in self.proposals.drain() {
                let _ = reply.send(Err(EtcdError::LeaderChanged));
            }
            for (_, reply) in self.reads.drain() {
                let _ = reply.send(Err(EtcdError::LeaderChanged));
            }
        }
    }

    fn answer_reads(&mut self) {
        let applied = self.applied;
        let mut i = 0;
        while i < self.reads_waiting.len() {
            if self.reads_waiting[i].0 <= applied {
                let (index, reply) = self.reads_waiting.swap_remove(i);
                let _ = reply.send(Ok(index));
            } else {
                i += 1;
            }
        }
        // Drop the answers nobody waits for any more (timed-out clients).
        self.proposals.retain(|_, r| !r.is_closed());
        self.reads.retain(|_, r| !r.is_closed());
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> anyhow::Result<()> {
        for entry in entries {
            if entry.index <= self.applied {
                continue; // Re-applying after a restart is a no-op.
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => self.apply_normal(&entry)?,
                EntryType::EntryConfChange => {
                    let mut cc = ConfChange::default();
                    match protobuf::Message::merge_from_bytes(&mut cc, &entry.data) {
                        Ok(()) => self.apply_conf_change(entry.index, &cc)?,
                        Err(e) => {
                            // Deterministic on every member: skip it.
                            tracing::error!(index = entry.index, "undecodable conf change: {e}");
                            self.record_applied(entry.index)?;
                        }
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    // kvd proposes only single (v1) changes.
                    let mut cc = ConfChangeV2::default();
                    let applied = protobuf::Message::merge_from_bytes(&mut cc, &entry.data)
                        .map_err(|e| e.to_string())
                        .and_then(|()| self.raw.apply_conf_change(&cc).map_err(|e| e.to_string()));
                    match applied {
                        Ok(cs) => self.raw.mut_store().set_conf_state(&cs)?,
                        Err(e) => {
                            tracing::error!(index = entry.index, "conf change v2 refused: {e}")
                        }
                    }
                    self.record_applied(entry.index)?;
                }
            }
            self.applied = entry.index;
            METRICS.applied.inc();
            self.applied_tx.send_replace(entry.index);
        }
        Ok(())
    }

    fn apply_conf_change(&mut self, index: u64, cc: &ConfChange) -> anyhow::Result<()> {
        let ctx = ConfChangeContext::decode(cc.get_context()).unwrap_or_default();
        let s = self.storage.clone();
        let node = cc.node_id;
        let member = ctx.member.clone().unwrap_or(PbMember {
            id: node,
            ..Default::default()
        });
        let cs = match self.raw.apply_conf_change(cc) {
            Ok(cs) => cs,
            Err(e) => {
                // An invalid change (e.g. removing an unknown node) changes
                // nothing; only the applied index moves.
                tracing::warn!("conf change at {index} refused: {e}");
                self.record_applied(index)?;
                self.answer(
                    &ctx,
                    Err(EtcdError::Internal(format!("conf change refused: {e}"))),
                );
                return Ok(());
            }
        };
        let mut tx = s.db.write_tx();
        match cc.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let learner = cc.get_change_type() == ConfChangeType::AddLearnerNode;
                let mut record = match tx.get(&s.members, members::key(node))? {
                    Some(v) => PbMember::decode(v.as_ref())?,
                    None => member.clone(),
                };
                record.is_learner = learner;
                tx.insert(&s.members, members::key(node), record.encode_to_vec());
                if node != self.status.member_id {
                    self.outbox.add_peer(node, record.peer_ur_ls.clone());
                }
            }
            ConfChangeType::RemoveNode => {
                tx.remove(&s.members, members::key(node));
                if node != self.status.member_id {
                    self.outbox.remove_peer(node);
                }
            }
        }
        tx.insert(&s.meta, storage::META_APPLIED_INDEX, index.to_be_bytes());
        tx.commit()?;
        self.raw.mut_store().set_conf_state(&cs)?;
        self.promoting.remove(&node);
        self.status.is_learner.store(
            cs.learners.contains(&self.status.member_id),
            Ordering::Relaxed,
        );
        if cc.get_change_type() == ConfChangeType::RemoveNode && node == self.status.member_id {
            tracing::warn!("this member was removed from the cluster");
            self.status.removed.send_replace(true);
        }
        let list = members::list(&s).map_err(|e| EtcdError::Internal(format!("{e:#}")));
        self.answer(
            &ctx,
            list.map(|members| ApplyResponse::Members { member, members }),
        );
        Ok(())
    }

    /// Answers the local client waiting on a conf change, if any.
    fn answer(&mut self, ctx: &ConfChangeContext, result: ProposalResult) {
        if ctx.origin == self.status.member_id {
            if let Some(reply) = self.proposals.remove(&ctx.id) {
                let _ = reply.send(result);
            }
        }
    }

    /// Replaces the state machine with a snapshot staged by the transport,
    /// then resets the Raft log after it (crash-safe, see `core::snapshot`).
    fn apply_snapshot(&mut self, meta: &SnapshotMetadata) -> anyhow::Result<()> {
        tracing::info!(index = meta.index, term = meta.term, "applying snapshot");
        snapshot::apply_staged(&self.storage, &self.data_dir, meta)?;
        self.raw.mut_store().apply_snapshot(meta)?;
        self.storage.sync()?;
        snapshot::finish_restore(&self.storage, &self.data_dir, meta.index)?;
        METRICS.snapshot_applied.inc();
        self.applied = meta.index;
        self.applied_tx.send_replace(meta.index);
        // Peers and lease clocks follow the new state.
        for m in members::list(&self.storage)? {
            if m.id != self.status.member_id {
                self.outbox.add_peer(m.id, m.peer_ur_ls.clone());
            }
        }
        for (id, ttl) in mvcc::leases(&self.storage.db.read_tx(), &self.storage)? {
            self.lessor.granted(id, ttl);
        }
        self.status.is_learner.store(
            meta.get_conf_state()
                .learners
                .contains(&self.status.member_id),
            Ordering::Relaxed,
        );
        Ok(())
    }

    /// Compacts the Raft log once `--snapshot-count` entries were applied
    /// since the last compaction, keeping some entries for slow followers
    /// (etcd's `SnapshotCatchUpEntries`, at most 5,000).
    fn maybe_compact_log(&mut self) -> anyhow::Result<()> {
        let keep = self.snapshot_count.min(5_000);
        let first = self.raw.store().snapshot_index();
        if self.applied > first + self.snapshot_count + keep {
            let to = self.applied - keep;
            self.raw.mut_store().compact(to)?;
            tracing::debug!(to, "compacted raft log");
        }
        Ok(())
    }

    fn learner_ready(&self, id: u64) -> Result<bool, EtcdError> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(EtcdError::NotLeader);
        }
        let prs = self.raw.raft.prs();
        let leader = prs.get(self.status.member_id).map_or(0, |p| p.matched);
        let learner = prs.get(id).map_or(0, |p| p.matched);
        Ok(learner as f64 >= leader as f64 * 0.9)
    }

    /// With `--auto-promote`, the leader promotes each learner that has
    /// caught up (etcd has no such option; its users promote by hand).
    fn maybe_auto_promote(&mut self) {
        if !self.auto_promote || self.raw.raft.state != StateRole::Leader {
            return;
        }
        let learners: Vec<u64> = self
            .raw
            .raft
            .prs()
            .conf()
            .learners()
            .iter()
            .copied()
            .collect();
        for id in learners {
            let recent = self
                .promoting
                .get(&id)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(5));
            if recent || !matches!(self.learner_ready(id), Ok(true)) {
                continue;
            }
            let mut cc = ConfChange::default();
            cc.set_change_type(ConfChangeType::AddNode);
            cc.node_id = id;
            if self.raw.propose_conf_change(Vec::new(), cc).is_ok() {
                tracing::info!("learner {id:x} caught up; promoting it");
                self.promoting.insert(id, Instant::now());
            }
        }
    }

    /// Records `index` as applied when its entry changes nothing else (an
    /// empty, refused or malformed entry), in a transaction of its own.
    ///
    /// # Errors
    /// Storage errors.
    fn record_applied(&self, index: u64) -> anyhow::Result<()> {
        let s = &self.storage;
        let mut tx = s.db.write_tx();
        tx.insert(&s.meta, storage::META_APPLIED_INDEX, index.to_be_bytes());
        tx.commit()?;
        Ok(())
    }

    fn apply_normal(&mut self, entry: &Entry) -> anyhow::Result<()> {
        let s = self.storage.clone();
        let req = match decode_entry(&entry.data) {
            EntryData::Empty => return self.record_applied(entry.index),
            EntryData::Request(req) => req,
            EntryData::Malformed { id, origin, reason } => {
                // The same bytes fail the same way on every member: nothing
                // is written, the index moves on, the proposer is answered.
                tracing::warn!(index = entry.index, "malformed request entry: {reason}");
                self.record_applied(entry.index)?;
                if origin == self.status.member_id {
                    if let Some(reply) = self.proposals.remove(&id) {
                        let _ = reply.send(Err(EtcdError::MalformedRequest(reason)));
                    }
                }
                return Ok(());
            }
        };
        let mut tx = s.db.write_tx();
        let mut events = Vec::new();
        let mut revision = 0;
        let result = apply_op(&mut tx, &s, req.op.as_ref(), &mut events, &mut revision);
        let compaction = match &result {
            Ok(ApplyResponse::Compaction(_)) => match &req.op {
                Some(Op::Compaction(c)) => Some(c.revision),
                _ => None,
            },
            _ => None,
        };
        let tx = if result.is_ok() {
            tx
        } else {
            // Nothing of a failed operation is written; only the index moves.
            tx.rollback();
            s.db.write_tx()
        };
        let mut tx = tx;
        // The applied index goes in the same transaction as the changes.
        tx.insert(
            &s.meta,
            storage::META_APPLIED_INDEX,
            entry.index.to_be_bytes(),
        );
        tx.commit()?;
        if result.is_ok() {
            match &req.op {
                Some(Op::LeaseGrant(r)) => self.lessor.granted(r.id, r.ttl),
                Some(Op::LeaseRevoke(r)) => self.lessor.revoked(r.id),
                Some(Op::LeaseKeepAlive(r)) => {
                    self.lessor.renewed(r.id);
                }
                _ => {}
            }
            if !events.is_empty() {
                self.events.publish(revision, events);
            }
        }
        if let Some(rev) = compaction {
            self.compactor.schedule(rev);
        }
        if req.origin == self.status.member_id {
            if let Some(reply) = self.proposals.remove(&req.id) {
                let _ = reply.send(result);
            }
        }
        Ok(())
    }
}

/// Applies one operation inside `tx`.
fn apply_op(
    tx: &mut fjall::SingleWriterWriteTx<'_>,
    s: &Storage,
    op: Option<&Op>,
    events: &mut Vec<PbEvent>,
    revision: &mut i64,
) -> ProposalResult {
    let Some(op) = op else {
        return Ok(ApplyResponse::Done);
    };
    if let Op::MemberUpdate(update) = op {
        let Some(v) = tx.get(&s.members, members::key(update.id))? else {
            return Err(EtcdError::MemberNotFound);
        };
        let mut member =
            PbMember::decode(v.as_ref()).map_err(|e| EtcdError::Internal(e.to_string()))?;
        member.peer_ur_ls = update.peer_ur_ls.clone();
        tx.insert(&s.members, members::key(update.id), member.encode_to_vec());
        let list = members::list_in(tx, s)?;
        return Ok(ApplyResponse::Members {
            member,
            members: list,
        });
    }
    if let Op::Publish(attrs) = op {
        let mut member = match tx.get(&s.members, members::key(attrs.member_id))? {
            Some(v) => {
                PbMember::decode(v.as_ref()).map_err(|e| EtcdError::Internal(e.to_string()))?
            }
            None => PbMember {
                id: attrs.member_id,
                ..Default::default()
            },
        };
        member.name = attrs.name.clone();
        member.client_ur_ls = attrs.client_urls.clone();
        tx.insert(
            &s.members,
            members::key(attrs.member_id),
            member.encode_to_vec(),
        );
        return Ok(ApplyResponse::Done);
    }
    let mut a = Applier::new(tx, s)?;
    let r = match op {
        Op::Put(r) => ApplyResponse::Put(a.put(r)?),
        Op::DeleteRange(r) => ApplyResponse::DeleteRange(a.delete_range(r)?),
        Op::Txn(r) => ApplyResponse::Txn(a.txn(r)?),
        Op::Compaction(r) => ApplyResponse::Compaction(a.compact(r)?),
        Op::Publish(_) => ApplyResponse::Done,
        Op::LeaseGrant(r) => {
            a.lease_grant(r.id, r.ttl)?;
            ApplyResponse::LeaseGrant {
                id: r.id,
                ttl: r.ttl,
            }
        }
        Op::LeaseRevoke(r) => {
            a.lease_revoke(r.id)?;
            ApplyResponse::LeaseRevoke
        }
        Op::LeaseKeepAlive(r) => ApplyResponse::LeaseKeepAlive {
            ttl: a.lease_ttl(r.id).unwrap_or(0),
        },
        Op::MemberUpdate(_) => ApplyResponse::Done,
    };
    a.finish();
    *revision = a.revision();
    *events = std::mem::take(&mut a.events);
    Ok(r)
}

/// The physical-compaction worker: one thread, latest request wins.
struct Compactor {
    /// Compact revisions to process.
    tx: mpsc::Sender<i64>,
}

impl Compactor {
    fn start(storage: Storage, done: watch::Sender<i64>) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel::<i64>();
        // Resume a pass a crash interrupted.
        let snapshot = storage.db.read_tx();
        let revs = mvcc::revisions(&snapshot, &storage)?;
        drop(snapshot);
        if revs.compacted > *done.borrow() {
            let _ = tx.send(revs.compacted);
        }
        std::thread::Builder::new()
            .name("compactor".into())
            .spawn(move || {
                while let Ok(mut rev) = rx.recv() {
                    for newer in rx.try_iter() {
                        rev = rev.max(newer);
                    }
                    match mvcc::compact_history(&storage, rev, 10_000) {
                        Ok(()) => {
                            done.send_replace(rev);
                        }
                        Err(e) => tracing::error!("compaction at revision {rev}: {e}"),
                    }
                }
            })?;
        Ok(Self { tx })
    }

    fn schedule(&self, rev: i64) {
        let _ = self.tx.send(rev);
    }
}
