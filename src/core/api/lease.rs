//! `etcdserverpb.Lease`: grant, revoke, keep-alive, time-to-live and list,
//! with etcd's semantics (`api/v3rpc/lease.go`). Grants and revokes are
//! Raft entries; keep-alives renew on the leader through a ReadIndex, and
//! followers forward `LeaseTimeToLive` to the leader, whose clocks alone are
//! exact (see `core::lease`).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbLeaseService, PbLeaseStatus, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::core::api::ApiContext;
use crate::core::auth::Access;
use crate::core::errors::EtcdError;
use crate::core::lease::{min_ttl, MAX_LEASE_TTL};
use crate::core::mvcc::{self, ApplyResponse};
use crate::core::raft::proposal::Op;
use crate::core::types::{LeaseId, Revision};

/// The Lease service.
pub struct LeaseService {
    /// Shared API state.
    pub ctx: ApiContext,
    /// Shortest TTL granted, seconds (etcd's `minTTL`).
    pub min_ttl: i64,
}

impl LeaseService {
    /// A lease service for members with these Raft timings.
    pub fn new(ctx: ApiContext, heartbeat: Duration, election_timeout: Duration) -> Self {
        Self {
            ctx,
            min_ttl: min_ttl(heartbeat, election_timeout),
        }
    }
}

impl LeaseService {
    /// A storage snapshot and its revision, after a ReadIndex barrier (lease
    /// reads are linearizable, as etcd serves them from the leader).
    async fn linearizable_view(&self) -> Result<(fjall::Snapshot, Revision), Status> {
        self.ctx
            .node
            .linearizable_barrier(self.ctx.request_timeout)
            .await?;
        let snapshot = self.ctx.storage.db.read_tx();
        let revision = Revision(mvcc::revisions(&snapshot, &self.ctx.storage)?.current);
        Ok((snapshot, revision))
    }
}

/// A new lease id: the member id's low 16 bits, then milliseconds and a
/// counter (etcd's `idutil.Generator` layout), positive and non-zero.
fn next_lease_id(member_id: u64) -> i64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let suffix =
        ((ms << 8) & 0xFFFF_FFFF_FFFF).wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed));
    let id = (((member_id & 0x7FFF) << 48) | (suffix & 0xFFFF_FFFF_FFFF)) as i64;
    id.max(1)
}

