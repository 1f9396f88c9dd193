//! Crash points on the write path for the robustness suite (`fail` crate,
//! cargo feature `failpoints`; without it every `fail_point!` compiles to
//! nothing). Each point, set to `return` (or `1*return`, …) through
//! `PUT /debug/failpoints/<name>` on the client port, aborts the process
//! there as `kill -9` would, so a restart must recover from exactly the
//! durable state of that instant:
//!
//! | point | where |
//! |---|---|
//! | `raft_before_fsync` | Ready handled, entries and hard state written, not yet fsynced |
//! | `raft_after_fsync` | fsynced, persisted messages not yet sent |
//! | `apply_before_applied_index` | an entry's changes in its transaction, the applied index not yet in it |
//! | `snapshot_apply_during` | a follower half way through replacing its state with a snapshot |
//! | `compaction_before_done` | history removed, `compact_done` not yet recorded |
//!
//! (raft-rs has failpoints of its own on `fail` 0.4, a separate registry.)

/// Ends the process at once, without unwinding, flushing or syncing: a
/// crash. Only reached when a failpoint is set.
pub fn crash() -> ! {
    tracing::warn!("failpoint: crashing");
    std::process::abort()
}

/// Sets failpoint `name` to `actions` (the `fail` crate's syntax, e.g.
/// `return`, `1*return`, `off`).
///
/// # Errors
/// The `fail` crate's message for an unknown action.
pub fn configure(name: &str, actions: &str) -> Result<(), String> {
    if actions == "off" {
        fail::remove(name);
        return Ok(());
    }
    fail::cfg(name, actions)
}
