//! Unit tests of the state machine on a real (temporary) fjall database:
//! revisions, reads at past revisions, deletes, txn paths, leases and
//! compaction, each as etcd defines them.

use etcd_client::proto::{
    PbCompactionRequest, PbCompare, PbDeleteRequest, PbKeyValue, PbPutRequest, PbRangeRequest,
    PbTargetUnion, PbTxnOpRequest, PbTxnOpResponse, PbTxnRequest, PbTxnRequestOp,
};

use super::*;
use crate::core::errors::EtcdError;
use crate::core::storage::Storage;

fn store() -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = Storage::open(dir.path()).expect("open storage");
    (dir, s)
}

/// Applies one entry's worth of writes and commits them; returns what `f`
/// returned and the events the entry produced.
fn entry<T>(
    s: &Storage,
    f: impl FnOnce(&mut Applier<'_, '_>) -> Result<T, EtcdError>,
) -> (Result<T, EtcdError>, Vec<etcd_client::proto::PbEvent>) {
    let mut tx = s.db.write_tx();
    let (result, events) = {
        let mut a = Applier::new(&mut tx, s).expect("applier");
        let result = f(&mut a);
        if result.is_ok() {
            a.finish();
        }
        (result, std::mem::take(&mut a.events))
    };
    tx.commit().expect("commit");
    (result, events)
}

fn put(key: &str, value: &str) -> PbPutRequest {
    PbPutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn get_at(
    s: &Storage,
    key: &str,
    end: &str,
    revision: i64,
) -> Result<Vec<(String, String)>, EtcdError> {
    let snapshot = s.db.read_tx();
    let revs = revisions(&snapshot, s)?;
    let resp = range(
        &snapshot,
        s,
        revs,
        &PbRangeRequest {
            key: key.into(),
            range_end: end.into(),
            revision,
            ..Default::default()
        },
    )?;
    Ok(resp
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect())
}

fn current(s: &Storage) -> i64 {
    revisions(&s.db.read_tx(), s).expect("revisions").current
}

#[test]
fn puts_take_one_revision_each_and_count_versions() {
    let (_d, s) = store();
    assert_eq!(current(&s), 1, "an empty store is at revision 1");
    entry(&s, |a| a.put(&put("a", "1"))).0.expect("put");
    entry(&s, |a| a.put(&put("a", "2"))).0.expect("put");
    entry(&s, |a| a.put(&put("b", "1"))).0.expect("put");
    assert_eq!(current(&s), 4);
    let snapshot = s.db.read_tx();
    let revs = revisions(&snapshot, &s).expect("revs");
    let resp = range(
        &snapshot,
        &s,
        revs,
        &PbRangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        },
    )
    .expect("range");
    let kv = &resp.kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
}

