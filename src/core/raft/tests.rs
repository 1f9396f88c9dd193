//! The Raft task in-process, on a real (temporary) data dir: a lone member
//! elects itself, answers proposals after apply, persists the applied
//! index with the state, and does not re-apply on restart; a full event
//! queue refuses instead of blocking.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::proto::{PbMember, PbPutRequest};
use prost::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, Message};

use super::*;
use crate::core::errors::EtcdError;
use crate::core::mvcc::ApplyResponse;
use crate::core::raft::proposal::{ConfChangeContext, Op};
use crate::core::raft::snapshot::SnapshotSource;
use crate::core::types::{ClusterId, MemberId};

/// Sends nothing: a lone member has no peers.
struct NoPeers;

impl Outbox for NoPeers {
    fn send(&self, _msgs: Vec<Message>) {}
    fn add_peer(&self, _id: MemberId, _peer_urls: Vec<String>) {}
    fn remove_peer(&self, _id: MemberId) {}
}

const ME: u64 = 1;

/// The bootstrap log of a one-member cluster (as `server::bootstrap` writes it).
fn bootstrap_entries() -> Vec<Entry> {
    let mut cc = ConfChange::default();
    cc.set_change_type(ConfChangeType::AddNode);
    cc.node_id = ME;
    cc.set_context(
        ConfChangeContext {
            id: 0,
            origin: 0,
            member: Some(PbMember {
                id: ME,
                name: "solo".into(),
                ..Default::default()
            }),
        }
        .encode_to_vec()
        .into(),
    );
    let mut e = Entry::default();
    e.set_entry_type(EntryType::EntryConfChange);
    e.term = 1;
    e.index = 1;
    e.set_data(
        protobuf::Message::write_to_bytes(&cc)
            .expect("encode")
            .into(),
    );
    vec![e]
}

/// Starts the task on `dir` (bootstrapping it the first time).
/// The lone test member's configuration, data under `dir`.
fn node_config(dir: &std::path::Path, storage: &Storage) -> NodeConfig {
    NodeConfig {
        member_id: MemberId(ME),
        cluster_id: ClusterId(7),
        tick: Duration::from_millis(10),
        election_ticks: 10,
        snapshot_count: 10_000,
        auto_promote: false,
        data_dir: dir.to_path_buf(),
        events: Arc::new(NoWatchers),
        lessor: Arc::new(Lessor::default()),
        auth: Arc::new(crate::core::auth::AuthStore::new(
            storage.clone(),
            Duration::from_secs(300),
            4,
            false,
        )),
    }
}

fn start_on(dir: &std::path::Path) -> (Storage, NodeHandle, thread::RaftThread) {
    let storage = Storage::open(dir).expect("open storage");
    let source = SnapshotSource::new(storage.clone());
    let log = match RaftLog::load(storage.clone(), source.clone()).expect("load") {
        Some(log) => log,
        None => {
            RaftLog::bootstrap(storage.clone(), source, bootstrap_entries()).expect("bootstrap")
        }
    };
    let mut thread = thread::RaftThread::spawn().expect("the raft thread");
    let handle = start(
        node_config(dir, &storage),
        storage.clone(),
        log,
        Box::new(NoPeers),
        &mut thread,
    )
    .expect("start the raft task");
    (storage, handle, thread)
}

/// A stored commit index past the end of the log (a damaged disk) is an
/// error from `start`, not a panic inside raft-rs.
#[test]
fn a_stored_commit_past_the_log_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(dir.path()).expect("open storage");
    let source = SnapshotSource::new(storage.clone());
    let mut log =
        RaftLog::bootstrap(storage.clone(), source, bootstrap_entries()).expect("bootstrap");
    let mut hs = log.hard_state().clone();
    hs.commit = 10_000;
    log.set_hard_state(&hs).expect("hard state");
    storage.sync().expect("sync");
    let mut thread = thread::RaftThread::spawn().expect("the raft thread");
    let started = start(
        node_config(dir.path(), &storage),
        storage,
        log,
        Box::new(NoPeers),
        &mut thread,
    );
    let err = started.err().expect("started on a damaged state");
    assert!(err.to_string().contains("stored state"), "{err}");
}

