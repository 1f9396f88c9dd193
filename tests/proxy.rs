//! `kvd proxy` in front of real `kvd serve` clusters, driven with etcdctl
//! 3.4 and the etcd-client crate: every service through it, watch
//! coalescing (1,000 watchers on 10 overlapping prefixes, across a member
//! kill), the read cache seeing writes made elsewhere, the cache keyed by
//! token, keep-alives, `--namespace`, registration, flags and config.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, Permission, PutOptions, WatchOptions,
};

use common::pki::{Ca, Usage, Validity};
use common::proxy::{kvd_spec, start_proxy};
use common::{
    assert_status, connect, etcdctl, free_port, stdout_ok, wait_for, ClientFiles, Cluster,
    ClusterOptions, Server, TestDir,
};

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_and_the_crate_through_the_proxy() {
    let cluster = Cluster::start(3).await;
    let dir = TestDir::new();
    let proxy = start_proxy(dir.path(), "proxy", &cluster.endpoints(), &[]).await;
    let via = proxy.endpoints();
    let direct = cluster.endpoints();

    // etcdctl: the same output through the proxy as from a member.
    for args in [
        vec!["put", "k1", "v1"],
        vec!["put", "k2", "v2"],
        vec!["get", "k", "--prefix"],
        vec!["get", "k1", "--consistency=s"],
        vec!["get", "k", "--prefix", "--keys-only", "--limit=1"],
        vec!["del", "k2", "--prev-kv"],
    ] {
        let out = stdout_ok(&args, &etcdctl(&via, &args).await);
        if args[0] == "get" {
            let want = stdout_ok(&args, &etcdctl(&direct, &args).await);
            assert_eq!(out, want, "etcdctl {args:?}");
        }
    }
    let list = |out: &str| {
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let members = ["member", "list"];
    assert_eq!(
        list(&stdout_ok(&members, &etcdctl(&via, &members).await)),
        list(&stdout_ok(&members, &etcdctl(&direct, &members).await))
    );
    let lock = ["lock", "proxy-lock", "--", "echo", "held"];
    assert_eq!(
        stdout_ok(&lock, &etcdctl(&via, &lock).await).lines().last(),
        Some("held")
    );
    let lease = ["lease", "grant", "30"];
    let granted = stdout_ok(&lease, &etcdctl(&via, &lease).await);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    let ka = ["lease", "keep-alive", "--once", id.as_str()];
    assert!(stdout_ok(&ka, &etcdctl(&via, &ka).await).contains("keepalived with TTL(30)"));
    let status = ["endpoint", "status"];
    stdout_ok(&status, &etcdctl(&via, &status).await);

    // The crate: KV, txn, watch options, leases, election, maintenance.
    let mut c = connect(&via).await;
    let put = c.put("w/a", "1", None).await.unwrap();
    let rev = put.header().unwrap().revision();
    let mut watch = c
        .watch(
            "w/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_prev_key()
                    .with_start_revision(rev),
            ),
        )
        .await
        .unwrap();
    let created = watch.message().await.unwrap().unwrap();
    assert!(created.created());
    c.put("w/a", "2", None).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let r = watch.message().await.unwrap().unwrap();
        for e in r.events() {
            let kv = e.kv().unwrap();
            seen.push((
                kv.value_str().unwrap().to_string(),
                e.prev_kv().map(|p| p.value_str().unwrap().to_string()),
            ));
        }
    }
    assert_eq!(
        seen,
        vec![
            ("1".to_string(), None),
            ("2".to_string(), Some("1".to_string()))
        ]
    );
    // A progress request is answered (etcd's grpc-proxy drops it).
    watch.request_progress().await.unwrap();
    let progress = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("progress answer")
        .unwrap()
        .unwrap();
    assert_eq!(progress.watch_id(), -1);
    assert!(progress.header().unwrap().revision() > rev);
    // Errors keep etcd's codes and messages.
    assert_status(
        c.lease_time_to_live(12345, None)
            .await
            .map(|_| ())
            .and(c.lease_revoke(12345).await.map(|_| ())),
        tonic::Code::NotFound,
        "etcdserver: requested lease not found",
    );
    let compact_to = c
        .put("w/b", "x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.compact(compact_to, None).await.unwrap();
    assert_status(
        c.get("w/a", Some(GetOptions::new().with_revision(rev)))
            .await,
        tonic::Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    let lease = c.lease_grant(10, None).await.unwrap().id();
    let (mut keeper, mut answers) = c.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    assert_eq!(answers.message().await.unwrap().unwrap().ttl(), 10);
    let campaign = c.campaign("proxy-election", "me", lease).await.unwrap();
    let leader = c.leader("proxy-election").await.unwrap();
    assert_eq!(leader.kv().unwrap().value_str().unwrap(), "me");
    c.resign(
        campaign
            .leader()
            .cloned()
            .map(|l| etcd_client::ResignOptions::new().with_leader(l)),
    )
    .await
    .unwrap();
    assert!(c.status().await.unwrap().version().starts_with("3."));
    let id = c.member_list().await.unwrap().members()[0].id();
    assert_status(
        c.member_promote(id).await,
        tonic::Code::FailedPrecondition,
        "etcdserver: can only promote a learner member",
    );
}

/// Ten prefixes, each inside the one before or beside it.
const PREFIXES: [&str; 10] = [
    "w/", "w/0", "w/0/x", "w/0/x/q", "w/1", "w/1/y", "w/2", "w/2/z", "w/3", "w/4",
];
/// Where the writes go (every prefix sees some).
const LEAVES: [&str; 7] = [
    "w/0/x/q/", "w/0/x/", "w/1/y/", "w/2/z/", "w/3/", "w/4/", "w/5/",
];
/// Written after the load, in this order: every prefix matches one.
const END_MARKERS: [&str; 6] = [
    "w/0/x/q/end",
    "w/1/y/end",
    "w/2/z/end",
    "w/3/end",
    "w/4/end",
    "w/end",
];

/// The last end marker a watch on `prefix` sees.
fn last_marker(prefix: &str) -> &'static str {
    END_MARKERS
        .iter()
        .rev()
        .find(|m| m.starts_with(prefix))
        .expect("every prefix has a marker")
}

