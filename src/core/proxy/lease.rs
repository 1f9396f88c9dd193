//! The proxy's `etcdserverpb.Lease`. Keep-alives of all local streams of
//! one caller share one upstream keep-alive stream, and a renewal of a
//! lease already in flight is not sent again: every local stream that
//! asked gets the one answer. The proxy never renews on its own, so a
//! lease lives exactly its TTL after the last keep-alive a client sent
//! (etcd's grpc-proxy keeps leases alive on its own clock, up to about
//! 2×TTL, etcd #13031). Grant, revoke, time-to-live (its keys moved out of
//! `--namespace`) and the lease list are forwarded.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbLeaseService, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::core::proxy::metrics::PROXY_METRICS;
use crate::core::proxy::namespace::Namespace;
use crate::core::proxy::upstream::{self, caller, Caller, Hubs, Upstream};

/// Keep-alive answers queued for one local stream.
const LOCAL_QUEUE: usize = 256;
/// Renewals queued for a keep-alive hub.
const HUB_QUEUE: usize = 4096;
/// A keep-alive hub with nothing to do ends after this.
const IDLE: Duration = Duration::from_secs(60);
/// Local keep-alives waiting on one renewal in flight, at most.
const MAX_WAITERS: usize = 1024;

type LocalTx = mpsc::Sender<Result<PbLeaseKeepAliveResponse, Status>>;

/// A renewal asked by a local stream.
struct Renew {
    id: i64,
    reply: LocalTx,
}

/// The Lease service of the proxy.
#[derive(Clone)]
pub struct LeaseProxy {
    /// The cluster.
    pub upstream: Arc<Upstream>,
    /// `--namespace` (time-to-live keys).
    pub namespace: Namespace,
    hubs: Arc<Hubs<Renew>>,
}

impl LeaseProxy {
    /// The service.
    pub fn new(upstream: Arc<Upstream>, namespace: Namespace) -> Self {
        Self {
            upstream,
            namespace,
            hubs: Arc::default(),
        }
    }

    fn hub(&self, caller: &Caller) -> mpsc::Sender<Renew> {
        self.hubs.get(caller, HUB_QUEUE, |metadata, rx| {
            tokio::spawn(keep_alive_hub(self.upstream.clone(), metadata, rx));
        })
    }

    async fn renew(&self, caller: &Caller, renew: Renew) -> bool {
        let mut renew = renew;
        for _ in 0..3 {
            match self.hub(caller).send(renew).await {
                Ok(()) => return true,
                Err(mpsc::error::SendError(r)) => renew = r,
            }
        }
        false
    }
}

