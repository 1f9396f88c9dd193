//! The events of one revision as the hub hands them to every stream that
//! watches them: decoded, for matching keys and filters, and encoded for the
//! wire once for all those streams (issue 10: "events of one revision
//! encoded once for all its watchers"), rather than copied and encoded once
//! per watcher.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};
use etcd_client::proto::PbEvent;
use prost::Message as _;

/// Field number of `events` in etcd's `WatchResponse`
/// (api/etcdserverpb/rpc.proto).
pub const WATCH_RESPONSE_EVENTS_FIELD: u32 = 11;

/// Every event of one revision, in order, with each event's wire encoding
/// made on first use (by whichever stream needs it first) and then shared.
#[derive(Debug)]
pub struct SharedEvents {
    events: Vec<PbEvent>,
    /// Per event, its record without and with `prev_kv`.
    encoded: Vec<[OnceLock<Bytes>; 2]>,
}

impl SharedEvents {
    /// The events of one revision, in the order they were applied.
    pub fn new(events: Vec<PbEvent>) -> Self {
        let encoded = events.iter().map(|_| Default::default()).collect();
        Self { events, encoded }
    }

    /// The decoded events.
    pub fn events(&self) -> &[PbEvent] {
        &self.events
    }

    /// Bytes this revision can come to hold while queued, given `estimate`
    /// (the size of its decoded events): the events, and the encodings the
    /// streams make of them, each about as large (one without `prev_kv`, and
    /// one with it when the events carry one).
    pub fn held_bytes(&self, estimate: usize) -> usize {
        let copies = if self.events.iter().any(|e| e.prev_kv.is_some()) {
            3
        } else {
            2
        };
        estimate.saturating_mul(copies)
    }

    /// Event `i` as a `WatchResponse.events` field record (tag, length,
    /// `mvccpb.Event`), with its `prev_kv` when `prev_kv` is set and the
    /// event has one; `None` past the last event. Encoded once per shape,
    /// then a reference-counted copy.
    pub fn record(&self, i: usize, prev_kv: bool) -> Option<Bytes> {
        let event = self.events.get(i)?;
        let with_prev = prev_kv && event.prev_kv.is_some();
        let cell = &self.encoded.get(i)?[usize::from(with_prev)];
        let bytes = cell.get_or_init(|| {
            if with_prev || event.prev_kv.is_none() {
                event_record(event)
            } else {
                event_record(&PbEvent {
                    r#type: event.r#type,
                    kv: event.kv.clone(),
                    prev_kv: None,
                })
            }
        });
        Some(bytes.clone())
    }
}

/// `event` encoded as one `WatchResponse.events` field record: appended to
/// an encoded `WatchResponse`, it adds that event (protobuf repeated fields
/// concatenate).
pub fn event_record(event: &PbEvent) -> Bytes {
    let len = event.encoded_len();
    let mut buf = BytesMut::with_capacity(
        prost::encoding::key_len(WATCH_RESPONSE_EVENTS_FIELD)
            + prost::encoding::encoded_len_varint(len as u64)
            + len,
    );
    prost::encoding::message::encode(WATCH_RESPONSE_EVENTS_FIELD, event, &mut buf);
    buf.freeze()
}
