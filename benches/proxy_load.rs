//! What `kvd proxy` costs and saves, side by side with a direct connection
//! (and with etcd's `grpc-proxy` in front of etcd when `/usr/bin/etcd` is
//! there, Debian `etcd-server`):
//!
//! 1. idle RSS of the proxy process;
//! 2. read latency p50/p99, one client, `READS` sequential reads of one
//!    key: serializable (the proxy's cache answers) and linearizable
//!    (always the cluster), direct and through the proxy;
//! 3. watch delivery: `STREAMS` streams × `WATCHES_PER_STREAM` watches on
//!    one key, `PUTS` puts by `WRITERS` writers; events delivered per
//!    second until every watcher has every event, direct and through the
//!    proxy, and the upstream watches the proxy opened for them.
//!
//! One single-member server per row, client and proxy on the same
//! machine. Run with `make bench` or `cargo bench --bench proxy_load`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};

mod common;
use common::{connect, free_port, metric, rss_of, start};

const READS: usize = 5_000;
const STREAMS: usize = 10;
const WATCHES_PER_STREAM: usize = 100;
const PUTS: usize = 2_000;
const WRITERS: usize = 16;
const HOT_KEY: &str = "hot";

/// A proxy process, killed on drop.
struct Proxy {
    child: Child,
    port: u16,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_proxy(bin: &str, is_etcd: bool, upstream_port: u16) -> Proxy {
    let port = free_port();
    let mut cmd = Command::new(bin);
    if is_etcd {
        cmd.args(["grpc-proxy", "start"]);
    } else {
        cmd.arg("proxy");
    }
    cmd.arg(format!("--listen-addr=127.0.0.1:{port}"))
        .arg(format!("--endpoints=127.0.0.1:{upstream_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().expect("spawn proxy");
    Proxy { child, port }
}

fn percentiles(mut lat: Vec<Duration>) -> (Duration, Duration) {
    lat.sort();
    (lat[lat.len() / 2], lat[lat.len() * 99 / 100])
}

async fn read_latency(port: u16, serializable: bool) -> (Duration, Duration) {
    let mut c = connect(port).await;
    c.put(HOT_KEY, "v", None).await.unwrap();
    let options = || serializable.then(|| GetOptions::new().with_serializable());
    for _ in 0..200 {
        c.get(HOT_KEY, options()).await.unwrap();
    }
    let mut lat = Vec::with_capacity(READS);
    for _ in 0..READS {
        let t = Instant::now();
        c.get(HOT_KEY, options()).await.unwrap();
        lat.push(t.elapsed());
    }
    percentiles(lat)
}

/// Events per second delivered to all watchers, and the time until the
/// last one had every event.
/// With `count_upstream`, also the proxy's upstream watches once every
/// watcher is created.
async fn watch_delivery(
    watch_port: u16,
    write_port: u16,
    count_upstream: bool,
) -> (f64, Duration, f64) {
    let delivered = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..STREAMS {
        let mut c = Client::connect([format!("127.0.0.1:{watch_port}")], None)
            .await
            .unwrap();
        let mut stream = c.watch(HOT_KEY, None).await.unwrap();
        for _ in 1..WATCHES_PER_STREAM {
            stream.watch(HOT_KEY, None).await.unwrap();
        }
        let mut created = 0;
        while created < WATCHES_PER_STREAM {
            if stream.message().await.unwrap().unwrap().created() {
                created += 1;
            }
        }
        let delivered = delivered.clone();
        readers.push(tokio::spawn(async move {
            let want = (PUTS * WATCHES_PER_STREAM) as u64;
            let mut got = 0u64;
            while got < want {
                let r = stream.message().await.unwrap().unwrap();
                got += r.events().len() as u64;
                delivered.fetch_add(r.events().len() as u64, Ordering::Relaxed);
            }
            Instant::now()
        }));
    }
    let upstream = if count_upstream {
        metric(watch_port, "kvd_proxy_upstream_watches")
    } else {
        0.0
    };
    let writer = connect(write_port).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut kv = writer.kv_client();
        tasks.push(tokio::spawn(async move {
            for i in (w..PUTS).step_by(WRITERS) {
                kv.put(HOT_KEY, format!("{i}"), None).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut last = start;
    for r in readers {
        last = last.max(r.await.unwrap());
    }
    let elapsed = last - start;
    (
        delivered.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        elapsed,
        upstream,
    )
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

async fn run(bin: &str, is_etcd: bool, name: &str) {
    let server = start(bin, is_etcd);
    let port = server.client_port;
    connect(port).await;
    let proxy = start_proxy(bin, is_etcd, port);
    connect(proxy.port).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_of(proxy.child.id()).unwrap_or(0);
    println!("{name}: proxy idle RSS {:.1} MiB", idle as f64 / 1048576.0);
    for (label, serializable) in [("serializable", true), ("linearizable", false)] {
        let (d50, d99) = read_latency(port, serializable).await;
        let (p50, p99) = read_latency(proxy.port, serializable).await;
        println!(
            "{name}: {label:<12} read  direct p50 {} p99 {} | via proxy p50 {} p99 {} | added p50 {:+.3} ms",
            ms(d50),
            ms(d99),
            ms(p50),
            ms(p99),
            (p50.as_secs_f64() - d50.as_secs_f64()) * 1000.0
        );
    }
    let (direct_rate, direct_t, _) = watch_delivery(port, port, false).await;
    let (proxy_rate, proxy_t, upstream) = watch_delivery(proxy.port, port, !is_etcd).await;
    let upstream = if is_etcd {
        String::from("-")
    } else {
        format!("{upstream}")
    };
    println!(
        "{name}: watch {}×{} watchers, {PUTS} puts: direct {:.0} events/s ({:.2} s) | via proxy {:.0} events/s ({:.2} s), upstream watches {upstream}",
        STREAMS,
        WATCHES_PER_STREAM,
        direct_rate,
        direct_t.as_secs_f64(),
        proxy_rate,
        proxy_t.as_secs_f64()
    );
    println!(
        "{name}: proxy RSS after the watch run {:.1} MiB",
        rss_of(proxy.child.id()).unwrap_or(0) as f64 / 1048576.0
    );
}

#[tokio::main]
async fn main() {
    let kvd = env!("CARGO_BIN_EXE_kvd");
    run(kvd, false, "kvd ").await;
    if std::path::Path::new("/usr/bin/etcd").exists() {
        run("/usr/bin/etcd", true, "etcd").await;
    } else {
        println!("etcd: /usr/bin/etcd not found (apt install etcd-server); skipped");
    }
}
