//! The MVCC key-value state machine: revisions, history, ranges, puts,
//! deletes, transactions and compaction, with etcd's semantics
//! (etcd `server/mvcc` and `server/etcdserver/apply.go`).
//!
//! Layout (see `storage`): `kv` holds the current value of each live key;
//! `rev` holds every change as an `mvccpb.Event` under its revision; `hist`
//! maps (escaped key, revision) to the kind of change, so that a read at a
//! past revision finds the newest change at or below it.
//!
//! Writes happen only in [`Applier`], inside the Raft task's transaction for
//! one log entry; reads use a snapshot and never block writes.

use std::cmp::Ordering;

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbCompare, PbCompareTarget, PbDeleteRequest,
    PbDeleteResponse, PbEvent, PbKeyValue, PbPutRequest, PbPutResponse, PbRangeRequest,
    PbRangeResponse, PbResponseHeader, PbResponseOp, PbTargetUnion, PbTxnOpRequest,
    PbTxnOpResponse, PbTxnRequest, PbTxnResponse,
};
use fjall::{Readable, SingleWriterWriteTx};
use prost::Message as _;

use crate::core::errors::EtcdError;
use crate::core::storage::{self, Storage};

/// `mvccpb.Event.EventType.PUT`.
pub const EVENT_PUT: i32 = 0;
/// `mvccpb.Event.EventType.DELETE`.
pub const EVENT_DELETE: i32 = 1;

const HIST_PUT: u8 = 0;
const HIST_DELETE: u8 = 1;

// etcdserverpb.RangeRequest.SortOrder / SortTarget and Compare.CompareResult.
const SORT_NONE: i32 = 0;
const SORT_ASCEND: i32 = 1;
const SORT_DESCEND: i32 = 2;
const TARGET_KEY: i32 = 0;
const TARGET_VERSION: i32 = 1;
const TARGET_CREATE: i32 = 2;
const TARGET_MOD: i32 = 3;
const TARGET_VALUE: i32 = 4;
const CMP_EQUAL: i32 = 0;
const CMP_GREATER: i32 = 1;
const CMP_LESS: i32 = 2;
const CMP_NOT_EQUAL: i32 = 3;

/// A key interval as etcd reads `key` + `range_end`: empty `range_end` is the
/// single key, `"\0"` means every key `>= key`, otherwise `[key, range_end)`.
#[derive(Debug, Clone)]
pub struct KeyRange {
    /// Inclusive start.
    pub start: Vec<u8>,
    /// Exclusive end; `None` means unbounded.
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Builds the interval from a request's `key` and `range_end`.
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        let end = if range_end.is_empty() {
            let mut e = key.to_vec();
            e.push(0);
            Some(e)
        } else if range_end == [0] {
            None
        } else {
            Some(range_end.to_vec())
        };
        Self {
            start: key.to_vec(),
            end,
        }
    }

    /// Whether `key` is inside.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }

    /// Whether the interval holds no key at all.
    pub fn is_empty(&self) -> bool {
        self.end
            .as_deref()
            .is_some_and(|e| e <= self.start.as_slice())
    }
}

/// The revision counters a reader needs, read from one snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Revisions {
    /// The current main revision (1 on an empty store).
    pub current: i64,
    /// The compact revision (0 when never compacted).
    pub compacted: i64,
}

/// Reads the revision counters through `r`.
///
/// # Errors
/// A storage error.
pub fn revisions<R: Readable>(r: &R, s: &Storage) -> Result<Revisions, EtcdError> {
    let current = r
        .get(&s.meta, storage::META_REVISION)?
        .map(|v| storage::be_i64(&v))
        .unwrap_or(1)
        .max(1);
    let compacted = r
        .get(&s.meta, storage::META_COMPACT_REVISION)?
        .map(|v| storage::be_i64(&v))
        .unwrap_or(0);
    Ok(Revisions { current, compacted })
}

