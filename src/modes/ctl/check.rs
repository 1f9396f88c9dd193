//! `check perf` and `check datascale`: etcdctl 3.4's load checks. `perf`
//! puts at a fixed rate from many clients for 60 seconds and judges
//! throughput, the slowest request and the spread of latencies;
//! `datascale` puts a fixed number of keys and reports how much the first
//! endpoint's resident memory grew (its `/metrics`). Both refuse a prefix
//! that already holds keys and delete their keys afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use etcd_client::{Client, DeleteOptions, GetOptions};

use super::{Ctx, Failure};
use indicatif::ProgressBar;

use crate::modes::common::progress;
use crate::modes::ExitCode;

/// The flags of both checks.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The workload: s(mall), m(edium), l(arge), xl (xLarge)
    #[arg(long, default_value = "s")]
    pub load: String,
    /// The prefix for writing the check's keys
    #[arg(long)]
    pub prefix: Option<String>,
    /// Compact storage with the last revision after the check
    #[arg(long)]
    pub auto_compact: bool,
    /// Defragment storage after the check
    #[arg(long)]
    pub auto_defrag: bool,
}

/// `check` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CheckCommand {
    /// Check the performance of the etcd cluster
    Perf(CheckArgs),
    /// Check the memory usage of holding data for different workloads on a given server endpoint
    Datascale(CheckArgs),
}

/// etcdctl's workloads: (puts per second or puts in all, clients).
fn workload(load: &str, perf: bool) -> Result<(u64, usize), Failure> {
    let (rate, total, clients) = match load {
        "s" | "small" => (150, 10_000, 50),
        "m" | "medium" => (1000, 100_000, 200),
        "l" | "large" => (8000, 1_000_000, 500),
        "xl" | "xLarge" => (15_000, 3_000_000, 1000),
        other => {
            return Err(Failure::new(
                ExitCode::BAD_FEATURE,
                format!("unknown load option {other}"),
            ))
        }
    };
    Ok((if perf { rate } else { total }, clients))
}

/// A key under `prefix`: 8 random bytes after it (etcdctl writes a varint
/// of a random number into a fixed buffer).
fn random_key(prefix: &str) -> Vec<u8> {
    let mut key = prefix.as_bytes().to_vec();
    key.extend(rand::random::<u64>().to_le_bytes());
    key
}

/// Runs one check.
pub async fn run(ctx: &Ctx, command: CheckCommand) -> Result<(), Failure> {
    match command {
        CheckCommand::Perf(a) => perf(ctx, a).await,
        CheckCommand::Datascale(a) => datascale(ctx, a).await,
    }
}

async fn clients(ctx: &Ctx, n: usize) -> Result<Vec<Client>, Failure> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(ctx.connect().await?);
    }
    Ok(out)
}

/// Refuses a prefix that holds keys (etcdctl's `ExitInvalidInput`).
async fn empty_prefix(ctx: &Ctx, c: &mut Client, prefix: &str) -> Result<(), Failure> {
    let got = tokio::time::timeout(
        Duration::from_secs(60),
        c.get(prefix, Some(GetOptions::new().with_prefix().with_limit(1))),
    )
    .await
    .map_err(|_| Failure::new(ExitCode::ERROR, "context deadline exceeded"))?
    .map_err(|e| ctx.failed(e))?;
    if !got.kvs().is_empty() {
        return Err(Failure::new(
            ExitCode::INVALID_INPUT,
            format!("prefix {prefix:?} has keys. Delete with etcdctl del --prefix {prefix} first"),
        ));
    }
    Ok(())
}

