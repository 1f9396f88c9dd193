//! The outcome of each scenario: its fault(s), the operations by outcome,
//! throughput before, during and after the faults, and every check's
//! verdict and time; printed as a table ending in `robustness: N passed,
//! M failed`, and written as JSON.

use std::path::Path;

use serde::Serialize;

use crate::checks::CheckResult;
use crate::history::{Micros, Op, Outcome};
use crate::runner::{outcomes, Schedule};

/// One scenario's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// The scenario.
    pub name: String,
    /// The faults scheduled.
    pub faults: Vec<String>,
    /// What was injected, as the faults reported it.
    pub injected: Vec<String>,
    /// The workload's seed.
    pub seed: u64,
    /// Operations answered.
    pub ops_ok: usize,
    /// Operations refused.
    pub ops_failed: usize,
    /// Operations without an answer.
    pub ops_unknown: usize,
    /// Answered operations per second before the first fault.
    pub qps_before: f64,
    /// … while faults were injected.
    pub qps_during: f64,
    /// … after the last fault was healed.
    pub qps_after: f64,
    /// Every check.
    pub checks: Vec<CheckResult>,
    /// Why the scenario could not run as planned.
    pub error: Option<String>,
    /// Whether it passed.
    pub passed: bool,
    /// How long it took, seconds.
    pub seconds: f64,
    /// Where its files were kept (failures only).
    pub kept: Option<String>,
}

impl ScenarioReport {
    /// An empty report for a scenario about to run.
    pub fn new(name: &str, schedule: &Schedule, seed: u64) -> Self {
        Self {
            name: name.to_string(),
            faults: schedule.faults.iter().map(|(_, f)| f.describe()).collect(),
            injected: Vec::new(),
            seed,
            ops_ok: 0,
            ops_failed: 0,
            ops_unknown: 0,
            qps_before: 0.0,
            qps_during: 0.0,
            qps_after: 0.0,
            checks: Vec::new(),
            error: None,
            passed: false,
            seconds: 0.0,
            kept: None,
        }
    }

    /// Counts `ops` and the throughput of the three phases (µs bounds).
    pub fn count(&mut self, ops: &[Op], fault_start: Micros, fault_end: Micros, end: Micros) {
        (self.ops_ok, self.ops_failed, self.ops_unknown) = outcomes(ops);
        let rate = |from: Micros, to: Micros| {
            let n = ops
                .iter()
                .filter(|o| matches!(o.outcome, Outcome::Ok(_)) && o.ret >= from && o.ret < to)
                .count();
            let secs = to.saturating_sub(from) as f64 / 1e6;
            if secs > 0.0 {
                n as f64 / secs
            } else {
                0.0
            }
        };
        self.qps_before = rate(0, fault_start);
        self.qps_during = rate(fault_start, fault_end);
        self.qps_after = rate(fault_end, end);
    }
}

/// The table of `reports` and the closing line.
pub fn table(reports: &[ScenarioReport]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<28} {:<42} {:>7} {:>6} {:>7} {:>7} {:>7} {:>7}  {}\n",
        "scenario", "fault", "ok", "failed", "unknown", "qps<", "qps~", "qps>", "result"
    ));
    for r in reports {
        let fault = r.faults.join(" + ");
        let fault: String = fault.chars().take(42).collect();
        let result = if r.passed {
            format!("pass ({:.0} s)", r.seconds)
        } else {
            let mut why: Vec<String> = r
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            if let Some(e) = &r.error {
                why.insert(0, e.clone());
            }
            format!("FAIL: {}", why.join(" | "))
        };
        out.push_str(&format!(
            "{:<28} {:<42} {:>7} {:>6} {:>7} {:>7.0} {:>7.0} {:>7.0}  {}\n",
            r.name,
            fault,
            r.ops_ok,
            r.ops_failed,
            r.ops_unknown,
            r.qps_before,
            r.qps_during,
            r.qps_after,
            result
        ));
    }
    let passed = reports.iter().filter(|r| r.passed).count();
    out.push_str(&format!(
        "robustness: {passed} passed, {} failed\n",
        reports.len() - passed
    ));
    out
}

/// Writes `reports` as JSON to `path`.
///
/// # Errors
/// Serialization or I/O.
pub fn write_json(path: &Path, reports: &[ScenarioReport]) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(reports)?)?;
    Ok(())
}
