//! One upstream watch shared by many local watchers (a broadcast), and
//! what each local watcher takes from it: the events in its own key range,
//! from its own start revision, through its filters, with or without
//! `prev_kv`.

use std::collections::{BTreeSet, VecDeque};

use etcd_client::proto::PbEvent;

use crate::core::mvcc::{EVENT_DELETE, EVENT_PUT};

/// A local watcher: (local stream, watch id on that stream).
pub type LocalKey = (u64, i64);

/// The `broadcast` of a local watcher whose stream stalled.
pub const DETACHED: u64 = u64::MAX;

/// Events a broadcast keeps so that a watcher starting a little in the
/// past is served from memory instead of a new upstream watch.
pub const BUFFERED_EVENTS: usize = 4096;

/// A key range with an open end: `[start, end)`, `end = None` for "to the
/// end of the keyspace" (etcd's `range_end` `\0`); one key is
/// `[key, key\0)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// First key.
    pub start: Vec<u8>,
    /// First key after the range, `None` when unbounded.
    pub end: Option<Vec<u8>>,
}

impl Span {
    /// The span of a watch's `key` and `range_end` (member-side keys).
    pub fn new(key: &[u8], range_end: &[u8]) -> Self {
        let end = match range_end {
            [] => {
                let mut e = key.to_vec();
                e.push(0);
                Some(e)
            }
            [0] => None,
            e => Some(e.to_vec()),
        };
        Self {
            start: key.to_vec(),
            end,
        }
    }

    /// Whether `key` is inside.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }

    /// Whether `other` lies wholly inside this span.
    pub fn covers(&self, other: &Span) -> bool {
        other.start >= self.start
            && match (&self.end, &other.end) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(mine), Some(theirs)) => theirs <= mine,
            }
    }
}

/// A local watcher's request, in member-side keys.
#[derive(Debug, Clone)]
pub struct LocalWatch {
    /// The key range as sent upstream (`key`, `range_end`).
    pub key: Vec<u8>,
    /// See `key`.
    pub range_end: Vec<u8>,
    /// The same as a span.
    pub span: Span,
    /// First revision to deliver (0: from now).
    pub start_revision: i64,
    /// `NOPUT`.
    pub no_put: bool,
    /// `NODELETE`.
    pub no_delete: bool,
    /// Whether events carry `prev_kv`.
    pub prev_kv: bool,
    /// Whether per-watch progress notifications are wanted.
    pub progress_notify: bool,
}

