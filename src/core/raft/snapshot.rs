//! Raft snapshots of the state machine: made on the leader from a fjall
//! snapshot, streamed to a follower on a QUIC stream of their own
//! (`core::transport`), staged there in a separate database, and applied
//! by the Raft task.
//!
//! The `eraftpb.Snapshot` travelling through raft-rs carries only the
//! metadata and an 8-byte token; the data never enters a Raft message, so a
//! large state never delays heartbeats. Stream format after the
//! `MsgSnapshot` frame: records `[keyspace u8][key len u32][key][value len
//! u32][value]`, ended by the byte `0xFF`. The first record is the sender's
//! storage format (`meta` key `storage_format`); a receiver refuses another
//! format (`storage::format`), whose `kv` records it could not read, before
//! staging anything. A kvd of format 1 checks nothing: in a rolling upgrade,
//! upgrade the followers first and the leader last.
//!
//! Applying is crash-safe: the `meta` key `restoring` holds the snapshot
//! metadata from before the state is replaced until the Raft log is reset;
//! a restart that finds it applies the staged snapshot again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fjall::{Database, KeyspaceCreateOptions, PersistMode, Readable};
use protobuf::Message as _;
use raft::eraftpb::{Message, SnapshotMetadata};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Mutex as AsyncMutex;

use crate::core::framing::{read_field, FrameError};
use crate::core::storage::format::{META_STORAGE_FORMAT, STORAGE_FORMAT};
use crate::core::storage::{self, Storage};

/// `meta` key present while a snapshot is being applied (value:
/// `eraftpb.SnapshotMetadata`).
pub use crate::core::storage::META_RESTORING;

/// The replicated keyspaces, in stream order (index = keyspace byte).
const STATE_KEYSPACES: [&str; 8] = [
    "kv",
    "rev",
    "hist",
    "members",
    "leases",
    "lease_keys",
    "meta",
    "auth",
];
/// Index of `meta` in [`STATE_KEYSPACES`].
const META: usize = 6;
/// `meta` keys that belong to the replicated state (the rest is the member's own).
const REPLICATED_META: [&[u8]; 4] = [
    storage::META_REVISION,
    storage::META_COMPACT_REVISION,
    storage::META_COMPACT_DONE,
    crate::core::alarm::META_ALARMS,
];
const END: u8 = 0xFF;
/// File written in a staging directory once its snapshot is complete.
const COMPLETE: &str = "complete";
/// Longest wait for the next record of an incoming snapshot; a sender
/// silent for longer loses the receive (and may send it again).
const RECORD_STALL: std::time::Duration = std::time::Duration::from_secs(30);
/// Bytes per write on the stream and per transaction when applying.
const CHUNK: usize = 1024 * 1024;

fn live<'a>(s: &'a Storage, name: &str) -> Option<&'a fjall::SingleWriterTxKeyspace> {
    match name {
        "kv" => Some(&s.kv),
        "rev" => Some(&s.rev),
        "hist" => Some(&s.hist),
        "members" => Some(&s.members),
        "leases" => Some(&s.leases),
        "lease_keys" => Some(&s.lease_keys),
        "meta" => Some(&s.meta),
        "auth" => Some(&s.auth),
        _ => None,
    }
}

/// Snapshots this member (as leader) has handed to raft-rs, by token.
#[derive(Clone)]
pub struct SnapshotSource {
    /// The database.
    storage: Storage,
    /// Open fjall snapshots by token; removed once streamed.
    open: Arc<Mutex<HashMap<u64, fjall::Snapshot>>>,
    /// Next token.
    next: Arc<AtomicU64>,
}

