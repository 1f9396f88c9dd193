//! The KV service over gRPC, with the `etcd-client` crate: revisions,
//! ranges, deletes, transactions, compaction and etcd's exact errors, on a
//! single member and through the followers of a 3-member cluster, and
//! etcd 3.7's streamed range.
//!
//! Every scenario works under its own key prefix and asserts revisions
//! relative to the store's revision when it starts, so that the 3-member test
//! can run them all, one after another, on one cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, GetResponse,
    KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse,
};
use tonic::Code;

use common::{
    against_etcd, assert_status, connect, current_revision, Cluster, ClusterOptions, TestDir,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

async fn put(c: &mut Client, key: &str, value: &str) -> i64 {
    c.put(key, value, None)
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"))
        .header()
        .expect("header")
        .revision()
}

async fn get(c: &mut Client, key: &str, options: Option<GetOptions>) -> GetResponse {
    c.get(key, options)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
}

async fn get_one(c: &mut Client, key: &str) -> Option<KeyValue> {
    let resp = get(c, key, None).await;
    assert!(resp.kvs().len() <= 1);
    resp.kvs().first().cloned()
}

fn keys(resp: &GetResponse) -> Vec<String> {
    resp.kvs().iter().map(|kv| common::s(kv.key())).collect()
}

fn keys_of(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| common::s(kv.key())).collect()
}

fn value(kv: &KeyValue) -> String {
    common::s(kv.value())
}

fn k(prefix: &str, name: &str) -> String {
    format!("{prefix}/{name}")
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// Revision bookkeeping exactly as etcd: needs a store nobody wrote to.
async fn fresh_store_revisions(c: &mut Client) {
    let resp = get(c, "foo", None).await;
    let header = resp.header().expect("header");
    assert_eq!(header.revision(), 1, "an empty store is at revision 1");
    assert_ne!(header.cluster_id(), 0, "cluster_id");
    assert_ne!(header.member_id(), 0, "member_id");
    assert!(header.raft_term() >= 1, "raft_term {}", header.raft_term());
    assert!(resp.kvs().is_empty());
    assert_eq!(resp.count(), 0);
    assert!(!resp.more());

    // First put: revision 2.
    let resp = c.put("foo", "bar", None).await.expect("put");
    let header = resp.header().expect("header");
    assert_eq!(header.revision(), 2);
    assert_ne!(header.cluster_id(), 0);
    assert_ne!(header.member_id(), 0);
    assert!(header.raft_term() >= 1);
    let kv = get_one(c, "foo").await.expect("foo");
    assert_eq!(
        (
            kv.create_revision(),
            kv.mod_revision(),
            kv.version(),
            kv.lease()
        ),
        (2, 2, 1, 0)
    );
    assert_eq!(value(&kv), "bar");

    // Overwrite: version 2, same create_revision.
    assert_eq!(put(c, "foo", "baz").await, 3);
    let kv = get_one(c, "foo").await.expect("foo");
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version()),
        (2, 3, 2)
    );

    // Writing the same value again is still a new revision.
    assert_eq!(put(c, "foo", "baz").await, 4);
    let kv = get_one(c, "foo").await.expect("foo");
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version()),
        (2, 4, 3)
    );

    // Deleting nothing does not bump the revision.
    let resp = c.delete("nothing-here", None).await.expect("delete");
    assert_eq!(resp.deleted(), 0);
    assert_eq!(resp.header().expect("header").revision(), 4);
    let resp = c
        .delete("nothing-", Some(DeleteOptions::new().with_prefix()))
        .await
        .expect("delete prefix");
    assert_eq!(resp.deleted(), 0);
    assert_eq!(resp.header().expect("header").revision(), 4);
    assert_eq!(current_revision(c).await, 4);

    // A transaction with several puts is one revision.
    let resp = c
        .txn(Txn::new().and_then(vec![
            TxnOp::put("t1", "1", None),
            TxnOp::put("t2", "2", None),
            TxnOp::put("t3", "3", None),
        ]))
        .await
        .expect("txn");
    assert!(resp.succeeded());
    assert_eq!(resp.header().expect("header").revision(), 5);
    for key in ["t1", "t2", "t3"] {
        let kv = get_one(c, key).await.expect(key);
        assert_eq!(
            (kv.create_revision(), kv.mod_revision(), kv.version()),
            (5, 5, 1)
        );
    }

    // A read-only transaction does not bump the revision.
    let resp = c
        .txn(Txn::new().and_then(vec![TxnOp::get("t1", None)]))
        .await
        .expect("txn");
    assert_eq!(resp.header().expect("header").revision(), 5);

    // Deleting a key: new revision; re-creating it starts at version 1.
    let resp = c.delete("foo", None).await.expect("delete");
    assert_eq!(resp.deleted(), 1);
    assert_eq!(resp.header().expect("header").revision(), 6);
    assert!(get_one(c, "foo").await.is_none());
    assert_eq!(put(c, "foo", "again").await, 7);
    let kv = get_one(c, "foo").await.expect("foo");
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version()),
        (7, 7, 1)
    );

    // The old incarnation is still readable at its revisions.
    let resp = get(c, "foo", Some(GetOptions::new().with_revision(3))).await;
    let kv = &resp.kvs()[0];
    assert_eq!(
        (
            value(kv),
            kv.create_revision(),
            kv.mod_revision(),
            kv.version()
        ),
        ("baz".into(), 2, 3, 2)
    );
    assert_eq!(
        resp.header().expect("header").revision(),
        7,
        "header carries the current revision"
    );
    let resp = get(c, "foo", Some(GetOptions::new().with_revision(6))).await;
    assert!(resp.kvs().is_empty(), "deleted at revision 6");
    let resp = get(c, "foo", Some(GetOptions::new().with_revision(1))).await;
    assert!(resp.kvs().is_empty(), "not yet created at revision 1");
}

