//! URLs as members and clients write them: peer and client URLs
//! (`scheme://host:port`), the `--initial-cluster` list, and the form-only
//! check of a peer URL another machine will use, and the resolution of a
//! peer URL to the address the transport dials. Shared by `serve`,
//! `member`, `backup restore` and `proxy`; errors carry no flag names (the
//! modes add them).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use url::{Host, Url};

/// URL schemes accepted for peer URLs (peers always talk QUIC; the scheme is
/// kept as written so etcd's `http://`/`https://` peer URLs work unchanged).
pub const PEER_URL_SCHEMES: [&str; 3] = ["http", "https", "quic"];
/// URL schemes accepted for client URLs.
pub const CLIENT_URL_SCHEMES: [&str; 2] = ["http", "https"];

/// One entry of `--initial-cluster`: `name=peer-url[,name=peer-url…]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    /// The member's `--name`.
    pub name: String,
    /// Its advertised peer URLs, as written (`http://`, `https://` or `quic://`).
    pub peer_urls: Vec<String>,
}

/// A URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid url {url:?}: {reason}")]
pub struct UrlError {
    /// The URL as written.
    pub url: String,
    /// What is wrong with it, one lowercase phrase.
    pub reason: String,
}

/// Why an `--initial-cluster` list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitialClusterError {
    /// Nothing at all.
    #[error("empty member list")]
    Empty,
    /// An entry without `=`.
    #[error("invalid entry {0:?}: expected name=peer-url")]
    NoName(String),
    /// An entry with an empty name.
    #[error("invalid entry {0:?}: empty member name")]
    EmptyName(String),
    /// A bad peer URL.
    #[error(transparent)]
    Url(UrlError),
    /// The same endpoint twice.
    #[error("initial cluster {cluster} has duplicate url {url}")]
    DuplicateUrl {
        /// The whole list as written.
        cluster: String,
        /// The repeated URL.
        url: String,
    },
}

/// One URL of a URL-list setting, checked and resolved.
#[derive(Debug, Clone)]
pub struct ParsedUrl {
    /// As written (trimmed), kept for advertising.
    pub raw: String,
    /// Lowercased scheme; two URLs are the same endpoint when scheme and address match.
    pub scheme: String,
    /// Host and port, with `localhost` resolved.
    pub addr: SocketAddr,
}

impl ParsedUrl {
    /// Whether both name the same scheme and socket address.
    pub fn same_endpoint(&self, other: &ParsedUrl) -> bool {
        self.scheme == other.scheme && self.addr == other.addr
    }
}

/// Splits a comma-separated URL list and checks each URL (see
/// [`parse_url`]); an empty list is for the caller to refuse.
///
/// # Errors
/// The first [`UrlError`].
pub fn parse_url_list(list: &str, schemes: &[&str]) -> Result<Vec<ParsedUrl>, UrlError> {
    list.split(',').map(|raw| parse_url(raw, schemes)).collect()
}

/// Checks one URL (`scheme://host:port`, nothing more) against `schemes`
/// and resolves its host: an IP literal, `localhost` (127.0.0.1), or a DNS
/// name looked up now (etcd accepts names in advertised URLs).
///
/// # Errors
/// [`UrlError`] naming the URL and what is wrong with it.
pub fn parse_url(raw: &str, schemes: &[&str]) -> Result<ParsedUrl, UrlError> {
    let raw = raw.trim();
    let bad = |reason: String| UrlError {
        url: raw.to_string(),
        reason,
    };
    let url = Url::parse(raw).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            bad("missing scheme (expected scheme://host:port)".to_string())
        }
        other => bad(lower_first(&other.to_string())),
    })?;
    let scheme = url.scheme().to_ascii_lowercase();
    if !schemes.contains(&scheme.as_str()) {
        return Err(bad(format!(
            "scheme {scheme:?} is not supported (use {})",
            schemes.join(", ")
        )));
    }
    // `Url` drops a scheme's default port (`http://h:80`), so look at the text.
    let port = match url.port_or_known_default() {
        Some(port) if has_explicit_port(raw) => port,
        _ => return Err(bad("missing port".to_string())),
    };
    let ip = match url.host() {
        None => return Err(bad("missing host".to_string())),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
        // Non-special schemes (quic://) keep IPv4 hosts as opaque strings.
        Some(Host::Domain(domain)) => match domain.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) if domain.eq_ignore_ascii_case("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
            // A DNS name (etcd accepts them in advertised URLs): resolved now.
            Err(_) => match std::net::ToSocketAddrs::to_socket_addrs(&(domain, port)) {
                Ok(mut addrs) => match addrs.next() {
                    Some(a) => a.ip(),
                    None => return Err(bad(format!("host {domain:?} does not resolve"))),
                },
                Err(e) => return Err(bad(format!("host {domain:?} does not resolve: {e}"))),
            },
        },
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not contain a path".to_string()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not contain user information".to_string()));
    }
    Ok(ParsedUrl {
        raw: raw.to_string(),
        scheme,
        addr: SocketAddr::new(ip, port),
    })
}