impl SnapshotSource {
    /// A source over `storage`.
    pub fn new(storage: Storage) -> Self {
        Self {
            storage,
            open: Arc::new(Mutex::new(HashMap::new())),
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Keeps `snapshot` for streaming; returns its token (the Raft
    /// snapshot's `data`).
    pub fn register(&self, snapshot: fjall::Snapshot) -> Vec<u8> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut open) = self.open.lock() {
            // Each follower in need gets a fresh one; keep only a few.
            if open.len() >= 8 {
                if let Some(oldest) = open.keys().min().copied() {
                    open.remove(&oldest);
                }
            }
            open.insert(token, snapshot);
        }
        token.to_be_bytes().to_vec()
    }

    /// Writes the state named by `m`'s snapshot token to `out`.
    ///
    /// # Errors
    /// An unknown token, storage or stream errors.
    pub async fn stream(&self, m: &Message, out: &mut quinn::SendStream) -> anyhow::Result<()> {
        let token = storage::be_u64(m.get_snapshot().get_data());
        let snapshot = self
            .open
            .lock()
            .ok()
            .and_then(|mut o| o.remove(&token))
            .ok_or_else(|| anyhow::anyhow!("snapshot token {token} is not open"))?;
        let mut buf = Vec::with_capacity(CHUNK + 4096);
        // First, the format of what follows (see `SnapshotReceiver::stage`).
        push_record(
            &mut buf,
            META,
            META_STORAGE_FORMAT,
            &STORAGE_FORMAT.to_be_bytes(),
        );
        for (i, name) in STATE_KEYSPACES.iter().enumerate() {
            let Some(ks) = live(&self.storage, name) else {
                continue;
            };
            for item in snapshot.iter(ks) {
                let (k, v) = item.into_inner()?;
                if *name == "meta" && !REPLICATED_META.contains(&k.as_ref()) {
                    continue;
                }
                push_record(&mut buf, i, &k, &v);
                if buf.len() >= CHUNK {
                    out.write_all(&buf).await?;
                    buf.clear();
                }
            }
        }
        buf.push(END);
        out.write_all(&buf).await?;
        Ok(())
    }
}

/// Receives one snapshot at a time into a staging database under the data dir.
#[derive(Clone)]
pub struct SnapshotReceiver {
    /// The staging root (`<data-dir>/snapshot.staging`).
    dir: PathBuf,
    /// One receive at a time.
    busy: Arc<AsyncMutex<()>>,
    /// Longest wait for the next record ([`RECORD_STALL`]).
    stall: std::time::Duration,
}

impl SnapshotReceiver {
    /// A receiver staging under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: staging_dir(data_dir),
            busy: Arc::new(AsyncMutex::new(())),
            stall: RECORD_STALL,
        }
    }

    /// Reads the state that follows a `MsgSnapshot` frame into the staging
    /// database and syncs it; the caller then steps `m` into Raft.
    ///
    /// # Errors
    /// Stream, format or storage errors (the staging area is then discarded).
    pub async fn receive<R: AsyncRead + Unpin>(
        &self,
        m: &Message,
        input: &mut R,
    ) -> anyhow::Result<()> {
        let _guard = self.busy.lock().await;
        let meta = m.get_snapshot().get_metadata();
        let index = meta.index;
        tracing::info!(
            from = format_args!("{:x}", m.from),
            index,
            "receiving snapshot"
        );
        let dir = self.dir.join(staging_name(meta));
        if dir.join(COMPLETE).exists() {
            // Already staged (the leader sent it again before this member
            // applied it): the staged copy serves, possibly being applied now.
            tracing::debug!(index, "snapshot already staged");
            return Ok(());
        }
        let _ = std::fs::remove_dir_all(&dir);
        match self.stage(m, input, &dir).await {
            Ok(records) => {
                crate::core::metrics::METRICS.snapshot_received.inc();
                tracing::info!(index, records, "snapshot staged");
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Stages the stream in `dir`; returns how many records it held. The
    /// first record must name the sender's storage format, and another
    /// format than this member's is refused before anything is staged (its
    /// `kv` records would not decode here; a sender of format 1 names none).
    async fn stage<R: AsyncRead + Unpin>(
        &self,
        m: &Message,
        input: &mut R,
        dir: &Path,
    ) -> anyhow::Result<u64> {
        let format = match read_record(input).await? {
            Some((kind, k, v)) if kind as usize == META && k == META_STORAGE_FORMAT => {
                storage::be_u64(&v)
            }
            _ => 1,
        };
        if format != STORAGE_FORMAT {
            anyhow::bail!(
                "snapshot from member {:x} is in storage format {format}, this member reads format {STORAGE_FORMAT}",
                m.from
            );
        }
        let db = Database::builder(dir).manual_journal_persist(true).open()?;
        let mut handles = Vec::new();
        for name in STATE_KEYSPACES {
            handles.push(db.keyspace(name, KeyspaceCreateOptions::default)?);
        }
        let mut batch = db.batch();
        let mut pending = 0usize;
        let mut records = 0u64;
        // A sender that stops sending would hold the one receive slot.
        let stall = self.stall;
        let stalled =
            |_| anyhow::anyhow!("snapshot from member {:x} stalled for {stall:?}", m.from);
        while let Some((kind, k, v)) = tokio::time::timeout(stall, read_record(input))
            .await
            .map_err(stalled)??
        {
            let Some(ks) = handles.get(kind as usize) else {
                return Err(FrameError::UnknownKeyspace(kind).into());
            };
            // Only the replicated part of `meta` travels; a sender cannot
            // overwrite this member's own identity.
            if STATE_KEYSPACES[kind as usize] == "meta" && !REPLICATED_META.contains(&k.as_slice())
            {
                continue;
            }
            pending += k.len() + v.len();
            batch.insert(ks, k, v);
            records += 1;
            if pending >= CHUNK {
                batch.commit()?;
                batch = db.batch();
                pending = 0;
            }
        }
        batch.commit()?;
        db.persist(PersistMode::SyncAll)?;
        drop(db);
        std::fs::write(dir.join(COMPLETE), b"")?;
        Ok(records)
    }
}

/// Appends one stream record (`[keyspace][key len][key][value len][value]`,
/// lengths u32 BE) to `buf`; [`read_record`] reads it back.
fn push_record(buf: &mut Vec<u8>, keyspace: usize, k: &[u8], v: &[u8]) {
    buf.push(keyspace as u8);
    buf.extend_from_slice(&(k.len() as u32).to_be_bytes());
    buf.extend_from_slice(k);
    buf.extend_from_slice(&(v.len() as u32).to_be_bytes());
    buf.extend_from_slice(v);
}

/// Largest key or value in a snapshot record, bytes. Values are bounded by
/// `--max-request-bytes` when written, and members of one cluster may run
/// with different limits, so this is generous; a record's buffer grows only
/// as its bytes arrive (see `core::framing::read_field`).
pub const MAX_RECORD_FIELD: usize = 256 * 1024 * 1024;

/// Reads one record of a snapshot stream: `(keyspace index, key, value)`,
/// or `None` at the end marker. The keyspace index is returned unchecked.
///
/// # Errors
/// [`FrameError`] for a truncated stream or an oversized field.
pub async fn read_record<R: AsyncRead + Unpin>(
    input: &mut R,
) -> Result<Option<(u8, Vec<u8>, Vec<u8>)>, FrameError> {
    let mut kind = [0u8; 1];
    input.read_exact(&mut kind).await?;
    if kind[0] == END {
        return Ok(None);
    }
    let truncated = || FrameError::Truncated(std::io::ErrorKind::UnexpectedEof.into());
    let k = read_field(input, MAX_RECORD_FIELD)
        .await?
        .ok_or_else(truncated)?;
    let v = read_field(input, MAX_RECORD_FIELD)
        .await?
        .ok_or_else(truncated)?;
    Ok(Some((kind[0], k, v)))
}

/// The staging directory of one snapshot, under the staging root: each
/// snapshot has its own, so a newer one arriving never disturbs one being
/// applied.
fn staging_name(meta: &SnapshotMetadata) -> String {
    format!("{}-{}", meta.index, meta.term)
}

/// The staging root under a data dir.
pub fn staging_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshot.staging")
}

/// Replaces the replicated state with the staged snapshot and records
/// `meta` as applied (the caller then resets the Raft log). Runs on the
/// Raft task.
///
/// # Errors
/// A missing or unreadable staging database, storage errors.
pub fn apply_staged(s: &Storage, data_dir: &Path, meta: &SnapshotMetadata) -> anyhow::Result<()> {
    // Only a snapshot received whole replaces the state (opening a missing
    // staging database would create an empty one).
    let dir = staging_dir(data_dir).join(staging_name(meta));
    if !dir.join(COMPLETE).exists() {
        anyhow::bail!(
            "snapshot {} (term {}) is not staged here; the state is left as it was",
            meta.index,
            meta.term
        );
    }
    let mut tx = s.db.write_tx();
    tx.insert(&s.meta, META_RESTORING, meta.write_to_bytes()?);
    tx.commit()?;
    s.sync()?;
    let staged = Database::builder(&dir).open()?;
    for name in STATE_KEYSPACES {
        let Some(ks) = live(s, name) else {
            continue;
        };
        fail::fail_point!("snapshot_apply_during", name == "hist", |_| {
            crate::core::failpoints::crash()
        });
        // Clear this member's copy of the replicated state.
        let mut tx = s.db.write_tx();
        let mut n = 0;
        for item in s.db.read_tx().iter(ks) {
            let (k, _) = item.into_inner()?;
            if name == "meta" && !REPLICATED_META.contains(&k.as_ref()) {
                continue;
            }
            tx.remove(ks, k);
            n += 1;
            if n % 10_000 == 0 {
                tx.commit()?;
                tx = s.db.write_tx();
            }
        }
        tx.commit()?;
        let src = staged.keyspace(name, KeyspaceCreateOptions::default)?;
        let mut tx = s.db.write_tx();
        let mut bytes = 0;
        for item in src.iter() {
            let (k, v) = item.into_inner()?;
            bytes += k.len() + v.len();
            tx.insert(ks, k, v);
            if bytes >= CHUNK {
                tx.commit()?;
                tx = s.db.write_tx();
                bytes = 0;
            }
        }
        tx.commit()?;
    }
    let mut tx = s.db.write_tx();
    storage::set_applied_index(&mut tx, s, meta.index);
    tx.commit()?;
    Ok(())
}

/// Marks a snapshot apply finished (after the Raft log was reset).
///
/// # Errors
/// Storage errors.
pub fn finish_restore(s: &Storage, data_dir: &Path, applied: u64) -> anyhow::Result<()> {
    let mut tx = s.db.write_tx();
    tx.remove(&s.meta, META_RESTORING);
    tx.commit()?;
    s.sync()?;
    // Staged snapshots up to this one are spent; a newer one may be arriving.
    if let Ok(entries) = std::fs::read_dir(staging_dir(data_dir)) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let index = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|i| i.parse::<u64>().ok());
            if index.is_some_and(|i| i <= applied) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(())
}

