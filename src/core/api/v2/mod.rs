//! etcd's v2 keys API (`/v2/keys/…`) as a view of the v3 key space: a v2
//! key `/a/b` is the v3 key `/a/b`, a v2 index is a v3 revision, a TTL is a
//! lease of its own, and a directory exists while a key lies below it
//! (`/a/…`) or its marker (the v3 key `/a/`, empty, written by
//! `dir=true`) does. Old curl scripts and v3 clients so share one store;
//! ARCHITECTURE.md has the full mapping and where it departs from etcd's
//! v2 store. Also `/v2/members`, `/v2/machines` and `/v2/stats/self`.
//!
//! Every call goes through [`Caller`] (the member's own gRPC services, with
//! the HTTP client's connection and `Authorization` token): the v3 API's
//! permission checks apply to v2 requests.

pub mod keys;
pub mod node;
pub mod wait;
pub mod write;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde_json::json;

use crate::core::api::caller::{self, Caller};
use crate::core::api::listener::ClientConn;
use crate::core::api::ApiContext;
use node::V2Error;

/// What the v2 handlers share.
#[derive(Clone)]
pub struct V2 {
    /// The client port's gRPC services.
    pub grpc: Router,
    /// The member (status, ids, indexes).
    pub ctx: ApiContext,
}

/// The v2 routes, calling into `grpc` (the client port's gRPC router).
pub fn router(grpc: Router, ctx: ApiContext) -> Router {
    Router::new()
        .route("/v2/keys", any(keys_root))
        .route("/v2/keys/", any(keys_root))
        .route("/v2/keys/{*key}", any(keys))
        .route("/v2/members", get(members))
        .route("/v2/machines", get(machines))
        .route("/v2/stats/self", get(stats_self))
        .with_state(V2 { grpc, ctx })
}

/// The parameters of a keys request: the query string and, for PUT, POST
/// and DELETE, a form body (the body wins, as Go's `FormValue`).
#[derive(Debug, Default, Clone)]
pub struct Params {
    pub value: Option<String>,
    pub ttl: Option<String>,
    pub dir: bool,
    pub prev_exist: Option<bool>,
    pub prev_value: Option<String>,
    pub prev_index: Option<i64>,
    pub refresh: bool,
    pub recursive: bool,
    pub sorted: bool,
    pub wait: bool,
    pub wait_index: Option<i64>,
    pub stream: bool,
    pub quorum: bool,
    pub no_value_on_success: bool,
}

impl Params {
    /// Parses `query` then `form` (later values win).
    ///
    /// # Errors
    /// v2's 209 (a flag that is not a boolean), 202 (a TTL that is not a
    /// number), 203 (an index that is not a number), 201 (an empty
    /// prevValue).
    pub fn parse(query: &str, form: &[u8]) -> Result<Params, V2Error> {
        let mut p = Params::default();
        let pairs =
            url::form_urlencoded::parse(query.as_bytes()).chain(url::form_urlencoded::parse(form));
        for (name, value) in pairs {
            let flag = |v: &str| -> Result<bool, V2Error> {
                match v {
                    "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
                    "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
                    _ => Err(V2Error::new(209, format!("invalid value for {name:?}"))),
                }
            };
            let index = |v: &str| -> Result<i64, V2Error> {
                v.parse::<u64>()
                    .ok()
                    .and_then(|i| i64::try_from(i).ok())
                    .ok_or_else(|| V2Error::new(203, format!("invalid value for {name:?}")))
            };
            match &*name {
                "value" => p.value = Some(value.into_owned()),
                "ttl" => p.ttl = Some(value.into_owned()),
                "dir" => p.dir = flag(&value)?,
                "prevExist" => p.prev_exist = Some(flag(&value)?),
                "prevValue" => {
                    if value.is_empty() {
                        return Err(V2Error::new(201, "\"prevValue\" cannot be empty"));
                    }
                    p.prev_value = Some(value.into_owned());
                }
                // 0 is no condition, as v2 reads it.
                "prevIndex" => p.prev_index = Some(index(&value)?).filter(|i| *i != 0),
                "refresh" => p.refresh = flag(&value)?,
                "recursive" => p.recursive = flag(&value)?,
                "sorted" => p.sorted = flag(&value)?,
                "wait" => p.wait = flag(&value)?,
                "waitIndex" => p.wait_index = Some(index(&value)?),
                "stream" => p.stream = flag(&value)?,
                "quorum" => p.quorum = flag(&value)?,
                "noValueOnSuccess" => p.no_value_on_success = flag(&value)?,
                _ => {}
            }
        }
        p.ttl_seconds()?;
        Ok(p)
    }

    /// The TTL in seconds: `None` for no TTL (absent or empty).
    ///
    /// # Errors
    /// 202 for a TTL that is not a non-negative number.
    pub fn ttl_seconds(&self) -> Result<Option<i64>, V2Error> {
        match self.ttl.as_deref() {
            None | Some("") => Ok(None),
            Some(t) => t
                .parse::<u64>()
                .ok()
                .and_then(|t| i64::try_from(t).ok())
                .map(Some)
                .ok_or_else(|| V2Error::new(202, "")),
        }
    }
}

