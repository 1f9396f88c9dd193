//! Applying committed entries: normal entries into the MVCC state machine
//! (one fjall transaction per run of normal entries, the applied index of
//! its last entry in the same transaction), conf changes into the member
//! records and raft-rs's configuration, and snapshots from the leader.
//! Re-applying an entry at or below the applied index is a no-op; an entry
//! that cannot be decoded fails alone, alike on every member.

use etcd_client::proto::{PbEvent, PbMember};
use fjall::Readable;
use prost::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, SnapshotMetadata};
use tokio::runtime::Runtime;

use crate::core::alarm;
use crate::core::auth::{self, apply::AuthEffect};
use crate::core::errors::EtcdError;
use crate::core::members;
use crate::core::metrics::METRICS;
use crate::core::mvcc::{self, Applier, ApplyResponse, Revisions};
use crate::core::raft::proposal::{decode_entry, ConfChangeContext, EntryData, Op};
use crate::core::raft::snapshot;
use crate::core::raft::{ProposalResult, RaftTask};
use crate::core::storage::{self, Storage};
use crate::core::types::{LeaseId, LogIndex, MemberId};

impl RaftTask {
    pub(super) fn apply_entries(&mut self, entries: Vec<Entry>) -> anyhow::Result<()> {
        let applied = self.apply_each(entries);
        self.finish_batch();
        applied
    }

    /// What a batch of applied entries owes the rest of the member, done
    /// once per batch rather than per entry (each is a thread wake): the
    /// watch hub gets the events, waiters the applied index, proposers
    /// their answers, in that order, so a client that has its answer can
    /// watch from its revision at once.
    fn finish_batch(&mut self) {
        if !self.applied_events.is_empty() {
            self.events
                .publish(std::mem::take(&mut self.applied_events));
        }
        if let Some(revision) = self.compact_after.take() {
            self.compactor.schedule(revision);
        }
        if *self.applied_tx.borrow() != LogIndex(self.applied) {
            self.applied_tx.send_replace(LogIndex(self.applied));
        }
        for (reply, result) in self.answers.drain(..) {
            let _ = reply.send(result);
        }
    }

    fn apply_each(&mut self, entries: Vec<Entry>) -> anyhow::Result<()> {
        // Re-applying after a restart is a no-op (entries come in index order).
        let fresh = entries.partition_point(|e| e.index <= self.applied);
        let normal = |e: &Entry| e.get_entry_type() == EntryType::EntryNormal;
        // A run of normal entries shares one transaction; a conf change is
        // applied alone.
        for group in entries[fresh..].chunk_by(|a, b| normal(a) && normal(b)) {
            if group.first().is_some_and(normal) {
                self.apply_normal_run(group)?;
            } else {
                for entry in group {
                    self.apply_conf_entry(entry)?;
                }
            }
        }
        Ok(())
    }

    /// A conf change entry (v1, or v2 which kvd never proposes).
    fn apply_conf_entry(&mut self, entry: &Entry) -> anyhow::Result<()> {
        match entry.get_entry_type() {
            EntryType::EntryNormal => return self.apply_normal_run(std::slice::from_ref(entry)),
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
                if node != self.me() {
                    self.outbox
                        .add_peer(MemberId(node), record.peer_ur_ls.clone());
                }
            }
            ConfChangeType::RemoveNode => {
                tx.remove(&s.members, members::key(node));
                tx.remove(&s.auth, members::pin_key(node));
            }
        }
        storage::set_applied_index(&mut tx, &s, index);
        tx.commit()?;
        // After the commit: the transport checks open streams against the
        // stored members.
        if cc.get_change_type() == ConfChangeType::RemoveNode && node != self.me() {
            self.outbox.remove_peer(MemberId(node));
        }
        self.raw.mut_store().set_conf_state(&cs)?;
        self.promoting.remove(&node);
        self.status.set_learner(cs.learners.contains(&self.me()));
        if cc.get_change_type() == ConfChangeType::RemoveNode && node == self.me() {
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
        if ctx.origin == self.me() {
            if let Some(reply) = self.proposals.remove(&ctx.id) {
                self.answers.push((reply, result));
            }
        }
    }

