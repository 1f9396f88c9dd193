//! Watch load against a real member: what watchers cost the put path, how
//! many events reach them, and what an idle watcher costs in memory.
//!
//! Starts `kvd serve` (single member, temp data dir, free ports) and
//! measures, in this order:
//!
//! 1. put throughput and latency (p50/p99), closed loop (`WRITERS` writers
//!    over `CONNS` connections, `PUTS` puts) and open loop at a steady
//!    `RATE` puts/s for `STEADY`, without watchers;
//! 2. the same with `STREAMS` streams × `WATCHES_PER_STREAM` watches on the
//!    one key every put writes, each stream on its own connection and read
//!    as fast as this process can: events delivered per second while the
//!    load runs, and how long the watchers take to have every event;
//! 3. on a fresh member, VmRSS of the kvd process (`/proc/<pid>/status`)
//!    before and after creating `IDLE_WATCHERS` idle watchers, divided.
//!
//! Client and server share the machine, so the watchers' readers compete
//! with the server for CPU: phase 2 measures the whole system, not the
//! server alone. With `/usr/bin/etcd` present (Debian `etcd-server`) the
//! same runs against etcd, side by side; with
//! `KVD_BENCH_AGAINST=<path of another kvd binary>` against that build too
//! (A/B of a change). Run with `make bench` or `cargo bench --bench
//! watch_load`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, WatchStream};

mod common;
use common::{connect, cpu_of, metric, start};

const WRITERS: usize = 32;
const CONNS: usize = 8;
const PUTS: usize = 10_000;
const RATE: u64 = 500;
const STEADY: Duration = Duration::from_secs(10);
const VALUE_BYTES: usize = 128;
const STREAMS: usize = 10;
const WATCHES_PER_STREAM: usize = 100;
const IDLE_STREAMS: usize = 10;
const IDLE_WATCHERS: usize = 10_000;
const HOT_KEY: &str = "hot";

/// Latencies of one load run.
struct Load {
    puts_per_s: f64,
    p50: Duration,
    p99: Duration,
    elapsed: Duration,
    puts: usize,
}

fn summarize(mut lat: Vec<Duration>, elapsed: Duration) -> Load {
    lat.sort();
    Load {
        puts_per_s: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: lat[lat.len() / 2],
        p99: lat[lat.len() * 99 / 100],
        elapsed,
        puts: lat.len(),
    }
}

/// `PUTS` puts as fast as `WRITERS` writers go, all on the hot key.
async fn closed_loop(conns: &[Client]) -> Load {
    let value = vec![b'v'; VALUE_BYTES];
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let mut kv = conns[i % conns.len()].kv_client();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(PUTS / WRITERS);
            for _ in 0..PUTS / WRITERS {
                let t = Instant::now();
                kv.put(HOT_KEY, value.clone(), None).await.expect("put");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("writer"));
    }
    summarize(lat, start.elapsed())
}

/// `RATE` puts/s on the hot key for `STEADY`, each writer on its own clock
/// (open loop: a slow put does not delay the schedule of the others).
async fn steady(conns: &[Client]) -> Load {
    let value = vec![b'v'; VALUE_BYTES];
    let period = Duration::from_secs_f64(WRITERS as f64 / RATE as f64);
    let per_writer = (RATE as f64 * STEADY.as_secs_f64() / WRITERS as f64) as usize;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let mut kv = conns[i % conns.len()].kv_client();
        let value = value.clone();
        let offset = period.mul_f64(i as f64 / WRITERS as f64);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut lat = Vec::with_capacity(per_writer);
            for _ in 0..per_writer {
                tick.tick().await;
                let t = Instant::now();
                kv.put(HOT_KEY, value.clone(), None).await.expect("put");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("writer"));
    }
    summarize(lat, start.elapsed())
}

fn report(name: &str, what: &str, f: &Load) {
    println!(
        "{name:<5} {what:<28} {:>7.0} puts/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} puts in {:.1} s)",
        f.puts_per_s,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3,
        f.puts,
        f.elapsed.as_secs_f64(),
    );
}

/// Opens a stream with `n` watches on `key(i)` and waits for every
/// `created`.
async fn open_watches(client: &Client, n: usize, key: impl Fn(usize) -> String) -> WatchStream {
    let mut stream = client
        .watch_client()
        .watch(key(0), None)
        .await
        .expect("watch stream");
    for i in 1..n {
        stream.watch(key(i), None).await.expect("create watch");
    }
    let mut created = 0;
    while created < n {
        let resp = stream
            .message()
            .await
            .expect("watch response")
            .expect("stream open");
        assert!(!resp.canceled(), "watch canceled: {resp:?}");
        if resp.created() {
            created += 1;
        }
    }
    stream
}

