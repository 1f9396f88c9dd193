//! A member's data dir as a whole: whose it is (member, cluster, token, how
//! it was bootstrapped) and the checks that keep one member from starting on
//! another's data. `serve` uses it at start-up; `backup restore` writes a
//! new member's identity with it; `kvd backup --data-dir` copies a stopped
//! member's data dir with [`copy_offline`].

use std::path::Path;

use etcd_client::proto::PbMember;
use prost::Message as _;

use crate::core::storage::{self, Storage};

/// How a data dir's member came to be (the `meta` key `bootstrap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// It bootstrapped a new cluster from `--initial-cluster` (a restart
    /// must then describe the same cluster).
    New,
    /// It joined an existing cluster after `member add`.
    Existing,
}

impl Bootstrap {
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Bootstrap::New => b"new",
            Bootstrap::Existing => b"existing",
        }
    }
}

/// Who a data dir belongs to, fixed when it was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The member id (Raft node id).
    pub member_id: u64,
    /// The cluster id.
    pub cluster_id: u64,
    /// The member's `--name` when it was created.
    pub name: String,
    /// The `--initial-cluster-token` it was created with.
    pub token: String,
    /// How it was created; `None` for data dirs of older kvd versions.
    pub bootstrap: Option<Bootstrap>,
}

/// Why a data dir cannot serve the member asked for; the message names the
/// data dir and the flag that disagrees (`serve` exits with code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("data dir {dir} {reason}")]
pub struct Mismatch {
    /// The data dir as given.
    pub dir: String,
    /// Whose it is instead.
    pub reason: String,
}

/// Reads the identity recorded in `s`.
///
/// # Errors
/// Storage errors.
pub fn identity(s: &Storage) -> fjall::Result<Identity> {
    let bootstrap = match s.meta_string(storage::META_BOOTSTRAP)?.as_deref() {
        Some("new") => Some(Bootstrap::New),
        Some("existing") => Some(Bootstrap::Existing),
        _ => None,
    };
    Ok(Identity {
        member_id: s.meta_u64(storage::META_MEMBER_ID)?,
        cluster_id: s.meta_u64(storage::META_CLUSTER_ID)?,
        name: s
            .meta_string(storage::META_MEMBER_NAME)?
            .unwrap_or_default(),
        token: s
            .meta_string(storage::META_CLUSTER_TOKEN)?
            .unwrap_or_default(),
        bootstrap,
    })
}

/// Checks that a data dir with identity `id` may serve member `name` of the
/// cluster `token`; `configured_cluster` is the cluster id the command line
/// describes when it bootstraps a new cluster (checked only against a data
/// dir that bootstrapped one too).
///
/// # Errors
/// [`Mismatch`] naming the token, the name or the cluster that differs.
pub fn check(
    dir: &Path,
    id: &Identity,
    name: &str,
    token: &str,
    configured_cluster: Option<u64>,
) -> Result<(), Mismatch> {
    let mismatch = |reason: String| Mismatch {
        dir: dir.display().to_string(),
        reason,
    };
    if id.token != token {
        return Err(mismatch(format!(
            "belongs to cluster {:?}, not --initial-cluster-token {token:?}",
            id.token
        )));
    }
    if id.name != name {
        return Err(mismatch(format!(
            "belongs to member {:?}, not --name {name:?}",
            id.name
        )));
    }
    if let (Some(Bootstrap::New), Some(configured)) = (id.bootstrap, configured_cluster) {
        if configured != id.cluster_id {
            return Err(mismatch(format!(
                "belongs to cluster {:x}, but --initial-cluster describes cluster {configured:x}",
                id.cluster_id
            )));
        }
    }
    Ok(())
}

/// Records a new member's identity and the member records it starts with,
/// in one transaction (the caller then creates the Raft log, which syncs).
///
/// # Errors
/// Storage errors.
pub fn record(s: &Storage, id: &Identity, member_records: &[PbMember]) -> fjall::Result<()> {
    let mut tx = s.db.write_tx();
    for m in member_records {
        tx.insert(&s.members, storage::member_key(m.id), m.encode_to_vec());
    }
    tx.insert(&s.meta, storage::META_MEMBER_ID, id.member_id.to_be_bytes());
    tx.insert(
        &s.meta,
        storage::META_CLUSTER_ID,
        id.cluster_id.to_be_bytes(),
    );
    tx.insert(&s.meta, storage::META_MEMBER_NAME, id.name.as_bytes());
    tx.insert(&s.meta, storage::META_CLUSTER_TOKEN, id.token.as_bytes());
    if let Some(b) = id.bootstrap {
        tx.insert(&s.meta, storage::META_BOOTSTRAP, b.as_bytes());
    }
    tx.commit()
}

/// Why an offline copy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A running member holds the data dir.
    #[error(
        "data dir {0} is in use by a running member; stop it first, or take an online \
         backup with `kvd backup save`"
    )]
    InUse(String),
    /// The source is not a kvd data dir.
    #[error("{0} is not a kvd data dir (no lock file or keyspaces)")]
    NotDataDir(String),
    /// The destination holds something already.
    #[error("backup dir {0} is not empty")]
    NotEmpty(String),
    /// Reading, writing or syncing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The copy does not open as a database.
    #[error("the copy in {path} does not open: {reason}")]
    Verify {
        /// The copy.
        path: String,
        /// Why.
        reason: String,
    },
}

