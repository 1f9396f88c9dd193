//! Online backups: a snapshot fetched from the member with the highest
//! revision, written to `<file>.part`, its sha256 checked, fsynced and only
//! then renamed into place (never a partial file under the final name), as
//! etcdctl's `snapshot save` does plus the check etcdctl leaves out; and
//! the `--dir --keep` form, with time- and revision-stamped names and
//! retention.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::core::client::ClientConfig;
use crate::core::snapshot::bolt::BoltReader;
use crate::core::snapshot::import::parse_revision;
use crate::core::snapshot::{hex, SnapshotError, SHA256_BYTES};

/// A saved snapshot.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Where it is.
    pub path: PathBuf,
    /// The endpoint it came from.
    pub endpoint: String,
    /// Bytes of the file (database and checksum).
    pub bytes: u64,
    /// The newest revision in it.
    pub revision: i64,
    /// Its sha256, lowercase hex.
    pub sha256: String,
}

/// Why a backup failed. Nothing is left under the final name on any.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// No endpoint answered `Status`, or the stream failed.
    #[error("{0}")]
    Client(String),
    /// Writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// What arrived is not a whole snapshot.
    #[error("the snapshot from {endpoint} is damaged: {reason}")]
    Damaged {
        /// The member that sent it.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
}

/// The shortest wait for each message of a snapshot stream after the first.
pub const MIN_MESSAGE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// The wait for a snapshot stream's first message (the member plans the
/// whole file first: about 3 s per GiB here).
pub const FIRST_MESSAGE_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// How far a download is: bytes received of the total the member announced.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Bytes received.
    pub received: u64,
    /// Bytes the whole stream holds (database and checksum).
    pub total: u64,
}

/// The endpoint with the highest revision (each asked with `Status`), and
/// that revision.
///
/// # Errors
/// [`SaveError::Client`] when no endpoint answers, with each one's reason.
pub async fn pick_endpoint(cfg: &ClientConfig) -> Result<(String, i64), SaveError> {
    let mut best: Option<(String, i64)> = None;
    let mut failures = Vec::new();
    for endpoint in &cfg.endpoints {
        let one = cfg.for_endpoint(endpoint);
        let status = async {
            let mut client = one.connect().await?;
            client.status().await
        };
        match tokio::time::timeout(cfg.request_timeout, status).await {
            Ok(Ok(s)) => {
                let rev = s.header().map_or(0, |h| h.revision());
                if best.as_ref().is_none_or(|(_, r)| rev > *r) {
                    best = Some((endpoint.clone(), rev));
                }
            }
            Ok(Err(e)) => failures.push(format!("{endpoint}: {e}")),
            Err(_) => failures.push(format!("{endpoint}: no answer")),
        }
    }
    best.ok_or_else(|| SaveError::Client(format!("no endpoint answered: {}", failures.join("; "))))
}

/// Saves a snapshot from the member with the highest revision into `path`
/// (see the module docs); `progress` is told each chunk's arrival. The
/// stream may take as long as it needs; the first message's wait is
/// [`FIRST_MESSAGE_WAIT`] (a kvd member reads its whole state to plan the
/// file before the first byte), each later one's `cfg.request_timeout`
/// but no less than [`MIN_MESSAGE_WAIT`].
///
/// # Errors
/// [`SaveError`]; the `.part` file is removed on every one.
pub async fn save(
    cfg: &ClientConfig,
    path: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Saved, SaveError> {
    let (endpoint, _) = pick_endpoint(cfg).await?;
    let part = part_path(path);
    let result = fetch(cfg, &endpoint, &part, progress).await;
    let done = match result {
        Ok((bytes, sha)) => finish(&part, path).map(|revision| Saved {
            path: path.to_path_buf(),
            endpoint,
            bytes,
            revision,
            sha256: sha,
        }),
        Err(e) => Err(e),
    };
    if done.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    done
}

/// `<path>.part`, where a download lands before its checks.
fn part_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".part");
    PathBuf::from(name)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SaveError + '_ {
    move |source| SaveError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Downloads `endpoint`'s snapshot into `part`, checking the trailing