/// The metadata of a snapshot apply a crash interrupted, if any.
///
/// # Errors
/// Storage or decoding errors.
pub fn interrupted_restore(s: &Storage) -> anyhow::Result<Option<SnapshotMetadata>> {
    match s.meta.get(META_RESTORING)? {
        Some(b) => Ok(Some(SnapshotMetadata::parse_from_bytes(&b)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn record(keyspace: &str, k: &[u8], v: &[u8]) -> Vec<u8> {
        let kind = STATE_KEYSPACES
            .iter()
            .position(|n| *n == keyspace)
            .expect("keyspace");
        let mut out = Vec::new();
        push_record(&mut out, kind, k, v);
        out
    }

    fn snapshot_message(index: u64) -> Message {
        let mut m = Message {
            from: 2,
            ..Default::default()
        };
        m.mut_snapshot().mut_metadata().index = index;
        m.mut_snapshot().mut_metadata().term = 3;
        m
    }

    #[tokio::test]
    async fn a_snapshot_in_another_storage_format_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let receiver = SnapshotReceiver::new(dir.path());
        let kv = record("kv", b"k", b"a whole KeyValue");
        // A sender of format 1 names no format.
        let mut old = kv.clone();
        old.push(END);
        let err = receiver
            .receive(&snapshot_message(10), &mut old.as_slice())
            .await
            .expect_err("format 1 staged");
        assert!(err.to_string().contains("storage format 1"), "{err}");
        assert!(!staging_dir(dir.path()).join("10-3").exists());
        // The same state from a sender of this format is staged.
        let mut new = record("meta", META_STORAGE_FORMAT, &STORAGE_FORMAT.to_be_bytes());
        new.extend_from_slice(&kv);
        new.push(END);
        receiver
            .receive(&snapshot_message(11), &mut new.as_slice())
            .await
            .expect("staged");
        assert!(staging_dir(dir.path()).join("11-3").join(COMPLETE).exists());
    }

    /// A snapshot that was never staged (or not wholly) leaves the state
    /// alone instead of replacing it with an empty database.
    #[test]
    fn applying_a_snapshot_that_is_not_staged_changes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let s = Storage::open(&data).expect("open");
        s.kv.inner().insert(b"k", b"v").expect("insert");
        let meta = snapshot_message(50).get_snapshot().get_metadata().clone();
        let err = apply_staged(&s, dir.path(), &meta).expect_err("applied");
        assert!(err.to_string().contains("not staged"), "{err}");
        // A staging directory without its completion mark is not staged.
        std::fs::create_dir_all(staging_dir(dir.path()).join("50-3")).expect("mkdir");
        assert!(apply_staged(&s, dir.path(), &meta).is_err());
        assert!(s.kv.get(b"k").expect("get").is_some());
        assert!(interrupted_restore(&s).expect("meta").is_none());
    }

    /// A sender that goes silent mid-snapshot loses the receive slot.
    #[tokio::test]
    async fn a_stalled_snapshot_gives_up() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut receiver = SnapshotReceiver::new(dir.path());
        receiver.stall = std::time::Duration::from_millis(200);
        let (mut tx, mut rx) = tokio::io::duplex(1024);
        let head = record("meta", META_STORAGE_FORMAT, &STORAGE_FORMAT.to_be_bytes());
        tokio::io::AsyncWriteExt::write_all(&mut tx, &head)
            .await
            .expect("write");
        let err = receiver
            .receive(&snapshot_message(12), &mut rx)
            .await
            .expect_err("a silent sender staged a snapshot");
        assert!(err.to_string().contains("stalled"), "{err}");
        assert!(!staging_dir(dir.path()).join("12-3").exists());
        drop(tx);
    }
}
