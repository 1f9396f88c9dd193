//! The proxy's `etcdserverpb.Watch`: local watch streams served from
//! coalesced upstream watches.
//!
//! Local watchers are grouped by caller (the token they send; token-less
//! callers share the proxy's own identity), and each group has one hub
//! ([`hub::Hub`]) holding one upstream stream. Within a group, a new
//! watcher joins an upstream watch whose range covers its own and that can
//! give it every event from its start revision (from now, from the future,
//! or from the events it keeps in memory); only otherwise is a new
//! upstream watch opened. A watcher's create is first checked upstream
//! with the caller's own token (a one-key, count-only serializable read of
//! its range, etcd grpc-proxy's check), so joining an existing watch never
//! skips a permission check.
//!
//! What a local client sees matches a member's watch service: `created`
//! first, events in revision order, `canceled` on cancel, etcd's refusals
//! (`watch_id` -1, `created` + `canceled`), and progress requests
//! answered (etcd's grpc-proxy ignores them, etcd #19710).

pub mod broadcast;
mod fanout;
pub mod hub;
mod stall;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use etcd_client::proto::{
    PbRangeRequest, PbRangeResponse, PbWatchRequest, PbWatchRequestUnion, PbWatchResponse,
    PbWatchService,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use self::broadcast::{LocalWatch, Span};
use crate::core::api::watch::{REASON_DUPLICATE_ID, REASON_EMPTY_RANGE};
use crate::core::errors::EtcdError;
use crate::core::proxy::cache::ReadCache;
use crate::core::proxy::namespace::Namespace;
use crate::core::proxy::upstream::{caller, Caller, Hubs, Upstream};

/// Responses queued for one local stream before it counts as stuck.
pub const LOCAL_QUEUE: usize = 4096;
/// Commands queued for a hub.
const HUB_QUEUE: usize = 4096;
/// etcd's `FilterType.NOPUT` and `NODELETE`.
const FILTER_NOPUT: i32 = 0;
const FILTER_NODELETE: i32 = 1;

/// Events queued for one local stream before it counts as stuck (the
/// byte bound that [`LOCAL_QUEUE`] alone would not give: a replay puts
/// up to 256 events in one response).
pub const LOCAL_QUEUED_EVENTS: usize = 16_384;

/// Where a hub sends one local stream's responses, and how many events
/// wait in it.
#[derive(Clone)]
pub struct LocalTx {
    tx: mpsc::Sender<Result<PbWatchResponse, Status>>,
    queued_events: Arc<std::sync::atomic::AtomicUsize>,
}

impl LocalTx {
    /// A queue of [`LOCAL_QUEUE`] responses and the stream that drains it.
    fn new() -> (Self, ResponseStream) {
        let (tx, rx) = mpsc::channel::<Result<PbWatchResponse, Status>>(LOCAL_QUEUE);
        let queued_events = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = queued_events.clone();
        let stream =
            ReceiverStream::new(rx).inspect(move |item: &Result<PbWatchResponse, Status>| {
                if let Ok(r) = item {
                    counter.fetch_sub(r.events.len(), Ordering::Relaxed);
                }
            });
        (Self { tx, queued_events }, Box::pin(stream))
    }

    /// Queues `response` unless the queue is full (in responses or
    /// events): `Err` gives it back, with whether the stream is gone.
    pub fn try_send(&self, response: PbWatchResponse) -> Result<(), bool> {
        let events = response.events.len();
        // An empty queue takes any response, so that one revision with
        // more events than the bound still goes through.
        let queued = self.queued_events.load(Ordering::Relaxed);
        if queued > 0 && queued + events > LOCAL_QUEUED_EVENTS {
            return Err(self.tx.is_closed());
        }
        self.queued_events.fetch_add(events, Ordering::Relaxed);
        match self.tx.try_send(Ok(response)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.queued_events.fetch_sub(events, Ordering::Relaxed);
                Err(matches!(e, mpsc::error::TrySendError::Closed(_)))
            }
        }
    }

    /// Whether the client has read at least half of both bounds.
    pub fn has_room(&self) -> bool {
        self.tx.capacity() >= LOCAL_QUEUE / 2
            && self.queued_events.load(Ordering::Relaxed) <= LOCAL_QUEUED_EVENTS / 2
    }
}

type ResponseStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<PbWatchResponse, Status>> + Send>>;

