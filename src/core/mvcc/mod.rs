//! The MVCC key-value state machine: revisions, history, ranges, puts,
//! deletes, transactions and compaction, with etcd's semantics
//! (etcd `server/mvcc` and `server/etcdserver/apply.go`).
//!
//! Layout (see `storage`): `rev` holds every change as an `mvccpb.Event`
//! under its revision, the only copy of each value; `kv` holds each live
//! key's [`keys::CurrentRecord`], pointing at its last put in `rev`; `hist`
//! maps (escaped key, revision) to the kind of change, so that a read at a
//! past revision finds the newest change at or below it.
//!
//! - `keys`: the storage encodings (revision keys, escaped user keys, lease
//!   attachments) and [`KeyRange`];
//! - `read`: ranges, reads at a past revision, history scans (watch
//!   catch-up), leases;
//! - `apply`: [`Applier`], every write of one Raft entry;
//! - `compare`: txn compares;
//! - `compaction`: physical removal of compacted history, on its own thread.
//!
//! **Invariant:** writes happen only in [`Applier`], inside the Raft task's
//! transaction for one log entry, and in `compaction`, which only deletes
//! history at or below the compact revision; reads use a snapshot and never
//! block writes.

mod apply;
pub mod compaction;
mod compare;
pub mod hash;
pub mod keys;
pub mod read;
#[cfg(test)]
mod tests;

pub use apply::Applier;
pub use keys::{escape_key, lease_key, KeyRange, EVENT_DELETE, EVENT_PUT};
pub use read::{header, lease_granted, lease_keys, leases, range, revisions, Revisions};

use etcd_client::proto::{PbCompactionResponse, PbDeleteResponse, PbPutResponse, PbTxnResponse};

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
        /// The store's revision right after the grant (etcd's header).
        revision: i64,
    },
    /// `LeaseRevoke`: the revision right after it (that of the deletes of
    /// its keys, if any), as etcd's header carries it.
    LeaseRevoke {
        /// The revision.
        revision: i64,
    },
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
    /// `Alarm`: the alarms listed, raised or cleared.
    Alarms(Vec<etcd_client::proto::PbAlarmMember>),
    /// An auth operation; `Authenticate` answers its token.
    Auth {
        /// The token of an `Authenticate`.
        token: Option<String>,
        /// The store's revision (etcd's header carries the MVCC revision).
        revision: i64,
    },
    /// An entry with no client answer (publish, empty entries).
    Done,
}

/// A cheap upper-bound-ish size of `events` in memory, bytes: keys and
/// values (previous ones included) plus a fixed overhead per record. Bounds
/// the watch dispatch queue and a Raft task's apply transaction.
pub fn events_size(events: &[etcd_client::proto::PbEvent]) -> usize {
    let kv = |kv: &Option<etcd_client::proto::PbKeyValue>| {
        kv.as_ref()
            .map_or(0, |kv| kv.key.len() + kv.value.len() + 48)
    };
    events.iter().map(|e| kv(&e.kv) + kv(&e.prev_kv) + 16).sum()
}