    /// Replaces the state machine with a snapshot staged by the transport,
    /// then resets the Raft log after it (crash-safe, see `core::raft::snapshot`).
    pub(super) fn apply_snapshot(
        &mut self,
        meta: &SnapshotMetadata,
        rt: &Runtime,
    ) -> anyhow::Result<()> {
        tracing::info!(index = meta.index, term = meta.term, "applying snapshot");
        let before: Vec<u64> = members::list(&self.storage)?.iter().map(|m| m.id).collect();
        // Copying a whole state in (and removing the staged copy) takes
        // seconds for a large one: it runs off this thread, which keeps
        // driving the peer transport meanwhile (`thread`), so that the
        // connections stay up and the sender sees the stream acknowledged.
        let (storage, data_dir, staged) =
            (self.storage.clone(), self.data_dir.clone(), meta.clone());
        off_thread(rt, move || {
            snapshot::apply_staged(&storage, &data_dir, &staged)
        })?;
        self.raw.mut_store().apply_snapshot(meta)?;
        let (storage, data_dir, index) = (self.storage.clone(), self.data_dir.clone(), meta.index);
        off_thread(rt, move || {
            storage.sync()?;
            snapshot::finish_restore(&storage, &data_dir, index)
        })?;
        METRICS.snapshot_applied.inc();
        self.applied = meta.index;
        self.applied_tx.send_replace(LogIndex(meta.index));
        // Peers and lease clocks follow the new state: members the
        // snapshot no longer holds were removed in the entries it replaced.
        let after = members::list(&self.storage)?;
        for m in &after {
            if m.id != self.me() {
                self.outbox.add_peer(MemberId(m.id), m.peer_ur_ls.clone());
            }
        }
        for id in before {
            if id != self.me() && !after.iter().any(|m| m.id == id) {
                self.outbox.remove_peer(MemberId(id));
            }
        }
        // Clocks of exactly the snapshot's leases: a lease revoked in the
        // entries the snapshot replaced must not keep a clock here.
        let leases = mvcc::leases(&self.storage.db.read_tx(), &self.storage)?;
        self.lessor
            .reset(leases.into_iter().map(|(id, ttl)| (LeaseId(id), ttl)));
        // Users and roles came with the snapshot too.
        self.auth.invalidate();
        self.status
            .set_learner(meta.get_conf_state().learners.contains(&self.me()));
        Ok(())
    }

    /// Records `index` as applied when its entry changes nothing else (an
    /// empty, refused or malformed entry), in a transaction of its own.
    ///
    /// # Errors
    /// Storage errors.
    fn record_applied(&self, index: u64) -> anyhow::Result<()> {
        let s = &self.storage;
        let mut tx = s.db.write_tx();
        storage::set_applied_index(&mut tx, s, index);
        tx.commit()?;
        Ok(())
    }

    /// Applies a run of normal entries in one write transaction, with the
    /// applied index of its last entry: one commit, one revision read and
    /// one applied-index write per run instead of per entry.
    ///
    /// A failed operation must leave no write behind, and a transaction
    /// cannot undo part of itself. So when an entry fails, the run's
    /// transaction is dropped and the run is applied again up to and
    /// including that entry, now known to fail and not staged: the entries
    /// before it do exactly what they did (same state, same input), and
    /// that transaction commits. The rest of the run follows in a new one.
    /// Each entry is staged at most twice; failures are rare (an unknown
    /// lease, a stale auth revision, a compacted revision). A staged entry
    /// dropped this way has already counted itself in the operation
    /// counters (`etcd_mvcc_put_total` and the like), so those can run
    /// ahead by the entries before a failure in the same run.
    ///
    /// A transaction commits after [`MAX_RUN_ENTRIES`] entries or
    /// [`MAX_RUN_BYTES`] of entries and events, whichever comes first: a
    /// transaction, its events and its answers are held in memory until
    /// it commits, and a follower catching up receives thousands of
    /// committed entries in one Ready.
    fn apply_normal_run(&mut self, run: &[Entry]) -> anyhow::Result<()> {
        let s = self.storage.clone();
        let me = self.me();
        // The entry found failing, not staged again when the run is re-applied.
        let mut known_failed: Option<(usize, Staged)> = None;
        let mut start = 0;
        while start < run.len() {
            let mut tx = s.db.write_tx();
            let mut revs = mvcc::revisions(&tx, &s)?;
            let mut staged = Vec::with_capacity((run.len() - start).min(MAX_RUN_ENTRIES));
            let mut staged_bytes = 0;
            let mut end = run.len();
            let mut failed = None;
            for (i, entry) in run.iter().enumerate().skip(start) {
                if known_failed.as_ref().is_some_and(|(at, _)| *at == i) {
                    if let Some((_, known)) = known_failed.take() {
                        staged.push(known);
                    }
                    end = i + 1;
                    break;
                }
                let st = stage(&mut tx, &s, entry, &mut revs, me);
                if st.may_have_written && st.result.is_err() {
                    failed = Some((i, st));
                    break;
                }
                staged_bytes += entry.data.len() + mvcc::events_size(&st.events);
                staged.push(st);
                if staged.len() >= MAX_RUN_ENTRIES || staged_bytes >= MAX_RUN_BYTES {
                    end = i + 1;
                    break;
                }
            }
            if failed.is_some() {
                tx.rollback();
                known_failed = failed;
                continue;
            }
            // The applied index goes in the same transaction as the changes.
            fail::fail_point!("apply_before_applied_index", |_| {
                crate::core::failpoints::crash()
            });
            if let Some(last) = run.get(end - 1) {
                storage::set_applied_index(&mut tx, &s, last.index);
            }
            tx.commit()?;
            for st in staged {
                self.finish_staged(st);
            }
            if let Some(last) = run.get(end - 1) {
                self.applied = last.index;
            }
            METRICS.applied.inc_by((end - start) as u64);
            // Events and answers leave with each commit, so what a run
            // holds in memory stays within the bounds above.
            self.finish_batch();
            start = end;
        }
        Ok(())
    }

