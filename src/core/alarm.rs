//! Alarms (etcd's `alarm` bucket and `Maintenance.Alarm`): which member
//! raised which alarm, replicated through Raft so that every member refuses
//! the same writes. NOSPACE is raised by a member whose backend exceeds
//! `--quota-backend-bytes`; while any member's NOSPACE is active, puts,
//! transactions with puts and lease grants fail with "etcdserver: mvcc:
//! database space exceeded" at apply (etcd's `applierV3Capped`), and reads,
//! deletes, compaction and revokes still work, until `alarm disarm`.
//!
//! Stored as one list under the `meta` key [`META_ALARMS`] (so the write
//! path checks it with one point read).

use etcd_client::proto::{PbAlarmMember, PbAlarmRequest, PbTxnOpRequest, PbTxnRequest};
use fjall::Readable;
use prost::Message as _;

use crate::core::errors::EtcdError;
use crate::core::storage::Storage;

/// `meta` key: the active alarms (an [`AlarmList`]).
pub const META_ALARMS: &[u8] = b"alarms";

/// `etcdserverpb.AlarmType.NONE`: in a GET, every type.
pub const NONE: i32 = 0;
/// `etcdserverpb.AlarmType.NOSPACE`.
pub const NOSPACE: i32 = 1;
/// `etcdserverpb.AlarmType.CORRUPT`.
pub const CORRUPT: i32 = 2;

/// `AlarmRequest.AlarmAction.GET`.
const ACTION_GET: i32 = 0;
/// `AlarmRequest.AlarmAction.ACTIVATE`.
const ACTION_ACTIVATE: i32 = 1;
/// `AlarmRequest.AlarmAction.DEACTIVATE`.
const ACTION_DEACTIVATE: i32 = 2;

/// The stored list of active alarms.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlarmList {
    /// (member, alarm type) pairs, in the order raised.
    #[prost(message, repeated, tag = "1")]
    pub alarms: Vec<PbAlarmMember>,
}

/// The active alarms, through reader `r`.
///
/// # Errors
/// A storage error, or a stored list that does not decode.
pub fn list<R: Readable>(r: &R, s: &Storage) -> Result<Vec<PbAlarmMember>, EtcdError> {
    match r.get(&s.meta, META_ALARMS)? {
        Some(v) => AlarmList::decode(v.as_ref())
            .map(|l| l.alarms)
            .map_err(|e| EtcdError::Internal(format!("stored alarms: {e}"))),
        None => Ok(Vec::new()),
    }
}

/// Whether any member's NOSPACE alarm is active.
///
/// # Errors
/// As [`list`].
pub fn nospace<R: Readable>(r: &R, s: &Storage) -> Result<bool, EtcdError> {
    Ok(list(r, s)?.iter().any(|a| a.alarm == NOSPACE))
}

/// Whether a transaction holds a put on any branch, nested ones included
/// (a NOSPACE alarm refuses it, with plain puts and lease grants).
pub fn txn_puts(t: &PbTxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .any(|o| match &o.request {
            Some(PbTxnOpRequest::RequestPut(_)) => true,
            Some(PbTxnOpRequest::RequestTxn(t)) => txn_puts(t),
            _ => false,
        })
}

/// Applies an `AlarmRequest` inside the entry's transaction, as etcd's
/// `applierV3backend.Alarm`: GET lists the alarms of a type (NONE: all);
/// ACTIVATE records (member, type) and answers it; DEACTIVATE removes
/// exactly that pair and answers it, or nothing when it was not active.
///
/// # Errors
/// A storage error.
pub fn apply(
    tx: &mut fjall::SingleWriterWriteTx<'_>,
    s: &Storage,
    req: &PbAlarmRequest,
) -> Result<Vec<PbAlarmMember>, EtcdError> {
    let mut alarms = list(&*tx, s)?;
    let pair = PbAlarmMember {
        member_id: req.member_id,
        alarm: req.alarm,
    };
    let answer = match req.action {
        ACTION_GET => alarms
            .iter()
            .filter(|a| req.alarm == NONE || a.alarm == req.alarm)
            .cloned()
            .collect(),
        ACTION_ACTIVATE => {
            if !alarms.contains(&pair) {
                alarms.push(pair);
            }
            vec![pair]
        }
        ACTION_DEACTIVATE => {
            let before = alarms.len();
            alarms.retain(|a| *a != pair);
            if alarms.len() < before {
                vec![pair]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    };
    if matches!(req.action, ACTION_ACTIVATE | ACTION_DEACTIVATE) {
        tx.insert(&s.meta, META_ALARMS, AlarmList { alarms }.encode_to_vec());
    }
    Ok(answer)
}

/// An alarm as etcd's `Status.errors` spells it (`proto.CompactTextString`
/// of the `AlarmMember`): `memberID:<decimal id> alarm:NOSPACE `.
pub fn describe(a: &PbAlarmMember) -> String {
    let name = match a.alarm {
        NONE => "NONE".to_string(),
        NOSPACE => "NOSPACE".to_string(),
        CORRUPT => "CORRUPT".to_string(),
        other => other.to_string(),
    };
    format!("memberID:{} alarm:{name} ", a.member_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{PbDeleteRequest, PbPutRequest, PbRangeRequest, PbTxnRequestOp};

    fn txn(ops: Vec<PbTxnOpRequest>) -> PbTxnRequest {
        PbTxnRequest {
            compare: Vec::new(),
            success: Vec::new(),
            failure: ops
                .into_iter()
                .map(|request| PbTxnRequestOp {
                    request: Some(request),
                })
                .collect(),
        }
    }

    #[test]
    fn a_put_anywhere_in_a_txn_counts() {
        let reads = txn(vec![
            PbTxnOpRequest::RequestRange(PbRangeRequest::default()),
        ]);
        assert!(!txn_puts(&reads));
        let deletes = txn(vec![PbTxnOpRequest::RequestDeleteRange(
            PbDeleteRequest::default(),
        )]);
        assert!(!txn_puts(&deletes));
        let nested_put = txn(vec![
            PbTxnOpRequest::RequestRange(PbRangeRequest::default()),
            PbTxnOpRequest::RequestTxn(txn(vec![PbTxnOpRequest::RequestPut(
                PbPutRequest::default(),
            )])),
        ]);
        assert!(txn_puts(&nested_put));
    }

    #[test]
    fn describe_matches_etcds_status_errors() {
        let a = PbAlarmMember {
            member_id: 10276657743932975437,
            alarm: NOSPACE,
        };
        assert_eq!(describe(&a), "memberID:10276657743932975437 alarm:NOSPACE ");
    }
}
