//! The Raft task: the one owner of the `RawNode`.
//!
//! Everything else talks to it through [`NodeHandle`] (`handle`), which
//! sends a closed set of [`Event`]s over a bounded channel. The task runs on
//! its own OS thread (`thread`: fsync blocks, and the peer transport is
//! driven by the same thread), ticks every heartbeat interval, drains
//! the queued events before handling one Ready (group commit: one fsync per
//! Ready, however many proposals it carries), and answers each proposal by
//! its own id after the entry is committed **and** applied (`apply`).
//!
//! - `handle`: events, the handle, status, and the sink/outbox seams;
//! - `apply`: committed entries into the state machine, conf changes and
//!   snapshots, with the applied index in the same transaction;
//! - `log`: raft-rs's `Storage` over fjall;
//! - `propose`: what the task proposes: a drain's proposals as one
//!   `MsgPropose`, and lease expiries;
//! - `proposal`: what a Raft log entry holds, decoded without ever failing;
//! - `reads`: ReadIndex batches and the lease renewals they carry;
//! - `snapshot`: state-machine snapshots, staged and applied crash-safely;
//! - `logging`: raft-rs's slog records into tracing;
//! - `thread`: the thread and its runtime, shared with the transport.

mod admit;
mod apply;
pub mod handle;
pub mod log;
pub mod logging;
pub mod proposal;
mod propose;
mod reads;
pub mod snapshot;
#[cfg(test)]
mod tests;
pub mod thread;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Message};
use raft::{RawNode, StateRole};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::errors::EtcdError;
use crate::core::lease::Lessor;
use crate::core::metrics::METRICS;
use crate::core::mvcc::compaction::Compactor;
use crate::core::raft::log::RaftLog;
use crate::core::raft::proposal::{ConfChangeContext, RaftRequest};
use crate::core::storage::{self, Storage};
use crate::core::types::{LeaseId, LogIndex, Revision};

use reads::{read_context, renewals_in, ReadBatch, ReadReply, MAX_READS_PER_BATCH, READ_RETRY};

pub use handle::{
    Event, EventSink, NoWatchers, NodeConfig, NodeHandle, NodeStatus, Outbox, ProposalResult,
    RevisionEvents, EVENT_QUEUE, MAX_PENDING_PROPOSALS,
};

/// kvd's raft-rs settings for member `id`: a heartbeat every tick, an
/// election after `election_ticks` ticks, pre-vote and check-quorum on,
/// ReadIndex reads (`ReadOnlyOption::Safe`), appends of at most 1 MiB and
/// 256 in flight, at most [`MAX_COMMITTED_PER_READY`] of committed entries
/// per Ready (and as much per light ready); `applied` is the state
/// machine's applied index.
pub(super) fn raft_config(id: u64, election_ticks: usize, applied: u64) -> raft::Config {
    raft::Config {
        id,
        election_tick: election_ticks,
        heartbeat_tick: 1,
        applied,
        max_size_per_msg: propose::MAX_BATCH_BYTES as u64,
        max_committed_size_per_ready: MAX_COMMITTED_PER_READY,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        read_only_option: raft::ReadOnlyOption::Safe,
        ..Default::default()
    }
}