    /// What a committed entry owes outside storage: lease clocks, watch
    /// events, the auth cache and tokens, the compactor, the proposer.
    fn finish_staged(&mut self, st: Staged) {
        if st.result.is_ok() {
            if let Some(op) = &st.op {
                match op {
                    Op::LeaseGrant(r) => self.lessor.granted(LeaseId(r.id), r.ttl),
                    Op::LeaseRevoke(r) => self.lessor.revoked(LeaseId(r.id)),
                    Op::LeaseKeepAlive(r) => {
                        self.lessor.renewed(LeaseId(r.id));
                    }
                    _ => {}
                }
                if op.auth_op().is_some() {
                    self.auth.invalidate();
                }
            }
            if !st.events.is_empty() {
                self.applied_events.push((st.revision, st.events));
            }
            match st.auth_effect {
                AuthEffect::None => {}
                AuthEffect::Assign { token, user } => self.auth.tokens.assign(token, user),
                AuthEffect::DropUser(user) => self.auth.tokens.drop_user(&user),
                AuthEffect::Clear => self.auth.tokens.clear(),
            }
            if let Some(Op::Compaction(c)) = &st.op {
                self.compact_after = Some(c.revision);
            }
        }
        if let Some(id) = st.reply_to {
            if let Some(reply) = self.proposals.remove(&id) {
                self.answers.push((reply, st.result));
            }
        }
    }
}

/// Most entries one apply transaction takes (see
/// [`RaftTask::apply_normal_run`]).
const MAX_RUN_ENTRIES: usize = 256;

/// Bytes of entries and their events ([`mvcc::events_size`]) after which
/// an apply transaction commits.
const MAX_RUN_BYTES: usize = 4 << 20;

/// One normal entry applied inside a run's transaction, with what it owes
/// once that transaction commits ([`RaftTask::finish_staged`]).
struct Staged {
    /// Its operation (None for an empty or malformed entry).
    op: Option<Op>,
    /// The answer.
    result: ProposalResult,
    /// Its events and their revision (for watchers).
    events: Vec<PbEvent>,
    /// That revision.
    revision: i64,
    /// Token changes of an auth operation.
    auth_effect: AuthEffect,
    /// The proposal id to answer, when this member proposed it.
    reply_to: Option<u64>,
    /// False for entries that reach no operation (empty, malformed): a
    /// failure there has nothing to undo.
    may_have_written: bool,
}

/// Applies one normal entry inside `tx` (`revs`: the counters before it,
/// moved past it on success). Writes nothing on failure only if the
/// caller drops `tx` then (see [`RaftTask::apply_normal_run`]).
fn stage(
    tx: &mut fjall::SingleWriterWriteTx<'_>,
    s: &Storage,
    entry: &Entry,
    revs: &mut Revisions,
    me: u64,
) -> Staged {
    let mut st = Staged {
        op: None,
        result: Ok(ApplyResponse::Done),
        events: Vec::new(),
        revision: 0,
        auth_effect: AuthEffect::None,
        reply_to: None,
        may_have_written: false,
    };
    let req = match decode_entry(&entry.data) {
        EntryData::Empty => return st,
        EntryData::Request(req) => req,
        EntryData::Malformed { id, origin, reason } => {
            // The same bytes fail the same way on every member: nothing
            // is written, the index moves on, the proposer is answered.
            tracing::warn!(index = entry.index, "malformed request entry: {reason}");
            st.result = Err(EtcdError::MalformedRequest(reason));
            st.reply_to = (origin == me).then_some(id);
            return st;
        }
    };
    st.reply_to = (req.origin == me).then_some(req.id);
    st.may_have_written = true;
    st.result = match req.op.as_ref().and_then(Op::auth_op) {
        Some(op) => {
            auth::apply::apply(tx, s, &op, &req.auth_user, entry.index).map(|(token, effect)| {
                st.auth_effect = effect;
                ApplyResponse::Auth {
                    token,
                    revision: revs.current,
                }
            })
        }
        None => match stale_auth(tx, s, req.auth_revision) {
            Err(e) => Err(e),
            Ok(()) => apply_op(tx, s, req.op.as_ref(), &mut st.events, revs),
        },
    };
    st.revision = revs.current;
    st.op = req.op;
    if st.reply_to.is_none() {
        // Nobody here waits for the answer (a range inside a Txn can be
        // large): keep only whether it succeeded.
        st.result = st.result.map(|_| ApplyResponse::Done);
    }
    st
}