/// sha256 against the bytes before it as they arrive. Returns (bytes, hex
/// sha256).
async fn fetch(
    cfg: &ClientConfig,
    endpoint: &str,
    part: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<(u64, String), SaveError> {
    let client_error = |e: etcd_client::Error| SaveError::Client(format!("{endpoint}: {e}"));
    let damaged = |reason: String| SaveError::Damaged {
        endpoint: endpoint.to_string(),
        reason,
    };
    let wait = cfg.request_timeout.max(MIN_MESSAGE_WAIT);
    let no_answer = |waited: std::time::Duration| {
        SaveError::Client(format!("{endpoint}: no answer within {waited:?}"))
    };
    let mut client = tokio::time::timeout(wait, cfg.for_endpoint(endpoint).connect())
        .await
        .map_err(|_| no_answer(wait))?
        .map_err(client_error)?;
    let mut stream = tokio::time::timeout(FIRST_MESSAGE_WAIT, client.snapshot())
        .await
        .map_err(|_| no_answer(FIRST_MESSAGE_WAIT))?
        .map_err(client_error)?;
    // 0600, as etcdctl: the file holds every key.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(part)
        .map_err(io_error(part))?;
    // The last 32 bytes received are the checksum: hash all but those.
    let mut hasher = Sha256::new();
    let mut tail: Vec<u8> = Vec::new();
    let mut received = 0u64;
    let mut total = None;
    // A kvd member reads its whole state to plan the file before the
    // first byte; later messages come as fast as the disk reads.
    let mut next_wait = FIRST_MESSAGE_WAIT;
    while let Some(msg) = tokio::time::timeout(next_wait, stream.message())
        .await
        .map_err(|_| no_answer(next_wait))?
        .map_err(client_error)?
    {
        next_wait = wait;
        let blob = msg.blob();
        received += blob.len() as u64;
        let whole = *total.get_or_insert(received + msg.remaining_bytes() + SHA256_BYTES);
        progress(Progress {
            received,
            total: whole.max(received),
        });
        file.write_all(blob).map_err(io_error(part))?;
        tail.extend_from_slice(blob);
        if tail.len() > SHA256_BYTES as usize {
            let keep = tail.split_off(tail.len() - SHA256_BYTES as usize);
            hasher.update(&tail);
            tail = keep;
        }
    }
    if received % 512 != SHA256_BYTES || tail.len() != SHA256_BYTES as usize {
        return Err(damaged(format!(
            "sha256 checksum not found [bytes: {received}] (the stream ended early?)"
        )));
    }
    let got = hasher.finalize();
    if got.as_slice() != tail.as_slice() {
        return Err(damaged(format!(
            "sha256 mismatch: the stream says {}, its contents hash to {}",
            hex(&tail),
            hex(got.as_slice())
        )));
    }
    file.sync_all().map_err(io_error(part))?;
    Ok((received, hex(got.as_slice())))
}

/// Checks the structure of a downloaded file, renames it into place and
/// syncs its directory. Returns the snapshot's newest revision.
fn finish(part: &Path, path: &Path) -> Result<i64, SaveError> {
    let revision = newest_revision(part).map_err(|e| SaveError::Damaged {
        endpoint: part.display().to_string(),
        reason: e.to_string(),
    })?;
    std::fs::rename(part, path).map_err(io_error(path))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(&dir))?;
    Ok(revision)
}

/// The newest revision in a snapshot file with its checksum (one page per
/// tree level is read; 0 for an empty store).
///
/// # Errors
/// I/O errors and [`SnapshotError::Corrupt`].
pub fn newest_revision(path: &Path) -> Result<i64, SnapshotError> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len().saturating_sub(SHA256_BYTES);
    let reader = BoltReader::open(file, len)?;
    let buckets = reader.buckets()?;
    let Some((_, key)) = buckets.iter().find(|(n, _)| n == b"key") else {
        return Ok(0);
    };
    match reader.last_key(key)? {
        Some(k) => Ok(parse_revision(&k)?.0),
        None => Ok(0),
    }
}

