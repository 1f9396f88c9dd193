//! The dispatcher: one thread that takes each applied revision from the
//! dispatch queue, matches its keys against the watchers, and queues it to
//! the synced watchers' streams (or moves a watcher with a full queue off
//! the live path). `State::dispatch` is also called by the Raft thread for
//! a small batch with nothing queued ahead of it (`Shared::dispatch_here`).
//! See the module docs of `core::watch` for the states.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::proto::PbEvent;

use crate::core::metrics::METRICS;
use crate::core::mvcc::read::prev_at;
use crate::core::mvcc::{self, KeyRange, EVENT_PUT};
use crate::core::raft::RevisionEvents;
use crate::core::storage::Storage;
use crate::core::watch::{
    HubId, SharedEvents, StreamItem, StreamSender, WatchConfig, INLINE_BYTES,
};

/// One applied revision on its way to the dispatcher.
pub(super) struct Published {
    /// Its revision.
    pub(super) revision: i64,
    /// Its events (without `prev_kv`: [`State::dispatch`] reads it for
    /// the watchers that ask).
    pub(super) events: Vec<PbEvent>,
    /// Its size estimate, counted in `queued_bytes`.
    pub(super) bytes: usize,
    /// Indices of the events whose `prev_kv` was already read, ascending.
    pub(super) prev_read: Vec<usize>,
    /// [`State::prev_generation`] when they were chosen (`None`: never).
    pub(super) prev_generation: Option<u64>,
}

/// What the hub and its dispatcher thread share.
pub(super) struct Shared {
    /// Watchers and the dispatched revision.
    pub(super) state: Mutex<State>,
    /// Tuning.
    pub(super) config: WatchConfig,
    /// History for catch-up reads.
    pub(super) storage: Storage,
    /// Estimated bytes of [`Published`] waiting for the dispatcher.
    pub(super) queued_bytes: AtomicUsize,
    /// Highest revision `publish` dropped (0 = none).
    pub(super) dropped_upto: AtomicI64,
}

/// The registry, under [`Shared::state`].
pub(super) struct State {
    /// The last revision dispatched.
    pub(super) current: i64,
    /// Next [`HubId`].
    pub(super) next_id: HubId,
    /// Every watcher.
    pub(super) watchers: HashMap<HubId, Watcher>,
    /// Single-key watchers by key.
    pub(super) by_key: HashMap<Vec<u8>, Vec<HubId>>,
    /// Range watchers (prefix, from-key, ranges): checked one by one.
    pub(super) ranges: Vec<(KeyRange, HubId)>,
    /// Watchers that asked for `prev_kv`.
    pub(super) prev_watchers: usize,
    /// Bumped whenever a watcher may start needing `prev_kv` (registered
    /// with it, or put back on the path to the live one): until it moves,
    /// the events chosen by [`Shared::read_prev`] are still the right ones.
    pub(super) prev_generation: u64,
}

/// One watcher, as the hub sees it.
pub(super) struct Watcher {
    /// Its key range.
    pub(super) range: KeyRange,
    /// Indexed in `by_key` (true) or `ranges` (false).
    pub(super) single: bool,
    /// It asked for `prev_kv`.
    pub(super) prev_kv: bool,
    /// Its stream's channel.
    pub(super) tx: StreamSender,
    /// Items in flight toward the stream (shared with the stream).
    pub(super) queued: Arc<AtomicUsize>,
    /// The lowest revision it may still be sent.
    pub(super) next_rev: i64,
    /// Live path or not.
    pub(super) state: WatcherState,
}

