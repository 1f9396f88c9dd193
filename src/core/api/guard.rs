//! Who sends a request and whether they may: the identity of a gRPC
//! request (token, or the certificate's Common Name) and the permission
//! checks of each KV and lease request, with the fixes of etcd's
//! advisories built in:
//! - every compare and every op of both branches of a txn is checked,
//!   nested txns recursively (GHSA-rfx7-8w68-q57q);
//! - `prev_kv` needs read, and attaching a lease needs write on every key
//!   the lease already holds, in a txn as outside one (GHSA-x35m-3gp4-4fh5);
//! - a watch is checked with the range end the client sent, so from-key
//!   needs an open-ended grant (GHSA-xg4h-6gfc-h4m8, in `auth::perms`);
//! - member, alarm, lease, snapshot, defrag, hash and move-leader calls
//!   need an identity or root (GHSA-q8m4-xhhv-38mg, in the services);
//! - `LeaseTimeToLive` with keys needs read on them (CVE-2023-32082).

use etcd_client::proto::{
    PbCompare, PbDeleteRequest, PbPutRequest, PbRangeRequest, PbTxnOpRequest, PbTxnRequest,
};
use tonic::Request;

use crate::core::api::listener::ClientConn;
use crate::core::api::ApiContext;
use crate::core::auth::{Access, Identity, TokenLookup};
use crate::core::errors::EtcdError;
use crate::core::mvcc;

