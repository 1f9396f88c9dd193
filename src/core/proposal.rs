//! What goes into the Raft log: one [`RaftRequest`] per normal entry, encoded
//! with prost so that the etcd request types travel unchanged.

use etcd_client::proto::{
    PbCompactionRequest, PbDeleteRequest, PbLeaseGrantRequest, PbLeaseKeepAliveRequest,
    PbLeaseRevokeRequest, PbMember, PbPutRequest, PbTxnRequest,
};

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
    #[prost(oneof = "Op", tags = "2, 3, 4, 5, 6, 7, 8, 9, 11")]
    pub op: Option<Op>,
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
}
