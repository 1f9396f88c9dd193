//! What goes into the Raft log: one [`RaftRequest`] per normal entry, encoded
//! with prost so that the etcd request types travel unchanged.

use etcd_client::proto::{
    PbAlarmRequest, PbCompactionRequest, PbDeleteRequest, PbLeaseGrantRequest,
    PbLeaseKeepAliveRequest, PbLeaseRevokeRequest, PbMember, PbPutRequest, PbTxnRequest,
};
use prost::Message as _;

use crate::core::auth::apply::AuthOp;
use crate::core::auth::pb::etcdserverpb as auth_pb;

/// One proposal, as stored in a Raft log entry's `data`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftRequest {
    /// Matches the answer to the waiting client on the proposing member:
    /// unique within one run of that member (it starts from the clock at
    /// start-up, so entries replayed from an earlier run never match).
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The member that proposed the entry; only it answers a client.
    #[prost(uint64, tag = "10")]
    pub origin: u64,
    /// The operation.
    #[prost(
        oneof = "Op",
        tags = "2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24"
    )]
    pub op: Option<Op>,
    /// With auth enabled: the user the proposer resolved the request to
    /// (etcd's `RequestHeader.username`); admin operations are checked
    /// again against it when applied.
    #[prost(string, tag = "30")]
    pub auth_user: String,
    /// With auth enabled: the auth revision the request's permissions were
    /// checked at (0 = none); an entry applying after users or roles
    /// changed fails with "revision of auth store is old", as in etcd.
    #[prost(uint64, tag = "31")]
    pub auth_revision: u64,
}

/// The operations a Raft entry can carry.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Op {
    /// `KV.Put`.
    #[prost(message, tag = "2")]
    Put(PbPutRequest),
    /// `KV.DeleteRange`.
    #[prost(message, tag = "3")]
    DeleteRange(PbDeleteRequest),
    /// `KV.Txn`.
    #[prost(message, tag = "4")]
    Txn(PbTxnRequest),
    /// `KV.Compact`.
    #[prost(message, tag = "5")]
    Compaction(PbCompactionRequest),
    /// A member announces its name and client URLs (etcd's `publish`).
    #[prost(message, tag = "6")]
    Publish(MemberAttributes),
    /// `Lease.LeaseGrant`, with the lease id already chosen.
    #[prost(message, tag = "7")]
    LeaseGrant(PbLeaseGrantRequest),
    /// `Lease.LeaseRevoke`, or an expiry decided by the leader.
    #[prost(message, tag = "8")]
    LeaseRevoke(PbLeaseRevokeRequest),
    /// One keep-alive of `Lease.LeaseKeepAlive` (renews the lease's clock on
    /// every member when applied).
    #[prost(message, tag = "9")]
    LeaseKeepAlive(PbLeaseKeepAliveRequest),
    /// `Cluster.MemberUpdate`: new peer URLs of a member (etcd applies it
    /// as `ConfChangeUpdateNode`; it changes no Raft configuration).
    #[prost(message, tag = "11")]
    MemberUpdate(PbMember),
    /// `Maintenance.Alarm` (get, activate, deactivate), and the NOSPACE
    /// alarm a member raises when its backend exceeds the quota; alarms
    /// are replicated state, as in etcd.
    #[prost(message, tag = "12")]
    Alarm(PbAlarmRequest),
    /// `Auth.AuthEnable`.
    #[prost(message, tag = "13")]
    AuthEnable(auth_pb::AuthEnableRequest),
    /// `Auth.AuthDisable`.
    #[prost(message, tag = "14")]
    AuthDisable(auth_pb::AuthDisableRequest),
    /// `Auth.Authenticate`, the password checked by the proposer (never
    /// in the log): the user and the token's random prefix.
    #[prost(message, tag = "15")]
    Authenticate(AuthenticateEntry),
    /// `Auth.UserAdd`, the password replaced by its bcrypt hash.
    #[prost(message, tag = "16")]
    UserAdd(auth_pb::AuthUserAddRequest),
    /// `Auth.UserDelete`.
    #[prost(message, tag = "17")]
    UserDelete(auth_pb::AuthUserDeleteRequest),
    /// `Auth.UserChangePassword`, the password replaced by its bcrypt hash.
    #[prost(message, tag = "18")]
    UserChangePassword(auth_pb::AuthUserChangePasswordRequest),
    /// `Auth.UserGrantRole`.
    #[prost(message, tag = "19")]
    UserGrantRole(auth_pb::AuthUserGrantRoleRequest),
    /// `Auth.UserRevokeRole`.
    #[prost(message, tag = "20")]
    UserRevokeRole(auth_pb::AuthUserRevokeRoleRequest),
    /// `Auth.RoleAdd`.
    #[prost(message, tag = "21")]
    RoleAdd(auth_pb::AuthRoleAddRequest),
    /// `Auth.RoleDelete`.
    #[prost(message, tag = "22")]
    RoleDelete(auth_pb::AuthRoleDeleteRequest),
    /// `Auth.RoleGrantPermission`.
    #[prost(message, tag = "23")]
    RoleGrantPermission(auth_pb::AuthRoleGrantPermissionRequest),
    /// `Auth.RoleRevokePermission`.
    #[prost(message, tag = "24")]
    RoleRevokePermission(auth_pb::AuthRoleRevokePermissionRequest),
}