/// etcd's apply-time check of the auth revision: a request checked
/// against users and roles that have changed since is refused (its
/// permissions may no longer hold). `checked_at` 0: auth was off or the
/// entry is internal.
fn stale_auth(
    tx: &fjall::SingleWriterWriteTx<'_>,
    s: &Storage,
    checked_at: u64,
) -> Result<(), EtcdError> {
    if checked_at == 0 {
        return Ok(());
    }
    let (enabled, current) = auth::flags(tx, s)?;
    if enabled && checked_at < current {
        return Err(EtcdError::AuthOldRevision);
    }
    Ok(())
}

/// Applies one operation inside `tx`.
fn apply_op(
    tx: &mut fjall::SingleWriterWriteTx<'_>,
    s: &Storage,
    op: Option<&Op>,
    events: &mut Vec<PbEvent>,
    revs: &mut Revisions,
) -> ProposalResult {
    let Some(op) = op else {
        return Ok(ApplyResponse::Done);
    };
    if let Op::Alarm(req) = op {
        return Ok(ApplyResponse::Alarms(alarm::apply(tx, s, req)?));
    }
    // etcd's applierV3Capped: while a NOSPACE alarm is active, whatever
    // would grow the store is refused on every member alike.
    let grows = match op {
        Op::Put(_) | Op::LeaseGrant(_) => true,
        Op::Txn(t) => alarm::txn_puts(t),
        _ => false,
    };
    if grows && alarm::nospace(&*tx, s)? {
        return Err(EtcdError::NoSpace);
    }
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
        // A member removed before its publish was applied (or an id that
        // never was one) gets no record back (etcd skips the attributes of
        // a removed member).
        let Some(v) = tx.get(&s.members, members::key(attrs.member_id))? else {
            return Err(EtcdError::MemberNotFound);
        };
        let mut member =
            PbMember::decode(v.as_ref()).map_err(|e| EtcdError::Internal(e.to_string()))?;
        member.name = attrs.name.clone();
        member.client_ur_ls = attrs.client_urls.clone();
        tx.insert(
            &s.members,
            members::key(attrs.member_id),
            member.encode_to_vec(),
        );
        // The first fingerprint a member publishes is the one it keeps.
        let pin = members::pin_key(attrs.member_id);
        if !attrs.peer_fingerprint.is_empty() && tx.get(&s.auth, &pin)?.is_none() {
            tx.insert(&s.auth, pin, attrs.peer_fingerprint.as_bytes());
        }
        return Ok(ApplyResponse::Done);
    }
    let mut a = Applier::with_revisions(tx, s, *revs);
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
                revision: a.revision(),
            }
        }
        Op::LeaseRevoke(r) => {
            a.lease_revoke(r.id)?;
            // The revision after the deletes of this entry (as etcd's
            // header), not whatever the store is at when the client is
            // answered.
            ApplyResponse::LeaseRevoke {
                revision: a.revision(),
            }
        }
        Op::LeaseKeepAlive(r) => ApplyResponse::LeaseKeepAlive {
            ttl: a.lease_ttl(r.id).unwrap_or(0),
        },
        // Auth operations are applied by `auth::apply` before this.
        _ => ApplyResponse::Done,
    };
    a.finish();
    *revs = a.revisions_after();
    *events = std::mem::take(&mut a.events);
    Ok(r)
}

/// Runs `work` on `rt`'s blocking pool and waits for it, driving `rt`'s
/// other tasks (the peer transport) meanwhile.
///
/// # Errors
/// `work`'s error; a panic inside it, as an error.
fn off_thread<T: Send + 'static>(
    rt: &Runtime,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    rt.block_on(rt.spawn_blocking(work))
        .map_err(|e| anyhow::anyhow!("{e}"))?
}
