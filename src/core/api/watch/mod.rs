//! `etcdserverpb.Watch`: one task per gRPC stream, many watches per stream,
//! with etcd's wire behaviour (`server/etcdserver/api/v3rpc/watch.go`).
//!
//! The stream task owns its watches (their ids, key ranges, filters and
//! flags), turns what the [`WatchHub`] queues for them into responses, and
//! catches up the watches that are off the live path by reading history from
//! disk in bounded chunks (see `core::watch`). A client that reads slowly
//! only slows its own task: the task waits on the gRPC send, its watches'
//! queues fill up, and the hub moves them off the live path.
//!
//! What a client sees, as with etcd:
//! - a `created` response (with the watch id) before any event of the watch;
//!   a create that fails (duplicate `watch_id`, empty range, negative start
//!   revision) answers `created` + `canceled` with watch id -1 and etcd's
//!   `cancel_reason`;
//! - events in revision order, each revision's events in one response
//!   (live: header revision = the events' revision; catch-up: several
//!   revisions per response, header revision = the store's revision then;
//!   a live backlog, when the client reads slower than events come, is
//!   also sent several revisions per response, header revision = the
//!   newest);
//! - a start revision below the compact revision: `created`, then a response
//!   with `compact_revision` set and `canceled`;
//! - `WatchCancelRequest`: a `canceled` response (nothing for an unknown id);
//! - `ProgressRequest`: a response with watch id -1, no events and header
//!   revision R once every watch of the stream is on the live path, meaning
//!   every event up to R has been sent (etcd ≥ 3.5.8 sends nothing when a
//!   watch is unsynced; we send it as soon as they are synced again);
//! - `progress_notify`: the same, per watch, after an interval without
//!   events;
//! - `fragment`: responses larger than `--max-request-bytes` + 512 KiB are
//!   split into several responses, all but the last with `fragment` set.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use etcd_client::proto::{PbResponseHeader, PbWatchRequest, PbWatchRequestUnion, PbWatchResponse};
use futures::{Stream, StreamExt};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

mod local;
mod wire;

use local::{Local, Pending};

pub use crate::core::auth::pb::etcdserverpb::watch_server::{Watch as WatchRpc, WatchServer};
pub use wire::{fragments, WatchOut};

use crate::core::api::guard::WatchGuard;
use crate::core::api::{ApiContext, GRPC_OVERHEAD_BYTES};
use crate::core::errors::EtcdError;
use crate::core::mvcc::KeyRange;
use crate::core::raft::NodeStatus;
use crate::core::watch::{HistoryQuery, HubId, Rejoin, StreamItem, StreamSender, WatchHub};

/// The Watch service.
pub struct WatchService {
    /// Shared API state (header ids, `--max-request-bytes`).
    pub ctx: ApiContext,
    /// The member's watch hub.
    pub hub: Arc<WatchHub>,
}

/// Batches of responses (one per turn of the stream task, see
/// [`StreamTask::send_queued`]) buffered between a stream task and the gRPC
/// transport.
const OUT_BATCHES: usize = 4;

/// Most queued items handled (and coalesced) per turn of a stream's loop.
const MAX_ITEMS_PER_TURN: usize = 512;

/// A response coalescing several revisions is sent once it holds this many
/// bytes of events.
const COALESCE_BYTES: usize = 256 * 1024;

/// A turn stops taking queued items once it gathered this many bytes.
const TURN_BYTES: usize = 1024 * 1024;

/// Most watches caught up in one step (etcd's `maxWatchersPerSync`).
const MAX_WATCHERS_PER_STEP: usize = 512;

/// etcd's `WatchCreateRequest.FilterType.NOPUT`.
const FILTER_NOPUT: i32 = 0;
/// etcd's `WatchCreateRequest.FilterType.NODELETE`.
const FILTER_NODELETE: i32 = 1;

/// `cancel_reason` of a create with a `watch_id` already used on the stream
/// (etcd's `mvcc.ErrWatcherDuplicateID`).
pub const REASON_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// `cancel_reason` of a create whose `range_end` is not after `key` (etcd's
/// `mvcc.ErrEmptyWatcherRange`).
pub const REASON_EMPTY_RANGE: &str = "mvcc: watcher range is empty";

type ResponseStream = std::pin::Pin<Box<dyn Stream<Item = Result<WatchOut, Status>> + Send>>;

