//! How the state machine encodes its keys in storage, and the key interval
//! of a request. Integer parts are big-endian so that LSM order is numeric
//! order.

/// The end of the range of keys that start with `prefix` (etcd's
/// `GetPrefixRangeEnd`): the prefix with its last byte below 0xff raised
/// by one; `"\0"` (to the end of the keyspace) when every byte is 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `mvccpb.Event.EventType.PUT`.
pub const EVENT_PUT: i32 = 0;
/// `mvccpb.Event.EventType.DELETE`.
pub const EVENT_DELETE: i32 = 1;

/// `hist` value: the change was a put.
pub(crate) const HIST_PUT: u8 = 0;
/// `hist` value: the change was a delete.
pub(crate) const HIST_DELETE: u8 = 1;

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
pub(crate) fn split_hist_key(k: &[u8]) -> Option<(&[u8], &[u8])> {
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

pub use crate::core::storage::format::{rev_key, CurrentRecord};