/// File names `save_in_dir` gives: `kvd-snapshot-<UTC time>-rev<revision>.db`.
const PREFIX: &str = "kvd-snapshot-";
const SUFFIX: &str = ".db";

/// Saves a snapshot into `dir` as
/// `kvd-snapshot-<YYYYMMDDTHHMMSS.mmmZ>-rev<N>.db` (UTC)
/// and then removes the oldest such files beyond the newest `keep` (0 keeps
/// all). Other files in `dir` are never touched. Returns the snapshot and
/// the files removed.
///
/// # Errors
/// [`SaveError`]; retention runs only after a successful save.
pub async fn save_in_dir(
    cfg: &ClientConfig,
    dir: &Path,
    keep: usize,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Saved, Vec<PathBuf>), SaveError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let stamp = humantime::format_rfc3339_millis(SystemTime::now())
        .to_string()
        .replace(['-', ':'], "");
    let staging = dir.join(format!(".{PREFIX}{stamp}{SUFFIX}"));
    let mut saved = save(cfg, &staging, progress).await?;
    let path = dir.join(format!("{PREFIX}{stamp}-rev{}{SUFFIX}", saved.revision));
    std::fs::rename(&staging, &path).map_err(io_error(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    saved.path = path;
    let removed = if keep > 0 {
        prune(dir, keep, &saved.path).map_err(io_error(dir))?
    } else {
        Vec::new()
    };
    Ok((saved, removed))
}

/// Whether `name` is exactly a name `save_in_dir` gives:
/// `kvd-snapshot-YYYYMMDDTHHMMSS.mmmZ-rev<digits>.db`.
fn is_ours(name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix(PREFIX)
        .and_then(|r| r.strip_suffix(SUFFIX))
    else {
        return false;
    };
    let Some((stamp, rev)) = rest.split_once("-rev") else {
        return false;
    };
    // Bytes, not `str` slices: a name with a multi-byte character must not
    // be cut inside it.
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(|b| b.is_ascii_digit());
    let b = stamp.as_bytes();
    b.len() == 20
        && digits(&b[..8])
        && b[8] == b'T'
        && digits(&b[9..15])
        && b[15] == b'.'
        && digits(&b[16..19])
        && b[19] == b'Z'
        && digits(rev.as_bytes())
}

/// Removes all but the newest `keep` snapshots named by `save_in_dir`
/// (ordered by their UTC stamp), never `saved` itself (a clock that
/// stepped back must not cost the backup just made).
fn prune(dir: &Path, keep: usize, saved: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut ours: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_ours(&name) && entry.file_type()?.is_file() && entry.path() != saved {
            ours.push((name, entry.path()));
        }
    }
    ours.sort();
    // `saved` is one of the `keep`.
    let excess = ours.len().saturating_sub(keep.saturating_sub(1));
    let mut removed = Vec::new();
    for (_, path) in ours.into_iter().take(excess) {
        std::fs::remove_file(&path)?;
        removed.push(path);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_touches_only_its_own_names() {
        assert!(is_ours("kvd-snapshot-20261203T091500.123Z-rev54.db"));
        for other in [
            "kvd-snapshot-mine.db",
            "kvd-snapshot-20261203T091500Z-rev54.db",
            "kvd-snapshot-20261203T091500.123Z-rev.db",
            "kvd-snapshot-20261203T091500.123Z-rev54.db.part",
            ".kvd-snapshot-20261203T091500.123Z.db",
            // A multi-byte character across a field's edge.
            "kvd-snapshot-2026120\u{e9}091500.123Z-rev54.db",
        ] {
            assert!(!is_ours(other), "{other}");
        }
    }
}
