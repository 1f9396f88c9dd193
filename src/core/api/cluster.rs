//! `etcdserverpb.Cluster`: the member list and membership changes, with
//! etcd's semantics and errors (`etcdserver/server.go` AddMember,
//! RemoveMember, UpdateMember, PromoteMember; strict reconfiguration checks).
//! Adds, promotions and removals are Raft conf changes; updates are normal
//! entries.

use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::proto::{
    PbClusterService, PbMember, PbMemberAddRequest, PbMemberAddResponse, PbMemberListRequest,
    PbMemberListResponse, PbMemberPromoteRequest, PbMemberPromoteResponse, PbMemberRemoveRequest,
    PbMemberRemoveResponse, PbMemberUpdateRequest, PbMemberUpdateResponse,
};
use raft::eraftpb::{ConfChange, ConfChangeType};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use crate::core::api::ApiContext;
use crate::core::errors::EtcdError;
use crate::core::members;
use crate::core::mvcc::ApplyResponse;
use crate::core::raft::proposal::Op;
use crate::core::raft::Event;
use crate::core::storage;
use crate::core::types::MemberId;

/// Most learners a cluster may have (etcd's `maxLearners`).
const MAX_LEARNERS: usize = 1;

/// The Cluster service.
pub struct ClusterService {
    /// Shared API state.
    pub ctx: ApiContext,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("etcdserver: {e}"))
}

impl ClusterService {
    fn members(&self) -> Result<Vec<PbMember>, Status> {
        members::list(&self.ctx.storage).map_err(|e| internal(format!("{e:#}")))
    }

    /// The member list, holding `id` if the cluster does. When `id` is not
    /// in the local list, waits for a read-index barrier and reads again: a
    /// change just acknowledged by another member is then seen, so "member
    /// not found" is never a stale answer. No barrier otherwise, so the
    /// strict reconfiguration checks answer even without a quorum (etcd).
    async fn members_with(&self, id: u64) -> Result<Vec<PbMember>, Status> {
        let list = self.members()?;
        if list.iter().any(|m| m.id == id) {
            return Ok(list);
        }
        self.ctx
            .node
            .linearizable_barrier(self.ctx.request_timeout)
            .await?;
        self.members()
    }

    fn check_peer_urls(&self, urls: &[String], except: u64) -> Result<(), Status> {
        if urls.is_empty() {
            return Err(Status::invalid_argument(
                "etcdserver: peer URLs are required",
            ));
        }
        for u in urls {
            let parsed = url::Url::parse(u).map_err(|e| {
                Status::invalid_argument(format!("etcdserver: bad peer URL {u:?}: {e}"))
            })?;
            if parsed.port().is_none() || parsed.host_str().is_none() {
                return Err(Status::invalid_argument(format!(
                    "etcdserver: peer URL {u:?} needs a host and a port"
                )));
            }
        }
        for m in self.members()? {
            if m.id != except && m.peer_ur_ls.iter().any(|p| urls.contains(p)) {
                return Err(EtcdError::PeerUrlExists.into());
            }
        }
        Ok(())
    }

    async fn conf_change(
        &self,
        kind: ConfChangeType,
        member: PbMember,
    ) -> Result<(PbMember, Vec<PbMember>), Status> {
        let mut cc = ConfChange::default();
        cc.set_change_type(kind);
        cc.node_id = member.id;
        let (reply, rx) = oneshot::channel();
        self.ctx
            .node
            .send(Event::ProposeConfChange { cc, member, reply })?;
        let r = tokio::time::timeout(self.ctx.request_timeout, rx)
            .await
            .map_err(|_| EtcdError::Timeout)?
            .map_err(|_| EtcdError::Stopped)??;
        match r {
            ApplyResponse::Members { member, members } => Ok((member, members)),
            other => Err(internal(format!("unexpected apply response {other:?}"))),
        }
    }

    async fn learner_ready(&self, id: u64) -> Result<bool, EtcdError> {
        let (reply, rx) = oneshot::channel();
        self.ctx.node.send(Event::LearnerReady {
            id: MemberId(id),
            reply,
        })?;
        rx.await.map_err(|_| EtcdError::Stopped)?
    }

    /// Forwards a promotion to the leader, which alone knows whether the
    /// learner caught up (etcd forwards it over the peer port).
    async fn promote_on_leader(
        &self,
        request: &Request<PbMemberPromoteRequest>,
    ) -> Result<PbMemberPromoteResponse, Status> {
        self.ctx
            .forward_unary("/etcdserverpb.Cluster/MemberPromote", request)
            .await
    }

    /// etcd's `ClusterServer.header()`: cluster id, member id and term;
    /// no revision (membership is not MVCC data).
    fn respond_header(&self) -> etcd_client::proto::PbResponseHeader {
        self.ctx.header(crate::core::types::Revision(0))
    }
}

