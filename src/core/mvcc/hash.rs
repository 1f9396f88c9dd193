//! `HashKV` and `Hash`: checksums that let operators compare members.
//!
//! [`hash_kv`] is etcd's `HashByRev` (mvcc `kvstore.go`): a CRC-32C
//! (Castagnoli) of the bucket name `key`, then every change with a revision
//! in (compact revision, rev] in revision order, each fed as etcd's backend
//! stores it (key: main revision, `_`, sub revision, both 8 bytes
//! big-endian, plus `t` for a deletion; value: the `mvccpb.KeyValue`, only
//! the key for a deletion), preceded by the changes at or below the compact
//! revision that a read at `rev` still sees (the newest put of each key that
//! changed no more before `rev`). It depends only on the replicated history,
//! not on how far physical compaction has got, so every member at the same
//! revision answers the same hash.
//!
//! [`hash_backend`] is kvd's `Hash`: a CRC-32C over every replicated
//! keyspace (name, then each key and value), like etcd's hash of its whole
//! bbolt file; it can differ between members while physical compaction is
//! under way on one of them.

use etcd_client::proto::{PbEvent, PbKeyValue};
use fjall::Readable;
use prost::Message as _;

use crate::core::alarm;
use crate::core::errors::EtcdError;
use crate::core::mvcc::keys::{rev_key, split_hist_key, EVENT_DELETE, HIST_PUT};
use crate::core::mvcc::read::revisions;
use crate::core::storage::{self, Storage};

/// What `HashKV` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    /// The CRC-32C.
    pub hash: u32,
    /// The compact revision (-1 when never compacted, as etcd answers).
    pub compact_revision: i64,
    /// The store's current revision (the response header's).
    pub current: i64,
    /// The revision hashed up to.
    pub revision: i64,
}

/// etcd's `HashByRev` at main revision `rev` (0 = the current revision).
///
/// # Errors
/// [`EtcdError::Compacted`] for `rev` at or below the compact revision,
/// [`EtcdError::FutureRevision`] above the current one; storage errors.
pub fn hash_kv<R: Readable>(r: &R, s: &Storage, rev: i64) -> Result<KvHash, EtcdError> {
    let revs = revisions(r, s)?;
    if rev > 0 && rev <= revs.compacted {
        return Err(EtcdError::Compacted);
    }
    if rev > revs.current {
        return Err(EtcdError::FutureRevision);
    }
    let rev = if rev <= 0 { revs.current } else { rev };
    let mut crc = crc32c::crc32c(b"key");
    if revs.compacted > 0 {
        let kept = kept_at_compaction(r, s, revs.compacted, rev)?;
        let kept = if kept.any_live {
            kept.by_read
        } else {
            kept.by_compaction
        };
        for rk in kept {
            let Some(v) = r.get(&s.rev, rk)? else {
                continue;
            };
            let event = PbEvent::decode(v.as_ref())
                .map_err(|e| EtcdError::Internal(format!("corrupt history record: {e}")))?;
            crc = feed(crc, &rk, &event);
        }
    }
    let start = rev_key(revs.compacted + 1, 0);
    let end = rev_key(rev.saturating_add(1), 0);
    for item in r.range(&s.rev, start.as_slice()..end.as_slice()) {
        let (k, v) = item.into_inner()?;
        let event = PbEvent::decode(v.as_ref())
            .map_err(|e| EtcdError::Internal(format!("corrupt history record: {e}")))?;
        let mut rk = [0u8; 16];
        if k.len() == 16 {
            rk.copy_from_slice(&k);
        }
        crc = feed(crc, &rk, &event);
    }
    Ok(KvHash {
        hash: crc,
        compact_revision: if revs.compacted > 0 {
            revs.compacted
        } else {
            -1
        },
        current: revs.current,
        revision: rev,
    })
}

/// The changes at or below a compact revision that survive it, as 16-byte
/// history keys in revision order.
pub(crate) struct Kept {
    /// Those a read at `rev` still sees: per key, the newest change at or
    /// below `compacted` when it is a put and the key has no change in
    /// (`compacted`, `rev`].
    pub by_read: Vec<[u8; 16]>,
    /// Those etcd's compaction keeps in its backend: each key's newest
    /// change at or below `compacted` when it is a put.
    pub by_compaction: Vec<[u8; 16]>,
    /// Whether any key is live at `rev`. When none is, etcd's keep set is
    /// empty and `HashKV` hashes `by_compaction`: so does [`hash_kv`].
    pub any_live: bool,
}

