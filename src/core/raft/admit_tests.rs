//! Tests of [`super::refusal`]: every message of an honest in-memory
//! cluster (raft-rs nodes on `MemStorage`, with kvd's `raft_config`) passes it,
//! and each hostile message it refuses would have stopped raft-rs.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfState, Entry, EntryType, Message, MessageType};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};

use super::refusal;

fn node(id: u64, voters: &[u64]) -> RawNode<MemStorage> {
    let cfg = crate::core::raft::raft_config(id, 10, 0);
    let storage = MemStorage::new_with_conf_state(ConfState::from((voters.to_vec(), vec![])));
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    RawNode::new(&cfg, storage, &logger).expect("raw node")
}

/// Three members passing messages in memory; `cut` members neither send
/// nor receive. Every delivered message must pass [`refusal`].
struct Net {
    nodes: BTreeMap<u64, RawNode<MemStorage>>,
    cut: HashSet<u64>,
    kinds: BTreeSet<i32>,
}

impl Net {
    fn new() -> Self {
        let ids = [1, 2, 3];
        let nodes = ids.iter().map(|&id| (id, node(id, &ids))).collect();
        let mut net = Net {
            nodes,
            cut: HashSet::new(),
            kinds: BTreeSet::new(),
        };
        net.get(1).campaign().expect("campaign");
        net.settle();
        assert_eq!(net.get(1).raft.state, StateRole::Leader);
        net
    }

    fn get(&mut self, id: u64) -> &mut RawNode<MemStorage> {
        self.nodes.get_mut(&id).expect("node")
    }

    fn apply(n: &mut RawNode<MemStorage>, entries: Vec<Entry>) {
        for e in entries {
            if e.get_entry_type() == EntryType::EntryConfChange {
                let mut cc = ConfChange::default();
                cc.merge_from_bytes(&e.data).expect("conf change");
                let cs = n.apply_conf_change(&cc).expect("apply conf change");
                n.mut_store().wl().set_conf_state(cs);
            }
        }
    }

    /// Runs every node's Ready in kvd's order; the messages they send.
    fn ready_all(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        for n in self.nodes.values_mut() {
            if !n.has_ready() {
                continue;
            }
            let mut rd = n.ready();
            out.extend(rd.take_messages());
            if !rd.snapshot().is_empty() {
                let snapshot = rd.snapshot().clone();
                n.mut_store()
                    .wl()
                    .apply_snapshot(snapshot)
                    .expect("snapshot");
            }
            Self::apply(n, rd.take_committed_entries());
            n.mut_store().wl().append(rd.entries()).expect("append");
            if let Some(hs) = rd.hs() {
                n.mut_store().wl().set_hardstate(hs.clone());
            }
            out.extend(rd.take_persisted_messages());
            let mut light = n.advance(rd);
            if let Some(commit) = light.commit_index() {
                n.mut_store().wl().mut_hard_state().set_commit(commit);
            }
            out.extend(light.take_messages());
            Self::apply(n, light.take_committed_entries());
            n.advance_apply();
        }
        out
    }

    fn settle(&mut self) {
        for _ in 0..100 {
            let msgs = self.ready_all();
            if msgs.is_empty() {
                return;
            }
            for m in msgs {
                if self.cut.contains(&m.to) || self.cut.contains(&m.from) {
                    continue;
                }
                let Some(n) = self.nodes.get_mut(&m.to) else {
                    continue;
                };
                assert_eq!(
                    refusal(&n.raft, &m),
                    None,
                    "an honest message refused: {m:?}"
                );
                self.kinds.insert(m.get_msg_type() as i32);
                let _ = n.step(m);
            }
        }
    }

    fn tick(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for n in self.nodes.values_mut() {
                n.tick();
            }
            self.settle();
        }
    }

    fn leader(&self) -> u64 {
        self.nodes
            .iter()
            .find(|(id, n)| n.raft.state == StateRole::Leader && !self.cut.contains(id))
            .map(|(id, _)| *id)
            .expect("a leader")
    }
}

