//! One watch of a stream as its task keeps it ([`Local`]: id, range,
//! filters, flags, where it stands), and the events gathered for it in a
//! turn ([`Pending`]).

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use bytes::Bytes;
use etcd_client::proto::PbEvent;

use crate::core::mvcc::{KeyRange, EVENT_DELETE, EVENT_PUT};
use crate::core::watch::{event_record, HubId, SharedEvents};

/// One watch of a stream.
pub(super) struct Local {
    /// The client-visible id.
    pub(super) watch_id: i64,
    /// The watched keys.
    pub(super) range: KeyRange,
    /// `filters` has NOPUT.
    pub(super) no_put: bool,
    /// `filters` has NODELETE.
    pub(super) no_delete: bool,
    /// Send `prev_kv` with each event.
    pub(super) prev_kv: bool,
    /// Split large responses.
    pub(super) fragment: bool,
    /// Periodic progress notifications asked.
    pub(super) progress_notify: bool,
    /// No event was sent since the last progress tick (etcd's
    /// `sws.progress[id]`).
    pub(super) progress_due: bool,
    /// Items the hub queued for this watch and not yet handled.
    pub(super) queued: Arc<AtomicUsize>,
    /// `Some(first revision not sent)` while off the live path.
    pub(super) behind: Option<i64>,
}

impl Local {
    /// Whether this watch reports `e` (key range and filters).
    pub(super) fn wants(&self, e: &PbEvent) -> bool {
        let in_range = e.kv.as_ref().is_some_and(|kv| self.range.contains(&kv.key));
        let filtered =
            (self.no_put && e.r#type == EVENT_PUT) || (self.no_delete && e.r#type == EVENT_DELETE);
        in_range && !filtered
    }

    /// The events of a shared revision this watch reports, as the
    /// revision's shared records (`prev_kv` only when asked).
    pub(super) fn select(&self, shared: &SharedEvents) -> Vec<Bytes> {
        (0..shared.events().len())
            .filter(|&i| self.wants(&shared.events()[i]))
            .filter_map(|i| shared.record(i, self.prev_kv))
            .collect()
    }

    /// The events of a catch-up read this watch reports, encoded (they are
    /// its own: nobody shares them).
    pub(super) fn select_owned(&self, events: Vec<PbEvent>) -> Vec<Bytes> {
        events
            .into_iter()
            .filter(|e| self.wants(e))
            .map(|mut e| {
                if !self.prev_kv {
                    e.prev_kv = None;
                }
                event_record(&e)
            })
            .collect()
    }
}

/// Events of one watch gathered from consecutive queued revisions, sent as
/// one response (etcd does the same for unsynced watchers).
pub(super) struct Pending {
    /// The watch.
    pub(super) watcher: HubId,
    /// The newest revision gathered (the response's header revision).
    pub(super) revision: i64,
    /// The events, in revision order, encoded.
    pub(super) events: Vec<Bytes>,
    /// Their encoded size so far.
    pub(super) bytes: usize,
}