/// What local streams ask of their hub.
pub enum Command {
    /// A local stream starts; its responses go to `tx`.
    Open {
        /// The stream.
        stream: u64,
        /// Its response queue.
        tx: LocalTx,
        /// Told once the hub has taken the stream (a hub that is ending
        /// drops it, and the stream goes to a new hub).
        ack: tokio::sync::oneshot::Sender<()>,
    },
    /// A watch to create, already checked (id free, range valid, allowed).
    Create {
        /// The stream.
        stream: u64,
        /// The watch's id on that stream.
        watch_id: i64,
        /// What it watches (member-side keys).
        watch: LocalWatch,
        /// Told once its `created` response is queued.
        answered: tokio::sync::oneshot::Sender<()>,
    },
    /// A cancel of one of the stream's watches.
    Cancel {
        /// The stream.
        stream: u64,
        /// The watch.
        watch_id: i64,
    },
    /// A progress request (answered once upstream confirms a revision).
    Progress {
        /// The stream.
        stream: u64,
    },
    /// A response to send as it is (a refused create).
    Reply {
        /// The stream.
        stream: u64,
        /// The response.
        response: PbWatchResponse,
    },
    /// The local stream ended.
    Closed {
        /// The stream.
        stream: u64,
    },
}

/// The Watch service of the proxy.
pub struct WatchProxy {
    upstream: Arc<Upstream>,
    namespace: Namespace,
    cache: Option<Arc<ReadCache>>,
    hubs: Hubs<Command>,
    next_stream: AtomicU64,
}

impl WatchProxy {
    /// The service; with a `cache`, the token-less callers' hub starts at
    /// once and keeps the cache's watch open.
    pub fn new(
        upstream: Arc<Upstream>,
        namespace: Namespace,
        cache: Option<Arc<ReadCache>>,
    ) -> Arc<Self> {
        let proxy = Arc::new(Self {
            upstream,
            namespace,
            cache,
            hubs: Hubs::default(),
            next_stream: AtomicU64::new(1),
        });
        if proxy.cache.is_some() {
            proxy.hub(&None);
        }
        proxy
    }

    /// The hub of `caller`, started when it has none (or its last one
    /// ended).
    fn hub(&self, caller: &Caller) -> mpsc::Sender<Command> {
        let cache = if caller.is_none() {
            self.cache.clone()
        } else {
            None
        };
        self.hubs.get(caller, HUB_QUEUE, |metadata, rx| {
            let hub = hub::Hub::new(
                self.upstream.clone(),
                metadata,
                self.namespace.clone(),
                cache,
                rx,
            );
            tokio::spawn(hub.run());
        })
    }

    /// Registers a new local stream with its caller's hub.
    async fn open(
        &self,
        caller: &Caller,
        stream: u64,
        tx: LocalTx,
    ) -> Option<mpsc::Sender<Command>> {
        for _ in 0..3 {
            let hub = self.hub(caller);
            let (ack, taken) = tokio::sync::oneshot::channel();
            let command = Command::Open {
                stream,
                tx: tx.clone(),
                ack,
            };
            if hub.send(command).await.is_ok() && taken.await.is_ok() {
                return Some(hub);
            }
            // That hub is ending: the next call starts another.
        }
        None
    }
}

/// A refused create: `watch_id` -1, `created` and `canceled` (etcd).
fn refusal(reason: &str) -> PbWatchResponse {
    PbWatchResponse {
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: reason.to_string(),
        ..Default::default()
    }
}

/// One local stream's requests, turned into hub commands.
struct Reader {
    upstream: Arc<Upstream>,
    namespace: Namespace,
    incoming: MetadataMap,
    checked: bool,
    hub: mpsc::Sender<Command>,
    stream: u64,
    ids: HashSet<i64>,
    next_id: i64,
}

