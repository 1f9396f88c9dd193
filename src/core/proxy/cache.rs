//! The proxy's cache of serializable reads, correct by construction:
//! - it serves only while a watch over the whole keyspace is live, and
//!   every event that watch delivers drops the entries whose range holds
//!   the event's key (etcd's grpc-proxy drops entries only for writes
//!   through the same proxy, etcd #14665, #10909);
//! - a response enters only if its revision is at least the revision the
//!   watch has reached, so no event between the read and the insert can be
//!   missed;
//! - entries are keyed by the caller's token as well as the request, so
//!   one user's read is never served to another (etcd #22065);
//! - it holds at most `max_entries` (oldest first out), each for at most
//!   `max_age`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::proto::{PbEvent, PbRangeRequest, PbRangeResponse};
use prost::Message as _;

use crate::core::proxy::metrics::PROXY_METRICS;
use crate::core::proxy::upstream::Caller;

/// etcd's grpc-proxy cache size (`DefaultMaxEntries`).
pub const DEFAULT_MAX_ENTRIES: usize = 2048;
/// Longest an entry is served, whatever the watch says.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5);

type EntryKey = (Caller, Vec<u8>);

struct Entry {
    /// The member-side range `[key, range_end)` the response covers.
    key: Vec<u8>,
    range_end: Vec<u8>,
    response: PbRangeResponse,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    /// The invalidating watch is live.
    live: bool,
    /// Every event at or below this revision has been applied.
    watch_revision: i64,
    /// The newest write made through this proxy: nothing is served until
    /// the watch has reached it (read-your-writes).
    written: i64,
    entries: HashMap<EntryKey, Entry>,
    order: VecDeque<EntryKey>,
}

/// Cached serializable range responses (see the module docs).
pub struct ReadCache {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_age: Duration,
}

/// Whether `key` lies in `[start, end)` with etcd's meaning of `end`.
fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

impl ReadCache {
    /// An empty cache, not serving until [`Self::live`].
    pub fn new(max_entries: usize, max_age: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_entries,
            max_age,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether a (member-side) request may be cached: serializable reads
    /// of the current revision.
    pub fn cacheable(r: &PbRangeRequest) -> bool {
        r.serializable && r.revision == 0
    }

    /// The cached answer to `r` for `caller`, counting a hit or a miss.
    pub fn get(&self, caller: &Caller, r: &PbRangeRequest) -> Option<PbRangeResponse> {
        let key = (caller.clone(), r.encode_to_vec());
        let mut inner = self.lock();
        let hit = if !inner.live || inner.watch_revision < inner.written {
            None
        } else {
            match inner.entries.get(&key) {
                Some(e) if e.at.elapsed() <= self.max_age => Some(e.response.clone()),
                Some(_) => {
                    inner.entries.remove(&key);
                    None
                }
                None => None,
            }
        };
        if hit.is_some() {
            PROXY_METRICS.cache_hits.inc();
        } else {
            PROXY_METRICS.cache_misses.inc();
        }
        PROXY_METRICS.cache_keys.set(inner.entries.len() as i64);
        hit
    }

    /// Keeps `response` to `r` unless the watch has moved past its
    /// revision (an event in between could then be missing).
    pub fn put(&self, caller: &Caller, r: &PbRangeRequest, response: &PbRangeResponse) {
        let revision = response.header.as_ref().map_or(0, |h| h.revision);
        let mut inner = self.lock();
        if !inner.live
            || revision < inner.watch_revision
            || revision < inner.written
            || self.max_entries == 0
        {
            return;
        }
        let key = (caller.clone(), r.encode_to_vec());
        while inner.entries.len() >= self.max_entries {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.entries.remove(&oldest);
        }
        if inner.entries.len() >= self.max_entries {
            // Order and map disagree (entries dropped by invalidation
            // leave their order slots behind): start afresh.
            inner.entries.clear();
            inner.order.clear();
        }
        inner.order.push_back(key.clone());
        inner.entries.insert(
            key,
            Entry {
                key: r.key.clone(),
                range_end: r.range_end.clone(),
                response: response.clone(),
                at: Instant::now(),
            },
        );
        if inner.order.len() > 2 * self.max_entries {
            let Inner { entries, order, .. } = &mut *inner;
            order.retain(|k| entries.contains_key(k));
        }
        PROXY_METRICS.cache_keys.set(inner.entries.len() as i64);
    }

    /// A write through this proxy succeeded at `revision`: its writer's
    /// next reads must see it, so the cache waits for the watch to get
    /// there (etcd's grpc-proxy drops entries on local writes).
    pub fn wrote(&self, revision: i64) {
        let mut inner = self.lock();
        inner.written = inner.written.max(revision);
    }

    /// The invalidating watch was created at `revision`: serve from now on.
    pub fn live(&self, revision: i64) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.order.clear();
        inner.live = true;
        inner.watch_revision = revision;
    }

