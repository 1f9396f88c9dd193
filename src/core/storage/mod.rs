//! The member's one fjall database and its keyspaces.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `raft_log` | log index (u64 BE) | `eraftpb.Entry` |
//! | `raft_state` | `hard_state`, `conf_state`, `snapshot` | protobuf |
//! | `kv` | user key | [`format::CurrentRecord`] (counters + where `rev` holds the value) |
//! | `rev` | main rev (i64 BE) ++ sub rev (i64 BE) | history record (see `mvcc`) |
//! | `hist` | escaped user key ++ main ++ sub | kind byte |
//! | `meta` | names below | numbers (u64/i64 BE) and strings |
//! | `members` | member id (u64 BE) | `etcdserverpb.Member` |
//! | `leases` | lease id (i64 BE) | granted TTL, seconds (i64 BE) |
//! | `lease_keys` | lease id (i64 BE) ++ user key | empty |
//! | `auth` | `enabled`, `revision`, `u/<user>`, `r/<role>` | flag, u64 BE, `authpb.User`, `authpb.Role` |
//!
//! Integer keys are big-endian so that LSM order is numeric order. Only the
//! Raft task writes (fjall's single-writer transactions); readers use
//! snapshots. `datadir` records and checks whose data dir it is.
//!
//! **Memory budget** (fjall's defaults, 64 MiB per memtable × 9 keyspaces
//! plus 512 MiB of journals, made a member's memory and disk grow with
//! nothing to show for it): the block cache is `--backend-cache-bytes`
//! (16 MiB by default); each keyspace's memtable is flushed at
//! [`MEMTABLE_BYTES_BULK`] (`kv`, `rev`, `hist`, `raft_log`) or
//! [`MEMTABLE_BYTES_SMALL`] (the rest), at most one more sealed memtable
//! each waits for its flush; journals are capped at [`MAX_JOURNAL_BYTES`]
//! (fjall then flushes the keyspaces that hold the oldest one). So the
//! engine holds at most about cache + 2 × (4 × 8 + 5 × 2) MiB ≈ 100 MiB,
//! whatever the number of keys. The sizes are fixed when a keyspace is
//! created (fjall keeps them with the keyspace).

use std::path::Path;

pub mod datadir;
pub mod format;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use fjall::{KeyspaceCreateOptions, PersistMode, SingleWriterTxDatabase, SingleWriterTxKeyspace};

/// Memtable size of the keyspaces that grow with the data, bytes.
pub const MEMTABLE_BYTES_BULK: u64 = 8 << 20;
/// Memtable size of the small keyspaces, bytes.
pub const MEMTABLE_BYTES_SMALL: u64 = 2 << 20;
/// Journal bytes kept before fjall flushes memtables to free the oldest
/// (fjall's smallest allowed value).
pub const MAX_JOURNAL_BYTES: u64 = 64 << 20;
/// Block cache when the caller does not choose (`--backend-cache-bytes`'s
/// default), bytes.
pub const DEFAULT_CACHE_BYTES: u64 = 16 << 20;

/// `meta` key: the last Raft log index applied to the state machine (u64 BE).
/// Written in the same transaction as the state changes of that entry.
pub const META_APPLIED_INDEX: &[u8] = b"applied_index";
/// `meta` key: the current MVCC main revision (i64 BE).
pub const META_REVISION: &[u8] = b"revision";
/// `meta` key: the compact revision (i64 BE); reads below it fail.
pub const META_COMPACT_REVISION: &[u8] = b"compact_revision";
/// `meta` key: revision up to which history has been physically removed (i64 BE).
pub const META_COMPACT_DONE: &[u8] = b"compact_done";
/// `meta` key present while a Raft snapshot replaces the state (value:
/// `eraftpb.SnapshotMetadata`; see `raft::snapshot`). The state is then
/// mixed, so [`crate::core::mvcc::revisions`] refuses every read that sees it.
pub const META_RESTORING: &[u8] = b"restoring";
/// `meta` key: the cluster id (u64 BE), fixed at bootstrap.
pub const META_CLUSTER_ID: &[u8] = b"cluster_id";
/// `meta` key: this member's id (u64 BE), fixed at bootstrap.
pub const META_MEMBER_ID: &[u8] = b"member_id";
/// `meta` key: this member's name at bootstrap (UTF-8).
pub const META_MEMBER_NAME: &[u8] = b"member_name";
/// `meta` key: `new` when this member bootstrapped its cluster from
/// `--initial-cluster` (then a restart must describe the same cluster).
pub const META_BOOTSTRAP: &[u8] = b"bootstrap";
/// `meta` key: the `--initial-cluster-token` at bootstrap (UTF-8).
pub const META_CLUSTER_TOKEN: &[u8] = b"cluster_token";

