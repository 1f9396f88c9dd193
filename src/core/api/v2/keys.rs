//! Reading the v2 tree out of the v3 key space: a key is a file when the v3
//! key exists, a directory when keys lie below `key/` (its marker `key/`
//! among them); listings skip `_` names (v2's hidden nodes) and never scan
//! more than the answer needs (one range per sub-directory, not its
//! contents, unless `recursive`). Writes are in [`super::write`].

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use etcd_client::{Client, GetOptions, KeyValue, TxnOp, TxnOpResponse};

use super::node::{Event, Node, V2Error};
use super::Params;
use crate::core::api::ApiContext;

/// A v2 answer: status, event, and the store revision for `X-Etcd-Index`.
pub type Answer = Result<(StatusCode, Event, i64), V2Error>;

/// Keys fetched per range of a listing.
const LIST_BATCH: i64 = 1000;
/// Most keys a recursive listing reads (beyond: 209, list level by level).
const RECURSIVE_LIMIT: i64 = 100_000;
/// Deepest level a recursive listing nests; deeper directories are shown
/// without their contents (a v3 key may have thousands of `/`s).
const MAX_DEPTH: usize = 64;

/// The v2 operations over one caller's v3 client.
pub struct Store {
    pub(super) client: Client,
    pub(super) ctx: ApiContext,
}

/// The first key after every key starting with `prefix` (v3's prefix end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The directory prefix of `key`: `key/`, or `/` for the root.
pub fn dir_prefix(key: &str) -> String {
    if key == "/" {
        "/".to_string()
    } else {
        format!("{key}/")
    }
}

/// The ancestors of `key`, nearest last: `/a/b/c` → `/a`, `/a/b`.
pub fn ancestors(key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = key[at + 1..].find('/') {
        at += i + 1;
        out.push(key[..at].to_string());
    }
    out
}

/// What the store holds at and around a key, read at one revision: the
/// ground every write decides on (and then re-checks with compares).
#[derive(Debug)]
pub struct View {
    /// The revision read at.
    pub rev: i64,
    /// The file `key`, if any.
    pub file: Option<KeyValue>,
    /// Up to two keys below `key/` (the marker first when there is one).
    pub below: Vec<KeyValue>,
    /// Each ancestor's file key and marker, nearest last.
    pub ancestors: Vec<(String, Option<KeyValue>, Option<KeyValue>)>,
}

impl View {
    /// Whether `key` is a directory.
    pub fn is_dir(&self) -> bool {
        !self.below.is_empty()
    }

    /// The directory's marker (`key/`), if it has one.
    pub fn marker(&self, key: &str) -> Option<&KeyValue> {
        let prefix = dir_prefix(key);
        self.below
            .first()
            .filter(|kv| kv.key() == prefix.as_bytes())
    }

    /// Whether anything but the marker lies below.
    pub fn has_children(&self, key: &str) -> bool {
        let marker = usize::from(self.marker(key).is_some());
        self.below.len() > marker
    }

    /// The first ancestor that is a file (v2's "Not a directory").
    pub fn file_ancestor(&self) -> Option<&str> {
        self.ancestors
            .iter()
            .find(|(_, file, _)| file.is_some())
            .map(|(name, _, _)| name.as_str())
    }

    /// The lease of the nearest ancestor directory with a TTL: keys made
    /// inside expire with it (v2's directory TTL).
    pub fn inherited_lease(&self) -> i64 {
        self.ancestors
            .iter()
            .rev()
            .find_map(|(_, _, marker)| marker.as_ref().map(KeyValue::lease).filter(|l| *l != 0))
            .unwrap_or(0)
    }
}

impl Store {
    /// A store over `client` (calls made as the HTTP caller).
    pub fn new(client: Client, ctx: ApiContext) -> Self {
        Self { client, ctx }
    }

