//! kvd and etcd side by side (`make bench-compare`): in each round a fresh
//! 3-member cluster of each, both up, each workload run on one and then
//! on the other (which goes first alternates from workload to workload
//! and from round to round), under the same load generator (the
//! etcd-client crate with etcd's `benchmark` tool's key encoding and
//! client model), then one member of each loaded with many keys for memory
//! and disk.
//!
//! Workloads (etcd `tools/benchmark` 3.4): `put` from 1 client to the
//! leader and from 100 clients over 10 connections (keys: a random number
//! below the key space, zigzag-varint encoded into an 8-byte buffer; one
//! random 256 B value); `range` of one key, linearizable and serializable;
//! `txn-put` (a transaction of one put, sequential keys); `lease-keepalive`
//! (one lease per client, each request a KeepAliveOnce: a new stream, one
//! request, one answer); `watch-latency` (100 watchers on one key, one put
//! every 10 ms, each sample from the put being sent to a watcher's event;
//! then where the delivery spread arises: inside one member, or between
//! members applying the revision at different times; and the latency of
//! the run's puts themselves, since the tail of the watch samples is
//! theirs).
//! Connections are spread round-robin over the members, clients over the
//! connections. Each system's requests/s, CPU per request and watch
//! details are its median round's (by throughput; the lower middle one for
//! an even count), its p50 and p99 each their own median over rounds (the
//! round of median throughput need not have the median tail); each ratio
//! (kvd/etcd) is the median over rounds of that round's pair (the mean of
//! the middle two for an even count), whose two runs are seconds apart,
//! so that the drift of a shared host mostly cancels in it. With an odd
//! number of rounds one system goes first once more often per workload.
//! Only the selected workloads are printed.
//! After each workload the bench waits until the members are quiet (at
//! most 15 s), so that one workload's background work (an LSM's flushes and
//! compactions) does not run in the next; its CPU counts in the members'
//! CPU per request of the workload that caused it. The load generator's
//! own CPU per request is printed too: it runs on the same cores, so the
//! more it spends, the closer a throughput ratio is pulled towards 1.
//!
//! Environment: `KVD_BENCH_ROUNDS` (default 2), `KVD_BENCH_TOTAL`
//! (requests per many-client workload, default 20000), `KVD_BENCH_KEYS`
//! (keys of the memory run, default 300000; 0 skips it), `KVD_BENCH_ONLY`
//! (workload numbers to run, e.g. `2`; default all),
//! `KVD_BENCH_WATCH_PUTS` (puts of the watch run, one every 10 ms, default
//! 1000: the watch p99 is about the tenth-slowest put's; with 200, as
//! until session 19, it was the second-slowest's and swung from 0.7 to 1.7
//! of etcd's between rounds), `KVD_BENCH_ETCD=0`
//! (kvd only), `KVD_BENCH_AGAINST=<path of another kvd binary>` (A/B: that
//! build takes etcd's column, e.g. a copy of `target/release/kvd` made by
//! `cargo bench --no-run` before a change, as the bench builds kvd).
//! Without `/usr/bin/etcd` (Debian `etcd-server`) only kvd
//! runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is a failed run

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, Txn, TxnOp, WatchOptions};
use rand::Rng;

mod common;

/// The load generator allocates as kvd does (mimalloc, `src/main.rs`):
/// it shares the host's cores with the members it measures, so the less
/// CPU it spends per request, the more of the host the members get.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use common::{cpu_of, dir_bytes, start_cluster, Cluster};

const ETCD: &str = "/usr/bin/etcd";
const KEY_SPACE: u64 = 100_000;
const VALUE_BYTES: usize = 256;
const CLIENTS: usize = 100;
const CONNS: usize = 10;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// etcd benchmark's key: `binary.PutVarint(n)` into a zeroed buffer of
/// `size` bytes.
fn bench_key(n: u64, size: usize) -> Vec<u8> {
    let mut key = vec![0u8; size];
    let mut z = (n << 1) ^ ((n as i64 >> 63) as u64); // zigzag
    let mut i = 0;
    while z >= 0x80 && i < size {
        key[i] = (z as u8) | 0x80;
        z >>= 7;
        i += 1;
    }
    if i < size {
        key[i] = z as u8;
    }
    key
}

