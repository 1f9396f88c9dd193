//! Local streams that read slower than events come. When a stream's queue
//! is full, its watchers leave their broadcasts (nothing more is queued
//! for it, so memory stays bounded and no other watcher waits); once the
//! client has read half the queue, each watcher joins a broadcast again
//! from the first revision it has not received — from a broadcast's
//! buffer, or a catch-up upstream watch — so it still gets every event,
//! in order, once (a member does the same with its unsynced watchers).

use super::broadcast::{LocalKey, State, DETACHED};
use super::hub::Hub;

impl Hub {
    /// Takes every watcher of `stream` off its broadcast.
    pub(super) fn stall(&mut self, stream: u64) {
        self.stalled.insert(stream);
        for key in self.keys_of(stream) {
            let Some(local) = self.locals.get_mut(&key) else {
                continue;
            };
            let id = std::mem::replace(&mut local.broadcast, DETACHED);
            self.leave(key, id);
        }
        tracing::debug!(
            stream,
            "proxy: a local watch stream fell behind; catching it up later"
        );
    }

    /// Puts the watchers of stalled streams that have room again back on
    /// broadcasts, from where each left off.
    pub(super) fn resume_stalled(&mut self) {
        let ready: Vec<u64> = self
            .stalled
            .iter()
            .filter(|s| self.streams.get(s).is_some_and(|tx| tx.has_room()))
            .copied()
            .collect();
        for stream in ready {
            self.stalled.remove(&stream);
            for key in self.keys_of(stream) {
                if self.stalled.contains(&stream) {
                    break; // filled up again while catching up
                }
                self.resume(key);
            }
        }
    }

    fn keys_of(&self, stream: u64) -> Vec<LocalKey> {
        let mut keys: Vec<LocalKey> = self
            .locals
            .keys()
            .filter(|k| k.0 == stream)
            .copied()
            .collect();
        keys.sort_unstable();
        keys
    }

    fn resume(&mut self, key: LocalKey) {
        let Some(local) = self.locals.get(&key) else {
            return;
        };
        let mut watch = local.watch.clone();
        let created = local.created;
        if created {
            watch.start_revision = local.min_revision;
        }
        let id = self.attach(key, &watch);
        if let Some(local) = self.locals.get_mut(&key) {
            local.broadcast = id;
        }
        let Some(b) = self.broadcasts.get(&id) else {
            return;
        };
        if !matches!(b.state, State::Live(_)) {
            return; // its events (or `created`) come once the broadcast is
        }
        let start = watch.start_revision;
        let replay = if start > 0 && start <= b.revision {
            b.replay(start)
        } else {
            Vec::new()
        };
        let header = self.now_header();
        if !created {
            return self.start_local(key, header, replay);
        }
        let Some(local) = self.locals.get(&key) else {
            return;
        };
        let events = local.select(&replay);
        if !events.is_empty() {
            let _ = self.send_events(key, header, events);
        }
    }
}
