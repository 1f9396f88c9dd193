//! Which client operation made each change in the server's history, and
//! the writes check: every acknowledged write is in the history at its
//! revision, no refused write is, and every change has a writer.
//!
//! Values are unique per operation, so a put names its writer. Deletes are
//! matched by (revision, key): an acknowledged delete or lease revoke at
//! that revision, else a delete or revoke whose answer never came.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use crate::checks::CheckResult;
use crate::history::{History, Outcome, Request, Response, Timeline};

/// The writer of each change of the history.
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    /// Puts and compare-and-swaps without an answer whose value is in the
    /// history: operation index → the revision it took effect at.
    pub took_effect: HashMap<usize, i64>,
    /// Deletes without an answer that explain a delete of the history:
    /// operation index → revision.
    pub deletes: HashMap<usize, i64>,
    /// Deletes of the history made by a lease revoke: (revoke operation
    /// index, revision, key).
    pub revoked: Vec<(usize, i64, String)>,
    /// Deletes of the history nobody explains: (revision, key).
    pub unexplained_deletes: Vec<(i64, String)>,
    /// Puts of the history whose value no client wrote: (revision, key, value).
    pub unexplained_puts: Vec<(i64, String, String)>,
    /// Refused operations whose value is in the history (operation index).
    pub refused_but_applied: Vec<usize>,
}

/// Finds the writer of every change of `timeline` among `history`'s
/// operations.
pub fn attribute(history: &History, timeline: &Timeline) -> Attribution {
    let mut a = Attribution::default();
    // Which operation wrote each value.
    let mut writer: HashMap<&str, usize> = HashMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        match &op.request {
            Request::Put { value, .. } | Request::Cas { value, .. } => {
                writer.insert(value.as_str(), i);
            }
            _ => {}
        }
    }
    // Acknowledged deletes and revokes by revision.
    let mut acked_delete: HashSet<(i64, &str)> = HashSet::new();
    let mut acked_revoke: HashMap<i64, usize> = HashMap::new();
    // Answered revokes by lease: (operation, revision answered).
    let mut acked_revoke_of: HashMap<i64, Vec<(usize, i64)>> = HashMap::new();
    let mut unknown_deletes: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut unknown_revokes: Vec<usize> = Vec::new();
    // The first unanswered revoke of each lease.
    let mut unknown_revoke_of: HashMap<i64, usize> = HashMap::new();
    // The lease each live key's current value was written with.
    let mut lease_of: HashMap<&str, i64> = HashMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        match (&op.request, &op.outcome) {
            (Request::Delete { key }, Outcome::Ok(Response::Delete { revision, deleted }))
                if *deleted > 0 =>
            {
                acked_delete.insert((*revision, key.as_str()));
            }
            (Request::Delete { key }, Outcome::Unknown(_)) => {
                unknown_deletes.entry(key.as_str()).or_default().push(i);
            }
            (Request::LeaseRevoke { id }, Outcome::Ok(Response::LeaseRevoke { revision })) => {
                // Several revokes can answer one revision (one of a lease
                // with no keys answers the current revision): keep the
                // earliest sent as the fallback writer of that revision.
                let first = acked_revoke.entry(*revision).or_insert(i);
                if history.ops[i].invoke < history.ops[*first].invoke {
                    *first = i;
                }
                acked_revoke_of.entry(*id).or_default().push((i, *revision));
            }
            (Request::LeaseRevoke { id }, Outcome::Unknown(_)) => {
                unknown_revokes.push(i);
                unknown_revoke_of.entry(*id).or_insert(i);
            }
            _ => {}
        }
    }
    for list in unknown_deletes.values_mut() {
        list.sort_by_key(|&i| history.ops[i].invoke);
        list.reverse(); // pop() takes the earliest
    }
    let existed = ExistedBy::new(history);
    // An unanswered revoke explains the deletes of one revision.
    let mut revoke_at: HashMap<i64, usize> = HashMap::new();
    for (&revision, events) in &timeline.revisions {
        for e in events {
            if e.put {
                match writer.get(e.value.as_str()) {
                    Some(&i) => {
                        let op = &history.ops[i];
                        let lease = match &op.request {
                            Request::Put { lease, .. } => *lease,
                            _ => 0,
                        };
                        lease_of.insert(e.key.as_str(), lease);
                        match &op.outcome {
                            Outcome::Unknown(_) => {
                                a.took_effect.insert(i, revision);
                            }
                            Outcome::Failed(_) => a.refused_but_applied.push(i),
                            Outcome::Ok(_) => {}
                        }
                    }
                    None => a
                        .unexplained_puts
                        .push((revision, e.key.clone(), e.value.clone())),
                }
                continue;
            }
            let lease = lease_of.remove(e.key.as_str()).unwrap_or(0);
            // Whatever made this change was sent before the observer saw it
            // (soak-013: a revoke of the key's lease sent seconds later), and
            // before any answer carried its revision or a later one: the
            // observer lags when its member is cut off (follower-snapshot,
            // session 21: seen 6 s after a read had answered past it).
            let seen = timeline
                .seen_at
                .get(&revision)
                .copied()
                .unwrap_or(u64::MAX)
                .min(existed.at(revision));
            let in_time = |i: usize| history.ops[i].invoke <= seen;
            if acked_delete.contains(&(revision, e.key.as_str())) {
                continue;
            }
            // The revoke of the lease the key was written with, when one
            // answered this revision (soak-002: another revoke, of a lease
            // without keys, answered the same revision later).
            if let Some(&(i, _)) = acked_revoke_of
                .get(&lease)
                .and_then(|list| list.iter().find(|(_, r)| *r == revision))
            {
                a.revoked.push((i, revision, e.key.clone()));
                continue;
            }
            if let Some(&i) = acked_revoke.get(&revision) {
                a.revoked.push((i, revision, e.key.clone()));
                continue;
            }
            // A key written with a lease that an unanswered revoke names,
            // sent in time, went with that revoke rather than with a
            // client's delete (soak-008: a delete sent only later).
            if let Some(&i) = unknown_revoke_of.get(&lease).filter(|&&i| in_time(i)) {
                revoke_at.insert(revision, i);
                unknown_revokes.retain(|&r| r != i);
                a.revoked.push((i, revision, e.key.clone()));
                continue;
            }
            // The earliest unanswered delete of the key, if sent in time.
            if let Some(list) = unknown_deletes.get_mut(e.key.as_str()) {
                if list.last().is_some_and(|&i| in_time(i)) {
                    if let Some(i) = list.pop() {
                        a.deletes.insert(i, revision);
                        continue;
                    }
                }
            }
            let revoke = match revoke_at.get(&revision) {
                Some(&i) => Some(i),
                None => {
                    // The earliest unanswered revoke sent in time.
                    let next = unknown_revokes
                        .iter()
                        .enumerate()
                        .filter(|(_, &i)| in_time(i))
                        .min_by_key(|(_, &i)| history.ops[i].invoke)
                        .map(|(at, _)| at)
                        .map(|at| unknown_revokes.remove(at));
                    if let Some(i) = next {
                        revoke_at.insert(revision, i);
                    }
                    next
                }
            };
            match revoke {
                Some(i) => a.revoked.push((i, revision, e.key.clone())),
                None => a.unexplained_deletes.push((revision, e.key.clone())),
            }
        }
    }
    a
}