impl Reader {
    async fn run(mut self, mut requests: Streaming<PbWatchRequest>) {
        while let Some(Ok(request)) = requests.next().await {
            let mut created = None;
            let command = match request.request_union {
                Some(PbWatchRequestUnion::CreateRequest(c)) => {
                    let key = if c.key.is_empty() { vec![0] } else { c.key };
                    let bounded = !c.range_end.is_empty() && c.range_end != [0];
                    let refused = if c.start_revision < 0 {
                        Some(EtcdError::Compacted.to_string())
                    } else if bounded && key.as_slice() >= c.range_end.as_slice() {
                        Some(REASON_EMPTY_RANGE.to_string())
                    } else if c.watch_id != 0 && self.ids.contains(&c.watch_id) {
                        Some(REASON_DUPLICATE_ID.to_string())
                    } else {
                        None
                    };
                    let (key, range_end) = self.namespace.range(&key, &c.range_end);
                    let refused = match refused {
                        Some(r) => Some(r),
                        None => self.check(&key, &range_end).await.err(),
                    };
                    if let Some(reason) = refused {
                        Command::Reply {
                            stream: self.stream,
                            response: refusal(&reason),
                        }
                    } else {
                        let watch_id = if c.watch_id != 0 {
                            c.watch_id
                        } else {
                            while self.ids.contains(&self.next_id) {
                                self.next_id += 1;
                            }
                            self.next_id
                        };
                        self.ids.insert(watch_id);
                        let (answered, wait) = tokio::sync::oneshot::channel();
                        created = Some(wait);
                        Command::Create {
                            answered,
                            stream: self.stream,
                            watch_id,
                            watch: LocalWatch {
                                span: Span::new(&key, &range_end),
                                key,
                                range_end,
                                start_revision: c.start_revision,
                                no_put: c.filters.contains(&FILTER_NOPUT),
                                no_delete: c.filters.contains(&FILTER_NODELETE),
                                prev_kv: c.prev_kv,
                                progress_notify: c.progress_notify,
                            },
                        }
                    }
                }
                Some(PbWatchRequestUnion::CancelRequest(c)) => {
                    if !self.ids.remove(&c.watch_id) {
                        continue; // etcd: an unknown id gets no answer
                    }
                    Command::Cancel {
                        stream: self.stream,
                        watch_id: c.watch_id,
                    }
                }
                Some(PbWatchRequestUnion::ProgressRequest(_)) => Command::Progress {
                    stream: self.stream,
                },
                None => continue,
            };
            if self.hub.send(command).await.is_err() {
                return;
            }
            // One create at a time: its `created` goes out before the next.
            if let Some(wait) = created {
                let _ = wait.await;
            }
        }
        let _ = self
            .hub
            .send(Command::Closed {
                stream: self.stream,
            })
            .await;
    }

    /// The caller may read `[key, range_end)`: a count-only serializable
    /// read of one key with its own token (only when it sends one; a
    /// token-less caller acts as the proxy, whose watches the member
    /// checks itself).
    async fn check(&self, key: &[u8], range_end: &[u8]) -> Result<(), String> {
        if !self.checked {
            return Ok(());
        }
        let mut request = Request::new(PbRangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            limit: 1,
            serializable: true,
            count_only: true,
            ..Default::default()
        });
        *request.metadata_mut() = self.incoming.clone();
        let answer: Result<Response<PbRangeResponse>, Status> = self
            .upstream
            .unary("/etcdserverpb.KV/Range", request, true)
            .await;
        answer.map(|_| ()).map_err(|s| s.message().to_string())
    }
}

#[tonic::async_trait]
impl PbWatchService for WatchProxy {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<PbWatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let incoming = request.metadata().clone();
        let who = caller(&incoming);
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, responses) = LocalTx::new();
        let hub = self
            .open(&who, stream, tx)
            .await
            .ok_or_else(|| Status::unavailable("kvd proxy: the watch hub stopped"))?;
        let reader = Reader {
            upstream: self.upstream.clone(),
            namespace: self.namespace.clone(),
            checked: who.is_some(),
            incoming,
            hub,
            stream,
            ids: HashSet::new(),
            next_id: 0,
        };
        tokio::spawn(reader.run(request.into_inner()));
        Ok(Response::new(responses))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::PbEvent;

    fn response(events: usize) -> PbWatchResponse {
        PbWatchResponse {
            events: vec![PbEvent::default(); events],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn local_queues_are_bounded_in_events_but_take_one_big_revision() {
        let (tx, mut stream) = LocalTx::new();
        // One revision above the bound goes into an empty queue...
        assert_eq!(tx.try_send(response(LOCAL_QUEUED_EVENTS + 1)), Ok(()));
        // ...and nothing more until it is read.
        assert_eq!(tx.try_send(response(1)), Err(false));
        assert!(!tx.has_room());
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.events.len(), LOCAL_QUEUED_EVENTS + 1);
        assert!(tx.has_room());
        assert_eq!(tx.try_send(response(1)), Ok(()));
        drop(stream);
        assert_eq!(tx.try_send(response(1)), Err(true));
    }
}
