//! In-process gRPC calls on behalf of an HTTP client: the JSON gateway and
//! the v2 keys API call the member's own gRPC services through [`Caller`],
//! which hands each request straight to the services' router (no socket,
//! no HTTP/2) carrying the HTTP caller's connection, so that the same
//! authentication and permission checks apply as to a gRPC client on that
//! connection (etcd's gateway instead dials its own port).

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;

use crate::core::api::listener::ClientConn;

/// A tonic transport that serves each call from `router` as if it came on
/// the connection `conn` (its remote address and certificate name; never
/// the trusted in-process flag unless the caller itself is in process).
#[derive(Clone)]
pub struct Caller {
    router: axum::Router,
    conn: ClientConn,
    token: Option<http::HeaderValue>,
}

/// The connection an HTTP request acts as: `conn`, without its client
/// certificate's name when a browser sent the request from another site
/// (`Sec-Fetch-Site: cross-site`/`same-site`, or an `Origin` that is not
/// this server's own: the `Host` header's, or HTTP/2's `:authority` in
/// `uri`). A browser attaches an installed client certificate
/// to any site's request (a form POST to `/v3/kv/put` needs no CORS
/// preflight); such a request must prove itself with a token instead.
/// Non-browser clients send neither header and keep the certificate's user.
pub fn browser_safe(
    mut conn: ClientConn,
    headers: &http::HeaderMap,
    uri: &http::Uri,
) -> ClientConn {
    if conn.common_name.is_none() {
        return conn;
    }
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let own = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(http::uri::Authority::as_str))
        .map(|host| format!("{}://{host}", if conn.tls { "https" } else { "http" }));
    let foreign_origin = headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|origin| own.as_deref() != Some(origin));
    if foreign_origin || matches!(fetch_site, "cross-site" | "same-site") {
        conn.common_name = None;
    }
    conn
}

impl Caller {
    /// Calls into `router` (the client port's gRPC services) as `conn`.
    pub fn new(router: axum::Router, conn: ClientConn) -> Self {
        Self {
            router,
            conn,
            token: None,
        }
    }

    /// Sends `token` (an `Authorization` header's value: an auth token) as
    /// the `authorization` metadata of calls that carry none.
    #[must_use]
    pub fn with_token(mut self, token: Option<http::HeaderValue>) -> Self {
        self.token = token;
        self
    }

    /// An etcd client over this transport (its typed KV, watch and lease
    /// calls), with no user of its own: the caller's token applies.
    ///
    /// # Errors
    /// None in practice (the client's setup makes no call without a user);
    /// the crate's error otherwise.
    pub async fn client(&self) -> Result<etcd_client::Client, etcd_client::Error> {
        let service = tower::ServiceBuilder::new()
            .map_err(|never: Infallible| -> tower::BoxError { match never {} })
            .map_response(|r: http::Response<axum::body::Body>| r.map(tonic::body::Body::new))
            .service(self.clone());
        etcd_client::Client::from_channel(
            etcd_client::Channel::Custom(tower::util::BoxCloneSyncService::new(service)),
            None,
        )
        .await
    }

    /// A tonic client over this transport, ready for one call: responses
    /// of any size (the member's own answers; etcd's gateway allows
    /// `math.MaxInt32`).
    ///
    /// # Errors
    /// `Unavailable` if the services cannot take a call (never in
    /// practice: the router is always ready).
    pub async fn grpc(&self) -> Result<tonic::client::Grpc<Caller>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.clone())
            .max_decoding_message_size(i32::MAX as usize)
            .max_encoding_message_size(i32::MAX as usize);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("etcdserver: {e}")))?;
        Ok(grpc)
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Caller {
    type Response = http::Response<axum::body::Body>;
    type Error = Infallible;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<http::Request<tonic::body::Body>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        request
            .extensions_mut()
            .insert(ConnectInfo(self.conn.clone()));
        if let Some(token) = &self.token {
            let headers = request.headers_mut();
            if !headers.contains_key("token") && !headers.contains_key(http::header::AUTHORIZATION)
            {
                headers.insert(http::header::AUTHORIZATION, token.clone());
            }
        }
        self.router.call(request)
    }
}
