//! Crashes: SIGKILL of the leader under write load, restart of the killed
//! member, and a restart of the whole cluster. No acknowledged write may be
//! lost, and writes must resume within a few election timeouts.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, CompactionOptions, GetOptions};
use tonic::Code;

use common::{assert_status, wait_for, Cluster, ELECTION_MS};

/// Bound on the time from the leader's death to the first acknowledged
/// write issued after it.
const RESUME_WITHIN: Duration = Duration::from_millis(5 * ELECTION_MS);
/// One put may take this long before the writer gives up on it and moves on.
const PUT_TIMEOUT: Duration = Duration::from_millis(2 * ELECTION_MS);

#[derive(Debug, Clone)]
struct Ack {
    key: String,
    issued: Instant,
    acked: Instant,
}

/// Puts distinct keys `w<id>/<seq>` (value = key) through one member until
/// told to stop, recording each acknowledged put. Errors and timeouts are
/// retried with the next key: such a put may or may not have been applied,
/// only acknowledged ones are checked afterwards.
fn spawn_writer(
    id: usize,
    mut client: Client,
    acks: Arc<Mutex<Vec<Ack>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut failures = 0u64;
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("w{id}/{seq:06}");
            seq += 1;
            let issued = Instant::now();
            match tokio::time::timeout(PUT_TIMEOUT, client.put(key.as_str(), key.as_str(), None))
                .await
            {
                Ok(Ok(_)) => acks.lock().expect("acks").push(Ack {
                    key,
                    issued,
                    acked: Instant::now(),
                }),
                Ok(Err(_)) | Err(_) => {
                    failures += 1;
                    // Back off a little so that fast failures (no leader yet)
                    // do not spin; this is a retry pause, not a wait for state.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        failures
    })
}

fn acked_keys(acks: &Mutex<Vec<Ack>>) -> BTreeSet<String> {
    acks.lock()
        .expect("acks")
        .iter()
        .map(|a| a.key.clone())
        .collect()
}

/// All `w*` keys (and values) visible through `client`.
async fn written(
    client: &mut Client,
    serializable: bool,
) -> Result<BTreeMap<String, String>, String> {
    let mut options = GetOptions::new().with_prefix();
    if serializable {
        options = options.with_serializable();
    }
    let resp = client
        .get("w", Some(options))
        .await
        .map_err(|e| e.to_string())?;
    Ok(resp
        .kvs()
        .iter()
        .map(|kv| (common::s(kv.key()), common::s(kv.value())))
        .collect())
}