/// Serves `Range` through reader `r` (a snapshot, or the apply transaction
/// inside a `Txn`), as etcd's `applierV3backend.Range`: `limit` + `more`,
/// revision reads, sorting, `keys_only`, `count_only` and the min/max
/// mod/create revision filters.
///
/// # Errors
/// [`EtcdError::Compacted`] below the compact revision,
/// [`EtcdError::FutureRevision`] above the current one, storage errors.
pub fn range<R: Readable>(
    r: &R,
    s: &Storage,
    revs: Revisions,
    req: &PbRangeRequest,
) -> Result<PbRangeResponse, EtcdError> {
    let at = if req.revision <= 0 {
        revs.current
    } else {
        req.revision
    };
    if at > revs.current {
        return Err(EtcdError::FutureRevision);
    }
    if at < revs.compacted {
        return Err(EtcdError::Compacted);
    }
    let range = KeyRange::new(&req.key, &req.range_end);
    let filters = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let mut sort_order = req.sort_order;
    if req.sort_target != TARGET_KEY && sort_order == SORT_NONE {
        sort_order = SORT_ASCEND;
    } else if req.sort_target == TARGET_KEY && sort_order == SORT_ASCEND {
        sort_order = SORT_NONE;
    }
    // Fetch one more than asked to know `more`, unless sorting or filtering
    // needs every key first (as etcd does).
    let fetch_limit = if req.limit > 0 && sort_order == SORT_NONE && !filters {
        Some(req.limit as usize + 1)
    } else {
        None
    };
    let want_kvs = !req.count_only;
    let mut kvs = Vec::new();
    let mut count = 0i64;
    let mut visit = |kv: PbKeyValue| {
        count += 1;
        if want_kvs && fetch_limit.is_none_or(|l| kvs.len() < l) {
            kvs.push(kv);
        }
    };
    if !range.is_empty() {
        if at == revs.current {
            scan_current(r, s, &range, &mut visit)?;
        } else {
            scan_at(r, s, &range, at, &mut visit)?;
        }
    }
    let keep = |kv: &PbKeyValue| {
        (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
            && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
            && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
            && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
    };
    if filters {
        kvs.retain(keep);
    }
    if sort_order != SORT_NONE {
        let target = req.sort_target;
        kvs.sort_by(|a, b| {
            let o = match target {
                TARGET_VERSION => a.version.cmp(&b.version),
                TARGET_CREATE => a.create_revision.cmp(&b.create_revision),
                TARGET_MOD => a.mod_revision.cmp(&b.mod_revision),
                TARGET_VALUE => a.value.cmp(&b.value),
                _ => a.key.cmp(&b.key),
            };
            if sort_order == SORT_DESCEND {
                o.reverse()
            } else {
                o
            }
        });
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(PbRangeResponse {
        header: Some(header(revs.current)),
        kvs,
        more,
        count,
    })
}

/// A response header with only the revision set; the API layer adds the
/// cluster id, member id and Raft term.
pub fn header(revision: i64) -> PbResponseHeader {
    PbResponseHeader {
        revision,
        ..Default::default()
    }
}

fn scan_current<R: Readable>(
    r: &R,
    s: &Storage,
    range: &KeyRange,
    visit: &mut dyn FnMut(PbKeyValue),
) -> Result<(), EtcdError> {
    let iter = match &range.end {
        Some(end) => r.range(&s.kv, range.start.as_slice()..end.as_slice()),
        None => r.range(&s.kv, range.start.as_slice()..),
    };
    for item in iter {
        let (_, v) = item.into_inner()?;
        visit(decode_kv(&v)?);
    }
    Ok(())
}

fn scan_at<R: Readable>(
    r: &R,
    s: &Storage,
    range: &KeyRange,
    at: i64,
    visit: &mut dyn FnMut(PbKeyValue),
) -> Result<(), EtcdError> {
    let start = escape_key(&range.start);
    let iter = match &range.end {
        Some(end) => r.range(&s.hist, start..escape_key(end)),
        None => r.range(&s.hist, start..),
    };
    // Per key: the newest change at or below `at`.
    let mut current_key: Vec<u8> = Vec::new();
    let mut newest: Option<(Vec<u8>, u8)> = None;
    let mut flush = |newest: &mut Option<(Vec<u8>, u8)>| -> Result<(), EtcdError> {
        if let Some((rev_key, kind)) = newest.take() {
            if kind == HIST_PUT {
                if let Some(kv) = read_event(r, s, &rev_key)?.and_then(|e| e.kv) {
                    visit(kv);
                }
            }
        }
        Ok(())
    };
    for item in iter {
        let (k, v) = item.into_inner()?;
        let Some((escaped, rev_key)) = split_hist_key(&k) else {
            continue;
        };
        if escaped != current_key.as_slice() {
            flush(&mut newest)?;
            current_key = escaped.to_vec();
        }
        if storage::be_i64(&rev_key[..8]) <= at {
            newest = Some((rev_key.to_vec(), v.first().copied().unwrap_or(HIST_PUT)));
        }
    }
    flush(&mut newest)
}

fn read_event<R: Readable>(
    r: &R,
    s: &Storage,
    rev_key: &[u8],
) -> Result<Option<PbEvent>, EtcdError> {
    match r.get(&s.rev, rev_key)? {
        Some(b) => Ok(Some(
            PbEvent::decode(b.as_ref()).map_err(|e| EtcdError::Internal(e.to_string()))?,
        )),
        None => Ok(None),
    }
}

fn decode_kv(b: &[u8]) -> Result<PbKeyValue, EtcdError> {
    PbKeyValue::decode(b).map_err(|e| EtcdError::Internal(format!("corrupt key-value: {e}")))
}

/// Order-preserving, prefix-free encoding of a user key (each `0x00` becomes
/// `0x00 0xFF`; the end is `0x00 0x01`), so that a revision can follow it.
pub fn escape_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 18);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
    out
}

