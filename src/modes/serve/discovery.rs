//! Bootstrapping without `--initial-cluster`: the member list comes from a
//! v2 discovery URL (`--discovery`, etcd's v2 discovery protocol, hosted by
//! any cluster serving `/v2/keys`, kvd or etcd) or from DNS SRV records
//! (`--discovery-srv`). A member registers on an empty data dir only; one
//! with data reads the same list again (etcd skips discovery then, but kvd
//! checks `--initial-cluster` against the data dir's cluster id).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::Value;

use super::options::ServeOptions;
use crate::core::config::ServeConfig;

/// The largest discovery answer read, bytes.
const MAX_ANSWER: usize = 4 << 20;
/// Each discovery request but the waits (etcd's client default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between retries after a connection error or a 5xx.
const MAX_BACKOFF: Duration = Duration::from_secs(32);

/// Fills `--initial-cluster` (and, for `--discovery`, the cluster token:
/// the URL, as etcd) from the discovery flags, then clears them. `own` is
/// `opts` resolved as they stand (a cluster of itself): the validated
/// name, data dir and advertised peer URLs.
///
/// # Errors
/// etcd's refusals of the flag combination; `failed to join discovery
/// cluster (…)` with the protocol's reason; SRV lookup failures.
pub async fn bootstrap(mut opts: ServeOptions, own: &ServeConfig) -> Result<ServeOptions, String> {
    let url = opts.discovery.take().filter(|u| !u.is_empty());
    let domain = opts.discovery_srv.take().filter(|d| !d.is_empty());
    let srv_name = opts.discovery_srv_name.take().unwrap_or_default();
    if url.is_none() && domain.is_none() {
        return Ok(opts);
    }
    let given = [
        url.is_some(),
        domain.is_some(),
        opts.initial_cluster.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err("multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\"".to_string());
    }
    if opts.initial_cluster_state.as_deref() == Some("existing") {
        return Err(
            "discovery URL should not be set when joining existing initial cluster".to_string(),
        );
    }
    // A member with data restarts as the cluster it joined: the list is
    // read again (kvd checks it against the data dir), nothing registered.
    let has_data = std::fs::read_dir(&own.data_dir).is_ok_and(|mut d| d.next().is_some());
    if let Some(url) = url {
        let cluster = if has_data {
            registered(&url, &own.name, &own.initial_advertise_peer_urls).await
        } else {
            join(&url, &own.name, &own.initial_advertise_peer_urls).await
        }
        .map_err(|e| format!("failed to join discovery cluster ({e})"))?;
        tracing::info!(%cluster, restart = has_data, "the cluster from the discovery URL");
        opts.initial_cluster = Some(cluster);
        opts.initial_cluster_token = Some(url);
    } else if let Some(domain) = domain {
        let cluster = from_srv(&domain, &srv_name, own).await?;
        tracing::info!(%cluster, restart = has_data, "the cluster from DNS SRV records");
        opts.initial_cluster = Some(cluster);
    }
    Ok(opts)
}

/// The cluster from `_etcd-server-ssl[-name]._tcp.<domain>` (https) and
/// `_etcd-server[-name]._tcp.<domain>` (http), both read (etcd 3.5): a
/// record whose target and port resolve to this member's advertised peer
/// address is this member (`--name`, its advertised URL); every other is
/// named `0`, `1`, … until it publishes its name. Each target is written
/// as the address it resolves to (kvd would resolve a host name in
/// `--initial-cluster` again with the system's resolver, which need not
/// be the one discovery used).
///
/// # Errors
/// etcd's `error querying DNS SRV records for _etcd-server…`, `cannot find
/// local etcd member "<name>" in SRV records`.
async fn from_srv(domain: &str, name: &str, own: &ServeConfig) -> Result<String, String> {
    use crate::core::urls::{parse_url, PEER_URL_SCHEMES};
    use crate::modes::common::discovery::{records, resolver};
    let found = records("_etcd-server", domain, name)
        .await
        .map_err(|(https, _)| {
            format!("error querying DNS SRV records for _etcd-server-ssl {https}")
        })?;
    let resolver = resolver()?;
    let mut own_addrs = Vec::new();
    for u in &own.initial_advertise_peer_urls {
        let parsed = parse_url(u, &PEER_URL_SCHEMES).map_err(|e| e.to_string())?;
        own_addrs.push((parsed.addr, u.clone()));
    }
    let mut members = Vec::new();
    let mut found_self = false;
    let mut others = 0;
    for (scheme, target, port) in found {
        let host = target.trim_end_matches('.');
        let ip = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip,
            Err(_) => match resolver.lookup_ip(format!("{host}.")).await {
                Ok(ips) => match ips.iter().next() {
                    Some(ip) => ip,
                    None => continue,
                },
                Err(e) => {
                    tracing::warn!(%host, "cannot resolve an SRV target: {e}");
                    continue;
                }
            },
        };
        let addr = std::net::SocketAddr::new(ip, port);
        if let Some((_, url)) = own_addrs.iter().find(|(a, _)| *a == addr) {
            if !url.starts_with(&format!("{scheme}://")) {
                tracing::warn!(%url, "bootstrap from DNS for {scheme} has scheme mismatch with expected peer");
                continue;
            }
            members.push(format!("{}={url}", own.name));
            found_self = true;
        } else {
            members.push(format!("{others}={scheme}://{addr}"));
            others += 1;
        }
    }
    if !found_self {
        return Err(format!(
            "cannot find local etcd member {:?} in SRV records",
            own.name
        ));
    }
    Ok(members.join(","))
}

