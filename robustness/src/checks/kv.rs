//! Key-value checks: linearizability per key (porcupine with a model that
//! tracks each key's value and mod revision and the highest revision seen),
//! the real-time order of revisions across all keys, and every read equal
//! to the history's state at its revision.
//!
//! Per-key checking is sound for these single-key operations (P-
//! compositionality); the revision floor in the model and the cross-key
//! real-time check together refuse the orders a single key cannot see
//! (a write whose revision is below one a completed read already saw).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::checks::writes::Attribution;
use crate::checks::CheckResult;
use crate::history::{apply_events, History, Kv, Outcome, Request, Response, Timeline, NEVER};
use crate::porcupine::{self, Model, Operation, Verdict};

/// The state of one key: its value and mod revision (`None` = absent), and
/// the highest revision linearized so far (later writes must be above it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyState {
    kv: Option<(String, i64)>,
    floor: i64,
}

/// What an operation on one key did.
#[derive(Debug, Clone)]
pub enum KeyOp {
    /// A put of `value` that took revision `revision`.
    Put { value: String, revision: i64 },
    /// A linearizable get answering at `revision`.
    Get {
        revision: i64,
        kv: Option<(String, i64)>,
    },
    /// A delete answering at `revision`, having deleted or not.
    Delete { revision: i64, deleted: bool },
    /// A compare of the mod revision with `expect` (0 = absent), then a
    /// put of `value` if it held.
    Cas {
        expect: i64,
        value: String,
        revision: i64,
        succeeded: bool,
    },
    /// A delete made by a lease revoke, at `revision`.
    Revoked { revision: i64 },
}

/// The sequential model of one key.
pub struct KeyModel;

impl Model for KeyModel {
    type State = KeyState;
    type Input = KeyOp;
    type Output = ();

    fn init(&self) -> KeyState {
        KeyState { kv: None, floor: 0 }
    }

    fn step(&self, s: &KeyState, op: &KeyOp, _: &()) -> Option<KeyState> {
        let mod_revision = s.kv.as_ref().map_or(0, |(_, m)| *m);
        match op {
            KeyOp::Put { value, revision } => (*revision > s.floor).then(|| KeyState {
                kv: Some((value.clone(), *revision)),
                floor: *revision,
            }),
            KeyOp::Get { revision, kv } => {
                (*kv == s.kv && *revision >= s.floor).then(|| KeyState {
                    kv: s.kv.clone(),
                    floor: *revision,
                })
            }
            KeyOp::Delete {
                revision,
                deleted: true,
            }
            | KeyOp::Revoked { revision } => {
                (s.kv.is_some() && *revision > s.floor).then_some(KeyState {
                    kv: None,
                    floor: *revision,
                })
            }
            KeyOp::Delete {
                revision,
                deleted: false,
            } => (s.kv.is_none() && *revision >= s.floor).then_some(KeyState {
                kv: None,
                floor: *revision,
            }),
            KeyOp::Cas {
                expect,
                value,
                revision,
                succeeded: true,
            } => (mod_revision == *expect && *revision > s.floor).then(|| KeyState {
                kv: Some((value.clone(), *revision)),
                floor: *revision,
            }),
            KeyOp::Cas {
                expect,
                revision,
                succeeded: false,
                ..
            } => (mod_revision != *expect && *revision >= s.floor).then(|| KeyState {
                kv: s.kv.clone(),
                floor: *revision,
            }),
        }
    }
}

