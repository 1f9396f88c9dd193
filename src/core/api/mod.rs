//! The client-facing etcd v3 API: gRPC services and the HTTP endpoints on
//! the client port.
//!
//! Services validate requests (etcd's `api/v3rpc` checks), send writes
//! through Raft via [`NodeHandle`] and serve reads from a storage snapshot
//! after a ReadIndex barrier (or at once when `serializable`).

pub mod cluster;
pub mod http;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;

use std::time::Duration;

use etcd_client::proto::PbResponseHeader;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::core::lease::Lessor;
use crate::core::node::NodeHandle;
use crate::core::storage::Storage;

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
    /// How long a request may wait for Raft (etcd: 5 s + 2 election timeouts).
    pub request_timeout: Duration,
    /// Lease clocks, for `LeaseTimeToLive`.
    pub lessor: Arc<Lessor>,
}

impl ApiContext {
    /// A response header for `revision` with this member's ids and term.
    pub fn header(&self, revision: i64) -> PbResponseHeader {
        let st = &self.node.status;
        PbResponseHeader {
            cluster_id: st.cluster_id,
            member_id: st.member_id,
            revision,
            raft_term: st.term.load(Ordering::Relaxed),
        }
    }

    /// etcd serves a learner only `Status`, `MemberList` and serializable
    /// `Range`: everything else answers this error there.
    ///
    /// # Errors
    /// [`EtcdError::NotSupportedForLearner`] on a learner.
    pub fn reject_learner(&self) -> Result<(), crate::core::errors::EtcdError> {
        if self.node.status.is_learner.load(Ordering::Relaxed) {
            return Err(crate::core::errors::EtcdError::NotSupportedForLearner);
        }
        Ok(())
    }

    /// Replaces the header of a state-machine response with a full one.
    pub fn fill(&self, header: &mut Option<PbResponseHeader>) {
        let revision = header.as_ref().map_or(0, |h| h.revision);
        *header = Some(self.header(revision));
    }
}