    /// Reads the [`View`] of `key` in one transaction.
    ///
    /// # Errors
    /// 209 for a key nested deeper than one transaction can check; the v3
    /// call's failure.
    pub async fn view(&self, key: &str) -> Result<View, V2Error> {
        let prefix = dir_prefix(key);
        let mut ops = vec![
            TxnOp::get(key, None),
            TxnOp::get(
                prefix.as_str(),
                Some(
                    GetOptions::new()
                        .with_range(prefix_end(prefix.as_bytes()))
                        .with_limit(2),
                ),
            ),
        ];
        let names = ancestors(key);
        if 2 + 2 * names.len() > self.ctx.max_txn_ops {
            return Err(V2Error::new(209, format!("{key} is nested too deep")));
        }
        for a in &names {
            ops.push(TxnOp::get(a.as_str(), None));
            ops.push(TxnOp::get(format!("{a}/"), None));
        }
        let response = self
            .client
            .kv_client()
            .txn(etcd_client::Txn::new().and_then(ops))
            .await?;
        let rev = response.header().map_or(0, |h| h.revision());
        let mut gets = response.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(mut g) => g.take_kvs(),
            _ => Vec::new(),
        });
        let file = gets.next().and_then(|k| k.into_iter().next());
        let below = gets.next().unwrap_or_default();
        let mut ancestors = Vec::new();
        for name in names {
            let file = gets.next().and_then(|k| k.into_iter().next());
            let marker = gets.next().and_then(|k| k.into_iter().next());
            ancestors.push((name, file, marker));
        }
        Ok(View {
            rev,
            file,
            below,
            ancestors,
        })
    }

    /// `GET /v2/keys/<key>`: the file, or the directory with its children
    /// (`recursive`: the whole subtree); children sorted by key either way.
    ///
    /// # Errors
    /// 100 for a key that is neither.
    pub async fn get(&self, key: &str, p: &Params) -> Answer {
        let options = (!p.quorum).then(|| GetOptions::new().with_serializable());
        let response = self.client.kv_client().get(key, options).await?;
        let rev = response.header().map_or(0, |h| h.revision());
        if key != "/" {
            if let Some(kv) = response.kvs().first() {
                let node = self.file_node(kv, &mut HashMap::new()).await?;
                return Ok((StatusCode::OK, event("get", node, None), rev));
            }
        }
        match self.list(key, p.recursive, rev).await? {
            Some(node) => Ok((StatusCode::OK, event("get", node, None), rev)),
            None => Err(V2Error::new(100, key)),
        }
    }

    /// The directory `key` read at `rev`, or `None` when nothing lies below.
    async fn list(&self, key: &str, recursive: bool, rev: i64) -> Result<Option<Node>, V2Error> {
        let prefix = dir_prefix(key);
        let end = prefix_end(prefix.as_bytes());
        let kvs = if recursive {
            let options = GetOptions::new()
                .with_range(end)
                .with_revision(rev)
                .with_serializable()
                .with_limit(RECURSIVE_LIMIT);
            let mut response = self
                .client
                .kv_client()
                .get(prefix.as_str(), Some(options))
                .await?;
            if response.more() {
                return Err(V2Error::new(
                    209,
                    format!(
                        "{key} holds more than {RECURSIVE_LIMIT} keys; list it without recursive"
                    ),
                ));
            }
            response.take_kvs()
        } else {
            self.scan_children(&prefix, &end, rev).await?
        };
        if kvs.is_empty() && key != "/" {
            return Ok(None);
        }
        let mut ttls = HashMap::new();
        let mut node = self.dir_node(key, &kvs, recursive, 0, &mut ttls).await?;
        if key == "/" {
            node.key = None;
            node.modified_index = 0;
            node.created_index = 0;
        }
        Ok(Some(node))
    }

    /// One key per child of the directory `prefix`: each file, and the
    /// first key of each sub-directory (its marker when it has one),
    /// skipping past the rest of that sub-directory.
    async fn scan_children(
        &self,
        prefix: &str,
        end: &[u8],
        rev: i64,
    ) -> Result<Vec<KeyValue>, V2Error> {
        let mut found = Vec::new();
        let mut cursor = prefix.as_bytes().to_vec();
        loop {
            let options = GetOptions::new()
                .with_range(end.to_vec())
                .with_revision(rev)
                .with_serializable()
                .with_limit(LIST_BATCH);
            let response = self
                .client
                .kv_client()
                .get(cursor.clone(), Some(options))
                .await?;
            let mut jumped = false;
            for kv in response.kvs() {
                let rel = &kv.key()[prefix.len()..];
                found.push(kv.clone());
                match rel.iter().position(|&b| b == b'/') {
                    Some(i) => {
                        // Past the whole sub-directory: `name/` → `name0`.
                        cursor = [prefix.as_bytes(), &rel[..i], b"0"].concat();
                        jumped = true;
                        break;
                    }
                    None => cursor = [kv.key(), &[0]].concat(),
                }
            }
            if response.kvs().is_empty() || (!jumped && !response.more()) {
                return Ok(found);
            }
        }
    }

    /// The directory `key` from `kvs` (all keys below it, sorted; or one
    /// per child when not `recursive`), `depth` levels below the listed one.
    async fn dir_node(
        &self,
        key: &str,
        kvs: &[KeyValue],
        recursive: bool,
        depth: usize,
        ttls: &mut HashMap<i64, Option<(i64, String)>>,
    ) -> Result<Node, V2Error> {
        let prefix = dir_prefix(key);
        let mut node = Node {
            key: Some(key.to_string()),
            dir: true,
            ..Node::default()
        };
        let mut i = 0;
        while i < kvs.len() {
            let kv = &kvs[i];
            let rel = &kv.key()[prefix.len().min(kv.key().len())..];
            let Some(slash) = rel.iter().position(|&b| b == b'/') else {
                i += 1;
                if rel.is_empty() {
                    // The directory's own marker.
                    self.stamp(&mut node, kv, ttls).await?;
                } else if rel[0] != b'_' {
                    // A key that is also a directory (`/a` and `/a/b` in
                    // v3) is listed as the directory.
                    let also_dir = kvs.get(i).is_some_and(|next| {
                        next.key().starts_with(kv.key())
                            && next.key().get(kv.key().len()) == Some(&b'/')
                    });
                    if !also_dir {
                        node.nodes.push(Box::pin(self.file_node(kv, ttls)).await?);
                    }
                }
                continue;
            };
            let name = &rel[..slash];
            let child_prefix = [prefix.as_bytes(), name, b"/"].concat();
            let group_end = kvs[i..]
                .iter()
                .position(|kv| !kv.key().starts_with(&child_prefix))
                .map_or(kvs.len(), |n| i + n);
            let group = &kvs[i..group_end];
            i = group_end;
            if name.is_empty() || name[0] == b'_' {
                continue;
            }
            let child_key = format!("{prefix}{}", String::from_utf8_lossy(name));
            let child = if recursive && depth < MAX_DEPTH {
                Box::pin(self.dir_node(&child_key, group, true, depth + 1, ttls)).await?
            } else {
                let mut child = Node {
                    key: Some(child_key),
                    dir: true,
                    ..Node::default()
                };
                if let Some(marker) = group.first().filter(|kv| kv.key() == child_prefix) {
                    self.stamp(&mut child, marker, ttls).await?;
                }
                child
            };
            node.nodes.push(child);
        }
        Ok(node)
    }

    /// A directory's indexes and TTL from its marker.
    async fn stamp(
        &self,
        node: &mut Node,
        marker: &KeyValue,
        ttls: &mut HashMap<i64, Option<(i64, String)>>,
    ) -> Result<(), V2Error> {
        node.created_index = marker.create_revision();
        node.modified_index = marker.mod_revision();
        if let Some((ttl, expiration)) = self.ttl(marker.lease(), ttls).await? {
            node.ttl = Some(ttl);
            node.expiration = Some(expiration);
        }
        Ok(())
    }

    /// The file node of `kv`, with its TTL when it has a lease.
    pub async fn file_node(
        &self,
        kv: &KeyValue,
        ttls: &mut HashMap<i64, Option<(i64, String)>>,
    ) -> Result<Node, V2Error> {
        let mut node = file_node(kv);
        if let Some((ttl, expiration)) = self.ttl(kv.lease(), ttls).await? {
            node.ttl = Some(ttl);
            node.expiration = Some(expiration);
        }
        Ok(node)
    }

    /// Seconds left on `lease` and when it runs out (cached per answer).
    async fn ttl(
        &self,
        lease: i64,
        cache: &mut HashMap<i64, Option<(i64, String)>>,
    ) -> Result<Option<(i64, String)>, V2Error> {
        if lease == 0 {
            return Ok(None);
        }
        if let Some(known) = cache.get(&lease) {
            return Ok(known.clone());
        }
        let left = self
            .client
            .lease_client()
            .time_to_live(lease, None)
            .await?
            .ttl();
        let known = (left >= 0).then(|| (left, expiration(left)));
        cache.insert(lease, known.clone());
        Ok(known)
    }
}

