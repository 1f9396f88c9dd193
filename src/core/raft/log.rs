//! The Raft log and Raft state on fjall: raft-rs's `Storage` trait.
//!
//! Only the Raft task owns a [`RaftLog`] (inside its `RawNode`); it appends
//! entries and hard state with [`RaftLog::append`] / [`RaftLog::set_hard_state`]
//! and makes them durable with one `Storage::sync` per Ready.

use fjall::Readable;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::core::raft::snapshot::SnapshotSource;
use crate::core::storage::{self, Storage};

const HARD_STATE: &[u8] = b"hard_state";
const CONF_STATE: &[u8] = b"conf_state";
const SNAPSHOT_META: &[u8] = b"snapshot_meta";

/// Log entries removed by one [`RaftLog::compact_applied`] call (one per
/// Ready). Removing a whole `--snapshot-count` in one batch held the Raft
/// thread for 10–30 ms (10,000 memtable inserts and the page faults of a
/// batch that size), a stall every client's request waited behind; a step
/// of 1,024 costs about a millisecond.
pub const COMPACT_STEP: u64 = 1_024;
/// Entries kept behind the applied index for slow followers, at most
/// (etcd's `SnapshotCatchUpEntries`).
const CATCH_UP_ENTRIES: u64 = 5_000;

/// raft-rs `Storage` over the `raft_log` and `raft_state` keyspaces, with the
/// terms of the live log cached in memory (raft-rs asks for terms often).
pub struct RaftLog {
    /// The database.
    storage: Storage,
    /// Last persisted (or about to be persisted) hard state.
    hard_state: HardState,
    /// Current membership configuration.
    conf_state: ConfState,
    /// Where a log compaction under way stops (0: none under way).
    compact_to: u64,
    /// Index and term of the entry the log starts after (0, 0 for a fresh log).
    snapshot_index: u64,
    /// Term of `snapshot_index`.
    snapshot_term: u64,
    /// `terms[i]` is the term of entry `snapshot_index + 1 + i`.
    terms: Vec<u64>,
    /// Where snapshots made for followers are kept until streamed.
    source: SnapshotSource,
}

impl RaftLog {
    /// Loads the log from storage; `None` when nothing was ever stored.
    ///
    /// # Errors
    /// A storage or decoding error.
    pub fn load(storage: Storage, source: SnapshotSource) -> anyhow::Result<Option<Self>> {
        let Some(cs) = storage.raft_state.get(CONF_STATE)? else {
            return Ok(None);
        };
        let conf_state = ConfState::parse_from_bytes(&cs)?;
        let hard_state = match storage.raft_state.get(HARD_STATE)? {
            Some(b) => HardState::parse_from_bytes(&b)?,
            None => HardState::default(),
        };
        let (snapshot_index, snapshot_term) = match storage.raft_state.get(SNAPSHOT_META)? {
            Some(b) => {
                let m = SnapshotMetadata::parse_from_bytes(&b)?;
                (m.index, m.term)
            }
            None => (0, 0),
        };
        let mut terms = Vec::new();
        let start = (snapshot_index + 1).to_be_bytes();
        for item in storage.raft_log.inner().range(start..) {
            let (k, v) = item.into_inner()?;
            let index = crate::core::storage::be_u64(&k);
            let e = Entry::parse_from_bytes(&v)?;
            if index != snapshot_index + 1 + terms.len() as u64 {
                anyhow::bail!("raft log has a gap at index {index}");
            }
            terms.push(e.term);
        }
        Ok(Some(Self {
            storage,
            hard_state,
            conf_state,
            compact_to: 0,
            snapshot_index,
            snapshot_term,
            terms,
            source,
        }))
    }

