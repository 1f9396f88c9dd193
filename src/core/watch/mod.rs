//! The watch hub: fans applied changes out to watchers without ever making a
//! writer wait, and brings watchers that fell behind back up to date from the
//! history on disk (etcd's `server/mvcc/watchable_store.go`, reworked so that
//! catching up never holds the lock the write path takes).
//!
//! # Shape
//!
//! ```text
//! Raft task ──publish([(rev, events)])─▶ dispatch queue ─▶ dispatcher thread
//!   (bounded, never blocks; drops when       │  matches keys, per watcher:
//!    the queue holds too many bytes)          │  synced → StreamItem::Events
//!                                             ▼  queue full → StreamItem::Behind
//!                                   one unbounded channel per gRPC stream
//!                                             ▼
//!                       stream task (api/watch.rs): filters, prev_kv, sends;
//!                       catches Behind watchers up with read_history(), then
//!                       rejoin()s them to the live path
//! ```
//!
//! A small batch with nothing queued ahead of it skips the queue: the Raft
//! task dispatches it itself, under the dispatcher's lock (`Shared::dispatch_here`).
//!
//! A watcher is in one of three states (etcd's synced / unsynced groups; our
//! "catching up" replaces etcd's victims):
//!
//! - **synced**: every matching revision up to [`WatchHub::current`] has been
//!   queued to its stream. The dispatcher queues each new matching revision as
//!   one [`StreamItem::Events`], unless the watcher already has
//!   [`WatchConfig::watcher_queue`] items in flight: then it becomes unsynced
//!   and its stream gets one [`StreamItem::Behind`] naming the first revision
//!   it missed.
//! - **unsynced**: the dispatcher ignores it; its stream reads the missed
//!   history from the `rev` keyspace in bounded chunks.
//! - **catching up**: the stream is reading history from a snapshot taken
//!   after [`WatchHub::begin_catch_up`]; the dispatcher keeps the revisions it
//!   dispatches meanwhile in a small per-watcher buffer
//!   ([`WatchConfig::rejoin_buffer`]). [`WatchHub::rejoin`] then queues the
//!   buffered revisions newer than what the snapshot held and makes the
//!   watcher synced again, under the same lock the dispatcher takes, so that
//!   no revision is skipped or repeated. A buffer that overflows simply means
//!   another round from disk.
//!
//! # Invariants
//!
//! - Revisions reach the dispatcher in order and without gaps; a gap (the
//!   dispatch queue dropped revisions, or the state machine jumped) makes
//!   every watcher unsynced at the first missing revision, so watchers catch
//!   up from disk instead of missing events.
//! - Per watcher, revisions are queued strictly increasing: `next_rev` is the
//!   lowest revision the watcher may still receive, and every path that queues
//!   revision `r` for it first checks `r >= next_rev`, then sets
//!   `next_rev = r + 1`.
//! - Memory per watcher is bounded: at most `watcher_queue` items in flight,
//!   at most `rejoin_buffer` revisions buffered while catching up, and a
//!   catch-up read holds at most one chunk
//!   ([`WatchConfig::catch_up_revisions`] / [`WatchConfig::catch_up_bytes`]).
//! - The Raft task never waits on the hub: it only `try_lock`s it. Its cost
//!   per batch of applied entries is either a hand-off to the dispatcher
//!   (a size estimate per revision, one atomic add, one channel send: one
//!   dispatcher wake), whatever the number of watchers, or, when nothing is
//!   queued and the lock is free at once, the dispatch itself of a batch
//!   that follows the dispatched revision without a gap, needs no
//!   `prev_kv` read and has at most [`WatchConfig::inline_sends`] pairs of
//!   an event and a watcher (range watchers counted twice) and
//!   [`INLINE_BYTES`] of events; that spares the event the dispatcher's
//!   wake. With no watcher, it is one uncontended `try_lock`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use etcd_client::proto::{PbEvent, PbKeyValue};

use prost::Message as _;

use crate::core::errors::EtcdError;
use crate::core::metrics::METRICS;
use crate::core::mvcc::{self, KeyRange};
use crate::core::raft::{EventSink, RevisionEvents};
use crate::core::storage::Storage;

/// Most bytes of events (`mvcc::events_size`) that [`EventSink::publish`]
/// dispatches on the caller's thread; a larger batch goes to the
/// dispatcher thread.
pub const INLINE_BYTES: usize = 64 * 1024;

mod dispatch;
mod shared;
mod stream;
#[cfg(test)]
mod tests;

use dispatch::{single_key, Published, Shared, State, Watcher, WatcherState};
pub use shared::{event_record, SharedEvents};
pub use stream::StreamSender;