/// Renews lease `id` on the leader (no Raft entry: see `core::lease`),
/// retrying while no leader is known, until the request timeout; the
/// lease's granted TTL in seconds, or 0 when it does not exist (etcd's
/// keep-alive answers TTL 0 for an unknown lease rather than an error),
/// and the revision for the answer's header, both from one snapshot.
async fn keep_alive_once(ctx: &ApiContext, id: i64) -> Result<(i64, Revision), EtcdError> {
    let deadline = tokio::time::Instant::now() + ctx.request_timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match ctx.node.renew_lease(LeaseId(id), left).await {
            // Applied up to the leader's commit index when it saw the
            // renewal: a grant or revoke answered before this keep-alive
            // is known here. The leader, whose clock is the one that
            // counts, answers "not found" for a lease already past its
            // deadline (its revoke is on its way; etcd's Renew alike).
            Ok(()) => {
                let snapshot = ctx.storage.db.read_tx();
                let revision = Revision(mvcc::revisions(&snapshot, &ctx.storage)?.current);
                let ttl = match mvcc::lease_granted(&snapshot, &ctx.storage, id)? {
                    Some(_) if ctx.node.status.is_leader() && ctx.lessor.expired(LeaseId(id)) => 0,
                    Some(ttl) => ttl,
                    None => 0,
                };
                return Ok((ttl, revision));
            }
            Err(EtcdError::NoLeader | EtcdError::LeaderChanged)
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<PbLeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PbLeaseService for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        self.ctx.reject_learner()?;
        // Any user may grant (etcd 3.5.28's requireAuthInfo).
        let who = self.ctx.someone(&request).await?;
        let req = request.into_inner();
        if req.ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge.into());
        }
        self.ctx.check_quota()?;
        let ttl = req.ttl.max(self.min_ttl);
        let chosen = req.id != 0;
        loop {
            let id = if chosen {
                req.id
            } else {
                next_lease_id(self.ctx.node.status.member_id.0)
            };
            let op = Op::LeaseGrant(PbLeaseGrantRequest { ttl, id });
            match self
                .ctx
                .node
                .propose_as(op, &who, self.ctx.request_timeout)
                .await
            {
                Ok(ApplyResponse::LeaseGrant { id, ttl, revision }) => {
                    return Ok(Response::new(PbLeaseGrantResponse {
                        header: Some(self.ctx.header(Revision(revision))),
                        id,
                        ttl,
                        error: String::new(),
                    }));
                }
                // A server-chosen id that happens to be taken: choose again.
                Err(EtcdError::LeaseExists) if !chosen => continue,
                Ok(other) => {
                    return Err(EtcdError::Internal(format!("unexpected {other:?}")).into())
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        self.ctx.reject_learner()?;
        // Revoking deletes the lease's keys: write on each, unless root.
        let who = self.ctx.someone(&request).await?;
        let req = request.into_inner();
        self.ctx.check_lease_keys(&who, req.id, Access::Write)?;
        match self
            .ctx
            .node
            .propose_as(Op::LeaseRevoke(req), &who, self.ctx.request_timeout)
            .await?
        {
            ApplyResponse::LeaseRevoke { revision } => Ok(Response::new(PbLeaseRevokeResponse {
                header: Some(self.ctx.header(Revision(revision))),
            })),
            other => Err(EtcdError::Internal(format!("unexpected {other:?}")).into()),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        // Renewing keeps the lease's keys alive: an identity, and write on
        // each key unless root (etcd 3.5.28's checkLeaseRenew).
        let who = self.ctx.someone(&request).await?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            while let Some(item) = inbound.next().await {
                let id = match item {
                    Ok(req) => req.id,
                    Err(_) => return,
                };
                let checked = ctx.check_lease_keys(&who, id, Access::Write);
                let renewed = match checked {
                    Ok(()) => keep_alive_once(&ctx, id).await,
                    Err(e) => Err(e),
                };
                let reply = match renewed {
                    Ok((ttl, revision)) => Ok(PbLeaseKeepAliveResponse {
                        header: Some(ctx.header(revision)),
                        id,
                        ttl,
                    }),
                    Err(e) => Err(Status::from(e)),
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let who = self.ctx.someone(&request).await?;
        // Listing the keys needs read on each (CVE-2023-32082).
        if request.get_ref().keys {
            self.ctx
                .check_lease_keys(&who, request.get_ref().id, Access::Read)?;
        }
        // Only the leader's clocks are exact (renewals reach it alone).
        if !self.ctx.node.status.is_leader() {
            return self.ctx.forward_time_to_live(request).await;
        }
        let req = request.into_inner();
        let (snapshot, revision) = self.linearizable_view().await?;
        let exists = mvcc::lease_granted(&snapshot, &self.ctx.storage, req.id)?.is_some();
        let clock = self.ctx.lessor.time_to_live(LeaseId(req.id));
        let resp = match (exists, clock) {
            (true, Some((granted, remaining))) => PbLeaseTimeToLiveResponse {
                header: Some(self.ctx.header(revision)),
                id: req.id,
                ttl: remaining,
                granted_ttl: granted,
                keys: if req.keys {
                    mvcc::lease_keys(&snapshot, &self.ctx.storage, req.id)?
                } else {
                    Vec::new()
                },
            },
            _ => PbLeaseTimeToLiveResponse {
                header: Some(self.ctx.header(revision)),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        request: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        let who = self.ctx.someone(&request).await?;
        let (snapshot, revision) = self.linearizable_view().await?;
        // Unless root: read on every key of every lease (etcd 3.5.28).
        if !self.ctx.auth.is_admin(&who) {
            for (id, _) in mvcc::leases(&snapshot, &self.ctx.storage)? {
                for key in mvcc::lease_keys(&snapshot, &self.ctx.storage, id)? {
                    self.ctx.auth.check(&who, Access::Read, &key, &[])?;
                }
            }
        }
        let leases = mvcc::leases(&snapshot, &self.ctx.storage)?
            .into_iter()
            .map(|(id, _)| PbLeaseStatus { id })
            .collect();
        Ok(Response::new(PbLeaseLeasesResponse {
            header: Some(self.ctx.header(revision)),
            leases,
        }))
    }
}
