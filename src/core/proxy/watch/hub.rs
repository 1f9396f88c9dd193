//! The task that owns one caller's upstream watch stream: it opens a
//! broadcast (an upstream watch) only when no open one covers a new local
//! watcher's range and start revision, fans each upstream response out to
//! the local watchers it concerns, and after a broken stream reopens every
//! broadcast at the revision after the last one it delivered, so a local
//! watcher neither misses nor repeats an event.
//!
//! Upstream watches always ask for `prev_kv` and progress notifications
//! and no filters; the local watchers' own choices are applied here.
//! Local streams have bounded queues: a stream that falls
//! [`super::LOCAL_QUEUE`] responses (or [`super::LOCAL_QUEUED_EVENTS`]
//! events) behind stalls and catches up later
//! (see `stall`), so one slow reader never holds the others up.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::proto::{
    PbEvent, PbResponseHeader, PbWatchRequest, PbWatchRequestUnion, PbWatchResponse,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::metadata::MetadataMap;
use tonic::{Status, Streaming};

use super::broadcast::{Broadcast, Local, LocalKey, LocalWatch, State};
use super::{Command, LocalTx};
use crate::core::proxy::cache::ReadCache;
use crate::core::proxy::metrics::PROXY_METRICS;
use crate::core::proxy::namespace::Namespace;
use crate::core::proxy::upstream::{self, Upstream};

/// Requests queued for the upstream stream (more wait in a backlog).
const UPSTREAM_QUEUE: usize = 1024;
/// A hub without local streams ends after this.
const IDLE: Duration = Duration::from_secs(30);
/// Most events in one response to a local watcher (a revision is never
/// split).
const EVENTS_PER_RESPONSE: usize = 256;
/// Wait before reopening a broken upstream stream (doubles up to 2 s).
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// An unanswered upstream progress request is sent again after this.
const PROGRESS_RESEND: Duration = Duration::from_secs(1);

/// What opening an upstream stream gives: the endpoint's index and the
/// responses.
type Opened = Result<(usize, Streaming<PbWatchResponse>), Status>;

/// The upstream watch stream, open or being opened. Requests are queued
/// from the start: a member running grpc-go (etcd) sends the stream's
/// headers only with its first response, so opening waits for an answer
/// to them and runs on its own task.
pub(super) struct UpstreamLink {
    tx: mpsc::Sender<PbWatchRequest>,
    /// Requests that did not fit in `tx`, sent as it drains.
    backlog: VecDeque<PbWatchRequest>,
    rx: Option<Streaming<PbWatchResponse>>,
    opening: Option<tokio::sync::oneshot::Receiver<Opened>>,
    index: usize,
}

/// One caller's hub (see the module docs).
pub struct Hub {
    pub(super) upstream: Arc<Upstream>,
    /// The caller's metadata for the upstream stream (its token).
    pub(super) metadata: MetadataMap,
    pub(super) namespace: Namespace,
    /// The read cache, for the hub of token-less callers.
    pub(super) cache: Option<Arc<ReadCache>>,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) link: Option<UpstreamLink>,
    pub(super) backoff: Duration,
    pub(super) retry_at: Option<Instant>,
    pub(super) broadcasts: HashMap<u64, Broadcast>,
    pub(super) by_watch_id: HashMap<i64, u64>,
    pub(super) creating: VecDeque<u64>,
    pub(super) next_broadcast: u64,
    pub(super) streams: HashMap<u64, LocalTx>,
    /// Local streams whose queue filled up: their watchers are off their
    /// broadcasts until the client has read half the queue.
    pub(super) stalled: std::collections::HashSet<u64>,
    pub(super) locals: HashMap<LocalKey, Local>,
    pub(super) progress_waiters: std::collections::BTreeSet<u64>,
    pub(super) progress_sent: Option<Instant>,
    pub(super) last_header: Option<PbResponseHeader>,
    /// This hub's share of the gauges: (upstream watches, local watchers,
    /// coalescing watchers), as last added.
    pub(super) gauges: (i64, i64, i64),
    /// Since when the hub has had no local stream.
    idle_since: Option<Instant>,
}