type Http = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A v2 answer: status, `X-Etcd-Index`, JSON body (`Null` when empty).
struct Reply {
    status: u16,
    index: u64,
    body: Value,
}

/// Why a request failed: worth retrying (no connection, 5xx) or not.
enum Failure {
    Retry(String),
    Fatal(String),
}

/// etcd's v2 discovery protocol (`v2discovery.JoinCluster`): read the
/// size, register `<id>` = `name=url,…` with `prevExist=false`, wait for
/// `size` members, and answer the first `size` registrations in order as
/// an initial-cluster string.
async fn join(url: &str, name: &str, peer_urls: &[String]) -> Result<String, String> {
    let id = format!("{:x}", crate::core::members::member_id(peer_urls, url));
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let value = urls
        .iter()
        .map(|u| format!("{name}={u}"))
        .collect::<Vec<_>>()
        .join(",");
    let base = url.trim_end_matches('/');
    let http = http_client()?;
    let (size, nodes, _) = with_retries(|| check(&http, base, &id)).await?;
    if !nodes.iter().any(|n| n.0 == id) {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("value", &value)
            .finish();
        let reply = request(
            &http,
            "PUT",
            &format!("{base}/{id}?prevExist=false"),
            Some(form),
            true,
        )
        .await
        .map_err(|f| match f {
            Failure::Retry(e) | Failure::Fatal(e) => e,
        })?;
        match (reply.status, reply.body["errorCode"].as_u64()) {
            (200 | 201, _) => {}
            (_, Some(105)) => return Err("discovery: found duplicate id".to_string()),
            (status, _) => {
                return Err(format!(
                    "discovery: registering answered {status}: {}",
                    reply.body
                ))
            }
        }
    }
    let (_, mut nodes, mut index) = with_retries(|| check(&http, base, &id)).await?;
    nodes.truncate(size);
    while nodes.len() < size {
        let wait = format!("{base}?recursive=true&wait=true&waitIndex={}", index + 1);
        let reply = match request(&http, "GET", &wait, None, false).await {
            Ok(r) => r,
            Err(Failure::Retry(e)) => {
                tracing::warn!("retry waiting for other members: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(Failure::Fatal(e)) => return Err(e),
        };
        let node = &reply.body["node"];
        let Some(modified) = node["modifiedIndex"].as_u64() else {
            match reply.body["errorCode"].as_u64() {
                // The index was cleared: read the list again from now.
                Some(401) => {
                    let (_, again, at) = with_retries(|| check(&http, base, &id)).await?;
                    nodes = again;
                    nodes.truncate(size);
                    index = at;
                }
                Some(code) => {
                    return Err(format!(
                        "discovery: waiting answered {code}: {}",
                        reply.body
                    ));
                }
                // An empty answer (a wait the service timed out): again.
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
            continue;
        };
        index = modified;
        let key = node["key"].as_str().unwrap_or_default();
        let base_name = key.rsplit('/').next().unwrap_or_default().to_string();
        if reply.body["action"] == "set" || reply.body["action"] == "create" {
            if let Some(v) = node["value"].as_str() {
                if !nodes.iter().any(|n| n.0 == base_name) {
                    nodes.push((base_name, v.to_string()));
                }
            }
        }
    }
    Ok(nodes
        .into_iter()
        .map(|(_, v)| v)
        .collect::<Vec<_>>()
        .join(","))
}

/// The cluster a member that registered before joined: the first `size`
/// registrations, which must include this member's.
async fn registered(url: &str, name: &str, peer_urls: &[String]) -> Result<String, String> {
    let id = format!("{:x}", crate::core::members::member_id(peer_urls, url));
    let http = http_client()?;
    let base = url.trim_end_matches('/');
    let (size, mut nodes, _) = with_retries(|| check(&http, base, &id)).await?;
    nodes.truncate(size);
    if nodes.len() < size || !nodes.iter().any(|n| n.0 == id) {
        return Err(format!(
            "discovery: {name} ({id}) is not among the registered members"
        ));
    }
    Ok(nodes
        .into_iter()
        .map(|(_, v)| v)
        .collect::<Vec<_>>()
        .join(","))
}

fn http_client() -> Result<Http, String> {
    // ring, named rather than left to rustls' process default: which
    // providers a build links depends on feature unification (a test-only
    // dependency once linked aws-lc-rs too, and the default then panics).
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| format!("discovery: no TLS roots: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new()).build(https))
}

/// Retries `attempt` after connection errors and 5xx answers, waiting
/// 2 s, 4 s, … up to [`MAX_BACKOFF`] (etcd never gives up either).
async fn with_retries<T, F, Fut>(attempt: F) -> Result<T, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut backoff = Duration::from_secs(2);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(e)) => {
                tracing::warn!(?backoff, "retry connecting to discovery service: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The cluster size, the registered members `(id, value)` in
/// registration order, and the index read at (`checkCluster`).
async fn check(
    http: &Http,
    base: &str,
    id: &str,
) -> Result<(usize, Vec<(String, String)>, u64), Failure> {
    let reply = request(http, "GET", &format!("{base}/_config/size"), None, true).await?;
    if reply.body["errorCode"].as_u64() == Some(100) {
        return Err(Failure::Fatal("discovery: size key not found".to_string()));
    }
    let size = reply.body["node"]["value"]
        .as_str()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|s| *s > 0)
        .ok_or_else(|| Failure::Fatal("discovery: size key is bad".to_string()))?;
    let reply = request(http, "GET", base, None, true).await?;
    let mut nodes: Vec<(u64, String, String)> = reply.body["node"]["nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| {
            let key = n["key"].as_str()?;
            let name = key.rsplit('/').next()?.to_string();
            (name != "_config").then_some(())?;
            Some((
                n["createdIndex"].as_u64()?,
                name,
                n["value"].as_str()?.to_string(),
            ))
        })
        .collect();
    nodes.sort();
    let nodes: Vec<(String, String)> = nodes.into_iter().map(|(_, n, v)| (n, v)).collect();
    if nodes.len() >= size && !nodes[..size].iter().any(|n| n.0 == id) {
        return Err(Failure::Fatal("discovery: cluster is full".to_string()));
    }
    Ok((size, nodes, reply.index))
}

async fn request(
    http: &Http,
    method: &str,
    url: &str,
    form: Option<String>,
    bounded: bool,
) -> Result<Reply, Failure> {
    let mut builder = http::Request::builder().method(method).uri(url);
    if form.is_some() {
        builder = builder.header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
    }
    let request = builder
        .body(Full::new(Bytes::from(form.unwrap_or_default())))
        .map_err(|e| Failure::Fatal(format!("discovery: invalid URL {url:?}: {e}")))?;
    let send = http.request(request);
    let response = if bounded {
        tokio::time::timeout(REQUEST_TIMEOUT, send)
            .await
            .map_err(|_| Failure::Retry(format!("{url}: timed out")))?
    } else {
        send.await
    }
    .map_err(|e| Failure::Retry(format!("{url}: {e}")))?;
    let status = response.status().as_u16();
    let index = response
        .headers()
        .get("x-etcd-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| Failure::Retry(format!("{url}: {e}")))?
        .to_bytes();
    if status >= 500 {
        return Err(Failure::Retry(format!(
            "{url}: the discovery service answered {status}"
        )));
    }
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|_| {
            Failure::Fatal("discovery: bad discovery endpoint (the answer is not JSON)".to_string())
        })?
    };
    Ok(Reply {
        status,
        index,
        body,
    })
}
