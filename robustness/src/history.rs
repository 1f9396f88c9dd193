//! What the workload records: every client operation with its invoke and
//! return times and result, every watch with every response it got, and
//! the server's own history (the observer watch from revision 1), from
//! which the checkers judge.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Microseconds since the start of the run.
pub type Micros = u64;

/// "Never returned": the return time of an operation whose outcome is
/// unknown (it may take effect at any time after its call).
pub const NEVER: Micros = u64::MAX;

/// A key-value as a client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Kv {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// Its mod revision.
    pub mod_revision: i64,
}

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// `Range` of one key; linearizable unless `serializable`.
    Get { key: String, serializable: bool },
    /// `Range` of a prefix (linearizable).
    Range { prefix: String },
    /// `Put`, with a lease when `lease != 0`.
    Put {
        key: String,
        value: String,
        lease: i64,
    },
    /// `DeleteRange` of one key.
    Delete { key: String },
    /// `Txn`: if the key's mod revision is `expect_mod` (0 = absent), put
    /// `value`; else nothing.
    Cas {
        key: String,
        expect_mod: i64,
        value: String,
    },
    /// `LeaseGrant`.
    LeaseGrant { ttl: i64 },
    /// `LeaseRevoke`.
    LeaseRevoke { id: i64 },
    /// `Compact` (physical).
    Compact { revision: i64 },
}

impl Request {
    /// Whether this request can change the store.
    pub fn writes(&self) -> bool {
        !matches!(self, Request::Get { .. } | Request::Range { .. })
    }
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A get: the header revision and the key, if present.
    Get { revision: i64, kv: Option<Kv> },
    /// A range: the header revision and the key-values.
    Range { revision: i64, kvs: Vec<Kv> },
    /// A put: its revision.
    Put { revision: i64 },
    /// A delete: the header revision and how many keys went.
    Delete { revision: i64, deleted: i64 },
    /// A compare-and-swap: the header revision and whether it put.
    Cas { revision: i64, succeeded: bool },
    /// A lease grant: the id.
    LeaseGrant { id: i64 },
    /// A lease revoke: the header revision.
    LeaseRevoke { revision: i64 },
    /// A compaction: the header revision.
    Compact { revision: i64 },
}

impl Response {
    /// The header revision of the answer (0 for a lease grant).
    pub fn revision(&self) -> i64 {
        match self {
            Response::Get { revision, .. }
            | Response::Range { revision, .. }
            | Response::Put { revision }
            | Response::Delete { revision, .. }
            | Response::Cas { revision, .. }
            | Response::LeaseRevoke { revision }
            | Response::Compact { revision } => *revision,
            Response::LeaseGrant { .. } => 0,
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Answered.
    Ok(Response),
    /// Refused: it certainly had no effect.
    Failed(String),
    /// No answer (timeout, connection lost): it may or may not have taken
    /// effect, at any time after its call.
    Unknown(String),
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client that made it.
    pub client: u32,
    /// When it was sent.
    pub invoke: Micros,
    /// When its answer came ([`NEVER`] without one).
    pub ret: Micros,
    /// What was asked.
    pub request: Request,
    /// How it ended.
    pub outcome: Outcome,
}

/// One change in a watch response or in the server's history.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    /// `true` for a put, `false` for a delete.
    pub put: bool,
    /// The key.
    pub key: String,
    /// The value (empty for a delete).
    pub value: String,
    /// The revision of the change.
    pub mod_revision: i64,
}

/// One watch response as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    /// When it arrived.
    pub at: Micros,
    /// Its header revision.
    pub revision: i64,
    /// The `created` response of the watch.
    pub created: bool,
    /// The watch was canceled.
    pub canceled: bool,
    /// Set when the start revision had been compacted.
    pub compact_revision: i64,
    /// The events (none for created, canceled and progress responses).
    pub events: Vec<Event>,
}

/// One connection of a watch: from its create request until it ended; a
/// watch resumed after a failure gets a new segment starting from the
/// revision after the last one it received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The member it was opened on.
    pub endpoint: String,
    /// When the create request went out.
    pub opened: Micros,
    /// The start revision asked.
    pub start_revision: i64,
    /// The responses, in order.
    pub responses: Vec<WatchResponse>,
    /// Why it ended, if it did before the run ended.
    pub ended: Option<String>,
    /// Progress requests sent on it (their times).
    pub progress_requests: Vec<Micros>,
}

/// One logical watch (resumed across failures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchLog {
    /// Its number in the run.
    pub id: u32,
    /// The watched prefix (`""` = every key).
    pub prefix: String,
    /// Its connections, in order.
    pub segments: Vec<Segment>,
}

/// Everything a run recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Client operations, in no particular order.
    pub ops: Vec<Op>,
    /// Watches, the observer (id 0, every key from revision 1) first.
    pub watches: Vec<WatchLog>,
}

/// The server's history: the events of every revision, from the observer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    /// Events by revision (a revision with a single txn can hold several).
    pub revisions: BTreeMap<i64, Vec<Event>>,
    /// When the observer first received each revision (microseconds of
    /// the run, as operations' times): whatever made it was sent before.
    pub seen_at: BTreeMap<i64, u64>,
}

impl Timeline {
    /// The timeline the observer watch saw (its events, deduplicated by
    /// (revision, key) — duplicates are the watch checker's business).
    pub fn from_observer(observer: &WatchLog) -> Timeline {
        let mut revisions: BTreeMap<i64, Vec<Event>> = BTreeMap::new();
        let mut seen_at: BTreeMap<i64, u64> = BTreeMap::new();
        for segment in &observer.segments {
            for r in &segment.responses {
                for e in &r.events {
                    let at = seen_at.entry(e.mod_revision).or_insert(r.at);
                    *at = (*at).min(r.at);
                    let list = revisions.entry(e.mod_revision).or_default();
                    if !list.iter().any(|x| x.key == e.key) {
                        list.push(e.clone());
                    }
                }
            }
        }
        Timeline { revisions, seen_at }
    }

    /// The last revision with events (1 for an empty store).
    pub fn last(&self) -> i64 {
        self.revisions.keys().next_back().copied().unwrap_or(1)
    }

    /// The live key-values after every revision up to `revision`.
    pub fn state_at(&self, revision: i64) -> BTreeMap<String, Kv> {
        let mut state = BTreeMap::new();
        for (_, events) in self.revisions.range(..=revision) {
            apply_events(&mut state, events);
        }
        state
    }
}

/// Applies one revision's events to a key → value map.
pub fn apply_events(state: &mut BTreeMap<String, Kv>, events: &[Event]) {
    for e in events {
        if e.put {
            state.insert(
                e.key.clone(),
                Kv {
                    key: e.key.clone(),
                    value: e.value.clone(),
                    mod_revision: e.mod_revision,
                },
            );
        } else {
            state.remove(&e.key);
        }
    }
}
