//! `kvd proxy`: a stateless local proxy in front of a cluster (etcd's
//! grpc-proxy), serving the etcd v3 API on one port (TCP, TLS or a Unix
//! socket) with:
//! - KV ([`kv`]) with a serializable-read cache ([`cache`]) kept exact by a
//!   watch, keys moved into `--namespace` ([`namespace`]);
//! - Watch ([`watch`]) coalescing local watchers onto few upstream
//!   watches;
//! - Lease ([`lease`]) coalescing keep-alives onto one upstream stream;
//! - Cluster, Maintenance, Auth, Lock and Election forwarded as they are
//!   (bytes, metadata and trailers), MemberList answered from the
//!   registered proxies with `--resolver-prefix` ([`register`]);
//! - `/health`, `/proxy/health`, `/metrics` and `/proxy/metrics` over HTTP
//!   on the same port and on `--metrics-addr`.
//!
//! The cluster is reached through [`upstream::Upstream`]: the caller's
//! token and deadline pass through, a token-less caller acts as the
//! proxy's `--user`, and the endpoints follow the membership.

pub mod cache;
pub mod kv;
pub mod lease;
pub mod metrics;
pub mod namespace;
pub mod register;
pub mod upstream;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::proto::{
    PbClusterServer, PbKvServer, PbLeaseServer, PbRangeRequest, PbRangeResponse, PbWatchServer,
};
use futures::StreamExt as _;
use tokio::sync::watch as signal;
use tonic::{Request, Response, Status};

use crate::core::api::listener::{self, ClientConn, ClientListener};
use crate::core::client::ClientConfig;
use crate::core::tls::{ServerTls, TlsFiles, TlsPolicy};

use self::cache::ReadCache;
use self::metrics::PROXY_METRICS;
use self::namespace::Namespace;
use self::upstream::Upstream;

/// Where the proxy listens for its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// TCP (h2c, or TLS with certificates).
    Tcp(SocketAddr),
    /// A Unix domain socket at this path (replaced if it exists).
    Unix(PathBuf),
}

/// The validated settings of `kvd proxy`.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `--listen-addr`.
    pub listen: Listen,
    /// The cluster: endpoints, timeouts, TLS (`--cacert/--cert/--key`),
    /// the proxy's own `--user`.
    pub upstream: ClientConfig,
    /// `--endpoints-auto-sync-interval` (`None`: off).
    pub auto_sync: Option<Duration>,
    /// `--namespace`.
    pub namespace: Vec<u8>,
    /// TLS for the proxy's clients (`--cert-file`, `--key-file`,
    /// `--trusted-ca-file`, `--auto-tls`), if any.
    pub tls: Option<TlsFiles>,
    /// Cipher suites and versions of that TLS.
    pub tls_policy: TlsPolicy,
    /// Where `--auto-tls` keeps its certificate (`<data-dir>/fixtures/proxy`).
    pub data_dir: PathBuf,
    /// `--metrics-addr`: an extra HTTP listener for metrics and health.
    pub metrics_addr: Option<SocketAddr>,
    /// The read cache: (most entries, longest age); `None` turns it off.
    pub cache: Option<(usize, Duration)>,
    /// `--advertise-client-url`, `--resolver-prefix`, `--resolver-ttl`
    /// (seconds) and this host's name, for registration.
    pub register: Option<register::Registration>,
}

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A setting that cannot work (exit 2).
    #[error("{0}")]
    Config(String),
    /// A failure while running.
    #[error("{0}")]
    Other(String),
}

