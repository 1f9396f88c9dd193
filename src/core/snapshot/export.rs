//! A member's state as etcd's snapshot file: its buckets, filled from one
//! consistent storage snapshot (the `Maintenance.Snapshot` stream and
//! `kvd backup save`'s file).
//!
//! | bucket | key | value |
//! |---|---|---|
//! | `alarm` | `etcdserverpb.AlarmMember` | empty |
//! | `auth` | `authEnabled`, `authRevision` | `0`/`1`, revision (u64 BE) |
//! | `authRoles`, `authUsers` | role / user name | `authpb.Role` / `authpb.User` (bcrypt hash) |
//! | `cluster` | `clusterVersion` | `3.4.0` |
//! | `key` | revision (main BE, `_`, sub BE, `t` if deleted) | `mvccpb.KeyValue` |
//! | `lease` | lease id (i64 BE) | `leasepb.Lease` (ID, TTL) |
//! | `members` | member id (hex) | etcd's member JSON |
//! | `members_removed` | (empty) | |
//! | `meta` | `consistent_index`, `finishedCompactRev`, `scheduledCompactRev` | u64 BE, revision |
//!
//! The `key` bucket holds what etcd's own would after the same history and
//! compaction: every change above the compact revision, and at or below it
//! each key's newest change when that is a put (`hash::Kept`), however far
//! kvd's physical compaction has got. Memory: 16 bytes per key that
//! survives the compaction, plus one page per tree level.

use etcd_client::proto::{PbAlarmMember, PbEvent};
use fjall::Readable;
use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::core::alarm;
use crate::core::auth;
use crate::core::members;
use crate::core::mvcc::hash::{backend_record, kept_at_compaction};
use crate::core::mvcc::keys::rev_key;
use crate::core::mvcc::{leases, revisions};
use crate::core::snapshot::bolt::{self, Layout, PageSink, TreeWriter};
use crate::core::snapshot::{
    compact_rev_bytes, LeaseRecord, MemberJson, SnapshotError, BUCKETS, CLUSTER_VERSION,
};
use crate::core::storage::{self, Storage};

/// Writes the state `r` sees as an etcd snapshot file into `sink`: first
/// with `layout: None` into a [`bolt::PageCounter`] to plan, then with the
/// layout returned (see [`bolt::write_file`]).
///
/// # Errors
/// Storage errors, the sink's, and [`SnapshotError::Changed`] when `r` is
/// not the same snapshot in both passes.
pub fn export<R: Readable, S: PageSink>(
    r: &R,
    s: &Storage,
    sink: &mut S,
    layout: Option<&Layout>,
) -> Result<Layout, SnapshotError> {
    let revs = revisions(r, s)?;
    let kept = if revs.compacted > 0 {
        kept_at_compaction(r, s, revs.compacted, revs.current)?.by_compaction
    } else {
        Vec::new()
    };
    let applied = match r.get(&s.meta, storage::META_APPLIED_INDEX)? {
        Some(v) => storage::be_u64(&v),
        None => 0,
    };
    bolt::write_file(sink, &BUCKETS, layout, |i, tree| match BUCKETS[i] {
        b"alarm" => alarms(r, s, tree),
        b"auth" => {
            let (enabled, revision) = auth::flags(r, s)?;
            tree.put(b"authEnabled".to_vec(), vec![u8::from(enabled)])?;
            tree.put(b"authRevision".to_vec(), revision.to_be_bytes().to_vec())
        }
        // Users and roles as etcd stores them: name → authpb record (a
        // user's password is its bcrypt hash, never the password).
        b"authRoles" => auth_records(r, s, auth::ROLE_PREFIX, tree),
        b"authUsers" => auth_records(r, s, auth::USER_PREFIX, tree),
        b"cluster" => tree.put(b"clusterVersion".to_vec(), CLUSTER_VERSION.to_vec()),
        b"key" => key_bucket(r, s, &kept, revs.compacted, tree),
        b"lease" => {
            for (id, ttl) in leases(r, s)? {
                let lease = LeaseRecord {
                    id,
                    ttl,
                    remaining_ttl: 0,
                };
                tree.put(id.to_be_bytes().to_vec(), lease.encode_to_vec())?;
            }
            Ok(())
        }
        b"members" => {
            let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for m in members::list_in(r, s)? {
                let json = serde_json::to_vec(&MemberJson::from(&m))
                    .map_err(|e| SnapshotError::Storage(e.to_string()))?;
                records.push((format!("{:x}", m.id).into_bytes(), json));
            }
            records.sort();
            for (k, v) in records {
                tree.put(k, v)?;
            }
            Ok(())
        }
        b"meta" => {
            tree.put(b"consistent_index".to_vec(), applied.to_be_bytes().to_vec())?;
            if revs.compacted > 0 {
                let rev = compact_rev_bytes(revs.compacted);
                tree.put(b"finishedCompactRev".to_vec(), rev.clone())?;
                tree.put(b"scheduledCompactRev".to_vec(), rev)?;
            }
            Ok(())
        }
        _ => Ok(()),
    })
}

