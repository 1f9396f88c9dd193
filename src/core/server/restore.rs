//! `kvd backup restore`: a new member's data dir from an etcd snapshot file
//! (made by kvd or by etcd 3.4/3.5), as etcdutl's `snapshot restore` does.
//! Every member of the new cluster is restored from the same file with its
//! own `--name` and the same `--initial-cluster`, then started with
//! `kvd serve` and those flags.
//!
//! The data dir gets the file's keys with their kept history, revisions,
//! compact revision and leases (`core::snapshot::import`), and the identity
//! and first log entries `kvd serve` would give a member bootstrapping that
//! cluster (`bootstrap::new_cluster`), in `<data-dir>.restoring`, renamed
//! into place once complete: a file that fails its checksum or does not
//! parse, or a restore that is interrupted, leaves no data dir behind.

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
    // Built beside the data dir and renamed into place when complete, so
    // that an interrupted restore never leaves a data dir `kvd serve`
    // would take for a whole one.
    let staging = staging_dir(&plan.data_dir);
    let staged = staging.display().to_string();
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io_error(&staged, e))?;
    }
    let result = (|| {
        let s = Storage::open(&staging).map_err(|e| storage_error(&staged, e))?;
        let imported = snapshot::import(&file.reader, &s, progress).map_err(|e| match e {
            SnapshotError::Storage(reason) => RestoreError::Storage {
                path: staged.clone(),
                reason,
            },
            other => file_error(other),
        })?;
        datadir::record(&s, &id, &records).map_err(|e| storage_error(&staged, e))?;
        let source = crate::core::raft::snapshot::SnapshotSource::new(s.clone());
        crate::core::raft::log::RaftLog::bootstrap(s.clone(), source, entries).map_err(|e| {
            RestoreError::Storage {
                path: staged.clone(),
                reason: format!("{e:#}"),
            }
        })?;
        s.sync().map_err(|e| storage_error(&staged, e))?;
        drop(s);
        if plan.data_dir.exists() {
            std::fs::remove_dir(&plan.data_dir).map_err(|e| io_error(&dir, e))?;
        }
        std::fs::rename(&staging, &plan.data_dir).map_err(|e| io_error(&dir, e))?;
        sync_parent(&plan.data_dir).map_err(|e| io_error(&dir, e))?;
        Ok(imported)
    })();
    match result {
        Ok(imported) => Ok(Restored {
            imported,
            member_id: id.member_id,
            cluster_id: id.cluster_id,
        }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// `<data-dir>.restoring`, where a restore builds the data dir.
fn staging_dir(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.as_os_str().to_os_string();
    name.push(".restoring");
    PathBuf::from(name)
}

/// Fsyncs the directory holding `path`, so that a rename into it lasts.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::File::open(parent)?.sync_all()
}

fn io_error(path: &str, e: std::io::Error) -> RestoreError {
    RestoreError::Storage {
        path: path.to_string(),
        reason: e.to_string(),
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