/// put/get and prev_kv on put and delete.
async fn put_get_prev_kv(c: &mut Client, p: &str) {
    let a = k(p, "a");
    let base = current_revision(c).await;

    let resp = c
        .put(a.as_str(), "v1", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put");
    assert!(resp.prev_key().is_none(), "no prev_kv for a new key");
    assert_eq!(resp.header().expect("header").revision(), base + 1);

    let resp = c
        .put(a.as_str(), "v2", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put");
    let prev = resp.prev_key().expect("prev_kv");
    assert_eq!(common::s(prev.key()), a);
    assert_eq!(value(prev), "v1");
    assert_eq!(
        (prev.create_revision(), prev.mod_revision(), prev.version()),
        (base + 1, base + 1, 1)
    );

    // Without the option, no prev_kv even though the key exists.
    let resp = c.put(a.as_str(), "v3", None).await.expect("put");
    assert!(resp.prev_key().is_none());

    let kv = get_one(c, &a).await.expect("a");
    assert_eq!(value(&kv), "v3");
    assert_eq!(
        (kv.create_revision(), kv.mod_revision(), kv.version()),
        (base + 1, base + 3, 3)
    );

    // Binary keys and values round-trip.
    let bin_key = format!("{p}/bin\u{0}\u{ff}");
    c.put(bin_key.as_bytes().to_vec(), vec![0u8, 1, 2, 255], None)
        .await
        .expect("put binary");
    let resp = c
        .get(bin_key.as_bytes().to_vec(), None)
        .await
        .expect("get binary");
    assert_eq!(resp.kvs()[0].value(), &[0u8, 1, 2, 255]);

    let resp = c
        .delete(a.as_str(), Some(DeleteOptions::new().with_prev_key()))
        .await
        .expect("delete");
    assert_eq!(resp.deleted(), 1);
    assert_eq!(resp.prev_kvs().len(), 1);
    assert_eq!(value(&resp.prev_kvs()[0]), "v3");
    assert_eq!(resp.prev_kvs()[0].version(), 3);
    assert!(get_one(c, &a).await.is_none());

    // Delete without prev_kv returns none.
    put(c, &a, "v4").await;
    let resp = c.delete(a.as_str(), None).await.expect("delete");
    assert_eq!(resp.deleted(), 1);
    assert!(resp.prev_kvs().is_empty());
}

/// ignore_value / ignore_lease and lease checks on put.
async fn put_options_errors(c: &mut Client, p: &str) {
    let missing = k(p, "missing");
    assert_status(
        c.put(
            missing.as_str(),
            "",
            Some(PutOptions::new().with_ignore_value()),
        )
        .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert_status(
        c.put(
            missing.as_str(),
            "v",
            Some(PutOptions::new().with_ignore_lease()),
        )
        .await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    assert!(
        get_one(c, &missing).await.is_none(),
        "failed puts wrote nothing"
    );

    // A lease that does not exist.
    let rev = current_revision(c).await;
    assert_status(
        c.put(
            missing.as_str(),
            "v",
            Some(PutOptions::new().with_lease(12345)),
        )
        .await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    assert!(get_one(c, &missing).await.is_none());
    assert_eq!(
        current_revision(c).await,
        rev,
        "a failed put does not bump the revision"
    );

    // Value or lease given together with ignore_*.
    let key = k(p, "k");
    put(c, &key, "v1").await;
    assert_status(
        c.put(
            key.as_str(),
            "x",
            Some(PutOptions::new().with_ignore_value()),
        )
        .await,
        Code::InvalidArgument,
        "etcdserver: value is provided",
    );
    assert_status(
        c.put(
            key.as_str(),
            "x",
            Some(PutOptions::new().with_ignore_lease().with_lease(5)),
        )
        .await,
        Code::InvalidArgument,
        "etcdserver: lease is provided",
    );

    // ignore_value on an existing key keeps the value, bumps the version.
    let rev = c
        .put(
            key.as_str(),
            "",
            Some(PutOptions::new().with_ignore_value()),
        )
        .await
        .expect("put ignore_value")
        .header()
        .expect("header")
        .revision();
    let kv = get_one(c, &key).await.expect("k");
    assert_eq!(
        (value(&kv), kv.version(), kv.mod_revision()),
        ("v1".into(), 2, rev)
    );

    // ignore_lease keeps the key's lease.
    let lease = c.lease_grant(60, None).await.expect("lease grant");
    assert_ne!(lease.id(), 0);
    let leased = k(p, "leased");
    c.put(
        leased.as_str(),
        "l1",
        Some(PutOptions::new().with_lease(lease.id())),
    )
    .await
    .expect("put with lease");
    assert_eq!(
        get_one(c, &leased).await.expect("leased").lease(),
        lease.id()
    );
    c.put(
        leased.as_str(),
        "l2",
        Some(PutOptions::new().with_ignore_lease()),
    )
    .await
    .expect("put ignore_lease");
    let kv = get_one(c, &leased).await.expect("leased");
    assert_eq!((value(&kv), kv.lease()), ("l2".into(), lease.id()));
    // A plain put detaches the key from its lease.
    put(c, &leased, "l3").await;
    assert_eq!(get_one(c, &leased).await.expect("leased").lease(), 0);
    c.lease_revoke(lease.id()).await.expect("lease revoke");
}

/// range_end, prefix, from-key, limit/more/count, revision reads,
/// serializable, keys_only, count_only and the revision filters.
async fn ranges(c: &mut Client, p: &str) {
    // p/a .. p/e, one put each, then p0 which sorts right after the prefix.
    let mut created = std::collections::BTreeMap::new();
    for name in ["a", "b", "c", "d", "e"] {
        let rev = put(c, &k(p, name), &format!("val-{name}")).await;
        created.insert(name, rev);
    }
    let after = format!("{p}0");
    put(c, &after, "after").await;
    let rev_before_update = current_revision(c).await;
    let update_rev = put(c, &k(p, "b"), "val-b2").await;
    let all = [k(p, "a"), k(p, "b"), k(p, "c"), k(p, "d"), k(p, "e")];

    // [p/b, p/d)
    let resp = get(c, &k(p, "b"), Some(GetOptions::new().with_range(k(p, "d")))).await;
    assert_eq!(keys(&resp), [k(p, "b"), k(p, "c")]);
    assert_eq!(resp.count(), 2);
    assert!(!resp.more());

    // prefix p/
    let prefix = format!("{p}/");
    let resp = get(c, &prefix, Some(GetOptions::new().with_prefix())).await;
    assert_eq!(keys(&resp), all);
    assert_eq!(resp.count(), 5);
    assert_eq!(value(&resp.kvs()[1]), "val-b2");
    assert_eq!(resp.header().expect("header").revision(), update_rev);

    // from-key: every key >= p/c, in order.
    let resp = get(c, &k(p, "c"), Some(GetOptions::new().with_from_key())).await;
    let got = keys(&resp);
    assert_eq!(&got[..4], [k(p, "c"), k(p, "d"), k(p, "e"), after.clone()]);
    assert!(got.iter().all(|key| key.as_str() >= k(p, "c").as_str()));
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "sorted by key: {got:?}"
    );
    assert_eq!(resp.count() as usize, got.len());

    // All keys ("\0" to "\0").
    let resp = get(c, "\0", Some(GetOptions::new().with_from_key())).await;
    let got = keys(&resp);
    for key in all.iter().chain([&after]) {
        assert!(got.contains(key), "{key} in all keys");
    }
    let resp2 = get(c, "", Some(GetOptions::new().with_all_keys())).await;
    assert_eq!(keys(&resp2), got);

    // limit / more / count
    let resp = get(
        c,
        &prefix,
        Some(GetOptions::new().with_prefix().with_limit(2)),
    )
    .await;
    assert_eq!(keys(&resp), [k(p, "a"), k(p, "b")]);
    assert!(resp.more());
    assert_eq!(resp.count(), 5);
    let resp = get(
        c,
        &prefix,
        Some(GetOptions::new().with_prefix().with_limit(5)),
    )
    .await;
    assert_eq!(resp.kvs().len(), 5);
    assert!(!resp.more());
    assert_eq!(resp.count(), 5);
    let resp = get(
        c,
        &prefix,
        Some(GetOptions::new().with_prefix().with_limit(100)),
    )
    .await;
    assert_eq!(resp.kvs().len(), 5);
    assert!(!resp.more());

    // Reads at a past revision.
    let resp = get(
        c,
        &prefix,
        Some(GetOptions::new().with_prefix().with_revision(created["b"])),
    )
    .await;
    assert_eq!(keys(&resp), [k(p, "a"), k(p, "b")]);
    assert_eq!(resp.count(), 2);
    assert_eq!(value(&resp.kvs()[1]), "val-b");
    let resp = get(
        c,
        &k(p, "b"),
        Some(GetOptions::new().with_revision(rev_before_update)),
    )
    .await;
    assert_eq!(value(&resp.kvs()[0]), "val-b");
    assert_eq!(resp.kvs()[0].version(), 1);
    let resp = get(
        c,
        &k(p, "b"),
        Some(GetOptions::new().with_revision(update_rev)),
    )
    .await;
    assert_eq!(value(&resp.kvs()[0]), "val-b2");
    assert_eq!(resp.kvs()[0].version(), 2);
    let del = c.delete(k(p, "e"), None).await.expect("delete e");
    let del_rev = del.header().expect("header").revision();
    assert!(get_one(c, &k(p, "e")).await.is_none());
    let resp = get(
        c,
        &k(p, "e"),
        Some(GetOptions::new().with_revision(del_rev - 1)),
    )
    .await;
    assert_eq!(value(&resp.kvs()[0]), "val-e");
    assert_eq!(resp.header().expect("header").revision(), del_rev);
    put(c, &k(p, "e"), "val-e").await;

    // Serializable reads see our own acknowledged writes on this member.
    let serial_key = k(p, "serial");
    put(c, &serial_key, "s").await;
    let resp = get(c, &serial_key, Some(GetOptions::new().with_serializable())).await;
    assert_eq!(value(&resp.kvs()[0]), "s");
    c.delete(serial_key.as_str(), None).await.expect("delete");

    // keys_only / count_only
    let resp = get(
        c,
        &prefix,
        Some(GetOptions::new().with_prefix().with_keys_only()),
    )
    .await;
    assert_eq!(keys(&resp), all);
    assert!(resp.kvs().iter().all(|kv| kv.value().is_empty()));
    assert!(resp
        .kvs()
        .iter()
        .all(|kv| kv.version() > 0 && kv.mod_revision() > 0));
    let resp = get(
        c,
        &prefix,
        Some(GetOptions::new().with_prefix().with_count_only()),
    )
    .await;
    assert!(resp.kvs().is_empty());
    assert_eq!(resp.count(), 5);

    // Revision filters. Current mod revisions: a, c, d as created; b updated;
    // e re-created after a delete.
    let resp = get(c, &prefix, Some(GetOptions::new().with_prefix())).await;
    let mods: Vec<(String, i64, i64)> = resp
        .kvs()
        .iter()
        .map(|kv| (common::s(kv.key()), kv.mod_revision(), kv.create_revision()))
        .collect();
    let expect = |pred: &dyn Fn(i64, i64) -> bool| -> Vec<String> {
        mods.iter()
            .filter(|(_, m, cr)| pred(*m, *cr))
            .map(|(key, _, _)| key.clone())
            .collect()
    };
    let c_rev = created["c"];
    let resp = get(
        c,
        &prefix,
        Some(GetOptions::new().with_prefix().with_min_mod_revision(c_rev)),
    )
    .await;
    assert_eq!(keys(&resp), expect(&|m, _| m >= c_rev));
    assert_eq!(keys(&resp), [k(p, "b"), k(p, "c"), k(p, "d"), k(p, "e")]);
    let resp = get(
        c,
        &prefix,
        Some(GetOptions::new().with_prefix().with_max_mod_revision(c_rev)),
    )
    .await;
    assert_eq!(keys(&resp), [k(p, "a"), k(p, "c")]);
    let resp = get(
        c,
        &prefix,
        Some(
            GetOptions::new()
                .with_prefix()
                .with_min_create_revision(c_rev),
        ),
    )
    .await;
    assert_eq!(keys(&resp), [k(p, "c"), k(p, "d"), k(p, "e")]);
    assert_eq!(keys(&resp), expect(&|_, cr| cr >= c_rev));
    let resp = get(
        c,
        &prefix,
        Some(
            GetOptions::new()
                .with_prefix()
                .with_max_create_revision(c_rev),
        ),
    )
    .await;
    assert_eq!(keys(&resp), [k(p, "a"), k(p, "b"), k(p, "c")]);
    let resp = get(
        c,
        &prefix,
        Some(
            GetOptions::new()
                .with_prefix()
                .with_min_create_revision(created["b"])
                .with_max_mod_revision(created["d"]),
        ),
    )
    .await;
    assert_eq!(keys(&resp), [k(p, "c"), k(p, "d")]);
    // Filters apply before limit.
    let resp = get(
        c,
        &prefix,
        Some(
            GetOptions::new()
                .with_prefix()
                .with_min_mod_revision(c_rev)
                .with_limit(2),
        ),
    )
    .await;
    assert_eq!(keys(&resp), [k(p, "b"), k(p, "c")]);
    assert!(resp.more());
}

/// sort_order × sort_target, on keys whose attributes never tie.
async fn sorting(c: &mut Client, p: &str) {
    // Create order: k3, k1, k4, k2 (create revision ascending).
    // Versions: k1=3, k2=1, k3=4, k4=2. Values distinct, in no key order.
    let (k1, k2, k3, k4) = (k(p, "k1"), k(p, "k2"), k(p, "k3"), k(p, "k4"));
    put(c, &k3, "m").await;
    put(c, &k1, "z").await;
    put(c, &k4, "a").await;
    put(c, &k2, "q").await;
    put(c, &k3, "m").await;
    put(c, &k1, "z").await;
    put(c, &k3, "m").await;
    put(c, &k4, "a").await;
    put(c, &k1, "z").await;
    put(c, &k3, "m").await;
    let prefix = format!("{p}/");

    let all = get(c, &prefix, Some(GetOptions::new().with_prefix())).await;
    assert_eq!(keys(&all), [k1.clone(), k2.clone(), k3.clone(), k4.clone()]);
    let versions: Vec<i64> = all.kvs().iter().map(|kv| kv.version()).collect();
    assert_eq!(versions, [3, 1, 4, 2]);

    type Attr = fn(&KeyValue) -> Vec<u8>;
    let targets: [(SortTarget, Attr); 5] = [
        (SortTarget::Key, |kv| kv.key().to_vec()),
        (SortTarget::Version, |kv| {
            kv.version().to_be_bytes().to_vec()
        }),
        (SortTarget::Create, |kv| {
            kv.create_revision().to_be_bytes().to_vec()
        }),
        (SortTarget::Mod, |kv| {
            kv.mod_revision().to_be_bytes().to_vec()
        }),
        (SortTarget::Value, |kv| kv.value().to_vec()),
    ];
    for (target, attr) in targets {
        let mut expected: Vec<KeyValue> = all.kvs().to_vec();
        expected.sort_by_key(attr);
        let ascending = keys_of(&expected);
        let mut descending = ascending.clone();
        descending.reverse();

        let resp = get(
            c,
            &prefix,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(target, SortOrder::Ascend),
            ),
        )
        .await;
        assert_eq!(keys(&resp), ascending, "{target:?} ascending");
        let resp = get(
            c,
            &prefix,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(target, SortOrder::Descend),
            ),
        )
        .await;
        assert_eq!(keys(&resp), descending, "{target:?} descending");

        // A non-KEY target with order NONE sorts ascending (etcd's default).
        let resp = get(
            c,
            &prefix,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(target, SortOrder::None),
            ),
        )
        .await;
        assert_eq!(keys(&resp), ascending, "{target:?} with order NONE");

        // Sort first, then limit.
        let resp = get(
            c,
            &prefix,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(target, SortOrder::Descend)
                    .with_limit(2),
            ),
        )
        .await;
        assert_eq!(
            keys(&resp),
            descending[..2],
            "{target:?} descending, limit 2"
        );
        assert!(resp.more());
        assert_eq!(resp.count(), 4);
    }
    // Spot-check the expectations themselves.
    let resp = get(
        c,
        &prefix,
        Some(
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend),
        ),
    )
    .await;
    assert_eq!(
        keys(&resp),
        [k3.clone(), k1.clone(), k4.clone(), k2.clone()]
    );
    let resp = get(
        c,
        &prefix,
        Some(
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Value, SortOrder::Descend),
        ),
    )
    .await;
    assert_eq!(keys(&resp), [k1, k2, k3, k4]);
}

