//! A clap-free way to reach a cluster with the `etcd-client` crate: the
//! endpoints (normalized the way etcdctl takes them), timeouts and TLS
//! material. The modes build one from their flags; the server builds one
//! when it calls another member (promotion forwarding).

use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// TLS material for the client side of a connection (PEM bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA bundle that verifies the server (`--cacert`); `None` uses the
    /// system's roots.
    pub ca: Option<Vec<u8>>,
    /// Client certificate and private key (`--cert`, `--key`), for
    /// client-certificate authentication.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    /// The TLS settings of a tonic channel (etcd-client's `TlsOptions`).
    pub fn options(&self) -> TlsOptions {
        let mut t = TlsOptions::new();
        if let Some(ca) = &self.ca {
            t = t.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &self.identity {
            t = t.identity(Identity::from_pem(cert, key));
        }
        t
    }
}

/// Where a cluster is and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Client URLs, `http://host:port` or `https://host:port` (see
    /// [`normalize_endpoints`]).
    pub endpoints: Vec<String>,
    /// Longest wait for a connection to an endpoint.
    pub dial_timeout: Duration,
    /// Longest wait for any one request.
    pub request_timeout: Duration,
    /// TLS, when the endpoints are `https://`.
    pub tls: Option<ClientTls>,
    /// HTTP/2 keep-alive: (ping interval, wait for the answer); `None`
    /// sends no pings (etcdctl's `--keepalive-time`/`--keepalive-timeout`).
    pub keep_alive: Option<(Duration, Duration)>,
    /// User name and password for etcd's auth (`--user`), sent as a token
    /// request before the first call.
    pub user: Option<(String, String)>,
}

impl ClientConfig {
    /// A plain-text client for `endpoints` with these timeouts.
    pub fn new(endpoints: Vec<String>, dial_timeout: Duration, request_timeout: Duration) -> Self {
        Self {
            endpoints,
            dial_timeout,
            request_timeout,
            tls: None,
            keep_alive: None,
            user: None,
        }
    }

    /// The same settings aimed at `endpoint` alone (per-member calls:
    /// status, hash, snapshot).
    pub fn for_endpoint(&self, endpoint: &str) -> Self {
        Self {
            endpoints: vec![endpoint.to_string()],
            ..self.clone()
        }
    }

    /// The crate's connect options for this configuration.
    pub fn connect_options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_timeout(self.request_timeout);
        if let Some(tls) = &self.tls {
            options = options.with_tls(tls.options());
        }
        if let Some((interval, timeout)) = self.keep_alive {
            options = options.with_keep_alive(interval, timeout);
        }
        if let Some((name, password)) = &self.user {
            options = options.with_user(name.clone(), password.clone());
        }
        options
    }

    /// Connects (lazily: the first request dials, within `dial_timeout`).
    ///
    /// # Errors
    /// The crate's error for endpoints it cannot use.
    pub async fn connect(&self) -> Result<Client, etcd_client::Error> {
        Client::connect(&self.endpoints, Some(self.connect_options())).await
    }
}

/// Why an endpoint list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// No endpoint at all.
    #[error("--endpoints must name at least one endpoint")]
    Empty,
    /// A plain `http://` endpoint while TLS material is given.
    #[error("endpoint {0:?} is plain http but --cacert/--cert/--key ask for TLS; use https:// or host:port")]
    PlainWithTls(String),
    /// A scheme other than http or https.
    #[error("endpoint {0:?}: scheme {1:?} is not supported (use http or https)")]
    Scheme(String, String),
    /// Not `host:port`.
    #[error("endpoint {0:?} is not host:port")]
    NotHostPort(String),
}

/// Client endpoints as the client wants them, from a comma-separated list as
/// etcdctl takes it: `host:port` gets `https://` when `tls` (plain `http://`
/// otherwise); an explicit scheme must agree with `tls`.
///
/// # Errors
/// [`EndpointError`] for the first endpoint that cannot be used.
pub fn normalize_endpoints(list: &str, tls: bool) -> Result<Vec<String>, EndpointError> {
    let mut endpoints = Vec::new();
    for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let lower = raw.to_ascii_lowercase();
        let (scheme, rest) = match lower.split_once("://") {
            Some((scheme, _)) => (scheme.to_string(), &raw[scheme.len() + 3..]),
            None => (if tls { "https" } else { "http" }.to_string(), raw),
        };
        match scheme.as_str() {
            "http" if tls => return Err(EndpointError::PlainWithTls(raw.to_string())),
            "http" | "https" => {}
            other => return Err(EndpointError::Scheme(raw.to_string(), other.to_string())),
        }
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err(EndpointError::NotHostPort(raw.to_string()));
        }
        endpoints.push(format!("{scheme}://{rest}"));
    }
    if endpoints.is_empty() {
        return Err(EndpointError::Empty);
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_take_an_optional_scheme() {
        assert_eq!(
            normalize_endpoints("127.0.0.1:2379, http://10.0.0.1:2379/", false),
            Ok(vec![
                "http://127.0.0.1:2379".to_string(),
                "http://10.0.0.1:2379".to_string()
            ])
        );
        assert_eq!(
            normalize_endpoints("127.0.0.1:2379,https://h:2379", true),
            Ok(vec![
                "https://127.0.0.1:2379".to_string(),
                "https://h:2379".to_string()
            ])
        );
        assert!(normalize_endpoints("http://127.0.0.1:2379", true).is_err());
        assert!(normalize_endpoints("unix://x", false).is_err());
        assert_eq!(normalize_endpoints(" , ", false), Err(EndpointError::Empty));
    }
}