/// Runs the proxy until `stop` turns true.
///
/// # Errors
/// [`ProxyError::Config`] for certificates or an address it cannot use,
/// [`ProxyError::Other`] when serving fails.
pub async fn run(cfg: ProxyConfig, mut stop: signal::Receiver<bool>) -> Result<(), ProxyError> {
    let upstream = Upstream::new(cfg.upstream.clone()).map_err(ProxyError::Config)?;
    let namespace = Namespace(cfg.namespace.clone());
    let cache = cfg.cache.map(|(n, age)| Arc::new(ReadCache::new(n, age)));
    let listener = bind(&cfg).await?;
    let metrics_listener = match cfg.metrics_addr {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            ProxyError::Config(format!("cannot listen on --metrics-addr {addr}: {e}"))
        })?),
        None => None,
    };
    let mut tasks = Vec::new();
    if let Some(interval) = cfg.auto_sync {
        tasks.push(tokio::spawn(upstream.clone().sync_endpoints(interval)));
    }
    if let Some(reg) = cfg.register.clone() {
        tasks.push(tokio::spawn(register::keep_registered(
            cfg.upstream.clone(),
            namespace.clone(),
            reg,
        )));
    }
    let watch = watch::WatchProxy::new(upstream.clone(), namespace.clone(), cache.clone());
    let health = Health {
        upstream: upstream.clone(),
        namespace: namespace.clone(),
    };
    let router = router(&cfg, &upstream, &namespace, cache, watch, health.clone());
    if let Some(tcp) = metrics_listener {
        let app = http_routes(health).into_make_service();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(tcp, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        }));
    }
    tracing::info!(listen = ?cfg.listen, endpoints = ?cfg.upstream.endpoints, "proxy serving");
    let served = {
        let mut stop = stop.clone();
        axum::serve::<ClientListener, _, _>(
            listener,
            router.into_make_service_with_connect_info::<ClientConn>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
    };
    let server = tokio::spawn(async move { served.await });
    let _ = stop.wait_for(|s| *s).await;
    for t in &tasks {
        t.abort();
    }
    // Watch streams never end by themselves: give the server a moment.
    let abort = server.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .is_err()
    {
        abort.abort();
    }
    if let Listen::Unix(path) = &cfg.listen {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

async fn bind(cfg: &ProxyConfig) -> Result<ClientListener, ProxyError> {
    match &cfg.listen {
        Listen::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let unix = tokio::net::UnixListener::bind(path).map_err(|e| {
                ProxyError::Config(format!("cannot listen on unix://{}: {e}", path.display()))
            })?;
            Ok(listener::accept_unix(unix))
        }
        Listen::Tcp(addr) => {
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ProxyError::Config(format!("cannot listen on {addr}: {e}")))?;
            let tls = match &cfg.tls {
                Some(files) => Some(Arc::new(
                    ServerTls::new(
                        files.clone(),
                        cfg.tls_policy.clone(),
                        vec![b"h2".to_vec(), b"http/1.1".to_vec()],
                        &cfg.data_dir.join("fixtures").join("proxy"),
                        &[addr.ip().to_string()],
                    )
                    .map_err(ProxyError::Config)?,
                )),
                None => None,
            };
            listener::accept_tcp(tcp, tls).map_err(|e| ProxyError::Other(e.to_string()))
        }
    }
}

fn router(
    cfg: &ProxyConfig,
    upstream: &Arc<Upstream>,
    namespace: &Namespace,
    cache: Option<Arc<ReadCache>>,
    watch: Arc<watch::WatchProxy>,
    health: Health,
) -> axum::Router {
    let limit = upstream::MAX_MESSAGE_BYTES;
    let kv = Arc::new(kv::KvProxy {
        upstream: upstream.clone(),
        namespace: namespace.clone(),
        cache,
    });
    let lease = lease::LeaseProxy::new(upstream.clone(), namespace.clone());
    let mut grpc =
        tonic::service::Routes::new(PbKvServer::from_arc(kv).max_decoding_message_size(limit))
            .add_service(PbWatchServer::from_arc(watch).max_decoding_message_size(limit))
            .add_service(PbLeaseServer::new(lease).max_decoding_message_size(limit));
    if let Some(reg) = cfg.register.clone() {
        let members = register::MemberListRoute {
            upstream: upstream.clone(),
            namespace: namespace.clone(),
            registration: reg,
        };
        grpc = grpc.add_service(PbClusterServer::new(members).max_decoding_message_size(limit));
    }
    let grpc = grpc.into_axum_router();
    let pass = upstream.clone();
    grpc.layer(axum::middleware::map_response(
        crate::core::api::grpc_edge_statuses,
    ))
    .merge(http_routes(health))
    .fallback(move |request: axum::extract::Request| {
        let upstream = pass.clone();
        async move { upstream.pass_through(request).await }
    })
}

