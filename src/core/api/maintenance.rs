//! `etcdserverpb.Maintenance`: `Status` (for `etcdctl endpoint status`),
//! `Alarm` (no alarms are raised yet) and `Defragment` (a manual LSM
//! compaction; it never stops the world). The rest answers `Unimplemented`
//! until its issue lands.

use std::pin::Pin;

use etcd_client::proto::{
    PbAlarmRequest, PbAlarmResponse, PbDefragmentRequest, PbDefragmentResponse, PbDowngradeRequest,
    PbDowngradeResponse, PbHashKvRequest, PbHashKvResponse, PbHashRequest, PbHashResponse,
    PbMaintenanceService, PbMoveLeaderRequest, PbMoveLeaderResponse, PbSnapshotRequest,
    PbSnapshotResponse, PbStatusRequest, PbStatusResponse,
};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::core::api::{ApiContext, ETCD_VERSION};
use crate::core::errors::EtcdError;
use crate::core::raft::Event;
use crate::core::types::MemberId;

/// How long `MoveLeader` waits for the transferee to take over.
pub const LEADER_TRANSFER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The Maintenance service.
pub struct MaintenanceService {
    /// Shared API state.
    pub ctx: ApiContext,
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<PbSnapshotResponse, Status>> + Send>>;

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("kvd: {what} is not implemented yet"))
}

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(&self, _: Request<PbAlarmRequest>) -> Result<Response<PbAlarmResponse>, Status> {
        let revision = self.ctx.current_revision()?;
        Ok(Response::new(PbAlarmResponse {
            header: Some(self.ctx.header(revision)),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        let st = &self.ctx.node.status;
        let revision = self.ctx.current_revision()?;
        let (db_size, in_use) = self
            .ctx
            .storage
            .disk_usage()
            .map_err(|e| Status::internal(format!("etcdserver: {e}")))?;
        Ok(Response::new(PbStatusResponse {
            header: Some(self.ctx.header(revision)),
            version: ETCD_VERSION.to_string(),
            db_size: db_size as i64,
            leader: st.leader().map_or(0, |l| l.0),
            raft_index: st.raft_index().0,
            raft_term: st.term(),
            raft_applied_index: self.ctx.node.applied.borrow().0,
            errors: Vec::new(),
            db_size_in_use: in_use.min(db_size) as i64,
            is_learner: st.is_learner(),
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        _: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        let s = self.ctx.storage.clone();
        tokio::task::spawn_blocking(move || {
            // Flush first, so that what the memtables hold is compacted
            // too and the journals behind them can go; then merge every
            // keyspace that churns into its last level (compressed there).
            for ks in [&s.kv, &s.rev, &s.hist, &s.raft_log, &s.meta, &s.lease_keys] {
                ks.inner().rotate_memtable_and_wait()?;
                ks.inner().major_compact()?;
            }
            Ok::<_, fjall::Error>(())
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("etcdserver: {e}")))?;
        let revision = self.ctx.current_revision()?;
        Ok(Response::new(PbDefragmentResponse {
            header: Some(self.ctx.header(revision)),
        }))
    }

    async fn hash(&self, _: Request<PbHashRequest>) -> Result<Response<PbHashResponse>, Status> {
        Err(not_yet("Hash"))
    }

    async fn hash_kv(
        &self,
        _: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        Err(not_yet("HashKV"))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(not_yet("Snapshot"))
    }

    async fn move_leader(
        &self,
        request: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        let to = MemberId(request.into_inner().target_id);
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.ctx.node.send(Event::TransferLeader { to, reply })?;
        rx.await.map_err(|_| EtcdError::Stopped)??;
        let deadline = tokio::time::Instant::now() + LEADER_TRANSFER_TIMEOUT;
        while self.ctx.node.status.leader() != Some(to) {
            if tokio::time::Instant::now() >= deadline {
                return Err(EtcdError::LeaderTransferTimeout.into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let revision = self.ctx.current_revision()?;
        Ok(Response::new(PbMoveLeaderResponse {
            header: Some(self.ctx.header(revision)),
        }))
    }

    async fn downgrade(
        &self,
        _: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(not_yet("Downgrade"))
    }
}
