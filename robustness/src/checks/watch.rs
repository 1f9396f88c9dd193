//! etcd's watch guarantees (etcd.io/docs/v3.5/learning/api_guarantees,
//! "Watch APIs") against the server's history, per watch (all of its
//! segments, i.e. across resumptions):
//!
//! - **ordered**: events by revision; a later response never carries a
//!   revision at or below one already delivered;
//! - **unique**: no (revision, key) twice;
//! - **atomic**: the events of one revision in the watched range come in
//!   one response;
//! - **reliable**: no gap: a segment delivers every change in its range
//!   from its start revision up to the last revision it delivered;
//! - **resumable**: a segment resumed after a failure starts right after
//!   the last revision the watch delivered (an event's, or a progress
//!   notification's: a bookmark), so the whole watch has no gap;
//! - **bookmarkable**: a progress response at revision R comes after every
//!   change in range at or below R, and none of those follows it;
//! - an answer "compacted" only for a start revision that was compacted.
//!
//! (A watch is served from its member's state, which may lag a compaction
//! another member already answered; so whether a start revision below a
//! compaction must be refused is checked by the runner once the members
//! converged, on every member.)

use std::collections::HashSet;
use std::time::Instant;

use crate::checks::CheckResult;
use crate::history::{Event, History, Timeline, WatchLog};

/// Every guarantee for every watch of `history`.
pub fn check(history: &History, timeline: &Timeline) -> CheckResult {
    let started = Instant::now();
    let mut violations = Vec::new();
    let mut events = 0usize;
    for w in &history.watches {
        events += check_watch(w, timeline, &mut violations);
    }
    CheckResult::from_violations(
        "watch guarantees",
        format!(
            "{} watches, {events} events delivered",
            history.watches.len()
        ),
        violations,
        started,
    )
}

/// The changes of `timeline` at `revision` in the range of `prefix`.
fn in_range<'a>(
    timeline: &'a Timeline,
    revision: i64,
    prefix: &'a str,
) -> impl Iterator<Item = &'a Event> {
    timeline
        .revisions
        .get(&revision)
        .into_iter()
        .flatten()
        .filter(move |e| e.key.starts_with(prefix))
}

fn check_watch(w: &WatchLog, timeline: &Timeline, violations: &mut Vec<String>) -> usize {
    let id = w.id;
    let mut seen: HashSet<(i64, String)> = HashSet::new();
    let mut last_delivered = 0i64;
    let mut delivered = 0usize;
    for (n, seg) in w.segments.iter().enumerate() {
        // Resumable: a later segment starts right after what was delivered.
        if n > 0 && last_delivered > 0 && seg.start_revision != last_delivered + 1 {
            violations.push(format!(
                "watch {id}: resumed at revision {} after delivering up to {last_delivered}",
                seg.start_revision
            ));
        }
        let mut segment_last = seg.start_revision - 1;
        for r in &seg.responses {
            if r.compact_revision > 0 && seg.start_revision >= r.compact_revision {
                violations.push(format!(
                    "watch {id}: start revision {} answered compacted at {}",
                    seg.start_revision, r.compact_revision
                ));
            }
            if r.events.is_empty() {
                if !r.created && !r.canceled {
                    // Bookmarkable: everything at or below r.revision came.
                    let missing = ((segment_last + 1)..=r.revision)
                        .flat_map(|rev| in_range(timeline, rev, &w.prefix))
                        .next();
                    if let Some(e) = missing {
                        violations.push(format!(
                            "watch {id}: progress at revision {} before the change of {} at {}",
                            r.revision, e.key, e.mod_revision
                        ));
                    }
                    segment_last = segment_last.max(r.revision);
                    last_delivered = last_delivered.max(segment_last);
                }
                continue;
            }
            let mut revisions: Vec<i64> = r.events.iter().map(|e| e.mod_revision).collect();
            revisions.dedup();
            for pair in revisions.windows(2) {
                if pair[1] < pair[0] {
                    violations.push(format!("watch {id}: events out of order in one response"));
                }
            }
            for &rev in &revisions {
                // Ordered.
                if rev <= segment_last {
                    violations.push(format!(
                        "watch {id}: revision {rev} delivered after revision {segment_last}"
                    ));
                }
                // Reliable: nothing skipped between the last one and this.
                let gap = ((segment_last + 1).max(seg.start_revision)..rev)
                    .flat_map(|skipped| in_range(timeline, skipped, &w.prefix))
                    .next();
                if let Some(e) = gap {
                    violations.push(format!(
                        "watch {id}: the change of {} at revision {} was skipped",
                        e.key, e.mod_revision
                    ));
                }
                // Atomic: every change of this revision, in this response.
                let expected: Vec<&Event> = in_range(timeline, rev, &w.prefix).collect();
                let got: Vec<&Event> = r.events.iter().filter(|e| e.mod_revision == rev).collect();
                let same = expected.len() == got.len()
                    && got.iter().all(|g| expected.iter().any(|x| x == g));
                if !same {
                    violations.push(format!(
                        "watch {id}: revision {rev} delivered as {} events, the history has {}",
                        got.len(),
                        expected.len()
                    ));
                }
                segment_last = segment_last.max(rev);
            }
            for e in &r.events {
                delivered += 1;
                // Unique.
                if !seen.insert((e.mod_revision, e.key.clone())) {
                    violations.push(format!(
                        "watch {id}: the change of {} at revision {} came twice",
                        e.key, e.mod_revision
                    ));
                }
            }
            last_delivered = last_delivered.max(segment_last);
        }
    }
    delivered
}
