//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact with etcd's
//! validation (`api/v3rpc/key.go`) and semantics.

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbKvService,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbTxnOpRequest, PbTxnRequest,
    PbTxnRequestOp, PbTxnResponse,
};
use tonic::{Request, Response, Status};

use crate::core::alarm;
use crate::core::api::range_stream::{self, RangeStream};
use crate::core::api::ApiContext;
use crate::core::auth::Identity;
use crate::core::errors::EtcdError;
use crate::core::mvcc::{self, ApplyResponse, KeyRange};
use crate::core::raft::proposal::Op;

/// The KV service.
pub struct KvService {
    /// Shared API state.
    pub ctx: ApiContext,
}

impl KvService {
    /// Serves a range (linearizable unless `serializable`).
    ///
    /// # Errors
    /// etcd's errors for the request (empty key, compacted, future revision,
    /// no leader, timeout).
    pub async fn do_range(&self, req: &PbRangeRequest) -> Result<PbRangeResponse, EtcdError> {
        if req.key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        if !req.serializable {
            self.ctx.reject_learner()?;
            self.ctx
                .node
                .linearizable_barrier(self.ctx.request_timeout)
                .await?;
        }
        let snapshot = self.ctx.storage.db.read_tx();
        let revs = mvcc::revisions(&snapshot, &self.ctx.storage)?;
        let mut resp = mvcc::range(&snapshot, &self.ctx.storage, revs, req)?;
        self.ctx.fill(&mut resp.header);
        Ok(resp)
    }

    async fn propose(&self, op: Op, who: &Identity) -> Result<ApplyResponse, EtcdError> {
        self.ctx.reject_learner()?;
        if op.encoded_len() > self.ctx.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        self.ctx
            .node
            .propose_as(op, who, self.ctx.request_timeout)
            .await
    }
}

#[tonic::async_trait]
impl PbKvService for KvService {
    async fn range(
        &self,
        request: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        let who = self.ctx.identity(&request).await?;
        if request.get_ref().key.is_empty() {
            return Err(EtcdError::EmptyKey.into());
        }
        self.ctx.check_range(&who, request.get_ref())?;
        let resp = self.do_range(request.get_ref()).await?;
        // etcd's doSerialize: rights changed during the read → discard it.
        self.ctx.check_range(&who, request.get_ref())?;
        Ok(Response::new(resp))
    }

    type RangeStreamStream = RangeStream;