#[tokio::test(flavor = "multi_thread")]
async fn thousand_watchers_on_ten_prefixes_survive_a_member_kill() {
    let mut cluster = Cluster::start(3).await;
    let dir = TestDir::new();
    // Without the cache (whose watch covers every key) so that the
    // prefixes' own upstream watches are what is counted.
    let proxy = start_proxy(dir.path(), "proxy", &cluster.endpoints(), &["--no-cache"]).await;
    let start = {
        let mut c = cluster.client(1).await;
        c.put("w/start", "", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision()
            + 1
    };
    // 100 streams × 10 watches, each stream creating them in its own order.
    let mut readers = Vec::new();
    let (created_tx, mut created_rx) = tokio::sync::mpsc::channel::<()>(1000);
    for s in 0..100usize {
        let client = connect(&proxy.endpoints()).await;
        let created_tx = created_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut c = client;
            let order: Vec<&str> = (0..10).map(|i| PREFIXES[(i * 7 + s) % 10]).collect();
            let mut stream = c
                .watch(order[0], Some(WatchOptions::new().with_prefix()))
                .await
                .unwrap();
            for p in &order[1..] {
                stream
                    .watch(*p, Some(WatchOptions::new().with_prefix()))
                    .await
                    .unwrap();
            }
            // Watch ids are given in create order.
            let mut got: HashMap<i64, Vec<(i64, String)>> = HashMap::new();
            loop {
                let r = match tokio::time::timeout(Duration::from_secs(20), stream.message()).await
                {
                    Ok(Ok(Some(r))) => r,
                    other => panic!("stream {s}: {other:?}"),
                };
                if r.created() {
                    created_tx.send(()).await.unwrap();
                }
                assert!(!r.canceled(), "stream {s}: canceled {}", r.cancel_reason());
                for e in r.events() {
                    let kv = e.kv().unwrap();
                    got.entry(r.watch_id())
                        .or_default()
                        .push((kv.mod_revision(), kv.key_str().unwrap().to_string()));
                }
                // Complete once every watch has its last end marker.
                let done = (0..10).all(|id| {
                    let last = last_marker(order[id]);
                    got.get(&(id as i64))
                        .is_some_and(|v| v.iter().any(|(_, k)| k == last))
                });
                if done {
                    return got
                        .iter()
                        .map(|(id, v)| (order[*id as usize].to_string(), v.clone()))
                        .collect::<BTreeMap<String, Vec<(i64, String)>>>();
                }
            }
        }));
    }
    drop(created_tx);
    for _ in 0..1000 {
        tokio::time::timeout(Duration::from_secs(60), created_rx.recv())
            .await
            .unwrap()
            .unwrap();
    }
    let upstream = proxy.metric("kvd_proxy_upstream_watches").await;
    let locals = proxy.metric("kvd_proxy_local_watchers").await;
    assert_eq!(locals, 1000);
    assert!(
        (1..=10).contains(&upstream),
        "{upstream} upstream watches for 1000 watchers"
    );

    // Writes through members 1 and 2; member 0 (the proxy's first
    // endpoint) dies a third of the way.
    let mut writer = connect(&[cluster.endpoint(1), cluster.endpoint(2)]).await;
    for i in 0..300usize {
        if i == 100 {
            cluster.kill(0);
        }
        let key = format!("{}k{i}", LEAVES[i % LEAVES.len()]);
        wait_for("a put", Duration::from_secs(20), || {
            let mut w = writer.clone();
            let key = key.clone();
            async move {
                w.put(key, "v", None)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .await;
    }
    for marker in END_MARKERS {
        writer.put(marker, "", None).await.unwrap();
    }

    // What really happened, read directly from a live member.
    let mut direct = cluster.client(1).await;
    let mut history = direct
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_start_revision(start)),
        )
        .await
        .unwrap();
    let mut truth: Vec<(i64, String)> = Vec::new();
    while !truth.iter().any(|(_, k)| k == "w/end") {
        let r = history.message().await.unwrap().unwrap();
        for e in r.events() {
            assert_eq!(e.event_type(), EventType::Put);
            let kv = e.kv().unwrap();
            truth.push((kv.mod_revision(), kv.key_str().unwrap().to_string()));
        }
    }
    // The proxy's upstream streams were on the killed member: reopened.
    assert!(
        proxy.server.log().contains("upstream watch stream lost"),
        "{}",
        proxy.server.log_tail(30)
    );
    for (s, reader) in readers.into_iter().enumerate() {
        let by_prefix = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_prefix.len(), 10, "stream {s}: {:?}", by_prefix.keys());
        for (prefix, events) in by_prefix {
            let want: Vec<(i64, String)> = truth
                .iter()
                .filter(|(_, k)| k.starts_with(&prefix))
                .cloned()
                .collect();
            assert_eq!(
                events, want,
                "stream {s}, prefix {prefix}: every event, in order, once"
            );
        }
    }
}

