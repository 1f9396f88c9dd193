//! What the Raft task proposes: client proposals and lease expiries.
//!
//! Proposals of one drain of the event queue are stepped into raft-rs as
//! one `MsgPropose`. raft-rs's `RawNode::propose` steps one entry at a
//! time, and a leader broadcasts an append to every follower after each
//! step: the ~20 proposals of a Ready meant ~20 `MsgAppend`s per follower,
//! as many answers back, and a commit broadcast for each answer that moved
//! the commit index. Stepped together (raft-rs `Raft::step`, `MsgPropose`
//! with many entries), they leave as one append per follower; a follower
//! forwards them to its leader as one message too. A batch holds at most
//! [`MAX_BATCH_BYTES`] of entries, or one entry larger than that, so a
//! batch a follower forwards fits the peer frame limit
//! (`transport::max_frame`) as a single request does.

use etcd_client::proto::PbLeaseRevokeRequest;
use prost::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};
use raft::StateRole;
use tokio::sync::oneshot;

use super::{ProposalResult, RaftTask};
use crate::core::errors::EtcdError;
use crate::core::metrics::METRICS;
use crate::core::raft::proposal::{Op, RaftRequest};

/// Most encoded entry bytes in a batch of more than one entry; also the
/// most raft-rs puts in one append (`max_size_per_msg` in `raft_config`).
pub(super) const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// A stepped proposal waiting for its entry: its id and its client's answer.
pub(super) type Waiting = (u64, oneshot::Sender<ProposalResult>);

/// Proposals not yet stepped, in arrival order.
#[derive(Default)]
pub(super) struct ProposalBatch {
    entries: Vec<Entry>,
    waiting: Vec<Waiting>,
    bytes: usize,
}

impl ProposalBatch {
    /// Whether `len` more bytes of entry keep the batch within
    /// [`MAX_BATCH_BYTES`]; an empty batch takes an entry of any size.
    pub(super) fn fits(&self, len: usize) -> bool {
        self.entries.is_empty() || self.bytes + len <= MAX_BATCH_BYTES
    }

    /// Adds the encoded `RaftRequest` `data` of proposal `id`, answered
    /// through `reply` (the caller steps the batch first when it does not
    /// [`fit`](Self::fits)).
    pub(super) fn push(&mut self, id: u64, data: Vec<u8>, reply: oneshot::Sender<ProposalResult>) {
        self.bytes += data.len();
        self.entries.push(Entry {
            data: data.into(),
            ..Entry::default()
        });
        self.waiting.push((id, reply));
    }

    /// Proposals held.
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// The batch as a `MsgPropose` from member `from` (the shape raft-rs's
    /// `RawNode::propose` builds, with every entry), and its waiting
    /// proposals in entry order; `None` when empty. Leaves the batch empty.
    pub(super) fn take(&mut self, from: u64) -> Option<(Message, Vec<Waiting>)> {
        if self.entries.is_empty() {
            return None;
        }
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = from;
        m.set_entries(std::mem::take(&mut self.entries).into());
        self.bytes = 0;
        Some((m, std::mem::take(&mut self.waiting)))
    }
}

impl RaftTask {
    /// As leader, proposes the revoke of every lease past its deadline.
    pub(super) fn expire_leases(&mut self) {
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        for id in self.lessor.take_expired() {
            let op = Op::LeaseRevoke(PbLeaseRevokeRequest { id: id.0 });
            let data = RaftRequest {
                id: 0,
                origin: 0,
                op: Some(op),
                ..RaftRequest::default()
            }
            .encode_to_vec();
            if let Err(e) = self.raw.propose(Vec::new(), data) {
                tracing::warn!("cannot propose expiry of lease {id}: {e}");
            } else {
                tracing::info!("lease {id} expired; revoking");
            }
        }
    }

    /// Steps the queued proposals as one `MsgPropose` (`batch`); they wait
    /// for their entries to apply, or all get `NoLeader` when raft-rs drops
    /// them (no leader known, a leadership transfer, removed from the
    /// cluster).
    pub(super) fn step_proposals(&mut self) {
        let Some((msg, waiting)) = self.batch.take(self.me()) else {
            return;
        };
        if self.raw.step(msg).is_ok() {
            METRICS.proposals.inc_by(waiting.len() as u64);
            self.proposals.extend(waiting);
        } else {
            for (_, reply) in waiting {
                let _ = reply.send(Err(EtcdError::NoLeader));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(batch: &mut ProposalBatch, id: u64, bytes: usize) {
        let (reply, _answer) = oneshot::channel();
        batch.push(id, vec![id as u8; bytes], reply);
    }

    #[test]
    fn a_batch_steps_every_entry_in_order_and_empties() {
        let mut batch = ProposalBatch::default();
        assert!(batch.take(1).is_none(), "an empty batch steps nothing");
        for id in 1..=3 {
            push(&mut batch, id, 10);
        }
        assert_eq!(batch.len(), 3);
        let (m, waiting) = batch.take(7).expect("a batch");
        assert_eq!(m.get_msg_type(), MessageType::MsgPropose);
        assert_eq!(
            (m.from, m.term),
            (7, 0),
            "a local proposal, as RawNode::propose"
        );
        let firsts: Vec<u8> = m.entries.iter().map(|e| e.data[0]).collect();
        assert_eq!(firsts, [1, 2, 3]);
        let ids: Vec<u64> = waiting.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(batch.len(), 0);
        assert!(batch.take(7).is_none());
    }

    #[test]
    fn a_batch_holds_its_byte_limit_or_one_larger_entry() {
        let mut batch = ProposalBatch::default();
        assert!(batch.fits(MAX_BATCH_BYTES - 1));
        push(&mut batch, 1, MAX_BATCH_BYTES - 1);
        assert!(batch.fits(1), "exactly MAX_BATCH_BYTES fits");
        assert!(!batch.fits(2));
        push(&mut batch, 2, 1);
        assert!(!batch.fits(1), "full");
        batch.take(1).expect("a batch");
        // An empty batch takes one entry of any size, and then nothing more.
        assert!(batch.fits(MAX_BATCH_BYTES + 1));
        push(&mut batch, 3, MAX_BATCH_BYTES + 1);
        assert!(!batch.fits(1));
        let (m, _) = batch.take(1).expect("a batch");
        assert_eq!(m.entries.len(), 1);
        assert!(batch.fits(MAX_BATCH_BYTES), "the byte count starts over");
    }
}
