//! `kvd backup restore`: a new member's data dir from an etcd snapshot file
//! (made by kvd or by etcd 3.4/3.5), as etcdutl's `snapshot restore` does.
//! Every member of the new cluster is restored from the same file with its
//! own `--name` and the same `--initial-cluster`, then started with
//! `kvd serve` and those flags.
//!
//! The data dir gets the file's keys with their kept history, revisions,
//! compact revision and leases (`core::snapshot::import`), and the identity
//! and first log entries `kvd serve` would give a member bootstrapping that
//! cluster (`bootstrap::new_cluster`). A file that fails its checksum or
//! does not parse leaves no data dir behind.

use std::path::{Path, PathBuf};

use crate::core::server::bootstrap;
use crate::core::snapshot::{self, Imported, SnapshotError, SnapshotFile};
use crate::core::storage::datadir;
use crate::core::storage::Storage;

/// The offline copy of a stopped member's data dir (`kvd backup
/// --data-dir`), for the modes, which never reach into storage themselves.
pub use crate::core::storage::datadir::{copy_offline, CopyError};
use crate::core::urls::InitialMember;

/// What to restore, where, as which member.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// The snapshot file.
    pub snapshot: PathBuf,
    /// The new data dir (must not exist, or be empty).
    pub data_dir: PathBuf,
    /// This member's `--name`.
    pub name: String,
    /// The new cluster's members (`--initial-cluster`).
    pub initial_cluster: Vec<InitialMember>,
    /// `--initial-cluster-token`.
    pub token: String,
    /// Accept a file without the trailing sha256 (a member's copied database).
    pub skip_hash_check: bool,
}

/// What a restore made.
#[derive(Debug, Clone)]
pub struct Restored {
    /// What came from the file.
    pub imported: Imported,
    /// The new member's id.
    pub member_id: u64,
    /// The new cluster's id.
    pub cluster_id: u64,
}

/// Why a restore did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The data dir holds something already.
    #[error("data dir {0} is not empty; restore into a new directory")]
    NotEmpty(String),
    /// `--name` is not a member of `--initial-cluster`.
    #[error("{0}")]
    Config(String),
    /// The file is unreadable, damaged or not a snapshot.
    #[error("snapshot file {path}: {source}")]
    Snapshot {
        /// The file.
        path: String,
        /// What is wrong with it.
        source: SnapshotError,
    },
    /// Writing the data dir failed.
    #[error("data dir {path}: {reason}")]
    Storage {
        /// The data dir.
        path: String,
        /// What failed.
        reason: String,
    },
}

/// Restores `plan`; `progress` is told the history changes written so far.
///
/// # Errors
/// [`RestoreError`]: nothing is left in the data dir on any of them.
pub fn restore(
    plan: &RestorePlan,
    progress: &mut dyn FnMut(u64),
) -> Result<Restored, RestoreError> {
    let dir = plan.data_dir.display().to_string();
    if !is_empty_dir(&plan.data_dir) {
        return Err(RestoreError::NotEmpty(dir));
    }
    let (id, records, entries) =
        bootstrap::new_cluster(&plan.name, &plan.initial_cluster, &plan.token)
            .map_err(|e| RestoreError::Config(e.to_string()))?;
    let file_error = |source| RestoreError::Snapshot {
        path: plan.snapshot.display().to_string(),
        source,
    };
    let file = SnapshotFile::open(&plan.snapshot, plan.skip_hash_check).map_err(file_error)?;
    let created = !plan.data_dir.exists();
    let result = (|| {
        let s = Storage::open(&plan.data_dir).map_err(|e| storage_error(&dir, e))?;
        let imported = snapshot::import(&file.reader, &s, progress).map_err(|e| match e {
            SnapshotError::Storage(reason) => RestoreError::Storage {
                path: dir.clone(),
                reason,
            },
            other => file_error(other),
        })?;
        datadir::record(&s, &id, &records).map_err(|e| storage_error(&dir, e))?;
        let source = crate::core::raft::snapshot::SnapshotSource::new(s.clone());
        crate::core::raft::log::RaftLog::bootstrap(s.clone(), source, entries).map_err(|e| {
            RestoreError::Storage {
                path: dir.clone(),
                reason: format!("{e:#}"),
            }
        })?;
        s.sync().map_err(|e| storage_error(&dir, e))?;
        Ok(imported)
    })();
    match result {
        Ok(imported) => Ok(Restored {
            imported,
            member_id: id.member_id,
            cluster_id: id.cluster_id,
        }),
        Err(e) => {
            remove_contents(&plan.data_dir, created);
            Err(e)
        }
    }
}

fn storage_error(dir: &str, e: fjall::Error) -> RestoreError {
    RestoreError::Storage {
        path: dir.to_string(),
        reason: e.to_string(),
    }
}

/// Whether `dir` does not exist or has no entries.
fn is_empty_dir(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Removes what a failed restore wrote (the directory too when it made it).
fn remove_contents(dir: &Path, created: bool) {
    if created {
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}
