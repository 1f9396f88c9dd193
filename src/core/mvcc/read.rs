//! Reads: `Range` at the current or a past revision, history scans for watch
//! catch-up and `prev_kv`, and the lease records. Every function reads
//! through a [`Readable`] (a snapshot, or the apply transaction inside a
//! `Txn`), so readers never block the writer.

use etcd_client::proto::{PbEvent, PbKeyValue, PbRangeRequest, PbRangeResponse, PbResponseHeader};
use fjall::Readable;
use prost::Message as _;

use crate::core::errors::EtcdError;
use crate::core::metrics::METRICS;
use crate::core::mvcc::keys::{
    escape_key, rev_key, split_hist_key, CurrentRecord, KeyRange, EVENT_PUT, HIST_PUT,
};
use crate::core::storage::{self, Storage};

// etcdserverpb.RangeRequest.SortOrder / SortTarget.
const SORT_NONE: i32 = 0;
const SORT_ASCEND: i32 = 1;
const SORT_DESCEND: i32 = 2;
const TARGET_KEY: i32 = 0;
const TARGET_VERSION: i32 = 1;
const TARGET_CREATE: i32 = 2;
const TARGET_MOD: i32 = 3;
const TARGET_VALUE: i32 = 4;

/// The revision counters a reader needs, read from one snapshot.
#[derive(Debug, Clone, Copy)]
pub struct Revisions {
    /// The current main revision (1 on an empty store).
    pub current: i64,
    /// The compact revision (0 when never compacted).
    pub compacted: i64,
}

