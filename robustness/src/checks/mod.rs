//! The checkers, each a verdict on a recorded [`History`] against the
//! server's [`Timeline`]:
//!
//! - `kv`: linearizability (per key, with porcupine and a model that knows
//!   revisions), real-time order of revisions across keys, and every read
//!   (serializable ones and ranges included) equal to the history's state
//!   at its revision;
//! - `writes`: no acknowledged write lost, no refused write taking effect,
//!   nothing in the history that no client wrote;
//! - `watch`: the six watch guarantees (ordered, unique, atomic, reliable,
//!   resumable, bookmarkable) and compacted start revisions.
//!
//! Convergence of the members is judged by the runner, which can still
//! ask them.

pub mod kv;
pub mod watch;
pub mod writes;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::history::{History, Timeline};

/// One checker's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// The checker.
    pub name: String,
    /// Whether the history passed.
    pub passed: bool,
    /// What was checked, or the violations (the first few).
    pub detail: String,
    /// How long the check took, milliseconds.
    pub millis: u128,
}

impl CheckResult {
    /// A verdict from a list of violations (none = passed).
    pub fn from_violations(
        name: &str,
        checked: String,
        violations: Vec<String>,
        started: Instant,
    ) -> Self {
        let passed = violations.is_empty();
        let detail = if passed {
            checked
        } else {
            let mut shown: Vec<String> = violations.iter().take(5).cloned().collect();
            if violations.len() > 5 {
                shown.push(format!("… and {} more", violations.len() - 5));
            }
            shown.join("; ")
        };
        CheckResult {
            name: name.to_string(),
            passed,
            detail,
            millis: started.elapsed().as_millis(),
        }
    }
}

/// Every history checker, with `budget` for the linearizability search (a
/// timeout fails the check).
pub fn run_all(history: &History, timeline: &Timeline, budget: Duration) -> Vec<CheckResult> {
    let attribution = writes::attribute(history, timeline);
    vec![
        kv::linearizability(history, timeline, &attribution, budget),
        kv::realtime_revisions(history),
        kv::reads_match_history(history, timeline),
        writes::check(history, timeline, &attribution),
        watch::check(history, timeline),
    ]
}

#[cfg(test)]
mod tests;
