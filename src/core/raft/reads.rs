//! ReadIndex batches: what one ReadIndex request carries (its id and the
//! leases the keep-alives among it renew) and how long it waits before it
//! is sent again.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::core::errors::EtcdError;
use crate::core::storage;
use crate::core::types::{LeaseId, LogIndex};

/// Where a ReadIndex request's read index goes.
pub(super) type ReadReply = oneshot::Sender<Result<LogIndex, EtcdError>>;

/// ReadIndex requests sent as one.
pub(super) struct ReadBatch {
    /// The context sent (sent again, unchanged, when no answer comes).
    pub(super) ctx: Vec<u8>,
    /// When it was last sent.
    pub(super) sent: Instant,
    /// Who waits for the read index.
    pub(super) replies: Vec<ReadReply>,
}

/// A ReadIndex unanswered for this long is sent again (etcd's
/// `readIndexRetryTime`): raft-rs drops one that reaches a leader before
/// it has committed an entry of its term, or whose message is lost.
pub(super) const READ_RETRY: Duration = Duration::from_millis(500);

/// Marks a ReadIndex context that carries lease renewals.
const RENEW_MARK: u8 = b'L';

/// Most requests one ReadIndex serves (and so most lease ids its context
/// carries: 8 KiB).
pub(super) const MAX_READS_PER_BATCH: usize = 1024;

/// The context of a ReadIndex request: its id (u64 BE, what the read
/// state is matched by), then, when keep-alives ride on it, [`RENEW_MARK`]
/// and their lease ids (i64 BE each). raft-rs carries it to the leader
/// unchanged.
pub(super) fn read_context(id: u64, renew: &[LeaseId]) -> Vec<u8> {
    let mut ctx = id.to_be_bytes().to_vec();
    if !renew.is_empty() {
        ctx.push(RENEW_MARK);
        for lease in renew {
            ctx.extend_from_slice(&lease.0.to_be_bytes());
        }
    }
    ctx
}

/// The leases a ReadIndex context renews, if it is one of
/// [`read_context`]'s (anything else, a peer's odd context included:
/// none).
pub(super) fn renewals_in(ctx: &[u8]) -> Vec<LeaseId> {
    match ctx {
        [_, _, _, _, _, _, _, _, RENEW_MARK, leases @ ..]
            if !leases.is_empty() && leases.len() % 8 == 0 =>
        {
            leases
                .chunks_exact(8)
                .map(|l| LeaseId(storage::be_i64(l)))
                .collect()
        }
        _ => Vec::new(),
    }
}
