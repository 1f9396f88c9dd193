//! The client-facing etcd v3 API: gRPC services and the HTTP endpoints on
//! the client port.
//!
//! Services validate requests (etcd's `api/v3rpc` checks), send writes
//! through Raft via [`NodeHandle`] and serve reads from a storage snapshot
//! after a ReadIndex barrier (or at once when `serializable`).

pub mod auth;
pub mod caller;
pub mod cluster;
pub mod concurrency;
pub mod election;
pub mod forward;
pub mod gateway;
pub mod guard;
pub mod http;
pub mod kv;
pub mod lease;
pub mod listener;
pub mod lock;
pub mod maintenance;
pub mod range_stream;
pub mod ui;
pub mod v2;
pub mod watch;

use std::time::Duration;

use etcd_client::proto::{PbAlarmRequest, PbResponseHeader};
use std::sync::Arc;

use etcd_client::proto::{PbClusterServer, PbKvServer, PbLeaseServer, PbMaintenanceServer};

use tonic::Status;

use crate::core::alarm;
use crate::core::errors::EtcdError;
use crate::core::lease::Lessor;
use crate::core::raft::proposal::Op;
use crate::core::raft::NodeHandle;
use crate::core::storage::Storage;
use crate::core::types::Revision;
use crate::core::watch::WatchHub;

/// gRPC messages may exceed `--max-request-bytes` by this much of framing
/// before the server refuses them (etcd's `grpcOverheadBytes`); watch
/// responses are fragmented at the same size.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// The version this member reports in `Status` and `/version`: the etcd API
/// level it implements.
pub const ETCD_VERSION: &str = "3.5.0";
/// The cluster version reported beside it.
pub const ETCD_CLUSTER_VERSION: &str = "3.5.0";

/// What every service needs: the Raft task, the database and the limits.
#[derive(Clone)]
pub struct ApiContext {
    /// The Raft task.
    pub node: NodeHandle,
    /// The member's database (reads only).
    pub storage: Storage,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// `--quota-backend-bytes` (0 = no limit).
    pub quota_backend_bytes: u64,
    /// How long a request may wait for Raft (etcd: 5 s + 2 election timeouts).
    pub request_timeout: Duration,
    /// Lease clocks, for `LeaseTimeToLive`.
    pub lessor: Arc<Lessor>,
    /// Users, roles, tokens: who sends each request and what it may do.
    pub auth: Arc<crate::core::auth::AuthStore>,
    /// A raw channel to the leader, for requests forwarded with the
    /// caller's token.
    pub leader_channel: forward::LeaderChannel,
    /// In-process connections to this member's own client services, for
    /// [`Self::self_client`].
    pub local: listener::LocalConnector,
    /// TLS for calls to other members' client URLs when they are
    /// `https://` (the member's own CA and certificate).
    pub forward_tls: Option<crate::core::client::ClientTls>,
    /// The lock and election services' client of this member.
    pub self_link: Arc<tokio::sync::OnceCell<etcd_client::Client>>,
}