/// Tuning of the hub; [`WatchConfig::default`] holds etcd's values where
/// etcd has one.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// How often a watch created with `progress_notify` gets a progress
    /// notification when it received no events in the interval (etcd's
    /// `--experimental-watch-progress-notify-interval`, default 10 min).
    pub progress_interval: Duration,
    /// Responses one watcher may have queued toward its stream before it is
    /// moved off the live path (etcd's `chanBufLen`, 128, which etcd applies
    /// per stream).
    pub watcher_queue: usize,
    /// Bytes of revisions one stream's queue may hold, all its watchers
    /// together (each revision counted once, with the encodings streams
    /// make of its events: two or three times its size); past it, a watcher with a
    /// new revision leaves the live path and reads history, so a client
    /// that stops reading pins at most this much.
    pub stream_queue_bytes: usize,
    /// Revisions a catching-up watcher keeps while its stream reads history;
    /// more means another round from disk, never a lost event.
    pub rejoin_buffer: usize,
    /// Most revisions read from disk in one catch-up step (etcd's
    /// `watchBatchMaxRevs`, 1000).
    pub catch_up_revisions: usize,
    /// Most bytes of history read from disk in one catch-up step (a single
    /// revision is never split, so one step may exceed it by one revision).
    pub catch_up_bytes: usize,
    /// Most bytes of events waiting for the dispatcher; beyond it `publish`
    /// drops revisions and the watchers concerned catch up from disk.
    pub dispatch_queue_bytes: usize,
    /// Most pairs of an event and a watcher (each event counted against
    /// every watcher, range watchers twice) that [`EventSink::publish`]
    /// dispatches on the caller's thread, the Raft thread; a larger batch
    /// goes to the dispatcher thread, and 0 sends it every batch while a
    /// watcher exists. The default is 512: at most that many channel sends
    /// on the Raft thread per batch.
    pub inline_sends: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            progress_interval: Duration::from_secs(600),
            watcher_queue: 128,
            stream_queue_bytes: 16 * 1024 * 1024,
            rejoin_buffer: 256,
            catch_up_revisions: 1000,
            catch_up_bytes: 1024 * 1024,
            dispatch_queue_bytes: 64 * 1024 * 1024,
            inline_sends: 512,
        }
    }
}

/// The hub's id of a watcher: unique in the process, never reused (unlike
/// the client-visible `watch_id`, which is per stream).
pub type HubId = u64;

/// What the hub sends a stream, in the order the stream must act on it.
#[derive(Debug)]
pub enum StreamItem {
    /// Every event of `revision` (unfiltered, shared by all watchers, with
    /// `prev_kv` on the events some watcher asked it for); at least one of
    /// them is in the watcher's key range.
    /// The stream applies the watcher's range, filters and `prev_kv` flag.
    Events {
        /// The watcher.
        watcher: HubId,
        /// The events' revision.
        revision: i64,
        /// All events of that revision, encoded once for every stream.
        events: Arc<SharedEvents>,
        /// What it counts against the stream's byte budget.
        charge: Option<crate::core::budget::Held>,
    },
    /// The watcher left the live path: its queue was full when `next_rev`
    /// was dispatched. The stream catches it up from `next_rev` on.
    Behind {
        /// The watcher.
        watcher: HubId,
        /// The first revision it has not been sent.
        next_rev: i64,
    },
    /// A progress notification: every event up to `revision` for the
    /// watchers it covers has been queued before this item.
    Progress {
        /// The client's watch id, or -1 for a stream-wide `ProgressRequest`.
        watch_id: i64,
        /// The revision the notification reports.
        revision: i64,
    },
}

/// The result of [`WatchHub::register`].
#[derive(Debug, Clone)]
pub struct Registration {
    /// The hub's id of the new watcher.
    pub id: HubId,
    /// Items queued toward the stream and not yet handled; the stream
    /// decrements it as it sends each [`StreamItem::Events`].
    pub queued: Arc<AtomicUsize>,
    /// The current revision when the watcher was registered (for the
    /// `created` response header).
    pub current: i64,
    /// `Some(start_revision)` when the start revision is in the past: the
    /// watcher starts unsynced and its stream must catch it up from there.
    pub behind: Option<i64>,
}

/// Where a catching-up watcher stands after [`WatchHub::rejoin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejoin {
    /// Back on the live path.
    Synced,
    /// Still behind (the rejoin buffer overflowed): read again from this
    /// revision.
    Behind(i64),
}

