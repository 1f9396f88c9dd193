//! Backup and restore of large values, side by side with etcd: a single
//! member loaded with `KVD_BENCH_BACKUP_MIB` (default 256 and 1024) MiB of
//! 64 KiB values, then
//! - kvd: `kvd backup save` and `kvd backup restore`;
//! - etcd (when `/usr/bin/etcd` exists): `etcdctl snapshot save` and
//!   `etcdctl snapshot restore` on the same load;
//!
//! each timed as a whole process with its peak RSS (anonymous and
//! file-backed: etcd's bbolt is memory-mapped), and
//! the server's RSS before and at its peak during the save (sampled every
//! 20 ms). Flat memory means the save's and restore's peaks do not grow
//! with the snapshot. Run with `make bench-backup`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench code: a panic is a failed run

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod common;

const VALUE_BYTES: usize = 64 * 1024;
const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";

fn sizes() -> Vec<usize> {
    std::env::var("KVD_BENCH_BACKUP_MIB")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![256, 1024])
}

async fn load(port: u16, mib: usize) {
    let c = common::connect(port).await;
    let keys = mib * 1024 * 1024 / VALUE_BYTES;
    common::put_values(&c, "big", keys, VALUE_BYTES, 8).await;
}

/// Runs `program args`, sampling its memory every 10 ms: (seconds, peak
/// RSS, peak anonymous RSS, peak file-backed RSS), MiB. The peak RSS is the
/// kernel's high-water mark (`VmHWM`) at the last sample.
fn timed(program: &str, args: &[&str], envs: &[(&str, &str)]) -> (f64, f64, f64, f64) {
    let started = std::time::Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let (mut hwm, mut anon, mut file) = (0u64, 0u64, 0u64);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|kb| kb.parse::<u64>().ok())
                    .map_or(0, |kb| kb * 1024)
            };
            hwm = hwm.max(field("VmHWM:"));
            anon = anon.max(field("RssAnon:"));
            file = file.max(field("RssFile:"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let secs = started.elapsed().as_secs_f64();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(status.success(), "{program} {args:?} failed: {stderr}");
    (secs, mib(hwm), mib(anon), mib(file))
}

/// Samples `pid`'s RSS every 20 ms until dropped; the peak, bytes.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = common::rss_of(pid) {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("sampler");
        }
        self.peak.load(Ordering::Relaxed)
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

struct Row {
    system: &'static str,
    mib: usize,
    save_s: f64,
    save_rss: (f64, f64, f64),
    server_before: f64,
    server_peak: f64,
    file_mib: f64,
    restore_s: f64,
    restore_rss: (f64, f64, f64),
}

async fn run(system: &'static str, mib_loaded: usize, dir: &Path) -> Row {
    let is_etcd = system == "etcd";
    let kvd = env!("CARGO_BIN_EXE_kvd");
    let server = common::start(if is_etcd { ETCD } else { kvd }, is_etcd);
    load(server.client_port, mib_loaded).await;
    let endpoint = format!("127.0.0.1:{}", server.client_port);
    let file = dir.join(format!("{system}-{mib_loaded}.db"));
    let file_s = file.to_str().unwrap();
    let server_before = server.rss();
    let sampler = RssSampler::start(server.child.id());
    let (save_s, save_hwm, save_anon, save_file) = if is_etcd {
        timed(
            ETCDCTL,
            &[
                "--endpoints",
                &endpoint,
                "--command-timeout",
                "600s",
                "snapshot",
                "save",
                file_s,
            ],
            &[("ETCDCTL_API", "3")],
        )
    } else {
        timed(
            kvd,
            &[
                "backup",
                "save",
                file_s,
                "--endpoints",
                &endpoint,
                "--command-timeout",
                "60s",
            ],
            &[],
        )
    };
    let server_peak = sampler.finish();
    drop(server);
    let file_mib = mib(std::fs::metadata(&file).expect("snapshot file").len());
    let target = dir.join(format!("{system}-{mib_loaded}.restored"));
    let target_s = target.to_str().unwrap();
    let (restore_s, restore_hwm, restore_anon, restore_file) = if is_etcd {
        timed(
            ETCDCTL,
            &["snapshot", "restore", file_s, "--data-dir", target_s],
            &[("ETCDCTL_API", "3")],
        )
    } else {
        timed(
            kvd,
            &["backup", "restore", file_s, "--data-dir", target_s],
            &[],
        )
    };
    let _ = std::fs::remove_dir_all(&target);
    // KVD_BENCH_BACKUP_KEEP=<dir> keeps the snapshot files there.
    if let Some(keep) = std::env::var_os("KVD_BENCH_BACKUP_KEEP") {
        let _ = std::fs::copy(&file, Path::new(&keep).join(file.file_name().unwrap()));
    }
    let _ = std::fs::remove_file(&file);
    Row {
        system,
        mib: mib_loaded,
        save_s,
        save_rss: (save_hwm, save_anon, save_file),
        server_before: mib(server_before),
        server_peak: mib(server_peak),
        file_mib,
        restore_s,
        restore_rss: (restore_hwm, restore_anon, restore_file),
    }
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let with_etcd = Path::new(ETCD).exists() && Path::new(ETCDCTL).exists();
    let mut rows = Vec::new();
    for mib_loaded in sizes() {
        rows.push(run("kvd", mib_loaded, dir.path()).await);
        if with_etcd {
            rows.push(run("etcd", mib_loaded, dir.path()).await);
        }
    }
    println!(
        "| system | values | save | save peak RSS (anon/file) | server RSS before → peak during save | file | restore | restore peak RSS (anon/file) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} MiB | {:.1} s | {:.0} MiB ({:.0}/{:.0}) | {:.0} → {:.0} MiB | {:.0} MiB | {:.1} s | {:.0} MiB ({:.0}/{:.0}) |",
            r.system,
            r.mib,
            r.save_s,
            r.save_rss.0,
            r.save_rss.1,
            r.save_rss.2,
            r.server_before,
            r.server_peak,
            r.file_mib,
            r.restore_s,
            r.restore_rss.0,
            r.restore_rss.1,
            r.restore_rss.2
        );
    }
}
