//! `KV.RangeStream` (etcd 3.7): a range answered in chunks, each read when
//! the previous one is sent, all from one storage snapshot, so that a
//! large range is never whole in memory on either side. As etcd's
//! `rangeStream` (server/etcdserver/v3_server.go): chunks start at 10 keys
//! and double or halve toward `--max-request-bytes`; only the last chunk
//! carries the header, `more` and `count`; custom sort orders and the
//! min/max revision filters are refused with Unimplemented.

use std::pin::Pin;

use etcd_client::proto::{PbRangeRequest, PbRangeResponse, PbRangeStreamResponse};
use futures::Stream;
use prost::Message as _;
use tonic::{Code, Status};

use crate::core::api::ApiContext;
use crate::core::auth::Identity;
use crate::core::mvcc::{self, KeyRange};
use crate::core::types::Revision;

/// The chunks of one `RangeStream` answer.
pub type RangeStream = Pin<Box<dyn Stream<Item = Result<PbRangeStreamResponse, Status>> + Send>>;

/// Keys in the first chunk (etcd's `initialStreamChunkLimit`).
const FIRST_CHUNK_KEYS: usize = 10;

/// Checks `req` (etcd's `checkRangeStreamRequest`) and starts the stream:
/// a linearizable request waits for the read barrier first, then every
/// chunk is read from one snapshot taken after it.
///
/// # Errors
/// Unimplemented for a custom sort order or revision filters; the errors
/// of `Range` (compacted or future revision, no leader, timeout).
pub async fn start(
    ctx: ApiContext,
    who: Identity,
    mut req: PbRangeRequest,
) -> Result<RangeStream, Status> {
    if !mvcc::read::default_ordering(&req) {
        return Err(Status::new(
            Code::Unimplemented,
            "RangeStream does not support custom sort orders",
        ));
    }
    if mvcc::read::has_revision_filters(&req) {
        return Err(Status::new(
            Code::Unimplemented,
            "RangeStream does not support revision filters",
        ));
    }
    if !req.serializable {
        ctx.reject_learner()?;
        ctx.node.linearizable_barrier(ctx.request_timeout).await?;
    }
    let snapshot = ctx.storage.db.read_tx();
    let revs = mvcc::revisions(&snapshot, &ctx.storage)?;
    if req.count_only || (req.revision > 0 && req.revision != revs.current) {
        // One chunk: a count, or a past revision (read whole, as `Range`).
        let mut resp = mvcc::range(&snapshot, &ctx.storage, revs, &req)?;
        ctx.check_range(&who, &req)?;
        ctx.fill(&mut resp.header);
        let chunk = PbRangeStreamResponse {
            range_response: Some(resp),
        };
        return Ok(Box::pin(futures::stream::iter([Ok(chunk)])));
    }
    let total = if req.limit > 0 {
        req.limit as usize
    } else {
        usize::MAX
    };
    req.revision = revs.current;
    let pages = Pages {
        ctx,
        who,
        snapshot,
        range: KeyRange::new(&req.key, &req.range_end),
        req,
        total,
        page: FIRST_CHUNK_KEYS.min(total),
        sent: 0,
        done: false,
    };
    Ok(Box::pin(futures::stream::unfold(
        pages,
        |mut p| async move {
            let chunk = p.next_chunk()?;
            Some((chunk, p))
        },
    )))
}

/// The state of one stream between chunks.
struct Pages {
    ctx: ApiContext,
    who: Identity,
    /// Every chunk is read from this snapshot (its revision is
    /// `req.revision`).
    snapshot: fjall::Snapshot,
    /// What is left to send.
    range: KeyRange,
    req: PbRangeRequest,
    /// The request's limit (`usize::MAX`: none).
    total: usize,
    /// Keys in the next chunk.
    page: usize,
    /// Keys sent so far.
    sent: usize,
    done: bool,
}

impl Pages {
    /// The next chunk; `None` after the last one (or after an error).
    fn next_chunk(&mut self) -> Option<Result<PbRangeStreamResponse, Status>> {
        if self.done {
            return None;
        }
        let chunk = self.read_chunk();
        if chunk.is_err() {
            self.done = true;
        }
        Some(chunk.map(|r| PbRangeStreamResponse {
            range_response: Some(r),
        }))
    }

    fn read_chunk(&mut self) -> Result<PbRangeResponse, Status> {
        let s = &self.ctx.storage;
        let (kvs, more) = mvcc::read::range_page(
            &self.snapshot,
            s,
            &self.range,
            self.page,
            self.req.keys_only,
        )?;
        self.sent += kvs.len();
        let mut out = PbRangeResponse {
            kvs,
            ..Default::default()
        };
        self.done = !more || self.sent >= self.total;
        if let Some(last) = out.kvs.last() {
            let mut next = last.key.clone();
            next.push(0);
            self.range = KeyRange::new(&next, &self.req.range_end);
        }
        if self.done {
            // etcd's doSerialize: rights changed during the read → discard.
            self.ctx.check_range(&self.who, &self.req)?;
            let rest = if more {
                mvcc::read::count_current(&self.snapshot, s, &self.range)?
            } else {
                0
            };
            out.more = more;
            out.count = self.sent as i64 + rest;
            out.header = Some(self.ctx.header(Revision(self.req.revision)));
            return Ok(out);
        }
        // etcd's adjustChunkLimit: toward one request's worth of bytes.
        let size = out.encoded_len();
        let target = self.ctx.max_request_bytes;
        if size < target / 2 {
            self.page = self.page.saturating_mul(2);
        } else if size > target.saturating_mul(2) {
            self.page /= 2;
        }
        self.page = self.page.clamp(1, self.total - self.sent);
        Ok(out)
    }
}