async fn put(node: &NodeHandle, key: &str) -> i64 {
    let op = Op::Put(PbPutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    });
    // The lone member may still be electing itself: retry until it leads.
    for _ in 0..200 {
        match node.propose(op.clone(), Duration::from_secs(5)).await {
            Ok(ApplyResponse::Put(r)) => return r.header.expect("header").revision,
            Ok(other) => panic!("unexpected answer {other:?}"),
            Err(EtcdError::NoLeader | EtcdError::LeaderChanged) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("put {key}: {e}"),
        }
    }
    panic!("no leader after 4 s");
}

async fn stop(node: NodeHandle, thread: thread::RaftThread) {
    node.send_eventually(Event::Shutdown)
        .await
        .expect("shutdown");
    thread.finish().await;
    assert!(
        node.status.failed.borrow().is_none(),
        "the raft task failed: {:?}",
        node.status.failed.borrow()
    );
}

#[tokio::test]
async fn a_lone_member_applies_persists_and_does_not_reapply_after_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (storage, node, thread) = start_on(dir.path());
    assert_eq!(put(&node, "a").await, 2);
    assert_eq!(put(&node, "b").await, 3);
    node.linearizable_barrier(Duration::from_secs(5))
        .await
        .expect("a linearizable barrier on the leader");
    let applied = node.applied.borrow().0;
    assert!(applied >= 3, "applied index {applied}");
    assert_eq!(node.status.leader(), Some(MemberId(ME)));
    stop(node, thread).await;
    assert_eq!(
        storage.meta_u64(storage::META_APPLIED_INDEX).expect("meta"),
        applied,
        "the applied index is stored with the state"
    );
    drop(storage);

    // Restart: the log is replayed from the stored applied index, so the
    // revision goes on from 3 rather than repeating the puts.
    let (_storage, node, thread) = start_on(dir.path());
    assert!(node.applied.borrow().0 >= applied);
    assert_eq!(put(&node, "c").await, 4);
    stop(node, thread).await;
}

/// A handle whose events go to `tx`, with no Raft task behind it.
fn detached_handle(tx: mpsc::Sender<Event>) -> NodeHandle {
    NodeHandle {
        tx,
        status: Arc::new(NodeStatus::new(MemberId(ME), ClusterId(7))),
        applied: watch::channel(LogIndex(0)).1,
        compact_done: watch::channel(Revision(0)).1,
        peer_bytes: crate::core::budget::ByteBudget::default(),
    }
}

#[tokio::test]
async fn a_full_event_queue_refuses_instead_of_blocking() {
    let (tx, _rx) = mpsc::channel(1);
    let node = detached_handle(tx);
    node.send(Event::Shutdown).expect("room for one");
    assert!(matches!(
        node.send(Event::Shutdown),
        Err(EtcdError::TooManyRequests)
    ));
    let (reply, _) = oneshot::channel();
    assert!(matches!(
        node.send(Event::ReadIndex { renew: None, reply }),
        Err(EtcdError::TooManyRequests)
    ));
}

#[test]
fn read_contexts_carry_renewals_and_nothing_else_is_one() {
    assert_eq!(read_context(7, &[]), 7u64.to_be_bytes().to_vec());
    assert_eq!(renewals_in(&read_context(7, &[])), Vec::<LeaseId>::new());
    let leases = [LeaseId(0x1234_5678), LeaseId(-1), LeaseId(9)];
    let ctx = read_context(7, &leases);
    assert_eq!(storage::be_u64(&ctx), 7, "the id still comes first");
    assert_eq!(renewals_in(&ctx), leases.to_vec());
    // A peer's odd context is never mistaken for renewals.
    assert_eq!(renewals_in(&ctx[..16]), Vec::<LeaseId>::new());
    assert_eq!(
        renewals_in(&[ctx.clone(), vec![0]].concat()),
        Vec::<LeaseId>::new()
    );
    assert_eq!(renewals_in(&ctx[..9]), Vec::<LeaseId>::new());
    assert_eq!(renewals_in(b""), Vec::<LeaseId>::new());
}

