//! `etcdserverpb.Maintenance`: `Status` (for `etcdctl endpoint status`),
//! `Alarm` (replicated, see `core::alarm`), `Hash` and `HashKV` (see
//! `mvcc::hash`), `MoveLeader` and `Defragment` (a manual LSM compaction;
//! it never stops the world), `Snapshot` (etcd's file format, see
//! `core::snapshot`), with etcd's answers and errors. `Downgrade` answers
//! `Unimplemented`.

use std::pin::Pin;

use etcd_client::proto::{
    PbAlarmRequest, PbAlarmResponse, PbDefragmentRequest, PbDefragmentResponse, PbDowngradeRequest,
    PbDowngradeResponse, PbHashKvRequest, PbHashKvResponse, PbHashRequest, PbHashResponse,
    PbMaintenanceService, PbMoveLeaderRequest, PbMoveLeaderResponse, PbSnapshotRequest,
    PbSnapshotResponse, PbStatusRequest, PbStatusResponse,
};
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::core::alarm;
use crate::core::api::{ApiContext, ETCD_VERSION};
use crate::core::errors::EtcdError;
use crate::core::mvcc::{self, ApplyResponse};
use crate::core::raft::proposal::Op;
use crate::core::raft::Event;
use crate::core::snapshot;
use crate::core::types::{MemberId, Revision};

/// Snapshot streams served at once.
pub const MAX_SNAPSHOT_STREAMS: usize = 4;
static SNAPSHOT_STREAMS: std::sync::LazyLock<std::sync::Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| {
        std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_SNAPSHOT_STREAMS))
    });

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
    /// Every action goes through Raft, GET included, and the answer has
    /// no header (etcd's `applierV3backend.Alarm` sets none).
    async fn alarm(
        &self,
        request: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        // GET: any user; ACTIVATE and DEACTIVATE: root (etcd 3.5.29).
        let who = if request.get_ref().action == 0 {
            self.ctx.someone(&request).await?
        } else {
            self.ctx.admin(&request).await?
        };
        let req = request.into_inner();
        match self
            .ctx
            .node
            .propose_as(Op::Alarm(req), &who, self.ctx.request_timeout)
            .await?
        {
            ApplyResponse::Alarms(alarms) => Ok(Response::new(PbAlarmResponse {
                header: None,
                alarms,
            })),
            other => Err(EtcdError::Internal(format!("unexpected {other:?}")).into()),
        }
    }

    async fn status(
        &self,
        request: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        self.ctx.someone(&request).await?;
        let st = &self.ctx.node.status;
        let snapshot = self.ctx.storage.db.read_tx();
        let revision = Revision(mvcc::revisions(&snapshot, &self.ctx.storage)?.current);
        // etcd's Status.errors: no leader, then each active alarm.
        let mut errors = Vec::new();
        if st.leader().is_none() {
            errors.push(EtcdError::NoLeader.to_string());
        }
        errors.extend(
            alarm::list(&snapshot, &self.ctx.storage)?
                .iter()
                .map(alarm::describe),
        );
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
            errors,
            db_size_in_use: in_use.min(db_size) as i64,
            is_learner: st.is_learner(),
            ..Default::default()
        }))
    }

    async fn defragment(
        &self,
        request: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        self.ctx.raw_admin(&request).await?;
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
        // etcd answers Defragment without a header.
        Ok(Response::new(PbDefragmentResponse { header: None }))
    }

    async fn hash(
        &self,
        request: Request<PbHashRequest>,
    ) -> Result<Response<PbHashResponse>, Status> {
        self.ctx.raw_admin(&request).await?;
        let s = self.ctx.storage.clone();
        let (hash, revision) = tokio::task::spawn_blocking(move || {
            let snapshot = s.db.read_tx();
            let revision = mvcc::revisions(&snapshot, &s)?.current;
            Ok::<_, EtcdError>((mvcc::hash::hash_backend(&snapshot, &s)?, revision))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(PbHashResponse {
            header: Some(self.ctx.header(Revision(revision))),
            hash,
        }))
    }

    /// etcd's `HashKV`: the hash of the history up to `revision` (0 = the
    /// current one); OutOfRange "etcdserver: mvcc: required revision has
    /// been compacted" at or below the compact revision, "… is a future
    /// revision" above the current one.
    async fn hash_kv(
        &self,
        request: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        self.ctx.raw_admin(&request).await?;
        let rev = request.into_inner().revision;
        let s = self.ctx.storage.clone();
        let h = tokio::task::spawn_blocking(move || mvcc::hash::hash_kv(&s.db.read_tx(), &s, rev))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(PbHashKvResponse {
            header: Some(self.ctx.header(Revision(h.current))),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// etcd's snapshot stream (see `core::snapshot::stream`): 32 KiB
    /// chunks, then the sha256, no header. Made on a thread of its own
    /// from one storage snapshot; a slow client slows only its stream (a
    /// few chunks are queued), and at most [`MAX_SNAPSHOT_STREAMS`] run at
    /// once (more: ResourceExhausted "etcdserver: too many requests").
    async fn snapshot(
        &self,
        request: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.ctx.raw_admin(&request).await?;
        let Ok(permit) = SNAPSHOT_STREAMS.clone().try_acquire_owned() else {
            return Err(EtcdError::TooManyRequests.into());
        };
        let s = self.ctx.storage.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                let _permit = permit;
                let probe = tx.clone();
                let sent = snapshot::stream(
                    &s,
                    |blob, remaining_bytes| {
                        tx.blocking_send(Ok(PbSnapshotResponse {
                            header: None,
                            remaining_bytes,
                            blob,
                            // etcd 3.6's storage version; 3.4 and 3.5 send none.
                            version: String::new(),
                        }))
                        .map_err(|_| snapshot::SnapshotError::Closed)
                    },
                    || probe.is_closed(),
                );
                match sent {
                    Ok(bytes) => tracing::info!(bytes, "sent a snapshot"),
                    Err(snapshot::SnapshotError::Closed) => {
                        tracing::info!("snapshot receiver went away")
                    }
                    Err(e) => {
                        tracing::error!("snapshot failed: {e}");
                        let _ = tx.blocking_send(Err(Status::unknown(e.to_string())));
                    }
                }
            })
            .map_err(|e| Status::unknown(format!("cannot start a snapshot: {e}")))?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn move_leader(
        &self,
        request: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        self.ctx.admin(&request).await?;
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
        // etcd answers MoveLeader without a header.
        Ok(Response::new(PbMoveLeaderResponse { header: None }))
    }

    async fn downgrade(
        &self,
        _: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(not_yet("Downgrade"))
    }
}
