//! Checks on a peer's Raft message before it is stepped into raft-rs.
//!
//! raft-rs trusts its peers: a message no honest raft-rs 0.7 member sends
//! can reach one of its fatal checks (a commit index beyond the log, an
//! empty proposal, entries out of order, a malformed configuration in a
//! snapshot, a term of 0 that skips its term checks) and stop the member.
//! [`refusal`] names what is wrong with such a message so that the Raft
//! task drops it instead; every message an honest member sends passes.
//! The conditions come from reading raft-rs 0.7's `step` paths (raft.rs,
//! raft_log.rs `maybe_append`/`commit_to`, log_unstable.rs, read_only.rs).
//! Raft is not Byzantine-tolerant: a member holding valid credentials can
//! still disrupt the cluster (win elections, send wrong entries); what
//! this prevents is a single message crashing a member.

use raft::eraftpb::{ConfState, Message, MessageType};
use raft::{Raft, StateRole, Storage};

/// Largest term, log index or commit index a peer may name: far beyond any
/// real log, and far enough below `u64::MAX` that raft-rs's `+ 1`s cannot
/// overflow.
const MAX_NUMBER: u64 = 1 << 62;

/// Why `m` must not be stepped into `raft`, or `None` when it may be.
pub(super) fn refusal<S: Storage>(raft: &Raft<S>, m: &Message) -> Option<&'static str> {
    use MessageType::*;
    if m.to != raft.id {
        return Some("a raft message addressed to another member");
    }
    if m.term > MAX_NUMBER || m.index > MAX_NUMBER || m.commit > MAX_NUMBER {
        return Some("a raft message whose term or index is out of range");
    }
    let log = &raft.raft_log;
    let last = log.last_index();
    let forwarded = matches!(m.get_msg_type(), MsgPropose | MsgReadIndex);
    // Only forwarded requests travel without a term (raft-rs `send`); a
    // term of 0 otherwise skips raft-rs's term checks, and a forwarded
    // request with a term is fatal when it is forwarded again.
    if forwarded != (m.term == 0) {
        return Some("a raft message whose term does not fit its type");
    }
    match m.get_msg_type() {
        MsgPropose if m.entries.is_empty() => Some("an empty proposal"),
        MsgReadIndex if m.entries.len() != 1 || m.from == raft.id => {
            Some("a read index request without exactly one context")
        }
        MsgReadIndexResp if m.entries.len() != 1 => {
            Some("a read index answer without exactly one context")
        }
        MsgHeartbeat if m.commit > last => {
            Some("a heartbeat whose commit index is beyond this member's log")
        }
        MsgAppend => append_refusal(raft, m),
        MsgAppendResponse => {
            if m.index > last {
                Some("an append answer beyond this member's log")
            } else if m.request_snapshot != 0 {
                // kvd never asks for a snapshot this way.
                Some("an append answer asking for a snapshot")
            } else if m.reject && m.reject_hint > m.index {
                Some("an append rejection hinting past its index")
            } else {
                None
            }
        }
        MsgSnapshot => snapshot_refusal(m),
        MsgRequestVoteResponse | MsgRequestPreVoteResponse
            if matches!(raft.state, StateRole::Candidate | StateRole::PreCandidate)
                && m.term == raft.term
                && !m.reject
                && log.persisted != last =>
        {
            // An honest vote answers a request sent after this member's
            // entries were persisted.
            Some("a vote for a request this member has not sent")
        }
        MsgTransferLeader
            if raft.state != StateRole::Leader || !raft.prs().conf().voters().contains(m.from) =>
        {
            Some("a leader transfer that is not for this leader")
        }
        MsgTimeoutNow
            if raft.state != StateRole::Follower
                || m.term != raft.term
                || m.from != raft.leader_id =>
        {
            Some("a campaign request that is not from this member's leader")
        }
        _ => None,
    }
}

/// `MsgAppend`: its entries follow `m.index` one by one, with terms that
/// never fall and never pass the message's; one that does not match this
/// member's log (and so may be appended) names a real previous entry.
fn append_refusal<S: Storage>(raft: &Raft<S>, m: &Message) -> Option<&'static str> {
    let log = &raft.raft_log;
    if m.index < log.committed {
        // raft-rs answers with its commit index and looks no further.
        return None;
    }
    if m.index > log.last_index() && m.log_term == 0 {
        return Some("an append after a missing entry of term 0");
    }
    // The entry at `m.index` in an honest leader's log follows this
    // member's committed entries, so its term is at least theirs (this
    // also bounds raft-rs's search for a conflicting term).
    if m.log_term < log.term(log.committed).unwrap_or(0) {
        return Some("an append whose previous term is older than the committed entries");
    }
    let mut term = m.log_term;
    for (i, e) in m.entries.iter().enumerate() {
        if e.index != m.index + 1 + i as u64 {
            return Some("an append whose entries are not consecutive");
        }
        if e.term < term.max(1) || e.term > m.term {
            return Some("an append whose entry terms are out of order");
        }
        term = e.term;
    }
    None
}

/// `MsgSnapshot`: a real index and term, and a configuration raft-rs can
/// restore (raft.rs `restore`, confchange `restore`).
fn snapshot_refusal(m: &Message) -> Option<&'static str> {
    let meta = m.get_snapshot().get_metadata();
    if meta.index == 0 || meta.index > MAX_NUMBER || meta.term == 0 || meta.term > m.term {
        return Some("a snapshot with an impossible index or term");
    }
    if !conf_state_is_valid(meta.get_conf_state()) {
        return Some("a snapshot with an invalid configuration");
    }
    None
}

/// Whether raft-rs can restore `cs` without a fatal error: no id 0, no id
/// twice, some voter, learners apart from voters (old and new), and the
/// joint-consensus fields only during a joint configuration.
pub(super) fn conf_state_is_valid(cs: &ConfState) -> bool {
    let lists = [
        &cs.voters,
        &cs.learners,
        &cs.voters_outgoing,
        &cs.learners_next,
    ];
    for list in lists {
        let mut sorted = list.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != list.len() || sorted.first() == Some(&0) {
            return false;
        }
    }
    let disjoint = |a: &[u64], b: &[u64]| !a.iter().any(|id| b.contains(id));
    !cs.voters.is_empty()
        && disjoint(&cs.voters, &cs.learners)
        && disjoint(&cs.voters_outgoing, &cs.learners)
        && disjoint(&cs.voters, &cs.learners_next)
        && cs
            .learners_next
            .iter()
            .all(|id| cs.voters_outgoing.contains(id))
        && (!cs.voters_outgoing.is_empty() || (cs.learners_next.is_empty() && !cs.auto_leave))
}

#[cfg(test)]
#[path = "admit_tests.rs"]
mod tests;
