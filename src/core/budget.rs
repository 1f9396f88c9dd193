//! A byte budget shared by the producers of one queue: each item takes its
//! bytes as a [`Held`] that gives them back when the item is dropped
//! (handled, or its queue gone), so what the queue pins is bounded without
//! the consumer having to account for anything.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Bytes held by the items of one queue. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct ByteBudget(Arc<AtomicUsize>);

/// Bytes taken from a [`ByteBudget`]; given back on drop.
#[derive(Debug)]
pub struct Held {
    budget: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl ByteBudget {
    /// Takes `bytes` unless the budget holds something already and would
    /// then pass `limit` bytes: a queue holding nothing always takes one
    /// item, however large, so that no item is refused forever.
    pub fn try_take(&self, bytes: usize, limit: usize) -> Option<Held> {
        let before = self.0.fetch_add(bytes, Ordering::Relaxed);
        let held = Held {
            budget: self.0.clone(),
            bytes,
        };
        (before == 0 || before.saturating_add(bytes) <= limit).then_some(held)
    }
}
