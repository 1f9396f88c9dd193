//! The checkers can fail: a clean history passes every check, and a
//! history with a stale read, a lost write or a duplicated watch event is
//! caught by the check that owns that guarantee.

use std::time::Duration;

use super::*;
use crate::history::{
    Event, History, Kv, Op, Outcome, Request, Response, Segment, Timeline, WatchLog, WatchResponse,
};

fn put(client: u32, invoke: u64, ret: u64, key: &str, value: &str, revision: i64) -> Op {
    Op {
        client,
        invoke,
        ret,
        request: Request::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        },
        outcome: Outcome::Ok(Response::Put { revision }),
    }
}

fn get(
    client: u32,
    invoke: u64,
    ret: u64,
    key: &str,
    seen: Option<(&str, i64)>,
    revision: i64,
) -> Op {
    Op {
        client,
        invoke,
        ret,
        request: Request::Get {
            key: key.into(),
            serializable: false,
        },
        outcome: Outcome::Ok(Response::Get {
            revision,
            kv: seen.map(|(value, mod_revision)| Kv {
                key: key.into(),
                value: value.into(),
                mod_revision,
            }),
        }),
    }
}

fn event(key: &str, value: &str, revision: i64) -> Event {
    Event {
        put: true,
        key: key.into(),
        value: value.into(),
        mod_revision: revision,
    }
}

fn response(at: u64, events: Vec<Event>) -> WatchResponse {
    WatchResponse {
        at,
        revision: events.last().map_or(0, |e| e.mod_revision),
        created: false,
        canceled: false,
        compact_revision: 0,
        events,
    }
}

/// Two puts of `a` (revisions 2 and 3) and a get after both, with a
/// watch from revision 1 that saw both.
fn clean() -> History {
    let watch = WatchLog {
        id: 0,
        prefix: String::new(),
        segments: vec![Segment {
            endpoint: "m1".into(),
            opened: 0,
            start_revision: 1,
            responses: vec![
                WatchResponse {
                    at: 1,
                    revision: 1,
                    created: true,
                    canceled: false,
                    compact_revision: 0,
                    events: Vec::new(),
                },
                response(15, vec![event("a", "v1", 2)]),
                response(25, vec![event("a", "v2", 3)]),
            ],
            ended: None,
            progress_requests: Vec::new(),
        }],
    };
    History {
        ops: vec![
            put(1, 10, 20, "a", "v1", 2),
            put(2, 21, 30, "a", "v2", 3),
            get(3, 40, 50, "a", Some(("v2", 3)), 3),
        ],
        watches: vec![watch],
    }
}

fn verdicts(h: &History) -> Vec<(String, bool)> {
    let timeline = Timeline::from_observer(&h.watches[0]);
    run_all(h, &timeline, Duration::from_secs(5))
        .into_iter()
        .map(|c| (c.name, c.passed))
        .collect()
}

fn failed(h: &History) -> Vec<String> {
    verdicts(h)
        .into_iter()
        .filter(|(_, passed)| !passed)
        .map(|(name, _)| name)
        .collect()
}

#[test]
fn a_clean_history_passes_every_check() {
    assert_eq!(failed(&clean()), Vec::<String>::new());
}

#[test]
fn a_stale_read_is_caught() {
    let mut h = clean();
    // After both puts returned, a get answers the first value.
    h.ops.push(get(4, 60, 70, "a", Some(("v1", 2)), 2));
    let failed = failed(&h);
    assert!(failed.contains(&"linearizable".to_string()), "{failed:?}");
    assert!(
        failed.contains(&"revisions follow real time".to_string()),
        "{failed:?}"
    );
}

#[test]
fn a_lost_write_is_caught() {
    let mut h = clean();
    // Acknowledged at revision 4, but the server's history ends at 3.
    h.ops.push(put(4, 60, 70, "b", "v3", 4));
    let failed = failed(&h);
    assert!(
        failed.contains(&"no lost or phantom writes".to_string()),
        "{failed:?}"
    );
}

#[test]
fn a_write_no_client_made_is_caught() {
    let mut h = clean();
    h.watches[0].segments[0]
        .responses
        .push(response(80, vec![event("c", "ghost", 4)]));
    let failed = failed(&h);
    assert!(
        failed.contains(&"no lost or phantom writes".to_string()),
        "{failed:?}"
    );
}

#[test]
fn a_duplicated_watch_event_is_caught() {
    let mut h = clean();
    let mut w = h.watches[0].clone();
    w.id = 1;
    // The change at revision 2 delivered twice.
    w.segments[0]
        .responses
        .insert(2, response(16, vec![event("a", "v1", 2)]));
    h.watches.push(w);
    let failed = failed(&h);
    assert_eq!(failed, vec!["watch guarantees".to_string()]);
}

#[test]
fn a_watch_gap_and_a_bad_resume_are_caught() {
    let mut h = clean();
    let mut w = h.watches[0].clone();
    w.id = 1;
    // Revision 2 never delivered.
    w.segments[0].responses.remove(1);
    h.watches.push(w);
    assert_eq!(failed(&h), vec!["watch guarantees".to_string()]);

    let mut h = clean();
    let mut w = h.watches[0].clone();
    w.id = 1;
    // Resumed at 4 after delivering up to 2: revision 3 falls between.
    let mut second = w.segments[0].clone();
    w.segments[0].responses.truncate(2);
    second.start_revision = 4;
    second.responses.clear();
    w.segments.push(second);
    h.watches.push(w);
    assert_eq!(failed(&h), vec!["watch guarantees".to_string()]);
}