/// The proxy's health checks (etcd grpc-proxy's `/health` and
/// `/proxy/health`).
#[derive(Clone)]
struct Health {
    upstream: Arc<Upstream>,
    namespace: Namespace,
}

impl Health {
    /// A linearizable read of key `a` within 1 s; permission denied counts
    /// as healthy (etcd's rule).
    async fn cluster(&self) -> Result<(), String> {
        let mut request = Request::new(PbRangeRequest {
            key: self.namespace.key(b"a"),
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(1));
        let answer: Result<Response<PbRangeResponse>, Status> = tokio::time::timeout(
            Duration::from_secs(1),
            self.upstream.unary("/etcdserverpb.KV/Range", request, true),
        )
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("context deadline exceeded")));
        match answer {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::PermissionDenied => Ok(()),
            Err(s) => Err(format!("GET ERROR:{}", s.message())),
        }
    }

    /// The cluster check, then an upstream watch created within 3 s.
    async fn proxy(&self) -> Result<(), String> {
        self.cluster().await?;
        let metadata = self
            .upstream
            .metadata(&tonic::metadata::MetadataMap::new())
            .await
            .map_err(|s| s.message().to_string())?;
        let mut union = etcd_client::proto::PbWatchRequestUnion::CreateRequest(Default::default());
        if let etcd_client::proto::PbWatchRequestUnion::CreateRequest(c) = &mut union {
            c.key = self.namespace.key(b"a");
        }
        let first = etcd_client::proto::PbWatchRequest {
            request_union: Some(union),
        };
        let requests = futures::stream::iter([first]).chain(futures::stream::pending());
        let created = async {
            let (_, mut rx) = self
                .upstream
                .streaming::<_, etcd_client::proto::PbWatchResponse, _>(
                    "/etcdserverpb.Watch/Watch",
                    metadata,
                    requests,
                )
                .await
                .ok()?;
            rx.next().await?.ok().filter(|r| r.created)
        };
        match tokio::time::timeout(Duration::from_secs(3), created).await {
            Ok(Some(_)) => Ok(()),
            _ => Err("WATCH TIMEOUT".to_string()),
        }
    }
}

/// `{"health":"true","reason":""}` with 200, or the reason with 503 (and
/// a trailing newline, as Go's `http.Error`).
fn health_answer(result: Result<(), String>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match result {
        Ok(()) => (
            axum::http::StatusCode::OK,
            serde_json::json!({"health": "true", "reason": ""}).to_string(),
        )
            .into_response(),
        Err(reason) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{}\n",
                serde_json::json!({"health": "false", "reason": reason})
            ),
        )
            .into_response(),
    }
}

fn http_routes(health: Health) -> axum::Router {
    use axum::routing::get;
    let h1 = health.clone();
    let h2 = health;
    axum::Router::new()
        .route(
            "/health",
            get(move || {
                let h = h1.clone();
                async move { health_answer(h.cluster().await) }
            }),
        )
        .route(
            "/proxy/health",
            get(move || {
                let h = h2.clone();
                async move { health_answer(h.proxy().await) }
            }),
        )
        .route("/metrics", get(|| async { PROXY_METRICS.render() }))
        .route("/proxy/metrics", get(|| async { PROXY_METRICS.render() }))
}