impl Hub {
    /// A hub with nothing open yet.
    pub(super) fn new(
        upstream: Arc<Upstream>,
        metadata: MetadataMap,
        namespace: Namespace,
        cache: Option<Arc<ReadCache>>,
        commands: mpsc::Receiver<Command>,
    ) -> Self {
        Self {
            upstream,
            metadata,
            namespace,
            cache,
            commands,
            link: None,
            backoff: FIRST_BACKOFF,
            retry_at: None,
            broadcasts: HashMap::new(),
            by_watch_id: HashMap::new(),
            creating: VecDeque::new(),
            next_broadcast: 0,
            streams: HashMap::new(),
            stalled: std::collections::HashSet::new(),
            locals: HashMap::new(),
            progress_waiters: std::collections::BTreeSet::new(),
            progress_sent: None,
            last_header: None,
            gauges: (0, 0, 0),
            idle_since: Some(Instant::now()),
        }
    }

    /// Runs until it has had no local stream for [`IDLE`] (never while
    /// it keeps the cache's watch).
    pub(super) async fn run(mut self) {
        if self.cache.is_some() {
            let b = self.open(b"\0".to_vec(), vec![0], 0, true);
            self.send_create(b);
        }
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            if self.link.is_none() && self.retry_at.is_none_or(|t| Instant::now() >= t) {
                self.connect();
            }
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    self.on_command(command);
                }
                event = link_event(&mut self.link) => match event {
                    LinkEvent::Opened(opened) => self.on_opened(opened),
                    LinkEvent::Response(response) => self.on_upstream(response),
                },
                _ = tick.tick() => {
                    self.on_tick();
                    if self.idle_since.is_some_and(|t| t.elapsed() >= IDLE) && self.cache.is_none() {
                        // Opens that raced the exit fail their ack and
                        // go to a new hub.
                        self.commands.close();
                        while self.commands.try_recv().is_ok() {}
                        break;
                    }
                }
            }
            self.flush_backlog();
            self.refresh_gauges();
            if self.streams.is_empty() {
                self.idle_since.get_or_insert_with(Instant::now);
            } else {
                self.idle_since = None;
            }
        }
        self.teardown();
    }

    fn teardown(&mut self) {
        if let Some(cache) = &self.cache {
            cache.down();
        }
        self.broadcasts.clear();
        self.locals.clear();
        self.refresh_gauges();
    }

    /// Brings the gauges up to date with this hub's state: open upstream
    /// watches, local watchers, and local watchers beyond the first of
    /// each upstream watch (etcd's "watchers coalescing").
    fn refresh_gauges(&mut self) {
        let live = self
            .broadcasts
            .values()
            .filter(|b| matches!(b.state, State::Live(_)))
            .count() as i64;
        let used = self
            .broadcasts
            .values()
            .filter(|b| !b.watchers.is_empty())
            .count() as i64;
        let locals = self.locals.len() as i64;
        let now = (live, locals, locals - used);
        PROXY_METRICS.upstream_watches.add(now.0 - self.gauges.0);
        PROXY_METRICS.local_watchers.add(now.1 - self.gauges.1);
        PROXY_METRICS.watchers_coalescing.add(now.2 - self.gauges.2);
        self.gauges = now;
    }

    /// Starts opening the upstream stream and queues a create for every
    /// broadcast, in the order they were opened.
    fn connect(&mut self) {
        let (tx, rx) = mpsc::channel(UPSTREAM_QUEUE);
        let (done, opening) = tokio::sync::oneshot::channel();
        let upstream = self.upstream.clone();
        let metadata = self.metadata.clone();
        tokio::spawn(async move {
            let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
            let opened = match upstream.metadata(&metadata).await {
                Ok(md) => {
                    upstream
                        .streaming::<PbWatchRequest, PbWatchResponse, _>(
                            "/etcdserverpb.Watch/Watch",
                            md,
                            requests,
                        )
                        .await
                }
                Err(status) => Err(status),
            };
            let _ = done.send(opened);
        });
        self.link = Some(UpstreamLink {
            tx,
            backlog: VecDeque::new(),
            rx: None,
            opening: Some(opening),
            index: 0,
        });
        self.creating.clear();
        let mut ids: Vec<u64> = self.broadcasts.keys().copied().collect();
        ids.sort_unstable();
        for b in ids {
            self.send_create(b);
        }
        if !self.progress_waiters.is_empty() {
            self.progress_sent = None;
            self.request_progress();
        }
    }

    fn on_opened(&mut self, opened: Option<Opened>) {
        match opened {
            Some(Ok((index, rx))) => {
                if let Some(link) = self.link.as_mut() {
                    link.rx = Some(rx);
                    link.index = index;
                    link.opening = None;
                }
                self.backoff = FIRST_BACKOFF;
                self.retry_at = None;
            }
            Some(Err(status)) => {
                tracing::warn!(
                    "proxy: cannot open an upstream watch stream: {}",
                    status.message()
                );
                if status.message() == upstream::INVALID_TOKEN
                    && self.metadata.get("token").is_none()
                {
                    // The proxy's own token: ask for a new one.
                    let upstream = self.upstream.clone();
                    tokio::spawn(async move { upstream.renew_own_token().await });
                }
                self.link_lost("cannot open", false);
            }
            None => self.link_lost("cannot open", false),
        }
    }

    fn retry_later(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
    }

    /// The upstream stream broke: every broadcast will be created again
    /// from the revision after the last one delivered.
    /// `transport`: the member (or the way to it) failed, so the next
    /// stream goes to another endpoint.
    pub(super) fn link_lost(&mut self, why: &str, transport: bool) {
        if let Some(link) = self.link.take() {
            if link.rx.is_some() {
                tracing::warn!("proxy: upstream watch stream lost ({why}); reopening");
                if transport {
                    self.upstream.failed(link.index);
                }
            }
        }
        if let Some(cache) = &self.cache {
            cache.down();
        }
        for b in self.broadcasts.values_mut() {
            if let State::Live(id) = b.state {
                self.by_watch_id.remove(&id);
                b.start_revision = b.revision + 1;
            }
            b.state = State::Creating;
        }
        self.creating.clear();
        self.progress_sent = None;
        self.retry_later();
    }

    fn send_up(&mut self, request: PbWatchRequest) {
        let Some(link) = self.link.as_mut() else {
            return; // sent again after the reconnect
        };
        if !link.backlog.is_empty() {
            return link.backlog.push_back(request);
        }
        if let Err(mpsc::error::TrySendError::Full(request)) = link.tx.try_send(request) {
            link.backlog.push_back(request);
        }
    }

    /// Moves backlogged requests into the stream's queue as it drains.
    fn flush_backlog(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        while let Some(request) = link.backlog.pop_front() {
            if let Err(mpsc::error::TrySendError::Full(request)) = link.tx.try_send(request) {
                link.backlog.push_front(request);
                break;
            }
        }
    }

    pub(super) fn send_create(&mut self, id: u64) {
        let Some(b) = self.broadcasts.get(&id) else {
            return;
        };
        let mut union = PbWatchRequestUnion::CreateRequest(Default::default());
        if let PbWatchRequestUnion::CreateRequest(c) = &mut union {
            c.key = b.key.clone();
            c.range_end = b.range_end.clone();
            c.start_revision = b.start_revision;
            c.prev_kv = true;
            c.progress_notify = true;
        }
        if self.link.is_some() {
            self.creating.push_back(id);
        }
        self.send_up(PbWatchRequest {
            request_union: Some(union),
        });
    }

    pub(super) fn send_cancel(&mut self, watch_id: i64) {
        let mut union = PbWatchRequestUnion::CancelRequest(Default::default());
        if let PbWatchRequestUnion::CancelRequest(c) = &mut union {
            c.watch_id = watch_id;
        }
        self.send_up(PbWatchRequest {
            request_union: Some(union),
        });
    }

    fn request_progress(&mut self) {
        if self.progress_sent.is_some() {
            return;
        }
        self.progress_sent = Some(Instant::now());
        self.send_up(PbWatchRequest {
            request_union: Some(PbWatchRequestUnion::ProgressRequest(Default::default())),
        });
    }

    pub(super) fn open(
        &mut self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        start: i64,
        pinned: bool,
    ) -> u64 {
        let id = self.next_broadcast;
        self.next_broadcast += 1;
        self.broadcasts
            .insert(id, Broadcast::new(key, range_end, start, pinned));
        id
    }

    fn on_tick(&mut self) {
        if self
            .progress_sent
            .is_some_and(|t| t.elapsed() >= PROGRESS_RESEND)
        {
            self.progress_sent = None;
            self.request_progress();
        }
        self.resume_stalled();
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Open { stream, tx, ack } => {
                if ack.send(()).is_ok() {
                    self.streams.insert(stream, tx);
                }
            }
            Command::Create {
                stream,
                watch_id,
                watch,
                answered,
            } => self.create(stream, watch_id, watch, answered),
            Command::Cancel { stream, watch_id } => {
                if self.detach((stream, watch_id)) {
                    let header = self.last_header;
                    let _ = self.deliver(
                        stream,
                        PbWatchResponse {
                            header,
                            watch_id,
                            canceled: true,
                            ..Default::default()
                        },
                    );
                }
            }
            Command::Progress { stream } => {
                self.progress_waiters.insert(stream);
                self.request_progress();
            }
            Command::Reply { stream, response } => {
                let _ = self.deliver(stream, response);
            }
            Command::Closed { stream } => self.close_stream(stream),
        }
    }

    fn create(
        &mut self,
        stream: u64,
        watch_id: i64,
        watch: LocalWatch,
        answered: tokio::sync::oneshot::Sender<()>,
    ) {
        let key = (stream, watch_id);
        let start = watch.start_revision;
        let id = self.attach(key, &watch);
        self.locals.insert(
            key,
            Local {
                watch,
                broadcast: id,
                min_revision: 0,
                created: false,
                answered: Some(answered),
            },
        );
        let Some(b) = self.broadcasts.get(&id) else {
            return;
        };
        if let State::Live(_) = b.state {
            let replay = if start > 0 && start <= b.revision {
                b.replay(start)
            } else {
                Vec::new()
            };
            let header = self.now_header();
            self.start_local(key, header, replay);
        }
    }

    /// The newest response header seen upstream: its revision is "now"
    /// for a watcher starting from now.
    pub(super) fn now_header(&self) -> Option<PbResponseHeader> {
        self.last_header
    }

    /// The broadcast that will serve local watcher `key` asking for
    /// `watch` (an open one that can, else a new one), with `key` added
    /// to its watchers.
    pub(super) fn attach(&mut self, key: LocalKey, watch: &LocalWatch) -> u64 {
        let now = self.last_header.map_or(0, |h| h.revision);
        let found = self
            .broadcasts
            .iter()
            .filter(|(_, b)| b.can_serve(watch, now))
            .min_by_key(|(id, b)| (!matches!(b.state, State::Live(_)), **id))
            .map(|(id, _)| *id);
        let id = match found {
            Some(id) => id,
            None => {
                let id = self.open(
                    watch.key.clone(),
                    watch.range_end.clone(),
                    watch.start_revision,
                    false,
                );
                self.send_create(id);
                id
            }
        };
        if let Some(b) = self.broadcasts.get_mut(&id) {
            b.watchers.insert(key);
        }
        id
    }

    /// Sends a local watcher its `created` response (whose header
    /// revision is "now": a watcher from now gets the events after it)
    /// and the buffered events it starts with.
    pub(super) fn start_local(
        &mut self,
        key: LocalKey,
        header: Option<PbResponseHeader>,
        replay: Vec<PbEvent>,
    ) {
        let Some(local) = self.locals.get_mut(&key) else {
            return;
        };
        let now = header.as_ref().map_or(0, |h| h.revision);
        local.created = true;
        if let Some(answered) = local.answered.take() {
            let _ = answered.send(());
        }
        local.min_revision = if local.watch.start_revision > 0 {
            local.watch.start_revision
        } else {
            now + 1
        };
        let events = local.select(&replay);
        let created = PbWatchResponse {
            header,
            watch_id: key.1,
            created: true,
            ..Default::default()
        };
        if self.deliver(key.0, created) && !events.is_empty() {
            self.send_events(key, header, events);
        }
    }

    /// Sends a local watcher `events` (all at or above its
    /// `min_revision`), then moves its `min_revision` past them; when its
    /// stream is full they are not sent and the stream stalls.
    pub(super) fn send_events(
        &mut self,
        key: LocalKey,
        header: Option<PbResponseHeader>,
        events: Vec<PbEvent>,
    ) -> bool {
        for mut chunk in by_revision(events, EVENTS_PER_RESPONSE) {
            let last = chunk
                .last()
                .and_then(|e| e.kv.as_ref())
                .map_or(0, |kv| kv.mod_revision);
            chunk.iter_mut().for_each(|e| self.namespace.event_out(e));
            let sent = self.deliver(
                key.0,
                PbWatchResponse {
                    header,
                    watch_id: key.1,
                    events: chunk,
                    ..Default::default()
                },
            );
            if !sent {
                return false;
            }
            if let Some(local) = self.locals.get_mut(&key) {
                local.min_revision = local.min_revision.max(last + 1);
            }
        }
        true
    }

    /// Removes a local watcher; its broadcast goes when nothing else
    /// needs it. Returns whether it existed.
    fn detach(&mut self, key: LocalKey) -> bool {
        let Some(local) = self.locals.remove(&key) else {
            return false;
        };
        self.leave(key, local.broadcast);
        true
    }

    /// Takes local watcher `key` off broadcast `id`, which goes when
    /// nothing else needs it.
    pub(super) fn leave(&mut self, key: LocalKey, id: u64) {
        let Some(b) = self.broadcasts.get_mut(&id) else {
            return;
        };
        b.watchers.remove(&key);
        if b.watchers.is_empty() && !b.pinned {
            let state = b.state;
            self.broadcasts.remove(&id);
            if let State::Live(watch_id) = state {
                self.by_watch_id.remove(&watch_id);
                self.send_cancel(watch_id);
            }
            // A broadcast still being created is cancelled when its
            // `created` response comes (see `on_created`).
        }
    }

    pub(super) fn close_stream(&mut self, stream: u64) {
        self.streams.remove(&stream);
        let keys: Vec<LocalKey> = self
            .locals
            .keys()
            .filter(|k| k.0 == stream)
            .copied()
            .collect();
        for k in keys {
            self.detach(k);
        }
        self.progress_waiters.remove(&stream);
        self.stalled.remove(&stream);
    }

    /// Queues `response` for a local stream: false when the stream is
    /// gone, stalled, or full (it then stalls, see `stall`).
    pub(super) fn deliver(&mut self, stream: u64, response: PbWatchResponse) -> bool {
        if self.stalled.contains(&stream) {
            return false;
        }
        let Some(tx) = self.streams.get(&stream) else {
            return false;
        };
        match tx.try_send(response) {
            Ok(()) => true,
            Err(false) => {
                self.stall(stream);
                false
            }
            Err(true) => false,
        }
    }
}

/// What the upstream link brings next.
enum LinkEvent {
    /// The stream opened (or could not).
    Opened(Option<Opened>),
    /// A response, an error, or the end of the stream.
    Response(Option<Result<PbWatchResponse, Status>>),
}

async fn link_event(link: &mut Option<UpstreamLink>) -> LinkEvent {
    let Some(link) = link.as_mut() else {
        return std::future::pending().await;
    };
    if let Some(opening) = link.opening.as_mut() {
        return LinkEvent::Opened(opening.await.ok());
    }
    match link.rx.as_mut() {
        Some(rx) => LinkEvent::Response(rx.next().await),
        None => std::future::pending().await,
    }
}

/// `events` in groups of at most `max`, except that one revision's events
/// stay together.
fn by_revision(events: Vec<PbEvent>, max: usize) -> Vec<Vec<PbEvent>> {
    let mut groups: Vec<Vec<PbEvent>> = Vec::new();
    let mut last = None;
    for e in events {
        let rev = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        match groups.last_mut() {
            Some(g) if g.len() < max || last == Some(rev) => g.push(e),
            _ => groups.push(vec![e]),
        }
        last = Some(rev);
    }
    groups
}
