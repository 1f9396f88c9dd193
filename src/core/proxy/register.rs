//! `--resolver-prefix`: the proxy registers its `--advertise-client-url`
//! under `<prefix>/<url>` with a lease of `--resolver-ttl` seconds (etcd's
//! `grpcproxy.Register`, value as etcd's naming endpoints write it), and
//! `Cluster.MemberList` through it lists the registered proxies, so that
//! clients syncing their endpoints stay on proxies.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::proto::{
    PbClusterService, PbMember, PbMemberAddRequest, PbMemberAddResponse, PbMemberListRequest,
    PbMemberListResponse, PbMemberPromoteRequest, PbMemberPromoteResponse, PbMemberRemoveRequest,
    PbMemberRemoveResponse, PbMemberUpdateRequest, PbMemberUpdateResponse, PbRangeRequest,
    PbRangeResponse,
};
use tonic::{Request, Response, Status};

use crate::core::client::ClientConfig;
use crate::core::mvcc::keys::prefix_end;
use crate::core::proxy::namespace::Namespace;
use crate::core::proxy::upstream::Upstream;

/// What the proxy registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// `--advertise-client-url`, as given (etcd writes it verbatim).
    pub advertise_client_url: String,
    /// `--resolver-prefix`.
    pub prefix: String,
    /// `--resolver-ttl`, seconds (≥ 1).
    pub ttl: i64,
    /// This host's name (the member name MemberList shows).
    pub hostname: String,
}

impl Registration {
    fn key(&self) -> String {
        format!("{}/{}", self.prefix, self.advertise_client_url)
    }

    /// etcd's `endpoints.Update` JSON: `{"Op":0,"Addr":…,"Metadata":…}`
    /// with the metadata a JSON string of `{"name": hostname}`.
    fn value(&self) -> String {
        let meta = serde_json::json!({ "name": self.hostname }).to_string();
        serde_json::json!({ "Op": 0, "Addr": self.advertise_client_url, "Metadata": meta })
            .to_string()
    }
}

/// Keeps the registration in place: a lease of `ttl` seconds kept alive,
/// written again whenever it is lost (etcd: "session expired").
pub async fn keep_registered(config: ClientConfig, namespace: Namespace, reg: Registration) {
    let key = namespace.key(reg.key().as_bytes());
    loop {
        if let Err(e) = register_once(&config, &key, &reg).await {
            tracing::warn!("proxy registration under {:?} lost: {e}", reg.prefix);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn register_once(
    config: &ClientConfig,
    key: &[u8],
    reg: &Registration,
) -> Result<(), etcd_client::Error> {
    let mut client = config.connect().await?;
    let lease = client.lease_grant(reg.ttl, None).await?.id();
    let options = etcd_client::PutOptions::new().with_lease(lease);
    client.put(key.to_vec(), reg.value(), Some(options)).await?;
    tracing::info!(key = %String::from_utf8_lossy(key), "proxy registered");
    let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
    let every = Duration::from_secs((reg.ttl as u64 / 3).max(1));
    loop {
        tokio::time::sleep(every).await;
        keeper.keep_alive().await?;
        match answers.message().await? {
            Some(a) if a.ttl() > 0 => {}
            _ => return Ok(()), // the lease is gone: register again
        }
    }
}

/// The Cluster service with `--resolver-prefix`: MemberList lists the
/// registered proxies (id 0, no peer URLs, as etcd's grpc-proxy), the
/// other calls go to the cluster.
#[derive(Clone)]
pub struct MemberListRoute {
    /// The cluster.
    pub upstream: Arc<Upstream>,
    /// `--namespace` (the registrations live inside it).
    pub namespace: Namespace,
    /// This proxy's registration.
    pub registration: Registration,
}

#[tonic::async_trait]
impl PbClusterService for MemberListRoute {
    async fn member_add(
        &self,
        r: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        self.upstream
            .unary("/etcdserverpb.Cluster/MemberAdd", r, false)
            .await
    }

    async fn member_remove(
        &self,
        r: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        self.upstream
            .unary("/etcdserverpb.Cluster/MemberRemove", r, false)
            .await
    }

    async fn member_update(
        &self,
        r: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        self.upstream
            .unary("/etcdserverpb.Cluster/MemberUpdate", r, false)
            .await
    }

    async fn member_promote(
        &self,
        r: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        self.upstream
            .unary("/etcdserverpb.Cluster/MemberPromote", r, false)
            .await
    }

    async fn member_list(
        &self,
        r: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        let prefix = self
            .namespace
            .key(format!("{}/", self.registration.prefix).as_bytes());
        let (metadata, extensions, _) = r.into_parts();
        let request = Request::from_parts(
            metadata,
            extensions,
            PbRangeRequest {
                range_end: prefix_end(&prefix),
                key: prefix,
                serializable: true,
                ..Default::default()
            },
        );
        let found: Response<PbRangeResponse> = self
            .upstream
            .unary("/etcdserverpb.KV/Range", request, true)
            .await?;
        let mut members: Vec<PbMember> = found
            .into_inner()
            .kvs
            .iter()
            .filter_map(|kv| serde_json::from_slice::<serde_json::Value>(&kv.value).ok())
            .map(|v| {
                let addr = v["Addr"].as_str().unwrap_or_default().to_string();
                let name = v["Metadata"]
                    .as_str()
                    .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
                    .and_then(|m| m["name"].as_str().map(str::to_string))
                    .unwrap_or_default();
                PbMember {
                    name,
                    client_ur_ls: vec![addr],
                    ..Default::default()
                }
            })
            .collect();
        if members.is_empty() {
            members.push(PbMember {
                name: self.registration.hostname.clone(),
                client_ur_ls: vec![self.registration.advertise_client_url.clone()],
                ..Default::default()
            });
        }
        Ok(Response::new(PbMemberListResponse {
            members,
            ..Default::default()
        }))
    }
}