/// A NOSPACE alarm proposed by this process and not yet answered.
static RAISING_NOSPACE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl ApiContext {
    /// A response header for `revision` with this member's ids and term.
    pub fn header(&self, revision: Revision) -> PbResponseHeader {
        let st = &self.node.status;
        PbResponseHeader {
            cluster_id: st.cluster_id.0,
            member_id: st.member_id.0,
            revision: revision.0,
            raft_term: st.term(),
        }
    }

    /// etcd serves a learner only `Status`, `MemberList` and serializable
    /// `Range`: everything else answers this error there.
    ///
    /// # Errors
    /// [`EtcdError::NotSupportedForLearner`] on a learner.
    pub fn reject_learner(&self) -> Result<(), crate::core::errors::EtcdError> {
        if self.node.status.is_learner() {
            return Err(crate::core::errors::EtcdError::NotSupportedForLearner);
        }
        Ok(())
    }

    /// The current revision, read from a fresh storage snapshot.
    ///
    /// # Errors
    /// A storage error.
    pub fn current_revision(&self) -> Result<Revision, crate::core::errors::EtcdError> {
        let snapshot = self.storage.db.read_tx();
        Ok(Revision(
            crate::core::mvcc::revisions(&snapshot, &self.storage)?.current,
        ))
    }

    /// etcd's quota check before a put, a txn with puts or a lease grant
    /// (`v3rpc/quota.go`): refused while a NOSPACE alarm is active; when
    /// the backend (tables and journals) has reached
    /// `--quota-backend-bytes`, this member raises NOSPACE through Raft and
    /// refuses. No check without a quota (kvd's default; etcd's 0 means
    /// 2 GiB).
    ///
    /// # Errors
    /// [`EtcdError::NoSpace`], or a storage error.
    pub fn check_quota(&self) -> Result<(), EtcdError> {
        if self.quota_backend_bytes == 0 {
            return Ok(());
        }
        if alarm::nospace(&self.storage.db.read_tx(), &self.storage)? {
            return Err(EtcdError::NoSpace);
        }
        // Tables and journals (what the engine holds on disk; etcd's
        // bbolt size counts its free pages likewise).
        if self.storage.db.disk_space()? < self.quota_backend_bytes {
            return Ok(());
        }
        // One ACTIVATE in flight at a time, however many requests see the
        // quota exceeded.
        if RAISING_NOSPACE.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Err(EtcdError::NoSpace);
        }
        let raise = Op::Alarm(PbAlarmRequest {
            action: 1, // ACTIVATE
            member_id: self.node.status.member_id.0,
            alarm: alarm::NOSPACE,
        });
        let (node, timeout) = (self.node.clone(), self.request_timeout);
        tokio::spawn(async move {
            if let Err(e) = node.propose(raise, timeout).await {
                tracing::warn!("cannot raise the NOSPACE alarm: {e}");
            }
            RAISING_NOSPACE.store(false, std::sync::atomic::Ordering::Release);
        });
        tracing::warn!(
            quota = self.quota_backend_bytes,
            "backend exceeds --quota-backend-bytes; raising the NOSPACE alarm"
        );
        Err(EtcdError::NoSpace)
    }

    /// Replaces the header of a state-machine response with a full one.
    pub fn fill(&self, header: &mut Option<PbResponseHeader>) {
        let revision = header.as_ref().map_or(0, |h| h.revision);
        *header = Some(self.header(Revision(revision)));
    }
}

/// The status a forwarded request failed with: the leader's own gRPC
/// status unchanged, or Unavailable when it could not be reached.
pub fn forwarded(e: etcd_client::Error) -> Status {
    match e {
        etcd_client::Error::GRpcStatus(s) => s,
        other => Status::unavailable(format!("etcdserver: {other}")),
    }
}

/// The client port's routes: every gRPC service (each refusing messages
/// above `--max-request-bytes` + [`GRPC_OVERHEAD_BYTES`] before decoding,
/// etcd's `MaxRecvMsgSize`) with etcd's edge statuses, and the HTTP
/// endpoints (JSON gateway, v2 when `http.enable_v2`, the web console
/// when `http.enable_ui`, CORS as `http.cors`). `heartbeat` and `election_timeout` set the lease service's
/// minimum TTL.
pub fn router(
    ctx: &ApiContext,
    hub: &Arc<WatchHub>,
    heartbeat: Duration,
    election_timeout: Duration,
    http: &crate::core::config::HttpFace,
) -> axum::Router {
    // Every service refuses messages above the limit before decoding them
    // (etcd's `MaxRecvMsgSize` on its whole gRPC server).
    let limit = ctx.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let grpc = tonic::service::Routes::new(
        PbKvServer::new(kv::KvService { ctx: ctx.clone() }).max_decoding_message_size(limit),
    )
    .add_service(
        PbMaintenanceServer::new(maintenance::MaintenanceService { ctx: ctx.clone() })
            .max_decoding_message_size(limit),
    )
    .add_service(
        PbClusterServer::new(cluster::ClusterService { ctx: ctx.clone() })
            .max_decoding_message_size(limit),
    )
    .add_service(
        PbLeaseServer::new(lease::LeaseService::new(
            ctx.clone(),
            heartbeat,
            election_timeout,
        ))
        .max_decoding_message_size(limit),
    )
    .add_service(
        watch::WatchServer::new(watch::WatchService {
            ctx: ctx.clone(),
            hub: hub.clone(),
        })
        .max_decoding_message_size(limit),
    )
    .add_service(
        crate::core::auth::pb::etcdserverpb::auth_server::AuthServer::new(auth::AuthService {
            ctx: ctx.clone(),
        })
        .max_decoding_message_size(limit),
    )
    .add_service(
        concurrency::pb::v3lockpb::lock_server::LockServer::new(lock::LockService {
            ctx: ctx.clone(),
        })
        .max_decoding_message_size(limit),
    )
    .add_service(
        concurrency::pb::v3electionpb::election_server::ElectionServer::new(
            election::ElectionService { ctx: ctx.clone() },
        )
        .max_decoding_message_size(limit),
    );
    let grpc = grpc
        .into_axum_router()
        .layer(axum::middleware::map_response(grpc_edge_statuses));
    let gateway = match gateway::router(grpc.clone(), ctx.max_request_bytes) {
        Ok(gateway) => gateway,
        Err(e) => {
            tracing::error!("the JSON gateway is off: {e}");
            axum::Router::new()
        }
    };
    let mut web = http::router(ctx.clone()).merge(gateway);
    if http.enable_v2 {
        web = web.merge(v2::router(grpc.clone(), ctx.clone()));
    }
    web = web.merge(ui::router(http.enable_ui, ctx.auth.cn_is_user));
    grpc.merge(web.layer(axum::middleware::from_fn_with_state(
        Arc::new(http::Cors::new(&http.cors)),
        http::cors,
    )))
}