/// The responses of a stream task's batches, one at a time, as tonic sends
/// them.
fn responses(batches: mpsc::Receiver<Result<Vec<WatchOut>, Status>>) -> ResponseStream {
    Box::pin(ReceiverStream::new(batches).flat_map(|batch| {
        let (ok, err) = match batch {
            Ok(batch) => (batch, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        futures::stream::iter(ok.into_iter().map(Ok).chain(err.map(Err)))
    }))
}

#[tonic::async_trait]
impl WatchRpc for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<PbWatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (out, rx) = mpsc::channel(OUT_BATCHES);
        self.ctx.identity(&request).await?; // a bad token fails the stream
        let mut task = StreamTask::new(
            self.hub.clone(),
            self.ctx.node.status.clone(),
            self.ctx.max_request_bytes + GRPC_OVERHEAD_BYTES,
            out,
        );
        task.guard = WatchGuard::new(self.ctx.auth.clone(), &request);
        tokio::spawn(task.run(request.into_inner()));
        Ok(Response::new(responses(rx)))
    }
}

/// The client went away: stop the stream.
struct Closed;

/// Longest a watch creation waits for the dispatcher to reach the store's
/// revision (it normally is there, or within a millisecond).
const CATCH_UP_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The state of one gRPC watch stream.
pub struct StreamTask {
    /// The member's hub.
    hub: Arc<WatchHub>,
    /// Ids and term for response headers.
    status: Arc<NodeStatus>,
    /// Responses at least this large are fragmented for watches that ask.
    fragment_bytes: usize,
    /// Toward the gRPC transport, a turn's responses at a time.
    out: mpsc::Sender<Result<Vec<WatchOut>, Status>>,
    /// Responses queued this turn, not yet handed to `out`.
    outbox: Vec<WatchOut>,
    /// The hub's way into this stream (given to every registration).
    tx: StreamSender,
    /// The hub's side of `tx`, until `run` takes it.
    rx: Option<mpsc::UnboundedReceiver<StreamItem>>,
    /// Watches by hub id (ids the hub hands out, so a fast hash is safe).
    locals: FxHashMap<HubId, Local>,
    /// Hub ids by watch id (chosen by the client: SipHash, which it cannot
    /// make collide).
    ids: HashMap<i64, HubId>,
    /// Next automatic watch id (etcd ≥ 3.5: per stream, from 0, skipping
    /// ids in use).
    next_watch_id: i64,
    /// A `ProgressRequest` waits for every watch to be synced.
    progress_all_pending: bool,
    /// Who opened the stream: each watch needs read on its range.
    pub guard: WatchGuard,
}

impl StreamTask {
    /// A stream answering on `out`; `fragment_bytes` is
    /// `--max-request-bytes` plus gRPC overhead.
    pub fn new(
        hub: Arc<WatchHub>,
        status: Arc<NodeStatus>,
        fragment_bytes: usize,
        out: mpsc::Sender<Result<Vec<WatchOut>, Status>>,
    ) -> Self {
        let (tx, rx) = StreamSender::channel();
        Self {
            hub,
            status,
            fragment_bytes,
            out,
            outbox: Vec::new(),
            tx,
            rx: Some(rx),
            locals: FxHashMap::default(),
            ids: HashMap::new(),
            next_watch_id: 0,
            progress_all_pending: false,
            guard: WatchGuard::default(),
        }
    }

    /// Serves the stream until the client goes away or a receive fails. A
    /// client that half-closes keeps receiving events, as with etcd.
    pub async fn run<S>(mut self, mut inbound: S)
    where
        S: Stream<Item = Result<PbWatchRequest, Status>> + Unpin + Send,
    {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let interval = self.hub.config().progress_interval;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut inbound_open = true;
        loop {
            let catching_up = self.locals.values().any(|l| l.behind.is_some());
            let step: Result<(), Closed> = tokio::select! {
                req = inbound.next(), if inbound_open => match req {
                    Some(Ok(req)) => {
                        self.on_request(req).await;
                        Ok(())
                    }
                    Some(Err(e)) => {
                        tracing::debug!("watch stream receive: {e}");
                        Err(Closed)
                    }
                    None => {
                        inbound_open = false;
                        Ok(())
                    }
                },
                item = rx.recv() => match item {
                    Some(item) => {
                        self.on_items(item, &mut rx);
                        Ok(())
                    }
                    None => Err(Closed),
                },
                _ = ticker.tick() => {
                    self.on_progress_tick();
                    Ok(())
                }
                _ = std::future::ready(()), if catching_up => {
                    self.catch_up_step().await;
                    Ok(())
                }
                _ = self.out.closed() => Err(Closed),
                _ = self.hub.stopped() => {
                    // Best effort: a client that does not read gets nothing.
                    let _ = self.out.try_send(Err(EtcdError::Stopped.into()));
                    Err(Closed)
                }
            };
            if step.is_err() || self.send_queued().await.is_err() {
                return;
            }
            if self.progress_all_pending && self.locals.values().all(|l| l.behind.is_none()) {
                self.progress_all_pending = !self.hub.progress(&self.tx, &self.hub_ids(), -1);
            }
        }
    }

