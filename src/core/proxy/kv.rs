//! The proxy's `etcdserverpb.KV`: every call forwarded with the caller's
//! token and deadline, keys moved into `--namespace`, and serializable
//! reads answered from the [`ReadCache`] when it can (linearizable reads
//! always reach the cluster).

use std::pin::Pin;
use std::sync::Arc;

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbKvService,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbRangeStreamResponse,
    PbTxnRequest, PbTxnResponse,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::core::proxy::cache::ReadCache;
use crate::core::proxy::namespace::Namespace;
use crate::core::proxy::upstream::{caller, Upstream};

/// The KV service of the proxy.
pub struct KvProxy {
    /// The cluster.
    pub upstream: Arc<Upstream>,
    /// `--namespace`.
    pub namespace: Namespace,
    /// The read cache (`None`: `--no-cache`).
    pub cache: Option<Arc<ReadCache>>,
}

impl KvProxy {
    /// Tells the cache about a write through the proxy (read-your-writes).
    fn wrote(&self, header: Option<&etcd_client::proto::PbResponseHeader>) {
        if let (Some(cache), Some(h)) = (&self.cache, header) {
            cache.wrote(h.revision);
        }
    }
}

type RangeStream = Pin<Box<dyn Stream<Item = Result<PbRangeStreamResponse, Status>> + Send>>;

/// A request with its message replaced, metadata and extensions kept.
fn with<T, U>(request: Request<T>, f: impl FnOnce(T) -> U) -> Request<U> {
    let (metadata, extensions, message) = request.into_parts();
    Request::from_parts(metadata, extensions, f(message))
}

#[tonic::async_trait]
impl PbKvService for KvProxy {
    async fn range(
        &self,
        request: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        let who = caller(request.metadata());
        let request = with(request, |mut r| {
            self.namespace.range_in(&mut r);
            r
        });
        let cache = self
            .cache
            .as_ref()
            .filter(|_| ReadCache::cacheable(request.get_ref()));
        if let Some(cache) = cache {
            if let Some(mut hit) = cache.get(&who, request.get_ref()) {
                self.namespace.range_out(&mut hit);
                return Ok(Response::new(hit));
            }
        }
        let asked = cache.map(|_| request.get_ref().clone());
        let mut resp: Response<PbRangeResponse> = self
            .upstream
            .unary("/etcdserverpb.KV/Range", request, true)
            .await?;
        if let (Some(cache), Some(asked)) = (cache, asked) {
            cache.put(&who, &asked, resp.get_ref());
        }
        self.namespace.range_out(resp.get_mut());
        Ok(resp)
    }

    type RangeStreamStream = RangeStream;

    async fn range_stream(
        &self,
        request: Request<PbRangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        let request = with(request, |mut r| {
            self.namespace.range_in(&mut r);
            r
        });
        let upstream = self
            .upstream
            .server_streaming::<PbRangeRequest, PbRangeStreamResponse>(
                "/etcdserverpb.KV/RangeStream",
                request,
            )
            .await?
            .into_inner();
        let namespace = self.namespace.clone();
        let stream = upstream.map(move |chunk| {
            chunk.map(|mut c| {
                if let Some(r) = c.range_response.as_mut() {
                    namespace.range_out(r);
                }
                c
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn put(&self, request: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        let request = with(request, |mut r| {
            self.namespace.put_in(&mut r);
            r
        });
        let mut resp: Response<PbPutResponse> = self
            .upstream
            .unary("/etcdserverpb.KV/Put", request, false)
            .await?;
        self.wrote(resp.get_ref().header.as_ref());
        self.namespace.put_out(resp.get_mut());
        Ok(resp)
    }

    async fn delete_range(
        &self,
        request: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        let request = with(request, |mut r| {
            self.namespace.delete_in(&mut r);
            r
        });
        let mut resp: Response<PbDeleteResponse> = self
            .upstream
            .unary("/etcdserverpb.KV/DeleteRange", request, false)
            .await?;
        self.wrote(resp.get_ref().header.as_ref());
        self.namespace.delete_out(resp.get_mut());
        Ok(resp)
    }

    async fn txn(&self, request: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        let request = with(request, |mut r| {
            self.namespace.txn_in(&mut r);
            r
        });
        let mut resp: Response<PbTxnResponse> = self
            .upstream
            .unary("/etcdserverpb.KV/Txn", request, false)
            .await?;
        self.wrote(resp.get_ref().header.as_ref());
        self.namespace.txn_out(resp.get_mut());
        Ok(resp)
    }

    async fn compact(
        &self,
        request: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        self.upstream
            .unary("/etcdserverpb.KV/Compact", request, false)
            .await
    }
}