/// One watcher's part in a catch-up read.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    /// The watched key range.
    pub range: KeyRange,
    /// The first revision wanted.
    pub from: i64,
    /// Whether each event needs the key's previous value.
    pub prev_kv: bool,
}

/// The result of [`WatchHub::read_history`].
#[derive(Debug, Clone, Default)]
pub struct HistoryChunk {
    /// The current revision of the snapshot read.
    pub current: i64,
    /// Its compact revision: a query with `from` below it cannot be served.
    pub compacted: i64,
    /// The last revision read completely: `current` when the read reached
    /// the end, less when a size limit stopped it.
    pub to: i64,
    /// Per query, the matching events with revisions in `from..=to`, in
    /// revision order (empty for a compacted query).
    pub events: Vec<Vec<PbEvent>>,
}

/// The watch hub: an [`EventSink`] for the Raft task and the registry of
/// every watcher of this member. Cheap to share (`Arc`).
pub struct WatchHub {
    /// State shared with the dispatcher thread.
    shared: Arc<Shared>,
    /// Into the dispatcher; `publish` never blocks on it.
    tx: mpsc::Sender<Vec<Published>>,
    /// Turns true when the member stops: streams end.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl WatchHub {
    /// Creates the hub at the current revision of `storage` and starts its
    /// dispatcher thread (which ends when the hub is dropped).
    ///
    /// # Errors
    /// A storage error reading the revision, or the OS refusing a thread.
    pub fn new(storage: &Storage, config: WatchConfig) -> anyhow::Result<Arc<Self>> {
        let snapshot = storage.db.read_tx();
        let revs = mvcc::revisions(&snapshot, storage)?;
        drop(snapshot);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                current: revs.current,
                next_id: 1,
                watchers: HashMap::new(),
                by_key: HashMap::new(),
                ranges: Vec::new(),
                prev_watchers: 0,
                prev_generation: 0,
            }),
            config,
            storage: storage.clone(),
            queued_bytes: AtomicUsize::new(0),
            dropped_upto: AtomicI64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("watch-dispatch".into())
            .spawn(move || worker.dispatch_loop(rx))?;
        let (stopping, _) = tokio::sync::watch::channel(false);
        Ok(Arc::new(Self {
            shared,
            tx,
            stopping,
        }))
    }

    /// Ends every watch stream (the member is stopping): they answer
    /// `etcdserver: server stopped`, so that clients go to another member.
    pub fn shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Completes once [`WatchHub::shutdown`] has been called.
    pub async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        // Err only if the sender is gone, which `self` rules out.
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The hub's settings.
    pub fn config(&self) -> &WatchConfig {
        &self.shared.config
    }

    /// The last revision dispatched to watchers (the hub's view of the
    /// current revision; it trails the store by the dispatch queue).
    pub fn current(&self) -> i64 {
        self.shared.lock().current
    }

    /// Waits (at most `limit`) until the dispatcher has published every
    /// revision the store had applied when called, so that a watch created
    /// now starts after the store's current revision, as etcd's does (the
    /// dispatcher runs a little behind the apply).
    pub async fn catch_up_with_store(&self, limit: std::time::Duration) {
        let storage = &self.shared.storage;
        let Ok(revs) = mvcc::revisions(&storage.db.read_tx(), storage) else {
            return;
        };
        let deadline = tokio::time::Instant::now() + limit;
        while self.current() < revs.current && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Registers a watcher on `range` for the stream behind `tx`.
    ///
    /// As etcd's `watchableStore.watch`: a `start_revision` of 0 or above
    /// the current revision starts on the live path (from the revision after
    /// the current one, or from `start_revision` if later); a past one
    /// starts unsynced and [`Registration::behind`] tells the stream to
    /// catch up. Checking the start revision against the compact revision
    /// is the catch-up's job, as in etcd. With `prev_kv`, the dispatcher
    /// reads the previous value of each event this watcher is sent.
    pub fn register(
        &self,
        tx: &StreamSender,
        range: KeyRange,
        start_revision: i64,
        prev_kv: bool,
    ) -> Registration {
        let mut st = self.shared.lock();
        let id = st.next_id;
        st.next_id += 1;
        let current = st.current;
        let synced = start_revision <= 0 || start_revision > current;
        let next_rev = if synced {
            (current + 1).max(start_revision)
        } else {
            start_revision
        };
        let queued = Arc::new(AtomicUsize::new(0));
        let single = single_key(&range);
        if prev_kv {
            st.prev_watchers += 1;
            st.prev_generation += 1;
        }
        match &single {
            Some(key) => st.by_key.entry(key.clone()).or_default().push(id),
            None => st.ranges.push((range.clone(), id)),
        }
        st.watchers.insert(
            id,
            Watcher {
                range,
                single: single.is_some(),
                prev_kv,
                tx: tx.clone(),
                queued: queued.clone(),
                next_rev,
                state: if synced {
                    WatcherState::Synced
                } else {
                    WatcherState::Unsynced
                },
            },
        );
        METRICS.watchers.inc();
        if !synced {
            METRICS.slow_watchers.inc();
        }
        Registration {
            id,
            queued,
            current,
            behind: (!synced).then_some(start_revision),
        }
    }

    /// Removes watchers (cancel, or their stream ended). Unknown ids are
    /// ignored.
    pub fn cancel(&self, ids: &[HubId]) {
        let mut st = self.shared.lock();
        for id in ids {
            let Some(w) = st.watchers.remove(id) else {
                continue;
            };
            METRICS.watchers.dec();
            if w.prev_kv {
                st.prev_watchers -= 1;
            }
            if !matches!(w.state, WatcherState::Synced) {
                METRICS.slow_watchers.dec();
            }
            if w.single {
                let key = w.range.start.as_slice();
                if let Some(list) = st.by_key.get_mut(key) {
                    list.retain(|x| x != id);
                    if list.is_empty() {
                        st.by_key.remove(key);
                    }
                }
            } else if let Some(pos) = st.ranges.iter().position(|(_, x)| x == id) {
                st.ranges.swap_remove(pos);
            }
        }
    }

    /// Starts a catch-up round for unsynced watchers: from now on the
    /// dispatcher buffers their revisions. Call it before taking the
    /// snapshot that [`WatchHub::read_history`] reads; `from` is each
    /// watcher's first wanted revision.
    pub fn begin_catch_up(&self, watchers: &[(HubId, i64)]) {
        let mut st = self.shared.lock();
        st.prev_generation += 1;
        for (id, from) in watchers {
            if let Some(w) = st.watchers.get_mut(id) {
                if matches!(w.state, WatcherState::Synced) {
                    continue;
                }
                w.next_rev = *from;
                w.state = WatcherState::CatchingUp {
                    buffer: Vec::new(),
                    overflow: false,
                };
            }
        }
    }

    /// Ends a catch-up round for a watcher whose stream has sent it every
    /// event up to `caught_up_to`, the current revision of a snapshot taken
    /// after [`WatchHub::begin_catch_up`]. Queues the buffered revisions
    /// after `caught_up_to` and puts the watcher back on the live path, or
    /// reports that it must read again (buffer overflow, or no round begun).
    pub fn rejoin(&self, id: HubId, caught_up_to: i64) -> Rejoin {
        let mut st = self.shared.lock();
        let Some(w) = st.watchers.get_mut(&id) else {
            return Rejoin::Behind(caught_up_to + 1);
        };
        let state = std::mem::replace(&mut w.state, WatcherState::Unsynced);
        match state {
            WatcherState::Synced => {
                w.state = WatcherState::Synced;
                Rejoin::Synced
            }
            WatcherState::CatchingUp {
                buffer,
                overflow: false,
            } => {
                let mut next = w.next_rev.max(caught_up_to + 1);
                for (revision, events) in buffer {
                    if revision < next {
                        continue;
                    }
                    w.queued.fetch_add(1, Ordering::Relaxed);
                    // A closed channel means the stream is ending; it
                    // cancels its watchers itself.
                    let _ = w.tx.send(StreamItem::Events {
                        watcher: id,
                        revision,
                        events,
                        charge: None,
                    });
                    next = revision + 1;
                }
                w.next_rev = next;
                w.state = WatcherState::Synced;
                METRICS.slow_watchers.dec();
                Rejoin::Synced
            }
            WatcherState::CatchingUp { overflow: true, .. } | WatcherState::Unsynced => {
                w.next_rev = w.next_rev.max(caught_up_to + 1);
                Rejoin::Behind(w.next_rev)
            }
        }
    }

    /// Asks for a progress notification covering `watchers` (one watcher
    /// for `progress_notify`, all of a stream for a `ProgressRequest`). When
    /// all of them are synced, queues [`StreamItem::Progress`] with the
    /// current revision on `tx` and returns true; otherwise returns false
    /// and queues nothing, as etcd's `progressIfSync`.
    pub fn progress(&self, tx: &StreamSender, watchers: &[HubId], watch_id: i64) -> bool {
        let st = self.shared.lock();
        let all_synced = watchers.iter().all(|id| {
            st.watchers
                .get(id)
                .is_none_or(|w| matches!(w.state, WatcherState::Synced))
        });
        if all_synced {
            let _ = tx.send(StreamItem::Progress {
                watch_id,
                revision: st.current,
            });
        }
        all_synced
    }

    /// Reads the history for a catch-up step from a fresh snapshot: every
    /// revision from the lowest `from` of the queries that are not below the
    /// compact revision, up to the snapshot's current revision or until
    /// [`WatchConfig::catch_up_revisions`] revisions /
    /// [`WatchConfig::catch_up_bytes`] bytes were read (never splitting a
    /// revision; the bytes count each copy of an event handed to a query,
    /// since the step holds them all until sent). Events get `prev_kv` (the
    /// key's value at the revision before) for queries that ask, looked up
    /// through the `hist` index.
    ///
    /// Blocking (storage reads): run it on a blocking thread.
    ///
    /// # Errors
    /// A storage error or a corrupt history record.
    pub fn read_history(&self, queries: &[HistoryQuery]) -> Result<HistoryChunk, EtcdError> {
        let s = &self.shared.storage;
        let cfg = &self.shared.config;
        let snapshot = s.db.read_tx();
        let revs = mvcc::revisions(&snapshot, s)?;
        let mut chunk = HistoryChunk {
            current: revs.current,
            compacted: revs.compacted,
            to: revs.current,
            events: vec![Vec::new(); queries.len()],
        };
        let live: Vec<usize> = (0..queries.len())
            .filter(|&i| queries[i].from >= revs.compacted)
            .collect();
        let Some(from) = live.iter().map(|&i| queries[i].from).min() else {
            return Ok(chunk);
        };
        if from > revs.current {
            return Ok(chunk);
        }
        let mut revisions = 0usize;
        let mut bytes = 0usize;
        let mut last_main = 0i64;
        let mut prev_cache: HashMap<(Vec<u8>, i64), Option<PbKeyValue>> = HashMap::new();
        for item in mvcc::read::history(&snapshot, s, from, revs.current) {
            let (main, event) = item?;
            if main != last_main {
                if revisions >= cfg.catch_up_revisions || bytes >= cfg.catch_up_bytes {
                    chunk.to = last_main;
                    break;
                }
                revisions += 1;
                last_main = main;
            }
            let size = event.encoded_len();
            bytes += size;
            let Some(kv) = event.kv.as_ref() else {
                continue;
            };
            for &i in &live {
                let q = &queries[i];
                if main < q.from || !q.range.contains(&kv.key) {
                    continue;
                }
                // Each copy is memory the step holds until it is sent.
                bytes += size;
                let mut ev = event.clone();
                if q.prev_kv {
                    let cache_key = (kv.key.clone(), main);
                    let prev = match prev_cache.get(&cache_key) {
                        Some(p) => p.clone(),
                        None => {
                            let p = mvcc::read::prev_at(&snapshot, s, &kv.key, main)?;
                            prev_cache.insert(cache_key, p.clone());
                            p
                        }
                    };
                    ev.prev_kv = prev;
                }
                chunk.events[i].push(ev);
            }
        }
        Ok(chunk)
    }
}

