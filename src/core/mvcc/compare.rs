//! etcd's txn compares (`applyCompare`/`compareKV`): a key-value against a
//! `Compare` on its version, create, mod revision, value or lease.

use std::cmp::Ordering;

use etcd_client::proto::{PbCompare, PbCompareTarget, PbKeyValue, PbTargetUnion};

// etcdserverpb.Compare.CompareResult.
const CMP_EQUAL: i32 = 0;
const CMP_GREATER: i32 = 1;
const CMP_LESS: i32 = 2;
const CMP_NOT_EQUAL: i32 = 3;

/// Whether `kv` satisfies `c`. Only the union variant that matches `c`'s
/// target counts; any other (or none) compares against 0 or the empty
/// value, and an unknown target compares equal (etcd 3.4's `compareKV`).
pub(crate) fn compare_kv(c: &PbCompare, kv: &PbKeyValue) -> bool {
    use PbCompareTarget as T;
    use PbTargetUnion as U;
    let target = T::try_from(c.target);
    let want = match (target, c.target_union.as_ref()) {
        (Ok(T::Create), Some(U::CreateRevision(v)))
        | (Ok(T::Mod), Some(U::ModRevision(v)))
        | (Ok(T::Version), Some(U::Version(v)))
        | (Ok(T::Lease), Some(U::Lease(v))) => *v,
        _ => 0,
    };
    let ord = match target {
        Ok(T::Value) => match c.target_union.as_ref() {
            Some(U::Value(v)) => kv.value.as_slice().cmp(v.as_slice()),
            _ => kv.value.as_slice().cmp(&[][..]),
        },
        Ok(T::Create) => kv.create_revision.cmp(&want),
        Ok(T::Mod) => kv.mod_revision.cmp(&want),
        Ok(T::Version) => kv.version.cmp(&want),
        Ok(T::Lease) => kv.lease.cmp(&want),
        Err(_) => Ordering::Equal,
    };
    compare_result(c.result, ord)
}

fn compare_result(result: i32, ord: Ordering) -> bool {
    match result {
        CMP_EQUAL => ord == Ordering::Equal,
        CMP_NOT_EQUAL => ord != Ordering::Equal,
        CMP_GREATER => ord == Ordering::Greater,
        CMP_LESS => ord == Ordering::Less,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv() -> PbKeyValue {
        PbKeyValue {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            create_revision: 5,
            mod_revision: 9,
            version: 3,
            lease: 0,
        }
    }

    fn compare(target: i32, union: Option<PbTargetUnion>, result: i32) -> PbCompare {
        PbCompare {
            result,
            target,
            key: b"k".to_vec(),
            range_end: Vec::new(),
            target_union: union,
        }
    }

    #[test]
    fn only_the_union_matching_the_target_counts_as_etcd_does() {
        let mod_target = PbCompareTarget::Mod as i32;
        // MOD against a CreateRevision union: mod revision 9 against 0.
        let c = compare(
            mod_target,
            Some(PbTargetUnion::CreateRevision(9)),
            CMP_EQUAL,
        );
        assert!(!compare_kv(&c, &kv()));
        let c = compare(
            mod_target,
            Some(PbTargetUnion::CreateRevision(9)),
            CMP_GREATER,
        );
        assert!(compare_kv(&c, &kv()));
        let c = compare(mod_target, Some(PbTargetUnion::ModRevision(9)), CMP_EQUAL);
        assert!(compare_kv(&c, &kv()));
        // VALUE without a value union: against the empty value.
        let value = PbCompareTarget::Value as i32;
        let c = compare(value, Some(PbTargetUnion::Version(3)), CMP_GREATER);
        assert!(compare_kv(&c, &kv()));
        // An unknown target compares equal.
        for (result, expected) in [
            (CMP_EQUAL, true),
            (CMP_NOT_EQUAL, false),
            (CMP_GREATER, false),
            (CMP_LESS, false),
        ] {
            let c = compare(42, Some(PbTargetUnion::Version(3)), result);
            assert_eq!(compare_kv(&c, &kv()), expected, "result {result}");
        }
    }
}