async fn run(name: &str, bin: &str, is_etcd: bool) {
    let server = start(bin, is_etcd);
    let port = server.client_port;
    let mut conns = Vec::new();
    for _ in 0..CONNS {
        conns.push(connect(port).await);
    }
    let base_closed = closed_loop(&conns).await;
    report(name, "closed loop, no watchers", &base_closed);
    let base_steady = steady(&conns).await;
    report(name, &format!("{RATE}/s, no watchers"), &base_steady);

    // 10 streams x 100 watches on the hot key, one connection each.
    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..STREAMS {
        let client = connect(port).await;
        let mut stream = open_watches(&client, WATCHES_PER_STREAM, |_| HOT_KEY.to_string()).await;
        let delivered = delivered.clone();
        readers.push(tokio::spawn(async move {
            let _client = client;
            while let Ok(Some(resp)) = stream.message().await {
                delivered.fetch_add(resp.events().len() as u64, Ordering::Relaxed);
            }
        }));
    }
    let watchers = (STREAMS * WATCHES_PER_STREAM) as u64;
    for (what, closed) in [("closed loop", true), ("steady", false)] {
        let before = delivered.load(Ordering::Relaxed);
        let cpu0 = cpu_of(server.child.id()).expect("/proc/<pid>/stat");
        let t0 = Instant::now();
        let load = if closed {
            closed_loop(&conns).await
        } else {
            steady(&conns).await
        };
        let during = delivered.load(Ordering::Relaxed) - before;
        let label = if closed {
            format!("{what}, {watchers} watchers")
        } else {
            format!("{RATE}/s, {watchers} watchers")
        };
        report(name, &label, &load);
        let expected = load.puts as u64 * watchers;
        let deadline = Instant::now() + Duration::from_secs(300);
        while delivered.load(Ordering::Relaxed) - before < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let total = delivered.load(Ordering::Relaxed) - before;
        let all = t0.elapsed();
        let cpu = cpu_of(server.child.id()).expect("/proc/<pid>/stat") - cpu0;
        let base = if closed { &base_closed } else { &base_steady };
        println!(
            "{name:<5}   events delivered while writing {:>9.0}/s; all {} of {} events after {:.1} s ({:.0}/s); put throughput {:+.1}% vs no watchers; server CPU {:.2} µs per event; slow watchers now {}",
            during as f64 / load.elapsed.as_secs_f64(),
            total,
            expected,
            all.as_secs_f64(),
            total as f64 / all.as_secs_f64(),
            (load.puts_per_s / base.puts_per_s - 1.0) * 100.0,
            cpu.as_secs_f64() * 1e6 / total.max(1) as f64,
            metric(port, "etcd_debugging_mvcc_slow_watcher_total"),
        );
    }
    for r in readers {
        r.abort();
    }
    drop(conns);
    drop(server);

    // Memory per idle watcher, on a fresh member.
    let server = start(bin, is_etcd);
    let port = server.client_port;
    let client = connect(port).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = server.rss();
    let mut streams = Vec::new();
    let per_stream = IDLE_WATCHERS / IDLE_STREAMS;
    for s in 0..IDLE_STREAMS {
        streams.push(open_watches(&client, per_stream, |i| format!("idle/{s}/{i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = server.rss();
    println!(
        "{name:<5} memory: VmRSS {:.1} MiB -> {:.1} MiB with {IDLE_WATCHERS} idle watchers on {IDLE_STREAMS} streams: {:.0} bytes per watcher (watcher gauge {})",
        rss0 as f64 / 1048576.0,
        rss1 as f64 / 1048576.0,
        (rss1.saturating_sub(rss0)) as f64 / IDLE_WATCHERS as f64,
        metric(port, "etcd_debugging_mvcc_watcher_total"),
    );
    drop(streams);
}

#[tokio::main]
async fn main() {
    println!(
        "watch load: {STREAMS} streams x {WATCHES_PER_STREAM} watchers on one key; puts of {VALUE_BYTES} B by {WRITERS} writers over {CONNS} connections; 1 member"
    );
    run("kvd", env!("CARGO_BIN_EXE_kvd"), false).await;
    if let Ok(against) = std::env::var("KVD_BENCH_AGAINST") {
        run("kvd (against)", &against, false).await;
    }
    if std::path::Path::new("/usr/bin/etcd").exists() {
        run("etcd", "/usr/bin/etcd", true).await;
    } else {
        println!("etcd: /usr/bin/etcd not found (apt-get install etcd-server to compare)");
    }
}