/// What a request presents to be identified: its token (gRPC metadata
/// `token`, else `authorization`) and its verified certificate's Common
/// Name; `None` for the member's own in-process client, which is trusted.
fn credentials<T>(request: &Request<T>) -> Option<(Option<String>, Option<String>)> {
    let conn = request
        .extensions()
        .get::<axum::extract::ConnectInfo<ClientConn>>()
        .map(|c| &c.0);
    if conn.is_some_and(|c| c.local) {
        return None;
    }
    let metadata = request.metadata();
    let token = metadata
        .get("token")
        .or_else(|| metadata.get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Some((token, conn.and_then(|c| c.common_name.clone())))
}

impl ApiContext {
    /// The identity of `request` (`None` while auth is disabled, and for
    /// the member's own in-process client, whose callers were checked by
    /// the lock and election services). A token minted by an entry not
    /// applied here yet waits for it (etcd blocks likewise).
    ///
    /// # Errors
    /// `InvalidAuthToken`; `Timeout` waiting for the token's entry.
    pub async fn identity<T>(&self, request: &Request<T>) -> Result<Identity, EtcdError> {
        let Some((token, cn)) = credentials(request) else {
            return Ok(None);
        };
        for _ in 0..2 {
            let applied = self.node.applied.borrow().0;
            match self
                .auth
                .identify(token.as_deref(), cn.as_deref(), applied)?
            {
                TokenLookup::Known(who) => return Ok(who),
                TokenLookup::Wait(index) => {
                    let mut applied = self.node.applied.clone();
                    tokio::time::timeout(self.request_timeout, applied.wait_for(|a| a.0 >= index))
                        .await
                        .map_err(|_| EtcdError::Timeout)?
                        .map_err(|_| EtcdError::Stopped)?;
                }
            }
        }
        Err(EtcdError::InvalidAuthToken)
    }

    /// `Range`: read on its range.
    ///
    /// # Errors
    /// The auth errors of [`crate::core::auth::AuthStore::check`].
    pub fn check_range(&self, who: &Identity, r: &PbRangeRequest) -> Result<(), EtcdError> {
        self.auth.check(who, Access::Read, &r.key, &r.range_end)
    }

    /// `Put` (etcd's `checkPutAuth`): write on the key, read with
    /// `prev_kv`, and, unless root, write on every key already attached to
    /// the lease it attaches.
    ///
    /// # Errors
    /// As [`Self::check_range`].
    pub fn check_put(&self, who: &Identity, r: &PbPutRequest) -> Result<(), EtcdError> {
        if who.is_none() {
            return Ok(());
        }
        self.auth.check(who, Access::Write, &r.key, &[])?;
        if r.prev_kv {
            self.auth.check(who, Access::Read, &r.key, &[])?;
        }
        if r.lease != 0 {
            self.check_lease_keys(who, r.lease, Access::Write)?;
        }
        Ok(())
    }

    /// `DeleteRange`: write on the range, read too with `prev_kv`.
    ///
    /// # Errors
    /// As [`Self::check_range`].
    pub fn check_delete(&self, who: &Identity, r: &PbDeleteRequest) -> Result<(), EtcdError> {
        if r.prev_kv {
            self.auth.check(who, Access::Read, &r.key, &r.range_end)?;
        }
        self.auth.check(who, Access::Write, &r.key, &r.range_end)
    }

    /// `Txn`: read on every compare, and every op of both branches checked
    /// as its own request would be, nested txns included.
    ///
    /// # Errors
    /// As [`Self::check_range`].
    pub fn check_txn(&self, who: &Identity, t: &PbTxnRequest) -> Result<(), EtcdError> {
        if who.is_none() {
            return Ok(());
        }
        for c in &t.compare {
            self.check_compare(who, c)?;
        }
        for op in t.success.iter().chain(t.failure.iter()) {
            match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) => self.check_range(who, r)?,
                Some(PbTxnOpRequest::RequestPut(r)) => self.check_put(who, r)?,
                Some(PbTxnOpRequest::RequestDeleteRange(r)) => self.check_delete(who, r)?,
                Some(PbTxnOpRequest::RequestTxn(r)) => self.check_txn(who, r)?,
                None => {}
            }
        }
        Ok(())
    }

    fn check_compare(&self, who: &Identity, c: &PbCompare) -> Result<(), EtcdError> {
        self.auth.check(who, Access::Read, &c.key, &c.range_end)
    }

    /// Unless `who` is root: `access` on every key attached to lease `id`
    /// (a lease that does not exist holds none).
    ///
    /// # Errors
    /// As [`Self::check_range`].
    pub fn check_lease_keys(
        &self,
        who: &Identity,
        id: i64,
        access: Access,
    ) -> Result<(), EtcdError> {
        if who.is_none() || self.auth.is_admin(who) {
            return Ok(());
        }
        let snapshot = self.storage.db.read_tx();
        for key in mvcc::lease_keys(&snapshot, &self.storage, id)? {
            self.auth.check(who, access, &key, &[])?;
        }
        // etcd's checks end with: no one has no keys to check.
        crate::core::auth::AuthStore::require_identity(who)
    }

    /// The identity and, with auth on, root: the admin-only RPCs.
    ///
    /// # Errors
    /// `InvalidAuthToken`, `UserEmpty`, `UserNotFound`, `PermissionDenied`.
    pub async fn admin<T>(&self, request: &Request<T>) -> Result<Identity, EtcdError> {
        let who = self.identity(request).await?;
        self.auth.check_admin(&who)?;
        Ok(who)
    }

    /// The admin check of Defragment, Snapshot, Hash and HashKV, whose
    /// refusals etcd leaves unmapped: Unknown "auth: permission denied",
    /// "auth: user name is empty", "auth: user not found".
    ///
    /// # Errors
    /// `InvalidAuthToken`, or [`EtcdError::RawAuth`].
    pub async fn raw_admin<T>(&self, request: &Request<T>) -> Result<(), EtcdError> {
        let who = self.identity(request).await?;
        self.auth.check_admin(&who).map_err(|e| match e {
            EtcdError::PermissionDenied => EtcdError::RawAuth("permission denied"),
            EtcdError::UserEmpty => EtcdError::RawAuth("user name is empty"),
            EtcdError::UserNotFound => EtcdError::RawAuth("user not found"),
            other => other,
        })
    }

    /// The identity, which must name a user when auth is on (etcd's
    /// `requireAuthInfo`).
    ///
    /// # Errors
    /// `InvalidAuthToken`, `UserEmpty`.
    pub async fn someone<T>(&self, request: &Request<T>) -> Result<Identity, EtcdError> {
        let who = self.identity(request).await?;
        crate::core::auth::AuthStore::require_identity(&who)?;
        Ok(who)
    }
}