/// Splits a `hist` key into (escaped user key, 16-byte revision key).
fn split_hist_key(k: &[u8]) -> Option<(&[u8], &[u8])> {
    if k.len() < 18 {
        return None;
    }
    Some(k.split_at(k.len() - 16))
}

/// The `lease_keys` key attaching `key` to lease `id`.
pub fn lease_key(id: i64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The keys attached to lease `id`, through reader `r`.
///
/// # Errors
/// Storage errors.
pub fn lease_keys<R: Readable>(r: &R, s: &Storage, id: i64) -> Result<Vec<Vec<u8>>, EtcdError> {
    let mut keys = Vec::new();
    for item in r.prefix(&s.lease_keys, id.to_be_bytes()) {
        let (k, _) = item.into_inner()?;
        keys.push(k[8..].to_vec());
    }
    Ok(keys)
}

/// Every lease as (id, granted TTL in seconds), through reader `r`.
///
/// # Errors
/// Storage errors.
pub fn leases<R: Readable>(r: &R, s: &Storage) -> Result<Vec<(i64, i64)>, EtcdError> {
    let mut out = Vec::new();
    for item in r.iter(&s.leases) {
        let (k, v) = item.into_inner()?;
        out.push((storage::be_i64(&k), storage::be_i64(&v)));
    }
    Ok(out)
}

fn rev_key(main: i64, sub: i64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&main.to_be_bytes());
    k[8..].copy_from_slice(&sub.to_be_bytes());
    k
}

/// What applying one entry produced.
#[derive(Debug, Clone)]
pub enum ApplyResponse {
    /// `Put`.
    Put(PbPutResponse),
    /// `DeleteRange`.
    DeleteRange(PbDeleteResponse),
    /// `Txn`.
    Txn(PbTxnResponse),
    /// `Compact`.
    Compaction(PbCompactionResponse),
    /// `LeaseGrant`: the lease id and its TTL, seconds.
    LeaseGrant {
        /// The lease id.
        id: i64,
        /// Granted TTL, seconds.
        ttl: i64,
    },
    /// `LeaseRevoke`.
    LeaseRevoke,
    /// A keep-alive: the lease's granted TTL, seconds (0 = no such lease).
    LeaseKeepAlive {
        /// Granted TTL, seconds.
        ttl: i64,
    },
    /// A membership change: the member concerned and the members after it.
    Members {
        /// The member added, promoted, updated or removed.
        member: etcd_client::proto::PbMember,
        /// Every member after the change.
        members: Vec<etcd_client::proto::PbMember>,
    },
    /// An entry with no client answer (publish, empty entries).
    Done,
}