/// A v2 key from the path after `/v2/keys`: `/`-rooted, `.` and `..` and
/// repeated or trailing slashes cleaned away (Go's `path.Clean`).
pub fn clean_key(raw: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

async fn keys_root(
    state: State<V2>,
    conn: ConnectInfo<ClientConn>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    query: RawQuery,
    body: Body,
) -> Response {
    let conn = ConnectInfo(caller::browser_safe(conn.0, &headers, &uri));
    serve_keys(state, conn, method, headers, query, "/".to_string(), body).await
}

#[allow(clippy::too_many_arguments)] // one per axum extractor
async fn keys(
    state: State<V2>,
    conn: ConnectInfo<ClientConn>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    query: RawQuery,
    Path(key): Path<String>,
    body: Body,
) -> Response {
    let conn = ConnectInfo(caller::browser_safe(conn.0, &headers, &uri));
    serve_keys(state, conn, method, headers, query, clean_key(&key), body).await
}

async fn serve_keys(
    State(v2): State<V2>,
    ConnectInfo(conn): ConnectInfo<ClientConn>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    key: String,
    body: Body,
) -> Response {
    let limit = v2.ctx.max_request_bytes.saturating_mul(2);
    let form = match axum::body::to_bytes(body, limit).await {
        Ok(form) => form,
        Err(_) => return v2.error(V2Error::new(210, "")),
    };
    let params = match Params::parse(query.as_deref().unwrap_or_default(), &form) {
        Ok(p) => p,
        // Refused before the store is read: index 0, as etcd.
        Err(e) => return v2.error_at(e, 0),
    };
    let token = headers.get(http::header::AUTHORIZATION).cloned();
    // `conn` went through caller::browser_safe in the route handlers.
    let caller = Caller::new(v2.grpc.clone(), conn).with_token(token);
    let client = match caller.client().await {
        Ok(c) => c,
        Err(e) => return v2.error(V2Error::internal(e.to_string())),
    };
    let store = keys::Store::new(client, v2.ctx.clone());
    let answer = match method {
        Method::GET | Method::HEAD if params.wait => {
            return wait::serve(&v2, store, key, params).await;
        }
        Method::GET | Method::HEAD => store.get(&key, &params).await,
        Method::PUT => store.put(&key, &params).await,
        Method::POST => store.create_in_order(&key, &params).await,
        Method::DELETE => store.delete(&key, &params).await,
        _ => {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                [(http::header::ALLOW, "HEAD,GET,PUT,POST,DELETE")],
                "Method Not Allowed\n",
            )
                .into_response()
        }
    };
    match answer {
        Ok((status, event, index)) => v2.json(status, &event, index),
        Err(e) => v2.error(e),
    }
}

impl V2 {
    /// A v2 answer: the JSON and a newline (Go's `json.Encoder`), with
    /// `X-Etcd-Cluster-Id`, `X-Etcd-Index` (`index`, the store's revision),
    /// `X-Raft-Index` and `X-Raft-Term`.
    pub fn json<T: serde::Serialize>(&self, status: StatusCode, body: &T, index: i64) -> Response {
        let mut bytes = serde_json::to_vec(body).unwrap_or_default();
        bytes.push(b'\n');
        let mut response = (status, bytes).into_response();
        self.headers(response.headers_mut(), index);
        response
    }

    /// The v2 headers of an answer at store revision `index`.
    pub fn headers(&self, headers: &mut HeaderMap, index: i64) {
        let st = &self.ctx.node.status;
        let pairs = [
            ("content-type", "application/json".to_string()),
            ("x-etcd-cluster-id", format!("{:x}", st.cluster_id.0)),
            ("x-etcd-index", index.to_string()),
            ("x-raft-index", self.ctx.node.applied.borrow().0.to_string()),
            ("x-raft-term", st.term().to_string()),
        ];
        for (name, value) in pairs {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
    }

    /// A v2 error body `{"errorCode","message","cause","index"}` with its
    /// HTTP status, at the current revision.
    pub fn error(&self, e: V2Error) -> Response {
        let index = self.ctx.current_revision().map_or(0, |r| r.0);
        self.error_at(e, index)
    }

    /// A v2 error at store revision `index`: `X-Etcd-Cluster-Id` and
    /// `X-Etcd-Index`, no `X-Raft-*` (as etcd).
    pub fn error_at(&self, e: V2Error, index: i64) -> Response {
        let mut response = self.json(e.status(), &e.body(index), index);
        let headers = response.headers_mut();
        headers.remove("x-raft-index");
        headers.remove("x-raft-term");
        response
    }
}

/// `GET /v2/members`: `{"members":[{"id","name","peerURLs","clientURLs"}]}`.
async fn members(State(v2): State<V2>) -> Response {
    match crate::core::members::list(&v2.ctx.storage) {
        Ok(members) => {
            let members: Vec<_> = members
                .iter()
                .map(|m| {
                    json!({
                        "id": format!("{:x}", m.id),
                        "name": m.name,
                        "peerURLs": m.peer_ur_ls,
                        "clientURLs": m.client_ur_ls,
                    })
                })
                .collect();
            (StatusCode::OK, Json(json!({ "members": members }))).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /v2/machines`: the members' client URLs, comma-separated.
async fn machines(State(v2): State<V2>) -> Response {
    match crate::core::members::list(&v2.ctx.storage) {
        Ok(members) => members
            .iter()
            .flat_map(|m| m.client_ur_ls.iter().cloned())
            .collect::<Vec<_>>()
            .join(", ")
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /v2/stats/self`: this member's name, id, Raft state and leader.
async fn stats_self(State(v2): State<V2>) -> Response {
    let st = &v2.ctx.node.status;
    let name = crate::core::members::list(&v2.ctx.storage)
        .ok()
        .and_then(|ms| ms.into_iter().find(|m| m.id == st.member_id.0))
        .map(|m| m.name)
        .unwrap_or_default();
    let leader = st
        .leader()
        .map(|l| format!("{:x}", l.0))
        .unwrap_or_default();
    let state = if st.leader().map(|l| l.0) == Some(st.member_id.0) {
        "StateLeader"
    } else {
        "StateFollower"
    };
    Json(json!({
        "name": name,
        "id": format!("{:x}", st.member_id.0),
        "state": state,
        "leaderInfo": { "leader": leader },
    }))
    .into_response()
}