/// Deletes the check's keys, then compacts and defragments when asked.
async fn clean_up(ctx: &Ctx, c: &mut Client, prefix: &str, a: &CheckArgs) -> Result<(), Failure> {
    let deleted = c
        .delete(prefix, Some(DeleteOptions::new().with_prefix()))
        .await
        .map_err(|e| ctx.failed(e))?;
    if a.auto_compact {
        let rev = deleted.header().map_or(0, |h| h.revision());
        println!("Compacting with revision {rev}");
        c.compact(
            rev,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .map_err(|e| ctx.failed(e))?;
        println!("Compacted with revision {rev}");
    }
    if a.auto_defrag {
        for endpoint in &ctx.shown {
            println!("Defragmenting {endpoint:?}");
            let mut one = ctx
                .client
                .for_endpoint(endpoint)
                .connect()
                .await
                .map_err(|e| ctx.failed(e))?;
            one.defragment().await.map_err(|e| ctx.failed(e))?;
            println!("Defragmented {endpoint:?}");
        }
    }
    Ok(())
}

/// Puts of `value` under `prefix` from every client: `count` of them, or
/// as many as `rate` a second allows for `duration`. Returns the
/// latencies of the puts that succeeded and the errors of the others.
async fn load(
    clients: Vec<Client>,
    prefix: &str,
    value: Arc<Vec<u8>>,
    plan: Plan,
    bar: &ProgressBar,
) -> (
    Vec<Duration>,
    std::collections::BTreeMap<String, u64>,
    Duration,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<()>(1024);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let mut workers = Vec::new();
    for mut c in clients {
        let (rx, done_tx, value, prefix) = (
            rx.clone(),
            done_tx.clone(),
            value.clone(),
            prefix.to_string(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                if rx.lock().await.recv().await.is_none() {
                    return;
                }
                let t = Instant::now();
                let r = c.put(random_key(&prefix), value.as_slice(), None).await;
                let _ = done_tx.send(r.map(|_| t.elapsed()).map_err(|e| e.to_string()));
            }
        }));
    }
    drop(done_tx);
    let producer = tokio::spawn(async move {
        match plan {
            Plan::Count(n) => {
                for _ in 0..n {
                    if tx.send(()).await.is_err() {
                        return;
                    }
                }
            }
            Plan::Rate {
                per_second,
                duration,
            } => {
                let every = Duration::from_secs(1) / per_second.max(1) as u32;
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    tick.tick().await;
                    if tx.send(()).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut latencies = Vec::new();
    let mut errors = std::collections::BTreeMap::new();
    while let Some(r) = done.recv().await {
        match r {
            Ok(l) => latencies.push(l),
            Err(e) => *errors.entry(e).or_insert(0) += 1,
        }
        if matches!(plan, Plan::Count(_)) {
            bar.inc(1);
        }
    }
    let _ = producer.await;
    for w in workers {
        let _ = w.await;
    }
    (latencies, errors, started.elapsed())
}

#[derive(Debug, Clone, Copy)]
enum Plan {
    Count(u64),
    Rate { per_second: u64, duration: Duration },
}

fn report_errors(errors: &std::collections::BTreeMap<String, u64>) -> bool {
    if errors.is_empty() {
        return false;
    }
    println!("FAIL: too many errors");
    for (e, n) in errors {
        println!("FAIL: ERROR({e}) -> {n}");
    }
    true
}

async fn perf(ctx: &Ctx, a: CheckArgs) -> Result<(), Failure> {
    let (rate, n) = workload(&a.load, true)?;
    let prefix = a
        .prefix
        .clone()
        .unwrap_or_else(|| "/etcdctl-check-perf/".to_string());
    let cs = clients(ctx, n).await?;
    let mut first = cs[0].clone();
    empty_prefix(ctx, &mut first, &prefix).await?;
    const SECONDS: u64 = 60;
    let bar = progress::items(SECONDS, false);
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            for _ in 0..SECONDS {
                tokio::time::sleep(Duration::from_secs(1)).await;
                bar.inc(1);
            }
        })
    };
    let plan = Plan::Rate {
        per_second: rate,
        duration: Duration::from_secs(SECONDS),
    };
    let (latencies, errors, elapsed) = load(cs, &prefix, Arc::new(vec![0; 1024]), plan, &bar).await;
    let _ = ticker.await;
    bar.finish_and_clear();
    clean_up(ctx, &mut first, &prefix, &a).await?;
    let mut ok = !report_errors(&errors);
    let rps = latencies.len() as f64 / elapsed.as_secs_f64();
    if rps / rate as f64 <= 0.9 {
        println!("FAIL: Throughput too low: {} writes/s", rps as u64 + 1);
        ok = false;
    } else {
        println!("PASS: Throughput is {} writes/s", rps as u64 + 1);
    }
    let secs: Vec<f64> = latencies.iter().map(Duration::as_secs_f64).collect();
    let slowest = secs.iter().copied().fold(0.0, f64::max);
    if slowest > 0.5 {
        println!("Slowest request took too long: {slowest:.6}s");
        ok = false;
    } else {
        println!("PASS: Slowest request took {slowest:.6}s");
    }
    let mean = secs.iter().sum::<f64>() / secs.len().max(1) as f64;
    let var = secs.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / secs.len().max(1) as f64;
    let stddev = var.sqrt();
    if stddev > 0.1 {
        println!("Stddev too high: {stddev:.6}s");
        ok = false;
    } else {
        println!("PASS: Stddev is {stddev:.6}s");
    }
    if ok {
        println!("PASS");
        Ok(())
    } else {
        println!("FAIL");
        Err(Failure::new(ExitCode::ERROR, String::new()))
    }
}

