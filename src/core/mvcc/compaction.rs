//! Physical compaction: removing history at or below the compact revision,
//! beside the Raft task, in small transactions, resumed after a crash.

use std::sync::mpsc;

use fjall::Readable;
use tokio::sync::watch;

use crate::core::errors::EtcdError;
use crate::core::mvcc::keys::{split_hist_key, HIST_DELETE, HIST_PUT};
use crate::core::mvcc::read::revisions;
use crate::core::storage::{self, Storage};
use crate::core::types::Revision;

/// Physically removes history at or below `compact_rev`: for each key, every
/// change at or below it except the newest one when that is a put (it is
/// still the key's value at `compact_rev`). Runs beside the Raft task in
/// transactions of at most `chunk` deletions, so writes are never blocked for
/// long; then records `compact_done`.
///
/// # Errors
/// A storage error (the pass resumes at the next start).
pub fn compact_history(s: &Storage, compact_rev: i64, chunk: usize) -> Result<(), EtcdError> {
    let snapshot = s.db.read_tx();
    let mut doomed: Vec<(Vec<u8>, [u8; 16])> = Vec::new();
    let mut current_key: Vec<u8> = Vec::new();
    let mut newest: Option<(Vec<u8>, [u8; 16], u8)> = None;
    let flush_chunk = |doomed: &mut Vec<(Vec<u8>, [u8; 16])>| -> Result<(), EtcdError> {
        let mut tx = s.db.write_tx();
        for (hk, rk) in doomed.drain(..) {
            tx.remove(&s.hist, hk);
            tx.remove(&s.rev, rk);
        }
        tx.commit()?;
        Ok(())
    };
    for item in snapshot.iter(&s.hist) {
        let (k, v) = item.into_inner()?;
        let Some((escaped, rk)) = split_hist_key(&k) else {
            continue;
        };
        if escaped != current_key.as_slice() {
            if let Some((hk, rk, kind)) = newest.take() {
                if kind == HIST_DELETE {
                    doomed.push((hk, rk));
                }
            }
            current_key = escaped.to_vec();
        }
        if storage::be_i64(&rk[..8]) > compact_rev {
            continue;
        }
        let mut rk16 = [0u8; 16];
        rk16.copy_from_slice(rk);
        if let Some((hk, old_rk, _)) = newest.take() {
            doomed.push((hk, old_rk));
        }
        newest = Some((k.to_vec(), rk16, v.first().copied().unwrap_or(HIST_PUT)));
        if doomed.len() >= chunk {
            flush_chunk(&mut doomed)?;
        }
    }
    if let Some((hk, rk, kind)) = newest.take() {
        if kind == HIST_DELETE {
            doomed.push((hk, rk));
        }
    }
    flush_chunk(&mut doomed)?;
    fail::fail_point!("compaction_before_done", |_| {
        crate::core::failpoints::crash()
    });
    let mut tx = s.db.write_tx();
    tx.insert(
        &s.meta,
        storage::META_COMPACT_DONE,
        compact_rev.to_be_bytes(),
    );
    tx.commit()?;
    Ok(())
}

/// The physical-compaction worker: one thread, latest request wins.
pub struct Compactor {
    /// Compact revisions to process.
    tx: mpsc::Sender<i64>,
}

impl Compactor {
    /// Starts the worker thread, resuming a pass that a crash interrupted
    /// (when the compact revision is above `done`).
    ///
    /// # Errors
    /// A storage error reading the revisions, or the thread not starting.
    pub fn start(storage: Storage, done: watch::Sender<Revision>) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel::<i64>();
        // Resume a pass a crash interrupted.
        let snapshot = storage.db.read_tx();
        let revs = revisions(&snapshot, &storage)?;
        drop(snapshot);
        if revs.compacted > done.borrow().0 {
            let _ = tx.send(revs.compacted);
        }
        std::thread::Builder::new()
            .name("compactor".into())
            .spawn(move || {
                while let Ok(mut rev) = rx.recv() {
                    for newer in rx.try_iter() {
                        rev = rev.max(newer);
                    }
                    match compact_history(&storage, rev, 10_000) {
                        Ok(()) => {
                            done.send_replace(Revision(rev));
                        }
                        Err(e) => tracing::error!("compaction at revision {rev}: {e}"),
                    }
                }
            })?;
        Ok(Self { tx })
    }

    /// Asks for history at or below `rev` to be removed (the newest request
    /// wins when several wait).
    pub fn schedule(&self, rev: i64) {
        let _ = self.tx.send(rev);
    }
}