/// delete_range with a range, a prefix, prev_kv, and the deleted count.
async fn delete_ranges(c: &mut Client, p: &str) {
    for name in ["a", "b", "c", "d"] {
        put(c, &k(p, name), &format!("v{name}")).await;
    }
    let outside = format!("{p}0");
    put(c, &outside, "stays").await;
    let base = current_revision(c).await;

    let resp = c
        .delete(k(p, "a"), Some(DeleteOptions::new().with_range(k(p, "c"))))
        .await
        .expect("delete range");
    assert_eq!(resp.deleted(), 2);
    assert!(resp.prev_kvs().is_empty());
    assert_eq!(
        resp.header().expect("header").revision(),
        base + 1,
        "one revision for the whole range"
    );

    let resp = c
        .delete(
            format!("{p}/"),
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect("delete prefix");
    assert_eq!(resp.deleted(), 2);
    assert_eq!(keys_of(resp.prev_kvs()), [k(p, "c"), k(p, "d")]);
    assert_eq!(
        resp.prev_kvs().iter().map(value).collect::<Vec<_>>(),
        ["vc", "vd"]
    );
    assert_eq!(resp.header().expect("header").revision(), base + 2);

    // Nothing left under the prefix; a second delete deletes nothing and
    // does not bump the revision.
    let resp = c
        .delete(
            format!("{p}/"),
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .expect("delete prefix again");
    assert_eq!(resp.deleted(), 0);
    assert!(resp.prev_kvs().is_empty());
    assert_eq!(resp.header().expect("header").revision(), base + 2);
    let resp = get(c, &format!("{p}/"), Some(GetOptions::new().with_prefix())).await;
    assert_eq!(resp.count(), 0);
    assert_eq!(
        value(&get_one(c, &outside).await.expect("outside")),
        "stays"
    );

    // Deleted keys are still visible at older revisions.
    let resp = get(
        c,
        &format!("{p}/"),
        Some(GetOptions::new().with_prefix().with_revision(base)),
    )
    .await;
    assert_eq!(keys(&resp), [k(p, "a"), k(p, "b"), k(p, "c"), k(p, "d")]);
}

fn op_put(resp: &TxnOpResponse) -> &etcd_client::PutResponse {
    match resp {
        TxnOpResponse::Put(r) => r,
        other => panic!("expected a put response, got {other:?}"),
    }
}

fn op_get(resp: &TxnOpResponse) -> &GetResponse {
    match resp {
        TxnOpResponse::Get(r) => r,
        other => panic!("expected a range response, got {other:?}"),
    }
}

fn op_delete(resp: &TxnOpResponse) -> &etcd_client::DeleteResponse {
    match resp {
        TxnOpResponse::Delete(r) => r,
        other => panic!("expected a delete response, got {other:?}"),
    }
}

fn op_txn(resp: &TxnOpResponse) -> &etcd_client::TxnResponse {
    match resp {
        TxnOpResponse::Txn(r) => r,
        other => panic!("expected a txn response, got {other:?}"),
    }
}

/// Evaluates `compares` in a transaction that reports which branch ran.
async fn txn_holds(c: &mut Client, compares: Vec<Compare>) -> bool {
    let resp = c
        .txn(
            Txn::new()
                .when(compares)
                .and_then(vec![TxnOp::get("\u{1}branch-success", None)])
                .or_else(vec![
                    TxnOp::get("\u{1}branch-failure", None),
                    TxnOp::get("\u{1}branch-failure", None),
                ]),
        )
        .await
        .expect("txn");
    let expected_ops = if resp.succeeded() { 1 } else { 2 };
    assert_eq!(
        resp.op_responses().len(),
        expected_ops,
        "the branch that ran"
    );
    resp.succeeded()
}

/// Txn compares on VERSION, CREATE, MOD, VALUE, LEASE (also over ranges),
/// success and failure branches, nested transactions.
async fn txn_compares(c: &mut Client, p: &str) {
    let (a, b, missing) = (k(p, "a"), k(p, "b"), k(p, "missing"));
    let a_created = put(c, &a, "1").await;
    let a_modified = put(c, &a, "2").await;
    put(c, &b, "x").await;

    // VERSION
    assert!(txn_holds(c, vec![Compare::version(a.as_str(), CompareOp::Equal, 2)]).await);
    assert!(txn_holds(c, vec![Compare::version(a.as_str(), CompareOp::Greater, 1)]).await);
    assert!(txn_holds(c, vec![Compare::version(a.as_str(), CompareOp::Less, 3)]).await);
    assert!(
        txn_holds(
            c,
            vec![Compare::version(a.as_str(), CompareOp::NotEqual, 1)]
        )
        .await
    );
    assert!(!txn_holds(c, vec![Compare::version(a.as_str(), CompareOp::Greater, 5)]).await);
    // A missing key has version 0, create and mod revision 0.
    assert!(
        txn_holds(
            c,
            vec![Compare::version(missing.as_str(), CompareOp::Equal, 0)]
        )
        .await
    );
    assert!(
        txn_holds(
            c,
            vec![Compare::create_revision(
                missing.as_str(),
                CompareOp::Equal,
                0
            )]
        )
        .await
    );
    assert!(
        txn_holds(
            c,
            vec![Compare::mod_revision(missing.as_str(), CompareOp::Equal, 0)]
        )
        .await
    );

    // CREATE
    assert!(
        txn_holds(
            c,
            vec![Compare::create_revision(
                a.as_str(),
                CompareOp::Equal,
                a_created
            )]
        )
        .await
    );
    assert!(
        !txn_holds(
            c,
            vec![Compare::create_revision(
                a.as_str(),
                CompareOp::Greater,
                a_created
            )]
        )
        .await
    );

    // MOD
    assert!(
        txn_holds(
            c,
            vec![Compare::mod_revision(
                a.as_str(),
                CompareOp::Equal,
                a_modified
            )]
        )
        .await
    );
    assert!(
        txn_holds(
            c,
            vec![Compare::mod_revision(
                a.as_str(),
                CompareOp::Less,
                a_modified + 1
            )]
        )
        .await
    );
    assert!(
        !txn_holds(
            c,
            vec![Compare::mod_revision(
                a.as_str(),
                CompareOp::Less,
                a_modified
            )]
        )
        .await
    );

    // VALUE
    assert!(txn_holds(c, vec![Compare::value(b.as_str(), CompareOp::Equal, "x")]).await);
    assert!(txn_holds(c, vec![Compare::value(b.as_str(), CompareOp::Greater, "w")]).await);
    assert!(txn_holds(c, vec![Compare::value(b.as_str(), CompareOp::Less, "xa")]).await);
    assert!(
        !txn_holds(
            c,
            vec![Compare::value(b.as_str(), CompareOp::NotEqual, "x")]
        )
        .await
    );
    // A value compare on a missing key is always false.
    assert!(
        !txn_holds(
            c,
            vec![Compare::value(missing.as_str(), CompareOp::Equal, "")]
        )
        .await
    );
    assert!(
        !txn_holds(
            c,
            vec![Compare::value(missing.as_str(), CompareOp::NotEqual, "x")]
        )
        .await
    );

    // LEASE
    assert!(txn_holds(c, vec![Compare::lease(a.as_str(), CompareOp::Equal, 0)]).await);
    let lease = c.lease_grant(60, None).await.expect("lease grant").id();
    let leased = k(p, "leased");
    c.put(
        leased.as_str(),
        "l",
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .expect("put with lease");
    assert!(
        txn_holds(
            c,
            vec![Compare::lease(leased.as_str(), CompareOp::Equal, lease)]
        )
        .await
    );
    assert!(
        !txn_holds(
            c,
            vec![Compare::lease(leased.as_str(), CompareOp::NotEqual, lease)]
        )
        .await
    );
    assert!(!txn_holds(c, vec![Compare::lease(a.as_str(), CompareOp::Equal, lease)]).await);

    // All compares must hold.
    assert!(
        txn_holds(
            c,
            vec![
                Compare::version(a.as_str(), CompareOp::Equal, 2),
                Compare::value(b.as_str(), CompareOp::Equal, "x"),
            ]
        )
        .await
    );
    assert!(
        !txn_holds(
            c,
            vec![
                Compare::version(a.as_str(), CompareOp::Equal, 2),
                Compare::value(b.as_str(), CompareOp::Equal, "y"),
            ]
        )
        .await
    );

    // Compares over a range: every key in the range must satisfy them.
    let (r1, r2, r3) = (k(p, "r/1"), k(p, "r/2"), k(p, "r/3"));
    put(c, &r1, "same").await;
    put(c, &r2, "same").await;
    put(c, &r3, "same").await;
    put(c, &r3, "same").await;
    let rp = k(p, "r/");
    assert!(
        txn_holds(
            c,
            vec![Compare::version(rp.as_str(), CompareOp::Greater, 0).with_prefix()]
        )
        .await
    );
    assert!(
        !txn_holds(
            c,
            vec![Compare::version(rp.as_str(), CompareOp::Equal, 1).with_prefix()]
        )
        .await
    );
    assert!(
        txn_holds(
            c,
            vec![Compare::version(r1.as_str(), CompareOp::Equal, 1).with_range(r3.as_str())]
        )
        .await
    );
    assert!(
        txn_holds(
            c,
            vec![Compare::value(rp.as_str(), CompareOp::Equal, "same").with_prefix()]
        )
        .await
    );
    let now = current_revision(c).await;
    assert!(
        txn_holds(
            c,
            vec![Compare::mod_revision(rp.as_str(), CompareOp::Less, now + 1).with_prefix()]
        )
        .await
    );
    assert!(
        !txn_holds(
            c,
            vec![Compare::create_revision(rp.as_str(), CompareOp::Equal, now).with_prefix()]
        )
        .await
    );
    assert!(
        txn_holds(
            c,
            vec![Compare::lease(rp.as_str(), CompareOp::Equal, 0).with_prefix()]
        )
        .await
    );

    // Success branch: put, get (sees the put of the same txn), delete; one revision.
    let base = current_revision(c).await;
    let t1 = k(p, "t1");
    let resp = c
        .txn(
            Txn::new()
                .when(vec![Compare::value(b.as_str(), CompareOp::Equal, "x")])
                .and_then(vec![
                    TxnOp::put(t1.as_str(), "one", Some(PutOptions::new().with_prev_key())),
                    TxnOp::get(t1.as_str(), None),
                    TxnOp::put(a.as_str(), "3", Some(PutOptions::new().with_prev_key())),
                    TxnOp::delete(b.as_str(), Some(DeleteOptions::new().with_prev_key())),
                ])
                .or_else(vec![TxnOp::put(t1.as_str(), "failure", None)]),
        )
        .await
        .expect("txn");
    assert!(resp.succeeded());
    assert_eq!(resp.header().expect("header").revision(), base + 1);
    let ops = resp.op_responses();
    assert_eq!(ops.len(), 4);
    assert!(op_put(&ops[0]).prev_key().is_none());
    let got = op_get(&ops[1]);
    assert_eq!(got.kvs().len(), 1);
    assert_eq!(value(&got.kvs()[0]), "one");
    assert_eq!(got.kvs()[0].mod_revision(), base + 1);
    assert_eq!(value(op_put(&ops[2]).prev_key().expect("prev a")), "2");
    let del = op_delete(&ops[3]);
    assert_eq!(del.deleted(), 1);
    assert_eq!(value(&del.prev_kvs()[0]), "x");
    for key in [&t1, &a] {
        let kv = get_one(c, key).await.expect("written by txn");
        assert_eq!(kv.mod_revision(), base + 1);
    }
    assert!(get_one(c, &b).await.is_none());

    // Failure branch.
    let resp = c
        .txn(
            Txn::new()
                .when(vec![Compare::value(b.as_str(), CompareOp::Equal, "x")])
                .and_then(vec![TxnOp::put(t1.as_str(), "success", None)])
                .or_else(vec![
                    TxnOp::put(b.as_str(), "recreated", None),
                    TxnOp::get(t1.as_str(), None),
                ]),
        )
        .await
        .expect("txn");
    assert!(!resp.succeeded());
    assert_eq!(resp.header().expect("header").revision(), base + 2);
    let ops = resp.op_responses();
    assert_eq!(ops.len(), 2);
    assert_eq!(value(&op_get(&ops[1]).kvs()[0]), "one");
    assert_eq!(value(&get_one(c, &b).await.expect("b")), "recreated");
    assert_eq!(value(&get_one(c, &t1).await.expect("t1")), "one");

    // A transaction with no compares takes the success branch.
    let resp = c
        .txn(Txn::new().and_then(vec![TxnOp::get(t1.as_str(), None)]))
        .await
        .expect("txn");
    assert!(resp.succeeded());
    assert_eq!(resp.header().expect("header").revision(), base + 2);

    // Nested transactions: one revision for all their writes.
    let (n1, n2) = (k(p, "n1"), k(p, "n2"));
    let resp = c
        .txn(
            Txn::new()
                .when(vec![Compare::version(t1.as_str(), CompareOp::Equal, 1)])
                .and_then(vec![
                    TxnOp::put(n1.as_str(), "outer", None),
                    TxnOp::txn(
                        Txn::new()
                            .when(vec![Compare::value(n1.as_str(), CompareOp::Equal, "outer")])
                            .and_then(vec![TxnOp::put(n2.as_str(), "inner-success", None)])
                            .or_else(vec![TxnOp::put(n2.as_str(), "inner-failure", None)]),
                    ),
                    TxnOp::txn(
                        Txn::new()
                            .when(vec![Compare::version(n2.as_str(), CompareOp::Equal, 0)])
                            .and_then(vec![TxnOp::get(n2.as_str(), None)])
                            .or_else(vec![TxnOp::get(n1.as_str(), None)]),
                    ),
                ]),
        )
        .await
        .expect("nested txn");
    assert!(resp.succeeded());
    assert_eq!(resp.header().expect("header").revision(), base + 3);
    let ops = resp.op_responses();
    assert_eq!(ops.len(), 3);
    // Every compare, nested ones included, is evaluated against the store as
    // it was before the transaction (etcd's compareToPath); operations then
    // run in order and see the writes made before them.
    let inner = op_txn(&ops[1]);
    assert!(
        !inner.succeeded(),
        "nested compares see the store before the txn"
    );
    let inner_ops = inner.op_responses();
    assert_eq!(inner_ops.len(), 1);
    op_put(&inner_ops[0]);
    let second = op_txn(&ops[2]);
    assert!(second.succeeded(), "n2 did not exist before the txn");
    let second_ops = second.op_responses();
    let seen = op_get(&second_ops[0]);
    assert_eq!(
        value(&seen.kvs()[0]),
        "inner-failure",
        "ops see earlier writes of the txn"
    );
    let kv = get_one(c, &n2).await.expect("n2");
    assert_eq!(
        (value(&kv), kv.mod_revision()),
        ("inner-failure".into(), base + 3)
    );
    assert_eq!(get_one(c, &n1).await.expect("n1").mod_revision(), base + 3);

    c.lease_revoke(lease).await.expect("lease revoke");
}

/// Txn request validation errors.
async fn txn_errors(c: &mut Client, p: &str) {
    let (a, b) = (k(p, "a"), k(p, "b"));
    let base = current_revision(c).await;
    assert_status(
        c.txn(Txn::new().and_then(vec![
            TxnOp::put(a.as_str(), "1", None),
            TxnOp::put(a.as_str(), "2", None),
        ]))
        .await,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    assert_status(
        c.txn(Txn::new().and_then(vec![
            TxnOp::put(a.as_str(), "1", None),
            TxnOp::delete(format!("{p}/"), Some(DeleteOptions::new().with_prefix())),
        ]))
        .await,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    assert_status(
        c.txn(
            Txn::new()
                .when(vec![Compare::version(a.as_str(), CompareOp::Equal, 0)])
                .and_then(vec![TxnOp::put(b.as_str(), "1", None)])
                .or_else(vec![
                    TxnOp::put(a.as_str(), "1", None),
                    TxnOp::put(a.as_str(), "2", None),
                ]),
        )
        .await,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    // A nested txn's delete, then a later sibling's put of that key
    // (etcd checks siblings in order).
    assert_status(
        c.txn(Txn::new().and_then(vec![
            TxnOp::txn(Txn::new().and_then(vec![TxnOp::delete(a.as_str(), None)])),
            TxnOp::txn(Txn::new().and_then(vec![TxnOp::put(a.as_str(), "1", None)])),
        ]))
        .await,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    assert_eq!(
        current_revision(c).await,
        base,
        "rejected txns wrote nothing"
    );
    // etcd's check sees no key in a delete whose range end is "\0" (its
    // interval [key, "\0") is empty), so a put beside it passes. The
    // delete starts past every test key.
    c.txn(Txn::new().and_then(vec![
        TxnOp::delete(
            "\u{7f}\u{7f}end",
            Some(DeleteOptions::new().with_from_key()),
        ),
        TxnOp::put(b.as_str(), "beside", None),
    ]))
    .await
    .expect("a from-key delete beside a put");

    // The same key in both branches is fine: only one branch runs.
    let resp = c
        .txn(
            Txn::new()
                .when(vec![Compare::version(a.as_str(), CompareOp::Equal, 0)])
                .and_then(vec![TxnOp::put(a.as_str(), "then", None)])
                .or_else(vec![TxnOp::put(a.as_str(), "else", None)]),
        )
        .await
        .expect("same key in both branches");
    assert!(resp.succeeded());
    // Reading a key twice is fine, so is reading what is written.
    c.txn(Txn::new().and_then(vec![
        TxnOp::get(a.as_str(), None),
        TxnOp::get(a.as_str(), None),
        TxnOp::put(b.as_str(), "x", None),
        TxnOp::get(b.as_str(), None),
    ]))
    .await
    .expect("gets and a put");

    // Too many operations (default --max-txn-ops 128).
    let base = current_revision(c).await;
    let ops = |n: usize| -> Vec<TxnOp> {
        (0..n)
            .map(|i| TxnOp::put(format!("{p}/many/{i:03}"), "v", None))
            .collect()
    };
    assert_status(
        c.txn(Txn::new().and_then(ops(129))).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    assert_status(
        c.txn(
            Txn::new()
                .when(vec![Compare::version(a.as_str(), CompareOp::Equal, 1)])
                .and_then(vec![TxnOp::get(a.as_str(), None)])
                .or_else(ops(129)),
        )
        .await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    assert_eq!(current_revision(c).await, base);
    let resp = c.txn(Txn::new().and_then(ops(128))).await.expect("128 ops");
    assert_eq!(resp.header().expect("header").revision(), base + 1);
    let resp = get(
        c,
        &format!("{p}/many/"),
        Some(GetOptions::new().with_prefix().with_count_only()),
    )
    .await;
    assert_eq!(resp.count(), 128);

    // Empty key inside a transaction.
    assert_status(
        c.txn(Txn::new().and_then(vec![TxnOp::put("", "v", None)]))
            .await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
}

/// Compaction and reads around the compacted revision.
async fn compaction(c: &mut Client, p: &str) {
    let key = k(p, "c");
    let r1 = put(c, &key, "v1").await;
    let r2 = put(c, &key, "v2").await;
    let r3 = put(c, &key, "v3").await;

    let resp = c.compact(r2, None).await.expect("compact");
    assert_eq!(
        resp.header().expect("header").revision(),
        r3,
        "compaction is not a revision"
    );

    assert_status(
        c.get(key.as_str(), Some(GetOptions::new().with_revision(r1)))
            .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    // The compacted revision itself is still readable.
    let resp = get(c, &key, Some(GetOptions::new().with_revision(r2))).await;
    assert_eq!(value(&resp.kvs()[0]), "v2");
    let resp = get(c, &key, None).await;
    assert_eq!(value(&resp.kvs()[0]), "v3");
    assert_eq!(resp.kvs()[0].version(), 3, "versions survive compaction");
    assert_eq!(
        resp.kvs()[0].create_revision(),
        r1,
        "create_revision survives compaction"
    );

    // Future revisions.
    assert_status(
        c.get(
            key.as_str(),
            Some(GetOptions::new().with_revision(r3 + 1000)),
        )
        .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    assert_status(
        c.compact(r3 + 1000, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );

    // Compacting at or below the compacted revision again.
    assert_status(
        c.compact(r2, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_status(
        c.compact(r1, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );

    // A physical compaction at the current revision works; writes go on.
    c.compact(r3, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("physical compact");
    assert_status(
        c.get(key.as_str(), Some(GetOptions::new().with_revision(r2)))
            .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    let r4 = put(c, &key, "v4").await;
    assert_eq!(r4, r3 + 1);
    let kv = get_one(c, &key).await.expect("key");
    assert_eq!((kv.version(), kv.create_revision()), (4, r1));

    // A compacted range read in a txn fails the same way.
    assert_status(
        c.txn(Txn::new().and_then(vec![TxnOp::get(
            key.as_str(),
            Some(GetOptions::new().with_revision(r1)),
        )]))
        .await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
}

/// Empty keys.
async fn empty_key(c: &mut Client) {
    assert_status(
        c.put("", "v", None).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    assert_status(
        c.get("", None).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    assert_status(
        c.delete("", None).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
}

// ---------------------------------------------------------------------------
// Tests: single member
// ---------------------------------------------------------------------------

/// Every scenario above in turn, on a fresh store reached through `c`.
async fn every_scenario(c: &mut Client) {
    fresh_store_revisions(c).await;
    put_get_prev_kv(c, "pg").await;
    put_options_errors(c, "po").await;
    ranges(c, "rg").await;
    sorting(c, "so").await;
    delete_ranges(c, "dr").await;
    txn_compares(c, "tc").await;
    txn_errors(c, "te").await;
    compaction(c, "cp").await;
    empty_key(c).await;
}

async fn single() -> (Cluster, Client) {
    let cluster = Cluster::start(1).await;
    let client = cluster.client(0).await;
    (cluster, client)
}

#[tokio::test(flavor = "multi_thread")]
async fn single_member_fresh_store_revisions() {
    let (_cluster, mut c) = single().await;
    fresh_store_revisions(&mut c).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn single_member_put_get_prev_kv() {
    let (_cluster, mut c) = single().await;
    put_get_prev_kv(&mut c, "pg").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn single_member_put_option_errors() {
    let (_cluster, mut c) = single().await;
    put_options_errors(&mut c, "po").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn single_member_ranges() {
    let (_cluster, mut c) = single().await;
    ranges(&mut c, "rg").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn single_member_sorting() {
    let (_cluster, mut c) = single().await;
    sorting(&mut c, "so").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn single_member_delete_ranges() {
    let (_cluster, mut c) = single().await;
    delete_ranges(&mut c, "dr").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn single_member_txn_compares() {
    let (_cluster, mut c) = single().await;
    txn_compares(&mut c, "tc").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn single_member_txn_errors() {
    let (_cluster, mut c) = single().await;
    txn_errors(&mut c, "te").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn single_member_compaction() {
    let (_cluster, mut c) = single().await;
    compaction(&mut c, "cp").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn single_member_empty_key() {
    let (_cluster, mut c) = single().await;
    empty_key(&mut c).await;
}

/// Every scenario above through `kvd proxy`, with its read cache on:
/// the same answers as from a member (serializable reads included).
#[tokio::test(flavor = "multi_thread")]
async fn every_scenario_through_the_proxy() {
    if against_etcd() {
        return;
    }
    let cluster = Cluster::start(1).await;
    let dir = TestDir::new();
    let proxy = common::proxy::start_proxy(dir.path(), "proxy", &cluster.endpoints(), &[]).await;
    let mut c = connect(&proxy.endpoints()).await;
    every_scenario(&mut c).await;
}

/// A request larger than --max-request-bytes is refused with etcd's error
/// (etcd checks the size of the Raft request it would propose: gRPC itself
/// accepts up to max-request-bytes + 512 KiB).
#[tokio::test(flavor = "multi_thread")]
async fn request_larger_than_max_request_bytes_is_refused() {
    let cluster = Cluster::start_with(
        1,
        ClusterOptions {
            extra_args: vec!["--max-request-bytes".into(), "1024".into()],
            ..ClusterOptions::default()
        },
    )
    .await;
    let mut c = cluster.client(0).await;
    let rev = current_revision(&c).await;
    assert_status(
        c.put("big", vec![b'x'; 2048], None).await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    assert_status(
        c.txn(Txn::new().and_then(vec![
            TxnOp::put("big1", vec![b'x'; 600], None),
            TxnOp::put("big2", vec![b'x'; 600], None),
        ]))
        .await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    assert_eq!(current_revision(&c).await, rev);
    assert!(get_one(&mut c, "big").await.is_none());
    // Well under the limit is fine.
    put(&mut c, "small", &"y".repeat(512)).await;
    assert_eq!(
        get_one(&mut c, "small").await.expect("small").value().len(),
        512
    );
}

// ---------------------------------------------------------------------------
// Tests: three members
// ---------------------------------------------------------------------------

/// Every scenario, through a follower of a fresh 3-member cluster.
#[tokio::test(flavor = "multi_thread")]
async fn three_members_all_scenarios_through_a_follower() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader_index().await;
    let follower = (leader + 1) % 3;
    let mut c = cluster.client(follower).await;

    every_scenario(&mut c).await;

    // The same scenarios, now through the leader.
    let mut c = cluster.client(leader).await;
    put_get_prev_kv(&mut c, "L-pg").await;
    txn_compares(&mut c, "L-tc").await;
    compaction(&mut c, "L-cp").await;
}

/// A write acknowledged by one member is seen at once by a linearizable read
/// on every other member; headers agree on the cluster and name the member.
#[tokio::test(flavor = "multi_thread")]
async fn three_members_linearizable_reads_see_acknowledged_writes() {
    let cluster = Cluster::start(3).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(cluster.client(i).await);
    }
    for round in 0..30 {
        let writer = round % 3;
        let key = format!("lin/{round:02}");
        let value = format!("v{round}");
        let rev = put(&mut clients[writer], &key, &value).await;
        for (reader, client) in clients.iter_mut().enumerate() {
            if reader == writer {
                continue;
            }
            let resp = get(client, &key, None).await;
            assert_eq!(
                resp.kvs().len(),
                1,
                "member {reader} misses {key} written via {writer}"
            );
            assert_eq!(value_of(&resp), value);
            assert_eq!(resp.kvs()[0].mod_revision(), rev);
            assert!(resp.header().expect("header").revision() >= rev);
        }
    }

    let mut cluster_ids = std::collections::HashSet::new();
    let mut member_ids = std::collections::HashSet::new();
    for client in clients.iter_mut() {
        let resp = get(client, "lin/00", None).await;
        let header = resp.header().expect("header");
        assert!(header.raft_term() >= 1);
        cluster_ids.insert(header.cluster_id());
        member_ids.insert(header.member_id());
    }
    assert_eq!(cluster_ids.len(), 1, "one cluster id");
    assert!(!cluster_ids.contains(&0));
    assert_eq!(member_ids.len(), 3, "each member answers with its own id");
    assert!(!member_ids.contains(&0));

    // Member ids in headers match the member list.
    let list = clients[0].member_list().await.expect("member list");
    let listed: std::collections::HashSet<u64> = list.members().iter().map(|m| m.id()).collect();
    assert_eq!(listed, member_ids);
}

fn value_of(resp: &GetResponse) -> String {
    value(&resp.kvs()[0])
}

/// The chunks of a `RangeStream` answer, each as `(keys, header revision,
/// more, count)`.
async fn stream_chunks(
    c: &Client,
    key: &str,
    options: GetOptions,
) -> Result<Vec<(Vec<String>, Option<i64>, bool, i64)>, etcd_client::Error> {
    let mut s = c.kv_client().get_stream(key, Some(options)).await?;
    let mut chunks = Vec::new();
    while let Some(r) = s.message().await? {
        let keys = r
            .kvs()
            .iter()
            .map(|kv| kv.key_str().unwrap().to_string())
            .collect();
        chunks.push((keys, r.header().map(|h| h.revision()), r.more(), r.count()));
    }
    Ok(chunks)
}

/// etcd 3.7's `RangeStream`: chunks in key order, read from one revision,
/// the header, `more` and `count` on the last chunk only; etcd's refusals.
#[tokio::test(flavor = "multi_thread")]
async fn range_stream_sends_chunks_of_one_revision_and_the_header_last() {
    const KEYS: usize = 3_000;
    let cluster = Cluster::start(1).await;
    let mut c = cluster.client(0).await;
    let value = "v".repeat(1024);
    let mut kv = c.kv_client();
    let puts: Vec<_> = (0..KEYS)
        .map(|i| {
            let mut kv = kv.clone();
            let value = value.clone();
            async move { kv.put(format!("stream/{i:05}"), value, None).await }
        })
        .collect();
    for r in futures::future::join_all(puts).await {
        r.expect("put");
    }
    let rev = current_revision(&c).await;
    let all: Vec<String> = (0..KEYS).map(|i| format!("stream/{i:05}")).collect();

    let chunks = stream_chunks(&c, "stream/", GetOptions::new().with_prefix())
        .await
        .expect("range stream");
    assert!(chunks.len() > 2, "{} chunks", chunks.len());
    let keys: Vec<String> = chunks.iter().flat_map(|c| c.0.clone()).collect();
    assert_eq!(keys, all);
    let (last, rest) = chunks.split_last().unwrap();
    assert_eq!((last.1, last.2, last.3), (Some(rev), false, KEYS as i64));
    for (_, header, more, count) in rest {
        assert_eq!((*header, *more, *count), (None, false, 0));
    }
    assert_eq!(rest[0].0.len(), 10, "etcd's first chunk");

    // A limit: its keys, then `more` and the whole count.
    let limited = stream_chunks(
        &c,
        "stream/",
        GetOptions::new().with_prefix().with_limit(1234),
    )
    .await
    .expect("limited stream");
    let keys: Vec<String> = limited.iter().flat_map(|c| c.0.clone()).collect();
    assert_eq!(keys, all[..1234]);
    let last = limited.last().unwrap();
    assert_eq!((last.2, last.3), (true, KEYS as i64));

    // Writes during the stream are not in it.
    let mut s = kv
        .get_stream("stream/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("stream");
    let first = s.message().await.expect("first chunk").expect("a chunk");
    put(&mut c, "stream/99999", "late").await;
    let mut seen = first.kvs().len();
    let mut header = None;
    while let Some(r) = s.message().await.expect("chunk") {
        assert!(r.kvs().iter().all(|kv| kv.key() != b"stream/99999"));
        seen += r.kvs().len();
        header = r.header().map(|h| h.revision());
    }
    assert_eq!((seen, header), (KEYS, Some(rev)));

    // Count only: one chunk.
    let counted = stream_chunks(
        &c,
        "stream/",
        GetOptions::new().with_prefix().with_count_only(),
    )
    .await
    .expect("count");
    assert_eq!(counted.len(), 1);
    assert_eq!(counted[0].3, KEYS as i64 + 1);

    // etcd refuses sorting and revision filters on a stream.
    let sorted = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Mod, SortOrder::Descend);
    assert_status(
        stream_chunks(&c, "stream/", sorted).await,
        Code::Unimplemented,
        "RangeStream does not support custom sort orders",
    );
    let filtered = GetOptions::new().with_prefix().with_min_mod_revision(2);
    assert_status(
        stream_chunks(&c, "stream/", filtered).await,
        Code::Unimplemented,
        "RangeStream does not support revision filters",
    );
}
