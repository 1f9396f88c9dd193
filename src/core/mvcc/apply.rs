//! [`Applier`]: every write of one Raft entry (`Put`, `DeleteRange`, `Txn`,
//! `Compact`, lease grant/revoke), inside the Raft task's transaction, with
//! etcd's revision rules (one main revision per entry that writes, sub
//! revisions inside it).

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbCompare, PbCompareTarget, PbDeleteRequest,
    PbDeleteResponse, PbEvent, PbKeyValue, PbPutRequest, PbPutResponse, PbResponseOp,
    PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest, PbTxnResponse,
};
use fjall::{Readable, SingleWriterWriteTx};
use prost::Message as _;

use crate::core::errors::EtcdError;
use crate::core::metrics::METRICS;
use crate::core::mvcc::compare::compare_kv;
use crate::core::mvcc::keys::{
    escape_key, lease_key, rev_key, CurrentRecord, KeyRange, EVENT_DELETE, EVENT_PUT, HIST_DELETE,
    HIST_PUT,
};
use crate::core::mvcc::read::{
    current_kv, current_record, header, range, revisions, scan_current, Revisions,
};
use crate::core::storage::{self, Storage};

/// Applies the KV operations of one Raft entry inside its write transaction.
///
/// Every write of the entry shares one main revision (with increasing sub
/// revisions), as in etcd; an entry that writes nothing does not bump the
/// revision.
pub struct Applier<'a, 'tx> {
    /// The entry's transaction (reads see its own writes).
    tx: &'a mut SingleWriterWriteTx<'tx>,
    /// Keyspace handles.
    s: &'a Storage,
    /// Revision counters before this entry.
    revs: Revisions,
    /// Sub revision of the next write in this entry.
    sub: i64,
    /// Events written by this entry, in order (for watchers).
    pub events: Vec<PbEvent>,
}

impl<'a, 'tx> Applier<'a, 'tx> {
    /// Starts applying an entry on `tx`.
    ///
    /// # Errors
    /// A storage error.
    pub fn new(tx: &'a mut SingleWriterWriteTx<'tx>, s: &'a Storage) -> Result<Self, EtcdError> {
        let revs = revisions(&*tx, s)?;
        Ok(Self::with_revisions(tx, s, revs))
    }

    /// Starts applying an entry on `tx` whose revision counters the caller
    /// already knows (`revs` as [`revisions`] would read them from `tx`;
    /// the Raft task carries them from entry to entry of one batch, see
    /// [`Self::revisions_after`]).
    pub fn with_revisions(
        tx: &'a mut SingleWriterWriteTx<'tx>,
        s: &'a Storage,
        revs: Revisions,
    ) -> Self {
        Self {
            tx,
            s,
            revs,
            sub: 0,
            events: Vec::new(),
        }
    }

    /// The revision counters after this entry (after [`Self::finish`]): what
    /// [`revisions`] would read from the transaction then.
    pub fn revisions_after(&self) -> Revisions {
        Revisions {
            current: self.revision(),
            compacted: self.revs.compacted,
        }
    }

    /// The revision visible after this entry.
    pub fn revision(&self) -> i64 {
        if self.sub > 0 {
            self.revs.current + 1
        } else {
            self.revs.current
        }
    }

    /// Records the new revision (call once, after the operation succeeded).
    pub fn finish(&mut self) {
        if self.sub > 0 {
            self.tx.insert(
                &self.s.meta,
                storage::META_REVISION,
                (self.revs.current + 1).to_be_bytes(),
            );
        }
    }

    fn current(&self, key: &[u8]) -> Result<Option<CurrentRecord>, EtcdError> {
        current_record(&*self.tx, self.s, key)
    }

    /// The key-value of `key` whose record is `rec`, with its value (one
    /// lookup in `rev`) only when `value` is set.
    fn current_kv(
        &self,
        key: &[u8],
        rec: CurrentRecord,
        value: bool,
    ) -> Result<PbKeyValue, EtcdError> {
        current_kv(&*self.tx, self.s, key.to_vec(), rec, value)
    }