#[test]
fn reads_at_a_past_revision_see_that_revision() {
    let (_d, s) = store();
    entry(&s, |a| a.put(&put("k", "one"))).0.expect("put");
    entry(&s, |a| a.put(&put("k", "two"))).0.expect("put");
    entry(&s, |a| {
        a.delete_range(&PbDeleteRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
    })
    .0
    .expect("delete");
    assert_eq!(
        get_at(&s, "k", "", 2).expect("at 2"),
        [("k".into(), "one".into())]
    );
    assert_eq!(
        get_at(&s, "k", "", 3).expect("at 3"),
        [("k".into(), "two".into())]
    );
    assert!(get_at(&s, "k", "", 4).expect("at 4").is_empty());
    assert!(get_at(&s, "k", "", 0).expect("current").is_empty());
    assert_eq!(get_at(&s, "k", "", 5), Err(EtcdError::FutureRevision));
}

#[test]
fn delete_range_deletes_the_interval_in_one_revision_with_prev_values() {
    let (_d, s) = store();
    for k in ["a", "b", "c"] {
        entry(&s, |a| a.put(&put(k, k))).0.expect("put");
    }
    let (resp, events) = entry(&s, |a| {
        a.delete_range(&PbDeleteRequest {
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            prev_kv: true,
        })
    });
    let resp = resp.expect("delete");
    assert_eq!(resp.deleted, 2);
    assert_eq!(events.len(), 2);
    assert!(events
        .iter()
        .all(|e| e.r#type == EVENT_DELETE && e.kv.as_ref().map(|kv| kv.mod_revision) == Some(5)));
    // The previous values come back in the response; events leave without
    // them (the watch dispatcher reads them for watchers that ask).
    let prev: Vec<(Vec<u8>, Vec<u8>, i64)> = resp
        .prev_kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone(), kv.mod_revision))
        .collect();
    assert_eq!(
        prev,
        [
            (b"a".to_vec(), b"a".to_vec(), 2),
            (b"b".to_vec(), b"b".to_vec(), 3)
        ]
    );
    assert!(events.iter().all(|e| e.prev_kv.is_none()));
    assert_eq!(
        get_at(&s, "a", "\u{0}", 0).expect("rest"),
        [("c".into(), "c".into())]
    );
    // A reversed interval deletes nothing and takes no revision.
    let (resp, events) = entry(&s, |a| {
        a.delete_range(&PbDeleteRequest {
            key: b"z".to_vec(),
            range_end: b"a".to_vec(),
            prev_kv: false,
        })
    });
    assert_eq!((resp.expect("delete").deleted, events.len()), (0, 0));
    assert_eq!(current(&s), 5);
}

#[test]
fn txn_takes_the_path_its_compares_choose_nested_ones_included() {
    let (_d, s) = store();
    entry(&s, |a| a.put(&put("x", "1"))).0.expect("put");
    let version_is = |key: &str, v: i64| PbCompare {
        result: 0, // EQUAL
        target: etcd_client::proto::PbCompareTarget::Version as i32,
        key: key.into(),
        range_end: Vec::new(),
        target_union: Some(PbTargetUnion::Version(v)),
    };
    let op = |r: PbTxnOpRequest| PbTxnRequestOp { request: Some(r) };
    let txn = PbTxnRequest {
        compare: vec![version_is("x", 1)],
        success: vec![op(PbTxnOpRequest::RequestTxn(PbTxnRequest {
            compare: vec![version_is("y", 1)],
            success: vec![op(PbTxnOpRequest::RequestPut(put("inner", "then")))],
            failure: vec![op(PbTxnOpRequest::RequestPut(put("inner", "else")))],
        }))],
        failure: vec![op(PbTxnOpRequest::RequestPut(put("outer", "else")))],
    };
    let resp = entry(&s, |a| a.txn(&txn)).0.expect("txn");
    assert!(resp.succeeded);
    let Some(PbTxnOpResponse::ResponseTxn(inner)) = &resp.responses[0].response else {
        panic!("nested response expected: {resp:?}");
    };
    assert!(
        !inner.succeeded,
        "y does not exist, so the nested txn fails"
    );
    assert_eq!(
        get_at(&s, "inner", "", 0).expect("get"),
        [("inner".into(), "else".into())]
    );
    assert!(get_at(&s, "outer", "", 0).expect("get").is_empty());
    // A failed check on the chosen path writes nothing at all.
    let bad = PbTxnRequest {
        success: vec![
            op(PbTxnOpRequest::RequestPut(put("first", "1"))),
            op(PbTxnOpRequest::RequestPut(PbPutRequest {
                key: b"second".to_vec(),
                lease: 99,
                ..Default::default()
            })),
        ],
        ..Default::default()
    };
    let before = current(&s);
    assert_eq!(
        entry(&s, |a| a.txn(&bad)).0.err(),
        Some(EtcdError::LeaseNotFound)
    );
    assert_eq!(current(&s), before);
    assert!(get_at(&s, "first", "", 0).expect("get").is_empty());
}

#[test]
fn revoking_a_lease_deletes_its_keys_in_one_revision() {
    let (_d, s) = store();
    entry(&s, |a| a.lease_grant(7, 60)).0.expect("grant");
    for k in ["l1", "l2"] {
        entry(&s, |a| {
            a.put(&PbPutRequest {
                key: k.into(),
                value: b"v".to_vec(),
                lease: 7,
                ..Default::default()
            })
        })
        .0
        .expect("put with lease");
    }
    assert_eq!(lease_keys(&s.db.read_tx(), &s, 7).expect("keys").len(), 2);
    let before = current(&s);
    let (r, events) = entry(&s, |a| a.lease_revoke(7));
    r.expect("revoke");
    assert_eq!(events.len(), 2);
    assert_eq!(current(&s), before + 1);
    assert!(get_at(&s, "l", "m", 0).expect("get").is_empty());
    assert_eq!(
        entry(&s, |a| a.lease_revoke(7)).0.err(),
        Some(EtcdError::LeaseNotFound)
    );
}

#[test]
fn compaction_removes_history_below_the_compact_revision_only() {
    let (_d, s) = store();
    for v in ["1", "2", "3"] {
        entry(&s, |a| a.put(&put("k", v))).0.expect("put");
    }
    // Revisions 2, 3, 4 hold k=1, 2, 3. Compact at 3.
    entry(&s, |a| {
        a.compact(&PbCompactionRequest {
            revision: 3,
            physical: false,
        })
    })
    .0
    .expect("compact");
    compaction::compact_history(&s, 3, 1).expect("compact history");
    assert_eq!(get_at(&s, "k", "", 2), Err(EtcdError::Compacted));
    assert_eq!(
        get_at(&s, "k", "", 3).expect("at 3"),
        [("k".into(), "2".into())]
    );
    let history: Vec<i64> = read::history(&s.db.read_tx(), &s, 1, 10)
        .map(|r| r.expect("history").0)
        .collect();
    assert_eq!(history, [3, 4], "revision 2 is gone, 3 is the value at 3");
    assert_eq!(
        entry(&s, |a| {
            a.compact(&PbCompactionRequest {
                revision: 3,
                physical: false,
            })
        })
        .0
        .err(),
        Some(EtcdError::Compacted)
    );
}

#[test]
fn escaped_keys_keep_order_and_never_prefix_each_other() {
    let keys: [&[u8]; 5] = [b"", b"\x00", b"\x00\x01", b"a", b"a\x00"];
    let escaped: Vec<Vec<u8>> = keys.iter().map(|k| escape_key(k)).collect();
    assert!(escaped.windows(2).all(|w| w[0] < w[1]), "{escaped:?}");
    for (i, a) in escaped.iter().enumerate() {
        for (j, b) in escaped.iter().enumerate() {
            assert!(i == j || !b.starts_with(a), "{a:?} prefixes {b:?}");
        }
    }
}

/// Every live key with its counters and value, at the current revision.
fn everything(s: &Storage) -> Vec<PbKeyValue> {
    let snapshot = s.db.read_tx();
    let revs = revisions(&snapshot, s).expect("revisions");
    let req = PbRangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    range(&snapshot, s, revs, &req).expect("range").kvs
}

#[test]
fn a_format_1_data_dir_is_upgraded_in_place_and_a_newer_format_is_refused() {
    use crate::core::storage::format::{self, CurrentRecord, META_STORAGE_FORMAT};
    let dir = tempfile::tempdir().expect("temp dir");
    let before = {
        let s = Storage::open(dir.path()).expect("open");
        for (k, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
            entry(&s, |a| a.put(&put(k, v))).0.expect("put");
        }
        // Two puts in one revision: sub revisions 0 and 1.
        let op = |k: &str| PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestPut(put(k, &k.repeat(3)))),
        };
        let txn = PbTxnRequest {
            success: vec![op("c"), op("d")],
            ..Default::default()
        };
        entry(&s, |a| a.txn(&txn)).0.expect("txn");
        let before = everything(&s);
        // Rewrite `kv` as format 1 left it: whole key-values, no format key.
        let mut tx = s.db.write_tx();
        for kv in &before {
            tx.insert(&s.kv, kv.key.clone(), prost::Message::encode_to_vec(kv));
        }
        tx.remove(&s.meta, META_STORAGE_FORMAT);
        tx.commit().expect("commit");
        s.sync().expect("sync");
        before
    };
    assert_eq!(before.len(), 4);
    {
        let s = Storage::open(dir.path()).expect("upgrade");
        assert_eq!(
            format::recorded(&s).expect("format"),
            format::STORAGE_FORMAT
        );
        assert_eq!(everything(&s), before);
        let d = fjall::Readable::get(&s.db.read_tx(), &s.kv, b"d")
            .expect("get")
            .expect("d");
        let d = <CurrentRecord as prost::Message>::decode(d.as_ref()).expect("record");
        assert_eq!((d.mod_revision, d.mod_sub), (5, 1));
    }
    // A format this kvd does not know (a newer kvd's).
    let err = refused_after(dir.path(), |tx, s| {
        tx.insert(&s.meta, META_STORAGE_FORMAT, 3u64.to_be_bytes())
    });
    assert!(err.contains("storage format 3"), "{err}");
}