/// One run of one workload: requests per second and sorted latencies.
#[derive(Default, Clone)]
struct Run {
    per_s: f64,
    lat: Vec<Duration>,
    /// Watch only, sorted: each event's arrival after the first watcher's
    /// event of the same revision (the member-side delivery spread, without
    /// the put's commit latency).
    spread: Vec<Duration>,
    /// Watch only: for each member (ascending), the median time from the
    /// earliest member's first event of a revision to this member's first.
    /// Shows whether a spread comes from members applying at different
    /// times (followers learn the commit after the leader) or from the
    /// fan-out inside one member.
    member_lag: Vec<Duration>,
    /// CPU the members spent per request (user + system, all members,
    /// from `/proc/<pid>/stat`), from the workload's start until they are
    /// quiet again: steadier than throughput on a shared host for an A/B
    /// run.
    cpu_per_req: Duration,
    /// CPU this process (the load generator) spent per request over the
    /// workload itself: it shares the cores with the members, so it
    /// dilutes a throughput ratio on a small host.
    generator_cpu_per_req: Duration,
    /// Watch only, sorted: each event's arrival after the first event of
    /// its revision on the same member (the fan-out inside one member).
    within: Vec<Duration>,
    /// Watch only, sorted: each put's own latency, sent to answered. One
    /// put feeds 100 samples, so the watch p99 is about the tenth-slowest
    /// of its 1,000 puts: this tells a slow commit from a slow delivery.
    puts: Vec<Duration>,
}

impl Run {
    fn pct(&self, p: f64) -> Duration {
        pct(&self.lat, p)
    }
}

/// The `p` quantile of sorted `lat` (zero when empty).
fn pct(lat: &[Duration], p: f64) -> Duration {
    if lat.is_empty() {
        return Duration::ZERO;
    }
    let i = ((lat.len() as f64 * p) as usize).min(lat.len() - 1);
    lat[i]
}

async fn connections(cluster: &Cluster, n: usize) -> Vec<Client> {
    let endpoints = cluster.endpoints();
    let mut out = Vec::new();
    for i in 0..n {
        let ep = endpoints[i % endpoints.len()].clone();
        out.push(Client::connect([ep], None).await.expect("connect"));
    }
    out
}

async fn leader_connection(cluster: &Cluster) -> Client {
    for ep in cluster.endpoints() {
        let mut c = Client::connect([ep], None).await.expect("connect");
        let st = c.status().await.expect("status");
        if st.header().map(|h| h.member_id()) == Some(st.leader()) {
            return c;
        }
    }
    panic!("no leader among the members");
}

/// Runs `total` requests from `clients` clients sharing `conns`
/// round-robin; `op(client, i)` is request number `i`.
async fn drive<F, Fut>(conns: &[Client], clients: usize, total: usize, op: F) -> Run
where
    F: Fn(Client, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = conns[c % conns.len()].clone();
        let op = op.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return lat;
                }
                let t = Instant::now();
                op(client.clone(), i).await;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut lat = Vec::with_capacity(total);
    for t in tasks {
        lat.extend(t.await.expect("client"));
    }
    let elapsed = start.elapsed();
    lat.sort();
    Run {
        per_s: lat.len() as f64 / elapsed.as_secs_f64(),
        lat,
        ..Run::default()
    }
}

fn value() -> Vec<u8> {
    let mut rng = rand::thread_rng();
    (0..VALUE_BYTES)
        .map(|_| rng.gen_range(b'a'..=b'z'))
        .collect()
}

async fn put_workload(conns: &[Client], clients: usize, total: usize) -> Run {
    let v = value();
    drive(conns, clients, total, move |mut c, _| {
        let v = v.clone();
        async move {
            let key = bench_key(rand::thread_rng().gen_range(0..KEY_SPACE), 8);
            c.put(key, v, None).await.expect("put");
        }
    })
    .await
}

