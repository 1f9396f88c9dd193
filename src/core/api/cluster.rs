//! `etcdserverpb.Cluster`: `MemberList` from the replicated member records.
//! Membership changes answer `Unimplemented` until their issue lands.

use etcd_client::proto::{
    PbClusterService, PbMemberAddRequest, PbMemberAddResponse, PbMemberListRequest,
    PbMemberListResponse, PbMemberPromoteRequest, PbMemberPromoteResponse, PbMemberRemoveRequest,
    PbMemberRemoveResponse, PbMemberUpdateRequest, PbMemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use crate::core::api::maintenance::current_revision;
use crate::core::api::ApiContext;
use crate::core::members;

/// The Cluster service.
pub struct ClusterService {
    /// Shared API state.
    pub ctx: ApiContext,
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("kvd: {what} is not implemented yet"))
}

#[tonic::async_trait]
impl PbClusterService for ClusterService {
    async fn member_add(
        &self,
        _: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        Err(not_yet("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        Err(not_yet("MemberRemove"))
    }

    async fn member_update(
        &self,
        _: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        Err(not_yet("MemberUpdate"))
    }

    async fn member_list(
        &self,
        request: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        if request.get_ref().linearizable {
            self.ctx
                .node
                .linearizable_barrier(self.ctx.request_timeout)
                .await?;
        }
        let members = members::list(&self.ctx.storage)
            .map_err(|e| Status::internal(format!("etcdserver: {e:#}")))?;
        let revision = current_revision(&self.ctx)?;
        Ok(Response::new(PbMemberListResponse {
            header: Some(self.ctx.header(revision)),
            members,
        }))
    }

    async fn member_promote(
        &self,
        _: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        Err(not_yet("MemberPromote"))
    }
}