    fn header(&self, revision: i64) -> PbResponseHeader {
        PbResponseHeader {
            cluster_id: self.status.cluster_id.0,
            member_id: self.status.member_id.0,
            revision,
            raft_term: self.status.term(),
        }
    }

    fn hub_ids(&self) -> Vec<HubId> {
        self.locals.keys().copied().collect()
    }

    /// Queues one response; the turn's responses go out together at its
    /// end ([`Self::send_queued`]).
    fn send(&mut self, response: impl Into<WatchOut>) {
        self.outbox.push(response.into());
    }

    /// Hands the responses queued this turn to the gRPC transport as one
    /// batch (one channel send and one wake, however many responses);
    /// waits while the client reads slower, and gives up when the member
    /// stops, so that a client that does not read cannot hold up shutdown.
    async fn send_queued(&mut self) -> Result<(), Closed> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.outbox);
        tokio::select! {
            sent = self.out.send(Ok(batch)) => sent.map_err(|_| Closed),
            _ = self.hub.stopped() => Err(Closed),
        }
    }

    /// Sends an event response, split as etcd's `sendFragments` when the
    /// watch asked for fragments and it is too large.
    fn send_events(&mut self, watch_id: i64, revision: i64, events: Vec<Bytes>, fragment: bool) {
        let head = PbWatchResponse {
            header: Some(self.header(revision)),
            watch_id,
            ..Default::default()
        };
        if !fragment {
            return self.send(WatchOut::new(head, events));
        }
        for part in fragments(head, events, self.fragment_bytes) {
            self.send(part);
        }
    }

    /// A create that failed: etcd answers `created` + `canceled`, id -1.
    fn reject(&mut self, reason: &str) {
        self.send(PbWatchResponse {
            header: Some(self.header(self.hub.current())),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        });
    }

    async fn on_request(&mut self, req: PbWatchRequest) {
        match req.request_union {
            Some(PbWatchRequestUnion::CreateRequest(c)) => {
                let key = if c.key.is_empty() { vec![0] } else { c.key };
                if let Err(reason) = self.guard.check(&key, &c.range_end) {
                    return self.reject(&reason);
                }
                if c.start_revision < 0 {
                    return self.reject(&EtcdError::Compacted.to_string());
                }
                let bounded = !c.range_end.is_empty() && c.range_end != [0];
                if bounded && key.as_slice() >= c.range_end.as_slice() {
                    return self.reject(REASON_EMPTY_RANGE);
                }
                let watch_id = if c.watch_id == 0 {
                    while self.ids.contains_key(&self.next_watch_id) {
                        self.next_watch_id += 1;
                    }
                    self.next_watch_id += 1;
                    self.next_watch_id - 1
                } else if self.ids.contains_key(&c.watch_id) {
                    return self.reject(REASON_DUPLICATE_ID);
                } else {
                    c.watch_id
                };
                let range = KeyRange::new(&key, &c.range_end);
                self.hub.catch_up_with_store(CATCH_UP_LIMIT).await;
                let (start, prev_kv) = (c.start_revision, c.prev_kv);
                let reg = self.hub.register(&self.tx, range.clone(), start, prev_kv);
                self.ids.insert(watch_id, reg.id);
                self.locals.insert(
                    reg.id,
                    Local {
                        watch_id,
                        range,
                        no_put: c.filters.contains(&FILTER_NOPUT),
                        no_delete: c.filters.contains(&FILTER_NODELETE),
                        prev_kv: c.prev_kv,
                        fragment: c.fragment,
                        progress_notify: c.progress_notify,
                        progress_due: true,
                        queued: reg.queued,
                        behind: reg.behind,
                    },
                );
                self.send(PbWatchResponse {
                    header: Some(self.header(reg.current)),
                    watch_id,
                    created: true,
                    ..Default::default()
                });
            }
            Some(PbWatchRequestUnion::CancelRequest(c)) => {
                let Some(id) = self.ids.remove(&c.watch_id) else {
                    return; // etcd: an unknown id gets no answer
                };
                self.locals.remove(&id);
                self.hub.cancel(&[id]);
                self.send(PbWatchResponse {
                    header: Some(self.header(self.hub.current())),
                    watch_id: c.watch_id,
                    canceled: true,
                    ..Default::default()
                });
            }
            Some(PbWatchRequestUnion::ProgressRequest(_)) => {
                if self.locals.is_empty() {
                    // Nothing can be pending: answer at once.
                    self.send(PbWatchResponse {
                        header: Some(self.header(self.hub.current())),
                        watch_id: -1,
                        ..Default::default()
                    });
                    return;
                }
                if !self.hub.progress(&self.tx, &self.hub_ids(), -1) {
                    self.progress_all_pending = true;
                }
            }
            None => {}
        }
    }

    /// Handles `first` and whatever else is queued already (up to
    /// [`MAX_ITEMS_PER_TURN`]). Without a backlog each revision of a watch
    /// is one response, as in etcd; with one (a client reading slower than
    /// events come), consecutive revisions of a watch are sent together, so
    /// that a busy stream spends less per event. A progress item first
    /// flushes everything gathered before it.
    fn on_items(&mut self, first: StreamItem, rx: &mut mpsc::UnboundedReceiver<StreamItem>) {
        let mut pending: Vec<Pending> = Vec::new();
        let mut index: FxHashMap<HubId, usize> = FxHashMap::default();
        let mut next = Some(first);
        let mut handled = 0;
        let mut gathered = 0usize;
        while let Some(item) = next.take() {
            match item {
                StreamItem::Events {
                    watcher,
                    revision,
                    events,
                    ..
                } => {
                    if let Some(local) = self.locals.get_mut(&watcher) {
                        local.queued.fetch_sub(1, Ordering::Relaxed);
                        let selected = local.select(&events);
                        if !selected.is_empty() {
                            local.progress_due = false;
                            let at = *index.entry(watcher).or_insert_with(|| {
                                pending.push(Pending {
                                    watcher,
                                    revision,
                                    events: Vec::new(),
                                    bytes: 0,
                                });
                                pending.len() - 1
                            });
                            let p = &mut pending[at];
                            p.revision = revision;
                            let bytes = selected.iter().map(Bytes::len).sum::<usize>();
                            p.bytes += bytes;
                            gathered += bytes;
                            if p.events.is_empty() {
                                p.events = selected;
                            } else {
                                p.events.extend(selected);
                            }
                            if p.bytes >= COALESCE_BYTES {
                                index.remove(&watcher);
                                let full = std::mem::replace(
                                    p,
                                    Pending {
                                        watcher,
                                        revision,
                                        events: Vec::new(),
                                        bytes: 0,
                                    },
                                );
                                self.flush(full);
                            }
                        }
                    } // else: canceled since
                }
                StreamItem::Behind { watcher, next_rev } => {
                    // What was gathered for it precedes `next_rev` and is
                    // sent below, before any catch-up.
                    if let Some(local) = self.locals.get_mut(&watcher) {
                        local.behind = Some(next_rev);
                    }
                }
                StreamItem::Progress { watch_id, revision } => {
                    index.clear();
                    for p in std::mem::take(&mut pending) {
                        self.flush(p);
                    }
                    if watch_id == -1 || self.ids.contains_key(&watch_id) {
                        self.send(PbWatchResponse {
                            header: Some(self.header(revision)),
                            watch_id,
                            ..Default::default()
                        });
                    }
                }
            }
            handled += 1;
            if handled < MAX_ITEMS_PER_TURN && gathered < TURN_BYTES {
                next = rx.try_recv().ok();
            }
        }
        for p in pending {
            self.flush(p);
        }
    }

    /// Queues gathered events, if any, and if their watch still exists.
    fn flush(&mut self, p: Pending) {
        if p.events.is_empty() {
            return;
        }
        let Some(local) = self.locals.get(&p.watcher) else {
            return;
        };
        let (watch_id, fragment) = (local.watch_id, local.fragment);
        self.send_events(watch_id, p.revision, p.events, fragment);
    }

    /// etcd's progress ticker: a notification for each `progress_notify`
    /// watch that got no event since the previous tick (sent only if it is
    /// synced, as etcd).
    fn on_progress_tick(&mut self) {
        for (id, local) in self.locals.iter_mut() {
            if !local.progress_notify {
                continue;
            }
            if local.progress_due {
                self.hub.progress(&self.tx, &[*id], local.watch_id);
            }
            local.progress_due = true;
        }
    }

    /// Reads one chunk of history for the watches off the live path, sends
    /// it, and puts the watches that reached the end back on the live path.
    async fn catch_up_step(&mut self) {
        let behind: Vec<(HubId, i64)> = self
            .locals
            .iter()
            .filter_map(|(id, l)| l.behind.map(|from| (*id, from)))
            .take(MAX_WATCHERS_PER_STEP)
            .collect();
        let queries: Vec<HistoryQuery> = behind
            .iter()
            .filter_map(|(id, from)| {
                self.locals.get(id).map(|l| HistoryQuery {
                    range: l.range.clone(),
                    from: *from,
                    prev_kv: l.prev_kv,
                })
            })
            .collect();
        // Buffering starts before the snapshot is taken (see core::watch).
        self.hub.begin_catch_up(&behind);
        // A member applying a Raft snapshot holds a mixed state: wait for
        // it (any snapshot taken later is still after the buffering began).
        let mut chunk = loop {
            let hub = self.hub.clone();
            let queries = queries.clone();
            let read = tokio::task::spawn_blocking(move || hub.read_history(&queries)).await;
            match read {
                Ok(Ok(chunk)) => break chunk,
                Ok(Err(EtcdError::ApplyingSnapshot)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Ok(Err(e)) => return self.fail(&behind, &e.to_string()),
                Err(e) => return self.fail(&behind, &format!("etcdserver: {e}")),
            }
        };
        // First settle every watch (rejoin while the buffers are fresh),
        // then send: how fast the client reads must not decide whether a
        // watch can rejoin. What a rejoin queues comes out of the channel
        // only after this step, so after the responses sent below.
        let mut outgoing: Vec<WatchOut> = Vec::new();
        let header = self.header(chunk.current);
        for (i, (id, from)) in behind.iter().enumerate() {
            let Some(local) = self.locals.get_mut(id) else {
                continue;
            };
            if *from < chunk.compacted {
                // etcd: WatchResponse{CompactRevision} (header revision 0),
                // and the watch is gone.
                let watch_id = local.watch_id;
                self.locals.remove(id);
                self.ids.remove(&watch_id);
                self.hub.cancel(&[*id]);
                outgoing.push(
                    PbWatchResponse {
                        header: Some(self.header(0)),
                        watch_id,
                        compact_revision: chunk.compacted,
                        canceled: true,
                        ..Default::default()
                    }
                    .into(),
                );
                continue;
            }
            let events = chunk
                .events
                .get_mut(i)
                .map(std::mem::take)
                .unwrap_or_default();
            let selected = local.select_owned(events);
            local.behind = if chunk.to >= chunk.current {
                match self.hub.rejoin(*id, chunk.to) {
                    Rejoin::Synced => None,
                    Rejoin::Behind(next) => Some(next),
                }
            } else {
                Some((*from).max(chunk.to + 1))
            };
            if selected.is_empty() {
                continue;
            }
            local.progress_due = false;
            let head = PbWatchResponse {
                header: Some(header),
                watch_id: local.watch_id,
                ..Default::default()
            };
            if local.fragment {
                outgoing.extend(fragments(head, selected, self.fragment_bytes));
            } else {
                outgoing.push(WatchOut::new(head, selected));
            }
        }
        for response in outgoing {
            self.send(response);
        }
    }

    /// A catch-up read failed (storage fault): cancel the watches concerned
    /// with the error as reason, rather than leave them silent.
    fn fail(&mut self, behind: &[(HubId, i64)], reason: &str) {
        tracing::error!("watch catch-up: {reason}");
        for (id, _) in behind {
            let Some(local) = self.locals.remove(id) else {
                continue;
            };
            self.ids.remove(&local.watch_id);
            self.hub.cancel(&[*id]);
            self.send(PbWatchResponse {
                header: Some(self.header(self.hub.current())),
                watch_id: local.watch_id,
                canceled: true,
                cancel_reason: reason.to_string(),
                ..Default::default()
            });
        }
    }
}

impl Drop for StreamTask {
    /// However the stream ends (client gone, error, panic), its watches
    /// leave the hub.
    fn drop(&mut self) {
        let ids = self.hub_ids();
        self.hub.cancel(&ids);
    }
}

#[cfg(test)]
mod tests;