/// The operations of every key, from the history and the attribution of
/// the changes nobody acknowledged.
pub fn key_histories(
    history: &History,
    a: &Attribution,
) -> BTreeMap<String, Vec<Operation<KeyOp, ()>>> {
    let mut per_key: BTreeMap<String, Vec<Operation<KeyOp, ()>>> = BTreeMap::new();
    let mut push = |key: &str, input: KeyOp, call: u64, ret: u64| {
        per_key.entry(key.to_string()).or_default().push(Operation {
            input,
            output: (),
            call,
            ret,
        });
    };
    for (i, op) in history.ops.iter().enumerate() {
        let (call, ret) = (op.invoke, op.ret);
        match (&op.request, &op.outcome) {
            (
                Request::Get {
                    key,
                    serializable: false,
                },
                Outcome::Ok(Response::Get { revision, kv }),
            ) => push(
                key,
                KeyOp::Get {
                    revision: *revision,
                    kv: kv.as_ref().map(|kv| (kv.value.clone(), kv.mod_revision)),
                },
                call,
                ret,
            ),
            (Request::Put { key, value, .. }, Outcome::Ok(Response::Put { revision })) => push(
                key,
                KeyOp::Put {
                    value: value.clone(),
                    revision: *revision,
                },
                call,
                ret,
            ),
            (Request::Put { key, value, .. }, Outcome::Unknown(_)) => {
                if let Some(&revision) = a.took_effect.get(&i) {
                    let value = value.clone();
                    push(key, KeyOp::Put { value, revision }, call, NEVER);
                }
            }
            (Request::Delete { key }, Outcome::Ok(Response::Delete { revision, deleted })) => push(
                key,
                KeyOp::Delete {
                    revision: *revision,
                    deleted: *deleted > 0,
                },
                call,
                ret,
            ),
            (Request::Delete { key }, Outcome::Unknown(_)) => {
                if let Some(&revision) = a.deletes.get(&i) {
                    let input = KeyOp::Delete {
                        revision,
                        deleted: true,
                    };
                    push(key, input, call, NEVER);
                }
            }
            (
                Request::Cas {
                    key,
                    expect_mod,
                    value,
                },
                Outcome::Ok(Response::Cas {
                    revision,
                    succeeded,
                }),
            ) => push(
                key,
                KeyOp::Cas {
                    expect: *expect_mod,
                    value: value.clone(),
                    revision: *revision,
                    succeeded: *succeeded,
                },
                call,
                ret,
            ),
            (
                Request::Cas {
                    key,
                    expect_mod,
                    value,
                },
                Outcome::Unknown(_),
            ) => {
                if let Some(&revision) = a.took_effect.get(&i) {
                    let input = KeyOp::Cas {
                        expect: *expect_mod,
                        value: value.clone(),
                        revision,
                        succeeded: true,
                    };
                    push(key, input, call, NEVER);
                }
            }
            _ => {}
        }
    }
    for (i, revision, key) in &a.revoked {
        let op = &history.ops[*i];
        push(
            key,
            KeyOp::Revoked {
                revision: *revision,
            },
            op.invoke,
            op.ret,
        );
    }
    per_key
}

/// Linearizability of every key's history (a timeout fails).
pub fn linearizability(
    history: &History,
    _timeline: &Timeline,
    a: &Attribution,
    budget: Duration,
) -> CheckResult {
    let started = Instant::now();
    let deadline = started + budget;
    let per_key = key_histories(history, a);
    let mut violations = Vec::new();
    let mut ops = 0;
    for (key, list) in &per_key {
        ops += list.len();
        match porcupine::check(&KeyModel, list, deadline) {
            Verdict::Linearizable => {}
            Verdict::Timeout => violations.push(format!(
                "checker timed out on key {key} after {budget:?} (a timeout is a failure)"
            )),
            Verdict::Illegal { longest_prefix } => {
                let tail: Vec<String> = longest_prefix
                    .iter()
                    .rev()
                    .take(3)
                    .map(|&i| format!("{:?}", list[i].input))
                    .collect();
                violations.push(format!(
                    "key {key} is not linearizable ({} operations; last linearized: {})",
                    list.len(),
                    tail.join(", ")
                ));
            }
        }
    }
    CheckResult::from_violations(
        "linearizable",
        format!("{ops} operations on {} keys", per_key.len()),
        violations,
        started,
    )
}

