//! The HTTP face of the client port: `GET /version` and `GET /health` with
//! etcd's JSON shapes (etcd `api/etcdhttp`).

use axum::extract::State;
use axum::http::StatusCode;
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
        .route("/metrics", get(metrics));
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
