//! The gateway's streaming calls: a body of concatenated JSON requests
//! (one for server streams) in, newline-delimited `{"result":…}` chunks
//! out, as grpc-gateway streams them. A failure after the stream began is
//! one last chunk `{"error":{"grpc_code","http_code","message",
//! "http_status"}}`. Both directions are bounded: the request side by
//! [`REQUESTS`] messages and the body limit, the response side by
//! [`CHUNKS`]; a client that stops reading stops the gRPC stream.

use std::convert::Infallible;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::routes::{Kind, Method, RawCodec};
use super::{deserialize_options, encode_json, error_response, http_status, to_json};
use crate::core::api::caller::Caller;

/// Requests decoded from the body and not yet taken by the service.
const REQUESTS: usize = 16;
/// Response chunks encoded and not yet written to the client.
const CHUNKS: usize = 16;

/// Runs a streaming `method`; errors before the stream starts are plain
/// gateway errors.
pub async fn call(
    method: Method,
    caller: Caller,
    metadata: MetadataMap,
    body: Body,
    body_limit: usize,
) -> Response {
    let (failed_tx, failed) = oneshot::channel();
    let responses = match start(&method, &caller, metadata, body, body_limit, failed_tx).await {
        Ok(responses) => responses,
        Err(status) => return error_response(&status),
    };
    let (out, chunks) = mpsc::channel::<Result<Bytes, Infallible>>(CHUNKS);
    tokio::spawn(forward(responses, method.output, failed, out));
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(chunks),
        ))
        .unwrap_or_else(|_| error_response(&Status::internal("gateway: response")))
}

async fn start(
    method: &Method,
    caller: &Caller,
    metadata: MetadataMap,
    body: Body,
    body_limit: usize,
    failed: oneshot::Sender<Status>,
) -> Result<tonic::Streaming<Bytes>, Status> {
    let mut grpc = caller.grpc().await?;
    let response = if method.kind == Kind::ServerStreaming {
        let json = axum::body::to_bytes(body, body_limit)
            .await
            .map_err(|e| Status::invalid_argument(format!("reading the request body: {e}")))?;
        let mut request = tonic::Request::new(encode_json(&method.input, &json)?);
        *request.metadata_mut() = metadata;
        grpc.server_streaming(request, method.grpc_path.clone(), RawCodec)
            .await?
    } else {
        let (tx, rx) = mpsc::channel(REQUESTS);
        let input = method.input.clone();
        tokio::spawn(async move {
            if let Err(status) = pump(body, input, body_limit, tx).await {
                let _ = failed.send(status);
            }
        });
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        *request.metadata_mut() = metadata;
        grpc.streaming(request, method.grpc_path.clone(), RawCodec)
            .await?
    };
    Ok(response.into_inner())
}