/// Revisions follow real time across keys: an operation sees (or, for a
/// write, takes) a revision at least as high as (above) every revision an
/// operation that returned before it was called saw.
pub fn realtime_revisions(history: &History) -> CheckResult {
    let started = Instant::now();
    // (invoke, ret, revision, creates a revision)
    let mut ops: Vec<(u64, u64, i64, bool)> = Vec::new();
    for op in &history.ops {
        let Outcome::Ok(r) = &op.outcome else {
            continue;
        };
        let creates = match r {
            Response::Put { .. } => true,
            Response::Cas { succeeded, .. } => *succeeded,
            Response::Delete { deleted, .. } => *deleted > 0,
            Response::Get { .. } | Response::Range { .. } => false,
            _ => continue,
        };
        if matches!(
            op.request,
            Request::Get {
                serializable: true,
                ..
            }
        ) {
            continue;
        }
        ops.push((op.invoke, op.ret, r.revision(), creates));
    }
    let mut by_ret: Vec<(u64, i64)> = ops.iter().map(|o| (o.1, o.2)).collect();
    by_ret.sort_unstable();
    ops.sort_unstable();
    let mut violations = Vec::new();
    let mut seen_max = 0i64;
    let mut next = 0;
    for &(invoke, _, revision, creates) in &ops {
        while next < by_ret.len() && by_ret[next].0 < invoke {
            seen_max = seen_max.max(by_ret[next].1);
            next += 1;
        }
        let stale = if creates {
            revision <= seen_max
        } else {
            revision < seen_max
        };
        if stale {
            violations.push(format!(
                "an operation called at {invoke} µs got revision {revision}, below revision \
                 {seen_max} that an earlier operation had already returned"
            ));
        }
    }
    CheckResult::from_violations(
        "revisions follow real time",
        format!("{} operations", ops.len()),
        violations,
        started,
    )
}

/// Every read (gets, serializable gets, ranges) equals the history's
/// state at its revision.
pub fn reads_match_history(history: &History, timeline: &Timeline) -> CheckResult {
    let started = Instant::now();
    // (revision, op index), swept in revision order over the timeline.
    let mut reads: Vec<(i64, usize)> = Vec::new();
    for (i, op) in history.ops.iter().enumerate() {
        if let Outcome::Ok(r @ (Response::Get { .. } | Response::Range { .. })) = &op.outcome {
            reads.push((r.revision(), i));
        }
    }
    reads.sort_unstable();
    let mut violations = Vec::new();
    let mut state: BTreeMap<String, Kv> = BTreeMap::new();
    let mut revisions = timeline.revisions.iter().peekable();
    for &(revision, i) in &reads {
        while let Some((&r, events)) = revisions.peek() {
            if r > revision {
                break;
            }
            apply_events(&mut state, events);
            revisions.next();
        }
        let op = &history.ops[i];
        match (&op.request, &op.outcome) {
            (Request::Get { key, .. }, Outcome::Ok(Response::Get { kv, .. }))
                if kv.as_ref() != state.get(key) =>
            {
                violations.push(format!(
                    "get {key} at revision {revision} answered {kv:?}, the history has {:?}",
                    state.get(key)
                ));
            }
            (Request::Range { prefix }, Outcome::Ok(Response::Range { kvs, .. })) => {
                let mut expected: Vec<&Kv> = state
                    .values()
                    .filter(|kv| kv.key.starts_with(prefix.as_str()))
                    .collect();
                expected.sort_by(|a, b| a.key.cmp(&b.key));
                let got: Vec<&Kv> = kvs.iter().collect();
                if got != expected {
                    violations.push(format!(
                        "range {prefix}* at revision {revision} answered {} keys, the history has {}",
                        got.len(),
                        expected.len()
                    ));
                }
            }
            _ => {}
        }
    }
    CheckResult::from_violations(
        "reads match the history",
        format!("{} reads", reads.len()),
        violations,
        started,
    )
}
