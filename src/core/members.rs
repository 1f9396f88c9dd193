//! Member and cluster identity, and the member records behind
//! `Cluster.MemberList`.
//!
//! A member id is derived from its peer URLs and the cluster token, and the
//! cluster id from the sorted member ids (the idea of etcd's
//! `membership.computeMemberID`/`genID`; the hash is SHA-256, so the numbers
//! differ from etcd's).

use etcd_client::proto::PbMember;
use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::core::storage::{self, Storage};

/// The member id for `peer_urls` in the cluster named by `token`: the first
/// 8 bytes (big-endian) of SHA-256 over the sorted URLs and the token; never 0.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut h = Sha256::new();
    for u in urls {
        h.update(u.as_bytes());
        h.update([0]);
    }
    h.update(token.as_bytes());
    first_u64(&h.finalize())
}

/// The cluster id of a cluster bootstrapped with `member_ids`; never 0.
pub fn cluster_id(member_ids: &[u64], token: &str) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    h.update(token.as_bytes());
    first_u64(&h.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(a).max(1)
}

/// Every member record, ordered by id.
///
/// # Errors
/// A storage or decoding error.
pub fn list(s: &Storage) -> anyhow::Result<Vec<PbMember>> {
    let mut out = Vec::new();
    for item in s.members.inner().iter() {
        let (_, v) = item.into_inner()?;
        out.push(PbMember::decode(v.as_ref())?);
    }
    Ok(out)
}

/// One member record.
///
/// # Errors
/// A storage or decoding error.
pub fn get(s: &Storage, id: u64) -> anyhow::Result<Option<PbMember>> {
    match s.members.get(id.to_be_bytes())? {
        Some(v) => Ok(Some(PbMember::decode(v.as_ref())?)),
        None => Ok(None),
    }
}

/// The storage key of a member record (see [`storage::member_key`]).
pub fn key(id: u64) -> [u8; 8] {
    storage::member_key(id)
}

/// Every member record through reader `r` (e.g. an apply transaction).
///
/// # Errors
/// A storage or decoding error.
pub fn list_in<R: fjall::Readable>(
    r: &R,
    s: &Storage,
) -> Result<Vec<PbMember>, crate::core::errors::EtcdError> {
    let mut out = Vec::new();
    for item in r.iter(&s.members) {
        let (_, v) = item.into_inner()?;
        out.push(
            PbMember::decode(v.as_ref())
                .map_err(|e| crate::core::errors::EtcdError::Internal(e.to_string()))?,
        );
    }
    Ok(out)
}

/// The key of member `id`'s pinned peer-certificate fingerprint in the
/// replicated `auth` keyspace (`transport::pins`).
pub fn pin_key(id: u64) -> Vec<u8> {
    [&b"p/"[..], &id.to_be_bytes()].concat()
}

/// The pinned fingerprint of member `id`, if it has published one.
///
/// # Errors
/// A storage error.
pub fn pinned<R: fjall::Readable>(
    r: &R,
    s: &Storage,
    id: u64,
) -> Result<Option<String>, crate::core::errors::EtcdError> {
    Ok(r.get(&s.auth, pin_key(id))?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}