async fn range_workload(conns: &[Client], total: usize, serializable: bool) -> Run {
    conns[0]
        .clone()
        .put("foo", value(), None)
        .await
        .expect("put");
    drive(conns, CLIENTS, total, move |mut c, _| async move {
        let options = serializable.then(|| GetOptions::new().with_serializable());
        c.get("foo", options).await.expect("range");
    })
    .await
}

async fn txn_put_workload(conns: &[Client], total: usize) -> Run {
    let v = value();
    drive(conns, CLIENTS, total, move |mut c, i| {
        let v = v.clone();
        async move {
            let key = bench_key(i as u64 % KEY_SPACE, 8);
            c.txn(Txn::new().and_then([TxnOp::put(key, v, None)]))
                .await
                .expect("txn");
        }
    })
    .await
}

async fn keepalive_workload(conns: &[Client], total: usize) -> Run {
    // One lease per client, granted before the clock starts.
    let mut leases = Vec::new();
    for c in 0..CLIENTS {
        let mut client = conns[c % conns.len()].clone();
        leases.push(client.lease_grant(100, None).await.expect("grant").id());
    }
    let leases = Arc::new(leases);
    let per_client = total.div_ceil(CLIENTS);
    drive(conns, CLIENTS, total, move |mut c, i| {
        let leases = leases.clone();
        async move {
            // Request i belongs to client i / per_client's lease.
            let id = leases[(i / per_client).min(leases.len() - 1)];
            // The crate sends the first request and waits for its answer:
            // etcd's KeepAliveOnce.
            c.lease_keep_alive(id).await.expect("keep-alive");
        }
    })
    .await
}

/// 100 watchers on one key (over `conns`), one put every 10 ms from a
/// separate connection, `puts` puts: each sample is the time from sending
/// a put to one watcher receiving its event.
async fn watch_latency(conns: &[Client], members: usize, put_conn: Client, puts: usize) -> Run {
    let key = bench_key(rand::thread_rng().gen_range(0..KEY_SPACE), 32);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i64, Instant, usize)>();
    let mut watchers = Vec::new();
    for w in 0..CLIENTS {
        let mut c = conns[w % conns.len()].clone();
        let mut stream = c
            .watch(key.clone(), Some(WatchOptions::new()))
            .await
            .expect("watch");
        let tx = tx.clone();
        // `connections` hands out the endpoints round-robin.
        let member = (w % conns.len()) % members;
        watchers.push(tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                for ev in resp.events() {
                    if let Some(kv) = ev.kv() {
                        let _ = tx.send((kv.mod_revision(), Instant::now(), member));
                    }
                }
            }
        }));
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = vec![b'v'; 32];
    let mut sent: BTreeMap<i64, Instant> = BTreeMap::new();
    let mut put_conn = put_conn;
    let mut puts_lat = Vec::with_capacity(puts);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for _ in 0..puts {
        tick.tick().await;
        let t = Instant::now();
        let rev = put_conn
            .put(key.clone(), v.clone(), None)
            .await
            .expect("put")
            .header()
            .map(|h| h.revision())
            .expect("header");
        puts_lat.push(t.elapsed());
        sent.insert(rev, t);
    }
    puts_lat.sort();
    let expected = puts * CLIENTS;
    let mut lat = Vec::with_capacity(expected);
    let mut arrivals: Vec<(i64, Instant, usize)> = Vec::with_capacity(expected);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while lat.len() < expected {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((rev, at, member))) => {
                if let Some(t) = sent.get(&rev) {
                    lat.push(at.duration_since(*t));
                    arrivals.push((rev, at, member));
                }
            }
            _ => break,
        }
    }
    // The first arrival of each revision, overall and on each member.
    let mut first: BTreeMap<i64, Instant> = BTreeMap::new();
    let mut member_first: BTreeMap<(usize, i64), Instant> = BTreeMap::new();
    for (rev, at, member) in &arrivals {
        let f = first.entry(*rev).or_insert(*at);
        *f = (*f).min(*at);
        let m = member_first.entry((*member, *rev)).or_insert(*at);
        *m = (*m).min(*at);
    }
    let mut spread: Vec<Duration> = arrivals
        .iter()
        .map(|(rev, at, _)| at.duration_since(first[rev]))
        .collect();
    spread.sort();
    let mut within: Vec<Duration> = arrivals
        .iter()
        .map(|(rev, at, member)| at.duration_since(member_first[&(*member, *rev)]))
        .collect();
    within.sort();
    let mut member_lag: Vec<Duration> = (0..members)
        .map(|m| {
            let mut lags: Vec<Duration> = member_first
                .range((m, i64::MIN)..=(m, i64::MAX))
                .map(|((_, rev), at)| at.duration_since(first[rev]))
                .collect();
            lags.sort();
            pct(&lags, 0.5)
        })
        .collect();
    member_lag.sort();
    let elapsed = start.elapsed();
    for w in watchers {
        w.abort();
    }
    assert_eq!(lat.len(), expected, "every watcher saw every put");
    lat.sort();
    Run {
        per_s: puts as f64 / elapsed.as_secs_f64(),
        lat,
        spread,
        member_lag,
        within,
        puts: puts_lat,
        ..Run::default()
    }
}