/// See the module documentation.
pub(super) enum WatcherState {
    /// On the live path.
    Synced,
    /// Off it; its stream reads history.
    Unsynced,
    /// Off it, buffering dispatched revisions until [`WatchHub::rejoin`].
    CatchingUp {
        /// Revisions dispatched since the round began (at most
        /// `rejoin_buffer`).
        buffer: Vec<(i64, Arc<SharedEvents>)>,
        /// The buffer overflowed (or revisions were lost): the round cannot
        /// end in a rejoin.
        overflow: bool,
    },
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the registry half
        // updated in a way that matters more than stopping watches would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`Shared::lock`] if the lock is free at once; `None` if it is held.
    pub(super) fn try_lock(&self) -> Option<MutexGuard<'_, State>> {
        match self.state.try_lock() {
            Ok(st) => Some(st),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The dispatcher thread: drains the queue in batches, one lock per
    /// batch; ends when the hub is dropped.
    pub(super) fn dispatch_loop(&self, rx: mpsc::Receiver<Vec<Published>>) {
        const BATCHES: usize = 64;
        loop {
            let first = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(p) => Some(p),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            // Taken off the channel before the lock is.
            let mut batch: Vec<Published> = first
                .into_iter()
                .chain(rx.try_iter().take(BATCHES - 1))
                .flatten()
                .collect();
            self.read_prev(&mut batch);
            let mut st = self.lock();
            for p in batch {
                self.queued_bytes.fetch_sub(p.bytes, Ordering::Relaxed);
                st.dispatch(&self.config, &self.storage, p);
            }
            let dropped = self.dropped_upto.load(Ordering::Relaxed);
            if dropped > st.current {
                let from = st.current + 1;
                st.all_behind(from);
                st.current = dropped;
            }
        }
    }

    /// Dispatches `revisions` on the caller's thread (the Raft thread) when
    /// that is cheap and keeps the order: nothing queued for the
    /// dispatcher, its lock free at once, the batch following the
    /// dispatched revision without a gap, no `prev_kv` to read from disk,
    /// at most [`WatchConfig::inline_sends`] watcher × event pairs to look
    /// at and [`INLINE_BYTES`] of events. With no watcher at all this only
    /// moves the dispatched revision (a put nobody watches costs nothing).
    /// Otherwise gives `revisions` back, untouched, for the dispatcher
    /// thread. This saves the event one thread wake: it goes straight to
    /// the streams' tasks, as the put's answer goes straight to its handler.
    ///
    /// # Errors
    /// `revisions`, when they must go to the dispatcher thread.
    pub(super) fn dispatch_here(
        &self,
        revisions: Vec<RevisionEvents>,
    ) -> Result<(), Vec<RevisionEvents>> {
        if self.queued_bytes.load(Ordering::Relaxed) != 0 {
            return Err(revisions);
        }
        let Some(mut st) = self.try_lock() else {
            return Err(revisions);
        };
        // Under the lock the dispatcher's count is exact: it subtracts a
        // revision's bytes under the lock as it dispatches it.
        if self.queued_bytes.load(Ordering::Relaxed) != 0
            || self.dropped_upto.load(Ordering::Relaxed) > st.current
        {
            return Err(revisions);
        }
        if st.watchers.is_empty() {
            // Nobody to send to: the dispatched revision moves here.
            let current = st.current;
            let fresh: usize = revisions
                .iter()
                .filter(|(r, _)| *r > current)
                .map(|(_, e)| e.len())
                .sum();
            METRICS.watch_events.inc_by(fresh as u64);
            st.current = st.current.max(revisions.last().map_or(0, |(r, _)| *r));
            return Ok(());
        }
        // A gap (after a snapshot) moves every watcher off the live path:
        // the dispatcher's work.
        let follows = revisions
            .iter()
            .zip(st.current..)
            .all(|((r, _), before)| *r == before + 1);
        let events: usize = revisions.iter().map(|(_, e)| e.len()).sum();
        let work = events.saturating_mul(st.watchers.len() + st.ranges.len());
        if !follows || st.prev_watchers > 0 || work > self.config.inline_sends {
            return Err(revisions);
        }
        let sizes: Vec<usize> = revisions
            .iter()
            .map(|(_, e)| mvcc::events_size(e))
            .collect();
        if sizes.iter().sum::<usize>() > INLINE_BYTES {
            return Err(revisions);
        }
        for ((revision, events), bytes) in revisions.into_iter().zip(sizes) {
            let published = Published {
                revision,
                events,
                bytes,
                prev_read: Vec::new(),
                prev_generation: None,
            };
            st.dispatch(&self.config, &self.storage, published);
        }
        Ok(())
    }

    /// Reads the `prev_kv` of the events of `batch` that a watcher asking
    /// for it will be sent (once, shared by all of them). Which events is
    /// decided under the lock, the reads from disk happen outside it, so
    /// that registering a watch never waits on them.
    fn read_prev(&self, batch: &mut [Published]) {
        let (wanted, generation): (Vec<Vec<usize>>, u64) = {
            let st = self.lock();
            if st.prev_watchers == 0 {
                return;
            }
            let wanted = batch.iter().map(|p| st.prev_wanted(&p.events)).collect();
            (wanted, st.prev_generation)
        };
        for (p, which) in batch.iter_mut().zip(wanted) {
            fill_prev(&self.storage, p.revision, &mut p.events, &which);
            p.prev_read = which;
            p.prev_generation = Some(generation);
        }
    }
}

impl State {
    /// The watchers whose range holds `key`: single-key ones by lookup,
    /// range ones one by one.
    fn watchers_of<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = HubId> + 'a {
        let single = self.by_key.get(key).into_iter().flatten().copied();
        let ranges = self
            .ranges
            .iter()
            .filter(move |(range, _)| range.contains(key))
            .map(|(_, id)| *id);
        single.chain(ranges)
    }

    /// Indices of the events that a watcher asking for `prev_kv` (and not
    /// off the live path) will be sent.
    fn prev_wanted(&self, events: &[PbEvent]) -> Vec<usize> {
        if self.prev_watchers == 0 {
            return Vec::new();
        }
        let wants = |id: HubId| {
            self.watchers
                .get(&id)
                .is_some_and(|w| w.prev_kv && !matches!(w.state, WatcherState::Unsynced))
        };
        let wanted = |ev: &PbEvent| {
            ev.kv
                .as_ref()
                .is_some_and(|kv| self.watchers_of(&kv.key).any(wants))
        };
        (0..events.len()).filter(|&i| wanted(&events[i])).collect()
    }