    /// Writes one change to history. Events carry no `prev_kv`: the watch
    /// dispatcher reads it from history for the watchers that ask (etcd's
    /// watch stream reads it at send time too).
    fn write_event(&mut self, kind: u8, kv: PbKeyValue) {
        let main = self.revs.current + 1;
        let rk = rev_key(main, self.sub);
        self.sub += 1;
        let mut hk = escape_key(&kv.key);
        hk.extend_from_slice(&rk);
        self.tx.insert(&self.s.hist, hk, [kind]);
        let event = PbEvent {
            r#type: if kind == HIST_PUT {
                EVENT_PUT
            } else {
                EVENT_DELETE
            },
            kv: Some(kv),
            prev_kv: None,
        };
        self.tx.insert(&self.s.rev, rk, event.encode_to_vec());
        self.events.push(event);
    }

    /// Checks a put against the state before it runs (etcd checks a whole
    /// txn branch before writing anything).
    fn check_put(&self, req: &PbPutRequest) -> Result<(), EtcdError> {
        if (req.ignore_value || req.ignore_lease) && self.current(&req.key)?.is_none() {
            return Err(EtcdError::KeyNotFound);
        }
        if req.lease != 0 && !req.ignore_lease && !self.lease_exists(req.lease)? {
            return Err(EtcdError::LeaseNotFound);
        }
        Ok(())
    }

    /// `Put` (etcd's `applierV3backend.Put`).
    ///
    /// # Errors
    /// [`EtcdError::KeyNotFound`] for `ignore_value`/`ignore_lease` on a missing
    /// key, [`EtcdError::LeaseNotFound`] for an unknown lease, storage errors.
    pub fn put(&mut self, req: &PbPutRequest) -> Result<PbPutResponse, EtcdError> {
        self.check_put(req)?;
        let prev = self.current(&req.key)?;
        // The previous value is read from history only when it is needed.
        let prev_kv = match prev {
            Some(rec) if req.prev_kv || req.ignore_value => {
                Some(self.current_kv(&req.key, rec, true)?)
            }
            _ => None,
        };
        let main = self.revs.current + 1;
        let value = match (&prev_kv, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let record = CurrentRecord {
            create_revision: prev.as_ref().map_or(main, |p| p.create_revision),
            mod_revision: main,
            mod_sub: self.sub,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
        };
        let old_lease = prev.as_ref().map_or(0, |p| p.lease);
        if old_lease != lease {
            if old_lease != 0 {
                self.tx
                    .remove(&self.s.lease_keys, lease_key(old_lease, &req.key));
            }
            if lease != 0 {
                self.tx
                    .insert(&self.s.lease_keys, lease_key(lease, &req.key), []);
            }
        }
        self.tx
            .insert(&self.s.kv, req.key.clone(), record.encode_to_vec());
        self.write_event(HIST_PUT, record.to_kv(req.key.clone(), value));
        METRICS.puts.inc();
        Ok(PbPutResponse {
            header: Some(header(main)),
            prev_kv: if req.prev_kv { prev_kv } else { None },
        })
    }

    /// `DeleteRange` (etcd's `applierV3backend.DeleteRange`).
    ///
    /// # Errors
    /// Storage errors.
    pub fn delete_range(&mut self, req: &PbDeleteRequest) -> Result<PbDeleteResponse, EtcdError> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let mut doomed = Vec::new();
        if !range.is_empty() {
            scan_current(&*self.tx, self.s, &range, req.prev_kv, &mut |kv| {
                doomed.push(kv)
            })?;
        }
        let main = self.revs.current + 1;
        for kv in &doomed {
            self.tx.remove(&self.s.kv, kv.key.clone());
            if kv.lease != 0 {
                self.tx
                    .remove(&self.s.lease_keys, lease_key(kv.lease, &kv.key));
            }
            self.write_event(
                HIST_DELETE,
                PbKeyValue {
                    key: kv.key.clone(),
                    mod_revision: main,
                    ..Default::default()
                },
            );
        }
        METRICS.deletes.inc();
        Ok(PbDeleteResponse {
            header: Some(header(self.revision())),
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        })
    }

    /// `Txn` (etcd's `applierV3backend.Txn`): every compare on the chosen
    /// path, nested ones included, is evaluated first against the store as
    /// it was before the transaction (etcd's `compareToPath`), and so are the
    /// checks of its operations; then the operations run in order, each
    /// seeing the writes before it.
    ///
    /// # Errors
    /// The first failed check on the chosen path (nothing is written then),
    /// storage errors.
    pub fn txn(&mut self, req: &PbTxnRequest) -> Result<PbTxnResponse, EtcdError> {
        let mut path = Vec::new();
        self.compare_path(req, &mut path)?;
        let mut at = 0;
        self.check_path(req, &path, &mut at)?;
        let mut at = 0;
        METRICS.txns.inc();
        self.exec_txn(req, &path, &mut at)
    }

    fn compare_path(&self, req: &PbTxnRequest, path: &mut Vec<bool>) -> Result<(), EtcdError> {
        let mut ok = true;
        for c in &req.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &req.success } else { &req.failure } {
            if let Some(PbTxnOpRequest::RequestTxn(t)) = &op.request {
                self.compare_path(t, path)?;
            }
        }
        Ok(())
    }

    fn check_path(
        &self,
        req: &PbTxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> Result<(), EtcdError> {
        let ok = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        for op in if ok { &req.success } else { &req.failure } {
            match &op.request {
                Some(PbTxnOpRequest::RequestPut(r)) => self.check_put(r)?,
                Some(PbTxnOpRequest::RequestRange(r)) => {
                    if r.revision > self.revs.current {
                        return Err(EtcdError::FutureRevision);
                    }
                    if r.revision > 0 && r.revision < self.revs.compacted {
                        return Err(EtcdError::Compacted);
                    }
                }
                Some(PbTxnOpRequest::RequestTxn(t)) => self.check_path(t, path, at)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn exec_txn(
        &mut self,
        req: &PbTxnRequest,
        path: &[bool],
        at: &mut usize,
    ) -> Result<PbTxnResponse, EtcdError> {
        let ok = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        let ops = if ok { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(PbTxnOpRequest::RequestRange(r)) => {
                    let revs = Revisions {
                        current: self.revision(),
                        compacted: self.revs.compacted,
                    };
                    PbTxnOpResponse::ResponseRange(range(&*self.tx, self.s, revs, r)?)
                }
                Some(PbTxnOpRequest::RequestPut(r)) => PbTxnOpResponse::ResponsePut(self.put(r)?),
                Some(PbTxnOpRequest::RequestDeleteRange(r)) => {
                    PbTxnOpResponse::ResponseDeleteRange(self.delete_range(r)?)
                }
                Some(PbTxnOpRequest::RequestTxn(r)) => {
                    PbTxnOpResponse::ResponseTxn(self.exec_txn(r, path, at)?)
                }
                None => continue,
            };
            responses.push(PbResponseOp {
                response: Some(response),
            });
        }
        Ok(PbTxnResponse {
            header: Some(header(self.revision())),
            succeeded: ok,
            responses,
        })
    }

    /// etcd's `applyCompare`: every key in the compare's range must satisfy
    /// it; a missing key compares as a zero key-value, except on VALUE, which
    /// then fails.
    fn compare(&self, c: &PbCompare) -> Result<bool, EtcdError> {
        let range = KeyRange::new(&c.key, &c.range_end);
        let mut kvs = Vec::new();
        if !range.is_empty() {
            let values = c.target == PbCompareTarget::Value as i32;
            scan_current(&*self.tx, self.s, &range, values, &mut |kv| kvs.push(kv))?;
        }
        if kvs.is_empty() {
            if c.target == PbCompareTarget::Value as i32 {
                return Ok(false);
            }
            return Ok(compare_kv(c, &PbKeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
    }

    fn lease_exists(&self, id: i64) -> Result<bool, EtcdError> {
        Ok(self.tx.get(&self.s.leases, id.to_be_bytes())?.is_some())
    }

    /// `LeaseGrant` with the id already chosen: records the lease.
    ///
    /// # Errors
    /// [`EtcdError::LeaseExists`] when the id is taken, storage errors.
    pub fn lease_grant(&mut self, id: i64, ttl: i64) -> Result<(), EtcdError> {
        if self.lease_exists(id)? {
            return Err(EtcdError::LeaseExists);
        }
        self.tx
            .insert(&self.s.leases, id.to_be_bytes(), ttl.to_be_bytes());
        Ok(())
    }

    /// The granted TTL of a lease, seconds.
    ///
    /// # Errors
    /// [`EtcdError::LeaseNotFound`], storage errors.
    pub fn lease_ttl(&self, id: i64) -> Result<i64, EtcdError> {
        match self.tx.get(&self.s.leases, id.to_be_bytes())? {
            Some(v) => Ok(storage::be_i64(&v)),
            None => Err(EtcdError::LeaseNotFound),
        }
    }

    /// `LeaseRevoke`: deletes the lease and every key attached to it, in one
    /// revision (with delete events), as etcd's `lessor.Revoke`.
    ///
    /// # Errors
    /// [`EtcdError::LeaseNotFound`], storage errors.
    pub fn lease_revoke(&mut self, id: i64) -> Result<(), EtcdError> {
        if !self.lease_exists(id)? {
            return Err(EtcdError::LeaseNotFound);
        }
        let prefix = id.to_be_bytes();
        let mut keys = Vec::new();
        for item in self.tx.prefix(&self.s.lease_keys, prefix) {
            let (k, _) = item.into_inner()?;
            keys.push(k[8..].to_vec());
        }
        let main = self.revs.current + 1;
        for key in keys {
            self.tx.remove(&self.s.lease_keys, lease_key(id, &key));
            if self.current(&key)?.is_some() {
                self.tx.remove(&self.s.kv, key.clone());
                self.write_event(
                    HIST_DELETE,
                    PbKeyValue {
                        key,
                        mod_revision: main,
                        ..Default::default()
                    },
                );
            }
        }
        self.tx.remove(&self.s.leases, id.to_be_bytes());
        Ok(())
    }

    /// `Compact` (etcd's `kvstore.compact`): records the compact revision;
    /// the history below it is removed afterwards by [`compact_history`].
    ///
    /// # Errors
    /// [`EtcdError::Compacted`] at or below the current compact revision,
    /// [`EtcdError::FutureRevision`] above the current revision.
    pub fn compact(
        &mut self,
        req: &PbCompactionRequest,
    ) -> Result<PbCompactionResponse, EtcdError> {
        if req.revision <= self.revs.compacted {
            return Err(EtcdError::Compacted);
        }
        if req.revision > self.revs.current {
            return Err(EtcdError::FutureRevision);
        }
        self.tx.insert(
            &self.s.meta,
            storage::META_COMPACT_REVISION,
            req.revision.to_be_bytes(),
        );
        self.revs.compacted = req.revision;
        Ok(PbCompactionResponse {
            header: Some(header(self.revs.current)),
        })
    }
}
