//! The Watch service over the wire, against real `kvd serve` processes, with
//! the `etcd-client` crate and with `etcdctl` 3.4: every create option,
//! cancel, progress, compaction, fragments, and etcd's guarantees (ordered,
//! unique, reliable, atomic, resumable, bookmarkable), including a kill -9 of
//! the member a watcher is connected to and a watcher that never reads.
//!
//! `KVD_TEST_ETCD=/usr/bin/etcd` runs the same tests against a real etcd
//! (that is how the expectations were checked); `KVD_GOLDEN_RECORD=1` with it
//! records `tests/golden/watch_etcdctl.txt`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, PutOptions, Txn, TxnOp, WatchFilterType,
    WatchOptions, WatchResponse, WatchStream,
};
use tokio::io::AsyncReadExt;

use common::{against_etcd, check_golden, connect, current_revision, etcdctl, wait_for, Cluster};

/// How long one watch response may take to arrive.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The next response of `stream`; panics on error, end or timeout.
async fn next(stream: &mut WatchStream) -> WatchResponse {
    match tokio::time::timeout(MESSAGE_TIMEOUT, stream.message()).await {
        Ok(Ok(Some(resp))) => resp,
        Ok(Ok(None)) => panic!("watch stream ended"),
        Ok(Err(e)) => panic!("watch stream failed: {e}"),
        Err(_) => panic!("no watch response within {MESSAGE_TIMEOUT:?}"),
    }
}

/// Opens a stream with one watch and returns it after its `created` response.
async fn watch(client: &Client, key: &str, options: WatchOptions) -> (WatchStream, WatchResponse) {
    let mut stream = client
        .watch_client()
        .watch(key, Some(options))
        .await
        .expect("open watch stream");
    let created = next(&mut stream).await;
    assert!(
        created.created(),
        "first response is not created: {created:?}"
    );
    (stream, created)
}

/// A compact view of one event: (type, key, value, mod revision, prev value).
type Ev = (EventType, String, String, i64, Option<String>);

fn ev(e: &etcd_client::Event) -> Ev {
    let kv = e.kv().expect("event kv");
    (
        e.event_type(),
        String::from_utf8_lossy(kv.key()).into_owned(),
        String::from_utf8_lossy(kv.value()).into_owned(),
        kv.mod_revision(),
        e.prev_kv()
            .map(|p| String::from_utf8_lossy(p.value()).into_owned()),
    )
}

/// Reads responses of watch `id` until `count` events arrived; every other
/// response must be for another watch or carry no events.
async fn events(stream: &mut WatchStream, id: i64, count: usize) -> Vec<Ev> {
    let mut out = Vec::new();
    while out.len() < count {
        let resp = next(stream).await;
        if resp.watch_id() != id {
            continue;
        }
        assert!(!resp.canceled(), "watch canceled: {resp:?}");
        out.extend(resp.events().iter().map(ev));
    }
    assert_eq!(out.len(), count, "more events than expected: {out:?}");
    out
}

async fn put(client: &Client, key: &str, value: &str) -> i64 {
    client
        .kv_client()
        .put(key, value, None)
        .await
        .expect("put")
        .header()
        .expect("header")
        .revision()
}

async fn delete(client: &Client, key: &str, options: Option<DeleteOptions>) -> i64 {
    client
        .kv_client()
        .delete(key, options)
        .await
        .expect("delete")
        .header()
        .expect("header")
        .revision()
}

/// Asserts that `revisions` is exactly `first..=last`.
#[track_caller]
fn assert_contiguous(revisions: &[i64], first: i64, last: i64) {
    assert_eq!(revisions.first(), Some(&first), "first revision");
    assert_eq!(revisions.last(), Some(&last), "last revision");
    for w in revisions.windows(2) {
        assert!(
            w[1] > w[0],
            "out of order or duplicate: {} then {}",
            w[0],
            w[1]
        );
        assert_eq!(w[1], w[0] + 1, "gap between {} and {}", w[0], w[1]);
    }
}

// ---------------------------------------------------------------------------
// Create options
// ---------------------------------------------------------------------------