/// Rewrites the statuses tonic gives to requests it refuses before any
/// service sees them into the ones etcd's clients get from grpc-go:
/// - a body it cannot decode (e.g. nesting beyond prost's recursion limit):
///   tonic says `Internal`; it is the client's input that is wrong, so
///   `InvalidArgument` with the decoder's message;
/// - a message above the size limit: tonic says `OutOfRange`; grpc-go (and
///   so etcd) says `ResourceExhausted`, "grpc: received message larger than
///   max (N vs. LIMIT)".
///
/// Only unary calls fail in the response headers (trailers-only), which is
/// where this looks; streams keep tonic's status.
pub async fn grpc_edge_statuses(
    mut response: axum::response::Response,
) -> axum::response::Response {
    let headers = response.headers_mut();
    let Some(code) = headers.get("grpc-status").map(|v| v.as_bytes().to_vec()) else {
        return response;
    };
    let message = headers
        .get("grpc-message")
        .map(|v| {
            percent_encoding::percent_decode(v.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let Some((code, message)) = edge_status(&code, &message) else {
        return response;
    };
    headers.insert("grpc-status", axum::http::HeaderValue::from(code as i32));
    let encoded =
        percent_encoding::utf8_percent_encode(&message, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    if let Ok(v) = axum::http::HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", v);
    }
    response
}

/// The status etcd's clients expect in place of tonic's `(code, message)`,
/// or `None` to keep it (see [`grpc_edge_statuses`]).
fn edge_status(code: &[u8], message: &str) -> Option<(tonic::Code, String)> {
    const TOO_LARGE: &str = "Error, decoded message length too large: found ";
    match code {
        b"13" if message.starts_with("failed to decode Protobuf message") => {
            Some((tonic::Code::InvalidArgument, message.to_string()))
        }
        b"11" if message.starts_with(TOO_LARGE) => {
            // "... found N bytes, the limit is: L bytes"
            let numbers: Vec<&str> = message[TOO_LARGE.len()..]
                .split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .collect();
            let (found, limit) = (numbers.first()?, numbers.get(1)?);
            Some((
                tonic::Code::ResourceExhausted,
                format!("grpc: received message larger than max ({found} vs. {limit})"),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_edge_errors_become_grpc_go_ones() {
        assert_eq!(
            edge_status(
                b"11",
                "Error, decoded message length too large: found 3000000 bytes, the limit is: 2097152 bytes"
            ),
            Some((
                tonic::Code::ResourceExhausted,
                "grpc: received message larger than max (3000000 vs. 2097152)".to_string()
            ))
        );
        assert_eq!(
            edge_status(
                b"13",
                "failed to decode Protobuf message: recursion limit reached"
            ),
            Some((
                tonic::Code::InvalidArgument,
                "failed to decode Protobuf message: recursion limit reached".to_string()
            ))
        );
        assert_eq!(edge_status(b"13", "etcdserver: storage: broken"), None);
        assert_eq!(
            edge_status(
                b"11",
                "etcdserver: mvcc: required revision is a future revision"
            ),
            None
        );
    }
}
