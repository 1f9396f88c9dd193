//! Unit tests of the watch stream task: fragmentation and progress.

use super::*;
use std::time::Duration;

use etcd_client::proto::PbKeyValue;

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

#[test]
fn fragments_split_like_etcd() {
    let response = PbWatchResponse {
        watch_id: 3,
        events: (0..10).map(|i| event(&format!("k{i}"), 100)).collect(),
        ..Default::default()
    };
    let whole = fragments(response.clone(), 10_000);
    assert_eq!(whole.len(), 1);
    assert!(!whole[0].fragment);
    let parts = fragments(response.clone(), 350);
    assert!(parts.len() > 1, "{parts:?}");
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.fragment, i + 1 < parts.len());
        assert_eq!(p.watch_id, 3);
        assert!(p.encoded_len() < 350 || p.events.len() == 1);
    }
    let total: Vec<PbEvent> = parts.into_iter().flat_map(|p| p.events).collect();
    assert_eq!(total, response.events);
    // One big event is never split.
    let single = PbWatchResponse {
        events: vec![event("k", 1000)],
        ..Default::default()
    };
    assert_eq!(fragments(single, 10).len(), 1);
}

async fn recv(responses: &mut mpsc::Receiver<Result<PbWatchResponse, Status>>) -> PbWatchResponse {
    tokio::time::timeout(Duration::from_secs(5), responses.recv())
        .await
        .expect("a response in time")
        .expect("stream open")
        .expect("not an error")
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
    let (out, mut responses) = mpsc::channel(16);
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
