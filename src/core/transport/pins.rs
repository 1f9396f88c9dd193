//! Certificate pinning between members when no peer CA is configured (kvd
//! goes beyond etcd's unauthenticated `--peer-auto-tls` here). Each member
//! keeps one peer certificate (`--peer-cert-file`, or a self-signed one
//! kept in `<data-dir>/fixtures/peer`) and announces its SHA-256
//! fingerprint when it publishes its attributes through Raft; from then on
//! the fingerprint is replicated state (`auth` keyspace, `p/<member id>`),
//! and every member refuses a connection whose certificate does not match
//! the pin of the member it claims to be, in both directions. A message
//! from an id that is not a member is refused too.
//!
//! Until a member has published, its certificate is taken on first use
//! (a cluster being bootstrapped, a member just added): a stranger can
//! only speak for a member that has never run.

use rustls::pki_types::CertificateDer;

use crate::core::members;
pub use crate::core::members::{pin_key, pinned};
use crate::core::storage::Storage;
use crate::core::tls::fingerprint;

/// The fingerprint of the certificate a QUIC peer presented.
pub fn peer_fingerprint(conn: &quinn::Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().map(fingerprint)
}

/// Why a peer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// The id is not a member of the cluster.
    #[error("{0:x} is not a member of this cluster")]
    NotMember(u64),
    /// The certificate is not the one pinned for that member.
    #[error("the peer certificate does not match the one pinned for member {0:x}")]
    Mismatch(u64),
    /// No certificate was presented.
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// Storage could not be read.
    #[error("{0}")]
    Storage(String),
}

/// Whether a peer presenting `fp` may speak as member `id` (pins only:
/// without a peer CA).
///
/// # Errors
/// [`PinError`].
pub fn check(s: &Storage, id: u64, fp: Option<&str>) -> Result<(), PinError> {
    let fp = fp.ok_or(PinError::NoCertificate)?;
    check_member(s, id)?;
    match pinned(&s.db.read_tx(), s, id).map_err(|e| PinError::Storage(e.to_string()))? {
        Some(pin) if pin != fp => Err(PinError::Mismatch(id)),
        _ => Ok(()),
    }
}

/// Whether `id` is a member of the cluster (with or without pins).
///
/// # Errors
/// [`PinError::NotMember`], or [`PinError::Storage`].
pub fn check_member(s: &Storage, id: u64) -> Result<(), PinError> {
    match members::get(s, id) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(PinError::NotMember(id)),
        Err(e) => Err(PinError::Storage(format!("{e:#}"))),
    }
}

/// Whether a peer presenting `fp` could speak for any member: some member
/// holds that pin, or some member has not published one yet (taken on
/// first use). A stranger's Raft and snapshot streams are refused on this
/// at once, before anything it sends is read. A storage error answers yes:
/// the per-stream [`check`] still runs.
pub fn may_be_a_member(s: &Storage, fp: Option<&str>) -> bool {
    let Some(fp) = fp else {
        return false;
    };
    let Ok(list) = members::list(s) else {
        return true;
    };
    let read = s.db.read_tx();
    list.iter().any(|m| match pinned(&read, s, m.id) {
        Ok(Some(pin)) => pin == fp,
        Ok(None) | Err(_) => true,
    })
}