/// Starts the Raft task on `thread` (see `thread`); it runs until
/// [`Event::Shutdown`], a failure (which it reports in
/// [`NodeStatus::failed`]), or every [`NodeHandle`] is dropped (the
/// transport holds one).
///
/// # Errors
/// raft-rs rejecting the configuration or the stored state, storage
/// errors, a thread that has ended or runs a task already.
pub fn start(
    cfg: NodeConfig,
    storage: Storage,
    log: RaftLog,
    outbox: Box<dyn Outbox>,
    thread: &mut thread::RaftThread,
) -> anyhow::Result<NodeHandle> {
    let applied_index = storage.meta_u64(storage::META_APPLIED_INDEX)?;
    let mut log = log;
    log.ensure_commit(applied_index)?;
    let raft_cfg = raft_config(cfg.member_id.0, cfg.election_ticks, applied_index);
    raft_cfg.validate()?;
    let logger = slog::Logger::root(crate::core::raft::logging::TracingDrain, slog::o!());
    // raft-rs stops on a stored state it cannot take (a commit index past
    // the log, from a damaged disk): an error here, not a panic.
    let raw = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        RawNode::new(&raft_cfg, log, &logger)
    }))
    .map_err(|_| anyhow::anyhow!("raft refused the stored state (see the log above)"))??;
    let status = Arc::new(NodeStatus::new(cfg.member_id, cfg.cluster_id));
    status.set_progress(raw.raft.term, raw.raft.raft_log.last_index());
    status.set_learner(raw.raft.prs().conf().learners().contains(&cfg.member_id.0));
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let (applied_tx, applied_rx) = watch::channel(LogIndex(applied_index));
    let compact_done = Revision(storage.meta_u64(storage::META_COMPACT_DONE)? as i64);
    let (compact_tx, compact_rx) = watch::channel(compact_done);
    let compactor = Compactor::start(storage.clone(), compact_tx)?;
    let handle = NodeHandle {
        tx,
        status: status.clone(),
        applied: applied_rx,
        compact_done: compact_rx,
        peer_bytes: crate::core::budget::ByteBudget::default(),
    };
    let failed = status.clone();
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
        batch: propose::ProposalBatch::default(),
        reads_queued: Vec::new(),
        reads: HashMap::new(),
        reads_waiting: Vec::new(),
        compactor,
        tick: cfg.tick,
        events: cfg.events,
        applied_events: Vec::new(),
        compact_after: None,
        answers: Vec::new(),
        lessor: cfg.lessor,
        auth: cfg.auth,
        snapshot_count: cfg.snapshot_count.max(1),
        auto_promote: cfg.auto_promote,
        promoting: HashMap::new(),
        transfer: None,
        data_dir: cfg.data_dir,
    };
    thread.run(Box::new(move |rt: &Runtime| {
        // A failed fsync, a corrupt log or a panic inside raft-rs: the
        // task stops and says why; the server then stops the member, and a
        // restart recovers from the durable state.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.run(rx, rt)));
        let failure = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("{e:#}"),
            Err(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
        };
        tracing::error!("raft task stopped: {failure}");
        failed.failed.send_replace(Some(failure));
    }))?;
    Ok(handle)
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
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
    applied_tx: watch::Sender<LogIndex>,
    /// The last applied index.
    applied: u64,
    /// Next proposal / read id (unique within this process).
    next_id: u64,
    /// Proposals waiting to be applied, by id.
    proposals: HashMap<u64, oneshot::Sender<ProposalResult>>,
    /// Proposals of this drain of the queue, stepped together.
    batch: propose::ProposalBatch,
    /// ReadIndex requests not yet sent: one ReadIndex serves all of them
    /// (etcd's `linearizableReadLoop` batches the same way), with the
    /// leases the keep-alives among them renew.
    reads_queued: Vec<(Option<LeaseId>, ReadReply)>,
    /// Batches of ReadIndex requests waiting for their read state, by id.
    reads: HashMap<u64, ReadBatch>,
    /// Read states whose index is not applied yet.
    reads_waiting: Vec<(u64, ReadReply)>,
    /// Runs physical compaction beside the Raft task.
    compactor: Compactor,
    /// Tick length.
    tick: Duration,
    /// Applied changes go here, for watchers.
    events: Arc<dyn EventSink>,
    /// Changes of the entries applied in this batch, published at its end;
    /// a `Compact` in it goes to the compactor after them (a `prev_kv` it
    /// removes before the dispatcher reads it is omitted, as in etcd).
    applied_events: Vec<RevisionEvents>,
    compact_after: Option<i64>,
    /// Answers to proposals applied in this batch, sent at its end (after
    /// the events are published and the applied index is announced).
    answers: Vec<(oneshot::Sender<ProposalResult>, ProposalResult)>,
    /// Lease clocks.
    lessor: Arc<Lessor>,
    /// Users, roles and this member's simple tokens.
    auth: Arc<crate::core::auth::AuthStore>,
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

