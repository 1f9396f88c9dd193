//! etcd's txn compares (`applyCompare`/`compareKV`): a key-value against a
//! `Compare` on its version, create, mod revision, value or lease.

use std::cmp::Ordering;

use etcd_client::proto::{PbCompare, PbCompareTarget, PbKeyValue, PbTargetUnion};

// etcdserverpb.Compare.CompareResult.
const CMP_EQUAL: i32 = 0;
const CMP_GREATER: i32 = 1;
const CMP_LESS: i32 = 2;
const CMP_NOT_EQUAL: i32 = 3;

pub(crate) fn compare_kv(c: &PbCompare, kv: &PbKeyValue) -> bool {
    let ord = match c.target_union.as_ref() {
        Some(PbTargetUnion::Value(v)) if c.target == PbCompareTarget::Value as i32 => {
            kv.value.as_slice().cmp(v.as_slice())
        }
        _ => {
            let want = match c.target_union.as_ref() {
                Some(PbTargetUnion::Version(v))
                | Some(PbTargetUnion::CreateRevision(v))
                | Some(PbTargetUnion::ModRevision(v))
                | Some(PbTargetUnion::Lease(v)) => *v,
                _ => 0,
            };
            let have = match PbCompareTarget::try_from(c.target) {
                Ok(PbCompareTarget::Version) => kv.version,
                Ok(PbCompareTarget::Create) => kv.create_revision,
                Ok(PbCompareTarget::Mod) => kv.mod_revision,
                Ok(PbCompareTarget::Lease) => kv.lease,
                Ok(PbCompareTarget::Value) => {
                    return compare_result(c.result, kv.value.as_slice().cmp(&[][..]))
                }
                Err(_) => return true,
            };
            have.cmp(&want)
        }
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
