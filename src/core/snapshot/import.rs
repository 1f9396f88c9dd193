//! An etcd snapshot file (made by kvd, or by etcd 3.4/3.5) into a fresh
//! member's state machine: keys with their whole kept history and
//! revisions, leases and the compact revision, as etcd's `mvcc` restore
//! reads them (etcd `mvcc/kvstore.go` `restore`). Members, alarms and auth
//! are not taken: a restore starts a new cluster.

use etcd_client::proto::{PbEvent, PbKeyValue};
use prost::Message as _;

use crate::core::mvcc::keys::{
    escape_key, lease_key, rev_key, CurrentRecord, EVENT_DELETE, EVENT_PUT, HIST_DELETE, HIST_PUT,
};
use crate::core::snapshot::bolt::{BoltReader, BucketRoot};
use crate::core::snapshot::{LeaseRecord, SnapshotError};
use crate::core::storage::{self, Storage};

/// What a restore brought in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// The store's revision after it (etcd: the newest revision in `key`,
    /// at least the compact revision).
    pub revision: i64,
    /// The compact revision (0 when never compacted).
    pub compact_revision: i64,
    /// Changes in the history.
    pub changes: u64,
    /// Keys live at `revision`.
    pub keys: u64,
    /// Leases.
    pub leases: u64,
}

/// The buckets a restore takes in.
const IMPORTED: [&[u8]; 6] = [
    b"auth",
    b"authRoles",
    b"authUsers",
    b"key",
    b"lease",
    b"meta",
];

/// Records written per storage transaction, at most.
const BATCH: usize = 10_000;
/// Bytes written per storage transaction, about.
const BATCH_BYTES: usize = 8 << 20;

/// Reads the buckets of `reader` into `s`, which must be empty; `progress`
/// is told the history changes written so far.
///
/// # Errors
/// [`SnapshotError::Corrupt`] for a record that does not decode (nothing
/// of `s` is then usable: the caller removes it); I/O and storage errors.
pub fn import(
    reader: &BoltReader,
    s: &Storage,
    progress: &mut dyn FnMut(u64),
) -> Result<Imported, SnapshotError> {
    let buckets = reader.buckets()?;
    // Every bucket is read, even those a restore leaves out, so that a
    // damaged page anywhere refuses the file before it is used.
    for (name, root) in &buckets {
        if !IMPORTED.contains(&name.as_slice()) {
            reader.for_each(root, &mut |_, _| Ok(()))?;
        }
    }
    let find = |name: &[u8]| buckets.iter().find(|(n, _)| n == name).map(|(_, r)| r);
    let mut out = Imported::default();
    // etcd's compaction: `scheduledCompactRev` is asked for, and
    // `finishedCompactRev` is how far its backend got; a file taken in
    // between still holds history kvd's compactor then removes.
    let mut finished = 0;
    if let Some(meta) = find(b"meta") {
        reader.for_each(meta, &mut |k, v| {
            if k == b"finishedCompactRev" || k == b"scheduledCompactRev" {
                let (main, _, _) = parse_revision(v)?;
                out.compact_revision = out.compact_revision.max(main);
                if k == b"finishedCompactRev" {
                    finished = main;
                }
            }
            Ok(())
        })?;
    }
    if let Some(key) = find(b"key") {
        history(reader, key, s, &mut out, progress)?;
    }
    out.revision = out.revision.max(out.compact_revision);
    if let Some(lease) = find(b"lease") {
        leases(reader, lease, s, &mut out)?;
    }
    attach_leases(s, &mut out)?;
    auth_records(reader, &find, s)?;
    let mut tx = s.db.write_tx();
    tx.insert(&s.meta, storage::META_REVISION, out.revision.to_be_bytes());
    if out.compact_revision > 0 {
        let compact = out.compact_revision.to_be_bytes();
        tx.insert(&s.meta, storage::META_COMPACT_REVISION, compact);
        // What the file's compaction finished needs no work; a member
        // started on it finishes the rest.
        tx.insert(&s.meta, storage::META_COMPACT_DONE, finished.to_be_bytes());
    }
    tx.commit().map_err(storage_error)?;
    Ok(out)
}

