//! One scenario from start to verdict: a fresh cluster, the workload, the
//! fault(s) on a schedule, healing, convergence, the history checks, and a
//! [`ScenarioReport`]; files kept only when something failed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::checks::{self, CheckResult};
use crate::cluster::Cluster;
use crate::history::{History, Outcome, Request, Timeline};
use crate::report::ScenarioReport;
use crate::scenarios::Fault;
use crate::workload::{Clock, Workload, WorkloadConfig};

/// Settings shared by every scenario of a run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The kvd binary (built with `--features failpoints`).
    pub kvd: PathBuf,
    /// Where each scenario's files go (`<out>/<scenario>/`).
    pub out: PathBuf,
    /// Workload before the first fault.
    pub warmup: Duration,
    /// How long a fault is held.
    pub hold: Duration,
    /// Workload after healing.
    pub after: Duration,
    /// Time the linearizability search may take.
    pub check_budget: Duration,
}

/// Faults injected at times in the run (relative to its start).
#[derive(Debug, Clone)]
pub struct Schedule {
    /// (after how long, which fault).
    pub faults: Vec<(Duration, Fault)>,
    /// Total length of the workload.
    pub length: Duration,
}

impl Schedule {
    /// One fault after the warm-up, held, then the after phase.
    pub fn single(cfg: &RunConfig, fault: Fault) -> Schedule {
        Schedule {
            faults: vec![(cfg.warmup, fault)],
            length: cfg.warmup + cfg.hold + cfg.after,
        }
    }

    /// Random faults every 5–15 s for `length`.
    pub fn random(rng: &mut StdRng, faults: &[Fault], length: Duration) -> Schedule {
        let mut at = Duration::from_secs(rng.gen_range(3..6));
        let mut list = Vec::new();
        while at + Duration::from_secs(10) < length && !faults.is_empty() {
            list.push((at, faults[rng.gen_range(0..faults.len())]));
            at += Duration::from_secs(rng.gen_range(5..=15));
        }
        Schedule {
            faults: list,
            length,
        }
    }
}

/// Runs one scenario; never panics, failures are in the report.
pub async fn run(name: &str, schedule: &Schedule, seed: u64, cfg: &RunConfig) -> ScenarioReport {
    let started = Instant::now();
    let dir = cfg.out.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = ScenarioReport::new(name, schedule, seed);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        report.error = Some(format!("create {}: {e}", dir.display()));
        return report;
    }
    match run_in(&dir, schedule, seed, cfg, &mut report).await {
        Ok(()) => {}
        Err(e) => report.error = Some(format!("{e:#}")),
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.passed = report.error.is_none() && report.checks.iter().all(|c| c.passed);
    if report.passed {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        report.kept = Some(dir.display().to_string());
    }
    report
}