/// Most bytes of committed entries one Ready hands out (raft-rs
/// `max_committed_size_per_ready`; one larger entry still comes alone): a
/// long tail applied after a restart or a catch-up is applied in steps,
/// between which the Raft thread drives the peer transport (`thread`).
const MAX_COMMITTED_PER_READY: u64 = 16 * 1024 * 1024;

/// Most events taken from the queue before handling one Ready.
const MAX_EVENTS_PER_READY: usize = 4096;

impl RaftTask {
    /// This member's id, as raft-rs numbers nodes.
    fn me(&self) -> u64 {
        self.status.member_id.0
    }

    /// The loop: wait for events (driving the transport meanwhile) until
    /// the next tick, take what is queued, tick when due, handle the Ready.
    fn run(&mut self, mut rx: mpsc::Receiver<Event>, rt: &Runtime) -> anyhow::Result<()> {
        let mut next_tick = Instant::now() + self.tick;
        loop {
            // Committed entries a size limit left for the next Ready are
            // applied without waiting for an event or the tick.
            let wait = if self.raw.raft.raft_log.committed > self.applied {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
            // The transport runs first: the first yield runs its ready tasks
            // and polls the socket, the second the tasks that poll woke (a
            // peer's packet is stepped in this iteration even when events
            // are queued); then the thread sleeps in the runtime until an
            // event or the tick.
            let first = rt.block_on(async {
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
                tokio::time::timeout(wait, rx.recv()).await
            });
            match first {
                Ok(Some(ev)) => {
                    if !self.handle(ev) {
                        return Ok(());
                    }
                    for _ in 0..MAX_EVENTS_PER_READY {
                        let Ok(ev) = rx.try_recv() else {
                            break;
                        };
                        if !self.handle(ev) {
                            return Ok(());
                        }
                    }
                    self.step_proposals();
                    self.send_reads();
                }
                Ok(None) => return Ok(()),
                Err(_elapsed) => {}
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                self.send_reads();
                self.retry_reads();
                self.expire_leases();
                self.maybe_auto_promote();
                next_tick += self.tick;
                if next_tick < now {
                    next_tick = now + self.tick;
                }
            }
            self.on_ready(rt)?;
            self.campaign_if_alone(rt)?;
        }
    }

    /// A lone voter need not wait an election timeout to lead (once its
    /// configuration is applied).
    fn campaign_if_alone(&mut self, rt: &Runtime) -> anyhow::Result<()> {
        let me = self.me();
        if self.raw.raft.state == StateRole::Follower
            && self.raw.raft.leader_id == 0
            && self.raw.raft.prs().conf().voters().ids().iter().eq([me])
        {
            self.raw.campaign()?;
            self.on_ready(rt)?;
        }
        Ok(())
    }

    /// Handles one event; false on shutdown.
    fn handle(&mut self, ev: Event) -> bool {
        match ev {
            Event::Propose { op, auth, reply } => {
                if self.proposals.len() + self.batch.len() >= MAX_PENDING_PROPOSALS {
                    let _ = reply.send(Err(EtcdError::TooManyRequests));
                    return true;
                }
                let id = self.next_id;
                self.next_id += 1;
                let (auth_user, auth_revision) = auth.unwrap_or_default();
                let data = RaftRequest {
                    id,
                    origin: self.me(),
                    op: Some(op),
                    auth_user,
                    auth_revision,
                }
                .encode_to_vec();
                if !self.batch.fits(data.len()) {
                    self.step_proposals();
                }
                self.batch.push(id, data, reply);
            }
            Event::ReadIndex { renew, reply } => {
                if self.raw.raft.leader_id == 0 {
                    let _ = reply.send(Err(EtcdError::NoLeader));
                } else if self.reads_pending() >= MAX_PENDING_PROPOSALS {
                    let _ = reply.send(Err(EtcdError::TooManyRequests));
                } else {
                    if let Some(lease) = renew {
                        self.renew_as_leader(lease);
                    }
                    self.reads_queued.push((renew, reply));
                }
            }
            Event::ProposeConfChange { cc, member, reply } => {
                let id = self.next_id;
                self.next_id += 1;
                let context = ConfChangeContext {
                    id,
                    origin: self.me(),
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
                let _ = reply.send(self.learner_ready(id.0));
            }
            Event::TransferLeader { to, reply } => {
                let r = if self.raw.raft.state != StateRole::Leader {
                    Err(EtcdError::NotLeader)
                } else if !self.raw.raft.prs().conf().voters().contains(to.0) {
                    Err(EtcdError::BadLeaderTransferee)
                } else {
                    self.raw.transfer_leader(to.0);
                    self.transfer = Some((to.0, Instant::now()));
                    Ok(())
                };
                let _ = reply.send(r);
            }
            Event::SnapshotStatus(id, status) => self.raw.report_snapshot(id.0, status),
            Event::Step(m, _bytes) => self.step(*m),
            Event::Unreachable(id) => self.raw.report_unreachable(id.0),
            Event::Shutdown => return false,
        }
        true
    }

    /// Steps a message from a peer into Raft, after the checks raft-rs
    /// leaves to its user ([`admit::refusal`]): a message it could not
    /// handle without stopping the member is logged and dropped.
    fn step(&mut self, m: Message) {
        if let Some(why) = admit::refusal(&self.raw.raft, &m) {
            tracing::warn!(
                from = format_args!("{:x}", m.from),
                kind = ?m.get_msg_type(),
                "dropping {why}"
            );
            return;
        }
        if m.get_msg_type() == raft::eraftpb::MessageType::MsgReadIndex {
            if let Some(e) = m.entries.first() {
                for lease in renewals_in(&e.data) {
                    self.renew_as_leader(lease);
                }
            }
        }
        if let Err(e) = self.raw.step(m) {
            tracing::debug!("raft step: {e}");
        }
    }

    /// ReadIndex requests queued or waiting for their read state or index.
    fn reads_pending(&self) -> usize {
        self.reads_queued.len()
            + self.reads.values().map(|b| b.replies.len()).sum::<usize>()
            + self.reads_waiting.len()
    }

    /// Sends one ReadIndex for every [`MAX_READS_PER_BATCH`] queued
    /// requests (after a drain of the event queue, so that concurrent
    /// reads and keep-alives share one round of heartbeats).
    fn send_reads(&mut self) {
        if self.reads_queued.is_empty() {
            return;
        }
        // A new leader answers no ReadIndex before it has committed an
        // entry of its term (raft-rs drops them): keep them queued.
        if self.raw.raft.state == StateRole::Leader && !self.raw.raft.commit_to_current_term() {
            return;
        }
        let queued = std::mem::take(&mut self.reads_queued);
        if self.raw.raft.leader_id == 0 {
            for (_, reply) in queued {
                let _ = reply.send(Err(EtcdError::NoLeader));
            }
            return;
        }
        let mut queued = queued.into_iter().peekable();
        while queued.peek().is_some() {
            let batch: Vec<_> = queued.by_ref().take(MAX_READS_PER_BATCH).collect();
            let id = self.next_id;
            self.next_id += 1;
            let renew: Vec<LeaseId> = batch.iter().filter_map(|(lease, _)| *lease).collect();
            let ctx = read_context(id, &renew);
            self.raw.read_index(ctx.clone());
            self.reads.insert(
                id,
                ReadBatch {
                    ctx,
                    sent: Instant::now(),
                    replies: batch.into_iter().map(|(_, reply)| reply).collect(),
                },
            );
        }
    }

    /// Sends again every ReadIndex unanswered for [`READ_RETRY`] (raft-rs
    /// ignores a context it already holds, so a slow answer is not
    /// doubled; a duplicate answer finds no batch and is dropped).
    fn retry_reads(&mut self) {
        if self.raw.raft.leader_id == 0 {
            return;
        }
        let now = Instant::now();
        let mut again = Vec::new();
        for batch in self.reads.values_mut() {
            if now.duration_since(batch.sent) >= READ_RETRY {
                batch.sent = now;
                again.push(batch.ctx.clone());
            }
        }
        for ctx in again {
            self.raw.read_index(ctx);
        }
    }

    /// A keep-alive reached the leader (its own client's, or a follower's
    /// riding on a forwarded ReadIndex): restart the lease's clock. Only
    /// the leader's clocks decide expiry, and a new leader restarts every
    /// clock at the full TTL, so a renewal seen by a deposed leader is
    /// never needed.
    fn renew_as_leader(&self, lease: LeaseId) {
        if self.raw.raft.state == StateRole::Leader {
            self.lessor.renew_unexpired(lease);
        }
    }

    /// Handles a Ready in raft-rs 0.7's documented order (lib.rs,
    /// "Processing the Ready State").
    fn on_ready(&mut self, rt: &Runtime) -> anyhow::Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            self.on_soft_state(ss.leader_id, ss.raft_state);
        }
        // 1. Messages that need no persistence go out at once: the yield
        //    lets the transport's tasks on this thread write them before
        //    the apply and the fsync below hold the thread.
        let messages = ready.take_messages();
        if !messages.is_empty() {
            self.outbox.send(messages);
            rt.block_on(tokio::task::yield_now());
        }
        // 2. A snapshot from the leader (the log is never compacted yet).
        if !ready.snapshot().is_empty() {
            let meta = ready.snapshot().get_metadata().clone();
            self.apply_snapshot(&meta, rt)?;
        }
        // 3. Committed entries (already persisted locally: raft-rs only
        //    hands out entries up to min(committed, persisted)).
        self.apply_entries(ready.take_committed_entries())?;
        // 4. Read states: answer once their index is applied.
        for rs in ready.take_read_states() {
            let id = storage::be_u64(&rs.request_ctx);
            for reply in self.reads.remove(&id).into_iter().flat_map(|b| b.replies) {
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
            fail::fail_point!("raft_before_fsync", |_| crate::core::failpoints::crash());
            let timer = METRICS.fsync.start_timer();
            self.storage.sync()?;
            timer.observe_duration();
            fail::fail_point!("raft_after_fsync", |_| crate::core::failpoints::crash());
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
            .set_progress(self.raw.raft.term, self.raw.raft.raft_log.last_index());
        self.answer_reads();
        Ok(())
    }

    fn on_soft_state(&mut self, leader: u64, role: StateRole) {
        let old = self.status.set_leader(leader);
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
            for reply in self.reads.drain().flat_map(|(_, batch)| batch.replies) {
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
                let _ = reply.send(Ok(LogIndex(index)));
            } else {
                i += 1;
            }
        }
        // Drop the answers nobody waits for any more (timed-out clients).
        self.proposals.retain(|_, r| !r.is_closed());
        self.reads.retain(|_, batch| {
            batch.replies.retain(|r| !r.is_closed());
            !batch.replies.is_empty()
        });
    }

    /// Compacts the Raft log behind the applied index, a step per Ready
    /// (`RaftLog::compact_applied`).
    fn maybe_compact_log(&mut self) -> anyhow::Result<()> {
        self.raw
            .mut_store()
            .compact_applied(self.applied, self.snapshot_count)
    }

    fn learner_ready(&self, id: u64) -> Result<bool, EtcdError> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(EtcdError::NotLeader);
        }
        let prs = self.raw.raft.prs();
        let leader = prs.get(self.me()).map_or(0, |p| p.matched);
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
}