/// Opens the data dir in `dir`, changes its `meta` with `change`, and
/// returns why reopening it fails.
fn refused_after(
    dir: &std::path::Path,
    change: impl FnOnce(&mut fjall::SingleWriterWriteTx<'_>, &Storage),
) -> String {
    {
        let s = Storage::open(dir).expect("open");
        let mut tx = s.db.write_tx();
        change(&mut tx, &s);
        tx.commit().expect("commit");
        s.sync().expect("sync");
    }
    match Storage::open(dir) {
        Ok(_) => panic!("{} opened", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_format_1_data_dir_with_a_half_applied_snapshot_is_refused() {
    use crate::core::storage::format::META_STORAGE_FORMAT;
    let dir = tempfile::tempdir().expect("temp dir");
    let err = refused_after(dir.path(), |tx, s| {
        tx.remove(&s.meta, META_STORAGE_FORMAT);
        tx.insert(
            &s.meta,
            crate::core::storage::META_RESTORING,
            b"x".as_slice(),
        );
    });
    assert!(err.contains("half applied"), "{err}");
}

/// A range reads its values from `rev` in revision order, in runs of nearby
/// revisions and batches of keys: values must come back on the right keys,
/// in key order, whatever the gaps between their revisions.
#[test]
fn range_values_come_back_on_their_keys_across_gaps_runs_and_batches() {
    let (_d, s) = store();
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..1500 {
        let (k, v) = (format!("k{i:04}"), format!("v{i}"));
        entry(&s, |a| a.put(&put(&k, &v))).0.expect("put");
        expected.insert(k, v);
        if i % 97 == 0 {
            // A gap of more than a run's reach in `rev`.
            for f in 0..20 {
                entry(&s, |a| a.put(&put("filler", &f.to_string())))
                    .0
                    .expect("filler");
            }
        }
    }
    // Overwrites move some keys to the newest revisions.
    for i in (0..1500).step_by(131) {
        let (k, v) = (format!("k{i:04}"), format!("new{i}"));
        entry(&s, |a| a.put(&put(&k, &v))).0.expect("overwrite");
        expected.insert(k, v);
    }
    let got: std::collections::BTreeMap<String, String> = get_at(&s, "k", "l", 0)
        .expect("range")
        .into_iter()
        .collect();
    let listed: Vec<String> = get_at(&s, "k", "l", 0)
        .expect("range")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "key order");
    assert_eq!(got, expected);
}
