//! The v2 writes (`PUT`, `POST`, `DELETE` on `/v2/keys/…`) as v3
//! transactions: each decides on a [`View`] read at one revision, then
//! writes with compares that hold only if nothing it decided on has
//! changed (the key's mod revision, the ancestors still not files, the
//! directory's contents), and starts over when one fails. A TTL is a lease
//! granted first and revoked again if the write does not happen.

use std::collections::HashMap;

use axum::http::StatusCode;
use etcd_client::{Compare, CompareOp, KeyValue, PutOptions, Txn, TxnOp};

use super::keys::{dir_prefix, event, expiration, prefix_end, Answer, Store, View};
use super::node::{Node, V2Error};
use super::Params;

/// One try of a write: the answer, or `None` when a compare failed.
type Attempt = Result<Option<(StatusCode, super::node::Event, i64)>, V2Error>;

/// Attempts of a write that keeps meeting concurrent changes. Writers that
/// collide on one directory (in-order creations) win one per round, so
/// this also bounds how many may create in one directory at once without
/// an error; between attempts each waits a random 0..=n ms (n the attempt
/// number, at most 16), so that they stop colliding in lockstep (etcd's v2
/// store serializes them under one lock instead).
const ATTEMPTS: usize = 64;

impl Store {
    /// `PUT /v2/keys/<key>`: set a file (`value`) or directory (`dir`),
    /// with v2's conditions (`prevExist`, `prevValue`, `prevIndex`), a TTL
    /// (`ttl`) or a TTL refresh (`refresh`).
    ///
    /// # Errors
    /// v2's 100, 101, 102, 104, 105, 107, 212, 213; 300 when the v3 call
    /// fails.
    pub async fn put(&self, key: &str, p: &Params) -> Answer {
        if key == "/" {
            return Err(V2Error::new(107, "/"));
        }
        if p.wait {
            return Err(V2Error::new(
                209,
                "\"wait\" can only be used with GET requests",
            ));
        }
        let ttl = p.ttl_seconds()?;
        if p.refresh {
            if p.value.is_some() {
                return Err(V2Error::new(212, ""));
            }
            let Some(ttl) = ttl else {
                return Err(V2Error::new(213, ""));
            };
            return self.retry(|| self.try_refresh(key, p, ttl)).await;
        }
        self.retry(|| self.try_put(key, p, ttl)).await
    }

    /// `POST /v2/keys/<dir>`: a new file in `dir` named by a zero-padded
    /// 20-digit number above every name the directory has had (v2's
    /// in-order keys; the name is the revision read before the write, so
    /// it may be below the key's created index, never out of order).
    ///
    /// # Errors
    /// 104 when `dir` or an ancestor is a file.
    pub async fn create_in_order(&self, key: &str, p: &Params) -> Answer {
        let ttl = p.ttl_seconds()?;
        self.retry(|| self.try_create_in_order(key, p, ttl)).await
    }

    /// `DELETE /v2/keys/<key>`: a file, with `prevValue`/`prevIndex`
    /// (compareAndDelete); an empty directory with `dir=true`; a subtree
    /// with `recursive=true`.
    ///
    /// # Errors
    /// v2's 100, 101, 102, 107, 108.
    pub async fn delete(&self, key: &str, p: &Params) -> Answer {
        if key == "/" {
            return Err(V2Error::new(107, "/"));
        }
        self.retry(|| self.try_delete(key, p)).await
    }

    async fn retry<F, Fut>(&self, attempt: F) -> Answer
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<
            Output = Result<Option<(StatusCode, super::node::Event, i64)>, V2Error>,
        >,
    {
        for n in 0..ATTEMPTS {
            if let Some(answer) = attempt().await? {
                return Ok(answer);
            }
            let wait = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=n.min(16) as u64);
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
        Err(V2Error::internal("the key kept changing; try again"))
    }