fn missing(acked: &BTreeSet<String>, seen: &BTreeMap<String, String>) -> Vec<String> {
    acked
        .iter()
        .filter(|k| !seen.contains_key(*k))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_kill_under_writes_loses_no_acknowledged_write() {
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader_index().await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    let acks = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (id, &member) in followers.iter().enumerate() {
        let client = cluster.client(member).await;
        writers.push(spawn_writer(id, client, acks.clone(), stop.clone()));
    }

    // Writes flow through both followers before the crash.
    {
        let acks = acks.clone();
        wait_for(
            "writes flow before the crash",
            Duration::from_secs(20),
            move || {
                let n = acked_keys(&acks).len();
                async move {
                    if n >= 40 {
                        Ok(())
                    } else {
                        Err(format!("{n} acknowledged"))
                    }
                }
            },
        )
        .await;
    }

    cluster.kill(leader);
    let killed_at = Instant::now();

    // Writes issued after the crash are acknowledged again, soon.
    let first_after = {
        let acks = acks.clone();
        wait_for(
            "writes resume after the leader's death",
            Duration::from_secs(30),
            move || {
                let first = acks
                    .lock()
                    .expect("acks")
                    .iter()
                    .filter(|a| a.issued >= killed_at)
                    .min_by_key(|a| a.acked)
                    .cloned();
                async move {
                    first.ok_or_else(|| {
                        "no write issued after the kill acknowledged yet".to_string()
                    })
                }
            },
        )
        .await
    };
    let resumed_after = first_after.acked.duration_since(killed_at);
    eprintln!("writes resumed {resumed_after:?} after the leader was killed");
    assert!(
        resumed_after <= RESUME_WITHIN,
        "writes resumed {resumed_after:?} after the leader was killed; bound is {RESUME_WITHIN:?} (5 election timeouts)"
    );

    // Keep writing a little under the new leader, then stop.
    {
        let acks = acks.clone();
        wait_for(
            "writes continue under the new leader",
            Duration::from_secs(20),
            move || {
                let n = acks
                    .lock()
                    .expect("acks")
                    .iter()
                    .filter(|a| a.issued >= killed_at)
                    .count();
                async move {
                    if n >= 40 {
                        Ok(())
                    } else {
                        Err(format!("{n} acknowledged since the kill"))
                    }
                }
            },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer task");
    }
    let acked = acked_keys(&acks);
    assert!(acked.len() >= 80);

    // The surviving members have every acknowledged write (linearizable).
    for &i in &followers {
        let mut client = cluster.client(i).await;
        let seen = written(&mut client, false)
            .await
            .expect("read from survivor");
        assert_eq!(
            missing(&acked, &seen),
            Vec::<String>::new(),
            "lost on member {i}"
        );
    }

    // The killed member comes back and catches up.
    cluster.restart(leader);
    let mut restarted = cluster.client(leader).await;
    {
        let acked = acked.clone();
        let restarted = restarted.clone();
        wait_for(
            "the restarted member catches up",
            Duration::from_secs(30),
            move || {
                let acked = acked.clone();
                let mut restarted = restarted.clone();
                async move {
                    let seen = written(&mut restarted, true).await?;
                    let lost = missing(&acked, &seen);
                    if lost.is_empty() {
                        Ok(())
                    } else {
                        Err(format!(
                            "{} acknowledged keys not yet there, e.g. {}",
                            lost.len(),
                            lost[0]
                        ))
                    }
                }
            },
        )
        .await;
    }
    cluster.wait_ready().await;

    // Every member, the restarted one included, serves every acknowledged
    // write on a linearizable read, with its value.
    for i in 0..3 {
        let mut client = cluster.client(i).await;
        let seen = written(&mut client, false)
            .await
            .expect("linearizable read");
        assert_eq!(
            missing(&acked, &seen),
            Vec::<String>::new(),
            "lost on member {i}"
        );
        for key in &acked {
            assert_eq!(seen[key], *key, "value of {key} on member {i}");
        }
    }
    let seen = written(&mut restarted, true)
        .await
        .expect("serializable read");
    assert_eq!(missing(&acked, &seen), Vec::<String>::new());

    // The members agree on everything written, acknowledged or not.
    let mut views = Vec::new();
    for i in 0..3 {
        let mut client = cluster.client(i).await;
        views.push(written(&mut client, false).await.expect("read"));
    }
    assert_eq!(views[0], views[1]);
    assert_eq!(views[1], views[2]);

    // And the cluster takes writes through the restarted member.
    restarted
        .put("after-restart", "yes", None)
        .await
        .expect("put via restarted member");
}

/// Snapshot of a range: key → (value, create_revision, mod_revision, version, lease).
type Snapshot = BTreeMap<String, (String, i64, i64, i64, i64)>;

async fn snapshot(client: &mut Client) -> (Snapshot, i64) {
    let resp = client
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .expect("get all keys");
    let map = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                common::s(kv.key()),
                (
                    common::s(kv.value()),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version(),
                    kv.lease(),
                ),
            )
        })
        .collect();
    (map, resp.header().expect("header").revision())
}