/// When each revision is known to have existed from the answers alone: an
/// answer with header revision `r`, returned at `t`, means every revision
/// up to `r` had been applied by `t`.
struct ExistedBy {
    /// Answered revisions, descending.
    revisions: Vec<i64>,
    /// `earliest[i]`: the earliest return among answers with a revision of
    /// at least `revisions[i]`.
    earliest: Vec<u64>,
}

impl ExistedBy {
    fn new(history: &History) -> Self {
        let mut answers: Vec<(i64, u64)> = history
            .ops
            .iter()
            .filter_map(|op| match &op.outcome {
                Outcome::Ok(r) if r.revision() > 0 => Some((r.revision(), op.ret)),
                _ => None,
            })
            .collect();
        answers.sort_unstable_by_key(|&(revision, _)| std::cmp::Reverse(revision));
        let mut earliest = Vec::with_capacity(answers.len());
        let mut min = u64::MAX;
        for &(_, ret) in &answers {
            min = min.min(ret);
            earliest.push(min);
        }
        ExistedBy {
            revisions: answers.into_iter().map(|(r, _)| r).collect(),
            earliest,
        }
    }

    /// The earliest time revision `r` is known to have existed (`u64::MAX`
    /// when no answer reached it).
    fn at(&self, r: i64) -> u64 {
        let n = self.revisions.partition_point(|&x| x >= r);
        n.checked_sub(1)
            .and_then(|i| self.earliest.get(i).copied())
            .unwrap_or(u64::MAX)
    }
}

/// Every acknowledged write is in the history at its revision; no refused
/// write is; every change of the history has a writer.
pub fn check(history: &History, timeline: &Timeline, a: &Attribution) -> CheckResult {
    let started = Instant::now();
    let mut violations = Vec::new();
    let mut acked = 0;
    let has = |revision: i64, put: bool, key: &str, value: Option<&str>| {
        timeline.revisions.get(&revision).is_some_and(|events| {
            events
                .iter()
                .any(|e| e.put == put && e.key == key && value.is_none_or(|v| e.value == v))
        })
    };
    for op in &history.ops {
        let Outcome::Ok(response) = &op.outcome else {
            continue;
        };
        let missing = match (&op.request, response) {
            (Request::Put { key, value, .. }, Response::Put { revision }) => {
                acked += 1;
                (!has(*revision, true, key, Some(value)))
                    .then(|| format!("acknowledged put {key}={value} at revision {revision} is not in the history"))
            }
            (
                Request::Cas { key, value, .. },
                Response::Cas {
                    revision,
                    succeeded: true,
                },
            ) => {
                acked += 1;
                (!has(*revision, true, key, Some(value))).then(|| {
                    format!("acknowledged txn put {key}={value} at revision {revision} is not in the history")
                })
            }
            (Request::Delete { key }, Response::Delete { revision, deleted }) if *deleted > 0 => {
                acked += 1;
                (!has(*revision, false, key, None)).then(|| {
                    format!(
                        "acknowledged delete of {key} at revision {revision} is not in the history"
                    )
                })
            }
            _ => None,
        };
        violations.extend(missing);
    }
    for &i in &a.refused_but_applied {
        violations.push(format!(
            "refused write {:?} took effect",
            history.ops[i].request
        ));
    }
    for (revision, key, value) in &a.unexplained_puts {
        violations.push(format!(
            "put {key}={value} at revision {revision} was written by no client"
        ));
    }
    for (revision, key) in &a.unexplained_deletes {
        violations.push(format!(
            "delete of {key} at revision {revision} was made by no client"
        ));
    }
    CheckResult::from_violations(
        "no lost or phantom writes",
        format!(
            "{acked} acknowledged writes found at their revisions; {} revisions attributed",
            timeline.revisions.len()
        ),
        violations,
        started,
    )
}