/// Finds the [`Kept`] changes for compact revision `compacted`, seen at
/// main revision `rev` (one scan of `hist`).
///
/// # Errors
/// Storage errors.
pub(crate) fn kept_at_compaction<R: Readable>(
    r: &R,
    s: &Storage,
    compacted: i64,
    rev: i64,
) -> Result<Kept, EtcdError> {
    // Kept by a read at `rev`, and kept by the compaction at all.
    let (mut kept, mut compacted_puts) = (Vec::new(), Vec::new());
    let mut any_live = false;
    let mut key: Vec<u8> = Vec::new();
    // (newest change at or below `compacted`, is a put), changed later,
    // and whether the newest change at or below `rev` is a put.
    let mut newest: Option<([u8; 16], bool)> = None;
    let mut later = false;
    let mut live = false;
    let mut close = |newest: &mut Option<([u8; 16], bool)>, later: bool, live: bool| {
        any_live |= live;
        if let Some((rk, true)) = newest.take() {
            compacted_puts.push(rk);
            if !later {
                kept.push(rk);
            }
        }
    };
    for item in r.iter(&s.hist) {
        let (k, v) = item.into_inner()?;
        let Some((escaped, rk)) = split_hist_key(&k) else {
            continue;
        };
        if escaped != key.as_slice() {
            close(&mut newest, later, live);
            key = escaped.to_vec();
            later = false;
            live = false;
        }
        let main = storage::be_i64(&rk[..8]);
        let put = v.first().copied().unwrap_or(HIST_PUT) == HIST_PUT;
        if main <= rev {
            live = put;
        }
        if main <= compacted {
            let mut rk16 = [0u8; 16];
            rk16.copy_from_slice(rk);
            newest = Some((rk16, put));
        } else if main <= rev {
            later = true;
        }
    }
    close(&mut newest, later, live);
    kept.sort_unstable();
    compacted_puts.sort_unstable();
    Ok(Kept {
        by_read: kept,
        by_compaction: compacted_puts,
        any_live,
    })
}

/// Feeds one change as etcd's backend stores it.
fn feed(crc: u32, rk: &[u8; 16], event: &PbEvent) -> u32 {
    let (key, value) = backend_record(rk, event);
    crc32c::crc32c_append(crc32c::crc32c_append(crc, &key), &value)
}

/// One change as etcd's backend stores it in its `key` bucket: the key is
/// the main revision, `_`, the sub revision (both 8 bytes big-endian), plus
/// `t` for a deletion; the value is the `mvccpb.KeyValue`, only the key for
/// a deletion (etcd mvcc `revision.go`, `kvstore_txn.go`).
pub(crate) fn backend_record(rk: &[u8; 16], event: &PbEvent) -> (Vec<u8>, Vec<u8>) {
    let deleted = event.r#type == EVENT_DELETE;
    let mut key = Vec::with_capacity(18);
    key.extend_from_slice(&rk[..8]);
    key.push(b'_');
    key.extend_from_slice(&rk[8..]);
    let value = match (&event.kv, deleted) {
        (Some(kv), false) => kv.encode_to_vec(),
        (Some(kv), true) => PbKeyValue {
            key: kv.key.clone(),
            ..Default::default()
        }
        .encode_to_vec(),
        (None, _) => Vec::new(),
    };
    if deleted {
        key.push(b't');
    }
    (key, value)
}

/// `meta` keys that are replicated state (the rest name this member).
const REPLICATED_META: [&[u8]; 3] = [
    storage::META_REVISION,
    storage::META_COMPACT_REVISION,
    alarm::META_ALARMS,
];

/// kvd's `Hash`: a CRC-32C over the replicated keyspaces and `meta` keys.
///
/// # Errors
/// Storage errors.
pub fn hash_backend<R: Readable>(r: &R, s: &Storage) -> Result<u32, EtcdError> {
    let mut crc = 0;
    for (name, ks) in [
        ("kv", &s.kv),
        ("rev", &s.rev),
        ("hist", &s.hist),
        ("leases", &s.leases),
        ("lease_keys", &s.lease_keys),
        ("members", &s.members),
    ] {
        crc = crc32c::crc32c_append(crc, name.as_bytes());
        for item in r.iter(ks) {
            let (k, v) = item.into_inner()?;
            crc = crc32c::crc32c_append(crc32c::crc32c_append(crc, &k), &v);
        }
    }
    crc = crc32c::crc32c_append(crc, b"meta");
    for key in REPLICATED_META {
        if let Some(v) = r.get(&s.meta, key)? {
            crc = crc32c::crc32c_append(crc32c::crc32c_append(crc, key), &v);
        }
    }
    Ok(crc)
}
