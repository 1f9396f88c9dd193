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

/// The `rev` keyspace key of (main, sub) revision: 16 bytes, big-endian.
pub fn rev_key(main: i64, sub: i64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&main.to_be_bytes());
    k[8..].copy_from_slice(&sub.to_be_bytes());
    k
}

/// The `kv` keyspace record of a live key: its counters and where its
/// current value lives in `rev` (the revision of its last put). The value
/// itself is stored once, in that history record (DESIGN.md: "the current
/// view points into history"); physical compaction always keeps a live
/// key's newest put, so the pointer never dangles.
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
    pub fn to_kv(self, key: Vec<u8>, value: Vec<u8>) -> etcd_client::proto::PbKeyValue {
        etcd_client::proto::PbKeyValue {
            key,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value,
            lease: self.lease,
        }
    }
}
