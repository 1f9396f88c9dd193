//! The layout version of a data dir, and the record `kv` holds per live key.
//!
//! - Format 1 (no `storage_format` key in `meta`): `kv` held each live key's
//!   whole `mvccpb.KeyValue`, a second copy of the value its last history
//!   record in `rev` already held.
//! - Format 2: `kv` holds a [`CurrentRecord`] pointing at that history
//!   record, so each value is stored once (DESIGN.md: "the current view
//!   points into history").
//!
//! Opening a format-1 data dir upgrades it in place ([`check`]); the upgrade
//! rewrites only `kv`, is idempotent (a format-1 record starts with the
//! `key` field's tag, a format-2 one never does), and records the new format
//! last, so a crash midway resumes it at the next start. A format this kvd
//! does not know (a newer kvd's) is refused.

use etcd_client::proto::{PbEvent, PbKeyValue};
use fjall::{PersistMode, Readable};
use prost::Message as _;

use crate::core::storage::{be_u64, Storage};

/// `meta` key: the layout of the keyspaces (u64 BE), written when the
/// database is created or upgraded. Each member's own: a Raft snapshot
/// carries the sender's to be checked, never stored.
pub const META_STORAGE_FORMAT: &[u8] = b"storage_format";

/// The layout this kvd writes and reads.
pub const STORAGE_FORMAT: u64 = 2;

/// `kv` records rewritten per transaction while upgrading.
const UPGRADE_BATCH: usize = 10_000;

/// First byte of a protobuf `mvccpb.KeyValue` with a key (field 1, bytes):
/// every format-1 `kv` record. A [`CurrentRecord`] starts with field 1 as a
/// varint (`0x08`).
const KEY_VALUE_TAG: u8 = 0x0A;

/// The `rev` keyspace key of (main, sub) revision: 16 bytes, big-endian.
pub fn rev_key(main: i64, sub: i64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&main.to_be_bytes());
    k[8..].copy_from_slice(&sub.to_be_bytes());
    k
}

/// The `kv` keyspace record of a live key: its counters and where its
/// current value lives in `rev` (the history record of its last put).
/// Physical compaction always keeps a live key's newest put, so the pointer
/// never dangles.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct CurrentRecord {
    /// The revision that created the key (etcd's `create_revision`).
    #[prost(int64, tag = "1")]
    pub create_revision: i64,
    /// The main revision of the key's last put (etcd's `mod_revision`).
    #[prost(int64, tag = "2")]
    pub mod_revision: i64,
    /// The sub revision of that put inside its main revision.
    #[prost(int64, tag = "3")]
    pub mod_sub: i64,
    /// Puts since the key was created (etcd's `version`, 1 at creation).
    #[prost(int64, tag = "4")]
    pub version: i64,
    /// The lease the key is attached to (0 = none).
    #[prost(int64, tag = "5")]
    pub lease: i64,
}

impl CurrentRecord {
    /// The `rev` key of the history record holding the current value.
    pub fn rev_key(&self) -> [u8; 16] {
        rev_key(self.mod_revision, self.mod_sub)
    }

    /// The key-value this record describes, with `value` (empty when the
    /// caller did not read it).
    pub fn to_kv(self, key: Vec<u8>, value: Vec<u8>) -> PbKeyValue {
        PbKeyValue {
            key,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value,
            lease: self.lease,
        }
    }
}

/// The format recorded in `s` (1 when none is: kvd before the key).
///
/// # Errors
/// A storage error.
pub fn recorded(s: &Storage) -> fjall::Result<u64> {
    Ok(s.meta.get(META_STORAGE_FORMAT)?.map_or(1, |v| be_u64(&v)))
}

/// Records [`STORAGE_FORMAT`] in a new database, upgrades a format-1 one in
/// place, and refuses any other.
///
/// # Errors
/// Storage errors; an [`std::io::ErrorKind::InvalidData`] error for an
/// unknown format or a format-1 record whose history record is missing.
pub(super) fn check(s: &Storage) -> fjall::Result<()> {
    if let Some(v) = s.meta.get(META_STORAGE_FORMAT)? {
        return match be_u64(&v) {
            STORAGE_FORMAT => Ok(()),
            other => Err(invalid(format!(
                "{} holds storage format {other}, and this kvd reads format {STORAGE_FORMAT}: \
                 run it with the kvd that wrote it",
                s.dir.display()
            ))),
        };
    }
    // No format recorded: a new database, or one of format 1.
    if s.meta.get(super::META_RESTORING)?.is_some() {
        // Its staged snapshot holds format-1 records, copied in when the
        // apply resumes: only the kvd that staged it can finish it.
        return Err(invalid(format!(
            "{} holds a Raft snapshot half applied by a kvd of storage format 1: \
             start that kvd once to finish it, then this one",
            s.dir.display()
        )));
    }
    if !s.kv.inner().is_empty()? {
        upgrade_from_1(s)?;
    }
    let mut tx = s.db.write_tx();
    tx.insert(&s.meta, META_STORAGE_FORMAT, STORAGE_FORMAT.to_be_bytes());
    tx.commit()?;
    s.db.persist(PersistMode::SyncAll)
}

fn invalid(message: String) -> fjall::Error {
    fjall::Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        message,
    ))
}

/// Rewrites every format-1 `kv` record as a [`CurrentRecord`], finding the
/// sub revision of the key's last put among the history records of its
/// mod revision.
fn upgrade_from_1(s: &Storage) -> fjall::Result<()> {
    tracing::info!(dir = %s.dir.display(), "upgrading the data dir to storage format {STORAGE_FORMAT}");
    let read = s.db.read_tx();
    let mut tx = s.db.write_tx();
    let (mut pending, mut upgraded) = (0usize, 0u64);
    for item in read.iter(&s.kv) {
        let (key, v) = item.into_inner()?;
        if v.first() != Some(&KEY_VALUE_TAG) {
            continue; // already upgraded before a crash
        }
        let kv = PbKeyValue::decode(v.as_ref())
            .map_err(|e| invalid(format!("a format-1 key record: {e}")))?;
        let start = rev_key(kv.mod_revision, 0);
        let end = rev_key(kv.mod_revision.saturating_add(1), 0);
        let mut sub = None;
        for item in read.range(&s.rev, start.as_slice()..end.as_slice()) {
            let (rk, ev) = item.into_inner()?;
            let event = PbEvent::decode(ev.as_ref())
                .map_err(|e| invalid(format!("a history record: {e}")))?;
            if event.kv.as_ref().is_some_and(|e| e.key == kv.key) && rk.len() == 16 {
                sub = Some(be_u64(&rk[8..]) as i64);
            }
        }
        let Some(mod_sub) = sub else {
            return Err(invalid(format!(
                "key {:?} has no history record at its revision {}",
                String::from_utf8_lossy(&kv.key),
                kv.mod_revision
            )));
        };
        let record = CurrentRecord {
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            mod_sub,
            version: kv.version,
            lease: kv.lease,
        };
        tx.insert(&s.kv, key, record.encode_to_vec());
        pending += 1;
        upgraded += 1;
        if pending >= UPGRADE_BATCH {
            tx.commit()?;
            tx = s.db.write_tx();
            pending = 0;
        }
    }
    tx.commit()?;
    tracing::info!(
        keys = upgraded,
        "storage format {STORAGE_FORMAT} upgrade done"
    );
    Ok(())
}