#[tokio::test]
async fn one_stream_many_watches_single_key_prefix_range_and_from_key() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    let (mut stream, created) = watch(&client, "a", WatchOptions::new()).await;
    assert_eq!(created.watch_id(), 0);
    let options = [
        WatchOptions::new().with_prefix(),
        WatchOptions::new().with_range("r5"),
        WatchOptions::new().with_from_key(),
    ];
    for (key, options) in ["p/", "r1", "x"].into_iter().zip(options) {
        stream.watch(key, Some(options)).await.expect("create");
    }
    for id in 1..=3 {
        let resp = next(&mut stream).await;
        assert!(resp.created() && !resp.canceled(), "{resp:?}");
        assert_eq!(resp.watch_id(), id, "ids are given per stream from 0");
    }
    for key in ["a", "ab", "p/1", "p", "r1", "r4", "r5", "x", "zz"] {
        put(&client, key, key).await;
    }
    delete(&client, "a", None).await;
    delete(&client, "p/", Some(DeleteOptions::new().with_prefix())).await;
    let mut got: BTreeMap<i64, Vec<(EventType, String)>> = BTreeMap::new();
    let mut total = 0;
    // a: put + delete; p/: put + delete; r1..r5: r1, r4; from x: x, zz.
    while total < 8 {
        let resp = next(&mut stream).await;
        for e in resp.events() {
            let (t, k, ..) = ev(e);
            got.entry(resp.watch_id()).or_default().push((t, k));
            total += 1;
        }
    }
    let put = EventType::Put;
    let del = EventType::Delete;
    let s = |k: &str| k.to_string();
    assert_eq!(got[&0], vec![(put, s("a")), (del, s("a"))]);
    assert_eq!(got[&1], vec![(put, s("p/1")), (del, s("p/1"))]);
    assert_eq!(got[&2], vec![(put, s("r1")), (put, s("r4"))]);
    assert_eq!(got[&3], vec![(put, s("x")), (put, s("zz"))]);
}

#[tokio::test]
async fn start_revision_replays_history_with_deletes_then_continues_live() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    let r1 = put(&client, "h/k", "v1").await;
    put(&client, "h/k", "v2").await;
    delete(&client, "h/k", None).await;
    put(&client, "h/k", "v3").await;
    put(&client, "h/other", "o").await;
    let options = WatchOptions::new()
        .with_prefix()
        .with_prev_key()
        .with_start_revision(r1);
    let (mut stream, created) = watch(&client, "h/", options).await;
    assert_eq!(created.header().expect("header").revision(), r1 + 4);
    let replay = events(&mut stream, created.watch_id(), 5).await;
    let p = EventType::Put;
    let s = |x: &str| x.to_string();
    assert_eq!(
        replay,
        vec![
            (p, s("h/k"), s("v1"), r1, None),
            (p, s("h/k"), s("v2"), r1 + 1, Some(s("v1"))),
            (EventType::Delete, s("h/k"), s(""), r1 + 2, Some(s("v2"))),
            (p, s("h/k"), s("v3"), r1 + 3, None),
            (p, s("h/other"), s("o"), r1 + 4, None),
        ]
    );
    // The replay hands over to the live path with nothing lost or repeated.
    put(&client, "h/k", "v4").await;
    let live = events(&mut stream, created.watch_id(), 1).await;
    assert_eq!(live, vec![(p, s("h/k"), s("v4"), r1 + 5, Some(s("v3")))]);
}

#[tokio::test]
async fn filters_noput_and_nodelete() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    let (mut no_put, c1) = watch(
        &client,
        "f",
        WatchOptions::new().with_filters([WatchFilterType::NoPut]),
    )
    .await;
    let (mut no_delete, c2) = watch(
        &client,
        "f",
        WatchOptions::new().with_filters([WatchFilterType::NoDelete]),
    )
    .await;
    put(&client, "f", "1").await;
    let rev = delete(&client, "f", None).await;
    put(&client, "f", "2").await;
    let deletes = events(&mut no_put, c1.watch_id(), 1).await;
    assert_eq!(deletes[0].0, EventType::Delete);
    assert_eq!(deletes[0].3, rev);
    let puts = events(&mut no_delete, c2.watch_id(), 2).await;
    assert_eq!(
        puts.iter().map(|e| (e.0, e.2.as_str())).collect::<Vec<_>>(),
        vec![(EventType::Put, "1"), (EventType::Put, "2")]
    );
    // The NOPUT watch saw nothing of the last put: the next thing it gets
    // is the answer to a progress request.
    no_put.request_progress().await.expect("progress request");
    let resp = next(&mut no_put).await;
    assert!(resp.events().is_empty(), "{resp:?}");
}

