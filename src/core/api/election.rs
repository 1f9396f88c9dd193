//! `v3electionpb.Election`: etcd's leader election (`etcdserver/api/
//! v3election` over `clientv3/concurrency`'s election), on this member's
//! own KV API. A candidate's key is `name/<lease hex>` with its value and
//! lease; the leader is the key created first under `name/`. `Campaign`
//! waits until every earlier candidate's key is gone; `Proclaim` and
//! `Resign` act only while the leader key's create revision is the one
//! given; `Observe` streams the leader's value at every change. Errors are
//! etcd's plain ones, answered as Unknown: "election: not leader",
//! "election: no leader", `"leader" field must be provided`.

use std::pin::Pin;

use etcd_client::proto::PbKeyValue;
use etcd_client::{
    Compare, CompareOp, EventType, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::core::api::concurrency::pb::v3electionpb::{
    election_server::Election, CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest,
    LeaderResponse, ProclaimRequest, ProclaimResponse, ResignRequest, ResignResponse,
};
use crate::core::api::concurrency::{
    as_unknown, first_created, prefix_of, unknown, wait_deletes, DeleteOnDrop, Session,
};
use crate::core::api::{forwarded, ApiContext};
use crate::core::types::Revision;

/// etcd's `ErrElectionNotLeader`.
const NOT_LEADER: &str = "election: not leader";
/// etcd's `ErrElectionNoLeader`.
const NO_LEADER: &str = "election: no leader";
/// etcd's `ErrMissingLeaderKey`.
const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";

/// Observe answers buffered toward a slow observer.
const OBSERVE_BUFFER: usize = 16;

/// The Election service.
pub struct ElectionService {
    /// Shared API state.
    pub ctx: ApiContext,
}

fn to_pb(kv: &KeyValue) -> PbKeyValue {
    PbKeyValue {
        key: kv.key().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        value: kv.value().to_vec(),
        lease: kv.lease(),
    }
}

/// The leader key is still the one created at `leader.rev` (etcd's
/// Proclaim and Resign compare).
fn still_leader(leader: &LeaderKey) -> Compare {
    Compare::create_revision(leader.key.clone(), CompareOp::Equal, leader.rev)
}

impl ElectionService {
    /// Puts `value` on the leader key if it is still `leader` (its create
    /// revision unchanged); the answer's revision.
    async fn proclaim_as(
        &self,
        client: &mut etcd_client::Client,
        leader: &LeaderKey,
        value: Vec<u8>,
    ) -> Result<i64, Status> {
        let txn = Txn::new()
            .when([still_leader(leader)])
            .and_then([TxnOp::put(
                leader.key.clone(),
                value,
                Some(PutOptions::new().with_lease(leader.lease)),
            )]);
        let resp = client.txn(txn).await.map_err(unknown)?;
        if !resp.succeeded() {
            return Err(Status::unknown(NOT_LEADER));
        }
        Ok(resp.header().map_or(0, |h| h.revision()))
    }
}

type LeaderStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let (name, lease) = (&request.get_ref().name, request.get_ref().lease);
        self.ctx.check_named(&request, name, true, lease).await?;
        let req = request.into_inner();
        let Session {
            mut client,
            lease,
            prefix,
            key,
        } = Session::open(&self.ctx, &req.name, req.lease).await?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                req.value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = client.txn(txn).await.map_err(unknown)?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut leader = LeaderKey {
            name: req.name.clone(),
            key: key.clone(),
            rev: revision,
            lease,
        };
        let guard = DeleteOnDrop::new(client.clone(), key.clone());
        if !resp.succeeded() {
            // This lease already campaigns: keep its place, proclaim the
            // new value if it differs (etcd resigns if that fails).
            let existing = match resp.op_responses().first() {
                Some(TxnOpResponse::Get(g)) => g.kvs().first().map(to_pb),
                _ => None,
            };
            if let Some(kv) = existing {
                leader.rev = kv.create_revision;
                if kv.value != req.value {
                    self.proclaim_as(&mut client, &leader, req.value.clone())
                        .await?;
                }
            }
        }
        wait_deletes(&mut client, &prefix, leader.rev - 1)
            .await
            .map_err(as_unknown)?;
        guard.disarm();
        Ok(Response::new(CampaignResponse {
            header: Some(self.ctx.header(Revision(revision))),
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        if let Some(leader) = &request.get_ref().leader {
            self.ctx
                .check_held(&request, &leader.key, leader.lease)
                .await?;
        }
        let req = request.into_inner();
        let Some(leader) = req.leader else {
            return Err(Status::unknown(MISSING_LEADER_KEY));
        };
        let mut client = self.ctx.self_client().await?;
        let revision = self.proclaim_as(&mut client, &leader, req.value).await?;
        Ok(Response::new(ProclaimResponse {
            header: Some(self.ctx.header(Revision(revision))),
        }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        self.ctx
            .check_named(&request, &request.get_ref().name, false, 0)
            .await?;
        let req = request.into_inner();
        let mut client = self.ctx.self_client().await?;
        let resp = client
            .get(prefix_of(&req.name), Some(first_created()))
            .await
            .map_err(unknown)?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let Some(kv) = resp.kvs().first() else {
            return Err(Status::unknown(NO_LEADER));
        };
        Ok(Response::new(LeaderResponse {
            header: Some(self.ctx.header(Revision(revision))),
            kv: Some(to_pb(kv)),
        }))
    }

    type ObserveStream = LeaderStream;

    /// The leader now, then its value at every proclamation; when it
    /// resigns or its lease ends, the next leader, and so on, until the
    /// caller goes away.
    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        self.ctx
            .check_named(&request, &request.get_ref().name, false, 0)
            .await?;
        let req = request.into_inner();
        let client = self.ctx.self_client().await?;
        let ctx = self.ctx.clone();
        let (tx, rx) = mpsc::channel(OBSERVE_BUFFER);
        let gone = tx.clone();
        tokio::spawn(async move {
            let mut client = client;
            let prefix = prefix_of(&req.name);
            let observing = async {
                // A canceled watch (a compaction between the read and the
                // watch) starts over from a fresh read of the leader.
                'observe: loop {
                    let resp = client
                        .get(prefix.clone(), Some(first_created()))
                        .await
                        .map_err(forwarded)?;
                    let mut revision = resp.header().map_or(0, |h| h.revision());
                    let leader = match resp.kvs().first() {
                        Some(kv) => to_pb(kv),
                        None => {
                            // No leader yet: wait for the first candidate.
                            let options = WatchOptions::new()
                                .with_prefix()
                                .with_start_revision(revision + 1);
                            let mut w = client
                                .watch(prefix.clone(), Some(options))
                                .await
                                .map_err(forwarded)?;
                            let kv = loop {
                                let Some(r) = w.message().await.map_err(forwarded)? else {
                                    return Ok(());
                                };
                                if r.canceled() {
                                    continue 'observe;
                                }
                                if let Some(kv) = r
                                    .events()
                                    .iter()
                                    .filter(|e| e.event_type() == EventType::Put)
                                    .find_map(|e| e.kv())
                                {
                                    break to_pb(kv);
                                }
                            };
                            revision = kv.mod_revision;
                            kv
                        }
                    };
                    let key = leader.key.clone();
                    let first = LeaderResponse {
                        header: Some(ctx.header(Revision(revision))),
                        kv: Some(leader),
                    };
                    if tx.send(Ok(first)).await.is_err() {
                        return Ok(());
                    }
                    // Follow this leader until it is gone.
                    let options = WatchOptions::new().with_start_revision(revision + 1);
                    let mut w = client.watch(key, Some(options)).await.map_err(forwarded)?;
                    'leader: loop {
                        let Some(r) = w.message().await.map_err(forwarded)? else {
                            return Ok(());
                        };
                        if r.canceled() {
                            break 'leader;
                        }
                        let at = r.header().map_or(0, |h| h.revision());
                        for e in r.events() {
                            match (e.event_type(), e.kv()) {
                                (EventType::Put, Some(kv)) => {
                                    let resp = LeaderResponse {
                                        header: Some(ctx.header(Revision(at))),
                                        kv: Some(to_pb(kv)),
                                    };
                                    if tx.send(Ok(resp)).await.is_err() {
                                        return Ok(());
                                    }
                                }
                                _ => break 'leader,
                            }
                        }
                    }
                }
            };
            // The caller going away ends the task even while it waits for a
            // first candidate or a change that may never come (etcd ends
            // the loop on the stream's context).
            let result: Result<(), Status> = tokio::select! {
                result = observing => result,
                () = gone.closed() => Ok(()),
            };
            if let Err(status) = result {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        if let Some(leader) = &request.get_ref().leader {
            self.ctx.check_held(&request, &leader.key, 0).await?;
        }
        let req = request.into_inner();
        let Some(leader) = req.leader else {
            return Err(Status::unknown(MISSING_LEADER_KEY));
        };
        let mut client = self.ctx.self_client().await?;
        // Not an error when no longer leader (etcd's Resign).
        let txn = Txn::new()
            .when([still_leader(&leader)])
            .and_then([TxnOp::delete(leader.key.clone(), None)]);
        let resp = client.txn(txn).await.map_err(unknown)?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(Response::new(ResignResponse {
            header: Some(self.ctx.header(Revision(revision))),
        }))
    }
}
