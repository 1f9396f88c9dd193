//! How the rest of a member reaches the Raft task: the closed [`Event`] set,
//! the cloneable [`NodeHandle`] (bounded queue, proposals answered by id),
//! the [`NodeStatus`] the API reports, and the two seams the task calls out
//! through ([`EventSink`] for watchers, [`Outbox`] for peers).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::proto::{PbEvent, PbMember};
use raft::eraftpb::{ConfChange, Message};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{oneshot, watch};

use crate::core::budget::{ByteBudget, Held};
use crate::core::errors::EtcdError;
use crate::core::lease::Lessor;
use crate::core::mvcc::ApplyResponse;
use crate::core::raft::proposal::Op;
use crate::core::types::{ClusterId, LeaseId, LogIndex, MemberId, Revision};

/// The answer to a proposal: the state machine's response or etcd's error.
pub type ProposalResult = Result<ApplyResponse, EtcdError>;

/// The closed set of things the Raft task reacts to.
pub enum Event {
    /// Propose an operation; answered once it is applied here.
    Propose {
        /// The operation.
        op: Op,
        /// With auth on: the user and the auth revision the request was
        /// checked at (see [`crate::core::raft::proposal::RaftRequest`]).
        auth: Option<(String, u64)>,
        /// Where the answer goes.
        reply: oneshot::Sender<ProposalResult>,
    },
    /// Ask for a ReadIndex; answered with an index the caller waits to be applied.
    ReadIndex {
        /// A lease the leader renews on receiving this request (a
        /// keep-alive rides on the ReadIndex instead of a log entry: see
        /// [`crate::core::lease`]).
        renew: Option<LeaseId>,
        /// Where the read index goes.
        reply: oneshot::Sender<Result<LogIndex, EtcdError>>,
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
        id: MemberId,
        /// `Ok(ready)`, or `NotLeader`.
        reply: oneshot::Sender<Result<bool, EtcdError>>,
    },
    /// As leader, hand leadership to `to` (etcd's `MoveLeader`).
    TransferLeader {
        /// The transferee.
        to: MemberId,
        /// `Ok` once the transfer started, or `NotLeader`/`BadLeaderTransferee`.
        reply: oneshot::Sender<Result<(), EtcdError>>,
    },
    /// The outcome of streaming a snapshot to a follower.
    SnapshotStatus(MemberId, raft::SnapshotStatus),
    /// A Raft message from a peer, with its share of the peer byte budget
    /// (given back when the task has handled it).
    Step(Box<Message>, Held),
    /// The transport could not reach this peer.
    Unreachable(MemberId),
    /// Stop the task.
    Shutdown,
}

/// Volatile facts about the member that the API layer reports; written only
/// by the Raft task (the setters are the task's), read by anyone.
#[derive(Debug)]
pub struct NodeStatus {
    /// This member's id.
    pub member_id: MemberId,
    /// The cluster id.
    pub cluster_id: ClusterId,
    /// The current leader (0 = none known).
    leader: AtomicU64,
    /// The current Raft term.
    term: AtomicU64,
    /// The last Raft log index.
    raft_index: AtomicU64,
    /// Whether this member is a learner.
    is_learner: AtomicBool,
    /// Set once this member has been removed from the cluster.
    pub removed: watch::Sender<bool>,
    /// Set when the Raft task stopped on an error (a failed fsync, a
    /// panic in raft-rs): the member must stop, and a restart recovers
    /// from the durable state.
    pub failed: watch::Sender<Option<String>>,
}

impl NodeStatus {
    /// The status of a member that knows no leader yet, at term 0.
    pub fn new(member_id: MemberId, cluster_id: ClusterId) -> Self {
        Self {
            member_id,
            cluster_id,
            leader: AtomicU64::new(0),
            term: AtomicU64::new(0),
            raft_index: AtomicU64::new(0),
            is_learner: AtomicBool::new(false),
            removed: watch::channel(false).0,
            failed: watch::channel(None).0,
        }
    }

    /// The leader this member knows, if any.
    pub fn leader(&self) -> Option<MemberId> {
        match self.leader.load(Ordering::Relaxed) {
            0 => None,
            id => Some(MemberId(id)),
        }
    }