    /// Queues revision `p.revision` to the synced watchers it concerns. The
    /// dispatcher read the `prev_kv`s they need beforehand; one a watcher
    /// registered since then needs is read here.
    pub(super) fn dispatch(&mut self, cfg: &WatchConfig, storage: &Storage, p: Published) {
        let Published {
            revision,
            mut events,
            bytes,
            prev_read,
            prev_generation,
        } = p;
        if revision <= self.current {
            return;
        }
        if revision > self.current + 1 {
            let from = self.current + 1;
            self.all_behind(from);
        }
        self.current = revision;
        METRICS.watch_events.inc_by(events.len() as u64);
        let mut matched: Vec<HubId> = Vec::new();
        for kv in events.iter().filter_map(|ev| ev.kv.as_ref()) {
            matched.extend(self.watchers_of(&kv.key));
        }
        if self.prev_watchers > 0 && prev_generation != Some(self.prev_generation) {
            let mut missing = self.prev_wanted(&events);
            missing.retain(|i| prev_read.binary_search(i).is_err());
            if !missing.is_empty() {
                fill_prev(storage, revision, &mut events, &missing);
            }
        }
        let events = Arc::new(SharedEvents::new(events));
        let held = events.held_bytes(bytes);
        for id in matched {
            let Some(w) = self.watchers.get_mut(&id) else {
                continue;
            };
            match &mut w.state {
                WatcherState::Synced => {
                    if revision < w.next_rev {
                        continue; // already sent (several events matched) or before its start
                    }
                    let charge = if w.queued.load(Ordering::Relaxed) < cfg.watcher_queue {
                        w.tx.charge(revision, held, cfg.stream_queue_bytes)
                    } else {
                        None
                    };
                    let Some(charge) = charge else {
                        w.state = WatcherState::Unsynced;
                        w.next_rev = revision;
                        METRICS.slow_watchers.inc();
                        METRICS.watchers_unsynced.inc();
                        let _ = w.tx.send(StreamItem::Behind {
                            watcher: id,
                            next_rev: revision,
                        });
                        continue;
                    };
                    w.queued.fetch_add(1, Ordering::Relaxed);
                    let _ = w.tx.send(StreamItem::Events {
                        watcher: id,
                        revision,
                        events: events.clone(),
                        charge,
                    });
                    w.next_rev = revision + 1;
                }
                WatcherState::CatchingUp { buffer, overflow } => {
                    if *overflow || buffer.last().is_some_and(|(r, _)| *r == revision) {
                        continue;
                    }
                    if buffer.len() >= cfg.rejoin_buffer {
                        *overflow = true;
                        buffer.clear();
                        buffer.shrink_to_fit();
                    } else {
                        buffer.push((revision, events.clone()));
                    }
                }
                WatcherState::Unsynced => {}
            }
        }
    }

    /// Takes every watcher off the live path because revisions from `from`
    /// on were not dispatched.
    pub(super) fn all_behind(&mut self, from: i64) {
        for (id, w) in self.watchers.iter_mut() {
            match &mut w.state {
                WatcherState::Synced => {
                    w.next_rev = w.next_rev.max(from);
                    w.state = WatcherState::Unsynced;
                    METRICS.slow_watchers.inc();
                    METRICS.watchers_unsynced.inc();
                    let _ = w.tx.send(StreamItem::Behind {
                        watcher: *id,
                        next_rev: w.next_rev,
                    });
                }
                WatcherState::CatchingUp { buffer, overflow } => {
                    *overflow = true;
                    buffer.clear();
                }
                WatcherState::Unsynced => {}
            }
        }
    }
}

/// Sets the `prev_kv` of `events[i]` for each `i` in `which`: the key's
/// value just before `revision`, read from history (as etcd's watch stream
/// reads it at send time). A key created at `revision` has none; a value
/// already compacted away, or a failed read, leaves it unset, as in etcd.
fn fill_prev(storage: &Storage, revision: i64, events: &mut [PbEvent], which: &[usize]) {
    let snapshot = storage.db.read_tx();
    for &i in which {
        let Some(ev) = events.get_mut(i) else {
            continue;
        };
        let Some(kv) = ev.kv.as_ref() else {
            continue;
        };
        if ev.prev_kv.is_some() || (ev.r#type == EVENT_PUT && kv.version == 1) {
            continue;
        }
        match prev_at(&snapshot, storage, &kv.key, revision) {
            Ok(prev) => ev.prev_kv = prev,
            Err(e) => tracing::warn!("prev_kv of a watch event at revision {revision}: {e}"),
        }
    }
}

/// The key of a single-key range (`[k, k\0)`).
pub(super) fn single_key(range: &KeyRange) -> Option<Vec<u8>> {
    let end = range.end.as_ref()?;
    (end.len() == range.start.len() + 1 && end.starts_with(&range.start) && end.last() == Some(&0))
        .then(|| range.start.clone())
}