#[tokio::test]
async fn prev_kv_on_live_events() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    put(&client, "pk", "old").await;
    let (mut with, c1) = watch(&client, "pk", WatchOptions::new().with_prev_key()).await;
    let (mut without, c2) = watch(&client, "pk", WatchOptions::new()).await;
    put(&client, "pk", "new").await;
    delete(&client, "pk", None).await;
    let got = events(&mut with, c1.watch_id(), 2).await;
    assert_eq!(got[0].4.as_deref(), Some("old"));
    assert_eq!(got[1].4.as_deref(), Some("new"));
    let got = events(&mut without, c2.watch_id(), 2).await;
    assert_eq!((got[0].4.as_deref(), got[1].4.as_deref()), (None, None));
}

#[tokio::test]
async fn client_chosen_watch_ids_and_duplicates() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    let (mut stream, created) = watch(&client, "id", WatchOptions::new().with_watch_id(7)).await;
    assert_eq!(created.watch_id(), 7);
    stream
        .watch("id", Some(WatchOptions::new().with_watch_id(7)))
        .await
        .expect("create");
    let dup = next(&mut stream).await;
    assert!(dup.created() && dup.canceled(), "{dup:?}");
    assert_eq!(dup.watch_id(), -1);
    assert_eq!(
        dup.cancel_reason(),
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    // Automatic ids start at 0 on each stream.
    stream.watch("id", None).await.expect("create");
    let auto = next(&mut stream).await;
    assert!(auto.created() && !auto.canceled());
    assert_eq!(auto.watch_id(), 0);
    // Both live watches get the event; the rejected one does not exist.
    put(&client, "id", "x").await;
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let resp = next(&mut stream).await;
        assert_eq!(resp.events().len(), 1);
        ids.push(resp.watch_id());
    }
    ids.sort();
    assert_eq!(ids, vec![0, 7]);
}

#[tokio::test]
async fn empty_range_is_rejected_like_etcd() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    let mut stream = client
        .watch_client()
        .watch("b", Some(WatchOptions::new().with_range("a")))
        .await
        .expect("open");
    let resp = next(&mut stream).await;
    assert!(resp.created() && resp.canceled(), "{resp:?}");
    assert_eq!(resp.watch_id(), -1);
    assert_eq!(resp.cancel_reason(), "mvcc: watcher range is empty");
}

#[tokio::test]
async fn cancel_stops_events_and_unknown_ids_get_no_answer() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    let (mut stream, created) = watch(&client, "c", WatchOptions::new()).await;
    let id = created.watch_id();
    put(&client, "c", "1").await;
    events(&mut stream, id, 1).await;
    stream.cancel(id).await.expect("cancel");
    let resp = next(&mut stream).await;
    assert!(resp.canceled() && !resp.created(), "{resp:?}");
    assert_eq!(resp.watch_id(), id);
    assert!(resp.events().is_empty());
    put(&client, "c", "2").await;
    stream.cancel(42).await.expect("cancel unknown");
    // Neither the event nor an answer to the unknown cancel comes: the next
    // response is the one for a progress request.
    stream.request_progress().await.expect("progress");
    let resp = next(&mut stream).await;
    assert!(
        resp.events().is_empty() && !resp.canceled() && !resp.created(),
        "{resp:?}"
    );
    assert_eq!(resp.watch_id(), -1);
}

#[tokio::test]
async fn progress_request_reports_the_current_revision() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    let (mut stream, created) = watch(&client, "pr", WatchOptions::new()).await;
    let other = put(&client, "unrelated", "x").await;
    assert!(other > created.header().expect("header").revision());
    // Wait until the member has dispatched the revision (a watch on the
    // written key sees it).
    let (mut probe, pc) = watch(
        &client,
        "unrelated",
        WatchOptions::new().with_start_revision(other),
    )
    .await;
    events(&mut probe, pc.watch_id(), 1).await;
    stream.request_progress().await.expect("progress");
    let resp = next(&mut stream).await;
    assert_eq!(resp.watch_id(), -1);
    assert!(resp.events().is_empty() && !resp.created() && !resp.canceled());
    assert_eq!(resp.header().expect("header").revision(), other);
}

