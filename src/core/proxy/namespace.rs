//! `--namespace`: the proxy's clients see the keys under a prefix as the
//! whole keyspace (etcd's `clientv3/namespace`, which its grpc-proxy
//! uses). Keys and ranges get the prefix on the way in and lose it on the
//! way out; a range to the end of the keyspace (`range_end` `\0`) ends at
//! the end of the prefix.

use etcd_client::proto::{
    PbCompare, PbDeleteRequest, PbDeleteResponse, PbEvent, PbKeyValue, PbPutRequest, PbPutResponse,
    PbRangeRequest, PbRangeResponse, PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest, PbTxnResponse,
};

use crate::core::mvcc::keys::prefix_end;

/// A key prefix (empty: no namespace, every method is the identity).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace(pub Vec<u8>);

impl Namespace {
    /// Whether there is a prefix at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `key` inside the namespace.
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.0.len() + key.len());
        k.extend_from_slice(&self.0);
        k.extend_from_slice(key);
        k
    }

    /// `[key, end)` inside the namespace (etcd's `prefixInterval`): an
    /// empty `end` stays empty (one key); `\0` (to the end) becomes the
    /// end of the prefix.
    pub fn range(&self, key: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
        if self.is_empty() {
            return (key.to_vec(), end.to_vec());
        }
        let end = match end {
            [] => Vec::new(),
            [0] => prefix_end(&self.0),
            e => self.key(e),
        };
        (self.key(key), end)
    }

    /// Removes the prefix from a key the member returned.
    pub fn strip(&self, key: &mut Vec<u8>) {
        if !self.is_empty() && key.starts_with(&self.0) {
            key.drain(..self.0.len());
        }
    }

    /// Whether a member's key lies inside the namespace.
    pub fn contains(&self, key: &[u8]) -> bool {
        key.starts_with(&self.0)
    }

    fn kv_out(&self, kv: &mut PbKeyValue) {
        self.strip(&mut kv.key);
    }

    /// A range request moved into the namespace.
    pub fn range_in(&self, r: &mut PbRangeRequest) {
        (r.key, r.range_end) = self.range(&r.key, &r.range_end);
    }

    /// A range response moved out of it.
    pub fn range_out(&self, r: &mut PbRangeResponse) {
        r.kvs.iter_mut().for_each(|kv| self.kv_out(kv));
    }

    /// A put moved into the namespace.
    pub fn put_in(&self, r: &mut PbPutRequest) {
        r.key = self.key(&r.key);
    }

    /// A put response moved out of it.
    pub fn put_out(&self, r: &mut PbPutResponse) {
        if let Some(kv) = r.prev_kv.as_mut() {
            self.kv_out(kv);
        }
    }

    /// A delete moved into the namespace.
    pub fn delete_in(&self, r: &mut PbDeleteRequest) {
        (r.key, r.range_end) = self.range(&r.key, &r.range_end);
    }

    /// A delete response moved out of it.
    pub fn delete_out(&self, r: &mut PbDeleteResponse) {
        r.prev_kvs.iter_mut().for_each(|kv| self.kv_out(kv));
    }

    fn compare_in(&self, c: &mut PbCompare) {
        (c.key, c.range_end) = self.range(&c.key, &c.range_end);
    }

    /// A transaction (compares and operations, nested ones too) moved into
    /// the namespace.
    pub fn txn_in(&self, t: &mut PbTxnRequest) {
        if self.is_empty() {
            return;
        }
        t.compare.iter_mut().for_each(|c| self.compare_in(c));
        for op in t.success.iter_mut().chain(t.failure.iter_mut()) {
            match op.request.as_mut() {
                Some(PbTxnOpRequest::RequestRange(r)) => self.range_in(r),
                Some(PbTxnOpRequest::RequestPut(r)) => self.put_in(r),
                Some(PbTxnOpRequest::RequestDeleteRange(r)) => self.delete_in(r),
                Some(PbTxnOpRequest::RequestTxn(t)) => self.txn_in(t),
                None => {}
            }
        }
    }

    /// A transaction response moved out of the namespace.
    pub fn txn_out(&self, t: &mut PbTxnResponse) {
        if self.is_empty() {
            return;
        }
        for op in &mut t.responses {
            match op.response.as_mut() {
                Some(PbTxnOpResponse::ResponseRange(r)) => self.range_out(r),
                Some(PbTxnOpResponse::ResponsePut(r)) => self.put_out(r),
                Some(PbTxnOpResponse::ResponseDeleteRange(r)) => self.delete_out(r),
                Some(PbTxnOpResponse::ResponseTxn(t)) => self.txn_out(t),
                None => {}
            }
        }
    }

    /// A watch event moved out of the namespace.
    pub fn event_out(&self, e: &mut PbEvent) {
        if let Some(kv) = e.kv.as_mut() {
            self.kv_out(kv);
        }
        if let Some(kv) = e.prev_kv.as_mut() {
            self.kv_out(kv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_stay_inside_the_prefix() {
        let ns = Namespace(b"app/".to_vec());
        assert_eq!(ns.range(b"a", b""), (b"app/a".to_vec(), Vec::new()));
        assert_eq!(ns.range(b"a", b"b"), (b"app/a".to_vec(), b"app/b".to_vec()));
        assert_eq!(
            ns.range(b"\0", b"\0"),
            (b"app/\0".to_vec(), b"app0".to_vec())
        );
        assert_eq!(ns.range(b"", b"\0"), (b"app/".to_vec(), b"app0".to_vec()));
        let mut k = b"app/x".to_vec();
        ns.strip(&mut k);
        assert_eq!(k, b"x");
        let none = Namespace::default();
        assert_eq!(none.range(b"a", b"\0"), (b"a".to_vec(), b"\0".to_vec()));
    }
}