/// The storage engine's lock file inside a data dir (fjall's).
const LOCK_FILE: &str = "lock";
/// What a copy leaves out: snapshots being received.
const NOT_COPIED: [&str; 1] = ["snapshot.staging"];

/// Copies a stopped member's data dir `src` into `dst` (absent or empty)
/// while holding the storage engine's lock, so no member can start on
/// `src` meanwhile; fsyncs every file and directory, then opens the copy to
/// check it and returns its identity. `kvd serve --data-dir <dst>` with the
/// member's flags then starts that member from the copy (etcd's offline
/// `etcdctl backup` keeps a data dir too).
///
/// # Errors
/// [`CopyError`]; a running member holding `src` is [`CopyError::InUse`].
pub fn copy_offline(src: &Path, dst: &Path) -> Result<(Identity, u64), CopyError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| CopyError::Io { path, source }
    };
    let lock_path = src.join(LOCK_FILE);
    if !lock_path.is_file() || !src.join("keyspaces").is_dir() {
        return Err(CopyError::NotDataDir(src.display().to_string()));
    }
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(CopyError::InUse(src.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
    }
    match std::fs::read_dir(dst) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(CopyError::NotEmpty(dst.display().to_string()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(dst)(e)),
    }
    if inside(src, dst) {
        return Err(CopyError::NotEmpty(format!(
            "{} (it is inside the data dir)",
            dst.display()
        )));
    }
    // Copied beside the destination, renamed into place when complete: an
    // interrupted copy never looks like a whole one.
    let mut partial = dst.as_os_str().to_os_string();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
    }
    let mut bytes = 0;
    if let Err(e) = copy_tree(src, &partial, true, &mut bytes) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    drop(lock);
    if dst.exists() {
        std::fs::remove_dir(dst).map_err(io(dst))?;
    }
    std::fs::rename(&partial, dst).map_err(io(dst))?;
    if let Some(parent) = dst.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io(parent))?;
    }
    let copy = Storage::open(dst).map_err(|e| CopyError::Verify {
        path: dst.display().to_string(),
        reason: e.to_string(),
    })?;
    let id = identity(&copy).map_err(|e| CopyError::Verify {
        path: dst.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok((id, bytes))
}

/// Whether `dst` (which may not exist yet) lies inside directory `src`.
fn inside(src: &Path, dst: &Path) -> bool {
    let Ok(src) = src.canonicalize() else {
        return false;
    };
    // The nearest existing ancestor of `dst`, resolved.
    let mut probe = dst.to_path_buf();
    loop {
        if let Ok(resolved) = probe.canonicalize() {
            return resolved.starts_with(&src);
        }
        if !probe.pop() || probe.as_os_str().is_empty() {
            return std::env::current_dir().is_ok_and(|cwd| cwd.starts_with(&src));
        }
    }
}

/// Copies directory `src` into `dst` recursively, fsyncing each file and
/// then each directory; `top` leaves out [`NOT_COPIED`]. Adds the bytes
/// copied to `bytes`.
fn copy_tree(src: &Path, dst: &Path, top: bool, bytes: &mut u64) -> Result<(), CopyError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| CopyError::Io { path, source }
    };
    std::fs::create_dir_all(dst).map_err(io(dst))?;
    for entry in std::fs::read_dir(src).map_err(io(src))? {
        let entry = entry.map_err(io(src))?;
        let name = entry.file_name();
        if top && NOT_COPIED.iter().any(|n| name == *n) {
            continue;
        }
        let (from, to) = (entry.path(), dst.join(&name));
        let kind = entry.file_type().map_err(io(&from))?;
        if kind.is_dir() {
            copy_tree(&from, &to, false, bytes)?;
        } else if kind.is_file() {
            *bytes += std::fs::copy(&from, &to).map_err(io(&from))?;
            std::fs::File::open(&to)
                .and_then(|f| f.sync_all())
                .map_err(io(&to))?;
        }
    }
    std::fs::File::open(dst)
        .and_then(|d| d.sync_all())
        .map_err(io(dst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_of(name: &str, token: &str, cluster: u64) -> Identity {
        Identity {
            member_id: 7,
            cluster_id: cluster,
            name: name.into(),
            token: token.into(),
            bootstrap: Some(Bootstrap::New),
        }
    }

    #[test]
    fn recorded_identity_reads_back_and_checks_refuse_strangers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = Storage::open(dir.path()).expect("open");
        let id = identity_of("n1", "tok", 0xabc);
        let member = PbMember {
            id: 7,
            name: "n1".into(),
            ..Default::default()
        };
        record(&s, &id, std::slice::from_ref(&member)).expect("record");
        assert_eq!(identity(&s).expect("identity"), id);
        let stored = s
            .members
            .get(storage::member_key(7))
            .expect("read")
            .map(|v| PbMember::decode(v.as_ref()).expect("decode"));
        assert_eq!(stored, Some(member));
        let path = dir.path();
        assert!(check(path, &id, "n1", "tok", Some(0xabc)).is_ok());
        assert!(check(path, &id, "n1", "tok", None).is_ok());
        let wrong_token = check(path, &id, "n1", "other", None).expect_err("token");
        assert!(wrong_token
            .reason
            .contains("not --initial-cluster-token \"other\""));
        let wrong_name = check(path, &id, "n2", "tok", None).expect_err("name");
        assert!(wrong_name.reason.contains("not --name \"n2\""));
        let wrong_cluster = check(path, &id, "n1", "tok", Some(0xdef)).expect_err("cluster");
        assert!(wrong_cluster.reason.contains("describes cluster def"));
    }
}
