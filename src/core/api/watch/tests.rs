//! Unit tests of the watch stream task: fragmentation and progress.

use super::*;
use std::time::Duration;

use etcd_client::proto::{PbEvent, PbKeyValue};

use crate::core::mvcc::EVENT_PUT;
use prost::Message as _;

use crate::core::raft::EventSink;
use crate::core::storage::Storage;
use crate::core::watch::WatchConfig;

fn event(key: &str, value_len: usize) -> PbEvent {
    PbEvent {
        r#type: EVENT_PUT,
        kv: Some(PbKeyValue {
            key: key.as_bytes().to_vec(),
            value: vec![b'x'; value_len],
            ..Default::default()
        }),
        prev_kv: None,
    }
}

fn records(events: &[PbEvent]) -> Vec<bytes::Bytes> {
    events
        .iter()
        .map(crate::core::watch::event_record)
        .collect()
}

#[test]
fn fragments_split_like_etcd() {
    let head = PbWatchResponse {
        watch_id: 3,
        ..Default::default()
    };
    let events: Vec<PbEvent> = (0..10).map(|i| event(&format!("k{i}"), 100)).collect();
    let whole = fragments(head.clone(), records(&events), 10_000);
    assert_eq!(whole.len(), 1);
    let whole = whole[0].decoded().expect("decodes");
    assert!(!whole.fragment);
    assert_eq!(whole.events, events);
    let parts = fragments(head.clone(), records(&events), 350);
    assert!(parts.len() > 1, "{parts:?}");
    let mut total = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let d = p.decoded().expect("decodes");
        assert_eq!(d.fragment, i + 1 < parts.len());
        assert_eq!(d.watch_id, 3);
        assert!(p.encoded_len() < 350 || d.events.len() == 1);
        assert_eq!(p.encoded_len(), d.encoded_len());
        total.extend(d.events);
    }
    assert_eq!(total, events);
    // One big event is never split.
    assert_eq!(fragments(head, records(&[event("k", 1000)]), 10).len(), 1);
}

/// A response built from shared records encodes byte for byte as the same
/// response built by prost, with and without `prev_kv`.
#[test]
fn shared_records_encode_as_prost_does() {
    let mut with_prev = event("a", 10);
    with_prev.prev_kv = with_prev.kv.clone();
    let plain = event("b", 20);
    let shared = crate::core::watch::SharedEvents::new(vec![with_prev.clone(), plain.clone()]);
    let head = PbWatchResponse {
        header: Some(PbResponseHeader {
            revision: 7,
            ..Default::default()
        }),
        watch_id: 2,
        ..Default::default()
    };
    for prev_kv in [false, true] {
        let records = (0..2)
            .map(|i| shared.record(i, prev_kv).expect("event"))
            .collect();
        let out = WatchOut::new(head.clone(), records);
        let mut first = with_prev.clone();
        if !prev_kv {
            first.prev_kv = None;
        }
        let expected = PbWatchResponse {
            events: vec![first, plain.clone()],
            ..head.clone()
        };
        assert_eq!(out.encode_to_vec(), expected.encode_to_vec());
        assert_eq!(out.encoded_len(), expected.encoded_len());
    }
    assert!(shared.record(2, false).is_none());
}

async fn recv(
    responses: &mut std::pin::Pin<Box<dyn futures::Stream<Item = Result<WatchOut, Status>> + Send>>,
) -> PbWatchResponse {
    tokio::time::timeout(Duration::from_secs(5), responses.next())
        .await
        .expect("a response in time")
        .expect("stream open")
        .expect("not an error")
        .decoded()
        .expect("decodes")
}

/// Periodic progress notifications need a short interval, which only
/// the hub's constructor takes: checked here rather than over the wire.
#[tokio::test]
async fn progress_notify_reports_idle_watches_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(dir.path()).expect("storage");
    let hub = WatchHub::new(
        &storage,
        WatchConfig {
            progress_interval: Duration::from_millis(200),
            ..WatchConfig::default()
        },
    )
    .expect("hub");
    let status = Arc::new(NodeStatus::new(
        crate::core::types::MemberId(1),
        crate::core::types::ClusterId(2),
    ));
    status.set_term_for_test(3);
    let (out, batches) = mpsc::channel(4);
    let mut responses = responses(batches);
    let (requests, inbound) = mpsc::channel::<Result<PbWatchRequest, Status>>(16);
    let task = StreamTask::new(hub.clone(), status, 1 << 20, out);
    tokio::spawn(task.run(ReceiverStream::new(inbound)));
    let mut create = PbWatchRequest {
        request_union: Some(PbWatchRequestUnion::CreateRequest(Default::default())),
    };
    if let Some(PbWatchRequestUnion::CreateRequest(c)) = create.request_union.as_mut() {
        c.key = b"k".to_vec();
        c.progress_notify = true;
    }
    requests.send(Ok(create)).await.expect("send create");
    let created = recv(&mut responses).await;
    assert!(created.created);
    assert_eq!(created.watch_id, 0);
    let header = created.header.expect("header");
    assert_eq!(
        (header.cluster_id, header.member_id, header.raft_term),
        (2, 1, 3)
    );
    // Idle: a progress notification for watch 0 at the current revision.
    let progress = recv(&mut responses).await;
    assert_eq!(progress.watch_id, 0);
    assert!(progress.events.is_empty());
    assert_eq!(progress.header.expect("header").revision, 1);
    // An event in the interval elides the next notification.
    hub.publish(vec![(2, vec![event("k", 1)])]);
    let ev = recv(&mut responses).await;
    assert_eq!(ev.events.len(), 1);
    assert_eq!(ev.header.expect("header").revision, 2);
    let next = recv(&mut responses).await;
    assert!(next.events.is_empty());
    assert_eq!(next.header.expect("header").revision, 2);
}