/// `process_resident_memory_bytes` of `endpoint`'s `/metrics`; etcdctl's
/// messages on stdout when it cannot be read (then 0).
async fn resident_bytes(endpoint: &str) -> f64 {
    use http_body_util::BodyExt as _;
    let url = if endpoint.contains("://") {
        format!("{endpoint}/metrics")
    } else {
        format!("http://{endpoint}/metrics")
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            println!("fetch error: {e}");
            return 0.0;
        }
    };
    let body = match client.get(uri).await {
        Ok(resp) => match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                println!("fetch error: reading {url}: {e}");
                return 0.0;
            }
        },
        Err(e) => {
            println!("fetch error: Get {url:?}: {e}");
            return 0.0;
        }
    };
    let text = String::from_utf8_lossy(&body);
    let Some(line) = text
        .lines()
        .find(|l| l.starts_with("process_resident_memory_bytes"))
    else {
        println!("could not find: process_resident_memory_bytes");
        return 0.0;
    };
    let number = line
        .trim_start_matches("process_resident_memory_bytes")
        .trim();
    match number.parse::<f64>() {
        Ok(v) => v,
        Err(e) => {
            println!("parse error: {e}");
            0.0
        }
    }
}

async fn datascale(ctx: &Ctx, a: CheckArgs) -> Result<(), Failure> {
    let (total, n) = workload(&a.load, false)?;
    let prefix = a
        .prefix
        .clone()
        .unwrap_or_else(|| "/etcdctl-check-datascale/".to_string());
    let cs = clients(ctx, n).await?;
    let mut first = cs[0].clone();
    empty_prefix(ctx, &mut first, &prefix).await?;
    let endpoint = ctx.client.endpoints.first().cloned().unwrap_or_default();
    let before = resident_bytes(&endpoint).await;
    if before == 0.0 {
        println!("FAIL: Could not read process_resident_memory_bytes before the put operations.");
        return Err(Failure::new(ExitCode::ERROR, String::new()));
    }
    println!(
        "Start data scale check for work load [{total} key-value pairs, 1024 bytes per key-value, {n} concurrent clients]."
    );
    let bar = progress::items(total, false);
    let (_, errors, _) = load(
        cs,
        &prefix,
        Arc::new(vec![0; 512]),
        Plan::Count(total),
        &bar,
    )
    .await;
    bar.finish_and_clear();
    let after = resident_bytes(&endpoint).await;
    if after == 0.0 {
        println!("FAIL: Could not read process_resident_memory_bytes after the put operations.");
        return Err(Failure::new(ExitCode::ERROR, String::new()));
    }
    clean_up(ctx, &mut first, &prefix, &a).await?;
    if report_errors(&errors) {
        return Err(Failure::new(ExitCode::ERROR, String::new()));
    }
    println!(
        "PASS: Approximate system memory used : {:.2} MB.",
        (after - before) / (1024.0 * 1024.0)
    );
    Ok(())
}