/// soak-008's false alarm: `b` written with lease 7, whose revoke went
/// unanswered ("leader changed") but took effect at revision 5; a client's
/// delete of `b`, also unanswered, was sent only after a read had seen `b`
/// gone. The delete is the revoke's, and the history is linearizable.
#[test]
fn a_key_deleted_by_an_unanswered_revoke_is_not_blamed_on_a_later_delete() {
    let mut h = clean();
    leased_b_deleted_at_5(&mut h);
    h.ops.push(Op {
        client: 5,
        invoke: 80,
        ret: crate::history::NEVER,
        request: Request::LeaseRevoke { id: 7 },
        outcome: Outcome::Unknown("etcdserver: leader changed".into()),
    });
    h.ops.push(get(6, 100, 110, "b", None, 5));
    h.ops.push(Op {
        client: 6,
        invoke: 120,
        ret: crate::history::NEVER,
        request: Request::Delete { key: "b".into() },
        outcome: Outcome::Unknown("etcdserver: no leader".into()),
    });
    assert_eq!(failed(&h), Vec::<String>::new());
}

/// soak-002's false alarm: two answered revokes share revision 5, the
/// revoke of lease 7 (which held `b`) and, sent after `b` was seen gone,
/// the revoke of an empty lease 8 (which answers the current revision).
/// The delete of `b` belongs to the first.
#[test]
fn a_delete_is_blamed_on_the_revoke_of_the_keys_lease() {
    let mut h = clean();
    leased_b_deleted_at_5(&mut h);
    h.ops.push(Op {
        client: 5,
        invoke: 80,
        ret: 88,
        request: Request::LeaseRevoke { id: 7 },
        outcome: Outcome::Ok(Response::LeaseRevoke { revision: 5 }),
    });
    h.ops.push(get(6, 95, 99, "b", None, 5));
    // Listed after, as a later client's operations are.
    h.ops.push(Op {
        client: 7,
        invoke: 100,
        ret: 110,
        request: Request::LeaseRevoke { id: 8 },
        outcome: Outcome::Ok(Response::LeaseRevoke { revision: 5 }),
    });
    assert_eq!(failed(&h), Vec::<String>::new());
}

/// soak-013's false alarm: `b` written with lease 7 is deleted at
/// revision 5 by an unanswered delete; the unanswered revoke of lease 7 was
/// sent only after revision 5 was seen, so it cannot have made it.
#[test]
fn a_revoke_sent_after_the_delete_was_seen_is_not_blamed() {
    let mut h = clean();
    leased_b_deleted_at_5(&mut h);
    unanswered_delete_then_a_late_revoke(&mut h);
    assert_eq!(failed(&h), Vec::<String>::new());
}

/// robustness follower-snapshot's false alarm (session 21): as soak-013,
/// but the observer's member was cut off and saw revision 5 only at 130,
/// after the revoke was sent. A read had answered at revision 5 by 99, so
/// revision 5 existed then and the revoke, sent at 120, cannot have made it.
#[test]
fn a_revoke_sent_after_a_read_answered_the_revision_is_not_blamed() {
    let mut h = clean();
    leased_b_deleted_at_5(&mut h);
    if let Some(late) = h.watches[0].segments[0].responses.last_mut() {
        late.at = 130;
    }
    unanswered_delete_then_a_late_revoke(&mut h);
    assert_eq!(failed(&h), Vec::<String>::new());
}

/// An unanswered delete of `b` sent at 72, a read answering `b` gone at
/// revision 5 by 99, and an unanswered revoke of lease 7 sent at 120.
fn unanswered_delete_then_a_late_revoke(h: &mut History) {
    h.ops.push(Op {
        client: 5,
        invoke: 72,
        ret: crate::history::NEVER,
        request: Request::Delete { key: "b".into() },
        outcome: Outcome::Unknown("etcdserver: leader changed".into()),
    });
    h.ops.push(get(6, 95, 99, "b", None, 5));
    h.ops.push(Op {
        client: 7,
        invoke: 120,
        ret: crate::history::NEVER,
        request: Request::LeaseRevoke { id: 7 },
        outcome: Outcome::Unknown("timed out".into()),
    });
}

/// The regression histories' common part: `b` put with lease 7 at
/// revision 4 (seen at 75), deleted at revision 5 (seen at 90).
fn leased_b_deleted_at_5(h: &mut History) {
    let mut with_lease = put(4, 60, 70, "b", "v3", 4);
    with_lease.request = Request::Put {
        key: "b".into(),
        value: "v3".into(),
        lease: 7,
    };
    h.ops.push(with_lease);
    let responses = &mut h.watches[0].segments[0].responses;
    responses.push(response(75, vec![event("b", "v3", 4)]));
    responses.push(response(
        90,
        vec![Event {
            put: false,
            key: "b".into(),
            value: String::new(),
            mod_revision: 5,
        }],
    ));
}
