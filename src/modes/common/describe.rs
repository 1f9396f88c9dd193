//! One lowercase line for a failed request: etcd's own message when the
//! server refused, what could not be reached when the transport failed.

/// Describes `e`, a failure talking to `endpoints`.
pub fn describe(e: etcd_client::Error, endpoints: &[String]) -> String {
    let endpoints = endpoints.join(",");
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.starts_with("etcdserver:") || message.starts_with("kvd:") {
                message.to_string()
            } else if matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
            ) {
                // The transport's reason (refused, timed out…) is in the sources.
                let mut reason = lower_first(message);
                if let Some(source) = std::error::Error::source(&status) {
                    let root = lower_first(&root_cause(source).to_string());
                    if !reason.contains(&root) {
                        reason = format!("{reason}: {root}");
                    }
                }
                format!("cannot reach {endpoints}: {reason}")
            } else {
                format!("{:?}: {}", status.code(), lower_first(message)).to_lowercase()
            }
        }
        etcd_client::Error::TransportError(t) => {
            format!("cannot reach {endpoints}: {}", chain(&t))
        }
        etcd_client::Error::IoError(io) => format!("cannot reach {endpoints}: {io}"),
        other => lower_first(&other.to_string()),
    }
}

/// The innermost source of an error: the most specific reason (e.g. the
/// `connection refused` under tonic's `transport error`).
pub fn root_cause(e: &dyn std::error::Error) -> &dyn std::error::Error {
    let mut current = e;
    while let Some(source) = current.source() {
        current = source;
    }
    current
}

/// An error and its innermost source as one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let text = lower_first(&e.to_string());
    let root = lower_first(&root_cause(e).to_string());
    if text.contains(&root) {
        text
    } else {
        format!("{text}: {root}")
    }
}

/// `text` with its first letter lowercased, unless the second is uppercase
/// too (an acronym such as `TLS`).
pub fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if !chars.as_str().starts_with(|c: char| c.is_uppercase()) => {
            first.to_lowercase().chain(chars).collect()
        }
        _ => text.to_string(),
    }
}
