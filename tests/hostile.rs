//! Hostile input, as an attacker on the client or peer port would send it:
//! every request gets an answer (etcd's code and message), no member stops,
//! nothing is half-written, and memory stays flat.
//!
//! - nested `Txn`s of every depth from 1 to 200 through every member of a
//!   3-member cluster, then a full restart with the same data;
//! - a Raft entry that cannot be decoded (the poison pill of issue 7) placed
//!   in a member's log: it fails alone, the member keeps serving;
//! - bad requests at the gRPC boundary (sizes, op counts, limits, ranges,
//!   empty keys, leases, watch ids, 10,000 watches on a stream, 100,000
//!   streams opened and dropped);
//! - garbage on the peer port (undecodable frames, lengths of 4 GiB, unknown
//!   stream kinds, a heartbeat that would make raft-rs panic);
//! - a flood of QUIC handshakes from an address that never answers, and
//!   handshakes that one host stalls after QUIC's retry, on the peer port
//!   of a member while it restarts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcd_client::proto::{
    PbPutRequest, PbPutResponse, PbTxnRequest, PbTxnRequestOp, PbTxnResponse,
};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, LeaseTimeToLiveOptions, PutOptions, Txn,
    TxnOp, WatchOptions,
};
use tokio::sync::mpsc;
use tonic::Code;

use common::{
    assert_status, current_revision, raw, wait_for, Cluster, ClusterOptions, READY_TIMEOUT,
    REQUEST_TIMEOUT,
};

/// kvd's deepest accepted nesting (`core::api::kv::MAX_TXN_NESTING`).
const MAX_TXN_NESTING: usize = kvd::core::api::kv::MAX_TXN_NESTING;

/// A txn with `nested` txns below it, one op per level, a put of `key` at
/// the bottom.
fn nested_txn(nested: usize, key: &str) -> Txn {
    let mut txn = Txn::new().and_then(vec![TxnOp::put(key, "deep", None)]);
    for _ in 0..nested {
        txn = Txn::new().and_then(vec![TxnOp::txn(txn)]);
    }
    txn
}

/// A key's value as every live member serves it (linearizable).
async fn value_everywhere(cluster: &Cluster, key: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for i in cluster.live() {
        let mut c = cluster.client(i).await;
        let resp = c.get(key, None).await.expect("get");
        out.push(
            resp.kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        );
    }
    out
}

/// Keys under `prefix` and the revision, as member `i` serves them.
async fn dump(cluster: &Cluster, i: usize, prefix: &str) -> (Vec<String>, i64) {
    let mut c = cluster.client(i).await;
    let resp = c
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .expect("dump");
    let keys = resp
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect();
    (keys, resp.header().expect("header").revision())
}

