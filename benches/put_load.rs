//! Put load against a real member: throughput, latency and fsyncs per put.
//!
//! Starts `kvd serve` (single member, temp data dir, free ports), runs
//! `CLIENTS` concurrent writers over `CONNS` connections for `PUTS` puts in
//! all, and reads `/metrics` before and after to count fsyncs
//! (`etcd_disk_wal_fsync_duration_seconds_count`) and applied entries. With
//! `/usr/bin/etcd` present (Debian `etcd-server`) the same load runs
//! against etcd too, side by side. Run with `make bench`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

mod common;
use common::{connect, metric, start};

const CLIENTS: usize = 100;
const CONNS: usize = 10;
const PUTS: usize = 20_000;
const VALUE_BYTES: usize = 256;

struct Figures {
    puts_per_s: f64,
    p50: Duration,
    p99: Duration,
    fsyncs: f64,
    applied: f64,
}

async fn load(port: u16) -> Figures {
    let mut conns = Vec::new();
    for _ in 0..CONNS {
        conns.push(connect(port).await);
    }
    let fsync0 = metric(port, "etcd_disk_wal_fsync_duration_seconds_count");
    let applied0 = metric(port, "etcd_server_proposals_applied_total");
    let value = vec![b'v'; VALUE_BYTES];
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let mut kv = conns[i % CONNS].kv_client();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(PUTS / CLIENTS);
            for j in 0..PUTS / CLIENTS {
                let t = Instant::now();
                kv.put(format!("bench/{i}/{j}"), value.clone(), None)
                    .await
                    .expect("put");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("writer"));
    }
    let elapsed = start.elapsed();
    lat.sort();
    let fsyncs = metric(port, "etcd_disk_wal_fsync_duration_seconds_count") - fsync0;
    let applied = metric(port, "etcd_server_proposals_applied_total") - applied0;
    Figures {
        puts_per_s: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: lat[lat.len() / 2],
        p99: lat[lat.len() * 99 / 100],
        fsyncs,
        applied,
    }
}

fn report(name: &str, f: &Figures) {
    println!(
        "{name:<5} {:>9.0} puts/s  p50 {:>7.2} ms  p99 {:>7.2} ms  fsyncs {:>6}  applied {:>6}  puts/fsync {:>6.1}",
        f.puts_per_s,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3,
        f.fsyncs,
        f.applied,
        PUTS as f64 / f.fsyncs.max(1.0),
    );
}

#[tokio::main]
async fn main() {
    println!("put load: {PUTS} puts of {VALUE_BYTES} B, {CLIENTS} clients over {CONNS} connections, 1 member");
    let kvd = start(env!("CARGO_BIN_EXE_kvd"), false);
    let f = load(kvd.client_port).await;
    report("kvd", &f);
    drop(kvd);
    if std::path::Path::new("/usr/bin/etcd").exists() {
        let etcd = start("/usr/bin/etcd", true);
        let f = load(etcd.client_port).await;
        report("etcd", &f);
    } else {
        println!("etcd: /usr/bin/etcd not found (apt-get install etcd-server to compare)");
    }
}