/// The records under `prefix` of the `auth` keyspace, keyed by name
/// (the keyspace's order is the names' byte order, as the tree needs).
fn auth_records<R: Readable, S: PageSink>(
    r: &R,
    s: &Storage,
    prefix: &[u8],
    tree: &mut TreeWriter<'_, S>,
) -> Result<(), SnapshotError> {
    for item in r.prefix(&s.auth, prefix) {
        let (k, v) = item
            .into_inner()
            .map_err(|e| SnapshotError::Storage(e.to_string()))?;
        tree.put(k[prefix.len()..].to_vec(), v.to_vec())?;
    }
    Ok(())
}

fn alarms<R: Readable, S: PageSink>(
    r: &R,
    s: &Storage,
    tree: &mut TreeWriter<'_, S>,
) -> Result<(), SnapshotError> {
    let mut keys: Vec<Vec<u8>> = alarm::list(r, s)?
        .iter()
        .map(PbAlarmMember::encode_to_vec)
        .collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        tree.put(k, Vec::new())?;
    }
    Ok(())
}

/// The `key` bucket: the kept changes at or below `compacted`, then every
/// change above it, in revision order.
fn key_bucket<R: Readable, S: PageSink>(
    r: &R,
    s: &Storage,
    kept: &[[u8; 16]],
    compacted: i64,
    tree: &mut TreeWriter<'_, S>,
) -> Result<(), SnapshotError> {
    let decode = |v: &[u8]| {
        PbEvent::decode(v)
            .map_err(|e| SnapshotError::Storage(format!("corrupt history record: {e}")))
    };
    for rk in kept {
        if let Some(v) = r.get(&s.rev, rk)? {
            let (k, v) = backend_record(rk, &decode(&v)?);
            tree.put(k, v)?;
        }
    }
    let start = rev_key(compacted.saturating_add(1), 0);
    for item in r.range(&s.rev, start.as_slice()..) {
        let (k, v) = item.into_inner()?;
        let mut rk = [0u8; 16];
        if k.len() != 16 {
            return Err(SnapshotError::Storage(format!(
                "history key of {} bytes",
                k.len()
            )));
        }
        rk.copy_from_slice(&k);
        let (k, v) = backend_record(&rk, &decode(&v)?);
        tree.put(k, v)?;
    }
    Ok(())
}

/// Bytes per message of a snapshot stream (etcd's `snapshotSendBufferSize`).
pub const CHUNK_BYTES: usize = 32 * 1024;

/// Streams the member's current state as an etcd snapshot, as etcd's
/// `Maintenance.Snapshot` does: `send(blob, remaining)` gets chunks of
/// [`CHUNK_BYTES`] with the bytes still to come after each, then the
/// sha256 of everything sent, with `remaining` 0. Both passes read one
/// storage snapshot, so the file is one point in time. Returns the
/// database's size, bytes.
///
/// # Errors
/// Storage errors and `send`'s ([`SnapshotError::Closed`] when the
/// receiver went away, which `closed` tells during the planning pass).
pub fn stream<F, C>(s: &Storage, send: F, closed: C) -> Result<u64, SnapshotError>
where
    F: FnMut(Vec<u8>, u64) -> Result<(), SnapshotError>,
    C: Fn() -> bool,
{
    let read = s.db.read_tx();
    let mut planner = Planner {
        counter: bolt::PageCounter::default(),
        closed,
    };
    let layout = export(&read, s, &mut planner, None)?;
    let mut sink = ChunkSink {
        send,
        buf: Vec::with_capacity(CHUNK_BYTES * 2),
        total: layout.bytes(),
        sent: 0,
        sha: Sha256::new(),
    };
    export(&read, s, &mut sink, Some(&layout))?;
    let ChunkSink {
        mut send, buf, sha, ..
    } = sink;
    if !buf.is_empty() {
        send(buf, 0)?;
    }
    send(sha.finalize().to_vec(), 0)?;
    Ok(layout.bytes())
}

/// The planning pass's sink: counts, and stops as soon as the receiver
/// went away (checked every 256 pages), so an abandoned stream does not
/// read the whole store first.
struct Planner<C> {
    counter: bolt::PageCounter,
    closed: C,
}

impl<C: Fn() -> bool> PageSink for Planner<C> {
    fn put(&mut self, page: &[u8]) -> Result<(), SnapshotError> {
        self.counter.put(page)?;
        if (self.counter.bytes / bolt::PAGE_SIZE as u64).is_multiple_of(256) && (self.closed)() {
            return Err(SnapshotError::Closed);
        }
        Ok(())
    }
}

/// Cuts pages into stream chunks and hashes them.
struct ChunkSink<F> {
    send: F,
    buf: Vec<u8>,
    total: u64,
    sent: u64,
    sha: Sha256,
}

impl<F> PageSink for ChunkSink<F>
where
    F: FnMut(Vec<u8>, u64) -> Result<(), SnapshotError>,
{
    fn put(&mut self, page: &[u8]) -> Result<(), SnapshotError> {
        self.sha.update(page);
        self.buf.extend_from_slice(page);
        while self.buf.len() >= CHUNK_BYTES {
            let rest = self.buf.split_off(CHUNK_BYTES);
            let chunk = std::mem::replace(&mut self.buf, rest);
            self.sent += chunk.len() as u64;
            (self.send)(chunk, self.total.saturating_sub(self.sent))?;
        }
        Ok(())
    }
}