/// One caller's upstream keep-alive stream and the renewals in flight on
/// it, by lease id. The stream is opened once a renewal is queued (a
/// grpc-go member sends the stream's headers with its first answer). A
/// member that fails takes its renewals to the next endpoint; a renewal
/// the member refuses (its error ends the stream) is answered with that
/// error, and the others are sent again.
async fn keep_alive_hub(
    upstream: Arc<Upstream>,
    metadata: MetadataMap,
    mut renewals: mpsc::Receiver<Renew>,
) {
    let mut pending: HashMap<i64, Vec<LocalTx>> = HashMap::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        if pending.is_empty() {
            match tokio::time::timeout(IDLE, renewals.recv()).await {
                Ok(Some(Renew { id, reply })) => {
                    pending.insert(id, vec![reply]);
                }
                Ok(None) => return,
                Err(_) => {
                    // Idle: renewals that raced the exit go to a new hub.
                    renewals.close();
                    while let Ok(Renew { reply, .. }) = renewals.try_recv() {
                        let _ = reply.try_send(Err(Status::unavailable(
                            "kvd proxy: keep-alive stream restarting; retry",
                        )));
                    }
                    return;
                }
            }
        }
        let (tx, rx) = mpsc::channel::<PbLeaseKeepAliveRequest>(HUB_QUEUE);
        for id in pending.keys() {
            let _ = tx.try_send(PbLeaseKeepAliveRequest { id: *id });
        }
        let opened = match upstream.metadata(&metadata).await {
            Ok(md) => {
                upstream
                    .streaming::<_, PbLeaseKeepAliveResponse, _>(
                        "/etcdserverpb.Lease/LeaseKeepAlive",
                        md,
                        ReceiverStream::new(rx),
                    )
                    .await
            }
            Err(s) => Err(s),
        };
        let (index, mut answers) = match opened {
            Ok(o) => o,
            Err(status) => {
                tracing::warn!(
                    "proxy: cannot open an upstream keep-alive stream: {}",
                    status.message()
                );
                if status.message() == upstream::INVALID_TOKEN && metadata.get("token").is_none() {
                    upstream.renew_own_token().await;
                }
                fail(&mut pending, &status);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        loop {
            tokio::select! {
                renew = renewals.recv() => {
                    let Some(Renew { id, reply }) = renew else { return };
                    match pending.get_mut(&id) {
                        Some(waiters) if waiters.len() < MAX_WAITERS => {
                            PROXY_METRICS.keepalives_coalesced.inc();
                            waiters.push(reply);
                        }
                        Some(_) => {
                            let _ = reply.try_send(Err(Status::resource_exhausted(
                                "kvd proxy: too many keep-alives of one lease in flight",
                            )));
                        }
                        None => {
                            if tx.try_send(PbLeaseKeepAliveRequest { id }).is_ok() {
                                pending.insert(id, vec![reply]);
                            } else {
                                let _ = reply.try_send(Err(Status::unavailable(
                                    "kvd proxy: too many keep-alives in flight; retry",
                                )));
                            }
                        }
                    }
                }
                answer = answers.next() => match answer {
                    Some(Ok(a)) => {
                        for w in pending.remove(&a.id).unwrap_or_default() {
                            let _ = w.try_send(Ok(a));
                        }
                    }
                    Some(Err(status)) if status.code() != tonic::Code::Unavailable => {
                        // A refusal by the member: tell the waiters.
                        fail(&mut pending, &status);
                        break;
                    }
                    _ => {
                        tracing::warn!("proxy: upstream keep-alive stream lost; reopening");
                        upstream.failed(index);
                        break;
                    }
                },
                () = tokio::time::sleep(IDLE), if pending.is_empty() => break,
            }
        }
    }
}

/// Answers every pending renewal with `status`.
fn fail(pending: &mut HashMap<i64, Vec<LocalTx>>, status: &Status) {
    for (_, waiters) in pending.drain() {
        for w in waiters {
            let _ = w.try_send(Err(status.clone()));
        }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<PbLeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PbLeaseService for LeaseProxy {
    async fn lease_grant(
        &self,
        request: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        self.upstream
            .unary("/etcdserverpb.Lease/LeaseGrant", request, false)
            .await
    }

    async fn lease_revoke(
        &self,
        request: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        self.upstream
            .unary("/etcdserverpb.Lease/LeaseRevoke", request, false)
            .await
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let who = caller(request.metadata());
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(LOCAL_QUEUE);
        let proxy = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(r)) = requests.next().await {
                let renew = Renew {
                    id: r.id,
                    reply: tx.clone(),
                };
                if !proxy.renew(&who, renew).await {
                    let _ = tx
                        .send(Err(Status::unavailable(
                            "kvd proxy: keep-alive hub stopped",
                        )))
                        .await;
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let mut resp: Response<PbLeaseTimeToLiveResponse> = self
            .upstream
            .unary("/etcdserverpb.Lease/LeaseTimeToLive", request, true)
            .await?;
        if !self.namespace.is_empty() {
            let r = resp.get_mut();
            r.keys.retain(|k| self.namespace.contains(k));
            r.keys.iter_mut().for_each(|k| self.namespace.strip(k));
        }
        Ok(resp)
    }

    async fn lease_leases(
        &self,
        request: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        self.upstream
            .unary("/etcdserverpb.Lease/LeaseLeases", request, true)
            .await
    }
}