/// The rights of a watch stream's opener: each watch it creates needs
/// read on its range, checked with the range end as sent (from-key needs
/// an open-ended grant). The stream's credentials are resolved again at
/// each creation, as etcd does, so a stream opened before auth was
/// enabled gets no unchecked watches afterwards.
#[derive(Clone, Default)]
pub struct WatchGuard {
    auth: Option<std::sync::Arc<crate::core::auth::AuthStore>>,
    token: Option<String>,
    common_name: Option<String>,
}

impl WatchGuard {
    /// The guard of the stream `request` opens (none for the member's own
    /// in-process client).
    pub fn new<T>(
        auth: std::sync::Arc<crate::core::auth::AuthStore>,
        request: &Request<T>,
    ) -> Self {
        match credentials(request) {
            Some((token, common_name)) => Self {
                auth: Some(auth),
                token,
                common_name,
            },
            None => Self::default(),
        }
    }

    /// `Err(cancel reason)` when the watch may not be created: etcd's
    /// reason is the whole gRPC error text ("rpc error: code =
    /// PermissionDenied desc = etcdserver: permission denied").
    pub fn check(&self, key: &[u8], range_end: &[u8]) -> Result<(), String> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        // The stream's opening waited for its token's entry; no wait here.
        let who = auth.identify(self.token.as_deref(), self.common_name.as_deref(), u64::MAX);
        let checked = who.and_then(|lookup| match lookup {
            TokenLookup::Known(who) => auth.check(&who, Access::Read, key, range_end),
            TokenLookup::Wait(_) => Err(EtcdError::InvalidAuthToken),
        });
        checked.map_err(|e| format!("rpc error: code = {:?} desc = {e}", e.code()))
    }
}

impl ApiContext {
    /// A lock or election on `name`: the caller's rights on `name/`, as
    /// etcd's in-process client checks them for the caller (read, and
    /// write when the call creates keys, whose lease's keys need write
    /// too). Refusals come back as Unknown with etcd's message.
    ///
    /// # Errors
    /// The auth errors, as Unknown.
    pub async fn check_named<T>(
        &self,
        request: &Request<T>,
        name: &[u8],
        write: bool,
        lease: i64,
    ) -> Result<(), tonic::Status> {
        let unknown = |e: EtcdError| crate::core::api::concurrency::as_unknown(e.into());
        let who = self.identity(request).await.map_err(unknown)?;
        let prefix = crate::core::api::concurrency::prefix_of(name);
        let end = crate::core::mvcc::keys::prefix_end(&prefix);
        self.auth
            .check(&who, Access::Read, &prefix, &end)
            .map_err(unknown)?;
        if write {
            self.auth
                .check(&who, Access::Write, &prefix, &end)
                .map_err(unknown)?;
            if lease != 0 {
                self.check_lease_keys(&who, lease, Access::Write)
                    .map_err(unknown)?;
            }
        }
        Ok(())
    }

    /// Unlock, proclaim, resign: write on the held key. Proclaim puts it
    /// again with the lease the caller names (`lease` non-zero): read on
    /// the key (its compare) and, unless root, write on every key that
    /// lease holds (etcd's `checkPutAuth`), so no one attaches a key to
    /// another's lease.
    ///
    /// # Errors
    /// The auth errors, as Unknown.
    pub async fn check_held<T>(
        &self,
        request: &Request<T>,
        key: &[u8],
        lease: i64,
    ) -> Result<(), tonic::Status> {
        let unknown = |e: EtcdError| crate::core::api::concurrency::as_unknown(e.into());
        let who = self.identity(request).await.map_err(unknown)?;
        self.auth
            .check(&who, Access::Write, key, &[])
            .map_err(unknown)?;
        if lease != 0 {
            self.auth
                .check(&who, Access::Read, key, &[])
                .map_err(unknown)?;
            self.check_lease_keys(&who, lease, Access::Write)
                .map_err(unknown)?;
        }
        Ok(())
    }
}