/// Applies the KV operations of one Raft entry inside its write transaction.
///
/// Every write of the entry shares one main revision (with increasing sub
/// revisions), as in etcd; an entry that writes nothing does not bump the
/// revision.
pub struct Applier<'a, 'tx> {
    /// The entry's transaction (reads see its own writes).
    tx: &'a mut SingleWriterWriteTx<'tx>,
    /// Keyspace handles.
    s: &'a Storage,
    /// Revision counters before this entry.
    revs: Revisions,
    /// Sub revision of the next write in this entry.
    sub: i64,
    /// Events written by this entry, in order (for watchers).
    pub events: Vec<PbEvent>,
}

impl<'a, 'tx> Applier<'a, 'tx> {
    /// Starts applying an entry on `tx`.
    ///
    /// # Errors
    /// A storage error.
    pub fn new(tx: &'a mut SingleWriterWriteTx<'tx>, s: &'a Storage) -> Result<Self, EtcdError> {
        let revs = revisions(&*tx, s)?;
        Ok(Self {
            tx,
            s,
            revs,
            sub: 0,
            events: Vec::new(),
        })
    }

    /// The revision visible after this entry.
    pub fn revision(&self) -> i64 {
        if self.sub > 0 {
            self.revs.current + 1
        } else {
            self.revs.current
        }
    }

    /// Records the new revision (call once, after the operation succeeded).
    pub fn finish(&mut self) {
        if self.sub > 0 {
            self.tx.insert(
                &self.s.meta,
                storage::META_REVISION,
                (self.revs.current + 1).to_be_bytes(),
            );
        }
    }

    fn current(&self, key: &[u8]) -> Result<Option<PbKeyValue>, EtcdError> {
        match self.tx.get(&self.s.kv, key)? {
            Some(v) => Ok(Some(decode_kv(&v)?)),
            None => Ok(None),
        }
    }