#[tokio::test]
async fn a_lone_leader_renews_on_read_index_without_a_log_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_storage, node, thread) = start_on(dir.path());
    // Elected, and the new term's empty entry applied.
    put(&node, "a").await;
    // A put is answered as it is applied, before the Ready that applied it
    // records the log's last index in the status; a read is answered after
    // that, so one renewal first makes `before` current.
    node.renew_lease(LeaseId(41), Duration::from_secs(5))
        .await
        .expect("a first renewal");
    let before = node.status.raft_index();
    node.renew_lease(LeaseId(42), Duration::from_secs(5))
        .await
        .expect("a renewal of an unknown lease is still a barrier");
    assert_eq!(node.status.raft_index(), before, "no entry for a renewal");
    stop(node, thread).await;
}

/// Proposals applied together share one transaction; one that fails in
/// the middle (an unknown lease) must leave nothing behind while those
/// around it apply with consecutive revisions (the run is re-applied up
/// to the failure, see `apply_normal_run`).
#[tokio::test]
async fn a_failed_entry_among_many_applied_together_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (storage, node, thread) = start_on(dir.path());
    let base = put(&node, "first").await;
    let ops: Vec<(String, Op)> = (0..90)
        .map(|i| {
            let (key, lease) = if i % 3 == 1 {
                (format!("bad{i:02}"), 999)
            } else {
                (format!("ok{i:02}"), 0)
            };
            let op = Op::Put(PbPutRequest {
                key: key.clone().into_bytes(),
                value: b"v".to_vec(),
                lease,
                ..Default::default()
            });
            (key, op)
        })
        .collect();
    let answers = futures::future::join_all(
        ops.iter()
            .map(|(_, op)| node.propose(op.clone(), Duration::from_secs(5))),
    )
    .await;
    let mut revisions = Vec::new();
    for ((key, _), answer) in ops.iter().zip(answers) {
        match answer {
            Ok(ApplyResponse::Put(r)) if key.starts_with("ok") => {
                revisions.push(r.header.expect("header").revision);
            }
            Err(EtcdError::LeaseNotFound) if key.starts_with("bad") => {}
            other => panic!("{key}: unexpected answer {other:?}"),
        }
    }
    revisions.sort_unstable();
    let expected: Vec<i64> = (base + 1..=base + 60).collect();
    assert_eq!(revisions, expected, "one revision per applied put, no gaps");
    let read = storage.db.read_tx();
    let revs = crate::core::mvcc::revisions(&read, &storage).expect("revisions");
    assert_eq!(revs.current, base + 60);
    for (key, _) in &ops {
        let stored = fjall::Readable::get(&read, &storage.kv, key.as_bytes()).expect("get");
        assert_eq!(stored.is_some(), key.starts_with("ok"), "{key}");
    }
    drop(read);

    // More good entries than one apply transaction takes: they commit in
    // several, and still get consecutive revisions.
    let puts: Vec<Op> = (0..600)
        .map(|i| {
            Op::Put(PbPutRequest {
                key: format!("many{i:03}").into_bytes(),
                value: b"v".to_vec(),
                ..Default::default()
            })
        })
        .collect();
    let answers = futures::future::join_all(
        puts.iter()
            .map(|op| node.propose(op.clone(), Duration::from_secs(5))),
    )
    .await;
    let mut revisions: Vec<i64> = answers
        .into_iter()
        .map(|a| match a {
            Ok(ApplyResponse::Put(r)) => r.header.expect("header").revision,
            other => panic!("unexpected answer {other:?}"),
        })
        .collect();
    revisions.sort_unstable();
    let expected: Vec<i64> = (base + 61..=base + 660).collect();
    assert_eq!(revisions, expected);
    let read = storage.db.read_tx();
    let revs = crate::core::mvcc::revisions(&read, &storage).expect("revisions");
    assert_eq!(revs.current, base + 660);
    drop(read);
    stop(node, thread).await;
}

