//! The JSON gateway's route table: which gRPC method each `/v3/…` path
//! calls (etcd's `google.api.http` annotations in `rpc.proto`, v3lock and
//! v3election, 3.5), with the descriptors that turn JSON into protobuf and
//! back, and a codec that carries the encoded bytes through tonic as they
//! are.

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::{Buf, BufMut, Bytes};
use prost_reflect::{DescriptorPool, MessageDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// `(path under /v3/, gRPC service, method)`: etcd's HTTP bindings,
/// including the `kv/lease/…` aliases of the lease calls.
const BINDINGS: &[(&str, &str, &str)] = &[
    ("kv/range", "etcdserverpb.KV", "Range"),
    ("kv/put", "etcdserverpb.KV", "Put"),
    ("kv/deleterange", "etcdserverpb.KV", "DeleteRange"),
    ("kv/txn", "etcdserverpb.KV", "Txn"),
    ("kv/compaction", "etcdserverpb.KV", "Compact"),
    ("watch", "etcdserverpb.Watch", "Watch"),
    ("lease/grant", "etcdserverpb.Lease", "LeaseGrant"),
    ("lease/revoke", "etcdserverpb.Lease", "LeaseRevoke"),
    ("kv/lease/revoke", "etcdserverpb.Lease", "LeaseRevoke"),
    ("lease/keepalive", "etcdserverpb.Lease", "LeaseKeepAlive"),
    ("lease/timetolive", "etcdserverpb.Lease", "LeaseTimeToLive"),
    (
        "kv/lease/timetolive",
        "etcdserverpb.Lease",
        "LeaseTimeToLive",
    ),
    ("lease/leases", "etcdserverpb.Lease", "LeaseLeases"),
    ("kv/lease/leases", "etcdserverpb.Lease", "LeaseLeases"),
    ("cluster/member/add", "etcdserverpb.Cluster", "MemberAdd"),
    (
        "cluster/member/remove",
        "etcdserverpb.Cluster",
        "MemberRemove",
    ),
    (
        "cluster/member/update",
        "etcdserverpb.Cluster",
        "MemberUpdate",
    ),
    ("cluster/member/list", "etcdserverpb.Cluster", "MemberList"),
    (
        "cluster/member/promote",
        "etcdserverpb.Cluster",
        "MemberPromote",
    ),
    ("maintenance/alarm", "etcdserverpb.Maintenance", "Alarm"),
    ("maintenance/status", "etcdserverpb.Maintenance", "Status"),
    (
        "maintenance/defragment",
        "etcdserverpb.Maintenance",
        "Defragment",
    ),
    ("maintenance/hash", "etcdserverpb.Maintenance", "Hash"),
    ("maintenance/hashkv", "etcdserverpb.Maintenance", "HashKV"),
    (
        "maintenance/snapshot",
        "etcdserverpb.Maintenance",
        "Snapshot",
    ),
    (
        "maintenance/transfer-leadership",
        "etcdserverpb.Maintenance",
        "MoveLeader",
    ),
    (
        "maintenance/downgrade",
        "etcdserverpb.Maintenance",
        "Downgrade",
    ),
    ("auth/enable", "etcdserverpb.Auth", "AuthEnable"),
    ("auth/disable", "etcdserverpb.Auth", "AuthDisable"),
    ("auth/status", "etcdserverpb.Auth", "AuthStatus"),
    ("auth/authenticate", "etcdserverpb.Auth", "Authenticate"),
    ("auth/user/add", "etcdserverpb.Auth", "UserAdd"),
    ("auth/user/get", "etcdserverpb.Auth", "UserGet"),
    ("auth/user/list", "etcdserverpb.Auth", "UserList"),
    ("auth/user/delete", "etcdserverpb.Auth", "UserDelete"),
    (
        "auth/user/changepw",
        "etcdserverpb.Auth",
        "UserChangePassword",
    ),
    ("auth/user/grant", "etcdserverpb.Auth", "UserGrantRole"),
    ("auth/user/revoke", "etcdserverpb.Auth", "UserRevokeRole"),
    ("auth/role/add", "etcdserverpb.Auth", "RoleAdd"),
    ("auth/role/get", "etcdserverpb.Auth", "RoleGet"),
    ("auth/role/list", "etcdserverpb.Auth", "RoleList"),
    ("auth/role/delete", "etcdserverpb.Auth", "RoleDelete"),
    (
        "auth/role/grant",
        "etcdserverpb.Auth",
        "RoleGrantPermission",
    ),
    (
        "auth/role/revoke",
        "etcdserverpb.Auth",
        "RoleRevokePermission",
    ),
    ("lock/lock", "v3lockpb.Lock", "Lock"),
    ("lock/unlock", "v3lockpb.Lock", "Unlock"),
    ("election/campaign", "v3electionpb.Election", "Campaign"),
    ("election/proclaim", "v3electionpb.Election", "Proclaim"),
    ("election/leader", "v3electionpb.Election", "Leader"),
    ("election/observe", "v3electionpb.Election", "Observe"),
    ("election/resign", "v3electionpb.Election", "Resign"),
];

/// The descriptors build.rs made from `proto/gateway` (a FileDescriptorSet).
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/gateway.bin"));

/// How a method exchanges messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses (snapshot, observe).
    ServerStreaming,
    /// Streams both ways (watch, lease keep-alive).
    Bidi,
}

