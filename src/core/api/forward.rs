//! Requests a follower hands to the leader with the caller's own token,
//! so that the leader checks the caller's rights (a client of the
//! follower's own would carry none): `LeaseTimeToLive` under auth, whose
//! clocks only the leader keeps exactly, and `MemberPromote`, which only
//! the leader can judge.

use etcd_client::proto::{PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse};
use tonic::{Request, Response, Status};

use crate::core::api::ApiContext;
use crate::core::errors::EtcdError;
use crate::core::members;
use crate::core::types::MemberId;

/// A gRPC channel to the current leader, kept while that member leads.
#[derive(Clone, Default)]
pub struct LeaderChannel(
    std::sync::Arc<tokio::sync::Mutex<Option<(MemberId, tonic::transport::Channel)>>>,
);

/// How long forwarding waits to connect.
const DIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl ApiContext {
    async fn leader_channel(&self) -> Result<tonic::transport::Channel, Status> {
        let Some(leader) = self.node.status.leader() else {
            return Err(EtcdError::NoLeader.into());
        };
        let mut slot = self.leader_channel.0.lock().await;
        if let Some((id, channel)) = slot.as_ref() {
            if *id == leader {
                return Ok(channel.clone());
            }
        }
        let urls = members::get(&self.storage, leader.0)
            .map_err(|e| Status::internal(format!("{e:#}")))?
            .map(|m| m.client_ur_ls)
            .unwrap_or_default();
        let tls = self.forward_tls.as_ref();
        let url = urls
            .into_iter()
            .find(|u| u.starts_with("https://") == tls.is_some())
            .ok_or_else(|| {
                Status::unavailable("etcdserver: the leader has no client URL to reach")
            })?;
        let mut endpoint = tonic::transport::Endpoint::from_shared(url)
            .map_err(|e| Status::unavailable(format!("etcdserver: leader URL: {e}")))?
            .connect_timeout(DIAL_TIMEOUT)
            .timeout(self.request_timeout);
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls.options())
                .map_err(|e| Status::unavailable(format!("etcdserver: leader TLS: {e}")))?;
        }
        let channel = endpoint.connect_lazy();
        *slot = Some((leader, channel.clone()));
        Ok(channel)
    }

    /// `request` answered by the leader at `path`, asked with the
    /// caller's token (etcd forwards such requests over its peer port).
    ///
    /// # Errors
    /// The leader's status, or Unavailable when it cannot be reached.
    pub async fn forward_unary<Req, Resp>(
        &self,
        path: &'static str,
        request: &Request<Req>,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message + Clone + Default + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let channel = self.leader_channel().await?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| {
            Status::unavailable(format!("etcdserver: cannot reach the leader: {e}"))
        })?;
        let mut forwarded = Request::new(request.get_ref().clone());
        for key in ["token", "authorization"] {
            if let Some(v) = request.metadata().get(key) {
                forwarded.metadata_mut().insert(key, v.clone());
            }
        }
        let path = http::uri::PathAndQuery::from_static(path);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        Ok(grpc.unary(forwarded, path, codec).await?.into_inner())
    }

    /// `LeaseTimeToLive` answered by the leader (see [`Self::forward_unary`]).
    ///
    /// # Errors
    /// As [`Self::forward_unary`].
    pub async fn forward_time_to_live(
        &self,
        request: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let mut resp: PbLeaseTimeToLiveResponse = self
            .forward_unary("/etcdserverpb.Lease/LeaseTimeToLive", &request)
            .await?;
        let revision = resp.header.as_ref().map_or(0, |h| h.revision);
        resp.header = Some(self.header(crate::core::types::Revision(revision)));
        Ok(Response::new(resp))
    }
}