    /// The invalidating watch is gone: serve nothing, forget everything.
    pub fn down(&self) {
        let mut inner = self.lock();
        inner.live = false;
        inner.entries.clear();
        inner.order.clear();
        PROXY_METRICS.cache_keys.set(0);
    }

    /// Applies the watch's `events` (member-side keys), then notes that
    /// everything up to `revision` has been seen.
    pub fn invalidate(&self, events: &[PbEvent], revision: i64) {
        let mut inner = self.lock();
        if !events.is_empty() && !inner.entries.is_empty() {
            inner.entries.retain(|_, e| {
                !events.iter().any(|ev| {
                    ev.kv
                        .as_ref()
                        .is_some_and(|kv| in_range(&kv.key, &e.key, &e.range_end))
                })
            });
            PROXY_METRICS.cache_keys.set(inner.entries.len() as i64);
        }
        inner.watch_revision = inner.watch_revision.max(revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{PbKeyValue, PbResponseHeader};

    fn request(key: &[u8], end: &[u8]) -> PbRangeRequest {
        PbRangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            serializable: true,
            ..Default::default()
        }
    }

    fn response(revision: i64) -> PbRangeResponse {
        PbRangeResponse {
            header: Some(PbResponseHeader {
                revision,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn put_event(key: &[u8], revision: i64) -> PbEvent {
        PbEvent {
            kv: Some(PbKeyValue {
                key: key.to_vec(),
                mod_revision: revision,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn entries_live_until_an_event_touches_their_range() {
        let cache = ReadCache::new(16, Duration::from_secs(60));
        let (alice, bob) = (Some("a".to_string()), Some("b".to_string()));
        let r = request(b"k/", b"k0");
        // Not live: nothing is kept.
        cache.put(&alice, &r, &response(5));
        assert!(cache.get(&alice, &r).is_none());
        cache.live(5);
        cache.put(&alice, &r, &response(5));
        assert!(cache.get(&alice, &r).is_some());
        // Another caller never gets it.
        assert!(cache.get(&bob, &r).is_none());
        // An event outside the range keeps it; one inside drops it.
        cache.invalidate(&[put_event(b"other", 6)], 6);
        assert!(cache.get(&alice, &r).is_some());
        cache.invalidate(&[put_event(b"k/x", 7)], 7);
        assert!(cache.get(&alice, &r).is_none());
        // A response older than what the watch has seen is not kept.
        cache.put(&alice, &r, &response(6));
        assert!(cache.get(&alice, &r).is_none());
        // Read-your-writes: after a write at 9, nothing is served until the
        // watch reaches 9.
        cache.put(&alice, &r, &response(8));
        assert!(cache.get(&alice, &r).is_some());
        cache.wrote(9);
        assert!(cache.get(&alice, &r).is_none());
        cache.invalidate(&[], 9);
        assert!(cache.get(&alice, &r).is_some());
        cache.down();
        cache.put(&alice, &r, &response(9));
        assert!(cache.get(&alice, &r).is_none());
    }

    #[test]
    fn size_and_age_are_bounded() {
        let cache = ReadCache::new(2, Duration::from_millis(50));
        cache.live(1);
        for k in [b"a", b"b", b"c"] {
            cache.put(&None, &request(k, b""), &response(1));
        }
        assert!(cache.get(&None, &request(b"a", b"")).is_none());
        assert!(cache.get(&None, &request(b"c", b"")).is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&None, &request(b"c", b"")).is_none());
    }
}