/// Reads through proxy A until `key` has `value`; returns how long it took.
async fn until_seen(c: &mut Client, key: &str, value: &str) -> Duration {
    let t0 = Instant::now();
    loop {
        let r = c
            .get(key, Some(GetOptions::new().with_serializable()))
            .await
            .unwrap();
        if r.kvs().first().map(|kv| kv.value_str().unwrap()) == Some(value) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{key}={value} never seen through the cache"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_reads_see_writes_made_through_another_proxy_or_directly() {
    let cluster = Cluster::start(3).await;
    let dir = TestDir::new();
    let a = start_proxy(
        dir.path(),
        "a",
        &cluster.endpoints(),
        &["--cache-max-age=1m"],
    )
    .await;
    let b = start_proxy(dir.path(), "b", &cluster.endpoints(), &[]).await;
    let mut via_a = connect(&a.endpoints()).await;
    let mut via_b = connect(&b.endpoints()).await;
    let mut direct = connect(&cluster.endpoints()).await;
    via_b.put("cfg", "1", None).await.unwrap();
    until_seen(&mut via_a, "cfg", "1").await;
    // Served from the cache now.
    let hits = a.metric("etcd_grpc_proxy_cache_hits_total").await;
    for _ in 0..5 {
        until_seen(&mut via_a, "cfg", "1").await;
    }
    assert!(a.metric("etcd_grpc_proxy_cache_hits_total").await >= hits + 5);
    let mut worst = Duration::ZERO;
    for round in 0..20 {
        let value = format!("v{round}");
        if round % 2 == 0 {
            via_b.put("cfg", value.as_str(), None).await.unwrap();
        } else {
            direct.put("cfg", value.as_str(), None).await.unwrap();
        }
        worst = worst.max(until_seen(&mut via_a, "cfg", &value).await);
    }
    eprintln!("cache: a write elsewhere was seen through proxy A after at most {worst:?}");
    // Generous for a loaded CI machine; the note reports the measured figure.
    assert!(worst < Duration::from_secs(1), "took {worst:?}");
    // Linearizable reads never come from the cache.
    let misses = a.metric("etcd_grpc_proxy_cache_misses_total").await;
    via_a.get("cfg", None).await.unwrap();
    assert_eq!(a.metric("etcd_grpc_proxy_cache_misses_total").await, misses);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_never_serves_one_users_read_to_another() {
    let cluster = Cluster::start(1).await;
    let dir = TestDir::new();
    let mut root = connect(&cluster.endpoints()).await;
    root.put("secret/k", "s3cr3t", None).await.unwrap();
    root.user_add("root", "rootpw", None).await.unwrap();
    root.user_grant_role("root", "root").await.unwrap();
    root.role_add("reader").await.unwrap();
    root.role_grant_permission("reader", Permission::read("secret/").with_prefix())
        .await
        .unwrap();
    root.user_add("alice", "alicepw", None).await.unwrap();
    root.user_grant_role("alice", "reader").await.unwrap();
    root.user_add("bob", "bobpw", None).await.unwrap();
    root.auth_enable().await.unwrap();
    // The proxy acts as root for token-less callers (and its cache watch).
    let proxy = start_proxy(
        dir.path(),
        "proxy",
        &cluster.endpoints(),
        &["--user=root:rootpw"],
    )
    .await;
    let login = |user: &'static str, pw: &'static str| {
        let endpoints = proxy.endpoints();
        async move {
            Client::connect(endpoints, Some(ConnectOptions::new().with_user(user, pw)))
                .await
                .unwrap()
        }
    };
    let mut alice = login("alice", "alicepw").await;
    let mut bob = login("bob", "bobpw").await;
    let serializable = || Some(GetOptions::new().with_serializable());
    for _ in 0..3 {
        let r = alice.get("secret/k", serializable()).await.unwrap();
        assert_eq!(r.kvs()[0].value_str().unwrap(), "s3cr3t");
    }
    assert!(proxy.metric("etcd_grpc_proxy_cache_hits_total").await >= 1);
    for _ in 0..3 {
        assert_status(
            bob.get("secret/k", serializable()).await,
            tonic::Code::PermissionDenied,
            "etcdserver: permission denied",
        );
    }
    // Nor is a watch: bob's watch is refused although alice's is open.
    let mut aw = alice
        .watch("secret/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(aw.message().await.unwrap().unwrap().created());
    let mut bw = bob
        .watch("secret/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let r = bw.message().await.unwrap().unwrap();
    assert!(r.canceled(), "{r:?}");
    assert_eq!(r.cancel_reason(), "etcdserver: permission denied");
    // A token-less caller is the proxy's own user.
    let mut anon = connect(&proxy.endpoints()).await;
    assert_eq!(anon.get("secret/k", None).await.unwrap().kvs().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_kept_alive_through_the_proxy_expire_one_ttl_after_the_last_keep_alive() {
    let cluster = Cluster::start(1).await;
    let dir = TestDir::new();
    let proxy = start_proxy(dir.path(), "proxy", &cluster.endpoints(), &[]).await;
    let mut c = connect(&proxy.endpoints()).await;
    let mut direct = connect(&cluster.endpoints()).await;
    let lease = c.lease_grant(3, None).await.unwrap().id();
    c.put("leased", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    // Two local streams renew the same lease.
    let (mut k1, mut a1) = c.lease_keep_alive(lease).await.unwrap();
    let (mut k2, mut a2) = c.lease_keep_alive(lease).await.unwrap();
    for _ in 0..4 {
        k1.keep_alive().await.unwrap();
        k2.keep_alive().await.unwrap();
        assert_eq!(a1.message().await.unwrap().unwrap().ttl(), 3);
        assert_eq!(a2.message().await.unwrap().unwrap().ttl(), 3);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let last = Instant::now();
    drop((k1, k2, a1, a2));
    // Alive right after, gone within TTL (+ the member's expiry tick).
    assert_eq!(direct.get("leased", None).await.unwrap().kvs().len(), 1);
    wait_for("the lease to expire", Duration::from_secs(6), || {
        let mut d = direct.clone();
        async move {
            match d.get("leased", None).await.map(|r| r.kvs().len()) {
                Ok(0) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    let lived = last.elapsed();
    assert!(
        lived < Duration::from_millis(4500),
        "lived {lived:?} after the last keep-alive (TTL 3s)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_registration_unix_socket_and_flags() {
    let cluster = Cluster::start(1).await;
    let dir = TestDir::new();
    let port = free_port();
    let advertise = format!("127.0.0.1:{port}");
    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "listen-addr: 127.0.0.1:{port}\nendpoints: {}\nnamespace: app/\nresolver-prefix: proxies\nresolver-ttl: 5\nadvertise-client-url: {advertise}\n",
            cluster.endpoint(0)
        ),
    )
    .unwrap();
    let mut server = Server::start(kvd_spec(
        vec![format!("--config={}", config.display())],
        dir.path(),
        "ns.log",
    ));
    let via = vec![format!("http://127.0.0.1:{port}")];
    let mut c = wait_for("the proxy", Duration::from_secs(20), || {
        let via = via.clone();
        async move {
            let mut c = connect(&via).await;
            c.put("k", "v", None)
                .await
                .map(|_| c)
                .map_err(|e| e.to_string())
        }
    })
    .await;
    assert!(server.is_running());
    let mut direct = connect(&cluster.endpoints()).await;
    assert_eq!(
        direct.get("app/k", None).await.unwrap().kvs()[0]
            .value_str()
            .unwrap(),
        "v"
    );
    let r = c
        .get("", Some(GetOptions::new().with_all_keys()))
        .await
        .unwrap();
    let keys: Vec<&str> = r.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
    assert!(keys.contains(&"k"), "{keys:?}");
    let mut w = c.watch("k", None).await.unwrap();
    assert!(w.message().await.unwrap().unwrap().created());
    direct.put("app/k", "v2", None).await.unwrap();
    let r = w.message().await.unwrap().unwrap();
    assert_eq!(r.events()[0].kv().unwrap().key_str().unwrap(), "k");
    // Registered under the prefix (in the namespace), listed as a member.
    wait_for("the registration", Duration::from_secs(10), || {
        let mut d = direct.clone();
        let key = format!("app/proxies/{advertise}");
        let advertise = advertise.clone();
        async move {
            let r = d.get(key, None).await.map_err(|e| e.to_string())?;
            let kv = r.kvs().first().ok_or("not yet")?;
            let v: serde_json::Value = serde_json::from_slice(kv.value()).unwrap();
            (v["Addr"] == serde_json::json!(advertise) && kv.lease() != 0)
                .then_some(())
                .ok_or(format!("{v}"))
        }
    })
    .await;
    let list = c.member_list().await.unwrap();
    assert_eq!(list.members().len(), 1);
    assert_eq!(
        list.members()[0].client_urls(),
        std::slice::from_ref(&advertise)
    );

    // A Unix socket, with etcdctl.
    let sock = dir.path().join("kvd.sock");
    let mut unix = Server::start(kvd_spec(
        vec![
            format!("--listen-addr=unix://{}", sock.display()),
            format!("--endpoints={}", cluster.endpoint(0)),
        ],
        dir.path(),
        "unix.log",
    ));
    let endpoint = vec![format!("unix://{}", sock.display())];
    let out = wait_for("etcdctl over the socket", Duration::from_secs(20), || {
        let endpoint = endpoint.clone();
        async move {
            let out = etcdctl(&endpoint, &["get", "app/k", "--print-value-only"]).await;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).to_string())
                .ok_or_else(|| String::from_utf8_lossy(&out.stderr).to_string())
        }
    })
    .await;
    assert_eq!(out, "v2\n");
    unix.terminate();
    assert!(unix
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));

    // Flags etcd's grpc-proxy refuses, refused the same way (exit 2).
    for (args, message) in [
        (vec!["--resolver-prefix=p"], "invalid resolver-ttl 0"),
        (vec!["--resolver-ttl=5"], "invalid resolver-prefix \"\""),
        (
            vec!["--listen-addr=nonsense"],
            "--listen-addr \"nonsense\" is not host:port",
        ),
        (vec!["--cert-file=/nonexistent.pem"], "--cert-file"),
    ] {
        let spec = kvd_spec(
            args.iter().map(|s| s.to_string()).collect(),
            dir.path(),
            "bad.log",
        );
        let out = spec.run_to_exit(Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
    server.terminate();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_that_stops_reading_catches_up_with_every_event() {
    let cluster = Cluster::start(1).await;
    let dir = TestDir::new();
    let proxy = start_proxy(dir.path(), "proxy", &cluster.endpoints(), &["--no-cache"]).await;
    let mut c = connect(&proxy.endpoints()).await;
    const WATCHES: usize = 50;
    const PUTS: usize = 300;
    let mut stream = c.watch("slow", None).await.unwrap();
    for _ in 1..WATCHES {
        stream.watch("slow", None).await.unwrap();
    }
    let mut created = 0;
    while created < WATCHES {
        if stream.message().await.unwrap().unwrap().created() {
            created += 1;
        }
    }
    // 50 × 300 responses: far more than the proxy queues for one stream,
    // written while the stream is not read.
    let mut writer = connect(&cluster.endpoints()).await;
    let mut revisions = Vec::new();
    for i in 0..PUTS {
        let r = writer.put("slow", format!("{i}"), None).await.unwrap();
        revisions.push(r.header().unwrap().revision());
    }
    let mut got: HashMap<i64, Vec<i64>> = HashMap::new();
    while got.values().map(Vec::len).sum::<usize>() < WATCHES * PUTS {
        let r = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("events keep coming")
            .unwrap()
            .unwrap();
        assert!(!r.canceled(), "{r:?}");
        for e in r.events() {
            got.entry(r.watch_id())
                .or_default()
                .push(e.kv().unwrap().mod_revision());
        }
    }
    assert_eq!(got.len(), WATCHES);
    for (id, revs) in got {
        assert_eq!(revs, revisions, "watch {id}: every event, in order, once");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_works_in_front_of_etcd() {
    let Some(etcd) = common::etcd_or_skip() else {
        return;
    };
    let dir = TestDir::new();
    let (_etcd, url) =
        common::start_etcd(&etcd, dir.path(), "e1", &dir.path().join("e1"), free_port()).await;
    let proxy = start_proxy(dir.path(), "proxy", &[url], &[]).await;
    let mut c = connect(&proxy.endpoints()).await;
    // A watch and a keep-alive first: etcd sends a stream's headers only
    // with its first answer, which the proxy must not wait for blindly.
    let mut w = c
        .watch("e/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(w.message().await.unwrap().unwrap().created());
    let lease = c.lease_grant(10, None).await.unwrap().id();
    let (mut keeper, mut answers) = c.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    assert_eq!(answers.message().await.unwrap().unwrap().ttl(), 10);
    c.put("e/k", "v1", None).await.unwrap();
    let r = w.message().await.unwrap().unwrap();
    assert_eq!(r.events()[0].kv().unwrap().value_str().unwrap(), "v1");
    let serializable = || Some(GetOptions::new().with_serializable());
    assert_eq!(
        c.get("e/k", serializable()).await.unwrap().kvs()[0]
            .value_str()
            .unwrap(),
        "v1"
    );
    c.put("e/k", "v2", None).await.unwrap();
    // Read-your-writes through the cache.
    assert_eq!(
        c.get("e/k", serializable()).await.unwrap().kvs()[0]
            .value_str()
            .unwrap(),
        "v2"
    );
    let out = etcdctl(&proxy.endpoints(), &["lock", "l", "--", "echo", "held"]).await;
    assert_eq!(stdout_ok(&["lock"], &out).lines().last(), Some("held"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_to_the_cluster_and_for_the_proxys_own_clients() {
    let dir = TestDir::new();
    let ca = Ca::new(dir.path(), "ca");
    let (server_cert, server_key) = ca.issue("server", None, Usage::Server, Validity::Current);
    let (cert, key) = ca.issue("client", Some("root"), Usage::Client, Validity::Current);
    let files = ClientFiles {
        ca: ca.cert.clone(),
        cert: cert.clone(),
        key: key.clone(),
    };
    let flag = |name: &str, path: &Path| format!("--{name}={}", path.display());
    let cluster = Cluster::start_with(
        1,
        ClusterOptions {
            extra_args: vec![
                flag("cert-file", &server_cert),
                flag("key-file", &server_key),
                flag("trusted-ca-file", &ca.cert),
                "--client-cert-auth".to_string(),
            ],
            client_tls: Some(files.clone()),
        },
    )
    .await;
    assert!(cluster.endpoint(0).starts_with("https://"));
    let proxy = start_proxy(
        dir.path(),
        "proxy",
        &cluster.endpoints(),
        &[
            &flag("cacert", &ca.cert),
            &flag("cert", &cert),
            &flag("key", &key),
            &flag("cert-file", &server_cert),
            &flag("key-file", &server_key),
            &flag("trusted-ca-file", &ca.cert),
        ],
    )
    .await;
    let via = vec![format!("https://127.0.0.1:{}", proxy.port)];
    let mut c = common::connect_tls(&via, Some(&files)).await;
    c.put("tls/k", "v", None).await.unwrap();
    let mut direct = common::connect_tls(&cluster.endpoints(), Some(&files)).await;
    assert_eq!(
        direct.get("tls/k", None).await.unwrap().kvs()[0]
            .value_str()
            .unwrap(),
        "v"
    );
    let mut w = c
        .watch("tls/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(w.message().await.unwrap().unwrap().created());
    direct.put("tls/k", "v2", None).await.unwrap();
    assert_eq!(w.message().await.unwrap().unwrap().events().len(), 1);
    // etcdctl with the same files through the proxy.
    let mut args = files.etcdctl_args();
    args.extend([
        "get".to_string(),
        "tls/k".to_string(),
        "--print-value-only".to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(stdout_ok(&args, &etcdctl(&via, &args).await), "v2\n");
    // Without a client certificate the proxy's port refuses the handshake.
    let ca_only = etcd_client::TlsOptions::new().ca_certificate(
        etcd_client::Certificate::from_pem(std::fs::read(&ca.cert).unwrap()),
    );
    let refused = async {
        let mut anon = Client::connect(
            via.clone(),
            Some(
                ConnectOptions::new()
                    .with_tls(ca_only)
                    .with_timeout(Duration::from_secs(3)),
            ),
        )
        .await?;
        anon.get("tls/k", None).await
    };
    assert!(
        refused.await.is_err(),
        "a client without a certificate got through"
    );
}
