//! `v3lockpb.Lock`: etcd's distributed lock (`etcdserver/api/v3lock` over
//! `clientv3/concurrency`'s mutex), on this member's own KV API. `Lock`
//! puts `name/<lease hex>` with the lease (unless that key exists) and
//! waits until every key under `name/` created before it is deleted; the
//! lock is held until `Unlock` deletes the key or the lease ends (a lock
//! without a lease gets one of 60 s, not kept alive). Errors come back as
//! etcd's server sends them: the KV layer's status, e.g. Unknown
//! "etcdserver: requested lease not found" for an unknown lease.

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use tonic::{Request, Response, Status};

use crate::core::api::concurrency::pb::v3lockpb::{
    lock_server::Lock, LockRequest, LockResponse, UnlockRequest, UnlockResponse,
};
use crate::core::api::concurrency::{
    as_unknown, first_created, unknown, wait_deletes, DeleteOnDrop, Session,
};
use crate::core::api::ApiContext;
use crate::core::types::Revision;

/// The Lock service.
pub struct LockService {
    /// Shared API state.
    pub ctx: ApiContext,
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let (name, lease) = (&request.get_ref().name, request.get_ref().lease);
        self.ctx.check_named(&request, name, true, lease).await?;
        let req = request.into_inner();
        let Session {
            mut client,
            lease,
            prefix,
            key,
        } = Session::open(&self.ctx, &req.name, req.lease).await?;
        // Create the key unless this lease already holds it; either way,
        // read the key created first under the prefix.
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(key.clone(), "", Some(PutOptions::new().with_lease(lease))),
                TxnOp::get(prefix.clone(), Some(first_created())),
            ])
            .or_else([
                TxnOp::get(key.clone(), None),
                TxnOp::get(prefix.clone(), Some(first_created())),
            ]);
        let resp = client.txn(txn).await.map_err(unknown)?;
        let mut revision = resp.header().map_or(0, |h| h.revision());
        let ops = resp.op_responses();
        let my_rev = if resp.succeeded() {
            revision
        } else {
            match ops.first() {
                Some(TxnOpResponse::Get(g)) => g.kvs().first().map_or(0, |kv| kv.create_revision()),
                _ => 0,
            }
        };
        let owner = match ops.get(1) {
            Some(TxnOpResponse::Get(g)) => g.kvs().first().map(|kv| kv.create_revision()),
            _ => None,
        };
        if owner.is_some_and(|created| created != my_rev) {
            // Someone holds it: wait for every earlier waiter to go, and
            // give the key up if this caller goes away meanwhile.
            let guard = DeleteOnDrop::new(client.clone(), key.clone());
            revision = wait_deletes(&mut client, &prefix, my_rev - 1)
                .await
                .map_err(as_unknown)?;
            guard.disarm();
        }
        Ok(Response::new(LockResponse {
            header: Some(self.ctx.header(Revision(revision))),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        self.ctx
            .check_held(&request, &request.get_ref().key, 0)
            .await?;
        let req = request.into_inner();
        let mut client = self.ctx.self_client().await?;
        let resp = client.delete(req.key, None).await.map_err(unknown)?;
        let revision = resp.header().map_or(0, |h| h.revision());
        Ok(Response::new(UnlockResponse {
            header: Some(self.ctx.header(Revision(revision))),
        }))
    }
}