    /// Whether this member believes it leads.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.member_id)
    }

    /// The current Raft term.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Relaxed)
    }

    /// The last index in this member's Raft log.
    pub fn raft_index(&self) -> LogIndex {
        LogIndex(self.raft_index.load(Ordering::Relaxed))
    }

    /// Whether this member is a learner.
    pub fn is_learner(&self) -> bool {
        self.is_learner.load(Ordering::Relaxed)
    }

    /// Records the leader (0 = none); returns the one known before.
    pub(super) fn set_leader(&self, leader: u64) -> u64 {
        self.leader.swap(leader, Ordering::Relaxed)
    }

    /// Records the term and the last log index.
    pub(super) fn set_progress(&self, term: u64, raft_index: u64) {
        self.term.store(term, Ordering::Relaxed);
        self.raft_index.store(raft_index, Ordering::Relaxed);
    }

    /// Records whether this member is a learner.
    pub(super) fn set_learner(&self, learner: bool) {
        self.is_learner.store(learner, Ordering::Relaxed);
    }

    /// Sets the term (for tests of the API layer that build a status).
    #[cfg(test)]
    pub(crate) fn set_term_for_test(&self, term: u64) {
        self.term.store(term, Ordering::Relaxed);
    }
}

/// Events the Raft task's queue holds; a full queue refuses proposals with
/// "too many requests" and drops peer messages (Raft retransmits them).
pub const EVENT_QUEUE: usize = 8192;

/// Bytes of peer messages the Raft task's queue may hold; past it, more
/// are dropped (Raft retransmits), so that peers cannot fill the
/// [`EVENT_QUEUE`] slots with frames of the largest size.
pub const PEER_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// Proposals waiting for their entry to be applied on this member (and,
/// separately, reads waiting for their read index); beyond this, new ones
/// are refused with "too many requests" (etcd bounds the same backlog
/// through its commit/apply gap of 5,000 entries).
pub const MAX_PENDING_PROPOSALS: usize = 16_384;

/// A cheap, cloneable way to reach the Raft task.
#[derive(Clone)]
pub struct NodeHandle {
    /// Events into the task (bounded: [`EVENT_QUEUE`]).
    pub(super) tx: tokio::sync::mpsc::Sender<Event>,
    /// Shared status.
    pub status: Arc<NodeStatus>,
    /// The applied index, for read-index waits.
    pub applied: watch::Receiver<LogIndex>,
    /// Revision up to which history has been physically compacted.
    pub compact_done: watch::Receiver<Revision>,
    /// Bytes of peer messages queued ([`PEER_QUEUE_BYTES`]).
    pub(super) peer_bytes: ByteBudget,
}

impl NodeHandle {
    /// Queues an event for the Raft task without waiting.
    ///
    /// # Errors
    /// [`EtcdError::TooManyRequests`] when the queue is full (the event is
    /// dropped), [`EtcdError::Stopped`] when the task has ended.
    pub fn send(&self, ev: Event) -> Result<(), EtcdError> {
        self.tx.try_send(ev).map_err(|e| match e {
            TrySendError::Full(_) => EtcdError::TooManyRequests,
            TrySendError::Closed(_) => EtcdError::Stopped,
        })
    }

    /// Waits until the Raft task has ended (after [`Event::Shutdown`] or a
    /// failure): its queue is then closed.
    pub async fn stopped(&self) {
        self.tx.closed().await;
    }

    /// Queues a peer's message (`bytes` its encoded size) for the Raft task
    /// without waiting, within [`PEER_QUEUE_BYTES`].
    ///
    /// # Errors
    /// As [`Self::send`]; [`EtcdError::TooManyRequests`] also when the
    /// byte budget is spent (the message is dropped).
    pub fn send_step(&self, m: Message, bytes: usize) -> Result<(), EtcdError> {
        let held = self
            .peer_bytes
            .try_take(bytes, PEER_QUEUE_BYTES)
            .ok_or(EtcdError::TooManyRequests)?;
        self.send(Event::Step(Box::new(m), held))
    }