#[tokio::test(flavor = "multi_thread")]
async fn nested_txns_of_every_depth_through_every_member_then_a_full_restart() {
    let mut cluster = Cluster::start(3).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(cluster.client(i).await);
    }
    for nested in 1..=200usize {
        let i = nested % 3;
        let key = format!("nested/{nested:03}");
        let result = clients[i].txn(nested_txn(nested, &key)).await;
        if nested <= MAX_TXN_NESTING {
            let resp = result.unwrap_or_else(|e| panic!("nesting {nested} via member {i}: {e}"));
            assert!(resp.succeeded());
        } else {
            match result {
                Err(etcd_client::Error::GRpcStatus(s)) => {
                    assert_eq!(s.code(), Code::InvalidArgument, "nesting {nested}: {s:?}");
                    assert!(
                        s.message() == "etcdserver: too many nested transactions in txn request"
                            || s.message().starts_with("failed to decode Protobuf message"),
                        "nesting {nested}: {s:?}"
                    );
                }
                other => panic!("nesting {nested}: expected InvalidArgument, got {other:?}"),
            }
        }
    }
    cluster.assert_running();
    // Every member serves reads and writes, and they agree.
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .put(format!("after/{i}"), "ok", None)
            .await
            .expect("put after the nested txns");
    }
    let expected: Vec<String> = (1..=MAX_TXN_NESTING)
        .map(|n| format!("nested/{n:03}"))
        .collect();
    let before: Vec<_> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(dump(&cluster, i, "").await);
        }
        v
    };
    for (keys, _) in &before {
        let nested: Vec<&String> = keys.iter().filter(|k| k.starts_with("nested/")).collect();
        assert_eq!(nested, expected.iter().collect::<Vec<_>>());
    }
    assert!(
        before.windows(2).all(|w| w[0] == w[1]),
        "members agree: {before:?}"
    );
    assert_eq!(
        value_everywhere(&cluster, "nested/001").await,
        vec![Some("deep".to_string()); 3]
    );

    // A full restart comes back with the same data.
    cluster.kill_all();
    cluster.start_all();
    cluster.wait_ready().await;
    for (i, expected) in before.iter().enumerate() {
        let after = wait_for("restarted member serves", READY_TIMEOUT, || {
            let cluster = &cluster;
            async move {
                let (keys, rev) = dump(cluster, i, "").await;
                if rev < expected.1 {
                    return Err(format!("member {i} at revision {rev}"));
                }
                Ok((keys, rev))
            }
        })
        .await;
        assert_eq!(&after, expected, "member {i} after restart");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_entry_in_the_log_fails_alone_and_the_member_keeps_serving() {
    use kvd::core::raft::log::RaftLog;
    use kvd::core::raft::proposal::{Op, RaftRequest};
    use kvd::core::raft::snapshot::SnapshotSource;
    use kvd::core::storage::Storage;
    use prost::Message as _;
    use raft::Storage as _;

    let mut cluster = Cluster::start(1).await;
    let mut c = cluster.client(0).await;
    c.put("before", "1", None).await.expect("put");
    let rev = current_revision(&c).await;
    cluster.members[0].server.terminate();
    cluster.members[0]
        .server
        .wait_exit(Duration::from_secs(10))
        .expect("member stops on SIGTERM");

    // The poison pill: a txn nested 60 levels inside a RaftRequest, beyond
    // prost's recursion limit, as the API let through before issue 7.
    let mut txn = PbTxnRequest {
        success: vec![PbTxnRequestOp {
            request: Some(etcd_client::proto::PbTxnOpRequest::RequestPut(
                PbPutRequest {
                    key: b"poison".to_vec(),
                    value: b"x".to_vec(),
                    ..Default::default()
                },
            )),
        }],
        ..Default::default()
    };
    for _ in 0..60 {
        txn = PbTxnRequest {
            success: vec![PbTxnRequestOp {
                request: Some(etcd_client::proto::PbTxnOpRequest::RequestTxn(txn)),
            }],
            ..Default::default()
        };
    }
    let data = RaftRequest {
        id: 1,
        origin: 1,
        op: Some(Op::Txn(txn)),
        ..RaftRequest::default()
    }
    .encode_to_vec();
    {
        let storage = Storage::open(&cluster.members[0].data_dir).expect("open data dir");
        let mut log = RaftLog::load(storage.clone(), SnapshotSource::new(storage.clone()))
            .expect("load raft log")
            .expect("a raft log");
        let state = log.initial_state().expect("raft state");
        let entry = raft::eraftpb::Entry {
            index: log.last_index().expect("last index") + 1,
            term: state.hard_state.term,
            data: data.into(),
            ..Default::default()
        };
        log.append(&[entry]).expect("append the entry");
        storage.sync().expect("sync");
    }
    // Twice: the entry is applied on the first start, then stays in the log.
    for start in 0..2 {
        cluster.members[0].server.restart();
        cluster.wait_ready().await;
        let mut c = cluster.client(0).await;
        c.put(format!("after/{start}"), "ok", None)
            .await
            .expect("the member serves writes");
        let resp = c.get("poison", None).await.expect("get");
        assert!(
            resp.kvs().is_empty(),
            "nothing of the malformed entry is written"
        );
        assert_eq!(
            current_revision(&c).await,
            rev + 1 + start as i64,
            "only the puts moved the revision"
        );
        cluster.assert_running();
    }
    assert!(
        cluster.members[0]
            .server
            .log()
            .contains("malformed request entry"),
        "the member logged the entry it could not decode"
    );
}

/// A single member for the boundary checks.
async fn single(extra: &[&str]) -> (Cluster, Client) {
    let cluster = Cluster::start_with(
        1,
        ClusterOptions {
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            ..ClusterOptions::default()
        },
    )
    .await;
    let client = cluster.client(0).await;
    (cluster, client)
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_at_and_past_the_size_limits() {
    let (cluster, mut c) = single(&["--max-request-bytes", "4096"]).await;
    let rev = current_revision(&c).await;
    // At the limit (value + key + framing just under 4096): accepted.
    c.put("at", vec![b'x'; 4000], None)
        .await
        .expect("put at the limit");
    // Past --max-request-bytes, within the gRPC allowance: etcd's own check.
    assert_status(
        c.put("past", vec![b'x'; 5000], None).await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    // Past --max-request-bytes + 512 KiB: refused by the gRPC layer before
    // decoding, as grpc-go does.
    let channel = raw::channel(&cluster.endpoint(0)).await;
    let big = PbPutRequest {
        key: b"huge".to_vec(),
        value: vec![b'x'; 600 * 1024],
        ..Default::default()
    };
    let err = raw::unary::<_, PbPutResponse>(&channel, "/etcdserverpb.KV/Put", big)
        .await
        .expect_err("oversized message refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .starts_with("grpc: received message larger than max ("),
        "{err:?}"
    );
    // Same for the other services (here: Lease).
    let lease = etcd_client::proto::PbLeaseGrantRequest { ttl: 10, id: 0 };
    let padded = lease.encode_padded(600 * 1024);
    let err = raw::unary::<_, etcd_client::proto::PbLeaseGrantResponse>(
        &channel,
        "/etcdserverpb.Lease/LeaseGrant",
        RawBytes(padded),
    )
    .await
    .expect_err("oversized lease grant refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        current_revision(&c).await,
        rev + 1,
        "only the put at the limit wrote"
    );
}

/// Raw bytes sent as a message (for requests no prost type would build).
#[derive(Clone, Debug, Default, PartialEq)]
struct RawBytes(Vec<u8>);

impl prost::Message for RawBytes {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Appends an unknown field of `pad` bytes to a message's encoding, which a
/// decoder must read (and skip) in full.
trait EncodePadded {
    fn encode_padded(&self, pad: usize) -> Vec<u8>;
}

impl<M: prost::Message> EncodePadded for M {
    fn encode_padded(&self, pad: usize) -> Vec<u8> {
        let mut out = self.encode_to_vec();
        // Field 1000, wire type 2 (length-delimited).
        prost::encoding::encode_key(1000, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(pad as u64, &mut out);
        out.resize(out.len() + pad, 0);
        out
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn txn_op_counts_follow_etcds_budget_and_empty_ops_are_refused() {
    let (_cluster, mut c) = single(&["--max-txn-ops", "8"]).await;
    let rev = current_revision(&c).await;
    let puts = |prefix: &str, n: usize| -> Vec<TxnOp> {
        (0..n)
            .map(|i| TxnOp::put(format!("{prefix}/{i}"), "v", None))
            .collect()
    };
    // 8 at the top level is fine, 9 is not.
    c.txn(Txn::new().and_then(puts("top", 8)))
        .await
        .expect("8 ops");
    assert_status(
        c.txn(Txn::new().and_then(puts("top9", 9))).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    // A nested txn gets its parent's budget minus the parent's width: with
    // 3 ops at the top, a nested txn may hold 5, not 6 (etcd's
    // checkRequestOp(maxTxnOps - opc)).
    let with_nested = |n: usize| {
        let mut ops = puts("outer", 2);
        ops.push(TxnOp::txn(
            Txn::new().and_then(puts(&format!("inner{n}"), n)),
        ));
        Txn::new().and_then(ops)
    };
    c.txn(with_nested(5))
        .await
        .expect("nested within the budget");
    assert_status(
        c.txn(with_nested(6)).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    // Compares count towards the width too.
    let compares: Vec<Compare> = (0..9)
        .map(|i| Compare::version(format!("c/{i}"), CompareOp::Equal, 0))
        .collect();
    assert_status(
        c.txn(Txn::new().when(compares)).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    // An op with no request: etcd answers "key not found".
    let channel = raw::channel(&_cluster.endpoint(0)).await;
    let empty_op = PbTxnRequest {
        success: vec![PbTxnRequestOp { request: None }],
        ..Default::default()
    };
    let err = raw::unary::<_, PbTxnResponse>(&channel, "/etcdserverpb.KV/Txn", empty_op)
        .await
        .expect_err("empty op refused");
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "etcdserver: key not found")
    );
    assert_eq!(
        current_revision(&c).await,
        rev + 2,
        "only the two valid txns wrote"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_ranges_empty_keys_and_leases_get_etcds_answers() {
    let (cluster, mut c) = single(&[]).await;
    for i in 0..5 {
        c.put(format!("k/{i}"), "v", None).await.expect("put");
    }
    let rev = current_revision(&c).await;
    // A huge limit and a negative one both mean "no limit".
    for limit in [i64::MAX, -1, i64::MIN] {
        let resp = c
            .get(
                "k/",
                Some(GetOptions::new().with_prefix().with_limit(limit)),
            )
            .await
            .unwrap_or_else(|e| panic!("limit {limit}: {e}"));
        assert_eq!((resp.kvs().len(), resp.more(), resp.count()), (5, false, 5));
    }
    // range_end below key: nothing, without error; a delete deletes nothing
    // and does not move the revision.
    let resp = c
        .get("k/4", Some(GetOptions::new().with_range("k/0")))
        .await
        .expect("reversed range");
    assert_eq!((resp.kvs().len(), resp.count()), (0, 0));
    let resp = c
        .delete("k/4", Some(DeleteOptions::new().with_range("k/0")))
        .await
        .expect("reversed delete");
    assert_eq!(resp.deleted(), 0);
    assert_eq!(current_revision(&c).await, rev);
    // A revision far in the future; a negative one means "current".
    assert_status(
        c.get("k/0", Some(GetOptions::new().with_revision(i64::MAX)))
            .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    assert_eq!(
        c.get("k/0", Some(GetOptions::new().with_revision(-5)))
            .await
            .expect("negative revision")
            .kvs()
            .len(),
        1
    );
    // Empty keys.
    let empty = "etcdserver: key is not provided";
    assert_status(c.get("", None).await, Code::InvalidArgument, empty);
    assert_status(c.put("", "v", None).await, Code::InvalidArgument, empty);
    assert_status(c.delete("", None).await, Code::InvalidArgument, empty);
    assert_status(
        c.txn(Txn::new().when(vec![Compare::version("", CompareOp::Equal, 0)]))
            .await,
        Code::InvalidArgument,
        empty,
    );
    assert_status(
        c.txn(Txn::new().and_then(vec![TxnOp::get("", None)])).await,
        Code::InvalidArgument,
        empty,
    );
    assert_status(
        c.txn(Txn::new().and_then(vec![TxnOp::delete("", None)]))
            .await,
        Code::InvalidArgument,
        empty,
    );
    // Leases that do not exist.
    let missing = "etcdserver: requested lease not found";
    for id in [0x7fff_ffff_ffff_i64, -1, i64::MIN] {
        assert_status(
            c.put("leased", "v", Some(PutOptions::new().with_lease(id)))
                .await,
            Code::NotFound,
            missing,
        );
        assert_status(c.lease_revoke(id).await, Code::NotFound, missing);
        let ttl = c
            .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .expect("time-to-live of an unknown lease");
        assert_eq!((ttl.ttl(), ttl.granted_ttl()), (-1, 0));
    }
    assert_status(
        c.txn(Txn::new().and_then(vec![TxnOp::put(
            "leased",
            "v",
            Some(PutOptions::new().with_lease(12345)),
        )]))
        .await,
        Code::NotFound,
        missing,
    );
    // A negative lease id can be granted, as etcd allows, and used.
    let grant = c
        .lease_grant(60, Some(etcd_client::LeaseGrantOptions::new().with_id(-7)))
        .await
        .expect("grant a negative id");
    assert_eq!(grant.id(), -7);
    c.put("leased", "v", Some(PutOptions::new().with_lease(-7)))
        .await
        .expect("put with the negative lease");
    assert_eq!(current_revision(&c).await, rev + 1, "only that put wrote");
    drop(cluster);
}

/// A raw watch stream: requests in, responses out.
struct RawWatch {
    tx: mpsc::Sender<etcd_client::proto::PbWatchRequest>,
    rx: tonic::Streaming<etcd_client::proto::PbWatchResponse>,
}

impl RawWatch {
    async fn open(channel: &tonic::transport::Channel, first: WatchOptions) -> RawWatch {
        let (tx, requests) = mpsc::channel(1024);
        tx.send(first.into()).await.expect("queue the first create");
        let rx = tokio::time::timeout(
            REQUEST_TIMEOUT,
            raw::streaming(channel, "/etcdserverpb.Watch/Watch", requests),
        )
        .await
        .expect("watch stream opened in time")
        .expect("watch stream");
        RawWatch { tx, rx }
    }

    async fn create(&self, options: WatchOptions) {
        self.tx.send(options.into()).await.expect("send create");
    }

    async fn next(&mut self) -> etcd_client::proto::PbWatchResponse {
        tokio::time::timeout(REQUEST_TIMEOUT, self.rx.message())
            .await
            .expect("watch response in time")
            .expect("watch stream ok")
            .expect("watch stream open")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_ids_ranges_and_empty_keys() {
    let (cluster, mut c) = single(&[]).await;
    let channel = raw::channel(&cluster.endpoint(0)).await;
    let mut w = RawWatch::open(&channel, WatchOptions::new().with_key("a").with_watch_id(7)).await;
    let created = w.next().await;
    assert!(created.created && !created.canceled && created.watch_id == 7);
    // The same id again: created + canceled, id -1, etcd's reason.
    w.create(WatchOptions::new().with_key("b").with_watch_id(7))
        .await;
    let dup = w.next().await;
    assert_eq!(
        (
            dup.created,
            dup.canceled,
            dup.watch_id,
            dup.cancel_reason.as_str()
        ),
        (
            true,
            true,
            -1,
            "mvcc: duplicate watch ID provided on the WatchStream"
        )
    );
    // A range whose end is below its key.
    w.create(WatchOptions::new().with_key("z").with_range("a"))
        .await;
    let empty = w.next().await;
    assert_eq!(
        (
            empty.created,
            empty.canceled,
            empty.watch_id,
            empty.cancel_reason.as_str()
        ),
        (true, true, -1, "mvcc: watcher range is empty")
    );
    // A negative client-chosen id is accepted (only 0 means "pick one").
    w.create(WatchOptions::new().with_key("neg").with_watch_id(-5))
        .await;
    let neg = w.next().await;
    assert_eq!((neg.created, neg.canceled, neg.watch_id), (true, false, -5));
    // An empty key watches the key "\0", as etcd rewrites it.
    w.create(WatchOptions::new().with_key("").with_watch_id(9))
        .await;
    let zero = w.next().await;
    assert_eq!(
        (zero.created, zero.canceled, zero.watch_id),
        (true, false, 9)
    );
    c.put("\0", "nul", None).await.expect("put \\0");
    let ev = w.next().await;
    assert_eq!(ev.watch_id, 9);
    assert_eq!(ev.events[0].kv.as_ref().expect("kv").key, b"\0");
    // The first watch still works.
    c.put("a", "1", None).await.expect("put a");
    let ev = w.next().await;
    assert_eq!((ev.watch_id, ev.events.len()), (7, 1));
}

/// Resident memory of member `i`, bytes.
fn rss(cluster: &Cluster, i: usize) -> u64 {
    cluster.members[i]
        .server
        .rss_bytes()
        .expect("member is running")
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_watches_on_one_stream_cost_little_and_all_see_the_event() {
    const WATCHES: usize = 10_000;
    let (cluster, mut c) = single(&[]).await;
    let channel = raw::channel(&cluster.endpoint(0)).await;
    let before = rss(&cluster, 0);
    let mut w = RawWatch::open(&channel, WatchOptions::new().with_key("hot")).await;
    for _ in 1..WATCHES {
        w.create(WatchOptions::new().with_key("hot")).await;
    }
    let mut ids = std::collections::HashSet::new();
    while ids.len() < WATCHES {
        let r = w.next().await;
        assert!(r.created && !r.canceled, "{r:?}");
        ids.insert(r.watch_id);
    }
    c.put("hot", "1", None).await.expect("put");
    let mut seen = std::collections::HashSet::new();
    while seen.len() < WATCHES {
        let r = w.next().await;
        assert_eq!(r.events.len(), 1);
        assert!(seen.insert(r.watch_id), "one event per watch");
    }
    assert_eq!(seen, ids);
    let grown = rss(&cluster, 0).saturating_sub(before);
    assert!(
        grown < 64 * 1024 * 1024,
        "10,000 watches grew the member by {} MiB",
        grown / (1024 * 1024)
    );
    drop(w);
}

/// A client that opens many watches on one stream and then stops reading
/// pins a bounded share of what is written (the stream's byte budget), not
/// every revision its watches match.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_stops_reading_pins_a_bounded_amount_of_memory() {
    const WATCHES: usize = 1_000;
    const PUTS: usize = 2_000;
    let (mut cluster, c) = single(&[]).await;
    let channel = raw::channel(&cluster.endpoint(0)).await;
    let key = |i: usize| format!("stalled/{:04}", i % WATCHES);
    let mut w = RawWatch::open(&channel, WatchOptions::new().with_key(key(0))).await;
    for i in 1..WATCHES {
        w.create(WatchOptions::new().with_key(key(i))).await;
    }
    let mut created = 0;
    while created < WATCHES {
        let r = w.next().await;
        assert!(r.created && !r.canceled, "{r:?}");
        created += 1;
    }
    let value = vec![b'v'; 100 * 1024];
    let write = |key: &dyn Fn(usize) -> String| {
        let puts: Vec<_> = (0..PUTS)
            .map(|i| {
                let (mut kv, k, v) = (c.kv_client(), key(i), value.clone());
                async move { kv.put(k, v, None).await.expect("put") }
            })
            .collect();
        futures::StreamExt::count(futures::StreamExt::buffer_unordered(
            futures::stream::iter(puts),
            16,
        ))
    };
    // The same writes to keys nobody watches first: the storage engine's
    // memtables and caches grow to their bounds (about 100 MiB, see
    // `core::storage`) on them, not on the measured writes.
    write(&|i| format!("unwatched/{:04}", i % WATCHES)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // From here on the client reads nothing.
    let before = rss(&cluster, 0);
    write(&key).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss(&cluster, 0).saturating_sub(before);
    eprintln!(
        "{} MiB written to {WATCHES} watches nobody reads: RSS grew {} MiB",
        PUTS * value.len() / (1024 * 1024),
        grown / (1024 * 1024)
    );
    assert!(
        grown < 100 * 1024 * 1024,
        "a stream nobody reads grew the member by {} MiB",
        grown / (1024 * 1024)
    );
    cluster.assert_running();
    drop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_watch_streams_opened_and_dropped_leave_memory_flat() {
    const STREAMS: usize = 100_000;
    const PARALLEL: usize = 50;
    let (cluster, _c) = single(&[]).await;
    let channel = raw::channel(&cluster.endpoint(0)).await;
    let started = Instant::now();
    let mut warm = 0;
    let mut done = 0;
    while done < STREAMS {
        let mut batch = Vec::new();
        for j in 0..PARALLEL {
            let channel = channel.clone();
            batch.push(tokio::spawn(async move {
                let mut w = RawWatch::open(
                    &channel,
                    WatchOptions::new().with_key(format!("s/{j}")).with_prefix(),
                )
                .await;
                assert!(w.next().await.created);
            }));
        }
        for t in batch {
            t.await.expect("stream task");
        }
        done += PARALLEL;
        if done == STREAMS / 10 {
            // The first 10% warm up allocator pools and buffers.
            warm = rss(&cluster, 0);
        }
    }
    // Let the member notice the last closed streams.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end = rss(&cluster, 0);
    assert!(
        end < warm + 32 * 1024 * 1024,
        "memory grew from {} MiB to {} MiB over {STREAMS} streams",
        warm / (1024 * 1024),
        end / (1024 * 1024)
    );
    eprintln!(
        "{STREAMS} streams in {:?}; RSS {} → {} MiB",
        started.elapsed(),
        warm / (1024 * 1024),
        end / (1024 * 1024)
    );
}

/// The peer certificate the test speaks with: issued by the cluster's
/// peer CA, as a member holding valid credentials (but sending garbage)
/// would have.
static PEER_IDENTITY: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();

/// A QUIC connection to a member's peer port, made with [`PEER_IDENTITY`].
async fn peer_connection(port: u16) -> (quinn::Endpoint, quinn::Connection) {
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    let (cert, key) = PEER_IDENTITY.get().expect("the test's peer identity");
    let chain = kvd::core::tls::read_certs(cert).expect("cert");
    let key = kvd::core::tls::read_key(key).expect("key");
    endpoint.set_default_client_config(
        kvd::core::transport::tls::client_config_with_identity(chain, key).expect("client config"),
    );
    let conn = endpoint
        .connect(format!("127.0.0.1:{port}").parse().expect("addr"), "kvd")
        .expect("connect")
        .await
        .expect("handshake");
    (endpoint, conn)
}

/// Opens a stream of `kind`, writes `bytes` and waits for the member to
/// close the connection; returns the application error code.
async fn sent_and_closed(port: u16, kind: u8, bytes: &[u8]) -> u64 {
    let (_endpoint, conn) = peer_connection(port).await;
    let mut stream = conn.open_uni().await.expect("open stream");
    // The member may close the connection before the last bytes are
    // written: a write then fails with the connection lost, and the close
    // below says why.
    for part in [&[kind][..], bytes] {
        match stream.write_all(part).await {
            Ok(()) | Err(quinn::WriteError::ConnectionLost(_)) => {}
            Err(e) => panic!("write: {e:?}"),
        }
    }
    match tokio::time::timeout(Duration::from_secs(5), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => close.error_code.into_inner(),
        Ok(other) => panic!("connection ended otherwise: {other:?}"),
        Err(_) => panic!("the member did not close the connection"),
    }
}

fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_peer_port_closes_that_connection_and_nothing_else() {
    use protobuf::Message as _;

    // Members with a peer CA; the test holds a certificate from it, so
    // that what it sends reaches the decoders and Raft's own checks (a
    // stranger without one is refused earlier: tests/tls.rs).
    let pki = common::TestDir::new();
    let ca = common::pki::Ca::new(pki.path(), "peer-ca");
    let (cert, key) = ca.issue(
        "member",
        Some("member"),
        common::pki::Usage::Peer,
        common::pki::Validity::Current,
    );
    let (test_cert, test_key) = ca.issue(
        "test-peer",
        Some("member"),
        common::pki::Usage::Peer,
        common::pki::Validity::Current,
    );
    let _ = PEER_IDENTITY.set((test_cert, test_key));
    let mut cluster = Cluster::start_with(
        3,
        ClusterOptions {
            extra_args: vec![
                format!("--peer-cert-file={}", cert.display()),
                format!("--peer-key-file={}", key.display()),
                format!("--peer-trusted-ca-file={}", ca.cert.display()),
                "--peer-client-cert-auth".to_string(),
            ],
            ..ClusterOptions::default()
        },
    )
    .await;
    let leader = cluster.leader_index().await;
    let target = (leader + 1) % 3;
    let port = cluster.members[target].peer_port;
    const MALFORMED: u64 = 2;

    // An undecodable Raft message.
    assert_eq!(
        sent_and_closed(port, b'R', &frame(&[0xFF; 16])).await,
        MALFORMED
    );
    // A length of 4 GiB: refused before anything is allocated.
    assert_eq!(
        sent_and_closed(port, b'R', &u32::MAX.to_be_bytes()).await,
        MALFORMED
    );
    // An unknown stream kind.
    assert_eq!(sent_and_closed(port, b'X', b"hello").await, MALFORMED);
    // A snapshot stream whose first frame is garbage.
    assert_eq!(
        sent_and_closed(port, b'S', &frame(&[0x0A, 0xFF])).await,
        MALFORMED
    );

    // A frame that claims 60 MiB, more than a peer frame may hold
    // (`--max-request-bytes` plus 2 MiB), and sends 1 KiB: refused as
    // soon as its length is read, nothing like 60 MiB allocated. (The
    // member closes before the test may have written the 1 KiB, so the
    // close code is what is checked.)
    let before = rss(&cluster, target);
    let mut claim = (60u32 * 1024 * 1024).to_be_bytes().to_vec();
    claim.extend_from_slice(&[0u8; 1024]);
    assert_eq!(sent_and_closed(port, b'R', &claim).await, MALFORMED);
    let grown = rss(&cluster, target).saturating_sub(before);
    assert!(
        grown < 16 * 1024 * 1024,
        "a claimed 60 MiB frame grew the member by {} MiB",
        grown / (1024 * 1024)
    );

    // Well-formed messages that raft-rs must not see: one addressed to
    // another member, and a heartbeat from the leader whose commit index is
    // beyond the follower's log (raft-rs would panic on it).
    let leader_id = cluster.member_id(leader).await;
    let target_id = cluster.member_id(target).await;
    let mut c = cluster.client(target).await;
    let term = c.status().await.expect("status").raft_term();
    let mut wrong = raft::eraftpb::Message::default();
    wrong.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    wrong.from = leader_id;
    wrong.to = 0xdead_beef;
    wrong.term = term;
    let mut poison = raft::eraftpb::Message::default();
    poison.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    poison.from = leader_id;
    poison.to = target_id;
    poison.term = term;
    poison.commit = 1 << 40;
    // An empty proposal, which a follower would forward and raft-rs on the
    // leader would stop on (the other shapes raft-rs cannot take are
    // covered by `core::raft::admit`'s tests).
    let mut empty = raft::eraftpb::Message::default();
    empty.set_msg_type(raft::eraftpb::MessageType::MsgPropose);
    empty.from = leader_id;
    empty.to = target_id;
    let (_endpoint, conn) = peer_connection(port).await;
    let mut stream = conn.open_uni().await.expect("open stream");
    let mut bytes = vec![b'R'];
    bytes.extend(frame(&wrong.write_to_bytes().expect("encode")));
    bytes.extend(frame(&poison.write_to_bytes().expect("encode")));
    bytes.extend(frame(&empty.write_to_bytes().expect("encode")));
    stream.write_all(&bytes).await.expect("send messages");
    stream.finish().expect("finish");
    wait_for(
        "the member logs the dropped heartbeat and proposal",
        Duration::from_secs(10),
        || {
            let log = cluster.members[target].server.log();
            async move {
                if log.contains("dropping a heartbeat whose commit index is beyond")
                    && log.contains("dropping an empty proposal")
                {
                    Ok(())
                } else {
                    Err("not yet".to_string())
                }
            }
        },
    )
    .await;

    // A message from an id that is not a member, even over a certificate
    // of the cluster's CA.
    let mut stranger = raft::eraftpb::Message::default();
    stranger.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    stranger.from = 0xdead_beef;
    stranger.to = target_id;
    stranger.term = term;
    assert_eq!(
        sent_and_closed(
            port,
            b'R',
            &frame(&stranger.write_to_bytes().expect("encode"))
        )
        .await,
        MALFORMED
    );

    // A snapshot message on the Raft stream, with nothing staged behind
    // it: refused, and the member's data stays.
    c.put("kept/before-snapshot", "v", None).await.expect("put");
    let mut snapshot = raft::eraftpb::Message::default();
    snapshot.set_msg_type(raft::eraftpb::MessageType::MsgSnapshot);
    snapshot.from = leader_id;
    snapshot.to = target_id;
    snapshot.term = term;
    let meta = snapshot.mut_snapshot().mut_metadata();
    meta.index = 1 << 30;
    meta.term = term;
    meta.mut_conf_state().voters = vec![leader_id, target_id];
    assert_eq!(
        sent_and_closed(
            port,
            b'R',
            &frame(&snapshot.write_to_bytes().expect("encode"))
        )
        .await,
        MALFORMED
    );

    // A stream that never sends its first frame is closed after a few
    // seconds instead of holding a slot.
    let (_endpoint, conn) = peer_connection(port).await;
    let mut stream = conn.open_uni().await.expect("open stream");
    stream.write_all(b"R").await.expect("kind");
    match tokio::time::timeout(Duration::from_secs(15), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
            assert_eq!(close.error_code.into_inner(), MALFORMED)
        }
        Ok(other) => panic!("connection ended otherwise: {other:?}"),
        Err(_) => panic!("a silent stream was kept open"),
    }

    // Every member is up and the cluster serves through each of them.
    cluster.assert_running();
    let kept = c
        .get(
            "kept/before-snapshot",
            Some(GetOptions::new().with_serializable()),
        )
        .await
        .expect("read on the target");
    assert_eq!(kept.kvs().len(), 1, "the member's data survived");
    for i in 0..3 {
        let mut c = cluster.client(i).await;
        c.put(format!("still/{i}"), "up", None)
            .await
            .unwrap_or_else(|e| panic!("member {i} serves writes: {e}"));
    }
    assert_eq!(
        value_everywhere(&cluster, "still/2").await,
        vec![Some("up".to_string()); 3]
    );
    assert!(cluster.members[target]
        .server
        .log()
        .contains("closing peer connection"));

    // A stream admitted while its member was one is cut once that member
    // is removed: its next message closes the connection.
    let other = 3 - leader - target;
    let other_id = cluster.member_id(other).await;
    let mut beat = raft::eraftpb::Message::default();
    beat.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeatResponse);
    beat.from = other_id;
    beat.to = target_id;
    beat.term = term;
    let beat = frame(&beat.write_to_bytes().expect("encode"));
    let (_endpoint, conn) = peer_connection(port).await;
    let mut stream = conn.open_uni().await.expect("open stream");
    stream.write_all(b"R").await.expect("kind");
    stream.write_all(&beat).await.expect("first message");
    if let Ok(why) = tokio::time::timeout(Duration::from_millis(500), conn.closed()).await {
        panic!("a member's message was refused: {why:?}");
    }
    let mut lc = cluster.client(leader).await;
    lc.member_remove(other_id).await.expect("member remove");
    wait_for(
        "the target applies the removal",
        Duration::from_secs(10),
        || {
            let mut c = c.clone();
            async move {
                let members = c.member_list().await.map_err(|e| e.to_string())?;
                if members.members().len() == 2 {
                    Ok(())
                } else {
                    Err(format!("{} members", members.members().len()))
                }
            }
        },
    )
    .await;
    let _ = stream.write_all(&beat).await;
    match tokio::time::timeout(Duration::from_secs(5), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
            assert_eq!(close.error_code.into_inner(), MALFORMED)
        }
        Ok(other) => panic!("connection ended otherwise: {other:?}"),
        Err(_) => panic!("a removed member's stream was kept open"),
    }
    // The removed member stops by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cluster.members[other].server.exit_status().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "removed member still running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.kill(other);
}

/// `n` QUIC Initial packets, each of a connection of its own (its own
/// connection id), as a client sends them to a member's peer port: caught
/// on a socket that never answers.
async fn captured_initials(n: usize) -> Vec<Vec<u8>> {
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("sink");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    endpoint.set_default_client_config(
        kvd::core::transport::auto_tls_client_config().expect("client config"),
    );
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 2048];
    // Held until every packet is caught: a dropped attempt would send its
    // close instead.
    let mut attempts = Vec::with_capacity(n);
    for _ in 0..n {
        attempts.push(
            endpoint
                .connect(sink.local_addr().expect("addr"), "kvd")
                .expect("connect"),
        );
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), sink.recv_from(&mut buf))
            .await
            .expect("an Initial packet")
            .expect("recv");
        out.push(buf[..len].to_vec());
    }
    // Long-header Initial packets, padded to 1,200 bytes as QUIC requires.
    assert!(out.iter().all(|p| p[0] & 0xF0 == 0xC0 && p.len() >= 1_200));
    out
}

/// How many refusals a member's `log` reports in its warnings containing
/// `what`: they come at most once a second, each with `refused=<n>`, the
/// refusals since the last.
fn refusals(log: &str, what: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains(what))
        .map(|l| {
            l.split("refused=")
                .nth(1)
                .and_then(|n| n.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok())
                .expect("a refusal warning carries its count")
        })
        .sum()
}

/// Restarts member `victim`, writes `key` through member `leader`, and
/// waits (20 s at most) until a serializable read on the restarted member
/// sees it. Returns a client of the restarted member.
async fn restart_and_catch_up(
    cluster: &mut Cluster,
    victim: usize,
    leader: usize,
    key: &str,
) -> Client {
    cluster.restart(victim);
    cluster.wait_ready().await;
    let mut c = cluster.client(leader).await;
    c.put(key, "v", None).await.expect("put");
    let v = cluster.client(victim).await;
    common::wait_until_held(
        &v,
        key,
        "the restarted member catches up",
        Duration::from_secs(20),
    )
    .await;
    v
}

/// Half-open handshakes cannot fill a member's peer connection slots: a
/// flood of Initial packets from an address that never answers (300 new
/// connection ids a second) on the peer port of a member that restarts.
/// Without QUIC's retry each held a slot for up to the idle timeout, and
/// hundreds of connections were refused for want of one.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_half_open_handshakes_does_not_keep_peers_out() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader_index().await;
    let victim = (leader + 1) % 3;
    let port = cluster.members[victim].peer_port;
    // 7 s of fresh connection ids at 300 a second, then reused: a member
    // forgets a handshake after its 5 s idle timeout.
    let initials = captured_initials(2_100).await;
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let packets = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood = {
        let (flooding, packets) = (flooding.clone(), packets.clone());
        tokio::spawn(async move {
            let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
            // Another loopback address than the members': nothing there
            // answers what the member sends back.
            let from = std::net::UdpSocket::bind("127.0.0.2:0").expect("flood socket");
            let mut sent = 0usize;
            for burst in initials.chunks(300).cycle() {
                if !flooding.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                for packet in burst {
                    let _ = from.send_to(packet, to);
                    sent += 1;
                }
                packets.store(sent, std::sync::atomic::Ordering::Relaxed);
                // 300 a second.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            sent
        })
    };
    wait_for(
        "the flood has sent a second's packets",
        Duration::from_secs(10),
        || {
            let sent = packets.load(std::sync::atomic::Ordering::Relaxed);
            async move {
                if sent >= 300 {
                    Ok(())
                } else {
                    Err(format!("{sent} sent"))
                }
            }
        },
    )
    .await;
    let mut v = restart_and_catch_up(&mut cluster, victim, leader, "after-the-flood").await;
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.await.expect("flood task");
    // No handshake of the flood took a slot (without the retry, hundreds
    // of connections were refused for want of one).
    let log = cluster.members[victim].server.log();
    let refused = refusals(&log, "refusing a peer connection");
    assert_eq!(
        refused, 0,
        "{refused} connections refused for want of a slot"
    );
    eprintln!("{sent} Initial packets sent to the member's peer port");
    assert!(sent >= 900, "the flood sent only {sent} packets");
    v.put("victim-writes", "v", None)
        .await
        .expect("put through the victim");
    cluster.assert_running();
}

/// A relay in front of `to` for QUIC clients that stall their handshakes:
/// each client's first `pass` datagrams go on from an address of its own on
/// 127.0.0.2 (with `pass` 2: the Initial, then the Initial that echoes the
/// retry token), every answer comes back, and the client's later datagrams
/// (the end of its handshake) are dropped. The member then holds a
/// validated handshake that never finishes. A client's relay socket is
/// dropped after 3 s (the clients are gone by then). Returns the relay's
/// address.
async fn stalling_relay(to: std::net::SocketAddr, pass: usize) -> std::net::SocketAddr {
    use std::collections::HashMap;
    use std::sync::Arc;
    use tokio::net::UdpSocket;
    struct Client {
        upstream: Arc<UdpSocket>,
        sent: usize,
        since: Instant,
        back: tokio::task::JoinHandle<()>,
    }
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("relay"));
    let addr = front.local_addr().expect("relay addr");
    tokio::spawn(async move {
        let mut clients = HashMap::<std::net::SocketAddr, Client>::new();
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, from)) = front.recv_from(&mut buf).await {
            clients.retain(|_, c| {
                let keep = c.since.elapsed() < Duration::from_secs(3);
                if !keep {
                    c.back.abort();
                }
                keep
            });
            let client = match clients.entry(from) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let upstream =
                        Arc::new(UdpSocket::bind("127.0.0.2:0").await.expect("upstream"));
                    let (socket, front) = (upstream.clone(), front.clone());
                    let back = tokio::spawn(async move {
                        let mut buf = vec![0u8; 2_048];
                        while let Ok((len, _)) = socket.recv_from(&mut buf).await {
                            let _ = front.send_to(&buf[..len], from).await;
                        }
                    });
                    e.insert(Client {
                        upstream,
                        sent: 0,
                        since: Instant::now(),
                        back,
                    })
                }
            };
            if client.sent < pass {
                let _ = client.upstream.send_to(&buf[..len], to).await;
                client.sent += 1;
            }
        }
    });
    addr
}

/// A QUIC client endpoint on 127.0.0.1 with small receive buffers (quinn
/// sizes them for 64 KiB datagrams: 128 MiB of address space each).
fn small_client_endpoint() -> quinn::Endpoint {
    let mut config = quinn::EndpointConfig::default();
    config.max_udp_payload_size(1_500).expect("payload size");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("client socket");
    let runtime = quinn::default_runtime().expect("a tokio runtime");
    quinn::Endpoint::new(config, None, socket, runtime).expect("client endpoint")
}

/// Waits (15 s at most) until member `victim`'s log has more than `seen`
/// warnings about handshakes refused over the per-address bound.
async fn wait_until_refused(cluster: &Cluster, victim: usize, seen: usize) {
    wait_for(
        "the member refuses the stalling host's handshakes over its bound",
        Duration::from_secs(15),
        || {
            let log = cluster.members[victim].server.log();
            let warned = log.matches("refusing a peer handshake").count();
            async move {
                if warned > seen {
                    Ok(())
                } else {
                    Err(format!("{warned} warnings"))
                }
            }
        },
    )
    .await;
}

/// One host cannot fill a member's peer connection slots with handshakes
/// it stalls after QUIC's retry (so its address is validated): 200 new
/// stalled handshakes a second from 127.0.0.2, each held by the member for
/// seconds, while that member restarts. The member refuses that host's
/// handshakes beyond its per-address bound, no connection is refused for
/// want of a slot, and the other members reconnect, replicate to it and
/// take writes through it. Without the bound the host held every slot:
/// about 900 connections were refused for want of one.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_handshakes_from_one_host_do_not_keep_peers_out() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader_index().await;
    let victim = (leader + 1) % 3;
    let port = cluster.members[victim].peer_port;
    let relay = stalling_relay(format!("127.0.0.1:{port}").parse().expect("addr"), 2).await;
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flood = {
        let flooding = flooding.clone();
        tokio::spawn(async move {
            let config = kvd::core::transport::auto_tls_client_config().expect("client config");
            // Each attempt on an endpoint (a client address) of its own,
            // dropped after 1.5 s: by then its token has reached the member,
            // whose handshake goes on without it.
            let mut held = std::collections::VecDeque::new();
            let mut attempts = 0usize;
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..20 {
                    let mut endpoint = small_client_endpoint();
                    endpoint.set_default_client_config(config.clone());
                    let connecting = endpoint.connect(relay, "kvd").expect("connect");
                    held.push_back((Instant::now(), endpoint, connecting));
                    attempts += 1;
                }
                while held
                    .front()
                    .is_some_and(|(at, _, _)| at.elapsed() > Duration::from_millis(1_500))
                {
                    held.pop_front();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            attempts
        })
    };
    wait_until_refused(&cluster, victim, 0).await;
    let before = cluster.members[victim]
        .server
        .log()
        .matches("refusing a peer handshake")
        .count();
    let mut v = restart_and_catch_up(&mut cluster, victim, leader, "after-the-stall").await;
    // The restarted member, up, refuses the host's handshakes too.
    wait_until_refused(&cluster, victim, before).await;
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let attempts = flood.await.expect("flood task");
    let log = cluster.members[victim].server.log();
    let over_bound = refusals(&log, "refusing a peer handshake");
    let no_slot = refusals(&log, "refusing a peer connection");
    eprintln!(
        "{attempts} stalled handshakes attempted; {over_bound} refused over the per-address bound, {no_slot} for want of a slot"
    );
    assert_eq!(
        no_slot, 0,
        "{no_slot} connections refused for want of a slot"
    );
    assert!(
        over_bound > 0,
        "the stalled handshakes never reached the bound: the test did not stall any"
    );
    v.put("victim-writes-after-the-stall", "v", None)
        .await
        .expect("put through the victim");
    cluster.assert_running();
}