/// Reads the revision counters through `r`. Every read of the state
/// starts here, so this is where a view taken while a Raft snapshot is
/// being applied (half old, half new state) is refused.
///
/// # Errors
/// [`EtcdError::ApplyingSnapshot`] for such a view; a storage error.
pub fn revisions<R: Readable>(r: &R, s: &Storage) -> Result<Revisions, EtcdError> {
    if r.get(&s.meta, storage::META_RESTORING)?.is_some() {
        return Err(EtcdError::ApplyingSnapshot);
    }
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
    METRICS.ranges.inc();
    let range = KeyRange::new(&req.key, &req.range_end);
    let filters = has_revision_filters(req);
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
    if !range.is_empty() && at == revs.current {
        // Keys past the ones returned are only counted, not decoded: a
        // limited range over a million keys costs a key walk, not a
        // million decoded values.
        let decode = if want_kvs { fetch_limit } else { Some(0) };
        // A keys-only range reads no value, unless it sorts by value.
        let values = !req.keys_only || req.sort_target == TARGET_VALUE;
        count = scan_current_counting(r, s, &range, decode, values, &mut |kv| kvs.push(kv))?;
    }
    let mut visit = |kv: PbKeyValue| {
        count += 1;
        if want_kvs && fetch_limit.is_none_or(|l| kvs.len() < l) {
            kvs.push(kv);
        }
    };
    if !range.is_empty() && at != revs.current {
        scan_at(r, s, &range, at, &mut visit)?;
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

/// Whether `req` asks for its keys in key order (etcd's
/// `IsDefaultOrdering`: no sort order, or ascending by key).
pub fn default_ordering(req: &PbRangeRequest) -> bool {
    req.sort_order == SORT_NONE || (req.sort_target == TARGET_KEY && req.sort_order == SORT_ASCEND)
}

/// Whether `req` filters by mod or create revision (etcd's
/// `HasRevisionFilters`).
pub fn has_revision_filters(req: &PbRangeRequest) -> bool {
    req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0
}

/// A response header with only the revision set; the API layer adds the
/// cluster id, member id and Raft term.
pub fn header(revision: i64) -> PbResponseHeader {
    PbResponseHeader {
        revision,
        ..Default::default()
    }
}

/// One page of a streamed range (etcd 3.7's `RangeStream`) at the
/// reader's current revision: the first `limit` (at least 1) live
/// key-values of `range` in key order, and whether more follow. Unlike
/// [`range`] it neither counts the rest nor reads past the page (one key
/// more, to know), so paging through a million keys costs one walk.
/// Values are left empty with `keys_only`.
///
/// # Errors
/// Storage errors, a corrupt record.
pub fn range_page<R: Readable>(
    r: &R,
    s: &Storage,
    range: &KeyRange,
    limit: usize,
    keys_only: bool,
) -> Result<(Vec<PbKeyValue>, bool), EtcdError> {
    if range.is_empty() {
        return Ok((Vec::new(), false));
    }
    let iter = match &range.end {
        Some(end) => r.range(&s.kv, range.start.as_slice()..end.as_slice()),
        None => r.range(&s.kv, range.start.as_slice()..),
    };
    let limit = limit.max(1);
    let mut kvs = Vec::new();
    let mut batch: Vec<(Vec<u8>, CurrentRecord)> = Vec::new();
    let mut more = false;
    for (taken, item) in iter.enumerate() {
        if taken == limit {
            more = true;
            break;
        }
        let (k, v) = item.into_inner()?;
        let rec = decode_current(&v)?;
        if keys_only {
            kvs.push(rec.to_kv(k.to_vec(), Vec::new()));
        } else {
            batch.push((k.to_vec(), rec));
            if batch.len() >= VALUE_BATCH {
                visit_with_values(r, s, &mut batch, &mut |kv| kvs.push(kv))?;
            }
        }
    }
    visit_with_values(r, s, &mut batch, &mut |kv| kvs.push(kv))?;
    Ok((kvs, more))
}

/// How many live keys `range` holds at the reader's current revision
/// (a key walk; no record is decoded).
///
/// # Errors
/// Storage errors.
pub fn count_current<R: Readable>(r: &R, s: &Storage, range: &KeyRange) -> Result<i64, EtcdError> {
    if range.is_empty() {
        return Ok(0);
    }
    scan_current_counting(r, s, range, Some(0), false, &mut |_| {})
}

/// As [`scan_current`], decoding and visiting only the first `decode`
/// key-values (all when `None`); returns how many keys the range holds.
/// Values are read from history only when `values` is set.
///
/// # Errors
/// Storage errors, a corrupt record.
fn scan_current_counting<R: Readable>(
    r: &R,
    s: &Storage,
    range: &KeyRange,
    decode: Option<usize>,
    values: bool,
    visit: &mut dyn FnMut(PbKeyValue),
) -> Result<i64, EtcdError> {
    let iter = match &range.end {
        Some(end) => r.range(&s.kv, range.start.as_slice()..end.as_slice()),
        None => r.range(&s.kv, range.start.as_slice()..),
    };
    let mut count = 0i64;
    // With values, records are gathered in batches whose values are read
    // together (see `read_values`), then visited in key order.
    let mut batch: Vec<(Vec<u8>, CurrentRecord)> = Vec::new();
    for item in iter {
        if decode.is_none_or(|d| (count as usize) < d) {
            let (k, v) = item.into_inner()?;
            let rec = decode_current(&v)?;
            if values {
                batch.push((k.to_vec(), rec));
                if batch.len() >= VALUE_BATCH {
                    visit_with_values(r, s, &mut batch, visit)?;
                }
            } else {
                visit(rec.to_kv(k.to_vec(), Vec::new()));
            }
        } else {
            item.key()?;
        }
        count += 1;
    }
    visit_with_values(r, s, &mut batch, visit)?;
    Ok(count)
}

/// Visits the key-values of `batch` (drained) in order, with their values.
fn visit_with_values<R: Readable>(
    r: &R,
    s: &Storage,
    batch: &mut Vec<(Vec<u8>, CurrentRecord)>,
    visit: &mut dyn FnMut(PbKeyValue),
) -> Result<(), EtcdError> {
    let found = read_values(r, s, batch)?;
    for ((key, rec), value) in batch.drain(..).zip(found) {
        visit(rec.to_kv(key, value));
    }
    Ok(())
}

/// Live keys whose values a range reads together.
const VALUE_BATCH: usize = 1024;
/// Wanted revisions at most this many main revisions apart are read with
/// one walk over `rev` rather than a lookup each.
const RUN_GAP: i64 = 16;

/// The values of `records` (key, record), in their order, read from `rev`
/// in revision order: keys written together sit together in `rev`, so a
/// run of nearby revisions is read with one iterator, and a lone one with
/// a lookup.
///
/// # Errors
/// Storage errors; [`EtcdError::Internal`] when a history record is missing
/// or names another key (a corrupt store).
fn read_values<R: Readable>(
    r: &R,
    s: &Storage,
    records: &[(Vec<u8>, CurrentRecord)],
) -> Result<Vec<Vec<u8>>, EtcdError> {
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_unstable_by_key(|&i| records[i].1.rev_key());
    let mut values = vec![Vec::new(); records.len()];
    let mut at = 0;
    while at < order.len() {
        let mut end = at + 1;
        while end < order.len()
            && records[order[end]].1.mod_revision - records[order[end - 1]].1.mod_revision
                <= RUN_GAP
        {
            end += 1;
        }
        if end == at + 1 {
            // A lone revision: one lookup.
            let (key, rec) = &records[order[at]];
            values[order[at]] = current_kv(r, s, key.clone(), *rec, true)?.value;
            at = end;
            continue;
        }
        let first = records[order[at]].1.rev_key();
        let last = records[order[end - 1]].1;
        let stop = rev_key(last.mod_revision, last.mod_sub.saturating_add(1));
        let mut iter = r.range(&s.rev, first.as_slice()..stop.as_slice());
        for &i in &order[at..end] {
            let (key, rec) = &records[i];
            let want = rec.rev_key();
            let found = loop {
                let Some(item) = iter.next() else {
                    break None;
                };
                let (k, v) = item.into_inner()?;
                match k.as_ref().cmp(want.as_slice()) {
                    std::cmp::Ordering::Less => continue,
                    std::cmp::Ordering::Greater => break None,
                    std::cmp::Ordering::Equal => {
                        break PbEvent::decode(v.as_ref())
                            .map_err(|e| EtcdError::Internal(e.to_string()))?
                            .kv
                    }
                }
            };
            match found {
                Some(kv) if kv.key == *key => values[i] = kv.value,
                _ => return Err(missing_value(key, rec)),
            }
        }
        at = end;
    }
    Ok(values)
}

fn missing_value(key: &[u8], rec: &CurrentRecord) -> EtcdError {
    EtcdError::Internal(format!(
        "the value of key {:?} at revision {} is missing from history",
        String::from_utf8_lossy(key),
        rec.mod_revision
    ))
}

/// Visits every live key in `range` at the current revision, in key order;
/// each key-value carries its value only when `values` is set (reading it
/// costs a lookup in `rev`).
///
/// # Errors
/// Storage errors, a corrupt record.
pub(crate) fn scan_current<R: Readable>(
    r: &R,
    s: &Storage,
    range: &KeyRange,
    values: bool,
    visit: &mut dyn FnMut(PbKeyValue),
) -> Result<(), EtcdError> {
    scan_current_counting(r, s, range, None, values, visit).map(|_| ())
}

/// Decodes a `kv` keyspace record.
///
/// # Errors
/// [`EtcdError::Internal`] for a corrupt record.
pub(crate) fn decode_current(b: &[u8]) -> Result<CurrentRecord, EtcdError> {
    CurrentRecord::decode(b).map_err(|e| EtcdError::Internal(format!("corrupt key record: {e}")))
}

/// The `kv` record of `key` through `r`; `None` when the key is not live.
///
/// # Errors
/// Storage errors, a corrupt record.
pub(crate) fn current_record<R: Readable>(
    r: &R,
    s: &Storage,
    key: &[u8],
) -> Result<Option<CurrentRecord>, EtcdError> {
    r.get(&s.kv, key)?.map(|v| decode_current(&v)).transpose()
}

/// The key-value of live `key` whose record is `rec`, its value read from
/// the history record `rec` points to when `value` is set (empty otherwise).
///
/// # Errors
/// Storage errors; [`EtcdError::Internal`] when the history record is
/// missing or names another key (a corrupt store).
pub(crate) fn current_kv<R: Readable>(
    r: &R,
    s: &Storage,
    key: Vec<u8>,
    rec: CurrentRecord,
    value: bool,
) -> Result<PbKeyValue, EtcdError> {
    if !value {
        return Ok(rec.to_kv(key, Vec::new()));
    }
    match read_event(r, s, &rec.rev_key())?.and_then(|e| e.kv) {
        Some(kv) if kv.key == key => Ok(rec.to_kv(key, kv.value)),
        _ => Err(missing_value(&key, &rec)),
    }
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

/// Lease `id`'s granted TTL in seconds, through reader `r`; `None` when no
/// such lease exists.
///
/// # Errors
/// Storage errors.
pub fn lease_granted<R: Readable>(r: &R, s: &Storage, id: i64) -> Result<Option<i64>, EtcdError> {
    Ok(r.get(&s.leases, id.to_be_bytes())?
        .map(|v| storage::be_i64(&v)))
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

/// The changes from revision `from` through `to` (both main revisions,
/// inclusive), in revision order, as `(main revision, event)`; events carry
/// no `prev_kv` (see [`prev_at`]). Stops at the first corrupt record.
pub fn history<'r, R: Readable>(
    r: &'r R,
    s: &Storage,
    from: i64,
    to: i64,
) -> impl Iterator<Item = Result<(i64, PbEvent), EtcdError>> + 'r {
    let start = rev_key(from.max(1), 0);
    let end = rev_key(to.saturating_add(1), 0);
    r.range(&s.rev, start.as_slice()..end.as_slice())
        .map(|item| {
            let (k, v) = item.into_inner()?;
            let main = storage::be_i64(&k[..k.len().min(8)]);
            let event = PbEvent::decode(v.as_ref())
                .map_err(|e| EtcdError::Internal(format!("corrupt history record: {e}")))?;
            Ok((main, event))
        })
}

/// The value of `key` just before revision `rev` (etcd's `prev_kv`: a range
/// at `rev - 1`): its newest change below `rev`, if that change is a put.
///
/// # Errors
/// Storage errors or a corrupt history record.
pub fn prev_at<R: Readable>(
    r: &R,
    s: &Storage,
    key: &[u8],
    rev: i64,
) -> Result<Option<PbKeyValue>, EtcdError> {
    let escaped = escape_key(key);
    let mut lo = escaped.clone();
    lo.extend_from_slice(&rev_key(0, 0));
    let mut hi = escaped;
    hi.extend_from_slice(&rev_key(rev, 0));
    let Some(item) = r.range(&s.hist, lo..hi).next_back() else {
        return Ok(None);
    };
    let (k, _) = item.into_inner()?;
    let Some(rk) = k.len().checked_sub(16).map(|at| &k[at..]) else {
        return Ok(None);
    };
    let Some(v) = r.get(&s.rev, rk)? else {
        return Ok(None);
    };
    let event = PbEvent::decode(v.as_ref())
        .map_err(|e| EtcdError::Internal(format!("corrupt history record: {e}")))?;
    Ok(if event.r#type == EVENT_PUT {
        event.kv
    } else {
        None
    })
}
