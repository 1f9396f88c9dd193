//! A watch stream's channel as the hub holds it: the sender, and the
//! stream's byte budget that bounds what a client that stops reading can
//! pin in memory (see [`super::WatchConfig::stream_queue_bytes`]).

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc as tmpsc;

use super::StreamItem;

/// The sending side of a stream's channel, as the hub keeps it, with the
/// stream's byte budget (shared by all its watchers).
#[derive(Debug, Clone)]
pub struct StreamSender {
    tx: tmpsc::UnboundedSender<StreamItem>,
    budget: Arc<StreamBudget>,
}

/// What a stream's queue holds, bytes, counting each revision once however
/// many of its watchers it is queued for (consecutive items of one
/// revision share its events).
#[derive(Debug, Default)]
struct StreamBudget {
    bytes: AtomicUsize,
    /// The last revision charged.
    last_revision: AtomicI64,
}

/// Bytes charged to a stream's budget by one [`StreamItem::Events`];
/// given back when the item is dropped (handled, or its stream gone).
#[derive(Debug)]
pub struct Charge {
    budget: Arc<StreamBudget>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl StreamSender {
    /// A new stream's channel.
    pub fn channel() -> (Self, tmpsc::UnboundedReceiver<StreamItem>) {
        let (tx, rx) = tmpsc::unbounded_channel();
        let budget = Arc::new(StreamBudget::default());
        (Self { tx, budget }, rx)
    }

    /// Queues `item` to the stream.
    ///
    /// # Errors
    /// The stream is gone (its receiver was dropped).
    pub fn send(&self, item: StreamItem) -> Result<(), tmpsc::error::SendError<StreamItem>> {
        self.tx.send(item)
    }

    /// Charges `bytes` for `revision` unless it is the revision charged
    /// last (already queued for another of the stream's watchers); `None`
    /// when the stream holds more than `limit` bytes already, so that the
    /// watcher leaves the live path and reads history instead. A stream
    /// holding nothing always takes one revision, however large.
    pub(super) fn charge(
        &self,
        revision: i64,
        bytes: usize,
        limit: usize,
    ) -> Option<Option<Charge>> {
        let b = &self.budget;
        if b.last_revision.load(Ordering::Relaxed) == revision {
            return Some(None);
        }
        let held = b.bytes.load(Ordering::Relaxed);
        if held > 0 && held.saturating_add(bytes) > limit {
            return None;
        }
        b.last_revision.store(revision, Ordering::Relaxed);
        b.bytes.fetch_add(bytes, Ordering::Relaxed);
        Some(Some(Charge {
            budget: b.clone(),
            bytes,
        }))
    }
}