#[test]
fn the_raft_log_is_compacted_a_step_per_call_down_to_the_catch_up_entries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = Storage::open(dir.path()).expect("open storage");
    let source = SnapshotSource::new(storage.clone());
    let mut log = RaftLog::bootstrap(storage.clone(), source.clone(), bootstrap_entries())
        .expect("bootstrap");
    let last = 20_000u64;
    let entries: Vec<Entry> = (2..=last)
        .map(|index| Entry {
            term: 1,
            index,
            data: b"x".to_vec().into(),
            ..Default::default()
        })
        .collect();
    log.append(&entries).expect("append");
    storage.sync().expect("sync");

    // 20,000 applied, --snapshot-count 10,000: cut back to the last 5,000.
    let target = last - 5_000;
    let mut calls = 0;
    while log.snapshot_index() < target {
        let before = log.snapshot_index();
        log.compact_applied(last, 10_000).expect("compact");
        calls += 1;
        assert!(log.snapshot_index() > before, "every call makes progress");
        assert!(log.snapshot_index() - before <= crate::core::raft::log::COMPACT_STEP);
    }
    assert_eq!(log.snapshot_index(), target);
    assert_eq!(calls, target.div_ceil(crate::core::raft::log::COMPACT_STEP));
    // Nothing more to do until more is applied.
    log.compact_applied(last, 10_000).expect("compact");
    assert_eq!(log.snapshot_index(), target);

    use ::raft::Storage as _;
    assert_eq!(log.first_index().expect("first"), target + 1);
    assert_eq!(log.term(target).expect("term of the compacted index"), 1);
    let kept = log
        .entries(
            target + 1,
            last + 1,
            None,
            ::raft::GetEntriesContext::empty(false),
        )
        .expect("kept entries");
    assert_eq!(kept.len() as u64, last - target);
    assert!(log
        .entries(
            target,
            last + 1,
            None,
            ::raft::GetEntriesContext::empty(false)
        )
        .is_err());
    let on_disk = storage.raft_log.inner().iter().count() as u64;
    assert_eq!(
        on_disk,
        last - target,
        "removed entries are gone from storage"
    );

    // A restart finds the compacted log.
    drop(log);
    let log = RaftLog::load(storage.clone(), source)
        .expect("load")
        .expect("a log");
    assert_eq!(log.snapshot_index(), target);
    assert_eq!(log.last_index().expect("last"), last);
}

/// A publish for an id with no member record (removed before its publish
/// was applied, or never a member) creates no record and pins nothing.
#[tokio::test]
async fn a_publish_for_an_unknown_member_creates_no_record() {
    use crate::core::raft::proposal::MemberAttributes;
    let dir = tempfile::tempdir().expect("temp dir");
    let (storage, node, thread) = start_on(dir.path());
    put(&node, "elected").await;
    let publish = |id: u64| {
        Op::Publish(MemberAttributes {
            member_id: id,
            name: format!("m{id:x}"),
            client_urls: vec!["http://127.0.0.1:1".to_string()],
            peer_fingerprint: "ab".repeat(32),
        })
    };
    let answer = node.propose(publish(ME), Duration::from_secs(5)).await;
    assert!(matches!(answer, Ok(ApplyResponse::Done)), "{answer:?}");
    let answer = node.propose(publish(0xdead), Duration::from_secs(5)).await;
    assert!(
        matches!(answer, Err(EtcdError::MemberNotFound)),
        "{answer:?}"
    );
    assert!(crate::core::members::get(&storage, 0xdead)
        .expect("read")
        .is_none());
    let read = storage.db.read_tx();
    assert!(crate::core::members::pinned(&read, &storage, 0xdead)
        .expect("read")
        .is_none());
    assert!(crate::core::members::get(&storage, ME)
        .expect("read")
        .is_some_and(|m| m.name == format!("m{ME:x}")));
    drop(read);
    stop(node, thread).await;
}

/// Peer messages are bounded by bytes as well as by count: past the
/// budget they are dropped, and a handled message gives its bytes back.
#[tokio::test]
async fn peer_messages_share_a_byte_budget() {
    use crate::core::raft::handle::PEER_QUEUE_BYTES;
    let (tx, mut rx) = mpsc::channel(16);
    let node = detached_handle(tx);
    let big = PEER_QUEUE_BYTES / 2 + 1;
    node.send_step(Message::default(), big)
        .expect("room for one");
    assert!(matches!(
        node.send_step(Message::default(), big),
        Err(EtcdError::TooManyRequests)
    ));
    // Small messages still fit beside it.
    node.send_step(Message::default(), 1024)
        .expect("a small one");
    // Handling the big one frees its bytes.
    drop(rx.try_recv().expect("the big message"));
    node.send_step(Message::default(), big).expect("room again");
    // Alone, even a message larger than the budget is taken.
    while rx.try_recv().is_ok() {}
    node.send_step(Message::default(), 2 * PEER_QUEUE_BYTES)
        .expect("one message, however large");
}
