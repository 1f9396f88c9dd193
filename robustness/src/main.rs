//! `kvd-robustness`: runs the CI profile (every fault once, fixed seeds)
//! or the soak profile (random faults every 5–15 s for N minutes, stopping
//! at the first violation), prints the table and `robustness: N passed, M
//! failed`, writes `summary.json`, and exits 1 if anything failed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rand::Rng;

use kvd_robustness::report::{self, ScenarioReport};
use kvd_robustness::runner::{self, RunConfig, Schedule};
use kvd_robustness::scenarios;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Profile {
    /// Every fault once, fixed seeds (make robustness).
    Ci,
    /// Random faults every 5–15 s until the time is up (make soak).
    Soak,
}

/// Fault injection against real kvd clusters, histories checked.
#[derive(Debug, Parser)]
struct Args {
    /// Which profile to run.
    #[arg(long, value_enum, default_value_t = Profile::Ci)]
    profile: Profile,
    /// The kvd binary, built with --features failpoints.
    #[arg(long, env = "KVD_BIN", default_value = "target/kvd-failpoints")]
    kvd: PathBuf,
    /// Where scenario files and summary.json go.
    #[arg(long, default_value = "target/robustness")]
    out: PathBuf,
    /// Soak length, minutes.
    #[arg(long, default_value_t = 60)]
    minutes: u64,
    /// Seed (soak: of the whole run; ci: of the first scenario).
    #[arg(long)]
    seed: Option<u64>,
    /// Run only the CI scenarios whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Check a kept history.json again (no cluster is started) and exit
    /// 1 if a check fails: for re-judging a failed round after a fix to
    /// the checkers.
    #[arg(long, value_name = "HISTORY_JSON")]
    check: Option<PathBuf>,
}

/// Re-runs every history check on a kept `history.json`.
fn recheck(path: &std::path::Path) -> std::process::ExitCode {
    use kvd_robustness::checks;
    use kvd_robustness::history::{History, Timeline};
    let history: History = match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return std::process::ExitCode::FAILURE;
        }
    };
    let Some(observer) = history.watches.first() else {
        eprintln!("error: {} has no observer watch", path.display());
        return std::process::ExitCode::FAILURE;
    };
    let timeline = Timeline::from_observer(observer);
    let results = checks::run_all(&history, &timeline, Duration::from_secs(120));
    let mut failed = false;
    for r in &results {
        println!(
            "{:<28} {:<5} {}",
            r.name,
            if r.passed { "pass" } else { "FAIL" },
            r.detail
        );
        failed |= !r.passed;
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.check {
        return recheck(path);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let reports = runtime.block_on(run(&args));
    print!("{}", report::table(&reports));
    if let Err(e) = report::write_json(&args.out.join("summary.json"), &reports) {
        eprintln!("error: cannot write the summary: {e:#}");
    }
    if !reports.is_empty() && reports.iter().all(|r| r.passed) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

async fn run(args: &Args) -> Vec<ScenarioReport> {
    let _ = std::fs::create_dir_all(&args.out);
    let cfg = RunConfig {
        kvd: args.kvd.clone(),
        out: args.out.clone(),
        warmup: Duration::from_secs(3),
        hold: Duration::from_secs(4),
        after: Duration::from_secs(4),
        check_budget: Duration::from_secs(60),
    };
    let mut reports = Vec::new();
    match args.profile {
        Profile::Ci => {
            let first = args.seed.unwrap_or(1);
            for (n, (name, fault)) in scenarios::ci().into_iter().enumerate() {
                if args
                    .only
                    .as_ref()
                    .is_some_and(|o| !name.contains(o.as_str()))
                {
                    continue;
                }
                let schedule = Schedule::single(&cfg, fault);
                let r = runner::run(&name, &schedule, first + n as u64, &cfg).await;
                eprintln!(
                    "{name}: {} ({:.0} s)",
                    if r.passed { "pass" } else { "FAIL" },
                    r.seconds
                );
                reports.push(r);
            }
        }
        Profile::Soak => {
            let seed = args.seed.unwrap_or_else(|| rand::thread_rng().gen());
            eprintln!("soak: seed {seed}, {} minutes", args.minutes);
            let mut rng = runner::rng(seed);
            let faults = scenarios::soak_faults();
            let end = Instant::now() + Duration::from_secs(args.minutes * 60);
            let mut round = 0;
            while Instant::now() < end {
                round += 1;
                let left = end.saturating_duration_since(Instant::now());
                let length = left
                    .min(Duration::from_secs(60))
                    .max(Duration::from_secs(20));
                let schedule = Schedule::random(&mut rng, &faults, length);
                let name = format!("soak-{round:03}");
                let r = runner::run(&name, &schedule, rng.gen(), &cfg).await;
                eprintln!(
                    "{name}: {} — {} faults, {} ops ({:.0} s)",
                    if r.passed { "pass" } else { "FAIL" },
                    r.injected.len(),
                    r.ops_ok + r.ops_failed + r.ops_unknown,
                    r.seconds
                );
                let failed = !r.passed;
                reports.push(r);
                if failed {
                    break;
                }
            }
        }
    }
    reports
}