    async fn try_put(&self, key: &str, p: &Params, ttl: Option<i64>) -> Attempt {
        let view = self.view(key).await?;
        if let Some(ancestor) = view.file_ancestor() {
            return Err(V2Error::new(104, ancestor));
        }
        let mut cache = HashMap::new();
        let prev = match &view.file {
            Some(kv) => Some(self.file_node(kv, &mut cache).await?),
            None => None,
        };
        let conditional = p.prev_value.is_some() || p.prev_index.is_some();
        if view.is_dir() {
            if p.prev_exist == Some(false) {
                return Err(V2Error::new(105, key));
            }
            if !(p.dir && p.prev_exist == Some(true)) {
                return Err(V2Error::new(102, key));
            }
        } else if view.file.is_some() {
            if p.prev_exist == Some(false) {
                return Err(V2Error::new(105, key));
            }
        } else if p.prev_exist == Some(true) || conditional {
            return Err(V2Error::new(100, key));
        }
        if let (Some(kv), true) = (&view.file, conditional) {
            compare_failed(kv, p)?;
        }
        let action = if conditional {
            "compareAndSwap"
        } else {
            match p.prev_exist {
                Some(true) => "update",
                Some(false) => "create",
                None => "set",
            }
        };
        let lease = match ttl {
            Some(ttl) => self.grant(ttl).await?,
            None => view.inherited_lease(),
        };
        let put = PutOptions::new().with_lease(lease);
        let marker = dir_prefix(key);
        let mut compares = guard(key, &view);
        let ops = if p.dir {
            if let Some(m) = view.marker(key) {
                compares.push(Compare::mod_revision(
                    marker.as_str(),
                    CompareOp::Equal,
                    m.mod_revision(),
                ));
            }
            vec![
                TxnOp::delete(key, None),
                TxnOp::put(marker.as_str(), "", Some(put)),
            ]
        } else {
            let value = p.value.clone().unwrap_or_default();
            vec![TxnOp::put(key, value, Some(put))]
        };
        let Some(rev) = self.write(compares, ops, ttl.map(|_| lease)).await? else {
            return Ok(None);
        };
        let prev_node = if p.dir {
            match view.marker(key) {
                Some(m) => Some(self.file_node(m, &mut cache).await?),
                None => prev,
            }
        } else {
            prev
        };
        let created = if p.dir {
            view.marker(key).map_or(rev, KeyValue::create_revision)
        } else {
            view.file.as_ref().map_or(rev, KeyValue::create_revision)
        };
        let mut node = Node {
            key: Some(key.to_string()),
            value: (!p.dir && !p.no_value_on_success).then(|| p.value.clone().unwrap_or_default()),
            dir: p.dir,
            modified_index: rev,
            created_index: created,
            ..Node::default()
        };
        if let Some(ttl) = ttl {
            node.ttl = Some(ttl);
            node.expiration = Some(expiration(ttl));
        }
        let status = if prev_node.is_none() {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(Some((status, event(action, node, prev_node), rev)))
    }

    async fn try_refresh(&self, key: &str, p: &Params, ttl: i64) -> Attempt {
        let view = self.view(key).await?;
        let target = match (&view.file, view.marker(key)) {
            (Some(kv), _) => kv.clone(),
            (None, Some(m)) if p.dir || view.is_dir() => m.clone(),
            _ => return Err(V2Error::new(100, key)),
        };
        if p.prev_value.is_some() || p.prev_index.is_some() {
            compare_failed(&target, p)?;
        }
        let prev = self.file_node(&target, &mut HashMap::new()).await?;
        let mut leases = self.client.lease_client();
        let granted = if target.lease() == 0 {
            -1
        } else {
            leases
                .time_to_live(target.lease(), None)
                .await?
                .granted_ttl()
        };
        let rev = if granted == ttl {
            // The same TTL: renewing the lease changes no revision and
            // wakes no watcher, as v2's refresh.
            let (mut keeper, mut answers) = leases.keep_alive(target.lease()).await?;
            keeper.keep_alive().await?;
            answers.message().await?;
            view.rev
        } else {
            let lease = self.grant(ttl).await?;
            let compares = vec![Compare::mod_revision(
                target.key(),
                CompareOp::Equal,
                target.mod_revision(),
            )];
            let put = PutOptions::new().with_lease(lease).with_ignore_value();
            let ops = vec![TxnOp::put(target.key(), "", Some(put))];
            match self.write(compares, ops, Some(lease)).await? {
                Some(rev) => rev,
                None => return Ok(None),
            }
        };
        let mut node = prev.clone();
        node.modified_index = node
            .modified_index
            .max(if granted == ttl { 0 } else { rev });
        node.ttl = Some(ttl);
        node.expiration = Some(expiration(ttl));
        Ok(Some((
            StatusCode::OK,
            event("update", node, Some(prev)),
            rev,
        )))
    }

    async fn try_create_in_order(&self, key: &str, p: &Params, ttl: Option<i64>) -> Attempt {
        let view = self.view(key).await?;
        if let Some(ancestor) = view.file_ancestor() {
            return Err(V2Error::new(104, ancestor));
        }
        if view.file.is_some() {
            return Err(V2Error::new(104, key));
        }
        let prefix = dir_prefix(key);
        let name = format!("{prefix}{:020}", view.rev + 1);
        let mut compares = guard(key, &view);
        // No name at or above ours can appear in the directory meanwhile
        // (other keys may change freely), and ours is new.
        compares.push(
            Compare::create_revision(name.as_str(), CompareOp::Less, view.rev + 1)
                .with_range(prefix_end(prefix.as_bytes())),
        );
        compares.push(Compare::version(name.as_str(), CompareOp::Equal, 0));
        let lease = match ttl {
            Some(ttl) => self.grant(ttl).await?,
            None => view.inherited_lease(),
        };
        let value = p.value.clone().unwrap_or_default();
        let ops = vec![TxnOp::put(
            name.as_str(),
            value.as_str(),
            Some(PutOptions::new().with_lease(lease)),
        )];
        let Some(rev) = self.write(compares, ops, ttl.map(|_| lease)).await? else {
            return Ok(None);
        };
        let mut node = Node {
            key: Some(name),
            value: Some(value),
            modified_index: rev,
            created_index: rev,
            ..Node::default()
        };
        if let Some(ttl) = ttl {
            node.ttl = Some(ttl);
            node.expiration = Some(expiration(ttl));
        }
        Ok(Some((
            StatusCode::CREATED,
            event("create", node, None),
            rev,
        )))
    }

    async fn try_delete(&self, key: &str, p: &Params) -> Attempt {
        let view = self.view(key).await?;
        let conditional = p.prev_value.is_some() || p.prev_index.is_some();
        let mut cache = HashMap::new();
        if let Some(kv) = &view.file {
            if conditional {
                compare_failed(kv, p)?;
            }
            let prev = self.file_node(kv, &mut cache).await?;
            let compares = vec![Compare::mod_revision(
                key,
                CompareOp::Equal,
                kv.mod_revision(),
            )];
            let Some(rev) = self
                .write(compares, vec![TxnOp::delete(key, None)], None)
                .await?
            else {
                return Ok(None);
            };
            let node = Node {
                key: Some(key.to_string()),
                modified_index: rev,
                created_index: kv.create_revision(),
                ..Node::default()
            };
            let action = if conditional {
                "compareAndDelete"
            } else {
                "delete"
            };
            return Ok(Some((StatusCode::OK, event(action, node, Some(prev)), rev)));
        }
        if !view.is_dir() {
            return Err(V2Error::new(100, key));
        }
        if conditional || !(p.dir || p.recursive) {
            return Err(V2Error::new(102, key));
        }
        if !p.recursive && view.has_children(key) {
            return Err(V2Error::new(108, key));
        }
        let prefix = dir_prefix(key);
        let end = prefix_end(prefix.as_bytes());
        let compares = vec![
            Compare::mod_revision(prefix.as_str(), CompareOp::Less, view.rev + 1)
                .with_range(end.clone()),
        ];
        let ops = vec![TxnOp::delete(
            prefix.as_str(),
            Some(etcd_client::DeleteOptions::new().with_range(end)),
        )];
        let Some(rev) = self.write(compares, ops, None).await? else {
            return Ok(None);
        };
        let marker = view.marker(key);
        let prev = Node {
            key: Some(key.to_string()),
            dir: true,
            modified_index: marker.map_or(0, KeyValue::mod_revision),
            created_index: marker.map_or(0, KeyValue::create_revision),
            ..Node::default()
        };
        let node = Node {
            modified_index: rev,
            ..prev.clone()
        };
        Ok(Some((
            StatusCode::OK,
            event("delete", node, Some(prev)),
            rev,
        )))
    }

    /// A lease of `ttl` seconds for a key with a TTL.
    async fn grant(&self, ttl: i64) -> Result<i64, V2Error> {
        Ok(self.client.lease_client().grant(ttl, None).await?.id())
    }

    /// Runs the write; `Some(revision)` when the compares held, else `None`
    /// (and the lease granted for it, if any, is revoked).
    async fn write(
        &self,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
        granted: Option<i64>,
    ) -> Result<Option<i64>, V2Error> {
        let response = self
            .client
            .kv_client()
            .txn(Txn::new().when(compares).and_then(ops))
            .await;
        // A failed call may still have committed (a timeout): the lease
        // is left to expire rather than revoked under a written key.
        let response = response?;
        if response.succeeded() {
            return Ok(Some(response.header().map_or(0, |h| h.revision())));
        }
        self.forget(granted).await;
        Ok(None)
    }

    async fn forget(&self, granted: Option<i64>) {
        if let Some(lease) = granted {
            let _ = self.client.lease_client().revoke(lease).await;
        }
    }
}

/// The compares that keep a [`View`]'s facts about `key` true: its
/// ancestors are still not files, the key itself is unchanged, and it is
/// still not a directory when it was not one.
fn guard(key: &str, view: &View) -> Vec<Compare> {
    let mut compares: Vec<Compare> = view
        .ancestors
        .iter()
        .map(|(name, _, _)| Compare::version(name.as_str(), CompareOp::Equal, 0))
        .collect();
    let modified = view.file.as_ref().map_or(0, KeyValue::mod_revision);
    compares.push(Compare::mod_revision(key, CompareOp::Equal, modified));
    if !view.is_dir() {
        let prefix = dir_prefix(key);
        compares.push(
            Compare::version(prefix.as_str(), CompareOp::Equal, 0)
                .with_range(prefix_end(prefix.as_bytes())),
        );
    }
    compares
}

/// v2's 101 when `kv` fails `prevValue` or `prevIndex`; the cause names
/// what differed, e.g. `[two != one]`, `[7 != 5]`.
fn compare_failed(kv: &KeyValue, p: &Params) -> Result<(), V2Error> {
    let value = String::from_utf8_lossy(kv.value());
    let mut causes = Vec::new();
    if let Some(want) = &p.prev_value {
        if *want != value {
            causes.push(format!("[{want} != {value}]"));
        }
    }
    if let Some(want) = p.prev_index {
        if want != kv.mod_revision() {
            causes.push(format!("[{want} != {}]", kv.mod_revision()));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(V2Error::new(101, causes.join(" ")))
    }
}