impl EventSink for WatchHub {
    /// Dispatches a batch of revisions here when it is small and nothing
    /// is queued (`Shared::dispatch_here`); otherwise hands it to the
    /// dispatcher: size estimates, one atomic add and one channel send (one
    /// wake).
    /// Revisions that would take the queue past
    /// [`WatchConfig::dispatch_queue_bytes`] are dropped, with every one
    /// after them, and recorded; the dispatcher then moves every watcher
    /// off the live path so that they read them from disk.
    fn publish(&self, revisions: Vec<RevisionEvents>) {
        let Some(last) = revisions.last().map(|(r, _)| *r) else {
            return;
        };
        let Err(revisions) = self.shared.dispatch_here(revisions) else {
            return;
        };
        let queued = self.shared.queued_bytes.load(Ordering::Relaxed);
        let limit = self.shared.config.dispatch_queue_bytes;
        let mut total = 0;
        let mut batch = Vec::with_capacity(revisions.len());
        for (revision, events) in revisions {
            let bytes = mvcc::events_size(&events);
            if queued + total + bytes > limit {
                self.shared.dropped_upto.fetch_max(last, Ordering::Relaxed);
                break;
            }
            total += bytes;
            batch.push(Published {
                revision,
                events,
                bytes,
                prev_read: Vec::new(),
                prev_generation: None,
            });
        }
        if batch.is_empty() {
            return;
        }
        self.shared.queued_bytes.fetch_add(total, Ordering::Relaxed);
        if self.tx.send(batch).is_err() {
            self.shared.queued_bytes.fetch_sub(total, Ordering::Relaxed);
        }
    }
}