/// Users, roles and the auth flags (etcd's `auth`, `authUsers`,
/// `authRoles` buckets), each record checked to decode and to carry the
/// name it is stored under.
fn auth_records<'a>(
    reader: &BoltReader,
    find: &dyn Fn(&[u8]) -> Option<&'a BucketRoot>,
    s: &Storage,
) -> Result<(), SnapshotError> {
    use crate::core::auth::{self, pb::authpb};
    let mut batches = Batches::new(s);
    if let Some(bucket) = find(b"auth") {
        reader.for_each(bucket, &mut |k, v| {
            match k {
                b"authEnabled" => {
                    let on = v.first() == Some(&1);
                    batches
                        .tx(2)?
                        .insert(&s.auth, auth::KEY_ENABLED, [u8::from(on)]);
                }
                b"authRevision" if v.len() == 8 => {
                    batches.tx(8)?.insert(&s.auth, auth::KEY_REVISION, v);
                }
                b"authRevision" => {
                    return Err(SnapshotError::Corrupt(format!(
                        "authRevision of {} bytes",
                        v.len()
                    )))
                }
                _ => {}
            }
            Ok(())
        })?;
    }
    for (bucket, prefix) in [
        (&b"authUsers"[..], auth::USER_PREFIX),
        (b"authRoles", auth::ROLE_PREFIX),
    ] {
        let Some(root) = find(bucket) else {
            continue;
        };
        reader.for_each(root, &mut |k, v| {
            let name = if prefix == auth::USER_PREFIX {
                authpb::User::decode(v).map(|u| u.name)
            } else {
                authpb::Role::decode(v).map(|r| r.name)
            }
            .map_err(|e| SnapshotError::Corrupt(format!("an auth record: {e}")))?;
            if name != k || k.is_empty() {
                return Err(SnapshotError::Corrupt(format!(
                    "auth record {name:02x?} under {k:02x?}"
                )));
            }
            batches
                .tx(k.len() + v.len())?
                .insert(&s.auth, [prefix, k].concat(), v);
            Ok(())
        })?;
    }
    batches.commit()
}

fn storage_error(e: fjall::Error) -> SnapshotError {
    SnapshotError::Storage(e.to_string())
}

/// Writes in transactions of bounded size (a fjall transaction holds its
/// writes in memory until it commits), and keeps the memtables bounded: a
/// bulk load outruns fjall's background workers, which rotate a full
/// memtable only when they get to it (meanwhile it keeps growing), so each
/// keyspace's memtable is rotated here once it holds
/// [`storage::MEMTABLE_BYTES_BULK`], and writing waits while more than
/// [`MAX_SEALED`] sealed memtables of a keyspace wait for their flush.
struct Batches<'a> {
    s: &'a Storage,
    tx: Option<fjall::SingleWriterWriteTx<'a>>,
    entries: usize,
    bytes: usize,
    /// Bytes written to `kv`, `rev` and `hist` since their last rotation.
    unrotated: [u64; 3],
}

/// Sealed memtables per keyspace a bulk load lets wait for their flush.
const MAX_SEALED: usize = 2;
/// How long a bulk load waits for one flush before it gives up.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

impl<'a> Batches<'a> {
    fn new(s: &'a Storage) -> Self {
        Self {
            s,
            tx: None,
            entries: 0,
            bytes: 0,
            unrotated: [0; 3],
        }
    }

