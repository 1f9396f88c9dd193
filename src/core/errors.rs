//! etcd's client-visible errors: the exact gRPC codes and messages that etcd
//! clients match on (etcd `api/v3rpc/rpctypes/error.go`).

use tonic::{Code, Status};

/// An error a client can see, with etcd's gRPC code and message.
///
/// Raised by validation in the API layer and by the state machine when a
/// committed request cannot take effect (nothing is written then).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// `Range`/`Put`/`DeleteRange` with an empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `Put` with `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `Put` with `ignore_value` and a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `Put` with `ignore_lease` and a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A transaction with more than `--max-txn-ops` operations in one list.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// Transactions nested deeper than kvd accepts (see
    /// `core::api::kv::MAX_TXN_NESTING`; etcd bounds depth only through
    /// `--max-txn-ops`, but prost clients cannot decode deeper answers).
    #[error("etcdserver: too many nested transactions in txn request")]
    TxnTooDeep,
    /// A transaction that writes one key twice.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A request larger than `--max-request-bytes`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// A revision at or below the compact revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A revision above the current one.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A lease id that no lease has.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// `LeaseGrant` with an id that is taken.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// `LeaseGrant` with a TTL above etcd's `MaxLeaseTTL`.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A member id that no member has.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// A member id that is taken.
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    /// Peer URLs another member already has.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    /// The change would leave too few started voting members (etcd's strict
    /// reconfiguration check).
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// `MemberPromote` of a voting member.
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    /// `MemberPromote` of a learner that has not caught up.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// More learners than etcd allows (1).
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// A request a learner does not serve.
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    /// A request only the leader serves.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// `MoveLeader` to a member that cannot lead.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// `MoveLeader` did not complete in time.
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    /// No leader is known, so a request cannot be ordered.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The leader changed while the request waited.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The member is replacing its state with a Raft snapshot; what it
    /// holds is half old, half new, so reads wait for a retry (etcd blocks
    /// them while it swaps its backend).
    #[error("etcdserver: member is applying a snapshot, retry")]
    ApplyingSnapshot,
    /// The Raft task's queue or its table of waiting proposals is full
    /// (etcd's `ErrTooManyRequests`); the client should back off and retry.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// The NOSPACE alarm is raised (`--quota-backend-bytes` exceeded): puts,
    /// txns with puts and lease grants are refused until it is disarmed.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A committed Raft entry that cannot be decoded: it fails on every
    /// member alike, nothing is written and the applied index moves on.
    #[error("etcdserver: malformed request: {0}")]
    MalformedRequest(String),
    /// The request did not complete within the request timeout.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The member is stopping.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// A fault inside the member (storage, encoding); the message says which.
    #[error("etcdserver: {0}")]
    Internal(String),
    /// `AuthEnable` without a user `root`.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// `AuthEnable` while user `root` lacks the role `root`.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// `UserAdd` of an existing user.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// A request without an identity while auth is enabled, or an empty name.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// A user that does not exist.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// `RoleAdd` of an existing role.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// A role that does not exist.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// `RoleAdd` with an empty name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// A wrong user name or password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// `RoleGrantPermission` without a permission.
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    /// The user's roles do not allow the request.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// `UserRevokeRole` of a role the user does not hold.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// `RoleRevokePermission` of a permission the role does not hold.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// `Authenticate` while auth is disabled.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// A token that is unknown, expired or malformed.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// Removing `root`, its role, or an invalid permission range.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// Users or roles changed between the permission check and the apply.
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// `Authenticate` with a password for a user made with `--no-password`
    /// (etcd leaves it unmapped: clients see Unknown).
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    /// The admin check of Defragment, Snapshot, Hash and HashKV, which
    /// etcd answers unmapped (Unknown, "auth: …").
    #[error("auth: {0}")]
    RawAuth(&'static str),
}

impl EtcdError {
    /// The gRPC code etcd uses for this error.
    pub fn code(&self) -> Code {
        match self {
            Self::EmptyKey
            | Self::ValueProvided
            | Self::LeaseProvided
            | Self::TooManyOps
            | Self::DuplicateKey
            | Self::TxnTooDeep
            | Self::MalformedRequest(_)
            | Self::RequestTooLarge
            | Self::KeyNotFound => Code::InvalidArgument,
            Self::Compacted | Self::FutureRevision | Self::LeaseTtlTooLarge => Code::OutOfRange,
            Self::LeaseExists
            | Self::MemberExists
            | Self::PeerUrlExists
            | Self::MemberNotLearner
            | Self::LearnerNotReady
            | Self::TooManyLearners
            | Self::NotLeader
            | Self::BadLeaderTransferee => Code::FailedPrecondition,
            Self::MemberNotFound => Code::NotFound,
            // etcd has no gRPC mapping for it, so clients see Unknown.
            Self::NotEnoughStartedMembers => Code::Unknown,
            Self::NotSupportedForLearner | Self::LeaderTransferTimeout => Code::Unavailable,
            Self::LeaseNotFound => Code::NotFound,
            Self::NoLeader
            | Self::LeaderChanged
            | Self::ApplyingSnapshot
            | Self::Stopped
            | Self::Timeout => Code::Unavailable,
            Self::TooManyRequests | Self::NoSpace => Code::ResourceExhausted,
            Self::Internal(_) => Code::Internal,
            Self::RootUserNotExist
            | Self::RootRoleNotExist
            | Self::UserAlreadyExist
            | Self::UserNotFound
            | Self::RoleAlreadyExist
            | Self::RoleNotFound
            | Self::RoleNotGranted
            | Self::PermissionNotGranted
            | Self::AuthNotEnabled => Code::FailedPrecondition,
            Self::UserEmpty
            | Self::RoleEmpty
            | Self::AuthFailed
            | Self::PermissionNotGiven
            | Self::InvalidAuthMgmt
            | Self::AuthOldRevision => Code::InvalidArgument,
            Self::PermissionDenied => Code::PermissionDenied,
            Self::InvalidAuthToken => Code::Unauthenticated,
            Self::NoPasswordUser | Self::RawAuth(_) => Code::Unknown,
        }
    }
}

impl From<EtcdError> for Status {
    fn from(e: EtcdError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

impl From<fjall::Error> for EtcdError {
    fn from(e: fjall::Error) -> Self {
        Self::Internal(format!("storage: {e}"))
    }
}