#[test]
fn every_message_of_an_honest_cluster_passes() {
    let mut net = Net::new();
    // Proposals through a follower (forwarded) and the leader.
    for i in 0..20u8 {
        let via = if i % 2 == 0 { 2 } else { 1 };
        net.get(via).propose(vec![], vec![i]).expect("propose");
        net.settle();
    }
    // Batches of proposals, as the Raft task steps them
    // (`propose::ProposalBatch`): forwarded by a follower, and on the leader.
    for via in [3, 1] {
        let before = net.get(1).raft.raft_log.committed;
        let mut batch = crate::core::raft::propose::ProposalBatch::default();
        for i in 0..5u8 {
            let (reply, _answer) = tokio::sync::oneshot::channel();
            batch.push(u64::from(i), vec![i], reply);
        }
        let (m, waiting) = batch.take(via).expect("a batch");
        assert_eq!(waiting.len(), 5);
        net.get(via).step(m).expect("step the batch");
        net.settle();
        assert_eq!(net.get(1).raft.raft_log.committed, before + 5, "via {via}");
    }
    // A read index through a follower.
    net.get(3).read_index(b"read".to_vec());
    net.settle();
    // Member 3 falls behind a compacted log: it gets a snapshot.
    net.cut.insert(3);
    for i in 0..30u8 {
        net.get(1).propose(vec![], vec![i]).expect("propose");
        net.settle();
    }
    let applied = net.get(1).raft.raft_log.applied;
    net.get(1)
        .mut_store()
        .wl()
        .compact(applied)
        .expect("compact");
    net.cut.clear();
    net.tick(5);
    // A leader transfer, then a leader cut off and replaced.
    net.get(1).transfer_leader(2);
    net.tick(5);
    assert_eq!(net.leader(), 2);
    net.cut.insert(2);
    net.tick(40);
    assert_ne!(net.leader(), 2);
    net.cut.clear();
    net.tick(20);
    let leader = net.leader();
    net.get(leader)
        .propose(vec![], b"end".to_vec())
        .expect("propose");
    net.tick(5);

    let commits: BTreeSet<u64> = net
        .nodes
        .values()
        .map(|n| n.raft.raft_log.committed)
        .collect();
    assert_eq!(commits.len(), 1, "every member has the same log");
    use MessageType::*;
    for kind in [
        MsgAppend,
        MsgAppendResponse,
        MsgHeartbeat,
        MsgHeartbeatResponse,
        MsgRequestPreVote,
        MsgRequestPreVoteResponse,
        MsgRequestVote,
        MsgRequestVoteResponse,
        MsgPropose,
        MsgReadIndex,
        MsgReadIndexResp,
        MsgSnapshot,
        MsgTimeoutNow,
    ] {
        assert!(
            net.kinds.contains(&(kind as i32)),
            "no {kind:?} was exchanged"
        );
    }
}

/// A message from `from` to `to` of `kind` at the cluster's term.
fn message(net: &mut Net, kind: MessageType, from: u64, to: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = to;
    m.term = net.get(to).raft.term;
    m
}

#[test]
fn messages_that_would_stop_raft_rs_are_refused() {
    use MessageType::*;
    type Poison = (&'static str, fn(&mut Net) -> Message);
    let poisons: Vec<Poison> = vec![
        ("an empty proposal to the leader", |net| {
            let mut m = message(net, MsgPropose, 2, 1);
            m.term = 0;
            m
        }),
        ("a read index without context to the leader", |net| {
            let mut m = message(net, MsgReadIndex, 2, 1);
            m.term = 0;
            m
        }),
        ("a heartbeat committing past the follower's log", |net| {
            let mut m = message(net, MsgHeartbeat, 1, 2);
            m.commit = net.get(2).raft.raft_log.last_index() + 10;
            m
        }),
        ("an append after a missing entry of term 0", |net| {
            let mut m = message(net, MsgAppend, 1, 2);
            m.index = net.get(2).raft.raft_log.last_index() + 10;
            m.log_term = 0;
            m.commit = m.index;
            m
        }),
        (
            "an answer to a read index, without a term, past the log",
            |net| {
                let mut m = message(net, MsgReadIndexResp, 1, 2);
                m.term = 0;
                m.index = net.get(2).raft.raft_log.last_index() + 10;
                m.entries.push(Entry {
                    data: b"ctx".to_vec().into(),
                    ..Default::default()
                });
                m
            },
        ),
        ("a snapshot naming a member voter and learner", |net| {
            let mut m = message(net, MsgSnapshot, 1, 2);
            let last = net.get(2).raft.raft_log.last_index();
            let term = m.term;
            let meta = m.mut_snapshot().mut_metadata();
            meta.index = last + 100;
            meta.term = term;
            meta.set_conf_state(ConfState::from((vec![1, 2, 3], vec![3])));
            m
        }),
    ];
    for (what, make) in poisons {
        let mut net = Net::new();
        net.get(1).propose(vec![], b"x".to_vec()).expect("propose");
        net.settle();
        let m = make(&mut net);
        let to = m.to;
        assert!(
            refusal(&net.get(to).raft, &m).is_some(),
            "{what}: not refused"
        );
        let stepped = catch_unwind(AssertUnwindSafe(|| {
            let _ = net.get(to).step(m);
            net.settle();
        }));
        assert!(stepped.is_err(), "{what}: raft-rs took it without stopping");
    }
    // An index raft-rs's `+ 1` overflows on (a panic with overflow checks,
    // a wrapped progress without them).
    let mut net = Net::new();
    let mut m = message(&mut net, MsgAppendResponse, 2, 1);
    m.index = u64::MAX;
    assert!(refusal(&net.get(1).raft, &m).is_some());
}