/// Decodes the JSON objects of `body` one by one (concatenated, any
/// whitespace between) into requests of `input` and sends them; ends the
/// request stream at the body's end, as the gateway's `CloseSend`. Each
/// byte is scanned once ([`Scanner`]) and each object parsed once, however
/// the body is split into frames.
///
/// # Errors
/// `InvalidArgument` for a value that is not an object or does not decode,
/// a body ending inside a value, or a value above `limit` bytes.
async fn pump(
    body: Body,
    input: MessageDescriptor,
    limit: usize,
    tx: mpsc::Sender<Bytes>,
) -> Result<(), Status> {
    let mut data = body.into_data_stream();
    let mut buf = BytesMut::new();
    let mut scanner = Scanner::default();
    loop {
        while let Some(end) = scanner.scan(&buf)? {
            let value = buf.split_to(end);
            let mut de = serde_json::Deserializer::from_slice(&value);
            let message = DynamicMessage::deserialize_with_options(
                input.clone(),
                &mut de,
                &deserialize_options(),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
            if tx.send(message.encode_to_vec().into()).await.is_err() {
                return Ok(());
            }
        }
        if buf.len() > limit {
            return Err(Status::invalid_argument(format!(
                "a request of the stream is larger than {limit} bytes"
            )));
        }
        match data.next().await {
            Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
            Some(Err(e)) => {
                return Err(Status::invalid_argument(format!(
                    "reading the request body: {e}"
                )))
            }
            None if buf.iter().all(u8::is_ascii_whitespace) => return Ok(()),
            None => return Err(Status::invalid_argument("unexpected EOF")),
        }
    }
}

/// Finds where each top-level JSON object of a growing buffer ends,
/// remembering how far it has looked: nesting depth, inside a string,
/// after a backslash.
#[derive(Debug, Default)]
struct Scanner {
    /// Bytes of the buffer already looked at.
    seen: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Scanner {
    /// `Some(n)`: the first `n` bytes of `buf` are whitespace and one
    /// whole object (the scanner then starts afresh for what follows);
    /// `None`: more bytes are needed.
    ///
    /// # Errors
    /// `InvalidArgument` for a top-level value that is not an object.
    fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, Status> {
        while self.seen < buf.len() {
            let b = buf[self.seen];
            self.seen += 1;
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' if self.depth > 0 => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' if self.depth > 0 => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let end = self.seen;
                        *self = Scanner::default();
                        return Ok(Some(end));
                    }
                }
                b if self.depth == 0 && !b.is_ascii_whitespace() => {
                    return Err(Status::invalid_argument(
                        "each request of a stream must be a JSON object",
                    ));
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

/// Writes each response as a chunk until the stream ends, fails, the
/// request side fails, or the client goes away.
async fn forward(
    mut responses: tonic::Streaming<Bytes>,
    output: MessageDescriptor,
    mut failed: oneshot::Receiver<Status>,
    out: mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let mut requests_open = true;
    loop {
        let (chunk, last) = tokio::select! {
            message = responses.message() => match message {
                Ok(Some(bytes)) => match to_json(&output, bytes, true) {
                    Ok(json) => (line(json), false),
                    Err(status) => (error_chunk(&status), true),
                },
                Ok(None) => return,
                Err(status) => (error_chunk(&status), true),
            },
            status = &mut failed, if requests_open => match status {
                Ok(status) => (error_chunk(&status), true),
                Err(_) => {
                    requests_open = false;
                    continue;
                }
            },
            () = out.closed() => return,
        };
        if out.send(Ok(chunk)).await.is_err() || last {
            return;
        }
    }
}

fn line(mut json: Vec<u8>) -> Bytes {
    json.push(b'\n');
    json.into()
}

/// grpc-gateway's stream error chunk.
fn error_chunk(status: &Status) -> Bytes {
    let http = http_status(status.code());
    #[derive(serde::Serialize)]
    struct Inner<'a> {
        grpc_code: i32,
        http_code: u16,
        message: &'a str,
        http_status: &'a str,
    }
    #[derive(serde::Serialize)]
    struct ErrorChunk<'a> {
        error: Inner<'a>,
    }
    let body = ErrorChunk {
        error: Inner {
            grpc_code: status.code() as i32,
            http_code: http.as_u16(),
            message: status.message(),
            http_status: http.canonical_reason().unwrap_or_default(),
        },
    };
    line(serde_json::to_vec(&body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scanner_splits_objects_however_the_bytes_arrive() {
        let text = br#" {"a":"}{\"]"} [1] {"b":{"c":[]}}"#;
        // Whole, then byte by byte: the same boundaries.
        let mut whole = Vec::new();
        let mut s = Scanner::default();
        let mut at = 0;
        while let Some(n) = s.scan(&text[at..]).unwrap() {
            whole.push(
                std::str::from_utf8(&text[at..at + n])
                    .unwrap()
                    .trim()
                    .to_string(),
            );
            at += n;
        }
        assert_eq!(whole, [r#"{"a":"}{\"]"}"#, "[1]", r#"{"b":{"c":[]}}"#]);
        let mut s = Scanner::default();
        let mut found = 0;
        let mut start = 0;
        for end in 1..=text.len() {
            if let Some(n) = s.scan(&text[start..end]).unwrap() {
                start += n;
                found += 1;
            }
        }
        assert_eq!(found, 3);
        assert!(Scanner::default().scan(b"  7").is_err());
    }
}