#[tokio::test]
async fn progress_notify_is_accepted() {
    // The 10 min interval is etcd's; the notification itself is checked by
    // a unit test with a short interval (src/core/api/watch.rs).
    let cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    let (mut stream, created) =
        watch(&client, "pn", WatchOptions::new().with_progress_notify()).await;
    put(&client, "pn", "1").await;
    events(&mut stream, created.watch_id(), 1).await;
}

#[tokio::test]
async fn compacted_start_revision_is_created_then_canceled() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    let first = put(&client, "cp", "1").await;
    put(&client, "cp", "2").await;
    let compact_at = put(&client, "cp", "3").await;
    client
        .kv_client()
        .compact(compact_at, None)
        .await
        .expect("compact");
    let mut stream = client
        .watch_client()
        .watch("cp", Some(WatchOptions::new().with_start_revision(first)))
        .await
        .expect("open");
    let created = next(&mut stream).await;
    assert!(created.created() && !created.canceled(), "{created:?}");
    let canceled = next(&mut stream).await;
    assert!(canceled.canceled() && !canceled.created(), "{canceled:?}");
    assert_eq!(canceled.watch_id(), created.watch_id());
    assert_eq!(canceled.compact_revision(), compact_at);
    assert!(canceled.events().is_empty());
    // The compact revision itself can still be watched.
    let (mut ok, c) = watch(
        &client,
        "cp",
        WatchOptions::new().with_start_revision(compact_at),
    )
    .await;
    let got = events(&mut ok, c.watch_id(), 1).await;
    assert_eq!((got[0].2.as_str(), got[0].3), ("3", compact_at));
}

#[tokio::test]
async fn negative_start_revision_is_rejected() {
    if against_etcd() {
        return; // etcd 3.4 predates this check (3.5 has it)
    }
    let cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    let mut stream = client
        .watch_client()
        .watch("n", Some(WatchOptions::new().with_start_revision(-1)))
        .await
        .expect("open");
    let resp = next(&mut stream).await;
    assert!(resp.created() && resp.canceled(), "{resp:?}");
    assert_eq!(resp.watch_id(), -1);
    assert_eq!(
        resp.cancel_reason(),
        "etcdserver: mvcc: required revision has been compacted"
    );
}

#[tokio::test]
async fn large_responses_are_fragmented_when_asked() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    const KEYS: usize = 300;
    let value = "v".repeat(8 * 1024);
    for i in 0..KEYS {
        put(&client, &format!("fr/{i:03}"), &value).await;
    }
    let options = || WatchOptions::new().with_prefix().with_prev_key();
    let (mut fragmented, c1) = watch(&client, "fr/", options().with_fragment()).await;
    let (mut whole, c2) = watch(&client, "fr/", options()).await;
    // One revision: 300 deletes whose prev_kv make ~2.4 MiB, above
    // --max-request-bytes (1.5 MiB) + 512 KiB.
    let rev = delete(&client, "fr/", Some(DeleteOptions::new().with_prefix())).await;
    let mut parts = Vec::new();
    loop {
        let resp = next(&mut fragmented).await;
        assert_eq!(resp.watch_id(), c1.watch_id());
        assert_eq!(resp.header().expect("header").revision(), rev);
        let more = resp.0.fragment;
        parts.push(resp.events().len());
        if !more {
            break;
        }
    }
    assert!(parts.len() >= 2, "not fragmented: {parts:?}");
    assert_eq!(parts.iter().sum::<usize>(), KEYS);
    let resp = next(&mut whole).await;
    assert_eq!(resp.watch_id(), c2.watch_id());
    assert!(!resp.0.fragment);
    assert_eq!(resp.events().len(), KEYS);
    assert!(resp
        .events()
        .iter()
        .all(|e| e.prev_kv().is_some_and(|p| p.value().len() == value.len())));
}

// ---------------------------------------------------------------------------
// Guarantees
// ---------------------------------------------------------------------------