const WORKLOADS: [&str; 7] = [
    "put, 1 client, leader",
    "put, 100 clients / 10 conns",
    "range linearizable, 100/10",
    "range serializable, 100/10",
    "txn-put, 100/10",
    "lease keep-alive, 100/10",
    "watch latency, 100 watchers",
];

/// The workloads to run: `KVD_BENCH_ONLY` is a comma-separated list of
/// 1-based positions in [`WORKLOADS`] (e.g. `2` for the 100-client put,
/// to profile it alone); unset, all of them. Skipped ones report nothing.
fn selected() -> Vec<bool> {
    match std::env::var("KVD_BENCH_ONLY") {
        Ok(list) => {
            let picked: Vec<usize> = list
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect();
            (1..=WORKLOADS.len()).map(|w| picked.contains(&w)).collect()
        }
        Err(_) => vec![true; WORKLOADS.len()],
    }
}

/// A fresh 3-member cluster of one system, connected as the workloads
/// need it.
struct Subject {
    cluster: Cluster,
    conns: Vec<Client>,
    leader: Client,
}

impl Subject {
    async fn start(bin: &str, is_etcd: bool) -> Self {
        let cluster = start_cluster(bin, is_etcd, 3, &[]).await;
        let conns = connections(&cluster, CONNS).await;
        let leader = leader_connection(&cluster).await;
        Self {
            cluster,
            conns,
            leader,
        }
    }

    /// Workload `w` (an index into [`WORKLOADS`]), then waits for quiet
    /// members.
    async fn run(&self, w: usize, total: usize) -> Run {
        let (cluster, conns) = (&self.cluster, &self.conns);
        let cpu0 = cluster.cpu();
        let own0 = cpu_of(std::process::id());
        let mut run = match w {
            0 => put_workload(std::slice::from_ref(&self.leader), 1, total / 10).await,
            1 => put_workload(conns, CLIENTS, total).await,
            2 => range_workload(conns, total, false).await,
            3 => range_workload(conns, total, true).await,
            4 => txn_put_workload(conns, total).await,
            5 => keepalive_workload(conns, total).await,
            _ => {
                let put_conn = Client::connect([cluster.endpoints()[0].clone()], None)
                    .await
                    .expect("connect");
                let members = cluster.endpoints().len();
                let puts = env_usize("KVD_BENCH_WATCH_PUTS", 1_000);
                watch_latency(conns, members, put_conn, puts).await
            }
        };
        let own = cpu_of(std::process::id());
        // The members' background work after a workload (an LSM's flushes
        // and compactions) is that workload's: it counts in its CPU per
        // request, and the next workload starts on quiet members.
        settle(cluster).await;
        let requests = run.lat.len().max(1) as u32;
        run.cpu_per_req = cluster.cpu().saturating_sub(cpu0) / requests;
        if let (Some(own0), Some(own)) = (own0, own) {
            run.generator_cpu_per_req = own.saturating_sub(own0) / requests;
        }
        run
    }
}

