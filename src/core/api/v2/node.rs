//! The v2 API's JSON: nodes, events (`{"action","node","prevNode"}`) and
//! errors (`{"errorCode","message","cause","index"}`), with etcd's field
//! names and order (etcd `store/node_extern.go`, `error/error.go`).

use axum::http::StatusCode;
use serde::Serialize;

/// A v2 node: a file (`value`) or a directory (`dir`, `nodes`). Indexes are
/// v3 revisions; a directory that exists only because keys lie below it
/// has none (v2 leaves them out likewise for the root).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dir: bool,
    /// When the TTL runs out, RFC 3339 with nanoseconds, UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    /// Seconds left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<Node>,
    #[serde(skip_serializing_if = "is_zero")]
    pub modified_index: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub created_index: i64,
}

fn is_zero(i: &i64) -> bool {
    *i == 0
}

/// One answer of the keys API, and one event of a wait.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `get`, `set`, `create`, `update`, `delete`, `expire`,
    /// `compareAndSwap`, `compareAndDelete`.
    pub action: &'static str,
    pub node: Node,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<Node>,
}

/// A v2 error: etcd's code and the cause (usually the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Error {
    pub code: u16,
    pub cause: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    error_code: u16,
    message: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    cause: String,
    index: i64,
}

impl V2Error {
    pub fn new(code: u16, cause: impl Into<String>) -> Self {
        Self {
            code,
            cause: cause.into(),
        }
    }

    /// 300, "Raft Internal Error": the v3 call failed for a reason v2 has
    /// no code for (the cause says which).
    pub fn internal(cause: impl Into<String>) -> Self {
        Self::new(300, cause)
    }

    /// etcd's message for the code.
    pub fn message(&self) -> &'static str {
        match self.code {
            100 => "Key not found",
            101 => "Compare failed",
            102 => "Not a file",
            104 => "Not a directory",
            105 => "Key already exists",
            107 => "Root is read only",
            108 => "Directory not empty",
            110 => "The request requires user authentication",
            200 => "Value is Required in POST form",
            201 => "PrevValue is Required in POST form",
            202 => "The given TTL in POST form is not a number",
            203 => "The given index in POST form is not a number",
            209 => "Invalid field",
            210 => "Invalid POST form",
            212 => "Value provided on refresh",
            213 => "A TTL must be provided on refresh",
            300 => "Raft Internal Error",
            301 => "During Leader Election",
            401 => "The event in requested index is outdated and cleared",
            _ => "Invalid field",
        }
    }

    /// etcd's HTTP status for the code (400 unless listed).
    pub fn status(&self) -> StatusCode {
        match self.code {
            100 => StatusCode::NOT_FOUND,
            102 | 108 => StatusCode::FORBIDDEN,
            101 | 105 => StatusCode::PRECONDITION_FAILED,
            110 => StatusCode::UNAUTHORIZED,
            300 | 301 => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON body at store revision `index`.
    pub fn body(&self, index: i64) -> ErrorBody {
        ErrorBody {
            error_code: self.code,
            message: self.message(),
            cause: self.cause.clone(),
            index,
        }
    }
}

impl From<etcd_client::Error> for V2Error {
    /// A v3 failure: permission and token errors are v2's 110, a
    /// leaderless cluster 301, anything else 300 with the v3 message.
    fn from(e: etcd_client::Error) -> Self {
        match &e {
            etcd_client::Error::GRpcStatus(s) => match s.code() {
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                    Self::new(110, s.message())
                }
                // No token, or a bad user or password, under auth.
                tonic::Code::InvalidArgument
                    if s.message() == "etcdserver: user name is empty"
                        || s.message().starts_with("etcdserver: authentication failed") =>
                {
                    Self::new(110, s.message())
                }
                tonic::Code::Unavailable if s.message().contains("no leader") => {
                    Self::new(301, s.message())
                }
                _ => Self::internal(s.message()),
            },
            other => Self::internal(other.to_string()),
        }
    }
}