async fn run_in(
    dir: &Path,
    schedule: &Schedule,
    seed: u64,
    cfg: &RunConfig,
    report: &mut ScenarioReport,
) -> anyhow::Result<()> {
    let (size, extra) = schedule
        .faults
        .iter()
        .map(|(_, f)| f.cluster())
        .max_by_key(|(n, extra)| (*n, extra.len()))
        .unwrap_or((3, Vec::new()));
    let mut cluster = Cluster::start(&cfg.kvd, dir, size, &extra).await?;
    let clock = Clock::start();
    let workload_cfg = WorkloadConfig {
        seed,
        ..WorkloadConfig::default()
    };
    let mut workload = Workload::start(cluster.endpoints(), workload_cfg, clock);
    let run_start = Instant::now();
    let mut fault_start = None;
    let mut fault_end = 0;
    let mut fault_error = None;
    for (at, fault) in &schedule.faults {
        let wait = at.saturating_sub(run_start.elapsed());
        tokio::time::sleep(wait).await;
        let t = clock.now();
        fault_start.get_or_insert(t);
        let result = tokio::time::timeout(
            Duration::from_secs(90),
            fault.inject(&mut cluster, cfg.hold),
        )
        .await;
        match result {
            Ok(Ok(what)) => report.injected.push(what),
            Ok(Err(e)) => {
                fault_error = Some(format!("{}: {e:#}", fault.describe()));
                break;
            }
            Err(_) => {
                fault_error = Some(format!("{}: not done within 90 s", fault.describe()));
                break;
            }
        }
        fault_end = clock.now();
    }
    let rest = schedule.length.saturating_sub(run_start.elapsed());
    tokio::time::sleep(rest).await;
    let ops = workload.stop_clients().await;
    let end = clock.now();
    let fault_start = fault_start.unwrap_or(end);
    report.count(&ops, fault_start, fault_end.max(fault_start), end);

    // Heal, and every member must be up (a crash nobody asked for is a bug).
    cluster.faults.heal();
    let mut unexpected = Vec::new();
    for i in 0..cluster.members.len() {
        if !cluster.alive(i) {
            unexpected.push(cluster.members[i].name.clone());
            cluster.restart(i)?;
        }
    }
    let started = Instant::now();
    report.checks.push(CheckResult::from_violations(
        "members stay up",
        format!("{} members", cluster.members.len()),
        unexpected
            .iter()
            .map(|n| format!("{n} exited by itself"))
            .collect(),
        started,
    ));
    let (converged, final_revision) = convergence(&mut cluster).await;
    // Once converged, every member refuses a start revision below the last
    // compaction (etcd's "compacted" answer).
    let compacted = ops
        .iter()
        .filter_map(|op| match (&op.request, &op.outcome) {
            (Request::Compact { revision }, Outcome::Ok(_)) => Some(*revision),
            _ => None,
        })
        .max();
    if let Some(c) = compacted {
        let started = Instant::now();
        let mut violations = Vec::new();
        for i in 0..cluster.members.len() {
            match cluster.watch_compacted(i, 1).await {
                Ok(r) if r >= c => {}
                Ok(r) => violations.push(format!(
                    "{} answered a watch from revision 1 with compact revision {r} after a compaction at {c}",
                    cluster.members[i].name
                )),
                Err(e) => violations.push(format!("{e:#}")),
            }
        }
        report.checks.push(CheckResult::from_violations(
            "compacted start revisions refused",
            format!("every member refuses revision 1 after the compaction at {c}"),
            violations,
            started,
        ));
    }
    let history = workload
        .finish(ops, final_revision, Duration::from_secs(30))
        .await;
    let timeline = Timeline::from_observer(&history.watches[0]);
    let started = Instant::now();
    let mut violations = converged.err().into_iter().collect::<Vec<_>>();
    if timeline.last() < final_revision {
        violations.push(format!(
            "the observer watch reached revision {}, the members are at {final_revision}",
            timeline.last()
        ));
    }
    if violations.is_empty() {
        // Every member's data equals the history's state at the end.
        let expected: Vec<_> = timeline.state_at(final_revision).into_values().collect();
        for i in 0..cluster.members.len() {
            match cluster.dump(i).await {
                Ok((_, kvs)) if kvs == expected => {}
                Ok((_, kvs)) => violations.push(format!(
                    "{} holds {} keys, the history {} at revision {final_revision}",
                    cluster.members[i].name,
                    kvs.len(),
                    expected.len()
                )),
                Err(e) => violations.push(format!("{}: {e}", cluster.members[i].name)),
            }
        }
    }
    report.checks.push(CheckResult::from_violations(
        "members converge",
        format!(
            "{} members at revision {final_revision} with the history's data",
            cluster.members.len()
        ),
        violations,
        started,
    ));
    report
        .checks
        .extend(checks::run_all(&history, &timeline, cfg.check_budget));
    if let Some(e) = fault_error {
        report.error = Some(e);
    }
    let failed = report.error.is_some() || report.checks.iter().any(|c| !c.passed);
    if failed {
        save_history(dir, &history);
    }
    drop(cluster);
    Ok(())
}

/// Waits (up to 30 s) until every member is at the same revision with the
/// same data; returns the verdict and that revision.
async fn convergence(cluster: &mut Cluster) -> (Result<(), String>, i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::from("not checked");
    let mut revision = 0;
    while Instant::now() < deadline {
        let mut dumps = Vec::new();
        let mut error = None;
        for i in 0..cluster.members.len() {
            match cluster.dump(i).await {
                Ok(d) => dumps.push(d),
                Err(e) => {
                    error = Some(format!("{}: {e:#}", cluster.members[i].name));
                    break;
                }
            }
        }
        if let Some(e) = error {
            last = e;
        } else {
            revision = dumps.iter().map(|(r, _)| *r).max().unwrap_or(0);
            if dumps.windows(2).all(|w| w[0] == w[1]) {
                return (Ok(()), revision);
            }
            last = format!(
                "revisions {:?}",
                dumps.iter().map(|(r, _)| *r).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (
        Err(format!("members did not converge within 30 s: {last}")),
        revision,
    )
}

fn save_history(dir: &Path, history: &History) {
    if let Ok(json) = serde_json::to_string(history) {
        let _ = std::fs::write(dir.join("history.json"), json);
    }
}

/// Operations by outcome: (ok, failed, unknown).
pub fn outcomes(ops: &[crate::history::Op]) -> (usize, usize, usize) {
    ops.iter()
        .fold((0, 0, 0), |(ok, failed, unknown), op| match op.outcome {
            Outcome::Ok(_) => (ok + 1, failed, unknown),
            Outcome::Failed(_) => (ok, failed + 1, unknown),
            Outcome::Unknown(_) => (ok, failed, unknown + 1),
        })
}

/// A random generator for `seed`.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}
