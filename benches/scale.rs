//! How kvd grows (`make bench-scale`): one member loaded step by step to
//! 10k, 100k and 1M keys (16 B keys, 256 B values, from 100 clients over
//! 10 connections), and at each step: put throughput, linearizable range
//! latency (one key, and a 1,000-key prefix), RSS, data dir size, restart
//! time after `kill -9` (until a linearizable get answers), and how long a
//! new learner takes to catch up. Then, on fresh members, 10k and 100k
//! watchers and 100k leases: memory they add and event (keep-alive)
//! latency.
//!
//! `KVD_SCALE_KEYS` sets the steps (default `10000,100000,1000000`),
//! `KVD_SCALE_WATCHERS` the watcher counts (default `10000,100000`),
//! `KVD_SCALE_LEASES` the lease count (default 100000; 0 skips the row).

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is a failed run

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, MemberAddOptions, WatchOptions};
use rand::Rng;

mod common;
use common::{dir_bytes, free_port, start_cluster};

const VALUE_BYTES: usize = 256;
const CLIENTS: usize = 100;
const CONNS: usize = 10;

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn key(i: usize) -> String {
    format!("key-{i:012}")
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(lat: &mut [Duration], p: f64) -> Duration {
    lat.sort();
    lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

async fn connections(port: u16) -> Vec<Client> {
    let mut out = Vec::new();
    for _ in 0..CONNS {
        out.push(
            Client::connect([format!("127.0.0.1:{port}")], None)
                .await
                .expect("connect"),
        );
    }
    out
}

/// Puts keys `from..to` from 100 clients; puts per second.
async fn load(conns: &[Client], from: usize, to: usize) -> f64 {
    let value: Vec<u8> = {
        let mut rng = rand::thread_rng();
        (0..VALUE_BYTES)
            .map(|_| rng.gen_range(b'a'..=b'z'))
            .collect()
    };
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(from));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut kv = conns[c % conns.len()].kv_client();
        let next = next.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= to {
                    return;
                }
                kv.put(key(i), value.clone(), None).await.expect("put");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    (to - from) as f64 / start.elapsed().as_secs_f64()
}

/// p50 and p99 of `n` linearizable ranges, one at a time: of one random
/// key, or of a random 1,000-key prefix (`key-` and 9 of the 12 digits).
async fn range_latency(c: &Client, keys: usize, n: usize, thousand: bool) -> (Duration, Duration) {
    let mut kv = c.kv_client();
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let i = rand::thread_rng().gen_range(0..keys);
        let t = Instant::now();
        if thousand {
            let prefix = &key(i / 1000 * 1000)[..13];
            let r = kv
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await
                .expect("range");
            assert_eq!(r.kvs().len(), 1000.min(keys), "a 1,000-key prefix");
        } else {
            let r = kv.get(key(i), None).await.expect("get");
            assert_eq!(r.kvs().len(), 1);
        }
        lat.push(t.elapsed());
    }
    (pct(&mut lat, 0.5), pct(&mut lat, 0.99))
}