/// `ttl` seconds from now, RFC 3339 with nanoseconds (v2's `expiration`).
pub fn expiration(ttl: i64) -> String {
    let at = SystemTime::now() + Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
    humantime::format_rfc3339_nanos(at).to_string()
}

/// The node of a v3 key-value: a file, or a directory for a marker.
pub fn file_node(kv: &KeyValue) -> Node {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    match key.strip_suffix('/').filter(|k| !k.is_empty()) {
        Some(dir) => Node {
            key: Some(dir.to_string()),
            dir: true,
            modified_index: kv.mod_revision(),
            created_index: kv.create_revision(),
            ..Node::default()
        },
        None => Node {
            key: Some(key),
            value: Some(String::from_utf8_lossy(kv.value()).into_owned()),
            modified_index: kv.mod_revision(),
            created_index: kv.create_revision(),
            ..Node::default()
        },
    }
}

pub fn event(action: &'static str, node: Node, prev_node: Option<Node>) -> Event {
    Event {
        action,
        node,
        prev_node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_and_prefixes() {
        assert_eq!(ancestors("/a/b/c"), vec!["/a", "/a/b"]);
        assert!(ancestors("/a").is_empty());
        assert_eq!(dir_prefix("/"), "/");
        assert_eq!(dir_prefix("/a"), "/a/");
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
    }
}
