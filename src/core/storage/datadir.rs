//! A member's data dir as a whole: whose it is (member, cluster, token, how
//! it was bootstrapped) and the checks that keep one member from starting on
//! another's data. `serve` uses it at start-up; `backup restore` writes a
//! new member's identity with it.

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