/// Whether the authority of `raw` (`scheme://[user@]host[:port]/…`) has a
/// non-empty `:port`.
fn has_explicit_port(raw: &str) -> bool {
    let Some((_, rest)) = raw.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let after_host = if host_port.starts_with('[') {
        host_port.find(']').map_or("", |i| &host_port[i + 1..])
    } else {
        host_port.find(':').map_or("", |i| &host_port[i..])
    };
    after_host.strip_prefix(':').is_some_and(|p| !p.is_empty())
}

/// Parses `name=url,name=url,…` into members in order of first appearance
/// (a name may repeat to give a member several URLs), with their checked URLs.
///
/// # Errors
/// [`InitialClusterError`] for a malformed entry, a bad URL or a URL given
/// twice.
pub fn parse_initial_cluster(
    text: &str,
) -> Result<Vec<(InitialMember, Vec<ParsedUrl>)>, InitialClusterError> {
    if text.trim().is_empty() {
        return Err(InitialClusterError::Empty);
    }
    let mut members: Vec<(InitialMember, Vec<ParsedUrl>)> = Vec::new();
    for entry in text.split(',') {
        let entry = entry.trim();
        let Some((name, url)) = entry.split_once('=') else {
            return Err(InitialClusterError::NoName(entry.to_string()));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(InitialClusterError::EmptyName(entry.to_string()));
        }
        let url = parse_url(url, &PEER_URL_SCHEMES).map_err(InitialClusterError::Url)?;
        let duplicate = members
            .iter()
            .flat_map(|(_, urls)| urls)
            .any(|seen| seen.same_endpoint(&url));
        if duplicate {
            return Err(InitialClusterError::DuplicateUrl {
                cluster: text.to_string(),
                url: url.raw,
            });
        }
        match members.iter_mut().find(|(member, _)| member.name == name) {
            Some((member, urls)) => {
                member.peer_urls.push(url.raw.clone());
                urls.push(url);
            }
            None => members.push((
                InitialMember {
                    name: name.to_string(),
                    peer_urls: vec![url.raw.clone()],
                },
                vec![url],
            )),
        }
    }
    Ok(members)
}

/// Checks a peer URL for form only (scheme, host, explicit port, nothing
/// else), as etcdctl does for `member add`/`update`: the member that will use
/// it may have a host name this machine cannot resolve, and the cluster
/// checks it again.
///
/// # Errors
/// What is wrong, one lowercase phrase.
pub fn check_peer_url(raw: &str) -> Result<(), String> {
    let url = Url::parse(raw).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            "missing scheme (expected scheme://host:port)".to_string()
        }
        other => lower_first(&other.to_string()),
    })?;
    if !PEER_URL_SCHEMES.contains(&url.scheme()) {
        return Err(format!(
            "scheme {:?} is not supported (use {})",
            url.scheme(),
            PEER_URL_SCHEMES.join(", ")
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("missing host".to_string());
    }
    if !has_explicit_port(raw) {
        return Err("missing port".to_string());
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err("must not contain a path".to_string());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user information".to_string());
    }
    Ok(())
}

/// `s` with its first character lowercased (for OS and library messages).
pub fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Resolves a peer URL (`http://`, `https://` or `quic://` host:port) to a
/// socket address.
///
/// # Errors
/// An unparsable URL, a missing port, or a name that does not resolve.
pub async fn resolve_url(url: &str) -> anyhow::Result<SocketAddr> {
    let u = url::Url::parse(url)?;
    let host = u
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("no host in {url}"))?
        .to_string();
    let port = u
        .port()
        .ok_or_else(|| anyhow::anyhow!("no port in {url}"))?;
    let mut addrs = tokio::net::lookup_host(format!("{host}:{port}")).await?;
    addrs
        .next()
        .ok_or_else(|| anyhow::anyhow!("{url} does not resolve"))
}