/// Waits until a linearizable get through `port` answers.
async fn until_serving(port: u16, deadline: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(mut c) = Client::connect([format!("127.0.0.1:{port}")], None).await {
            if c.get(key(0), None).await.is_ok() {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < deadline,
            "member on {port} did not come back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Adds a learner to the one-member cluster on (`client`, `peer`) ports,
/// starts it, and returns how long it took to reach the leader's applied
/// index; the learner is then stopped and removed.
async fn catch_up(client_port: u16, peer_port: u16) -> Duration {
    let mut leader = Client::connect([format!("127.0.0.1:{client_port}")], None)
        .await
        .expect("connect");
    let (bc, bp) = (free_port(), free_port());
    let added = leader
        .member_add(
            [format!("http://127.0.0.1:{bp}")],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .expect("member add");
    let id = added.member().expect("added member").id();
    let target = leader.status().await.expect("status").raft_applied_index();
    let dir = tempfile::tempdir().expect("tempdir");
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvd"))
        .arg("serve")
        .args(["--name", "learner"])
        .args([
            "--data-dir",
            dir.path().join("data").to_str().expect("path"),
        ])
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{bc}")])
        .args(["--advertise-client-urls", &format!("http://127.0.0.1:{bc}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{bp}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{bp}"),
        ])
        .args([
            "--initial-cluster",
            &format!("m0=http://127.0.0.1:{peer_port},learner=http://127.0.0.1:{bp}"),
        ])
        .args(["--initial-cluster-state", "existing"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn learner");
    let took = loop {
        if let Ok(mut c) = Client::connect([format!("127.0.0.1:{bc}")], None).await {
            if let Ok(s) = c.status().await {
                if s.raft_applied_index() >= target {
                    break start.elapsed();
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "learner did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    leader.member_remove(id).await.expect("member remove");
    took
}

async fn keys_table(steps: &[usize]) {
    println!("| keys | puts/s | get p50/p99 ms | 1,000-key range p50/p99 ms | RSS MiB | data dir MiB | Status.dbSize MiB | restart after kill -9 s | learner catch-up s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut cluster = start_cluster(env!("CARGO_BIN_EXE_kvd"), false, 1, &[]).await;
    let port = cluster.members[0].client_port;
    let peer = cluster.members[0].peer_port;
    let mut loaded = 0;
    for &keys in steps {
        let conns = connections(port).await;
        let per_s = load(&conns, loaded, keys).await;
        loaded = keys;
        let (g50, g99) = range_latency(&conns[0], keys, 2000, false).await;
        let (r50, r99) = range_latency(&conns[0], keys, 200, true).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let member = &cluster.members[0];
        let rss = member.rss();
        let dir = dir_bytes(&member.data_dir());
        let db = conns[0].clone().status().await.expect("status").db_size();
        drop(conns);
        cluster.members[0].kill_and_restart();
        let restart = until_serving(port, Duration::from_secs(300)).await;
        let learner = catch_up(port, peer).await;
        println!(
            "| {keys} | {per_s:.0} | {:.2} / {:.2} | {:.2} / {:.2} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
            ms(g50),
            ms(g99),
            ms(r50),
            ms(r99),
            mib(rss),
            mib(dir),
            mib(db as u64),
            restart.as_secs_f64(),
            learner.as_secs_f64()
        );
    }
}

/// `n` watchers on distinct keys over 100 streams: RSS they add, and the
/// latency from a put being sent to its event, over 500 puts at 100/s.
async fn watchers_row(n: usize) {
    let cluster = start_cluster(env!("CARGO_BIN_EXE_kvd"), false, 1, &[]).await;
    let member = &cluster.members[0];
    let conns = connections(member.client_port).await;
    let before = member.rss();
    let streams = 100.min(n);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<u8>, Instant)>();
    let mut tasks = Vec::new();
    for s in 0..streams {
        let mut c = conns[s % conns.len()].clone();
        let mut stream = c
            .watch(format!("w/{s}/0"), Some(WatchOptions::new()))
            .await
            .expect("watch");
        let mut i = streams + s;
        while i < n {
            stream
                .watch(format!("w/{}/{}", i % streams, i / streams), None)
                .await
                .expect("watch");
            i += streams;
        }
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                for ev in resp.events() {
                    if let Some(kv) = ev.kv() {
                        let _ = tx.send((kv.key().to_vec(), Instant::now()));
                    }
                }
            }
        }));
    }
    // Let every watch be created before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let added = member.rss().saturating_sub(before);
    let mut put = conns[0].clone();
    let mut lat = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for _ in 0..500 {
        tick.tick().await;
        let i = rand::thread_rng().gen_range(0..n);
        let k = format!("w/{}/{}", i % streams, i / streams);
        let t = Instant::now();
        put.put(k.clone(), "v", None).await.expect("put");
        loop {
            let (got, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("event in time")
                .expect("watchers open");
            if got == k.as_bytes() {
                lat.push(at.duration_since(t));
                break;
            }
        }
    }
    for t in tasks {
        t.abort();
    }
    println!(
        "| {n} watchers | {:.0} MiB ({:.0} B each) | put → event p50 {:.2} ms, p99 {:.2} ms |",
        mib(added),
        added as f64 / n as f64,
        ms(pct(&mut lat, 0.5)),
        ms(pct(&mut lat, 0.99))
    );
}

/// `n` leases granted from 100 clients: RSS they add, and the latency of
/// 1,000 keep-alives (KeepAliveOnce) of random leases.
async fn leases_row(n: usize) {
    let cluster = start_cluster(env!("CARGO_BIN_EXE_kvd"), false, 1, &[]).await;
    let member = &cluster.members[0];
    let conns = connections(member.client_port).await;
    let before = member.rss();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut lease = conns[c % conns.len()].lease_client();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                ids.push(lease.grant(3600, None).await.expect("grant").id());
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.expect("granter"));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let added = member.rss().saturating_sub(before);
    let mut c = conns[0].clone();
    let mut lat = Vec::new();
    for _ in 0..1000 {
        let id = ids[rand::thread_rng().gen_range(0..ids.len())];
        let t = Instant::now();
        c.lease_keep_alive(id).await.expect("keep-alive");
        lat.push(t.elapsed());
    }
    println!(
        "| {n} leases | {:.0} MiB ({:.0} B each) | keep-alive p50 {:.2} ms, p99 {:.2} ms |",
        mib(added),
        added as f64 / n as f64,
        ms(pct(&mut lat, 0.5)),
        ms(pct(&mut lat, 0.99))
    );
}

#[tokio::main]
async fn main() {
    let steps = env_list("KVD_SCALE_KEYS", &[10_000, 100_000, 1_000_000]);
    let watchers = env_list("KVD_SCALE_WATCHERS", &[10_000, 100_000]);
    let leases = env_list("KVD_SCALE_LEASES", &[100_000]);
    println!("kvd scale: one member, {VALUE_BYTES} B values, 16 B keys");
    keys_table(&steps).await;
    println!();
    println!("| load | memory added | latency |");
    println!("|---|---|---|");
    for n in watchers {
        watchers_row(n).await;
    }
    // 0 (KVD_SCALE_LEASES=0) skips the lease row.
    for n in leases.into_iter().filter(|&n| n > 0) {
        leases_row(n).await;
    }
}
