//! v2 waits (`GET /v2/keys/<key>?wait=true`) as v3 watches: from
//! `waitIndex` (or the next revision), on the key (and its directory
//! marker), or with `recursive` on everything below it, hidden `_` nodes
//! left out. (Across the two watches, a wait from an old `waitIndex` may
//! answer a later event of one before an earlier one of the other.) The first matching event answers; with `stream=true` every
//! event is a line of a chunked answer until the client leaves. A
//! compacted `waitIndex` is v2's 401. A delete whose lease is gone is an
//! `expire` (so a delete read from history after its lease ran out also
//! is); every put is a `set` (v3 events do not say which v2 call made
//! them).

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use etcd_client::{Event as V3Event, EventType, WatchOptions, WatchStream};
use tokio::sync::mpsc;

use super::keys::{dir_prefix, event, file_node, prefix_end, Store};
use super::node::{Event, Node, V2Error};
use super::{Params, V2};

/// Events encoded and not yet written to a streaming client.
const STREAM_QUEUE: usize = 64;

/// Answers a wait (see the module doc).
pub async fn serve(v2: &V2, store: Store, key: String, p: Params) -> Response {
    let current = match v2.ctx.current_revision() {
        Ok(r) => r.0,
        Err(e) => return v2.error(V2Error::internal(e.to_string())),
    };
    let start = p.wait_index.unwrap_or(current + 1).max(1);
    let prefix = dir_prefix(&key);
    // The key itself, and its directory marker (everything below it with
    // `recursive`): two watches, so that a user allowed only those keys
    // may wait on them (one range would also cover `/a-b`, `/a.x`).
    let below = if p.recursive {
        WatchOptions::new().with_range(prefix_end(prefix.as_bytes()))
    } else {
        WatchOptions::new()
    };
    let options = |o: WatchOptions| Some(o.with_start_revision(start).with_prev_key());
    let mut stream = match store
        .client
        .watch_client()
        .watch(prefix.as_str(), options(below))
        .await
    {
        Ok(stream) => stream,
        Err(e) => return v2.error(e.into()),
    };
    if key != "/" {
        if let Err(e) = stream
            .watch(key.as_str(), options(WatchOptions::new()))
            .await
        {
            return v2.error(e.into());
        }
    }
    let mut watch = Watch {
        stream,
        store,
        key,
        prefix,
        recursive: p.recursive,
        pending: std::collections::VecDeque::new(),
    };
    if !p.stream {
        return match watch.next(start).await {
            Ok(ev) => v2.json(StatusCode::OK, &ev, current),
            Err(e) => v2.error(e),
        };
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(STREAM_QUEUE);
    tokio::spawn(async move {
        loop {
            // A client that leaves ends the watch at once, not at the next
            // event.
            let next = tokio::select! {
                next = watch.next(start) => next,
                () = tx.closed() => return,
            };
            let line = match next {
                Ok(ev) => serde_json::to_vec(&ev).unwrap_or_default(),
                Err(_) => return,
            };
            let mut line = line;
            line.push(b'\n');
            if tx.send(Ok(line.into())).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ));
    v2.headers(response.headers_mut(), current);
    response
}

/// A v3 watch read as v2 events.
struct Watch {
    stream: WatchStream,
    store: Store,
    key: String,
    prefix: String,
    recursive: bool,
    /// Events received and not yet returned.
    pending: std::collections::VecDeque<V3Event>,
}

impl Watch {
    /// The next event v2 would report.
    ///
    /// # Errors
    /// 401 when `start` is compacted; 300 when the watch ends.
    async fn next(&mut self, start: i64) -> Result<Event, V2Error> {
        loop {
            while let Some(ev) = self.pending.pop_front() {
                if let Some(v2) = self.convert(&ev).await? {
                    return Ok(v2);
                }
            }
            let Some(response) = self.stream.message().await? else {
                return Err(V2Error::internal("the watch ended"));
            };
            if response.compact_revision() > 0 {
                return Err(V2Error::new(
                    401,
                    format!(
                        "the requested history has been cleared [{}/{start}]",
                        response.compact_revision()
                    ),
                ));
            }
            if response.canceled() {
                return Err(V2Error::internal(response.cancel_reason().to_string()));
            }
            self.pending.extend(response.events().iter().cloned());
        }
    }

    /// Whether v2 reports a change of `key` to this wait.
    fn wanted(&self, key: &str) -> bool {
        if key == self.key || key == self.prefix {
            return true;
        }
        let Some(rest) = key.strip_prefix(&self.prefix) else {
            return false;
        };
        self.recursive && !rest.split('/').any(|part| part.starts_with('_'))
    }

    async fn convert(&self, ev: &V3Event) -> Result<Option<Event>, V2Error> {
        let Some(kv) = ev.kv() else {
            return Ok(None);
        };
        let key = String::from_utf8_lossy(kv.key());
        if !self.wanted(&key) {
            return Ok(None);
        }
        let mut ttls = HashMap::new();
        let prev = match ev.prev_kv() {
            Some(p) => Some(self.store.file_node(p, &mut ttls).await?),
            None => None,
        };
        match ev.event_type() {
            EventType::Put => {
                let node = self.store.file_node(kv, &mut ttls).await?;
                Ok(Some(event("set", node, prev)))
            }
            EventType::Delete => {
                let lease = ev.prev_kv().map_or(0, |p| p.lease());
                let expired = lease != 0
                    && self
                        .store
                        .client
                        .lease_client()
                        .time_to_live(lease, None)
                        .await
                        .is_ok_and(|l| l.ttl() < 0);
                let shape = file_node(kv);
                let node = Node {
                    key: shape.key,
                    dir: shape.dir,
                    modified_index: kv.mod_revision(),
                    created_index: ev.prev_kv().map_or(0, |p| p.create_revision()),
                    ..Node::default()
                };
                let action = if expired { "expire" } else { "delete" };
                Ok(Some(event(action, node, prev)))
            }
        }
    }
}