#[tonic::async_trait]
impl PbClusterService for ClusterService {
    async fn member_add(
        &self,
        request: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        self.ctx.admin(&request).await?;
        let req = request.into_inner();
        self.check_peer_urls(&req.peer_ur_ls, 0)?;
        let existing = self.members()?;
        if req.is_learner {
            if existing.iter().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
                return Err(EtcdError::TooManyLearners.into());
            }
        } else {
            // etcd's strict reconfiguration check: after the add, the started
            // voting members must still make a quorum.
            let voters = existing.iter().filter(|m| !m.is_learner).count() + 1;
            let started = existing
                .iter()
                .filter(|m| !m.is_learner && !m.name.is_empty())
                .count();
            // etcd lets a one-member cluster grow to two (restoring a cluster).
            let growing_from_one = started == 1 && voters == 2;
            if !growing_from_one && started < voters / 2 + 1 {
                return Err(EtcdError::NotEnoughStartedMembers.into());
            }
        }
        let token = self
            .ctx
            .storage
            .meta_string(storage::META_CLUSTER_TOKEN)
            .map_err(internal)?
            .unwrap_or_default();
        // As etcd, the time makes a re-added member a new member.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = members::member_id(&req.peer_ur_ls, &format!("{token}/{now}"));
        if existing.iter().any(|m| m.id == id) {
            return Err(EtcdError::MemberExists.into());
        }
        let member = PbMember {
            id,
            name: String::new(),
            peer_ur_ls: req.peer_ur_ls.clone(),
            client_ur_ls: Vec::new(),
            is_learner: req.is_learner,
        };
        let kind = if req.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        let (member, members) = self.conf_change(kind, member).await?;
        Ok(Response::new(PbMemberAddResponse {
            header: Some(self.respond_header()),
            member: Some(member),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        self.ctx.admin(&request).await?;
        let id = request.into_inner().id;
        let existing = self.members_with(id).await?;
        let Some(target) = existing.iter().find(|m| m.id == id) else {
            return Err(EtcdError::MemberNotFound.into());
        };
        if !target.is_learner {
            // etcd's strict reconfiguration check.
            let others: Vec<&PbMember> = existing
                .iter()
                .filter(|m| m.id != id && !m.is_learner)
                .collect();
            let started = others.iter().filter(|m| !m.name.is_empty()).count();
            if started < others.len() / 2 + 1 {
                return Err(EtcdError::NotEnoughStartedMembers.into());
            }
        }
        let (_, members) = self
            .conf_change(ConfChangeType::RemoveNode, target.clone())
            .await?;
        Ok(Response::new(PbMemberRemoveResponse {
            header: Some(self.respond_header()),
            members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        let who = self.ctx.admin(&request).await?;
        let req = request.into_inner();
        if !self
            .members_with(req.id)
            .await?
            .iter()
            .any(|m| m.id == req.id)
        {
            return Err(EtcdError::MemberNotFound.into());
        }
        self.check_peer_urls(&req.peer_ur_ls, req.id)?;
        let update = PbMember {
            id: req.id,
            peer_ur_ls: req.peer_ur_ls,
            ..Default::default()
        };
        let r = self
            .ctx
            .node
            .propose_as(Op::MemberUpdate(update), &who, self.ctx.request_timeout)
            .await?;
        let members = match r {
            ApplyResponse::Members { members, .. } => members,
            other => return Err(internal(format!("unexpected apply response {other:?}"))),
        };
        Ok(Response::new(PbMemberUpdateResponse {
            header: Some(self.respond_header()),
            members,
        }))
    }

    async fn member_list(
        &self,
        request: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        self.ctx.someone(&request).await?;
        if request.get_ref().linearizable {
            self.ctx
                .node
                .linearizable_barrier(self.ctx.request_timeout)
                .await?;
        }
        Ok(Response::new(PbMemberListResponse {
            header: Some(self.respond_header()),
            members: self.members()?,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        self.ctx.admin(&request).await?;
        let id = request.get_ref().id;
        let Some(target) = self
            .members_with(id)
            .await?
            .into_iter()
            .find(|m| m.id == id)
        else {
            return Err(EtcdError::MemberNotFound.into());
        };
        if !target.is_learner {
            return Err(EtcdError::MemberNotLearner.into());
        }
        let ready = match self.learner_ready(id).await {
            Ok(ready) => ready,
            Err(EtcdError::NotLeader) => {
                let mut r = self.promote_on_leader(&request).await?;
                r.header = Some(self.respond_header());
                return Ok(Response::new(r));
            }
            Err(e) => return Err(e.into()),
        };
        if !ready {
            return Err(EtcdError::LearnerNotReady.into());
        }
        let (_, members) = self.conf_change(ConfChangeType::AddNode, target).await?;
        Ok(Response::new(PbMemberPromoteResponse {
            header: Some(self.respond_header()),
            members,
        }))
    }
}
