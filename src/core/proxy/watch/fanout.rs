//! What a hub does with its upstream stream's responses: `created`
//! (the broadcast goes live and its waiting local watchers are answered),
//! `canceled` (its local watchers are told, with etcd's reason and
//! compact revision), progress (per watch, or for the whole stream in
//! answer to a progress request), and events, fanned out to the local
//! watchers whose range, start revision and filters they match.

use etcd_client::proto::{PbEvent, PbWatchResponse};
use tonic::Status;

use super::broadcast::{LocalKey, State};
use super::hub::Hub;
use crate::core::proxy::metrics::PROXY_METRICS;

impl Hub {
    pub(super) fn on_upstream(&mut self, response: Option<Result<PbWatchResponse, Status>>) {
        let r = match response {
            Some(Ok(r)) => r,
            Some(Err(status)) => return self.link_lost(status.message(), true),
            None => return self.link_lost("stream ended", true),
        };
        if r.header.is_some() {
            self.last_header.clone_from(&r.header);
        }
        if r.created {
            self.on_created(&r);
            if !r.canceled {
                return;
            }
        }
        if r.canceled {
            return self.on_canceled(&r);
        }
        if r.watch_id == -1 {
            return self.on_progress_all(&r);
        }
        let Some(&id) = self.by_watch_id.get(&r.watch_id) else {
            return; // a watch being cancelled
        };
        if r.events.is_empty() {
            return self.on_progress(id, &r);
        }
        self.on_events(id, &r);
    }

    fn on_created(&mut self, r: &PbWatchResponse) {
        let Some(id) = self.creating.pop_front() else {
            return;
        };
        let Some(b) = self.broadcasts.get_mut(&id) else {
            // Every watcher left while it was being created.
            if !r.canceled {
                self.send_cancel(r.watch_id);
            }
            return;
        };
        if r.canceled {
            // Refused at creation (permission, compaction): on_canceled
            // finds it by its id.
            self.by_watch_id.insert(r.watch_id, id);
            b.state = State::Live(r.watch_id);
            return;
        }
        let current = r.header.as_ref().map_or(0, |h| h.revision);
        b.state = State::Live(r.watch_id);
        b.revision = if b.start_revision > 0 {
            b.start_revision - 1
        } else {
            current
        };
        self.by_watch_id.insert(r.watch_id, id);
        if b.watchers.is_empty() && !b.pinned {
            self.broadcasts.remove(&id);
            self.by_watch_id.remove(&r.watch_id);
            return self.send_cancel(r.watch_id);
        }
        if b.pinned {
            if let Some(cache) = &self.cache {
                cache.live(b.revision);
            }
        }
        let waiting: Vec<LocalKey> = b
            .watchers
            .iter()
            .filter(|k| self.locals.get(k).is_some_and(|l| !l.created))
            .copied()
            .collect();
        for k in waiting {
            self.start_local(k, r.header, Vec::new());
        }
    }

    fn on_canceled(&mut self, r: &PbWatchResponse) {
        let Some(id) = self.by_watch_id.remove(&r.watch_id) else {
            return;
        };
        let Some(b) = self.broadcasts.remove(&id) else {
            return;
        };
        if b.pinned && r.compact_revision > 0 {
            // The cache's watch resumed past the compaction (a long
            // disconnection): start it afresh, the cache is empty anyway.
            if let Some(cache) = &self.cache {
                cache.down();
            }
            let pinned = self.open(b"\0".to_vec(), vec![0], 0, true);
            self.send_create(pinned);
        } else if b.pinned {
            tracing::warn!(
                "proxy: the read cache's watch was refused ({}); serving reads without the cache",
                r.cancel_reason
            );
            if let Some(cache) = &self.cache {
                cache.down();
            }
            self.cache = None;
        }
        for key in b.watchers {
            let Some(local) = self.locals.remove(&key) else {
                continue;
            };
            // One never announced gets its `created` with the refusal
            // (clients wait for `created` first).
            let response = PbWatchResponse {
                header: r.header,
                watch_id: key.1,
                created: !local.created,
                canceled: true,
                compact_revision: r.compact_revision,
                cancel_reason: r.cancel_reason.clone(),
                ..Default::default()
            };
            let _ = self.deliver(key.0, response);
        }
    }

    fn on_progress(&mut self, id: u64, r: &PbWatchResponse) {
        let revision = r.header.as_ref().map_or(0, |h| h.revision);
        let Some(b) = self.broadcasts.get_mut(&id) else {
            return;
        };
        b.progress(revision);
        if b.pinned {
            if let Some(cache) = &self.cache {
                cache.invalidate(&[], revision);
            }
        }
        let notify: Vec<LocalKey> = b
            .watchers
            .iter()
            .filter(|k| {
                self.locals
                    .get(k)
                    .is_some_and(|l| l.created && l.watch.progress_notify)
            })
            .copied()
            .collect();
        for k in notify {
            let response = PbWatchResponse {
                header: r.header,
                watch_id: k.1,
                ..Default::default()
            };
            let _ = self.deliver(k.0, response);
        }
    }

    fn on_progress_all(&mut self, r: &PbWatchResponse) {
        let revision = r.header.as_ref().map_or(0, |h| h.revision);
        for b in self.broadcasts.values_mut() {
            if matches!(b.state, State::Live(_)) {
                b.progress(revision);
            }
        }
        if let Some(cache) = &self.cache {
            cache.invalidate(&[], revision);
        }
        self.progress_sent = None;
        for stream in std::mem::take(&mut self.progress_waiters) {
            let response = PbWatchResponse {
                header: r.header,
                watch_id: -1,
                ..Default::default()
            };
            let _ = self.deliver(stream, response);
        }
    }

    fn on_events(&mut self, id: u64, r: &PbWatchResponse) {
        let Some(b) = self.broadcasts.get_mut(&id) else {
            return;
        };
        // Only events past what was delivered (a reopened watch may
        // overlap at its first revision).
        let floor = b.revision;
        let events: Vec<PbEvent> = r
            .events
            .iter()
            .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision > floor))
            .cloned()
            .collect();
        if events.is_empty() {
            return;
        }
        b.record(&events);
        let revision = b.revision;
        if b.pinned {
            if let Some(cache) = &self.cache {
                cache.invalidate(&events, revision);
            }
        }
        let watchers: Vec<LocalKey> = b.watchers.iter().copied().collect();
        let mut sent = 0u64;
        for k in watchers {
            let Some(local) = self.locals.get(&k) else {
                continue;
            };
            if !local.created {
                continue;
            }
            let mine = local.select(&events);
            if mine.is_empty() {
                continue;
            }
            sent += 1;
            let _ = self.send_events(k, r.header, mine);
        }
        if sent > 1 {
            PROXY_METRICS.events_coalescing.inc_by(sent - 1);
        }
    }
}