    /// Creates the log of a new member, durably (synced before returning).
    ///
    /// A member bootstrapping a new cluster passes one committed
    /// `ConfChangeAddNode` entry (term 1) per initial member, as etcd's
    /// `StartNode` does, so that the initial membership is in the log and a
    /// member joining later learns it by replaying the log. A member
    /// joining an existing cluster passes none and starts empty.
    ///
    /// # Errors
    /// A storage error.
    pub fn bootstrap(
        storage: Storage,
        source: SnapshotSource,
        initial: Vec<Entry>,
    ) -> anyhow::Result<Self> {
        let conf_state = ConfState::default();
        let hard_state = HardState {
            term: if initial.is_empty() { 0 } else { 1 },
            commit: initial.len() as u64,
            ..Default::default()
        };
        let mut tx = storage.db.write_tx();
        tx.insert(
            &storage.raft_state,
            CONF_STATE,
            conf_state.write_to_bytes()?,
        );
        tx.insert(
            &storage.raft_state,
            HARD_STATE,
            hard_state.write_to_bytes()?,
        );
        for e in &initial {
            tx.insert(
                &storage.raft_log,
                e.index.to_be_bytes(),
                e.write_to_bytes()?,
            );
        }
        tx.commit()?;
        storage.sync()?;
        Ok(Self {
            storage,
            hard_state,
            conf_state,
            compact_to: 0,
            snapshot_index: 0,
            snapshot_term: 0,
            terms: initial.iter().map(|e| e.term).collect(),
            source,
        })
    }

    /// The first index still in the log minus one (the last compacted index).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot_index
    }

    /// Compacts the log behind the applied index (a log index): once more
    /// than `snapshot_count` + the catch-up entries (`snapshot_count`, at
    /// most 5,000) are applied past its start, the log is cut back to the
    /// catch-up entries, [`COMPACT_STEP`] entries per call. Followers that
    /// need older entries get a snapshot.
    ///
    /// # Errors
    /// A storage or encoding error.
    pub fn compact_applied(&mut self, applied: u64, snapshot_count: u64) -> anyhow::Result<()> {
        let keep = snapshot_count.min(CATCH_UP_ENTRIES);
        if applied > self.snapshot_index + snapshot_count + keep {
            self.compact_to = self.compact_to.max(applied - keep);
        }
        if self.compact_to > self.snapshot_index {
            self.compact(self.compact_to.min(self.snapshot_index + COMPACT_STEP))?;
            if self.snapshot_index == self.compact_to {
                tracing::debug!(to = self.compact_to, "compacted raft log");
            }
        }
        Ok(())
    }

    /// Drops the log up to and including `to` (which must be applied and
    /// persisted).
    ///
    /// # Errors
    /// A storage or encoding error.
    fn compact(&mut self, to: u64) -> anyhow::Result<()> {
        if to <= self.snapshot_index || to > self.last_index_now() {
            return Ok(());
        }
        let term = self.terms[(to - self.snapshot_index - 1) as usize];
        let mut batch = self.storage.db.inner().batch();
        let log = self.storage.raft_log.inner();
        for index in (self.snapshot_index + 1)..=to {
            batch.remove(log, index.to_be_bytes());
        }
        let meta = SnapshotMetadata {
            index: to,
            term,
            ..Default::default()
        };
        batch.insert(
            self.storage.raft_state.inner(),
            SNAPSHOT_META,
            meta.write_to_bytes()?,
        );
        batch.commit()?;
        self.terms.drain(..(to - self.snapshot_index) as usize);
        self.snapshot_index = to;
        self.snapshot_term = term;
        Ok(())
    }

    /// Resets the log to start after an applied snapshot: every entry goes,
    /// the conf state and hard state follow the snapshot. Not durable until
    /// `Storage::sync`.
    ///
    /// # Errors
    /// A storage or encoding error.
    pub fn apply_snapshot(&mut self, meta: &SnapshotMetadata) -> anyhow::Result<()> {
        let mut batch = self.storage.db.inner().batch();
        let log = self.storage.raft_log.inner();
        for item in log.iter() {
            let k = item.key()?;
            batch.remove(log, k);
        }
        let state = self.storage.raft_state.inner();
        let stored = SnapshotMetadata {
            index: meta.index,
            term: meta.term,
            ..Default::default()
        };
        batch.insert(state, SNAPSHOT_META, stored.write_to_bytes()?);
        batch.insert(state, CONF_STATE, meta.get_conf_state().write_to_bytes()?);
        let mut hs = self.hard_state.clone();
        hs.commit = hs.commit.max(meta.index);
        hs.term = hs.term.max(meta.term);
        batch.insert(state, HARD_STATE, hs.write_to_bytes()?);
        batch.commit()?;
        self.hard_state = hs;
        self.conf_state = meta.get_conf_state().clone();
        self.snapshot_index = meta.index;
        self.snapshot_term = meta.term;
        self.terms.clear();
        Ok(())
    }

    /// The last log index (the snapshot index for an empty log).
    pub fn last_index_now(&self) -> u64 {
        self.snapshot_index + self.terms.len() as u64
    }

    /// The hard state as last set.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Raises the hard state's commit index to at least `commit` (recovery:
    /// the applied index may be durable ahead of the hard state that was
    /// written after it in the same Ready).
    ///
    /// # Errors
    /// A storage error.
    pub fn ensure_commit(&mut self, commit: u64) -> anyhow::Result<()> {
        if self.hard_state.commit < commit {
            let mut hs = self.hard_state.clone();
            hs.commit = commit;
            self.set_hard_state(&hs)?;
        }
        Ok(())
    }

    /// Appends `entries`, dropping any conflicting suffix of the log (raft-rs
    /// may overwrite uncommitted entries). Not durable until `Storage::sync`.
    ///
    /// # Errors
    /// A storage or encoding error.
    pub fn append(&mut self, entries: &[Entry]) -> anyhow::Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.snapshot_index {
            anyhow::bail!(
                "append at index {} overlaps the snapshot at {}",
                first.index,
                self.snapshot_index
            );
        }
        let old_last = self.last_index_now();
        let mut batch = self.storage.db.inner().batch();
        let log = self.storage.raft_log.inner();
        for e in entries {
            batch.insert(log, e.index.to_be_bytes(), e.write_to_bytes()?);
        }
        let new_last = entries[entries.len() - 1].index;
        for stale in (new_last + 1)..=old_last {
            batch.remove(log, stale.to_be_bytes());
        }
        batch.commit()?;
        self.terms
            .truncate((first.index - self.snapshot_index - 1) as usize);
        self.terms.extend(entries.iter().map(|e| e.term));
        Ok(())
    }

    /// Records a new hard state. Not durable until `Storage::sync`.
    ///
    /// # Errors
    /// A storage or encoding error.
    pub fn set_hard_state(&mut self, hs: &HardState) -> anyhow::Result<()> {
        self.storage
            .raft_state
            .inner()
            .insert(HARD_STATE, hs.write_to_bytes()?)?;
        self.hard_state = hs.clone();
        Ok(())
    }

    /// Records a new membership configuration (after a conf change applied).
    ///
    /// # Errors
    /// A storage or encoding error.
    pub fn set_conf_state(&mut self, cs: &ConfState) -> anyhow::Result<()> {
        self.storage
            .raft_state
            .inner()
            .insert(CONF_STATE, cs.write_to_bytes()?)?;
        self.conf_state = cs.clone();
        Ok(())
    }

    /// The current membership configuration.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }
}