/// One round: a fresh cluster of each system, both up for the whole
/// round, and each selected workload run on one and immediately after on
/// the other, so that the two figures of a pair are seconds apart rather
/// than a round apart (drift on a shared host moves them together). Which
/// system goes first alternates from one selected workload to the next,
/// and `other_first` flips that by round. Returns (kvd's runs, the other
/// system's runs); the second is empty without `other`.
async fn round(
    kvd: &str,
    other: Option<(&str, bool)>,
    other_first: bool,
    total: usize,
) -> (Vec<Run>, Vec<Run>) {
    let k = Subject::start(kvd, false).await;
    let o = match other {
        Some((bin, is_etcd)) => Some(Subject::start(bin, is_etcd).await),
        None => None,
    };
    // Neither system's start-up work runs in the other's first workload.
    settle(&k.cluster).await;
    if let Some(o) = &o {
        settle(&o.cluster).await;
    }
    let on = selected();
    let mut runs = (vec![Run::default(); WORKLOADS.len()], Vec::new());
    if o.is_some() {
        runs.1 = vec![Run::default(); WORKLOADS.len()];
    }
    let picked = (0..WORKLOADS.len()).filter(|w| on[*w]);
    for (i, w) in picked.enumerate() {
        let Some(o) = &o else {
            runs.0[w] = k.run(w, total).await;
            continue;
        };
        // Both clusters are quiet here: each run ends by waiting for its
        // own (`Subject::run`), and both were settled after start-up.
        if other_first ^ (i % 2 == 1) {
            runs.1[w] = o.run(w, total).await;
            runs.0[w] = k.run(w, total).await;
        } else {
            runs.0[w] = k.run(w, total).await;
            runs.1[w] = o.run(w, total).await;
        }
    }
    runs
}

/// Workload `w`'s ratio in each round, in round order: `figure` of kvd's
/// run over the other's run of the same round.
fn pair_ratios(
    k: &[Vec<Run>],
    e: &[Vec<Run>],
    w: usize,
    figure: &impl Fn(&Run) -> f64,
) -> Vec<f64> {
    k.iter()
        .zip(e)
        .map(|(kr, er)| figure(&kr[w]) / figure(&er[w]).max(1e-9))
        .collect()
}

/// The median over rounds of each workload's [`pair_ratios`].
fn paired_ratios(k: &[Vec<Run>], e: &[Vec<Run>], figure: impl Fn(&Run) -> f64) -> Vec<f64> {
    (0..WORKLOADS.len())
        .map(|w| median(pair_ratios(k, e, w, &figure)))
        .collect()
}

/// The median of `v` (not empty). An even count averages the middle two:
/// the lower one alone would lean every ratio below 1.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (v[(n - 1) / 2] + v[n / 2]) / 2.0
}

/// A run's throughput, requests/s.
fn per_s(r: &Run) -> f64 {
    r.per_s
}

/// A run's p99 latency, ms.
fn p99_ms(r: &Run) -> f64 {
    ms(r.pct(0.99))
}

/// Waits until the members are quiet: under 20 ms of CPU between them in
/// 250 ms, or 15 s at most (then says so).
async fn settle(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = cluster.cpu();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = cluster.cpu();
        if now.saturating_sub(last) < Duration::from_millis(20) {
            return;
        }
        last = now;
    }
    eprintln!("members still busy after 15 s; going on");
}