    /// As [`Self::send_step`], waiting while the queue or the byte budget
    /// is full (a staged snapshot's message must not be lost).
    ///
    /// # Errors
    /// [`EtcdError::Stopped`] when the task has ended.
    pub async fn send_step_eventually(&self, m: Message, bytes: usize) -> Result<(), EtcdError> {
        loop {
            if let Some(held) = self.peer_bytes.try_take(bytes, PEER_QUEUE_BYTES) {
                return self.send_eventually(Event::Step(Box::new(m), held)).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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
                Err(TrySendError::Closed(_)) => return Err(EtcdError::Stopped),
                Err(TrySendError::Full(back)) => {
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
        self.propose_as(op, &None, timeout).await
    }

    /// As [`Self::propose`], for the identity `who` the API resolved: the
    /// entry carries its user and auth revision, so that it fails with
    /// `AuthOldRevision` if users or roles change before it applies, and
    /// admin operations are checked again when applied.
    ///
    /// # Errors
    /// As [`Self::propose`], and the auth errors of the apply.
    pub async fn propose_as(
        &self,
        op: Op,
        who: &crate::core::auth::Identity,
        timeout: Duration,
    ) -> ProposalResult {
        let (reply, rx) = oneshot::channel();
        let auth = who.as_ref().map(|w| (w.user.clone(), w.revision));
        let started = std::time::Instant::now();
        self.send(Event::Propose { op, auth, reply })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => {
                crate::core::metrics::METRICS
                    .proposal_duration
                    .observe(started.elapsed().as_secs_f64());
                r
            }
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
        self.read_index(None, timeout).await
    }

    /// Renews lease `id` on the leader, which restarts its clock on
    /// receiving the request, then waits as [`Self::linearizable_barrier`]
    /// does: a keep-alive without a Raft entry (etcd's `LeaseRenew` on the
    /// leader; see [`crate::core::lease`] for why no guarantee is lost).
    /// Whether the lease exists is for the caller to read afterwards.
    ///
    /// # Errors
    /// As [`Self::linearizable_barrier`].
    pub async fn renew_lease(&self, id: LeaseId, timeout: Duration) -> Result<(), EtcdError> {
        self.read_index(Some(id), timeout).await
    }

    async fn read_index(&self, renew: Option<LeaseId>, timeout: Duration) -> Result<(), EtcdError> {
        let work = async {
            let (reply, rx) = oneshot::channel();
            self.send(Event::ReadIndex { renew, reply })?;
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
    pub member_id: MemberId,
    /// The cluster id.
    pub cluster_id: ClusterId,
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
    /// Users, roles and this member's simple tokens (applied auth
    /// operations register and drop tokens).
    pub auth: Arc<crate::core::auth::AuthStore>,
}

/// The changes of one applied entry: its revision, and its events (all
/// carrying that revision; one entry = one revision).
pub type RevisionEvents = (i64, Vec<PbEvent>);

/// Receives the changes of every applied entry, in revision order, right
/// after they are committed to storage; implemented by the watch hub.
///
/// Called on the Raft task once per batch of applied entries (one Ready),
/// not once per entry, so that the sink wakes its thread once: under load
/// a wake per entry preempted the Raft task thousands of times a second.
/// It must never block (a slow watcher is the sink's problem, never the
/// writer's).
pub trait EventSink: Send + Sync + 'static {
    /// `revisions` are in increasing revision order, none empty.
    fn publish(&self, revisions: Vec<RevisionEvents>);
}

/// An [`EventSink`] that drops everything (no watchers).
pub struct NoWatchers;

impl EventSink for NoWatchers {
    fn publish(&self, _revisions: Vec<RevisionEvents>) {}
}

/// Sends outgoing Raft messages; implemented by the peer transport.
pub trait Outbox: Send + 'static {
    /// Queues `msgs` for their peers without blocking.
    fn send(&self, msgs: Vec<Message>);
    /// Starts (or re-targets) sending to member `id`.
    fn add_peer(&self, id: MemberId, peer_urls: Vec<String>);
    /// Stops sending to member `id`, and stops taking its messages; called
    /// once its removal is committed to storage.
    fn remove_peer(&self, id: MemberId);
}