fn store_err(e: fjall::Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snapshot_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index_now() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let snapshot = self.storage.db.read_tx();
        // Reserve for what is asked, not for a long tail a size limit cuts.
        let mut out = Vec::with_capacity(((high - low) as usize).min(1024));
        let mut size = 0u64;
        for item in snapshot.range(
            &self.storage.raft_log,
            low.to_be_bytes()..high.to_be_bytes(),
        ) {
            let (_, v) = item.into_inner().map_err(store_err)?;
            let e = Entry::parse_from_bytes(&v).map_err(raft::Error::CodecError)?;
            size += u64::from(e.compute_size());
            // raft-rs's rule (util::limit_size): always at least one entry.
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e);
        }
        if out.is_empty() && low < high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.snapshot_index {
            return Ok(self.snapshot_term);
        }
        if idx < self.snapshot_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.terms.get((idx - self.snapshot_index - 1) as usize) {
            Some(t) => Ok(*t),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_now())
    }

    /// A snapshot of the state machine at its applied index: metadata plus
    /// a token; the data is streamed by the transport (`core::raft::snapshot`).
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let snap = self.storage.db.read_tx();
        let applied = snap
            .get(&self.storage.meta, storage::META_APPLIED_INDEX)
            .map_err(store_err)?
            .map_or(0, |v| storage::be_u64(&v));
        if applied < request_index || applied < self.snapshot_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let term = self.term(applied)?;
        let mut out = Snapshot::default();
        out.set_data(self.source.register(snap).into());
        let meta = out.mut_metadata();
        meta.index = applied;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        Ok(out)
    }
}