#[tokio::test(flavor = "multi_thread")]
async fn full_cluster_restart_keeps_all_data() {
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(3).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(cluster.client(i).await);
    }

    // Writes through every member: creates, overwrites, deletes, a txn.
    for n in 0..150 {
        let client = &mut clients[n % 3];
        client
            .put(format!("data/{n:04}"), format!("v{n}"), None)
            .await
            .expect("put");
    }
    for n in (0..150).step_by(5) {
        clients[1]
            .put(format!("data/{n:04}"), format!("v{n}-2"), None)
            .await
            .expect("overwrite");
    }
    for n in (0..150).step_by(7) {
        clients[2]
            .delete(format!("data/{n:04}"), None)
            .await
            .expect("delete");
    }
    let compact_at = clients[0]
        .put("marker", "before-compaction", None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision();
    clients[0]
        .put("marker", "after-compaction", None)
        .await
        .expect("put");
    clients[0]
        .compact(compact_at, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    clients[2]
        .txn(etcd_client::Txn::new().and_then(vec![
            etcd_client::TxnOp::put("txn/a", "1", None),
            etcd_client::TxnOp::put("txn/b", "2", None),
        ]))
        .await
        .expect("txn");

    let (before, revision) = snapshot(&mut clients[0]).await;
    assert_eq!(before.len(), 150 - 22 + 3);

    cluster.kill_all();
    cluster.start_all();
    cluster.wait_ready().await;

    for i in 0..3 {
        let mut client = cluster.client(i).await;
        let (after, rev_after) = snapshot(&mut client).await;
        assert_eq!(rev_after, revision, "revision after restart, member {i}");
        assert_eq!(after.len(), before.len(), "key count on member {i}");
        assert_eq!(after, before, "data on member {i}");
        // The compaction survived the restart too.
        assert_status(
            client
                .get(
                    "marker",
                    Some(GetOptions::new().with_revision(compact_at - 1)),
                )
                .await,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
        let old = client
            .get("marker", Some(GetOptions::new().with_revision(compact_at)))
            .await
            .expect("read at the compacted revision");
        assert_eq!(common::s(old.kvs()[0].value()), "before-compaction");
    }

    // Revisions continue where they were.
    let mut client = cluster.client(1).await;
    let resp = client
        .put("after", "restart", None)
        .await
        .expect("put after restart");
    assert_eq!(resp.header().expect("header").revision(), revision + 1);

    // A second full restart, right after a write, keeps that write too.
    cluster.kill_all();
    cluster.start_all();
    cluster.wait_ready().await;
    for i in 0..3 {
        let mut client = cluster.client(i).await;
        let resp = client.get("after", None).await.expect("get");
        assert_eq!(resp.kvs().len(), 1, "member {i}");
        assert_eq!(resp.kvs()[0].mod_revision(), revision + 1);
    }
}

/// A member stopped gracefully closes its peer connections, so that the
/// leader redials it as soon as it is back, instead of writing into the
/// dead connection until the peer port's 5 s idle timeout (QUIC's
/// stateless reset cannot end it: the new process has another reset key).
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_back_from_a_graceful_stop_hears_the_leader_at_once() {
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader_index().await;
    let follower = (leader + 1) % 3;
    let mut c = cluster.client(leader).await;
    c.put("before", "1", None).await.expect("put");
    cluster.members[follower].server.terminate();
    assert!(
        cluster.members[follower]
            .server
            .wait_exit(Duration::from_secs(10))
            .is_some(),
        "the follower stops on SIGTERM"
    );
    c.put("while-down", "1", None)
        .await
        .expect("put with two members");
    cluster.restart(follower);
    let restarted = Instant::now();
    let f = cluster.client(follower).await;
    // Only the leader's appends bring the put made meanwhile.
    common::wait_until_held(
        &f,
        "while-down",
        "the restarted follower holds the put made while it was down",
        Duration::from_secs(15),
    )
    .await;
    let took = restarted.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "caught up {took:?} after the restart: the leader kept its old connection"
    );
    cluster.assert_running();
}