/// `workload µs` (or `workload kvd µs / other µs`) for every workload that
/// ran, joined by `; `: the CPU time `of` gives for each run.
fn per_request_line(k: &[Run], e: Option<&[Run]>, of: impl Fn(&Run) -> Duration) -> String {
    let us = |r: &Run| of(r).as_secs_f64() * 1e6;
    WORKLOADS
        .iter()
        .enumerate()
        .filter(|(w, _)| k[*w].per_s > 0.0)
        .map(|(w, name)| match e {
            Some(e) => format!("{name} {:.0} / {:.0}", us(&k[w]), us(&e[w])),
            None => format!("{name} {:.0}", us(&k[w])),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The median (by throughput) of each workload's runs over rounds.
fn medians(rounds: &[Vec<Run>]) -> Vec<Run> {
    (0..WORKLOADS.len())
        .map(|w| {
            let mut runs: Vec<Run> = rounds.iter().map(|r| r[w].clone()).collect();
            runs.sort_by(|a, b| a.per_s.total_cmp(&b.per_s));
            runs[(runs.len() - 1) / 2].clone()
        })
        .collect()
}

/// The medians over `rounds` of workload `w`'s p50 and of its p99, in ms.
fn latency_medians(rounds: &[Vec<Run>], w: usize) -> (f64, f64) {
    let at = |p: f64| median(rounds.iter().map(|r| ms(r[w].pct(p))).collect());
    (at(0.5), at(0.99))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One member loaded with `keys` keys of 16 B and 256 B values from 100
/// clients: (RSS bytes, data dir bytes, Status.dbSize, puts/s).
async fn memory_run(bin: &str, is_etcd: bool, keys: usize) -> (u64, u64, i64, f64) {
    let cluster = start_cluster(bin, is_etcd, 1, &[]).await;
    let conns = connections(&cluster, CONNS).await;
    let v = value();
    let run = drive(&conns, CLIENTS, keys, move |mut c, i| {
        let v = v.clone();
        async move {
            c.put(format!("key-{i:012}"), v, None).await.expect("put");
        }
    })
    .await;
    // Let background flushes and compactions settle, as a steady member would.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let db_size = conns[0].clone().status().await.expect("status").db_size();
    let member = &cluster.members[0];
    (
        member.rss(),
        dir_bytes(&member.data_dir()),
        db_size,
        run.per_s,
    )
}

#[tokio::main]
async fn main() {
    let rounds = env_usize("KVD_BENCH_ROUNDS", 2).max(1);
    let total = env_usize("KVD_BENCH_TOTAL", 20_000);
    let keys = env_usize("KVD_BENCH_KEYS", 300_000);
    let kvd = env!("CARGO_BIN_EXE_kvd");
    let etcd_installed = std::path::Path::new(ETCD).exists();
    let with_etcd = etcd_installed && std::env::var("KVD_BENCH_ETCD").as_deref() != Ok("0");
    // The second column: etcd, or another kvd build (A/B).
    let against = std::env::var("KVD_BENCH_AGAINST").ok();
    let (other, other_is_etcd) = match &against {
        Some(path) => (path.as_str(), false),
        None => (ETCD, true),
    };
    let with_etcd = with_etcd || against.is_some();
    let pairing = match (&against, with_etcd) {
        (Some(path), _) => format!(", each workload on kvd and {path} back to back"),
        (None, true) => ", each workload on kvd and etcd back to back".to_string(),
        (None, false) if etcd_installed => " (kvd only: KVD_BENCH_ETCD=0)".to_string(),
        (None, false) => format!(" (kvd only: no {ETCD})"),
    };
    println!(
        "bench-compare: 3 members on 127.0.0.1, {rounds} round(s), {total} requests per workload{pairing}"
    );
    let (mut k_rounds, mut e_rounds) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let other_first = r % 2 == 1;
        eprintln!(
            "round {}: {}",
            r + 1,
            match (with_etcd, other_first) {
                (false, _) => "kvd".to_string(),
                (true, false) => format!("kvd and {other}, kvd first in the first pair"),
                (true, true) => format!("kvd and {other}, {other} first in the first pair"),
            }
        );
        let (k, e) = round(
            kvd,
            with_etcd.then_some((other, other_is_etcd)),
            other_first,
            total,
        )
        .await;
        k_rounds.push(k);
        e_rounds.push(e);
    }
    let k = medians(&k_rounds);
    let e = with_etcd.then(|| medians(&e_rounds));
    let (ratio_per_s, ratio_p99) = if with_etcd {
        (
            paired_ratios(&k_rounds, &e_rounds, per_s),
            paired_ratios(&k_rounds, &e_rounds, p99_ms),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    println!(
        "| workload | kvd req/s | kvd p50/p99 ms | etcd req/s | etcd p50/p99 ms | kvd/etcd req/s | kvd/etcd p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    let on = selected();
    for (w, name) in WORKLOADS.iter().enumerate().filter(|(w, _)| on[*w]) {
        let kr = &k[w];
        match &e {
            Some(e) => {
                let er = &e[w];
                // Each column is its own median over the rounds: the round
                // of median throughput need not have the median tail.
                let (kl, el) = (latency_medians(&k_rounds, w), latency_medians(&e_rounds, w));
                println!(
                    "| {name} | {:.0} | {:.2} / {:.2} | {:.0} | {:.2} / {:.2} | {:.2} | {:.2} |",
                    kr.per_s, kl.0, kl.1, er.per_s, el.0, el.1, ratio_per_s[w], ratio_p99[w],
                );
            }
            None => {
                let kl = latency_medians(&k_rounds, w);
                println!(
                    "| {name} | {:.0} | {:.2} / {:.2} | - | - | - | - |",
                    kr.per_s, kl.0, kl.1
                );
            }
        }
    }
    println!();
    println!(
        "members' CPU per request, µs (kvd / etcd; a watch run's per event): {}",
        per_request_line(&k, e.as_deref(), |r| r.cpu_per_req)
    );
    println!(
        "the load generator's own CPU per request, µs (same cores; kvd / etcd; a watch run's per event): {}",
        per_request_line(&k, e.as_deref(), |r| r.generator_cpu_per_req)
    );
    if with_etcd && rounds > 1 {
        // The spread of the pairs behind each median ratio.
        let by_round: Vec<String> = WORKLOADS
            .iter()
            .enumerate()
            .filter(|(w, _)| k[*w].per_s > 0.0)
            .map(|(w, name)| {
                // The watch run's rate is fixed; its figure is the tail.
                let (what, pairs) = if w == WORKLOADS.len() - 1 {
                    ("p99", pair_ratios(&k_rounds, &e_rounds, w, &p99_ms))
                } else {
                    ("req/s", pair_ratios(&k_rounds, &e_rounds, w, &per_s))
                };
                let pairs: Vec<String> = pairs.iter().map(|ratio| format!("{ratio:.2}")).collect();
                format!("{name} ({what}) {}", pairs.join(" "))
            })
            .collect();
        if !by_round.is_empty() {
            println!("kvd/etcd of each round's pair: {}", by_round.join("; "));
        }
    }
    let watch = WORKLOADS.len() - 1;
    if !k[watch].spread.is_empty() {
        // One line per figure: kvd's, then the other column's ("-" alone).
        let line = |label: &str, figure: &dyn Fn(&Run) -> String| {
            let other = e.as_ref().map_or("-".to_string(), |e| figure(&e[watch]));
            println!("{label}: kvd {}, etcd {other}", figure(&k[watch]));
        };
        let p50_p99 =
            |lat: &[Duration]| format!("{:.2} / {:.2}", ms(pct(lat, 0.5)), ms(pct(lat, 0.99)));
        println!();
        line(
            "watch delivery spread (an event after the first of its revision), p50 / p99 ms",
            &|r| p50_p99(&r.spread),
        );
        line("  of which inside one member, p50 / p99 ms", &|r| {
            p50_p99(&r.within)
        });
        line(
            "  each member's first event after the earliest member's, p50 ms",
            &|r| {
                r.member_lag
                    .iter()
                    .map(|d| format!("{:.2}", ms(*d)))
                    .collect::<Vec<_>>()
                    .join(" / ")
            },
        );
        line("watch run's puts (sent to answered), p50 / p99 ms", &|r| {
            p50_p99(&r.puts)
        });
    }
    if keys == 0 {
        return;
    }
    println!();
    println!("one member, {keys} keys of 16 B with {VALUE_BYTES} B values:");
    println!("| server | puts/s | RSS MiB | data dir MiB | Status.dbSize MiB |");
    println!("|---|---|---|---|---|");
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let mut systems = vec![("kvd", kvd, false)];
    if with_etcd {
        systems.push(("etcd", other, other_is_etcd));
    }
    for (name, bin, is_etcd) in systems {
        let (rss, dir, db, per_s) = memory_run(bin, is_etcd, keys).await;
        println!(
            "| {name} | {per_s:.0} | {:.0} | {:.0} | {:.0} |",
            mib(rss as f64),
            mib(dir as f64),
            mib(db as f64)
        );
    }
}