/// Atomic: the events of one revision (a txn) arrive in one response, live
/// and replayed.
#[tokio::test]
async fn events_of_one_txn_arrive_in_one_response() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    let (mut live, c) = watch(&client, "t/", WatchOptions::new().with_prefix()).await;
    let txn = Txn::new()
        .when([Compare::version("t/none", CompareOp::Equal, 0)])
        .and_then(
            (0..20)
                .map(|i| TxnOp::put(format!("t/{i:02}"), "x", None))
                .collect::<Vec<_>>(),
        );
    let resp = client.kv_client().txn(txn).await.expect("txn");
    let rev = resp.header().expect("header").revision();
    let got = next(&mut live).await;
    assert_eq!(got.watch_id(), c.watch_id());
    assert_eq!(got.events().len(), 20);
    assert!(got.events().iter().all(|e| ev(e).3 == rev));
    assert_eq!(got.header().expect("header").revision(), rev);
    let (mut replay, c) = watch(
        &client,
        "t/",
        WatchOptions::new().with_prefix().with_start_revision(rev),
    )
    .await;
    let got = next(&mut replay).await;
    assert_eq!(got.watch_id(), c.watch_id());
    assert_eq!(got.events().len(), 20);
}

/// Bookmarkable: a progress notification at revision R comes after every
/// event up to R, also while the watch is still catching up from disk.
#[tokio::test]
async fn progress_notifications_come_after_every_event_they_cover() {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    let start = put(&client, "bm/0", "x").await;
    for i in 1..200 {
        put(&client, &format!("bm/{i}"), "x").await;
    }
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 200..1200 {
                put(&client, &format!("bm/{i}"), "x").await;
            }
        })
    };
    // Starts unsynced (from the past) while writes continue.
    let (mut stream, created) = watch(
        &client,
        "bm/",
        WatchOptions::new().with_prefix().with_start_revision(start),
    )
    .await;
    let mut last = start - 1;
    let mut progress_seen = 0;
    let mut received = 0usize;
    while received < 1200 {
        let resp = next(&mut stream).await;
        if resp.events().is_empty() {
            let r = resp.header().expect("header").revision();
            assert!(
                last >= r,
                "progress at revision {r} before the event at revision {}",
                last + 1
            );
            progress_seen += 1;
            continue;
        }
        assert_eq!(resp.watch_id(), created.watch_id());
        for e in resp.events() {
            let rev = ev(e).3;
            assert_eq!(rev, last + 1, "ordered, no gaps");
            last = rev;
            received += 1;
        }
        if received.is_multiple_of(50) {
            stream.request_progress().await.expect("progress request");
        }
    }
    writer.await.expect("writer");
    stream.request_progress().await.expect("progress request");
    // Earlier requests may still be answered first, with older revisions.
    loop {
        let resp = next(&mut stream).await;
        assert!(resp.events().is_empty(), "{resp:?}");
        let r = resp.header().expect("header").revision();
        assert!(r <= last, "progress at {r} beyond the last event {last}");
        progress_seen += 1;
        if r == last {
            break;
        }
    }
    assert!(progress_seen > 1, "no progress while events flowed");
}