/// One gRPC method the gateway can call.
#[derive(Debug, Clone)]
pub struct Method {
    /// `/package.Service/Method`.
    pub grpc_path: http::uri::PathAndQuery,
    /// The request message.
    pub input: MessageDescriptor,
    /// The response message.
    pub output: MessageDescriptor,
    /// Unary or streaming.
    pub kind: Kind,
}

/// The gateway's methods by path under `/v3/`.
#[derive(Debug)]
pub struct Routes(HashMap<&'static str, Method>);

static ROUTES: LazyLock<Result<Routes, String>> = LazyLock::new(Routes::load);

impl Routes {
    /// The route table, built once from the embedded descriptors.
    ///
    /// # Errors
    /// The descriptors lack a bound method (a build that left `proto/gateway`
    /// and [`BINDINGS`] apart).
    pub fn get() -> Result<&'static Routes, String> {
        ROUTES.as_ref().map_err(Clone::clone)
    }

    fn load() -> Result<Routes, String> {
        let pool = DescriptorPool::decode(DESCRIPTORS)
            .map_err(|e| format!("the gateway's descriptors: {e}"))?;
        let mut routes = HashMap::new();
        for &(path, service, method) in BINDINGS {
            let found = pool
                .get_service_by_name(service)
                .and_then(|s| s.methods().find(|m| m.name() == method))
                .ok_or_else(|| format!("the gateway's descriptors lack {service}/{method}"))?;
            let kind = match (found.is_client_streaming(), found.is_server_streaming()) {
                (false, false) => Kind::Unary,
                (false, true) => Kind::ServerStreaming,
                _ => Kind::Bidi,
            };
            let grpc_path = http::uri::PathAndQuery::try_from(format!("/{service}/{method}"))
                .map_err(|e| format!("{service}/{method}: {e}"))?;
            routes.insert(
                path,
                Method {
                    grpc_path,
                    input: found.input(),
                    output: found.output(),
                    kind,
                },
            );
        }
        Ok(Routes(routes))
    }

    /// Every bound path and its method, sorted by path.
    pub fn all(&self) -> Vec<(&'static str, &Method)> {
        let mut all: Vec<_> = self.0.iter().map(|(p, m)| (*p, m)).collect();
        all.sort_by_key(|(p, _)| *p);
        all
    }

    /// The method bound to `path` (after `/v3/`), if any.
    pub fn method(&self, path: &str) -> Option<&Method> {
        self.0.get(path)
    }
}

/// A tonic codec of already-encoded messages: the gateway encodes and
/// decodes with the descriptors, tonic only frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_binding_names_a_method_of_the_descriptors() {
        let routes = Routes::get().unwrap();
        assert_eq!(routes.0.len(), BINDINGS.len());
        let range = routes.method("kv/range").unwrap();
        assert_eq!(range.grpc_path.as_str(), "/etcdserverpb.KV/Range");
        assert_eq!(range.input.full_name(), "etcdserverpb.RangeRequest");
        assert_eq!(range.kind, Kind::Unary);
        assert_eq!(routes.method("watch").unwrap().kind, Kind::Bidi);
        assert_eq!(
            routes.method("maintenance/snapshot").unwrap().kind,
            Kind::ServerStreaming
        );
        assert_eq!(
            routes.method("election/observe").unwrap().kind,
            Kind::ServerStreaming
        );
        assert!(routes.method("kv/nosuch").is_none());
    }
}
