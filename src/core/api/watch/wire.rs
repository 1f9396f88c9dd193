//! What a watch stream sends: [`WatchOut`], an etcd `WatchResponse` whose
//! events may already be encoded (shared by every stream a revision goes
//! to, see `core::watch::SharedEvents`), and etcd's `sendFragments` split of
//! large responses.

use bytes::{Buf, BufMut, Bytes};
use etcd_client::proto::PbWatchResponse;
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};

/// An etcd `WatchResponse` on its way to the client: its own fields in
/// `head`, then event records already encoded (`WatchResponse.events`
/// field records from [`crate::core::watch::SharedEvents::record`] or
/// [`crate::core::watch::event_record`]). Its encoding is byte for byte
/// the `WatchResponse` with `head`'s events followed by those; decoding
/// one fills `head` alone.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WatchOut {
    head: PbWatchResponse,
    events: Vec<Bytes>,
}

impl WatchOut {
    /// `head` followed by the encoded `events`.
    pub fn new(head: PbWatchResponse, events: Vec<Bytes>) -> Self {
        Self { head, events }
    }

    /// The response as a client decodes it.
    ///
    /// # Errors
    /// An event record that is not a valid `mvccpb.Event` (none that kvd
    /// makes).
    pub fn decoded(&self) -> Result<PbWatchResponse, DecodeError> {
        PbWatchResponse::decode(self.encode_to_vec().as_slice())
    }
}

impl From<PbWatchResponse> for WatchOut {
    fn from(head: PbWatchResponse) -> Self {
        Self::new(head, Vec::new())
    }
}

impl Message for WatchOut {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        // prost writes fields in field-number order and `events` (11) is
        // the highest, so the records may simply follow.
        self.head.encode_raw(buf);
        for record in &self.events {
            buf.put_slice(record);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        self.head.merge_field(tag, wire_type, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.head.encoded_len() + self.events.iter().map(Bytes::len).sum::<usize>()
    }

    fn clear(&mut self) {
        self.head.clear();
        self.events.clear();
    }
}

/// `head` with the encoded `events`, split as etcd's `sendFragments`:
/// one response when smaller than `limit` bytes or with fewer than two
/// events; otherwise consecutive parts of at most `limit` bytes (but at
/// least one event each), every part but the last with `fragment` set.
pub fn fragments(head: PbWatchResponse, events: Vec<Bytes>, limit: usize) -> Vec<WatchOut> {
    let base_len = head.encoded_len();
    let total = base_len + events.iter().map(Bytes::len).sum::<usize>();
    if total < limit || events.len() < 2 {
        return vec![WatchOut::new(head, events)];
    }
    let mut parts = Vec::new();
    let mut cur: Vec<Bytes> = Vec::new();
    let mut size = base_len;
    for record in events {
        if !cur.is_empty() && size + record.len() >= limit {
            let part = PbWatchResponse {
                fragment: true,
                ..head.clone()
            };
            parts.push(WatchOut::new(part, std::mem::take(&mut cur)));
            size = base_len;
        }
        size += record.len();
        cur.push(record);
    }
    parts.push(WatchOut::new(
        PbWatchResponse {
            fragment: false,
            ..head
        },
        cur,
    ));
    parts
}