/// An `Authenticate` as it travels in the log (etcd's
/// `InternalAuthenticateRequest` without the password).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthenticateEntry {
    /// The user.
    #[prost(string, tag = "1")]
    pub name: String,
    /// 16 random letters; the token is `<prefix>.<entry index>`.
    #[prost(string, tag = "2")]
    pub prefix: String,
}

impl Op {
    /// The auth operation this is, if it is one.
    pub fn auth_op(&self) -> Option<AuthOp> {
        Some(match self {
            Op::AuthEnable(_) => AuthOp::Enable,
            Op::AuthDisable(_) => AuthOp::Disable,
            Op::Authenticate(a) => AuthOp::Authenticate {
                name: a.name.clone(),
                prefix: a.prefix.clone(),
            },
            Op::UserAdd(r) => AuthOp::UserAdd(r.clone()),
            Op::UserDelete(r) => AuthOp::UserDelete(r.name.clone()),
            Op::UserChangePassword(r) => AuthOp::UserChangePassword(r.clone()),
            Op::UserGrantRole(r) => AuthOp::UserGrantRole(r.clone()),
            Op::UserRevokeRole(r) => AuthOp::UserRevokeRole(r.clone()),
            Op::RoleAdd(r) => AuthOp::RoleAdd(r.name.clone()),
            Op::RoleDelete(r) => AuthOp::RoleDelete(r.role.clone()),
            Op::RoleGrantPermission(r) => AuthOp::RoleGrantPermission(r.clone()),
            Op::RoleRevokePermission(r) => AuthOp::RoleRevokePermission(r.clone()),
            _ => return None,
        })
    }
}

/// The context of a Raft conf change entry: who proposed it and the member
/// record it adds, promotes or removes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfChangeContext {
    /// The proposal id on the proposing member (see [`RaftRequest::id`]).
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The proposing member.
    #[prost(uint64, tag = "2")]
    pub origin: u64,
    /// The member record (for a removal, only its id matters).
    #[prost(message, optional, tag = "3")]
    pub member: Option<PbMember>,
}

/// The attributes a member publishes through Raft once it has started.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberAttributes {
    /// The member id (Raft node id).
    #[prost(uint64, tag = "1")]
    pub member_id: u64,
    /// Its `--name`.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Its `--advertise-client-urls`.
    #[prost(string, repeated, tag = "3")]
    pub client_urls: Vec<String>,
    /// Without a peer CA: the SHA-256 fingerprint of its peer certificate,
    /// pinned by every member when first published (`transport::pins`).
    #[prost(string, tag = "4")]
    pub peer_fingerprint: String,
}

/// Most transactions nested below a request's top-level one.
///
/// etcd bounds nesting only through `--max-txn-ops` (each level's budget is
/// its parent's minus the parent's width, so 128 allows ~129 levels), but
/// prost, which decodes kvd's Raft entries and the answers of every
/// prost-based client, stops at 100 message levels, and each nested level
/// costs two (`RequestOp` + `TxnRequest`). 32 levels keep requests, Raft
/// entries and responses within 70 levels, with room to spare; deeper
/// requests get `etcdserver: too many nested transactions in txn request`
/// from the API before anything is proposed.
pub const MAX_TXN_NESTING: usize = 32;

/// Only the routing fields of a [`RaftRequest`]; decoding it skips every
/// other field without looking inside, so it succeeds on any well-formed
/// wire data, however deep the operation nests.
#[derive(Clone, PartialEq, prost::Message)]
struct RaftRequestRoute {
    /// [`RaftRequest::id`].
    #[prost(uint64, tag = "1")]
    id: u64,
    /// [`RaftRequest::origin`].
    #[prost(uint64, tag = "10")]
    origin: u64,
}

/// What the data of a normal Raft entry holds.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryData {
    /// No data: the empty entry a new leader appends.
    Empty,
    /// A request.
    Request(RaftRequest),
    /// Data that does not decode as a [`RaftRequest`]. Every member sees the
    /// same bytes and the same failure, so applying it fails that one request
    /// everywhere alike (nothing is written, the applied index moves on).
    Malformed {
        /// The proposal id, when the routing fields could be read (0 if not).
        id: u64,
        /// The proposing member, when readable (0 if not).
        origin: u64,
        /// The decoder's message.
        reason: String,
    },
}