    async fn range_stream(
        &self,
        request: Request<PbRangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        let who = self.ctx.identity(&request).await?;
        if request.get_ref().key.is_empty() {
            return Err(EtcdError::EmptyKey.into());
        }
        self.ctx.check_range(&who, request.get_ref())?;
        let stream = range_stream::start(self.ctx.clone(), who, request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn put(&self, request: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        let who = self.ctx.identity(&request).await?;
        let req = request.into_inner();
        check_put(&req)?;
        self.ctx.check_put(&who, &req)?;
        self.ctx.check_quota()?;
        match self.propose(Op::Put(req), &who).await? {
            ApplyResponse::Put(mut r) => {
                self.ctx.fill(&mut r.header);
                Ok(Response::new(r))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        let who = self.ctx.identity(&request).await?;
        let req = request.into_inner();
        if req.key.is_empty() {
            return Err(EtcdError::EmptyKey.into());
        }
        self.ctx.check_delete(&who, &req)?;
        match self.propose(Op::DeleteRange(req), &who).await? {
            ApplyResponse::DeleteRange(mut r) => {
                self.ctx.fill(&mut r.header);
                Ok(Response::new(r))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn txn(&self, request: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        let who = self.ctx.identity(&request).await?;
        let req = request.into_inner();
        check_txn(&req, self.ctx.max_txn_ops)?;
        self.ctx.check_txn(&who, &req)?;
        if alarm::txn_puts(&req) {
            self.ctx.check_quota()?;
        }
        match self.propose(Op::Txn(req), &who).await? {
            ApplyResponse::Txn(mut r) => {
                fill_txn(&self.ctx, &mut r);
                Ok(Response::new(r))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn compact(
        &self,
        request: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        // Root only (etcd 3.5.28, GHSA-q8m4-xhhv-38mg).
        let who = self.ctx.admin(&request).await?;
        let req = request.into_inner();
        let physical = req.physical;
        let revision = req.revision;
        match self.propose(Op::Compaction(req), &who).await? {
            ApplyResponse::Compaction(mut r) => {
                if physical {
                    // etcd answers a physical compaction once the history is gone.
                    let mut done = self.ctx.node.compact_done.clone();
                    let wait = done.wait_for(|d| d.0 >= revision);
                    tokio::time::timeout(self.ctx.request_timeout, wait)
                        .await
                        .map_err(|_| EtcdError::Timeout)?
                        .map_err(|_| EtcdError::Stopped)?;
                }
                self.ctx.fill(&mut r.header);
                Ok(Response::new(r))
            }
            other => Err(unexpected(&other)),
        }
    }
}

/// Fills the txn's own header; the responses inside keep only their
/// revision, as etcd's do.
fn fill_txn(ctx: &ApiContext, r: &mut PbTxnResponse) {
    ctx.fill(&mut r.header);
}

fn unexpected(r: &ApplyResponse) -> Status {
    EtcdError::Internal(format!("unexpected apply response {r:?}")).into()
}

/// etcd's `checkPutRequest`.
fn check_put(r: &PbPutRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

/// Most transactions nested below a request's top-level one (the Raft
/// log format's limit, see `raft::proposal`).
pub use crate::core::raft::proposal::MAX_TXN_NESTING;

/// etcd's `checkTxnRequest` + `checkIntervals`: op counts (with nested
/// levels' budgets as etcd computes them), each op's own checks, nesting
/// depth, and no key written twice in one branch.
///
/// # Errors
/// [`EtcdError::TooManyOps`], [`EtcdError::EmptyKey`],
/// [`EtcdError::KeyNotFound`] (an op with no request),
/// [`EtcdError::ValueProvided`], [`EtcdError::LeaseProvided`],
/// [`EtcdError::TxnTooDeep`] or [`EtcdError::DuplicateKey`].
pub fn check_txn(r: &PbTxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    check_txn_ops(r, max_ops, 0)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// etcd's `checkTxnRequest`: the widest of `compare`, `success` and
/// `failure` counts against `budget`; every op of both branches is checked
/// with the budget left (`budget - width`), so a nested txn may be at most
/// that wide. `depth` counts the txns above this one.
fn check_txn_ops(r: &PbTxnRequest, budget: usize, depth: usize) -> Result<(), EtcdError> {
    let width = r.compare.len().max(r.success.len()).max(r.failure.len());
    if width > budget {
        return Err(EtcdError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in r.success.iter().chain(r.failure.iter()) {
        check_request_op(op, budget - width, depth)?;
    }
    Ok(())
}

/// etcd's `checkRequestOp`: an op with no request is refused with
/// "key not found", as etcd does.
fn check_request_op(op: &PbTxnRequestOp, budget: usize, depth: usize) -> Result<(), EtcdError> {
    match &op.request {
        Some(PbTxnOpRequest::RequestRange(x)) if x.key.is_empty() => Err(EtcdError::EmptyKey),
        Some(PbTxnOpRequest::RequestRange(_)) => Ok(()),
        Some(PbTxnOpRequest::RequestDeleteRange(x)) if x.key.is_empty() => Err(EtcdError::EmptyKey),
        Some(PbTxnOpRequest::RequestDeleteRange(_)) => Ok(()),
        Some(PbTxnOpRequest::RequestPut(x)) => check_put(x),
        Some(PbTxnOpRequest::RequestTxn(x)) => {
            if depth + 1 > MAX_TXN_NESTING {
                return Err(EtcdError::TxnTooDeep);
            }
            check_txn_ops(x, budget, depth + 1)
        }
        None => Err(EtcdError::KeyNotFound),
    }
}

/// Keys put and ranges deleted by a list of ops (with nested txns).
struct Writes {
    puts: Vec<Vec<u8>>,
    dels: Vec<KeyRange>,
}

impl Writes {
    fn deleted(&self, key: &[u8]) -> bool {
        self.dels.iter().any(|d| d.contains(key))
    }
}

fn check_intervals(ops: &[PbTxnRequestOp]) -> Result<Writes, EtcdError> {
    let mut w = Writes {
        puts: Vec::new(),
        dels: Vec::new(),
    };
    for op in ops {
        if let Some(PbTxnOpRequest::RequestDeleteRange(d)) = &op.request {
            // etcd's interval for a range end of "\0" is [key, "\0"),
            // which holds no key: this check lets such a delete pass with
            // any put (the delete itself still runs from the key on).
            if d.range_end != [0] {
                w.dels.push(KeyRange::new(&d.key, &d.range_end));
            }
        }
    }
    for op in ops {
        let Some(PbTxnOpRequest::RequestTxn(t)) = &op.request else {
            continue;
        };
        let then = check_intervals(&t.success)?;
        let otherwise = check_intervals(&t.failure)?;
        for k in &then.puts {
            if w.puts.contains(k) || w.deleted(k) {
                return Err(EtcdError::DuplicateKey);
            }
            w.puts.push(k.clone());
        }
        for k in &otherwise.puts {
            // The two branches exclude each other, so the same key in both is fine.
            if (w.puts.contains(k) && !then.puts.contains(k)) || w.deleted(k) {
                return Err(EtcdError::DuplicateKey);
            }
            if !w.puts.contains(k) {
                w.puts.push(k.clone());
            }
        }
        // As etcd: a nested txn's deletes apply to the puts of the
        // siblings after it.
        w.dels.extend(then.dels);
        w.dels.extend(otherwise.dels);
    }
    for op in ops {
        if let Some(PbTxnOpRequest::RequestPut(p)) = &op.request {
            if w.puts.contains(&p.key) || w.deleted(&p.key) {
                return Err(EtcdError::DuplicateKey);
            }
            w.puts.push(p.key.clone());
        }
    }
    Ok(w)
}
