//! The HTTP face of the client port: `GET /version` and `GET /health` with
//! etcd's JSON shapes, `/livez` and `/readyz` with etcd 3.5's checks
//! (etcd `api/etcdhttp`), `/metrics`, and etcd's CORS headers.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::core::api::{ApiContext, ETCD_CLUSTER_VERSION, ETCD_VERSION};

/// The HTTP routes, merged with the gRPC services on the client port
/// (with the `failpoints` feature, also `PUT /debug/failpoints/<name>`).
pub fn router(ctx: ApiContext) -> Router {
    let router = Router::new()
        .route("/version", get(version))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/livez", get(livez))
        .route("/livez/{check}", get(livez_one))
        .route("/readyz", get(readyz))
        .route("/readyz/{check}", get(readyz_one));
    #[cfg(feature = "failpoints")]
    let router = router.route(
        "/debug/failpoints/{name}",
        axum::routing::put(set_failpoint),
    );
    router.with_state(ctx)
}

/// `PUT /debug/failpoints/<name>` with the actions as the body (e.g.
/// `return`): 204, or 400 with the `fail` crate's message.
#[cfg(feature = "failpoints")]
async fn set_failpoint(
    axum::extract::Path(name): axum::extract::Path<String>,
    body: String,
) -> (StatusCode, String) {
    match crate::core::failpoints::configure(&name, body.trim()) {
        Ok(()) => (StatusCode::NO_CONTENT, String::new()),
        Err(e) => (StatusCode::BAD_REQUEST, e),
    }
}

async fn version() -> Json<Value> {
    Json(json!({ "etcdserver": ETCD_VERSION, "etcdcluster": ETCD_CLUSTER_VERSION }))
}

/// `{"health":"true"}` while a leader is known, else 503 with
/// `{"health":"false"}` (etcd 3.4's shapes).
async fn health(State(ctx): State<ApiContext>) -> (StatusCode, Json<Value>) {
    if ctx.node.status.leader().is_some() {
        (StatusCode::OK, Json(json!({ "health": "true" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "health": "false" })),
        )
    }
}

/// Prometheus text format.
async fn metrics() -> String {
    crate::core::metrics::METRICS.render()
}

/// Which origins get etcd's CORS headers (`--cors`).
#[derive(Debug, Clone)]
pub struct Cors {
    any: bool,
    origins: HashSet<String>,
}

impl Cors {
    /// From `--cors`'s origins (`*` for any).
    pub fn new(origins: &[String]) -> Self {
        Self {
            any: origins.iter().any(|o| o == "*"),
            origins: origins.iter().cloned().collect(),
        }
    }
}

/// etcd's CORS handler on the HTTP endpoints: to an allowed origin (any
/// with `*`, etcd's default), `Access-Control-Allow-Origin` (`*` or the
/// origin), `-Methods` and `-Headers`; `OPTIONS` answers 200 with nothing
/// else.
pub async fn cors(State(cors): State<Arc<Cors>>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(http::header::ORIGIN).cloned();
    let allow = if cors.any {
        Some(HeaderValue::from_static("*"))
    } else {
        origin.filter(|o| o.to_str().is_ok_and(|o| cors.origins.contains(o)))
    };
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(request).await
    };
    if let Some(origin) = allow {
        let headers = response.headers_mut();
        headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            http::header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
        );
        headers.insert(
            http::header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("accept, content-type, authorization"),
        );
    }
    response
}

/// The checks of `/livez` (etcd 3.5).
const LIVEZ: &[&str] = &["serializable_read"];
/// The checks of `/readyz` (etcd 3.5.19).
const READYZ: &[&str] = &[
    "data_corruption",
    "serializable_read",
    "linearizable_read",
    "non_learner",
];

/// Runs one named check: `Ok` or the reason it failed.
async fn check(ctx: &ApiContext, name: &str) -> Result<(), String> {
    match name {
        "serializable_read" => ctx
            .current_revision()
            .map(|_| ())
            .map_err(|e| e.to_string()),
        "linearizable_read" => ctx
            .node
            .linearizable_barrier(ctx.request_timeout)
            .await
            .map_err(|e| e.to_string()),
        "data_corruption" => {
            let alarms = crate::core::alarm::list(&ctx.storage.db.read_tx(), &ctx.storage)
                .map_err(|e| e.to_string())?;
            if alarms
                .iter()
                .any(|a| a.alarm == crate::core::alarm::CORRUPT)
            {
                Err("alarm activated: CORRUPT".to_string())
            } else {
                Ok(())
            }
        }
        "non_learner" => ctx
            .reject_learner()
            .map_err(|_| "not supported for learner".to_string()),
        _ => Err("no such check".to_string()),
    }
}

/// etcd 3.5's `/livez` and `/readyz`: `ok` (200) when every check not
/// `exclude`d passes, each check's `[+]name ok` line first with `verbose`;
/// 503 with every line (`[-]name failed: reason`) otherwise.
async fn probe(ctx: &ApiContext, checks: &[&str], query: Option<&str>) -> Response {
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let verbose = params.iter().any(|(k, _)| k == "verbose");
    let excluded: HashSet<&str> = params
        .iter()
        .filter(|(k, _)| k == "exclude")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut detail = String::new();
    let mut failed = false;
    for name in checks.iter().filter(|c| !excluded.contains(**c)) {
        let line = match check(ctx, name).await {
            Ok(()) => format!("[+]{name} ok\n"),
            Err(reason) => {
                failed = true;
                format!("[-]{name} failed: {reason}\n")
            }
        };
        detail.push_str(&line);
    }
    let (status, body) = if failed {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{detail}\n"))
    } else if verbose {
        (StatusCode::OK, format!("{detail}ok\n"))
    } else {
        (StatusCode::OK, "ok\n".to_string())
    };
    (
        status,
        [
            (http::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn livez(State(ctx): State<ApiContext>, uri: axum::http::Uri) -> Response {
    probe(&ctx, LIVEZ, uri.query()).await
}

async fn readyz(State(ctx): State<ApiContext>, uri: axum::http::Uri) -> Response {
    probe(&ctx, READYZ, uri.query()).await
}

/// `/livez/<check>`: that check alone.
async fn livez_one(
    State(ctx): State<ApiContext>,
    Path(name): Path<String>,
    uri: axum::http::Uri,
) -> Response {
    one(&ctx, LIVEZ, &name, uri.query()).await
}

/// `/readyz/<check>`: that check alone.
async fn readyz_one(
    State(ctx): State<ApiContext>,
    Path(name): Path<String>,
    uri: axum::http::Uri,
) -> Response {
    one(&ctx, READYZ, &name, uri.query()).await
}

async fn one(ctx: &ApiContext, checks: &[&str], name: &str, query: Option<&str>) -> Response {
    match checks.iter().find(|c| **c == name) {
        Some(c) => probe(ctx, std::slice::from_ref(c), query).await,
        None => (StatusCode::NOT_FOUND, "404 page not found\n").into_response(),
    }
}
