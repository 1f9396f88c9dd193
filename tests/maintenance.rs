//! Maintenance against real members: `HashKV` equal on every member and
//! aware of compaction, `Hash`, the NOSPACE alarm raised at the quota,
//! refusing growth (and only growth) on every path until disarmed, kept
//! across a restart, and etcd's header-less `Defragment`/`MoveLeader`
//! answers; through the etcd-client crate and etcdctl.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::process::Command;
use std::time::Duration;

use common::{assert_status, wait_for, Cluster, ClusterOptions};
use etcd_client::{
    AlarmAction, AlarmOptions, AlarmType, Client, Compare, CompareOp, GetOptions, Txn, TxnOp,
};

const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

/// `etcdctl` with `args` against `endpoint`: (exit ok, stdout, stderr).
fn etcdctl(endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(common::etcdctl_path())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .expect("run etcdctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every member's HashKV at `rev` once all of them have applied it.
async fn hashes_at(cluster: &Cluster, rev: i64) -> Vec<(u32, i64)> {
    let mut out = Vec::new();
    for i in 0..cluster.size() {
        let c = cluster.client(i).await;
        let h = wait_for(
            "the member reaches the revision",
            Duration::from_secs(10),
            || {
                let mut c = c.clone();
                async move { c.hash_kv(rev).await.map_err(|e| e.to_string()) }
            },
        )
        .await;
        out.push((h.hash(), h.compact_version()));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn hash_kv_agrees_on_every_member_and_knows_compaction() {
    let cluster = Cluster::start(3).await;
    let mut c = cluster.client(0).await;
    let first = c.hash_kv(0).await.expect("hash_kv");
    assert_eq!(first.compact_version(), -1, "never compacted");
    let mut rev = 0;
    for i in 0..30 {
        rev = c
            .put(format!("h/{}", i % 7), format!("v{i}"), None)
            .await
            .expect("put")
            .header()
            .expect("header")
            .revision();
        if i % 5 == 4 {
            c.delete(format!("h/{}", i % 7), None)
                .await
                .expect("delete");
        }
    }
    let rev = c
        .put("h/last", "x", None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision()
        .max(rev);
    let at_rev = hashes_at(&cluster, rev).await;
    assert!(
        at_rev.iter().all(|h| *h == at_rev[0]),
        "every member hashes revision {rev} alike: {at_rev:?}"
    );
    // A later write changes the current hash, not the hash at `rev`.
    c.put("h/after", "y", None).await.expect("put");
    assert_ne!(c.hash_kv(0).await.expect("hash_kv").hash(), at_rev[0].0);
    assert_eq!(c.hash_kv(rev).await.expect("hash_kv").hash(), at_rev[0].0);

    // Compaction: equal on every member again, whatever their physical
    // compaction has done; at or below the compact revision, and in the
    // future, etcd's OutOfRange errors.
    let compact_at = rev - 10;
    c.compact(compact_at, None).await.expect("compact");
    let after = hashes_at(&cluster, rev).await;
    assert!(
        after.iter().all(|h| *h == after[0]),
        "every member hashes revision {rev} alike after compaction: {after:?}"
    );
    assert_eq!(after[0].1, compact_at, "compact revision answered");
    assert_status(
        c.hash_kv(compact_at).await,
        tonic::Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_status(
        c.hash_kv(rev + 1000).await,
        tonic::Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    // Hash answers with a header on every member.
    for i in 0..cluster.size() {
        let h = cluster.client(i).await.hash().await.expect("hash");
        assert!(h.header().is_some());
    }
    // etcdctl endpoint hashkv prints one hash per endpoint.
    let (ok, out, err) = etcdctl(&cluster.endpoints().join(","), &["endpoint", "hashkv"]);
    assert!(ok, "etcdctl endpoint hashkv: {err}");
    assert_eq!(out.lines().count(), 3, "{out}");
}

async fn alarms(c: &mut Client) -> Vec<(u64, AlarmType)> {
    c.alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .expect("alarm list")
        .alarms()
        .iter()
        .map(|a| (a.member_id(), a.alarm()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn nospace_refuses_growth_until_disarmed_and_survives_a_restart() {
    let options = ClusterOptions {
        extra_args: vec!["--quota-backend-bytes".into(), "1".into()],
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start_with(1, options).await;
    let mut c = cluster.client(0).await;
    let id = cluster.member_id(0).await;

    // Over the quota: the put is refused and the alarm raised.
    assert_status(
        c.put("k", "v", None).await,
        tonic::Code::ResourceExhausted,
        NO_SPACE,
    );
    let raised = wait_for("NOSPACE raised", Duration::from_secs(10), || {
        let mut c = c.clone();
        async move {
            let list = alarms(&mut c).await;
            if list.is_empty() {
                Err("no alarm yet".to_string())
            } else {
                Ok(list)
            }
        }
    })
    .await;
    assert_eq!(raised, vec![(id, AlarmType::Nospace)]);
    let status = c.status().await.expect("status");
    assert_eq!(
        status.errors(),
        [format!("memberID:{id} alarm:NOSPACE ")],
        "Status.errors as etcd spells it"
    );
    let (ok, out, err) = etcdctl(&cluster.endpoint(0), &["alarm", "list"]);
    assert!(ok, "etcdctl alarm list: {err}");
    assert_eq!(out.trim(), format!("memberID:{id} alarm:NOSPACE"));

    // Growth is refused on every path; reads, deletes, compaction and
    // read-only transactions still work.
    assert_status(
        c.lease_grant(60, None).await,
        tonic::Code::ResourceExhausted,
        NO_SPACE,
    );
    assert_status(
        c.txn(Txn::new().and_then([TxnOp::put("t", "v", None)]))
            .await,
        tonic::Code::ResourceExhausted,
        NO_SPACE,
    );
    let read_only = Txn::new()
        .when([Compare::version("k", CompareOp::Equal, 0)])
        .and_then([TxnOp::get("k", None)]);
    assert!(c.txn(read_only).await.expect("read-only txn").succeeded());
    assert!(c.get("k", None).await.expect("get").kvs().is_empty());
    c.delete("k", None).await.expect("delete");
    let rev = c.get("k", Some(GetOptions::new())).await.expect("get");
    let rev = rev.header().expect("header").revision();
    c.compact(rev, None).await.expect("compact");

    // The alarm is replicated state: a restart without a quota keeps it.
    let args = &mut cluster.members[0].server.spec.args;
    let at = args
        .iter()
        .position(|a| a == "--quota-backend-bytes")
        .expect("flag");
    args[at + 1] = "0".into();
    cluster.restart(0);
    cluster.wait_ready().await;
    let mut c = cluster.client(0).await;
    assert_eq!(alarms(&mut c).await, vec![(id, AlarmType::Nospace)]);
    assert_status(
        c.put("k", "v", None).await,
        tonic::Code::ResourceExhausted,
        NO_SPACE,
    );

    // Disarmed (as etcdctl alarm disarm does: deactivate each listed one),
    // writes go through again.
    let mut options = AlarmOptions::new();
    options.with_member(id);
    let cleared = c
        .alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options))
        .await
        .expect("disarm");
    assert_eq!(cleared.alarms().len(), 1);
    assert!(alarms(&mut c).await.is_empty());
    c.put("k", "v", None).await.expect("put after disarm");
    assert!(c.status().await.expect("status").errors().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn defragment_and_move_leader_answer_without_a_header_as_etcd() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader_index().await;
    let mut c = cluster.client(leader).await;
    c.put("d", "v", None).await.expect("put");
    let defrag = c.defragment().await.expect("defragment");
    assert!(defrag.header().is_none(), "etcd's Defragment has no header");
    let members = c.member_list().await.expect("member list");
    assert_eq!(
        members.header().expect("header").revision(),
        0,
        "etcd's cluster answers carry no revision"
    );
    let to = cluster.member_id((leader + 1) % 3).await;
    let moved = c.move_leader(to).await.expect("move leader");
    assert!(moved.header().is_none(), "etcd's MoveLeader has no header");
    assert_eq!(c.get("d", None).await.expect("get").kvs().len(), 1);
}

/// HashKV is etcd's, bit for bit: the values etcd 3.4.23 answered for this
/// history (recorded with etcdctl endpoint hashkv on this project's
/// machine), before and after a compaction and at a past revision.
#[tokio::test(flavor = "multi_thread")]
async fn hash_kv_equals_etcds_for_the_same_history() {
    let cluster = Cluster::start(1).await;
    let mut c = cluster.client(0).await;
    c.put("a", "1", None).await.expect("put"); // revision 2
    c.put("b", "2", None).await.expect("put"); // 3
    c.delete("a", None).await.expect("delete"); // 4
    c.put("c", "3", None).await.expect("put"); // 5
    c.put("b", "22", None).await.expect("put"); // 6
    assert_eq!(c.hash_kv(0).await.expect("hash_kv").hash(), 2_350_454_815);
    c.compact(4, None).await.expect("compact");
    assert_eq!(c.hash_kv(0).await.expect("hash_kv").hash(), 3_591_282_918);
    assert_eq!(c.hash_kv(5).await.expect("hash_kv").hash(), 4_196_123_440);
}

/// etcd's edge: when no key is live at the hashed revision, etcd hashes
/// every change its compaction kept (values recorded from etcd 3.4.23).
#[tokio::test(flavor = "multi_thread")]
async fn hash_kv_equals_etcds_when_nothing_is_live() {
    let cluster = Cluster::start(1).await;
    let mut c = cluster.client(0).await;
    c.put("a", "1", None).await.expect("put"); // revision 2
    c.put("a", "2", None).await.expect("put"); // 3
    c.put("b", "1", None).await.expect("put"); // 4
    c.compact(4, None).await.expect("compact");
    // etcd's answer here depends on its physical compaction having run
    // (it hashes what its backend still holds, and its API does not say
    // when that is done); kvd's does not. Only against etcd, give it that
    // moment, so that the same test also checks etcd.
    if common::against_etcd() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    c.delete("a", None).await.expect("delete"); // 5
    c.delete("b", None).await.expect("delete"); // 6
    assert_eq!(c.hash_kv(0).await.expect("hash_kv").hash(), 1_680_444_898);
    assert_eq!(c.hash_kv(5).await.expect("hash_kv").hash(), 1_010_904_130);
}
