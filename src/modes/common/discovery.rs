//! `--discovery-srv`: endpoints and members from DNS SRV records, as etcd
//! finds them. Clients (ctl, member, backup, proxy) read
//! `_etcd-client-ssl._tcp.<domain>` for https, then
//! `_etcd-client._tcp.<domain>` for http; `kvd serve` reads
//! `_etcd-server-ssl…` and `_etcd-server…` ([`records`]); a `-<name>`
//! suffix with `--discovery-srv-name`.
//!
//! The resolver is the system's (`/etc/resolv.conf`), or the DNS server at
//! `KVD_DNS_SERVER=IP:PORT` when that is set (a private resolver, or the
//! tests' own).

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;

/// The resolver the discovery lookups use (see the module doc).
///
/// # Errors
/// An unreadable system configuration, or a `KVD_DNS_SERVER` that is not
/// `IP:PORT`.
pub fn resolver() -> Result<TokioResolver, String> {
    if let Ok(server) = std::env::var("KVD_DNS_SERVER") {
        let addr: std::net::SocketAddr = server
            .parse()
            .map_err(|e| format!("KVD_DNS_SERVER={server:?}: {e}"))?;
        let group = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
        let config = ResolverConfig::from_parts(None, Vec::new(), group);
        return Ok(
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default()).build(),
        );
    }
    TokioResolver::builder_tokio()
        .map(|b| b.build())
        .map_err(|e| e.to_string())
}

/// The `(scheme, target, port)` of each SRV record of `service` (e.g.
/// `_etcd-server`) and its `-ssl` variant under `domain`, https first
/// (etcd 3.5's order); the target keeps its trailing dot.
///
/// # Errors
/// `(https lookup error, http lookup error)` when both lookups fail.
pub async fn records(
    service: &str,
    domain: &str,
    name: &str,
) -> Result<Vec<(&'static str, String, u16)>, (String, String)> {
    let suffix = if name.is_empty() {
        String::new()
    } else {
        format!("-{name}")
    };
    let resolver = resolver();
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for (scheme, service) in [
        ("https", format!("{service}-ssl")),
        ("http", service.to_string()),
    ] {
        let query = format!("{service}{suffix}._tcp.{domain}");
        let resolver = match &resolver {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("lookup {query}: {e}"));
                continue;
            }
        };
        match resolver.srv_lookup(query.as_str()).await {
            Ok(answer) => {
                for srv in answer.iter() {
                    found.push((scheme, srv.target().to_string(), srv.port()));
                }
            }
            Err(e) => errors.push(format!("lookup {query}: {e}")),
        }
    }
    if let [https, http] = &errors[..] {
        return Err((https.clone(), http.clone()));
    }
    Ok(found)
}

/// The discovered client endpoints, https first, as `scheme://target:port`
/// (the target without its trailing dot, which etcdctl keeps: names in
/// `/etc/hosts` resolve only without it); without
/// `insecure`, the http ones are dropped with a notice on stderr.
///
/// # Errors
/// etcdctl's `dns lookup errors: <https error> and <http error>`.
pub async fn endpoints(domain: &str, name: &str, insecure: bool) -> Result<Vec<String>, String> {
    let found = records("_etcd-client", domain, name)
        .await
        .map_err(|(https, http)| format!("dns lookup errors: {https} and {http}"))?;
    let mut endpoints = Vec::new();
    for (scheme, target, port) in found {
        let endpoint = format!("{scheme}://{}:{port}", target.trim_end_matches('.'));
        if !insecure && scheme == "http" {
            eprintln!("ignoring discovered insecure endpoint {endpoint:?}");
            continue;
        }
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}
