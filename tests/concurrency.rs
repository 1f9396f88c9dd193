//! etcd's lock (`v3lockpb.Lock`) and election (`v3electionpb.Election`)
//! services against a real 3-member cluster, through the etcd-client
//! crate: a lock waits for its holder, is released by unlock or by the end
//! of the holder's lease; an election's leader is the first candidate,
//! proclaims new values that observers see, and hands over on resign;
//! etcd's errors for the wrong leader key, no leader and unknown leases;
//! an observer that goes away leaves no watcher behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::time::Duration;

use common::{assert_status, wait_for, Cluster};
use etcd_client::{LockOptions, ProclaimOptions, ResignOptions};

const WAIT: Duration = Duration::from_secs(10);
/// The member's watcher gauge.
const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";

/// Waits until a second key exists under `prefix`: the second locker or
/// candidate has written its key and is waiting behind the first.
async fn waiting_behind(c: &etcd_client::Client, prefix: &str) {
    wait_for("the second key under the prefix", WAIT, || {
        let mut c = c.clone();
        async move {
            let options = etcd_client::GetOptions::new()
                .with_prefix()
                .with_count_only();
            match c.get(prefix, Some(options)).await {
                Ok(r) if r.count() >= 2 => Ok(()),
                Ok(r) => Err(format!("{} keys", r.count())),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_waits_for_its_holder_and_is_freed_by_unlock_or_lease_end() {
    let cluster = Cluster::start(3).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;

    let held = a.lock("job", None).await.expect("lock");
    assert!(held.key().starts_with(b"job/"), "{:?}", held.key());
    let waiter = {
        let mut b = b.clone();
        tokio::spawn(async move { b.lock("job", None).await })
    };
    waiting_behind(&a, "job/").await;
    assert!(!waiter.is_finished(), "the second lock waits for the first");
    a.unlock(held.key()).await.expect("unlock");
    let second = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("released by unlock in time")
        .expect("task")
        .expect("second lock");
    assert_ne!(second.key(), held.key());
    b.unlock(second.key()).await.expect("unlock");

    // A holder whose lease ends releases the lock without unlocking.
    let short = a.lease_grant(2, None).await.expect("grant").id();
    let long = b.lease_grant(60, None).await.expect("grant").id();
    a.lock("job", Some(LockOptions::new().with_lease(short)))
        .await
        .expect("lock with a short lease");
    let started = tokio::time::Instant::now();
    let waiter = b
        .lock("job", Some(LockOptions::new().with_lease(long)))
        .await
        .expect("lock after the holder's lease ended");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited for the lease to end"
    );
    assert!(waiter.key().ends_with(format!("{long:x}").as_bytes()));

    // An unknown lease: etcd's message, as its server sends it.
    assert_status(
        a.lock("other", Some(LockOptions::new().with_lease(0x0bad)))
            .await,
        tonic::Code::Unknown,
        "etcdserver: requested lease not found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_election_leads_proclaims_observes_and_hands_over() {
    let cluster = Cluster::start(3).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(2).await;

    assert_status(
        a.leader("svc").await,
        tonic::Code::Unknown,
        "election: no leader",
    );
    let la = a.lease_grant(60, None).await.expect("grant").id();
    let lb = b.lease_grant(60, None).await.expect("grant").id();
    let won = a.campaign("svc", "a1", la).await.expect("campaign");
    let leader = won.leader().expect("leader key").clone();
    let current = a.leader("svc").await.expect("leader");
    assert_eq!(current.kv().expect("kv").value(), b"a1");

    let mut observer = b.observe("svc").await.expect("observe");
    let first = tokio::time::timeout(WAIT, observer.message())
        .await
        .expect("in time")
        .expect("observe")
        .expect("open");
    assert_eq!(first.kv().expect("kv").value(), b"a1");

    // b campaigns and waits behind a.
    let candidate = {
        let mut b = b.clone();
        tokio::spawn(async move { b.campaign("svc", "b1", lb).await })
    };
    waiting_behind(&a, "svc/").await;
    assert!(!candidate.is_finished(), "b waits while a leads");

    a.proclaim(
        "a2",
        Some(ProclaimOptions::new().with_leader(leader.clone())),
    )
    .await
    .expect("proclaim");
    let seen = tokio::time::timeout(WAIT, observer.message())
        .await
        .expect("in time")
        .expect("observe")
        .expect("open");
    assert_eq!(seen.kv().expect("kv").value(), b"a2");

    a.resign(Some(ResignOptions::new().with_leader(leader.clone())))
        .await
        .expect("resign");
    let won = tokio::time::timeout(WAIT, candidate)
        .await
        .expect("b leads after a resigns")
        .expect("task")
        .expect("campaign");
    assert!(won.leader().is_some());
    let next = tokio::time::timeout(WAIT, observer.message())
        .await
        .expect("in time")
        .expect("observe")
        .expect("open");
    assert_eq!(next.kv().expect("kv").value(), b"b1");
    assert_eq!(
        a.leader("svc")
            .await
            .expect("leader")
            .kv()
            .expect("kv")
            .value(),
        b"b1"
    );

    // a's old key no longer leads.
    assert_status(
        a.proclaim("a3", Some(ProclaimOptions::new().with_leader(leader)))
            .await,
        tonic::Code::Unknown,
        "election: not leader",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_observer_that_goes_away_leaves_no_watcher_behind() {
    let cluster = Cluster::start(1).await;
    let port = cluster.members[0].client_port;
    let c = cluster.client(0).await;
    let before = common::metric(port, WATCHERS).await;
    // Elections with no candidate: each observer waits for a first one.
    let mut observers = Vec::new();
    for i in 0..20 {
        let mut e = c.election_client();
        observers.push(e.observe(format!("nobody-{i}")).await.expect("observe"));
    }
    wait_for("every observer watches", WAIT, || async move {
        let now = common::metric(port, WATCHERS).await;
        if now >= before + 20.0 {
            Ok(())
        } else {
            Err(format!("{now} watchers"))
        }
    })
    .await;
    drop(observers);
    wait_for("the observers' watchers are gone", WAIT, || async move {
        let now = common::metric(port, WATCHERS).await;
        if now <= before {
            Ok(())
        } else {
            Err(format!("{now} watchers, {before} before"))
        }
    })
    .await;
}
