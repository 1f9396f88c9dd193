//! Fragmenting large watch responses, as etcd's `sendFragments` does for
//! watches created with `fragment`.

use etcd_client::proto::{PbEvent, PbWatchResponse};
use prost::Message as _;

/// Splits `response` as etcd's `sendFragments`: unchanged when smaller than
/// `limit` bytes or with fewer than two events; otherwise consecutive parts
/// of at most `limit` bytes (but at least one event each), every part but
/// the last with `fragment` set.
pub fn fragments(response: PbWatchResponse, limit: usize) -> Vec<PbWatchResponse> {
    if response.encoded_len() < limit || response.events.len() < 2 {
        return vec![response];
    }
    let mut base = response;
    let events = std::mem::take(&mut base.events);
    let base_len = base.encoded_len();
    let mut parts = Vec::new();
    let mut cur: Vec<PbEvent> = Vec::new();
    let mut size = base_len;
    for ev in events {
        let len = ev.encoded_len();
        let add = 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        if !cur.is_empty() && size + add >= limit {
            parts.push(PbWatchResponse {
                events: std::mem::take(&mut cur),
                fragment: true,
                ..base.clone()
            });
            size = base_len;
        }
        size += add;
        cur.push(ev);
    }
    parts.push(PbWatchResponse {
        events: cur,
        fragment: false,
        ..base
    });
    parts
}
