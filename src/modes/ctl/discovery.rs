//! `--discovery-srv`: the endpoints from DNS SRV records, as etcdctl finds
//! them (`_etcd-client-ssl._tcp.<domain>` for https, then
//! `_etcd-client._tcp.<domain>` for http, a `-<name>` suffix with
//! `--discovery-srv-name`); the lookup fails only when both do, and
//! without `--insecure-discovery` the http ones are dropped.

/// The discovered endpoints, https first, as `scheme://target:port`
/// (the target keeps its trailing dot, as etcdctl's do).
///
/// # Errors
/// etcdctl's `dns lookup errors: <https error> and <http error>`.
pub async fn endpoints(domain: &str, name: &str, insecure: bool) -> Result<Vec<String>, String> {
    // No resolver configuration fails both lookups alike.
    let resolver = hickory_resolver::TokioResolver::builder_tokio().map(|b| b.build());
    let suffix = if name.is_empty() {
        String::new()
    } else {
        format!("-{name}")
    };
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for (scheme, service) in [("https", "_etcd-client-ssl"), ("http", "_etcd-client")] {
        let query = format!("{service}{suffix}._tcp.{domain}");
        let resolver = match &resolver {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("lookup {query}: {e}"));
                continue;
            }
        };
        match resolver.srv_lookup(query.as_str()).await {
            Ok(records) => {
                for srv in records.iter() {
                    found.push(format!("{scheme}://{}:{}", srv.target(), srv.port()));
                }
            }
            Err(e) => errors.push(format!("lookup {query}: {e}")),
        }
    }
    if errors.len() == 2 {
        return Err(format!(
            "dns lookup errors: {} and {}",
            errors[0], errors[1]
        ));
    }
    if !insecure {
        found.retain(|e| {
            let keep = !e.starts_with("http://");
            if !keep {
                eprintln!("ignoring discovered insecure endpoint {e:?}");
            }
            keep
        });
    }
    Ok(found)
}
