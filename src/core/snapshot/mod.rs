//! etcd's snapshot file format, for `Maintenance.Snapshot` and `kvd
//! backup`: a bbolt database with etcd's buckets, followed by the sha256 of
//! the database (etcd's `snapshot save` files, and the stream etcd's
//! `Maintenance.Snapshot` sends).
//!
//! - `bolt`: the bbolt file format (writer and validating reader);
//! - `export`: a member's state as etcd's buckets;
//! - `import`: etcd's buckets (from kvd or from etcd 3.4/3.5) into a new
//!   member's state;
//! - [`SnapshotFile`]: a file checked (sha256, structure) before anything
//!   reads it, and etcdctl's `snapshot status` of it.
//!
//! Why not the `bbolt-rs` crate: snapshots need a one-pass writer of
//! sorted keys and a read-only scanner, with memory that does not grow with
//! the file. bbolt-rs is a transactional, mmap-based port that holds a
//! transaction's dirty pages until commit (its TODO notes large commits
//! take about three times Go's memory), has no `Tx.WriteTo` to stream a
//! database, and brings clap, rand and fake into the server. The format
//! itself is small and frozen (bbolt 1.3, see `bolt`), and the tests check
//! the result against etcd's own tools.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use etcd_client::proto::PbMember;
use sha2::{Digest, Sha256};

pub mod bolt;
pub mod export;
pub mod import;
pub mod save;

pub use bolt::{BoltReader, Layout, PageCounter, PageSink, WriteSink};
pub use export::{export, stream, CHUNK_BYTES};
pub use import::{import, Imported};

use crate::core::errors::EtcdError;

/// Why a snapshot could not be made, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing a file or stream failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is damaged or not an etcd snapshot; the text says where.
    #[error("{0}")]
    Corrupt(String),
    /// The member's storage failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The two passes over one storage snapshot differed (a bug).
    #[error("the snapshot changed while it was written")]
    Changed,
    /// The receiver went away.
    #[error("the snapshot stream was closed")]
    Closed,
}

impl From<fjall::Error> for SnapshotError {
    fn from(e: fjall::Error) -> Self {
        SnapshotError::Storage(e.to_string())
    }
}

impl From<EtcdError> for SnapshotError {
    fn from(e: EtcdError) -> Self {
        SnapshotError::Storage(e.to_string())
    }
}

/// etcd's buckets, in key order (etcd `mvcc/backend` users; `auth*` stay
/// empty until kvd has auth).
pub const BUCKETS: [&[u8]; 10] = [
    b"alarm",
    b"auth",
    b"authRoles",
    b"authUsers",
    b"cluster",
    b"key",
    b"lease",
    b"members",
    b"members_removed",
    b"meta",
];

/// The cluster version written into the `cluster` bucket: the oldest etcd
/// that reads the file (etcd 3.4 refuses to start on a backend that claims a
/// newer cluster than itself).
pub const CLUSTER_VERSION: &[u8] = b"3.4.0";

/// Length of the trailing checksum, bytes.
pub const SHA256_BYTES: u64 = 32;

/// etcd's revision bytes for a compact revision: main (8 bytes BE), `_`,
/// sub 0 (8 bytes BE).
pub fn compact_rev_bytes(main: i64) -> Vec<u8> {
    let mut b = Vec::with_capacity(17);
    b.extend_from_slice(&main.to_be_bytes());
    b.push(b'_');
    b.extend_from_slice(&0i64.to_be_bytes());
    b
}

/// `leasepb.Lease`, the value of etcd's `lease` bucket.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRecord {
    /// Lease id.
    #[prost(int64, tag = "1")]
    pub id: i64,
    /// Granted TTL, seconds.
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    /// Remaining TTL at the last checkpoint, seconds (etcd 3.5; 0 = none).
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

/// etcd's member record in its `members` bucket (JSON of `membership.Member`).
#[derive(Debug, serde::Serialize)]
pub struct MemberJson {
    /// Member id.
    pub id: u64,
    /// Peer URLs.
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// Learner, omitted when false.
    #[serde(rename = "isLearner", skip_serializing_if = "std::ops::Not::not")]
    pub is_learner: bool,
    /// Name, omitted when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Client URLs, omitted when empty.
    #[serde(rename = "clientURLs", skip_serializing_if = "Vec::is_empty")]
    pub client_urls: Vec<String>,
}

