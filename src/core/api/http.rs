//! The HTTP face of the client port: `GET /version` and `GET /health` with
//! etcd's JSON shapes (etcd `api/etcdhttp`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::core::api::{ApiContext, ETCD_CLUSTER_VERSION, ETCD_VERSION};

/// The HTTP routes, merged with the gRPC services on the client port.
pub fn router(ctx: ApiContext) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(ctx)
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
