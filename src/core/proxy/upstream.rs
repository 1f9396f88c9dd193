//! The proxy's link to the cluster: one lazily connected gRPC channel per
//! member client URL, one of them active at a time (clientv3's pinned
//! endpoint), moved to the next when the active one fails; the caller's
//! token and deadline carried on every call; the proxy's own token (from
//! `--user`) for callers that send none; and the endpoint list kept in step
//! with the membership (`--endpoints-auto-sync-interval`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use etcd_client::proto::{
    PbAuthenticateRequest, PbAuthenticateResponse, PbMemberListRequest, PbMemberListResponse,
};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::core::client::ClientConfig;

/// HTTP/2 pings on each upstream connection: interval, and the wait for
/// the answer before the connection (and so the endpoint) counts as dead.
const KEEP_ALIVE: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(3));
/// Largest message read from a member (the members enforce their own
/// `--max-request-bytes`; responses may be larger).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Metadata the proxy carries from its client to the member: etcd's auth
/// token (`token`, and `authorization` some clients send), the deadline
/// (`grpc-timeout`) and clientv3's `WithRequireLeader` (`hasleader`).
const CARRIED: [&str; 4] = ["token", "authorization", "grpc-timeout", "hasleader"];
/// etcd's message for a token the member no longer knows.
pub const INVALID_TOKEN: &str = "etcdserver: invalid auth token";

struct Link {
    url: String,
    channel: Channel,
}

/// The cluster as the proxy reaches it.
pub struct Upstream {
    config: ClientConfig,
    links: RwLock<Vec<Arc<Link>>>,
    active: AtomicUsize,
    /// The proxy's own token, from `--user` (Authenticate), refreshed when
    /// a member says it is invalid.
    own_token: tokio::sync::Mutex<Option<String>>,
}

/// One request's identity as the proxy groups by it: the caller's token,
/// or `None` for callers that send none (they act as the proxy's own
/// user, etcd's grpc-proxy rule).
pub type Caller = Option<String>;