/// Decodes the data of a normal Raft entry; never fails and never panics:
/// whatever a member (or a corrupt log) put into the log comes back as
/// [`EntryData::Malformed`] rather than as an error that would stop the
/// Raft task.
pub fn decode_entry(data: &[u8]) -> EntryData {
    if data.is_empty() {
        return EntryData::Empty;
    }
    match RaftRequest::decode(data) {
        Ok(req) => EntryData::Request(req),
        Err(e) => {
            let route = RaftRequestRoute::decode(data).unwrap_or_default();
            EntryData::Malformed {
                id: route.id,
                origin: route.origin,
                reason: e.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{
        PbKeyValue, PbRangeRequest, PbRangeResponse, PbResponseHeader, PbResponseOp,
        PbTxnOpRequest, PbTxnOpResponse, PbTxnRequestOp, PbTxnResponse,
    };

    /// A txn with `nested` txns below it, each level one op, `bottom` last.
    fn nested_txn(nested: usize, bottom: PbTxnOpRequest) -> PbTxnRequest {
        let mut txn = PbTxnRequest {
            success: vec![PbTxnRequestOp {
                request: Some(bottom),
            }],
            ..Default::default()
        };
        for _ in 0..nested {
            txn = PbTxnRequest {
                success: vec![PbTxnRequestOp {
                    request: Some(PbTxnOpRequest::RequestTxn(txn)),
                }],
                ..Default::default()
            };
        }
        txn
    }

    /// The deepest answer such a txn gets: headers on every level, a range
    /// with a key-value at the bottom.
    fn nested_response(nested: usize) -> PbTxnResponse {
        let header = Some(PbResponseHeader::default());
        let mut resp = PbTxnResponse {
            header,
            succeeded: true,
            responses: vec![PbResponseOp {
                response: Some(PbTxnOpResponse::ResponseRange(PbRangeResponse {
                    header,
                    kvs: vec![PbKeyValue {
                        key: b"k".to_vec(),
                        ..Default::default()
                    }],
                    more: false,
                    count: 1,
                })),
            }],
        };
        for _ in 0..nested {
            resp = PbTxnResponse {
                header,
                succeeded: true,
                responses: vec![PbResponseOp {
                    response: Some(PbTxnOpResponse::ResponseTxn(resp)),
                }],
            };
        }
        resp
    }

    #[test]
    fn every_accepted_nesting_decodes_as_entry_and_as_answer() {
        for nested in 0..=MAX_TXN_NESTING {
            let txn = nested_txn(
                nested,
                PbTxnOpRequest::RequestRange(PbRangeRequest {
                    key: b"k".to_vec(),
                    ..Default::default()
                }),
            );
            let req = RaftRequest {
                id: 7,
                origin: 9,
                op: Some(Op::Txn(txn)),
                ..RaftRequest::default()
            };
            assert_eq!(
                decode_entry(&req.encode_to_vec()),
                EntryData::Request(req),
                "nesting {nested}"
            );
            let resp = nested_response(nested);
            assert_eq!(
                PbTxnResponse::decode(resp.encode_to_vec().as_slice()).ok(),
                Some(resp),
                "answer at nesting {nested}"
            );
        }
        // The margin is real: ten levels more still decode everywhere.
        let deeper = MAX_TXN_NESTING + 10;
        let resp = nested_response(deeper);
        assert!(PbTxnResponse::decode(resp.encode_to_vec().as_slice()).is_ok());
        let txn = nested_txn(deeper, PbTxnOpRequest::RequestPut(PbPutRequest::default()));
        let req = RaftRequest {
            id: 1,
            origin: 1,
            op: Some(Op::Txn(txn)),
            ..RaftRequest::default()
        };
        assert!(matches!(
            decode_entry(&req.encode_to_vec()),
            EntryData::Request(_)
        ));
    }

    #[test]
    fn an_entry_too_deep_to_decode_is_malformed_with_its_route() {
        // 60 nested levels: beyond prost's recursion limit inside a RaftRequest.
        let txn = nested_txn(
            60,
            PbTxnOpRequest::RequestPut(PbPutRequest {
                key: b"k".to_vec(),
                ..Default::default()
            }),
        );
        let data = RaftRequest {
            id: 42,
            origin: 7,
            op: Some(Op::Txn(txn)),
            ..RaftRequest::default()
        }
        .encode_to_vec();
        match decode_entry(&data) {
            EntryData::Malformed { id, origin, reason } => {
                assert_eq!((id, origin), (42, 7));
                assert!(reason.contains("recursion limit"), "{reason}");
            }
            other => panic!("expected a malformed entry, got {other:?}"),
        }
    }

    #[test]
    fn garbage_and_empty_data_never_fail() {
        assert_eq!(decode_entry(&[]), EntryData::Empty);
        for data in [&[0xFFu8; 3][..], &[0x0A, 0x80][..], &[0x08][..]] {
            assert!(matches!(decode_entry(data), EntryData::Malformed { .. }));
        }
    }
}