    /// Writes one change to history; `prev` (the key's value before it) is
    /// kept only in the in-memory event, for watchers that ask `prev_kv`.
    fn write_event(&mut self, kind: u8, kv: PbKeyValue, prev: Option<PbKeyValue>) {
        let main = self.revs.current + 1;
        let rk = rev_key(main, self.sub);
        self.sub += 1;
        let mut hk = escape_key(&kv.key);
        hk.extend_from_slice(&rk);
        self.tx.insert(&self.s.hist, hk, [kind]);
        let event = PbEvent {
            r#type: if kind == HIST_PUT {
                EVENT_PUT
            } else {
                EVENT_DELETE
            },
            kv: Some(kv),
            prev_kv: None,
        };
        self.tx.insert(&self.s.rev, rk, event.encode_to_vec());
        self.events.push(PbEvent {
            prev_kv: prev,
            ..event
        });
    }

    /// Checks a put against the state before it runs (etcd checks a whole
    /// txn branch before writing anything).
    fn check_put(&self, req: &PbPutRequest) -> Result<(), EtcdError> {
        if (req.ignore_value || req.ignore_lease) && self.current(&req.key)?.is_none() {
            return Err(EtcdError::KeyNotFound);
        }
        if req.lease != 0 && !req.ignore_lease && !self.lease_exists(req.lease)? {
            return Err(EtcdError::LeaseNotFound);
        }
        Ok(())
    }

    /// `Put` (etcd's `applierV3backend.Put`).
    ///
    /// # Errors
    /// [`EtcdError::KeyNotFound`] for `ignore_value`/`ignore_lease` on a missing
    /// key, [`EtcdError::LeaseNotFound`] for an unknown lease, storage errors.
    pub fn put(&mut self, req: &PbPutRequest) -> Result<PbPutResponse, EtcdError> {
        self.check_put(req)?;
        let prev = self.current(&req.key)?;
        let main = self.revs.current + 1;
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let kv = PbKeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(main, |p| p.create_revision),
            mod_revision: main,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        let old_lease = prev.as_ref().map_or(0, |p| p.lease);
        if old_lease != lease {
            if old_lease != 0 {
                self.tx
                    .remove(&self.s.lease_keys, lease_key(old_lease, &req.key));
            }
            if lease != 0 {
                self.tx
                    .insert(&self.s.lease_keys, lease_key(lease, &req.key), []);
            }
        }
        self.tx
            .insert(&self.s.kv, req.key.clone(), kv.encode_to_vec());
        self.write_event(HIST_PUT, kv, prev.clone());
        Ok(PbPutResponse {
            header: Some(header(main)),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    /// `DeleteRange` (etcd's `applierV3backend.DeleteRange`).
    ///
    /// # Errors
    /// Storage errors.
    pub fn delete_range(&mut self, req: &PbDeleteRequest) -> Result<PbDeleteResponse, EtcdError> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let mut doomed = Vec::new();
        if !range.is_empty() {
            scan_current(&*self.tx, self.s, &range, &mut |kv| doomed.push(kv))?;
        }
        let main = self.revs.current + 1;
        for kv in &doomed {
            self.tx.remove(&self.s.kv, kv.key.clone());
            if kv.lease != 0 {
                self.tx
                    .remove(&self.s.lease_keys, lease_key(kv.lease, &kv.key));
            }
            self.write_event(
                HIST_DELETE,
                PbKeyValue {
                    key: kv.key.clone(),
                    mod_revision: main,
                    ..Default::default()
                },
                Some(kv.clone()),
            );
        }
        Ok(PbDeleteResponse {
            header: Some(header(self.revision())),
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        })
    }

    /// `Txn` (etcd's `applierV3backend.Txn`): every compare on the chosen
    /// path, nested ones included, is evaluated first against the store as
    /// it was before the transaction (etcd's `compareToPath`), and so are the
    /// checks of its operations; then the operations run in order, each
    /// seeing the writes before it.
    ///
    /// # Errors
    /// The first failed check on the chosen path (nothing is written then),
    /// storage errors.
    pub fn txn(&mut self, req: &PbTxnRequest) -> Result<PbTxnResponse, EtcdError> {
        let mut path = Vec::new();
        self.compare_path(req, &mut path)?;
        let mut at = 0;
        self.check_path(req, &path, &mut at)?;
        let mut at = 0;
        self.exec_txn(req, &path, &mut at)
    }

    fn compare_path(&self, req: &PbTxnRequest, path: &mut Vec<bool>) -> Result<(), EtcdError> {
        let mut ok = true;
        for c in &req.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &req.success } else { &req.failure } {
            if let Some(PbTxnOpRequest::RequestTxn(t)) = &op.request {
                self.compare_path(t, path)?;
            }
        }
        Ok(())
    }

    fn check_path(
        &self,
        req: &PbTxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> Result<(), EtcdError> {
        let ok = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        for op in if ok { &req.success } else { &req.failure } {
            match &op.request {
                Some(PbTxnOpRequest::RequestPut(r)) => self.check_put(r)?,
                Some(PbTxnOpRequest::RequestRange(r)) => {
                    if r.revision > self.revs.current {
                        return Err(EtcdError::FutureRevision);
                    }
                    if r.revision > 0 && r.revision < self.revs.compacted {
                        return Err(EtcdError::Compacted);
                    }
                }
                Some(PbTxnOpRequest::RequestTxn(t)) => self.check_path(t, path, at)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn exec_txn(
        &mut self,
        req: &PbTxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> Result<PbTxnResponse, EtcdError> {
        let ok = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        let ops = if ok { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) => {
                    let revs = Revisions {
                        current: self.revision(),
                        compacted: self.revs.compacted,
                    };
                    PbTxnOpResponse::ResponseRange(range(&*self.tx, self.s, revs, r)?)
                }
                Some(PbTxnOpRequest::RequestPut(r)) => PbTxnOpResponse::ResponsePut(self.put(r)?),
                Some(PbTxnOpRequest::RequestDeleteRange(r)) => {
                    PbTxnOpResponse::ResponseDeleteRange(self.delete_range(r)?)
                }
                Some(PbTxnOpRequest::RequestTxn(r)) => {
                    PbTxnOpResponse::ResponseTxn(self.exec_txn(r, path, at)?)
                }
                None => continue,
            };
            responses.push(PbResponseOp {
                response: Some(response),
            });
        }
        Ok(PbTxnResponse {
            header: Some(header(self.revision())),
            succeeded: ok,
            responses,
        })
    }

    /// etcd's `applyCompare`: every key in the compare's range must satisfy
    /// it; a missing key compares as a zero key-value, except on VALUE, which
    /// then fails.
    fn compare(&self, c: &PbCompare) -> Result<bool, EtcdError> {
        let range = KeyRange::new(&c.key, &c.range_end);
        let mut kvs = Vec::new();
        if !range.is_empty() {
            scan_current(&*self.tx, self.s, &range, &mut |kv| kvs.push(kv))?;
        }
        if kvs.is_empty() {
            if c.target == PbCompareTarget::Value as i32 {
                return Ok(false);
            }
            return Ok(compare_kv(c, &PbKeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
    }

    fn lease_exists(&self, id: i64) -> Result<bool, EtcdError> {
        Ok(self.tx.get(&self.s.leases, id.to_be_bytes())?.is_some())
    }

    /// `LeaseGrant` with the id already chosen: records the lease.
    ///
    /// # Errors
    /// [`EtcdError::LeaseExists`] when the id is taken, storage errors.
    pub fn lease_grant(&mut self, id: i64, ttl: i64) -> Result<(), EtcdError> {
        if self.lease_exists(id)? {
            return Err(EtcdError::LeaseExists);
        }
        self.tx
            .insert(&self.s.leases, id.to_be_bytes(), ttl.to_be_bytes());
        Ok(())
    }

    /// The granted TTL of a lease, seconds.
    ///
    /// # Errors
    /// [`EtcdError::LeaseNotFound`], storage errors.
    pub fn lease_ttl(&self, id: i64) -> Result<i64, EtcdError> {
        match self.tx.get(&self.s.leases, id.to_be_bytes())? {
            Some(v) => Ok(storage::be_i64(&v)),
            None => Err(EtcdError::LeaseNotFound),
        }
    }

    /// `LeaseRevoke`: deletes the lease and every key attached to it, in one
    /// revision (with delete events), as etcd's `lessor.Revoke`.
    ///
    /// # Errors
    /// [`EtcdError::LeaseNotFound`], storage errors.
    pub fn lease_revoke(&mut self, id: i64) -> Result<(), EtcdError> {
        if !self.lease_exists(id)? {
            return Err(EtcdError::LeaseNotFound);
        }
        let prefix = id.to_be_bytes();
        let mut keys = Vec::new();
        for item in self.tx.prefix(&self.s.lease_keys, prefix) {
            let (k, _) = item.into_inner()?;
            keys.push(k[8..].to_vec());
        }
        let main = self.revs.current + 1;
        for key in keys {
            self.tx.remove(&self.s.lease_keys, lease_key(id, &key));
            if let Some(kv) = self.current(&key)? {
                self.tx.remove(&self.s.kv, key.clone());
                self.write_event(
                    HIST_DELETE,
                    PbKeyValue {
                        key,
                        mod_revision: main,
                        ..Default::default()
                    },
                    Some(kv),
                );
            }
        }
        self.tx.remove(&self.s.leases, id.to_be_bytes());
        Ok(())
    }

    /// `Compact` (etcd's `kvstore.compact`): records the compact revision;
    /// the history below it is removed afterwards by [`compact_history`].
    ///
    /// # Errors
    /// [`EtcdError::Compacted`] at or below the current compact revision,
    /// [`EtcdError::FutureRevision`] above the current revision.
    pub fn compact(
        &mut self,
        req: &PbCompactionRequest,
    ) -> Result<PbCompactionResponse, EtcdError> {
        if req.revision <= self.revs.compacted {
            return Err(EtcdError::Compacted);
        }
        if req.revision > self.revs.current {
            return Err(EtcdError::FutureRevision);
        }
        self.tx.insert(
            &self.s.meta,
            storage::META_COMPACT_REVISION,
            req.revision.to_be_bytes(),
        );
        self.revs.compacted = req.revision;
        Ok(PbCompactionResponse {
            header: Some(header(self.revs.current)),
        })
    }
}

fn compare_kv(c: &PbCompare, kv: &PbKeyValue) -> bool {
    let ord = match c.target_union.as_ref() {
        Some(PbTargetUnion::Value(v)) if c.target == PbCompareTarget::Value as i32 => {
            kv.value.as_slice().cmp(v.as_slice())
        }
        _ => {
            let want = match c.target_union.as_ref() {
                Some(PbTargetUnion::Version(v))
                | Some(PbTargetUnion::CreateRevision(v))
                | Some(PbTargetUnion::ModRevision(v))
                | Some(PbTargetUnion::Lease(v)) => *v,
                _ => 0,
            };
            let have = match PbCompareTarget::try_from(c.target) {
                Ok(PbCompareTarget::Version) => kv.version,
                Ok(PbCompareTarget::Create) => kv.create_revision,
                Ok(PbCompareTarget::Mod) => kv.mod_revision,
                Ok(PbCompareTarget::Lease) => kv.lease,
                Ok(PbCompareTarget::Value) => {
                    return compare_result(c.result, kv.value.as_slice().cmp(&[][..]))
                }
                Err(_) => return true,
            };
            have.cmp(&want)
        }
    };
    compare_result(c.result, ord)
}

fn compare_result(result: i32, ord: Ordering) -> bool {
    match result {
        CMP_EQUAL => ord == Ordering::Equal,
        CMP_NOT_EQUAL => ord != Ordering::Equal,
        CMP_GREATER => ord == Ordering::Greater,
        CMP_LESS => ord == Ordering::Less,
        _ => true,
    }
}

/// Physically removes history at or below `compact_rev`: for each key, every
/// change at or below it except the newest one when that is a put (it is
/// still the key's value at `compact_rev`). Runs beside the Raft task in
/// transactions of at most `chunk` deletions, so writes are never blocked for
/// long; then records `compact_done`.
///
/// # Errors
/// A storage error (the pass resumes at the next start).
pub fn compact_history(s: &Storage, compact_rev: i64, chunk: usize) -> Result<(), EtcdError> {
    let snapshot = s.db.read_tx();
    let mut doomed: Vec<(Vec<u8>, [u8; 16])> = Vec::new();
    let mut current_key: Vec<u8> = Vec::new();
    let mut newest: Option<(Vec<u8>, [u8; 16], u8)> = None;
    let flush_chunk = |doomed: &mut Vec<(Vec<u8>, [u8; 16])>| -> Result<(), EtcdError> {
        let mut tx = s.db.write_tx();
        for (hk, rk) in doomed.drain(..) {
            tx.remove(&s.hist, hk);
            tx.remove(&s.rev, rk);
        }
        tx.commit()?;
        Ok(())
    };
    for item in snapshot.iter(&s.hist) {
        let (k, v) = item.into_inner()?;
        let Some((escaped, rk)) = split_hist_key(&k) else {
            continue;
        };
        if escaped != current_key.as_slice() {
            if let Some((hk, rk, kind)) = newest.take() {
                if kind == HIST_DELETE {
                    doomed.push((hk, rk));
                }
            }
            current_key = escaped.to_vec();
        }
        if storage::be_i64(&rk[..8]) > compact_rev {
            continue;
        }
        let mut rk16 = [0u8; 16];
        rk16.copy_from_slice(rk);
        if let Some((hk, old_rk, _)) = newest.take() {
            doomed.push((hk, old_rk));
        }
        newest = Some((k.to_vec(), rk16, v.first().copied().unwrap_or(HIST_PUT)));
        if doomed.len() >= chunk {
            flush_chunk(&mut doomed)?;
        }
    }
    if let Some((hk, rk, kind)) = newest.take() {
        if kind == HIST_DELETE {
            doomed.push((hk, rk));
        }
    }
    flush_chunk(&mut doomed)?;
    let mut tx = s.db.write_tx();
    tx.insert(
        &s.meta,
        storage::META_COMPACT_DONE,
        compact_rev.to_be_bytes(),
    );
    tx.commit()?;
    Ok(())
}
