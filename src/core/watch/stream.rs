//! A watch stream's channel as the hub holds it: the sender, and the
//! stream's byte budget that bounds what a client that stops reading can
//! pin in memory (see [`super::WatchConfig::stream_queue_bytes`]).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc as tmpsc;

use super::StreamItem;
use crate::core::budget::{ByteBudget, Held};

/// The sending side of a stream's channel, as the hub keeps it, with the
/// stream's byte budget (shared by all its watchers).
#[derive(Debug, Clone)]
pub struct StreamSender {
    tx: tmpsc::UnboundedSender<StreamItem>,
    /// What the stream's queue holds, bytes, counting each revision once
    /// however many of its watchers it is queued for (consecutive items of
    /// one revision share its events).
    budget: ByteBudget,
    /// The last revision charged.
    last_revision: Arc<AtomicI64>,
}

impl StreamSender {
    /// A new stream's channel.
    pub fn channel() -> (Self, tmpsc::UnboundedReceiver<StreamItem>) {
        let (tx, rx) = tmpsc::unbounded_channel();
        let sender = Self {
            tx,
            budget: ByteBudget::default(),
            last_revision: Arc::default(),
        };
        (sender, rx)
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
    pub(super) fn charge(&self, revision: i64, bytes: usize, limit: usize) -> Option<Option<Held>> {
        if self.last_revision.load(Ordering::Relaxed) == revision {
            return Some(None);
        }
        let held = self.budget.try_take(bytes, limit)?;
        self.last_revision.store(revision, Ordering::Relaxed);
        Some(Some(held))
    }
}