/// A local watcher attached to a broadcast.
#[derive(Debug)]
pub struct Local {
    /// What it asked for.
    pub watch: LocalWatch,
    /// The broadcast serving it.
    pub broadcast: u64,
    /// Events below this revision are not its own (0 until its broadcast
    /// is created).
    pub min_revision: i64,
    /// Its `created` response was sent.
    pub created: bool,
    /// Told when the `created` response is queued (or the watch is gone),
    /// so that the stream's next create waits: clients match `created`
    /// responses to their creates in order (clientv3).
    pub answered: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Local {
    /// The events of `events` this watcher receives, ready to send.
    pub fn select(&self, events: &[PbEvent]) -> Vec<PbEvent> {
        events
            .iter()
            .filter(|e| {
                let Some(kv) = e.kv.as_ref() else {
                    return false;
                };
                kv.mod_revision >= self.min_revision
                    && self.watch.span.contains(&kv.key)
                    && !(self.watch.no_put && e.r#type == EVENT_PUT)
                    && !(self.watch.no_delete && e.r#type == EVENT_DELETE)
            })
            .map(|e| {
                let mut e = e.clone();
                if !self.watch.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }
}

/// Where a broadcast stands upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A create was sent (or will be, after a reconnect); no answer yet.
    Creating,
    /// Created upstream with this watch id.
    Live(i64),
}

/// One upstream watch and the local watchers it serves.
#[derive(Debug)]
pub struct Broadcast {
    /// The watch's `key` as sent upstream.
    pub key: Vec<u8>,
    /// The watch's `range_end` as sent upstream.
    pub range_end: Vec<u8>,
    /// The same as a span.
    pub span: Span,
    /// The start revision of the next upstream create (0: from now).
    pub start_revision: i64,
    /// Every event up to this revision has been delivered.
    pub revision: i64,
    /// Upstream state.
    pub state: State,
    /// The local watchers it serves.
    pub watchers: BTreeSet<LocalKey>,
    /// The last [`BUFFERED_EVENTS`] events, oldest first.
    pub buffer: VecDeque<PbEvent>,
    /// The buffer holds every event above this revision (and up to
    /// `revision`); `i64::MAX` while nothing is known.
    pub buffer_floor: i64,
    /// The cache's watch over the whole keyspace: kept with no watchers.
    pub pinned: bool,
}

impl Broadcast {
    /// A broadcast to create upstream for `span` from `start_revision`.
    pub fn new(key: Vec<u8>, range_end: Vec<u8>, start_revision: i64, pinned: bool) -> Self {
        Self {
            span: Span::new(&key, &range_end),
            key,
            range_end,
            start_revision,
            revision: 0,
            state: State::Creating,
            watchers: BTreeSet::new(),
            buffer: VecDeque::new(),
            buffer_floor: i64::MAX,
            pinned,
        }
    }

    /// Whether a watcher of `watch` can be served by this broadcast
    /// without a new upstream watch; `now` is the newest revision seen
    /// upstream (a watcher from now starts after it).
    pub fn can_serve(&self, watch: &LocalWatch, now: i64) -> bool {
        if !self.span.covers(&watch.span) {
            return false;
        }
        let start = watch.start_revision;
        match self.state {
            // From now: every event after `now` must still come, so not a
            // broadcast that starts in the future.
            State::Live(_) if start == 0 => self.revision <= now,
            State::Live(_) => start > self.revision || start > self.buffer_floor,
            // From now: the `created` answer says when "now" is.
            State::Creating if start == 0 => {
                self.start_revision == 0 || self.start_revision <= now + 1
            }
            State::Creating => self.start_revision > 0 && start >= self.start_revision,
        }
    }

    /// Records delivered events (all above `self.revision`).
    pub fn record(&mut self, events: &[PbEvent]) {
        let Some(last) = events.last().and_then(|e| e.kv.as_ref()) else {
            return;
        };
        if self.buffer_floor == i64::MAX {
            self.buffer_floor = self.revision;
        }
        self.revision = self.revision.max(last.mod_revision);
        self.buffer.extend(events.iter().cloned());
        while self.buffer.len() > BUFFERED_EVENTS {
            if let Some(old) = self.buffer.pop_front() {
                let rev = old.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                self.buffer_floor = self.buffer_floor.max(rev);
            }
        }
        // A revision split by the trimming is not whole in the buffer.
        let floor = self.buffer_floor;
        while self
            .buffer
            .front()
            .is_some_and(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision <= floor))
        {
            self.buffer.pop_front();
        }
    }

    /// Notes that every event up to `revision` has been delivered (a
    /// progress notification).
    pub fn progress(&mut self, revision: i64) {
        if self.buffer_floor == i64::MAX {
            self.buffer_floor = self.revision.max(revision);
        }
        self.revision = self.revision.max(revision);
    }

    /// The buffered events at or above `start` (for a watcher starting in
    /// the past, see [`Self::can_serve`]).
    pub fn replay(&self, start: i64) -> Vec<PbEvent> {
        self.buffer
            .iter()
            .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= start))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::PbKeyValue;

    fn event(key: &str, rev: i64) -> PbEvent {
        PbEvent {
            kv: Some(PbKeyValue {
                key: key.as_bytes().to_vec(),
                mod_revision: rev,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn watch(key: &str, end: &str, start: i64) -> LocalWatch {
        LocalWatch {
            key: key.into(),
            range_end: end.into(),
            span: Span::new(key.as_bytes(), end.as_bytes()),
            start_revision: start,
            no_put: false,
            no_delete: false,
            prev_kv: false,
            progress_notify: false,
        }
    }

    #[test]
    fn spans_cover_narrower_spans() {
        let all = Span::new(b"\0", b"\0");
        let a = Span::new(b"a/", b"a0");
        let ab = Span::new(b"a/b/", b"a/b0");
        let one = Span::new(b"a/x", b"");
        assert!(all.covers(&a) && a.covers(&ab) && a.covers(&one));
        assert!(!ab.covers(&a) && !a.covers(&all) && !one.covers(&a));
        assert!(one.contains(b"a/x") && !one.contains(b"a/x0"));
    }

    #[test]
    fn a_live_broadcast_serves_from_now_the_future_and_its_buffer() {
        let mut b = Broadcast::new(b"a/".to_vec(), b"a0".to_vec(), 0, false);
        b.state = State::Live(1);
        b.revision = 10;
        assert!(b.can_serve(&watch("a/b/", "a/b0", 0), 10));
        assert!(b.can_serve(&watch("a/b/", "a/b0", 11), 10));
        // Nothing buffered yet: a start in the past needs its own watch.
        assert!(!b.can_serve(&watch("a/b/", "a/b0", 5), 10));
        b.record(&[event("a/1", 11), event("a/2", 12)]);
        assert!(b.can_serve(&watch("a/", "a0", 11), 12));
        assert!(!b.can_serve(&watch("a/", "a0", 10), 12));
        assert_eq!(b.replay(12).len(), 1);
        assert!(!b.can_serve(&watch("b/", "b0", 0), 12));
        // A broadcast that starts in the future cannot serve "from now".
        let mut future = Broadcast::new(b"a/".to_vec(), b"a0".to_vec(), 20, false);
        future.state = State::Live(2);
        future.revision = 19;
        assert!(!future.can_serve(&watch("a/", "a0", 0), 12));
        assert!(future.can_serve(&watch("a/", "a0", 25), 12));
    }

    #[test]
    fn locals_take_their_own_events() {
        let mut w = watch("a/", "a0", 0);
        w.no_delete = true;
        let local = Local {
            watch: w,
            broadcast: 0,
            min_revision: 3,
            created: true,
            answered: None,
        };
        let mut del = event("a/3", 4);
        del.r#type = EVENT_DELETE;
        let got = local.select(&[event("a/1", 2), event("b/1", 3), event("a/2", 3), del]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kv.as_ref().map(|kv| kv.mod_revision), Some(3));
    }
}