    /// The open transaction; `bytes` about to be written count towards its
    /// size, and a full one is committed first.
    fn tx(&mut self, bytes: usize) -> Result<&mut fjall::SingleWriterWriteTx<'a>, SnapshotError> {
        if self.entries >= BATCH || self.bytes >= BATCH_BYTES {
            self.commit()?;
        }
        self.entries += 1;
        self.bytes += bytes;
        Ok(self.tx.get_or_insert_with(|| self.s.db.write_tx()))
    }

    /// Counts `bytes` written to the history keyspaces (`kv`, `rev`, `hist`).
    fn wrote(&mut self, kv: usize, rev: usize, hist: usize) {
        for (n, b) in self.unrotated.iter_mut().zip([kv, rev, hist]) {
            *n += b as u64;
        }
    }

    fn commit(&mut self) -> Result<(), SnapshotError> {
        self.entries = 0;
        self.bytes = 0;
        if let Some(tx) = self.tx.take() {
            tx.commit().map_err(storage_error)?;
        }
        let keyspaces = [&self.s.kv, &self.s.rev, &self.s.hist];
        for (ks, n) in keyspaces.into_iter().zip(self.unrotated.iter_mut()) {
            let ks = ks.inner();
            if *n >= storage::MEMTABLE_BYTES_BULK {
                ks.rotate_memtable().map_err(storage_error)?;
                *n = 0;
            }
            let deadline = std::time::Instant::now() + FLUSH_WAIT;
            while ks.sealed_memtable_count() > MAX_SEALED {
                if std::time::Instant::now() > deadline {
                    return Err(SnapshotError::Storage(format!(
                        "the storage engine flushed nothing for {FLUSH_WAIT:?} (disk full?)"
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        Ok(())
    }
}

/// Parses etcd's revision key: main (8 bytes BE), `_`, sub (8 bytes BE),
/// and an optional `t` for a tombstone. Returns (main, sub, tombstone).
///
/// # Errors
/// [`SnapshotError::Corrupt`] for any other shape.
pub fn parse_revision(b: &[u8]) -> Result<(i64, i64, bool), SnapshotError> {
    let tombstone = match b.len() {
        17 => false,
        18 if b[17] == b't' => true,
        _ => {
            return Err(SnapshotError::Corrupt(format!(
                "revision key of {} bytes ({:02x?})",
                b.len(),
                &b[..b.len().min(18)]
            )))
        }
    };
    if b[8] != b'_' {
        return Err(SnapshotError::Corrupt(
            "revision key without its '_' separator".to_string(),
        ));
    }
    let main = storage::be_i64(&b[..8]);
    let sub = storage::be_i64(&b[9..17]);
    if main < 0 || sub < 0 {
        return Err(SnapshotError::Corrupt(format!(
            "negative revision {main}_{sub}"
        )));
    }
    Ok((main, sub, tombstone))
}

/// The `key` bucket into `rev`, `hist` and `kv`, in revision order.
fn history(
    reader: &BoltReader,
    bucket: &BucketRoot,
    s: &Storage,
    out: &mut Imported,
    progress: &mut dyn FnMut(u64),
) -> Result<(), SnapshotError> {
    let mut batches = Batches::new(s);
    reader.for_each(bucket, &mut |k, v| {
        let (main, sub, tombstone) = parse_revision(k)?;
        let mut kv = PbKeyValue::decode(v).map_err(|e| {
            SnapshotError::Corrupt(format!("the value at revision {main}_{sub}: {e}"))
        })?;
        if kv.key.is_empty() {
            return Err(SnapshotError::Corrupt(format!(
                "the value at revision {main}_{sub} has no key"
            )));
        }
        let (key_len, value_len) = (kv.key.len(), v.len());
        batches.wrote(
            if tombstone {
                key_len
            } else {
                key_len + value_len
            },
            value_len + 32,
            key_len + 20,
        );
        let tx = batches.tx(2 * value_len + 2 * key_len + 64)?;
        let rk = rev_key(main, sub);
        let mut hk = escape_key(&kv.key);
        hk.extend_from_slice(&rk);
        let event = if tombstone {
            tx.remove(&s.kv, kv.key.clone());
            tx.insert(&s.hist, hk, [HIST_DELETE]);
            kv = PbKeyValue {
                key: kv.key,
                mod_revision: main,
                ..Default::default()
            };
            PbEvent {
                r#type: EVENT_DELETE,
                kv: Some(kv),
                prev_kv: None,
            }
        } else {
            let record = CurrentRecord {
                create_revision: kv.create_revision,
                mod_revision: main,
                mod_sub: sub,
                version: kv.version,
                lease: kv.lease,
            };
            tx.insert(&s.kv, kv.key.clone(), record.encode_to_vec());
            tx.insert(&s.hist, hk, [HIST_PUT]);
            PbEvent {
                r#type: EVENT_PUT,
                kv: Some(kv),
                prev_kv: None,
            }
        };
        tx.insert(&s.rev, rk, event.encode_to_vec());
        out.revision = out.revision.max(main);
        out.changes += 1;
        if out.changes.is_multiple_of(BATCH as u64) {
            progress(out.changes);
        }
        Ok(())
    })?;
    batches.commit()?;
    progress(out.changes);
    Ok(())
}

fn leases(
    reader: &BoltReader,
    bucket: &BucketRoot,
    s: &Storage,
    out: &mut Imported,
) -> Result<(), SnapshotError> {
    let mut batches = Batches::new(s);
    reader.for_each(bucket, &mut |k, v| {
        let lease = LeaseRecord::decode(v)
            .map_err(|e| SnapshotError::Corrupt(format!("a lease record: {e}")))?;
        // Clients choose lease ids, negative ones included; 0 is "no lease".
        if k.len() != 8 || storage::be_i64(k) != lease.id || lease.id == 0 {
            return Err(SnapshotError::Corrupt(format!(
                "lease record {} under key {k:02x?}",
                lease.id
            )));
        }
        batches
            .tx(16)?
            .insert(&s.leases, k, lease.ttl.to_be_bytes());
        out.leases += 1;
        Ok(())
    })?;
    batches.commit()
}

/// Attaches the live keys to their leases (a key naming a lease the file
/// does not hold stays, unattached, as etcd's restore leaves it) and counts
/// them.
fn attach_leases(s: &Storage, out: &mut Imported) -> Result<(), SnapshotError> {
    let read = s.db.read_tx();
    let mut batches = Batches::new(s);
    for item in fjall::Readable::iter(&read, &s.kv) {
        let (k, v) = item.into_inner().map_err(storage_error)?;
        out.keys += 1;
        let kv = CurrentRecord::decode(v.as_ref())
            .map_err(|e| SnapshotError::Storage(format!("a key record just written: {e}")))?;
        if kv.lease != 0
            && fjall::Readable::get(&read, &s.leases, kv.lease.to_be_bytes())
                .map_err(storage_error)?
                .is_some()
        {
            batches
                .tx(k.len() + 8)?
                .insert(&s.lease_keys, lease_key(kv.lease, &k), []);
        }
    }
    batches.commit()
}