impl From<&PbMember> for MemberJson {
    fn from(m: &PbMember) -> Self {
        Self {
            id: m.id,
            peer_urls: m.peer_ur_ls.clone(),
            is_learner: m.is_learner,
            name: m.name.clone(),
            client_urls: m.client_ur_ls.clone(),
        }
    }
}

/// A snapshot file whose checksum (if it has one) matched and whose meta
/// page is valid.
pub struct SnapshotFile {
    /// The file's path.
    pub path: PathBuf,
    /// The database.
    pub reader: BoltReader,
    /// Whether it ended with a sha256 (etcd's `snapshot save` files do;
    /// copies of a member's `db` file do not).
    pub has_hash: bool,
    /// Bytes of the file.
    pub file_bytes: u64,
}

/// What etcdctl's `snapshot status` prints of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStatus {
    /// CRC-32 (Castagnoli) of every bucket's name, keys and values.
    pub hash: u32,
    /// The newest main revision in the `key` bucket.
    pub revision: i64,
    /// Keys in all buckets (history records included).
    pub total_keys: u64,
    /// Bytes of the database (pages × page size).
    pub total_size: u64,
}

impl SnapshotFile {
    /// Opens `path`, checking its trailing sha256 when the size says it has
    /// one (etcd's rule: size modulo 512 is 32), then its meta pages.
    /// `skip_hash_check` accepts a file without a checksum (a member's `db`).
    ///
    /// # Errors
    /// I/O errors; [`SnapshotError::Corrupt`] for a checksum mismatch, a
    /// missing checksum without `skip_hash_check`, or no valid meta page.
    pub fn open(path: &Path, skip_hash_check: bool) -> Result<Self, SnapshotError> {
        let mut file = File::open(path)?;
        let file_bytes = file.metadata()?.len();
        let has_hash = file_bytes % 512 == SHA256_BYTES;
        let len = if has_hash {
            file_bytes - SHA256_BYTES
        } else {
            file_bytes
        };
        if has_hash {
            let mut hasher = Sha256::new();
            let mut left = len;
            let mut buf = vec![0u8; 1 << 20];
            while left > 0 {
                let n = buf.len().min(usize::try_from(left).unwrap_or(buf.len()));
                file.read_exact(&mut buf[..n])?;
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
            let mut want = [0u8; SHA256_BYTES as usize];
            file.read_exact(&mut want)?;
            let got = hasher.finalize();
            if got.as_slice() != want {
                return Err(SnapshotError::Corrupt(format!(
                    "sha256 mismatch: the file says {}, its contents hash to {}",
                    hex(&want),
                    hex(got.as_slice())
                )));
            }
        } else if !skip_hash_check {
            return Err(SnapshotError::Corrupt(
                "snapshot missing hash but --skip-hash-check=false (a truncated file, or a \
                 member's db file: pass --skip-hash-check for the latter)"
                    .to_string(),
            ));
        }
        let reader = BoltReader::open(file, len)?;
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            has_hash,
            file_bytes,
        })
    }

    /// etcdctl's `snapshot status` of the file (every page is read).
    ///
    /// # Errors
    /// I/O errors and [`SnapshotError::Corrupt`].
    pub fn status(&self) -> Result<FileStatus, SnapshotError> {
        let mut status = FileStatus {
            hash: 0,
            revision: 0,
            total_keys: 0,
            total_size: self.reader.size(),
        };
        let mut crc = 0u32;
        for (name, root) in self.reader.buckets()? {
            crc = crc32c::crc32c_append(crc, &name);
            let is_key = name == b"key";
            self.reader.for_each(&root, &mut |k, v| {
                crc = crc32c::crc32c_append(crc32c::crc32c_append(crc, k), v);
                status.total_keys += 1;
                if is_key {
                    let (main, _, _) = import::parse_revision(k)?;
                    status.revision = status.revision.max(main);
                }
                Ok(())
            })?;
        }
        status.hash = crc;
        Ok(status)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