/// Handles to the database and every keyspace. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    /// The directory the database lives in.
    pub dir: PathBuf,
    /// The database; its journal is shared by all keyspaces, so one
    /// `persist` makes everything written before it durable.
    pub db: SingleWriterTxDatabase,
    /// Raft log entries by index.
    pub raft_log: SingleWriterTxKeyspace,
    /// Hard state, conf state and snapshot metadata.
    pub raft_state: SingleWriterTxKeyspace,
    /// Current value of every live key.
    pub kv: SingleWriterTxKeyspace,
    /// Every change by revision (history, for reads at a past revision and watch replay).
    pub rev: SingleWriterTxKeyspace,
    /// Per-key revision index into `rev`.
    pub hist: SingleWriterTxKeyspace,
    /// Applied index, revisions, ids.
    pub meta: SingleWriterTxKeyspace,
    /// Cluster members.
    pub members: SingleWriterTxKeyspace,
    /// Granted leases.
    pub leases: SingleWriterTxKeyspace,
    /// Keys attached to each lease.
    pub lease_keys: SingleWriterTxKeyspace,
    /// Users, roles and the auth flags (`core::auth`).
    pub auth: SingleWriterTxKeyspace,
}

impl Storage {
    /// Opens (or creates) the database under `dir`.
    ///
    /// # Errors
    /// Any fjall error (I/O, corruption, a directory locked by another process).
    pub fn open(dir: &Path) -> fjall::Result<Self> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the database under `dir` with a block cache of
    /// `cache_bytes` bytes (see the module's memory budget).
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> fjall::Result<Self> {
        let db = SingleWriterTxDatabase::builder(dir)
            // Durability is explicit: the Raft task persists once per Ready.
            .manual_journal_persist(true)
            .cache_size(cache_bytes)
            .max_journaling_size(MAX_JOURNAL_BYTES)
            .open()?;
        let ks = |name: &str| {
            let memtable = match name {
                "kv" | "rev" | "hist" | "raft_log" => MEMTABLE_BYTES_BULK,
                _ => MEMTABLE_BYTES_SMALL,
            };
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(memtable)
            })
        };
        let storage = Self {
            dir: dir.to_path_buf(),
            raft_log: ks("raft_log")?,
            raft_state: ks("raft_state")?,
            kv: ks("kv")?,
            rev: ks("rev")?,
            hist: ks("hist")?,
            meta: ks("meta")?,
            members: ks("members")?,
            leases: ks("leases")?,
            lease_keys: ks("lease_keys")?,
            auth: ks("auth")?,
            db,
        };
        format::check(&storage)?;
        Ok(storage)
    }

    /// Makes everything written so far durable (fsync of the journal).
    ///
    /// # Errors
    /// An I/O error; fjall then poisons the database, and the member must stop.
    pub fn sync(&self) -> fjall::Result<()> {
        self.db.persist(PersistMode::SyncData)
    }

    /// (bytes on disk, bytes in use): the first is what the data dir's
    /// files occupy (allocated blocks, as `du` counts them: journals,
    /// tables and the rest, sparse preallocation excluded); the second the
    /// tables of every keyspace, the live database without journals
    /// (what etcd's `dbSize` and `dbSizeInUse` mean for bbolt).
    ///
    /// # Errors
    /// A storage error.
    pub fn disk_usage(&self) -> fjall::Result<(u64, u64)> {
        Ok((allocated_bytes(&self.dir), self.tables_bytes()))
    }

    /// Bytes of every keyspace's tables: the live database without
    /// journals or memtables (in-memory counters, cheap to ask).
    pub fn tables_bytes(&self) -> u64 {
        [
            &self.raft_log,
            &self.raft_state,
            &self.kv,
            &self.rev,
            &self.hist,
            &self.meta,
            &self.members,
            &self.leases,
            &self.lease_keys,
            &self.auth,
        ]
        .iter()
        .map(|ks| ks.inner().disk_space())
        .sum()
    }

    /// Reads a big-endian u64 from `meta`, 0 when absent.
    ///
    /// # Errors
    /// A storage error.
    pub fn meta_u64(&self, key: &[u8]) -> fjall::Result<u64> {
        Ok(self.meta.get(key)?.map(|v| be_u64(&v)).unwrap_or(0))
    }

    /// Reads a UTF-8 string from `meta`.
    ///
    /// # Errors
    /// A storage error.
    pub fn meta_string(&self, key: &[u8]) -> fjall::Result<Option<String>> {
        Ok(self
            .meta
            .get(key)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
}

/// Records `index` as the applied index inside `tx`, the transaction that
/// also holds the state changes that entry produced (the project's central
/// invariant: state and applied index are never written apart; etcd 3.5's
/// data-loss bug came from splitting them).
pub fn set_applied_index(tx: &mut fjall::SingleWriterWriteTx<'_>, s: &Storage, index: u64) {
    tx.insert(&s.meta, META_APPLIED_INDEX, index.to_be_bytes());
}

/// The `members` keyspace key of member `id` (u64 BE).
pub fn member_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Decodes a big-endian u64 (missing bytes read as zero).
pub fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

/// Decodes a big-endian i64 (missing bytes read as zero).
pub fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    i64::from_be_bytes(a)
}

/// Bytes allocated on disk under `path` (blocks × 512, as `du`), walking
/// directories; unreadable entries count 0.
pub fn allocated_bytes(path: &Path) -> u64 {
    // The data dir itself may be a link; links inside it are not followed.
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => allocated_below(path),
        Ok(meta) => meta.blocks() * 512,
        Err(_) => 0,
    }
}

fn allocated_below(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| match std::fs::symlink_metadata(e.path()) {
                Ok(meta) if meta.is_dir() => allocated_below(&e.path()),
                Ok(meta) => meta.blocks() * 512,
                Err(_) => 0,
            })
            .sum()
    })
}