/// The caller of `metadata`: its `token` (or `authorization`) value.
pub fn caller(metadata: &MetadataMap) -> Caller {
    ["token", "authorization"]
        .iter()
        .find_map(|k| metadata.get(*k))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// One task per caller, found or started under one lock (the watch and
/// keep-alive hubs).
pub struct Hubs<C>(
    std::sync::Mutex<std::collections::HashMap<Caller, tokio::sync::mpsc::Sender<C>>>,
);

impl<C> Default for Hubs<C> {
    fn default() -> Self {
        Self(std::sync::Mutex::default())
    }
}

impl<C> Hubs<C> {
    /// The live hub of `caller`, or a new one: `start` gets the caller's
    /// metadata (its token) and the hub's queue of `capacity` commands,
    /// and spawns the hub.
    pub fn get(
        &self,
        caller: &Caller,
        capacity: usize,
        start: impl FnOnce(MetadataMap, tokio::sync::mpsc::Receiver<C>),
    ) -> tokio::sync::mpsc::Sender<C> {
        let mut hubs = match self.0.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(tx) = hubs.get(caller).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        let mut metadata = MetadataMap::new();
        if let Some(token) = caller.as_deref().and_then(|t| t.parse().ok()) {
            metadata.insert("token", token);
        }
        start(metadata, rx);
        hubs.retain(|_, tx| !tx.is_closed());
        hubs.insert(caller.clone(), tx.clone());
        tx
    }
}

impl Upstream {
    /// Channels to `config.endpoints` (connected on first use).
    ///
    /// # Errors
    /// A message naming an endpoint tonic cannot use (bad URL, TLS).
    pub fn new(config: ClientConfig) -> Result<Arc<Self>, String> {
        let links = config
            .endpoints
            .iter()
            .map(|u| link(&config, u))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Self {
            config,
            links: RwLock::new(links),
            active: AtomicUsize::new(0),
            own_token: tokio::sync::Mutex::new(None),
        }))
    }

    /// The client URLs the proxy uses now.
    pub fn endpoints(&self) -> Vec<String> {
        self.links
            .read()
            .map(|l| l.iter().map(|l| l.url.clone()).collect())
            .unwrap_or_default()
    }

    /// The active endpoint's index and channel.
    pub fn channel(&self) -> (usize, Channel) {
        let links = match self.links.read() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        let i = self.active.load(Ordering::Relaxed) % links.len().max(1);
        match links.get(i) {
            Some(l) => (i, l.channel.clone()),
            // Never empty (set_endpoints keeps the old list over an empty
            // one); a lazy channel to nowhere would only fail its calls.
            None => (
                0,
                Endpoint::from_static("http://127.0.0.1:9").connect_lazy(),
            ),
        }
    }

    /// Moves off endpoint `index` after a failure there (no-op when
    /// another caller already moved).
    pub fn failed(&self, index: usize) {
        let links = match self.links.read() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        let n = links.len().max(1);
        let current = self.active.load(Ordering::Relaxed);
        if current % n == index % n {
            self.active.store((index + 1) % n, Ordering::Relaxed);
        }
    }

    /// Replaces the endpoint list (membership sync), keeping the channels
    /// of URLs still present; an empty list is ignored.
    pub fn set_endpoints(&self, urls: &[String]) {
        if urls.is_empty() {
            return;
        }
        let Ok(mut links) = self.links.write() else {
            return;
        };
        let current: Vec<String> = links.iter().map(|l| l.url.clone()).collect();
        if current == urls {
            return;
        }
        let active_url = links
            .get(self.active.load(Ordering::Relaxed) % links.len().max(1))
            .map(|l| l.url.clone());
        let mut next = Vec::new();
        for u in urls {
            if let Some(l) = links.iter().find(|l| &l.url == u) {
                next.push(l.clone());
            } else {
                match link(&self.config, u) {
                    Ok(l) => next.push(l),
                    Err(e) => tracing::warn!("ignoring member client URL {u}: {e}"),
                }
            }
        }
        if next.is_empty() {
            return;
        }
        let active = active_url
            .and_then(|a| next.iter().position(|l| l.url == a))
            .unwrap_or(0);
        tracing::info!(endpoints = ?urls, "proxy endpoints updated from the membership");
        *links = next;
        self.active.store(active, Ordering::Relaxed);
    }

    /// The metadata to send upstream for a call that came with `incoming`:
    /// the carried keys, and the proxy's own token when the caller sent
    /// none and `--user` is set.
    ///
    /// # Errors
    /// The member's answer when the proxy's own authentication fails.
    pub async fn metadata(&self, incoming: &MetadataMap) -> Result<MetadataMap, Status> {
        let mut out = MetadataMap::new();
        for key in CARRIED {
            if let Some(v) = incoming.get(key) {
                out.insert(key, v.clone());
            }
        }
        if caller(incoming).is_none() {
            if let Some(token) = self.own_token(false).await? {
                if let Ok(v) = MetadataValue::try_from(token.as_str()) {
                    out.insert("token", v);
                }
            }
        }
        Ok(out)
    }

    /// Asks for a new token of the proxy's own (`--user`), after a member
    /// said the current one is invalid (failures are logged).
    pub async fn renew_own_token(&self) {
        if let Err(s) = self.own_token(true).await {
            tracing::warn!("proxy: cannot log in as --user: {}", s.message());
        }
    }

    /// The proxy's own token (`--user`), asking for one when there is none
    /// yet or `renew`.
    async fn own_token(&self, renew: bool) -> Result<Option<String>, Status> {
        let Some((name, password)) = &self.config.user else {
            return Ok(None);
        };
        let mut slot = self.own_token.lock().await;
        if let (Some(t), false) = (slot.as_ref(), renew) {
            return Ok(Some(t.clone()));
        }
        let request = PbAuthenticateRequest {
            name: name.clone(),
            password: password.clone(),
        };
        let resp: Response<PbAuthenticateResponse> = self
            .call_unary(
                "/etcdserverpb.Auth/Authenticate",
                MetadataMap::new(),
                request,
                true,
            )
            .await?;
        let token = resp.into_inner().token;
        *slot = Some(token.clone());
        Ok(Some(token))
    }

    /// `request` sent to the member at `path` with the carried metadata;
    /// `idempotent` calls are tried again on the next endpoint after an
    /// Unavailable answer (reads, clientv3's retry rule); others report it.
    ///
    /// # Errors
    /// The member's status; Unavailable when no member answers.
    pub async fn unary<Req, Resp>(
        &self,
        path: &'static str,
        request: Request<Req>,
        idempotent: bool,
    ) -> Result<Response<Resp>, Status>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let own = caller(request.metadata()).is_none() && self.config.user.is_some();
        let metadata = self.metadata(request.metadata()).await?;
        let message = request.into_inner();
        // A copy only for the one case that sends the request again.
        let resend = own.then(|| message.clone());
        let result = self
            .call_unary(path, metadata.clone(), message, idempotent)
            .await;
        match (result, resend) {
            (Err(s), Some(message)) if s.message() == INVALID_TOKEN => {
                // The proxy's own token expired: renew once and retry.
                let mut metadata = metadata;
                if let Some(token) = self.own_token(true).await? {
                    if let Ok(v) = MetadataValue::try_from(token.as_str()) {
                        metadata.insert("token", v);
                    }
                }
                self.call_unary(path, metadata, message, idempotent).await
            }
            (other, _) => other,
        }
    }

    /// Sends `message` with `metadata`, on the next endpoint again after
    /// Unavailable when `idempotent` (copying it only for such a retry).
    async fn call_unary<Req, Resp>(
        &self,
        path: &'static str,
        metadata: MetadataMap,
        message: Req,
        idempotent: bool,
    ) -> Result<Response<Resp>, Status>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let tries = if idempotent {
            self.links.read().map(|l| l.len()).unwrap_or(1).max(1)
        } else {
            1
        };
        let mut message = Some(message);
        let mut last = Status::unavailable("kvd proxy: no endpoint");
        for attempt in 1..=tries {
            let (index, channel) = self.channel();
            let mut grpc =
                tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
            if let Err(e) = grpc.ready().await {
                self.failed(index);
                last = Status::unavailable(format!("kvd proxy: cannot reach the cluster: {e}"));
                continue;
            }
            let body = if attempt == tries {
                message.take()
            } else {
                message.clone()
            };
            let Some(body) = body else {
                break;
            };
            let request = Request::from_parts(metadata.clone(), Default::default(), body);
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            match grpc
                .unary(request, http::uri::PathAndQuery::from_static(path), codec)
                .await
            {
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    self.failed(index);
                    last = s;
                }
                other => return other,
            }
        }
        Err(last)
    }

    /// A server-streaming call (`Snapshot`, `RangeStream`, `Observe`).
    ///
    /// # Errors
    /// As [`Self::unary`] for the opening of the stream.
    pub async fn server_streaming<Req, Resp>(
        &self,
        path: &'static str,
        request: Request<Req>,
    ) -> Result<Response<Streaming<Resp>>, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let metadata = self.metadata(request.metadata()).await?;
        let (index, channel) = self.channel();
        let mut grpc =
            tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        grpc.ready().await.map_err(|e| {
            self.failed(index);
            Status::unavailable(format!("kvd proxy: cannot reach the cluster: {e}"))
        })?;
        let request = Request::from_parts(metadata, Default::default(), request.into_inner());
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.server_streaming(request, http::uri::PathAndQuery::from_static(path), codec)
            .await
            .inspect_err(|s| {
                if s.code() == tonic::Code::Unavailable {
                    self.failed(index);
                }
            })
    }

    /// A bidirectional stream (`Watch`, `LeaseKeepAlive`) on the active
    /// endpoint, with `metadata` (see [`Self::metadata`]); also returns the
    /// endpoint's index for [`Self::failed`].
    ///
    /// # Errors
    /// The member's status for the opening of the stream.
    pub async fn streaming<Req, Resp, S>(
        &self,
        path: &'static str,
        metadata: MetadataMap,
        requests: S,
    ) -> Result<(usize, Streaming<Resp>), Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
        S: futures::Stream<Item = Req> + Send + 'static,
    {
        let (index, channel) = self.channel();
        let mut grpc =
            tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        if let Err(e) = grpc.ready().await {
            self.failed(index);
            return Err(Status::unavailable(format!(
                "kvd proxy: cannot reach the cluster: {e}"
            )));
        }
        let request = Request::from_parts(metadata, Default::default(), requests);
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        match grpc
            .streaming(request, http::uri::PathAndQuery::from_static(path), codec)
            .await
        {
            Ok(r) => Ok((index, r.into_inner())),
            Err(s) => {
                if s.code() == tonic::Code::Unavailable {
                    self.failed(index);
                }
                Err(s)
            }
        }
    }

    /// Forwards one HTTP/2 gRPC request as it is (path, metadata, body,
    /// trailers): the services the proxy does not interpret (Cluster,
    /// Maintenance, Auth, Lock, Election). A token-less request gets the
    /// proxy's own token.
    pub async fn pass_through(&self, request: axum::extract::Request) -> axum::response::Response {
        use tower::ServiceExt as _;
        let (mut parts, body) = request.into_parts();
        // The caller's token, if any, is in the headers as it came.
        let tokenless = !parts.headers.contains_key("token")
            && !parts.headers.contains_key(http::header::AUTHORIZATION);
        if tokenless {
            match self.own_token(false).await {
                Ok(Some(token)) => {
                    if let Ok(v) = http::HeaderValue::from_str(&token) {
                        parts.headers.insert("token", v);
                    }
                }
                Ok(None) => {}
                Err(status) => return status.into_http::<axum::body::Body>(),
            }
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let Ok(uri) = http::Uri::builder().path_and_query(path).build() else {
            return Status::unimplemented("kvd proxy: bad path").into_http();
        };
        parts.uri = uri;
        parts.headers.remove(http::header::HOST);
        let request = http::Request::from_parts(parts, tonic::body::Body::new(body));
        let (index, channel) = self.channel();
        match channel.oneshot(request).await {
            Ok(response) => response.map(axum::body::Body::new),
            Err(e) => {
                self.failed(index);
                Status::unavailable(format!("kvd proxy: cannot reach the cluster: {e}")).into_http()
            }
        }
    }

    /// Follows the membership: every `interval`, the started members'
    /// client URLs (of the proxy's scheme) become the endpoint list
    /// (clientv3's `AutoSyncInterval`).
    pub async fn sync_endpoints(self: Arc<Self>, interval: Duration) {
        let tls = self.config.tls.is_some();
        loop {
            tokio::time::sleep(interval).await;
            let request = Request::new(PbMemberListRequest {
                linearizable: false,
            });
            let list: Result<Response<PbMemberListResponse>, Status> = self
                .unary("/etcdserverpb.Cluster/MemberList", request, true)
                .await;
            match list {
                Ok(list) => {
                    let urls: Vec<String> = list
                        .into_inner()
                        .members
                        .into_iter()
                        .filter(|m| !m.is_learner)
                        .flat_map(|m| m.client_ur_ls)
                        .filter(|u| u.starts_with("https://") == tls)
                        .collect();
                    self.set_endpoints(&urls);
                }
                Err(e) => tracing::warn!("cannot sync the proxy's endpoints: {}", e.message()),
            }
        }
    }
}

fn link(config: &ClientConfig, url: &str) -> Result<Arc<Link>, String> {
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("endpoint {url}: {e}"))?
        .connect_timeout(config.dial_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE.0)
        .keep_alive_timeout(KEEP_ALIVE.1)
        .keep_alive_while_idle(true);
    if url.starts_with("https://") {
        let tls = config.tls.clone().unwrap_or_default();
        endpoint = endpoint
            .tls_config(tls.options())
            .map_err(|e| format!("endpoint {url}: TLS: {e}"))?;
    }
    Ok(Arc::new(Link {
        url: url.to_string(),
        channel: endpoint.connect_lazy(),
    }))
}