/// Resumable and reliable across a crash: a watcher on the leader sees it
/// killed with SIGKILL while writes continue through the others, resumes on
/// another member at `last + 1`, and in the end has seen every revision
/// exactly once, in order, including every acknowledged put.
#[tokio::test]
async fn resume_on_another_member_after_kill9_loses_and_repeats_nothing() {
    const TOTAL: usize = 10_500;
    const WRITERS: usize = 24;
    let _serial = common::serial().await;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader_index().await;
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let writer_endpoints: Vec<String> = others.iter().map(|&i| cluster.endpoint(i)).collect();
    let writer = connect(&writer_endpoints).await;
    let start = put(&writer, "w0", "start").await;

    let acked: Arc<Mutex<Vec<(i64, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let issued = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..WRITERS {
        let writer = writer.clone();
        let (acked, issued) = (acked.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= TOTAL {
                    return;
                }
                let key = format!("w/{t:02}/{n:05}");
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    match writer.kv_client().put(key.clone(), "v", None).await {
                        Ok(resp) => {
                            let rev = resp.header().expect("header").revision();
                            acked.lock().expect("lock").push((rev, key));
                            break;
                        }
                        Err(e) => {
                            assert!(Instant::now() < deadline, "put {key}: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        }));
    }
    let writers = tokio::spawn(async move {
        for t in tasks {
            t.await.expect("writer");
        }
    });

    let options = |from: i64| WatchOptions::new().with_prefix().with_start_revision(from);
    let watcher = cluster.client(leader).await;
    let (mut stream, _) = watch(&watcher, "w/", options(start + 1)).await;
    let mut seen: Vec<(i64, String)> = Vec::new();
    let mut killed = false;
    let mut seen_at_kill = 0;
    let mut resumes = 0;
    let mut final_rev = None;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    loop {
        assert!(
            Instant::now() < deadline,
            "did not finish; {} events",
            seen.len()
        );
        if final_rev.is_none() && writers.is_finished() {
            final_rev = Some(current_revision(&writer).await);
        }
        if final_rev.is_some_and(|f| seen.last().is_some_and(|(r, _)| *r >= f)) {
            break;
        }
        let msg = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
        let resp = match msg {
            Err(_) => continue, // idle: check the writers again
            Ok(Ok(Some(resp))) => resp,
            Ok(end) => {
                assert!(
                    killed,
                    "watch stream broke before the kill after {} events, {:?}: {end:?}",
                    seen.len(),
                    started.elapsed()
                );
                // Resume on a live member right after the last revision seen.
                let from = seen.last().map_or(start + 1, |(r, _)| r + 1);
                let member = others[seen.len() % others.len()];
                let client = cluster.client(member).await;
                stream = match client.watch_client().watch("w/", Some(options(from))).await {
                    Ok(s) => s,
                    Err(_) => continue,
                };
                resumes += 1;
                continue;
            }
        };
        assert!(!resp.canceled(), "{resp:?}");
        for e in resp.events() {
            let (t, key, _, rev, _) = ev(e);
            assert_eq!(t, EventType::Put);
            seen.push((rev, key));
        }
        if !killed && seen.len() >= TOTAL / 3 {
            cluster.kill(leader);
            killed = true;
            seen_at_kill = seen.len();
        }
    }
    writers.await.expect("writers");
    assert!(killed);
    eprintln!(
        "{} events, leader killed after {seen_at_kill}, {resumes} resume(s), {} puts acknowledged",
        seen.len(),
        acked.lock().expect("lock").len()
    );
    let final_rev = final_rev.expect("final revision");
    let revisions: Vec<i64> = seen.iter().map(|(r, _)| *r).collect();
    assert_contiguous(&revisions, start + 1, final_rev);
    assert!(seen.len() >= TOTAL, "{} events", seen.len());
    let by_rev: HashMap<i64, &String> = seen.iter().map(|(r, k)| (*r, k)).collect();
    for (rev, key) in acked.lock().expect("lock").iter() {
        assert_eq!(by_rev.get(rev), Some(&key), "acknowledged put at {rev}");
    }
}

/// No starvation: a watcher whose client never reads does not hold up puts
/// or other watchers; it is moved off the live path and, once it reads,
/// catches up from disk with every event, in order.
#[tokio::test]
async fn a_watcher_that_never_reads_slows_down_nobody() {
    const PUTS: usize = 3000;
    let cluster = Cluster::start(1).await;
    let port = cluster.members[0].client_port;
    // Separate connections: HTTP/2 flow control is per connection too.
    let writer = cluster.client(0).await;
    let slow_client = cluster.client(0).await;
    let fast_client = cluster.client(0).await;
    let options = || WatchOptions::new().with_prefix();
    let (mut slow, _) = watch(&slow_client, "s/", options()).await;
    let mut fast = Vec::new();
    for _ in 0..2 {
        fast.push(watch(&fast_client, "s/", options()).await);
    }
    let unsynced_before = common::metric(port, "kvd_watch_unsynced_total").await;
    let first = current_revision(&writer).await + 1;
    let value = "v".repeat(4096);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (writer, value) = (writer.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..PUTS / 8 {
                writer
                    .kv_client()
                    .put(format!("s/{t}/{i}"), value.clone(), Some(PutOptions::new()))
                    .await
                    .expect("put while a watcher is stalled");
            }
        }));
    }
    let readers: Vec<_> = fast
        .into_iter()
        .map(|(mut stream, created)| {
            tokio::spawn(async move {
                let got = events(&mut stream, created.watch_id(), PUTS).await;
                got.iter().map(|e| e.3).collect::<Vec<i64>>()
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(300), t)
            .await
            .expect("puts complete")
            .expect("writer");
    }
    let last = first + PUTS as i64 - 1;
    for r in readers {
        let revisions = tokio::time::timeout(Duration::from_secs(120), r)
            .await
            .expect("fast watcher keeps up")
            .expect("reader");
        assert_contiguous(&revisions, first, last);
    }
    if !against_etcd() {
        let unsynced = common::metric(port, "kvd_watch_unsynced_total").await;
        assert!(
            unsynced > unsynced_before,
            "the stalled watcher was never moved off the live path"
        );
    }
    // Now it reads: every event, in order, from disk and then live.
    let got = events(&mut slow, 0, PUTS).await;
    let revisions: Vec<i64> = got.iter().map(|e| e.3).collect();
    assert_contiguous(&revisions, first, last);
    put(&writer, "s/after", "x").await;
    let after = events(&mut slow, 0, 1).await;
    assert_eq!(after[0].3, last + 1);
}

/// Open watch streams do not keep a member from stopping on SIGTERM: they
/// end with `etcdserver: server stopped` (Unavailable), so that clients
/// move to another member.
#[tokio::test]
async fn sigterm_ends_watch_streams_and_the_member_exits() {
    let mut cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    let (mut reading, _) = watch(&client, "x", WatchOptions::new()).await;
    cluster.members[0].server.terminate();
    let end = tokio::time::timeout(MESSAGE_TIMEOUT, reading.message())
        .await
        .expect("the stream ends in time");
    match end {
        // etcd closes the connection instead.
        Ok(None) | Err(_) if against_etcd() => {}
        Err(etcd_client::Error::GRpcStatus(status)) => {
            assert_eq!(
                (status.code(), status.message()),
                (tonic::Code::Unavailable, "etcdserver: server stopped")
            );
        }
        other => panic!("unexpected end of the watch stream: {other:?}"),
    }
    let status = cluster.members[0].server.wait_exit(Duration::from_secs(30));
    assert!(status.is_some(), "member still running 30 s after SIGTERM");
}

/// Any member serves watches: a watcher on a follower sees writes made
/// through the leader.
#[tokio::test]
async fn followers_serve_watches() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader_index().await;
    let follower = (leader + 1) % 3;
    let watcher = cluster.client(follower).await;
    let writer = cluster.client(leader).await;
    let (mut stream, created) = watch(&watcher, "fw", WatchOptions::new()).await;
    let rev = put(&writer, "fw", "1").await;
    let got = events(&mut stream, created.watch_id(), 1).await;
    assert_eq!(got[0].3, rev);
    let header = created.header().expect("header");
    assert_eq!(header.member_id(), cluster.member_id(follower).await);
}

// ---------------------------------------------------------------------------
// etcdctl
// ---------------------------------------------------------------------------

/// A running `etcdctl watch ...` with its stdout collected.
struct EtcdctlWatch {
    child: tokio::process::Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl EtcdctlWatch {
    fn start(endpoint: &str, args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(common::etcdctl_path())
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoint}"))
            .arg("watch")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn etcdctl watch");
        let collect = |mut pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
            let text = Arc::new(Mutex::new(String::new()));
            let sink = text.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .expect("lock")
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
            text
        };
        let stdout = collect(Box::new(child.stdout.take().expect("stdout")));
        let stderr = collect(Box::new(child.stderr.take().expect("stderr")));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits until stdout has a line containing `needle`, then stops etcdctl.
    async fn until_line(mut self, needle: &str) -> String {
        let stdout = self.stdout.clone();
        wait_for(
            &format!("etcdctl watch prints {needle:?}"),
            Duration::from_secs(30),
            || {
                let text = stdout.lock().expect("lock").clone();
                async move {
                    if text.lines().any(|l| l.contains(needle)) {
                        Ok(())
                    } else {
                        Err(text)
                    }
                }
            },
        )
        .await;
        let _ = self.child.kill().await;
        let text = self.stdout.lock().expect("lock").clone();
        text
    }

    /// Waits for etcdctl to exit by itself; returns a transcript.
    async fn exit(mut self) -> String {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("etcdctl watch exits")
            .expect("wait");
        tokio::time::sleep(Duration::from_millis(200)).await;
        format!(
            "{}[stderr]\n{}[exit {}]\n",
            self.stdout.lock().expect("lock"),
            self.stderr.lock().expect("lock"),
            status.code().unwrap_or(-1)
        )
    }
}

/// Zeroes what differs between clusters in `etcdctl watch -w json` lines.
fn normalize_json(text: &str) -> String {
    text.lines()
        .map(
            |line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(mut v) => {
                    if let Some(h) = v.get_mut("Header").and_then(|h| h.as_object_mut()) {
                        for k in ["cluster_id", "member_id", "raft_term"] {
                            if h.contains_key(k) {
                                h.insert(k.to_string(), serde_json::json!(0));
                            }
                        }
                    }
                    v.to_string()
                }
                Err(_) => line.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `etcdctl watch`, `watch --rev`, `watch --prefix --prev-kv`, `-w json`
/// and a compacted `--rev`, compared with what etcd 3.4.23 printed.
#[tokio::test]
async fn etcdctl_watch_matches_etcd() {
    let cluster = Cluster::start(1).await;
    let endpoint = cluster.endpoint(0);
    let port = cluster.members[0].client_port;
    let ep = [endpoint.clone()];
    let run = |args: &'static [&'static str]| {
        let ep = ep.clone();
        async move {
            let out = etcdctl(&ep, args).await;
            assert!(out.status.success(), "etcdctl {args:?}: {out:?}");
        }
    };
    run(&["put", "foo", "bar"]).await;
    run(&["put", "foo", "baz"]).await;
    run(&["put", "foo1", "one"]).await;
    run(&["del", "foo"]).await;
    run(&["put", "fop", "not in prefix"]).await;
    run(&["put", "foo", "again"]).await;
    run(&["put", "foo/end", "done"]).await;
    let mut transcript = String::new();

    for args in [
        &["--rev", "2", "foo"][..],
        &["--rev", "1", "--prefix", "foo", "--prev-kv"][..],
        &["--rev", "2", "-w", "json", "foo"][..],
    ] {
        transcript.push_str(&format!("$ etcdctl watch {}\n", args.join(" ")));
        let out = EtcdctlWatch::start(&endpoint, args)
            .until_line(match args {
                a if a.contains(&"--prefix") => "done",
                a if a.contains(&"json") => "YWdhaW4=", // "again"
                _ => "again",
            })
            .await;
        let out = if args.contains(&"json") {
            // The last line may be cut short when etcdctl is stopped.
            let mut text = normalize_json(&out);
            if !out.ends_with('\n') {
                text = text
                    .lines()
                    .take(text.lines().count() - 1)
                    .collect::<Vec<_>>()
                    .join("\n")
                    + "\n";
            }
            text
        } else {
            out
        };
        transcript.push_str(&out);
        transcript.push('\n');
    }

    // Live: start watching, wait until the member counts the watcher, write.
    transcript.push_str("$ etcdctl watch --prefix live/ --prev-kv\n");
    let watchers = |want: f64| async move {
        let now = common::metric(port, "etcd_debugging_mvcc_watcher_total").await;
        if now == want {
            Ok(())
        } else {
            Err(format!("etcd_debugging_mvcc_watcher_total = {now}"))
        }
    };
    // The watchers of the etcdctl processes stopped above go away.
    wait_for("no watchers left", Duration::from_secs(30), || {
        watchers(0.0)
    })
    .await;
    let live = EtcdctlWatch::start(&endpoint, &["--prefix", "live/", "--prev-kv"]);
    wait_for("etcdctl watch registered", Duration::from_secs(30), || {
        watchers(1.0)
    })
    .await;
    run(&["put", "live/a", "1"]).await;
    run(&["put", "live/a", "2"]).await;
    run(&["del", "live/a"]).await;
    run(&["put", "live/b", "last"]).await;
    transcript.push_str(&live.until_line("last").await);
    transcript.push('\n');

    // Compacted: etcdctl reports the cancel and exits.
    run(&["compact", "6"]).await;
    transcript.push_str("$ etcdctl watch --rev 2 foo\n");
    transcript.push_str(
        &EtcdctlWatch::start(&endpoint, &["--rev", "2", "foo"])
            .exit()
            .await,
    );
    check_golden("watch_etcdctl.txt", &transcript);
}
