//! etcd's gRPC JSON gateway on the client port: `POST /v3/<service>/<call>`
//! with a JSON body calls the gRPC method and answers its response as JSON
//! (etcd 3.4's grpc-gateway with `OrigName`: proto field names, 64-bit
//! integers as strings, bytes as base64, enums by name, default values
//! left out). Input accepts proto or camelCase field names and enum names
//! or numbers (proto3's JSON mapping, through `prost-reflect`).
//! `/v3beta/…` is the same calls (etcd 3.4 serves it; not `/v3alpha`).
//!
//! Streams (`watch`, `lease/keepalive`, `maintenance/snapshot`,
//! `election/observe`) answer newline-delimited `{"result":…}` chunks
//! ([`stream`]). Errors are grpc-gateway's JSON with its HTTP status
//! ([`http_status`]). `Authorization` (a token from `auth/authenticate`)
//! and `Grpc-Metadata-*` headers become gRPC metadata; calls run through
//! [`Caller`] with the HTTP client's own connection, so auth applies.

pub mod routes;
pub mod stream;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde::Serialize;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::Status;

use crate::core::api::caller::{self, Caller};
use crate::core::api::listener::ClientConn;
use routes::{Kind, Method, RawCodec, Routes};

/// JSON bodies decoded at once (see [`unary`]).
static DECODING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// What the gateway's handlers share.
#[derive(Clone)]
struct Gateway {
    /// The client port's gRPC services.
    grpc: Router,
    routes: &'static Routes,
    /// Largest JSON body (or one message of a stream), bytes.
    body_limit: usize,
}

/// The gateway's routes, calling into `grpc` (the client port's gRPC
/// router). JSON bodies may be `max_request_bytes` × 4/3 + 512 KiB (base64
/// grows a value by a third, JSON adds its quoting; the gRPC services then
/// apply the real limit to the message).
///
/// # Errors
/// The embedded descriptors do not match the route table (a broken build).
pub fn router(grpc: Router, max_request_bytes: usize) -> Result<Router, String> {
    let gateway = Gateway {
        grpc,
        routes: Routes::get()?,
        body_limit: (max_request_bytes / 3)
            .saturating_mul(4)
            .saturating_add(super::GRPC_OVERHEAD_BYTES),
    };
    Ok(Router::new()
        .route("/v3/{*call}", any(call))
        .route("/v3beta/{*call}", any(call))
        // Gone since etcd 3.4 (and not a gRPC path either).
        .route(
            "/v3alpha/{*call}",
            any(|| async { (StatusCode::NOT_FOUND, "404 Not Found\n") }),
        )
        .with_state(gateway))
}

async fn call(
    State(gw): State<Gateway>,
    Path(path): Path<String>,
    ConnectInfo(conn): ConnectInfo<ClientConn>,
    method: HttpMethod,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(found) = gw.routes.method(path.trim_end_matches('/')) else {
        return (StatusCode::NOT_FOUND, "404 Not Found\n").into_response();
    };
    if method != HttpMethod::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n").into_response();
    }
    let caller = Caller::new(gw.grpc.clone(), caller::browser_safe(conn, &headers, &uri));
    let metadata = metadata(&headers);
    match found.kind {
        Kind::Unary => unary(&gw, found, caller, metadata, body)
            .await
            .unwrap_or_else(|status| error_response(&status)),
        Kind::ServerStreaming | Kind::Bidi => {
            stream::call(found.clone(), caller, metadata, body, gw.body_limit).await
        }
    }
}

async fn unary(
    gw: &Gateway,
    method: &Method,
    caller: Caller,
    metadata: MetadataMap,
    body: Body,
) -> Result<Response, Status> {
    let json = axum::body::to_bytes(body, gw.body_limit)
        .await
        .map_err(|e| Status::invalid_argument(format!("reading the request body: {e}")))?;
    // A body of many small objects decodes to far more memory than its
    // size: a few decodes at once, process-wide.
    let request = {
        let _permit = DECODING
            .acquire()
            .await
            .map_err(|_| Status::unavailable("etcdserver: stopping"))?;
        encode_json(&method.input, &json)?
    };
    let mut grpc = caller.grpc().await?;
    let mut request = tonic::Request::new(request);
    *request.metadata_mut() = metadata;
    let response = grpc
        .unary(request, method.grpc_path.clone(), RawCodec)
        .await?
        .into_inner();
    let body = to_json(&method.output, response, false)?;
    let mut response = json_response(StatusCode::OK, body);
    response.headers_mut().insert(
        "grpc-metadata-content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    Ok(response)
}

/// gRPC metadata from the HTTP headers, as grpc-gateway forwards them:
/// `Authorization` as `authorization`, `Grpc-Metadata-<key>` as `<key>`.
fn metadata(headers: &HeaderMap) -> MetadataMap {
    let mut md = MetadataMap::new();
    for (name, value) in headers {
        let key = if name == http::header::AUTHORIZATION {
            "authorization"
        } else if let Some(key) = name.as_str().strip_prefix("grpc-metadata-") {
            key
        } else {
            continue;
        };
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_bytes()),
        ) {
            md.append(key, value);
        }
    }
    md
}

/// A request message from its JSON (an empty body is the empty message,
/// as grpc-gateway reads it).
///
/// # Errors
/// `InvalidArgument` with the decoder's message: malformed JSON, a wrong
/// type, bad base64 (unknown fields are ignored).
pub fn encode_json(input: &MessageDescriptor, json: &[u8]) -> Result<Bytes, Status> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::new());
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let message =
        DynamicMessage::deserialize_with_options(input.clone(), &mut de, &deserialize_options())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
    de.end()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(message.encode_to_vec().into())
}

/// Unknown fields are ignored, as etcd 3.4's gateway does.
fn deserialize_options() -> DeserializeOptions {
    DeserializeOptions::new().deny_unknown_fields(false)
}

/// A response message as JSON (`{"result":…}` when `chunk`, a stream's
/// line).
///
/// # Errors
/// `Internal` when the bytes do not decode as `output` (a server bug).
pub fn to_json(output: &MessageDescriptor, bytes: Bytes, chunk: bool) -> Result<Vec<u8>, Status> {
    let message = DynamicMessage::decode(output.clone(), bytes)
        .map_err(|e| Status::internal(format!("gateway: decoding the response: {e}")))?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(true)
        .skip_default_fields(true);
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut out);
    let written = if chunk {
        Chunk {
            result: Options(&message, &options),
        }
        .serialize(&mut ser)
    } else {
        message.serialize_with_options(&mut ser, &options)
    };
    written.map_err(|e| Status::internal(format!("gateway: encoding the response: {e}")))?;
    Ok(out)
}

#[derive(Serialize)]
struct Chunk<'a> {
    result: Options<'a>,
}

/// A message serialized with the gateway's options.
struct Options<'a>(&'a DynamicMessage, &'a SerializeOptions);

impl Serialize for Options<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_with_options(s, self.1)
    }
}

/// grpc-gateway's HTTP status for a gRPC code (`runtime.HTTPStatusFromCode`
/// of the version etcd 3.4 ships: FailedPrecondition is 412).
pub fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A failed call as etcd 3.4's gateway answers it:
/// `{"error":MSG,"message":MSG,"code":GRPC_CODE}` with [`http_status`].
pub fn error_response(status: &Status) -> Response {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        error: &'a str,
        message: &'a str,
        code: i32,
    }
    let body = ErrorBody {
        error: status.message(),
        message: status.message(),
        code: status.code() as i32,
    };
    json_response(
        http_status(status.code()),
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
