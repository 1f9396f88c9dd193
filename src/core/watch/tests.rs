//! Unit tests of the hub: live path, queue overflow, rejoin and gaps.

use super::*;
use crate::core::mvcc::EVENT_PUT;

fn put(key: &str, rev: i64) -> PbEvent {
    PbEvent {
        r#type: EVENT_PUT,
        kv: Some(PbKeyValue {
            key: key.as_bytes().to_vec(),
            mod_revision: rev,
            create_revision: rev,
            version: 1,
            value: b"v".to_vec(),
            lease: 0,
        }),
        prev_kv: None,
    }
}

fn hub(config: WatchConfig) -> (tempfile::TempDir, Arc<WatchHub>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::open(dir.path()).expect("open storage");
    let hub = WatchHub::new(&storage, config).expect("hub");
    (dir, hub)
}

fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<StreamItem>) -> StreamItem {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(item) = rx.try_recv() {
            return item;
        }
        assert!(std::time::Instant::now() < deadline, "no stream item");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn single_key_detection() {
    assert_eq!(single_key(&KeyRange::new(b"a", b"")), Some(b"a".to_vec()));
    assert_eq!(single_key(&KeyRange::new(b"a", b"b")), None);
    assert_eq!(single_key(&KeyRange::new(b"a", b"\0")), None);
}

#[test]
fn full_queue_moves_watcher_off_the_live_path_and_rejoin_replays_buffer() {
    let (_dir, hub) = hub(WatchConfig {
        watcher_queue: 2,
        rejoin_buffer: 8,
        ..WatchConfig::default()
    });
    let (tx, mut rx) = StreamSender::channel();
    let reg = hub.register(&tx, KeyRange::new(b"k", b""), 0, false);
    assert_eq!(reg.behind, None);
    for rev in 2..=4 {
        hub.publish(vec![(rev, vec![put("k", rev)])]);
    }
    for rev in 2..=3 {
        match next(&mut rx) {
            StreamItem::Events { revision, .. } => assert_eq!(revision, rev),
            other => panic!("unexpected {other:?}"),
        }
    }
    match next(&mut rx) {
        StreamItem::Behind { next_rev, .. } => assert_eq!(next_rev, 4),
        other => panic!("unexpected {other:?}"),
    }
    hub.begin_catch_up(&[(reg.id, 4)]);
    hub.publish(vec![(5, vec![put("k", 5)])]);
    hub.publish(vec![(6, vec![put("other", 6)])]);
    hub.publish(vec![(7, vec![put("k", 7)])]);
    while hub.current() < 7 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The snapshot held revision 5 already: only 7 comes from the buffer.
    reg.queued.store(0, Ordering::Relaxed);
    assert_eq!(hub.rejoin(reg.id, 5), Rejoin::Synced);
    match next(&mut rx) {
        StreamItem::Events { revision, .. } => assert_eq!(revision, 7),
        other => panic!("unexpected {other:?}"),
    }
    // Revision 7 is never sent twice, even if dispatched late.
    hub.publish(vec![(8, vec![put("k", 8)])]);
    match next(&mut rx) {
        StreamItem::Events { revision, .. } => assert_eq!(revision, 8),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn rejoin_buffer_overflow_means_another_round() {
    let (_dir, hub) = hub(WatchConfig {
        rejoin_buffer: 1,
        ..WatchConfig::default()
    });
    let (tx, _rx) = StreamSender::channel();
    let reg = hub.register(&tx, KeyRange::new(b"k", b"\0"), 1, false);
    hub.publish(vec![(2, vec![put("k", 2)])]);
    while hub.current() < 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(reg.behind, Some(1));
    hub.begin_catch_up(&[(reg.id, 1)]);
    hub.publish(vec![(3, vec![put("k1", 3)])]);
    hub.publish(vec![(4, vec![put("k2", 4)])]);
    while hub.current() < 4 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(hub.rejoin(reg.id, 2), Rejoin::Behind(3));
}

#[test]
fn a_gap_takes_every_watcher_off_the_live_path() {
    let (_dir, hub) = hub(WatchConfig::default());
    let (tx, mut rx) = StreamSender::channel();
    let reg = hub.register(&tx, KeyRange::new(b"k", b""), 0, false);
    hub.publish(vec![(5, vec![put("k", 5)])]);
    match next(&mut rx) {
        StreamItem::Behind { watcher, next_rev } => {
            assert_eq!((watcher, next_rev), (reg.id, 2));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_batch_is_dispatched_in_order_and_what_overflows_the_queue_is_read_from_disk() {
    // One revision's estimate is 1 + 1 + 48 + 16 = 66 bytes: two fit.
    let (_dir, hub) = hub(WatchConfig {
        dispatch_queue_bytes: 140,
        inline_sends: 0,
        ..WatchConfig::default()
    });
    let (tx, mut rx) = StreamSender::channel();
    let reg = hub.register(&tx, KeyRange::new(b"k", b""), 0, false);
    hub.publish((2..=4).map(|rev| (rev, vec![put("k", rev)])).collect());
    for rev in 2..=3 {
        match next(&mut rx) {
            StreamItem::Events { revision, .. } => assert_eq!(revision, rev),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Revision 4 did not fit: the watcher is told to read from 4 on.
    match next(&mut rx) {
        StreamItem::Behind { watcher, next_rev } => assert_eq!((watcher, next_rev), (reg.id, 4)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(hub.current(), 4);
}

#[test]
fn revisions_nobody_watches_move_the_dispatched_revision_without_the_dispatcher() {
    let (_dir, hub) = hub(WatchConfig::default());
    let revisions = vec![(2, vec![put("k", 2)]), (3, vec![put("k", 3)])];
    // The dispatcher holds the lock for an instant every 100 ms: the fast
    // path then declines, changing nothing, and is tried again.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut revisions = revisions;
    while let Err(declined) = hub.shared.dispatch_here(revisions) {
        assert_eq!(hub.current(), 1, "a declined skip changes nothing");
        assert!(std::time::Instant::now() < deadline, "the lock stayed busy");
        revisions = declined;
    }
    assert_eq!(hub.current(), 3);
    assert_eq!(hub.shared.queued_bytes.load(Ordering::Relaxed), 0);

    // A watch starting at or below the skipped revisions reads them from
    // history; one starting after them is on the live path.
    let (tx, mut rx) = StreamSender::channel();
    let old = hub.register(&tx, KeyRange::new(b"k", b""), 2, false);
    assert_eq!(old.behind, Some(2));
    let live = hub.register(&tx, KeyRange::new(b"k", b""), 4, false);
    assert_eq!(live.behind, None);

    // With a watcher registered a small batch is dispatched here: the
    // live watcher's item is queued when the call returns.
    let mut next_revisions = vec![(4, vec![put("k", 4)])];
    while let Err(declined) = hub.shared.dispatch_here(next_revisions) {
        assert!(std::time::Instant::now() < deadline, "the lock stayed busy");
        next_revisions = declined;
    }
    match rx.try_recv().expect("queued by the caller") {
        StreamItem::Events {
            watcher, revision, ..
        } => {
            assert_eq!((watcher, revision), (live.id, 4));
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// All watchers of a stream share its byte budget: a revision queued for
/// several of them counts once, and past the budget a watcher with a new
/// revision leaves the live path; handled items give their bytes back.
#[test]
fn a_streams_watchers_share_one_byte_budget() {
    let (_dir, hub) = hub(WatchConfig {
        stream_queue_bytes: 1,
        ..WatchConfig::default()
    });
    let (tx, mut rx) = StreamSender::channel();
    let a = hub.register(&tx, KeyRange::new(b"a", b""), 0, false);
    let b = hub.register(&tx, KeyRange::new(b"b", b""), 0, false);
    // One revision for both watchers: charged once, both get it.
    hub.publish(vec![(2, vec![put("a", 2), put("b", 2)])]);
    let mut first = Vec::new();
    for _ in 0..2 {
        match next(&mut rx) {
            item @ StreamItem::Events { revision: 2, .. } => first.push(item),
            other => panic!("unexpected {other:?}"),
        }
    }
    // The budget is spent while those items are held: the next revision
    // sends its watcher off the live path.
    hub.publish(vec![(3, vec![put("a", 3)])]);
    match next(&mut rx) {
        StreamItem::Behind { watcher, next_rev } => assert_eq!((watcher, next_rev), (a.id, 3)),
        other => panic!("unexpected {other:?}"),
    }
    // Once handled, the budget is free again for the other watcher.
    drop(first);
    hub.publish(vec![(4, vec![put("b", 4)])]);
    match next(&mut rx) {
        StreamItem::Events {
            watcher, revision, ..
        } => assert_eq!((watcher, revision), (b.id, 4)),
        other => panic!("unexpected {other:?}"),
    }
}

/// A batch past `inline_sends`, one after a gap, or one a `prev_kv`
/// watcher needs goes to the dispatcher thread; a small batch is
/// dispatched here only when nothing is queued ahead of it, so the stream
/// sees every revision once and in order either way.
#[test]
fn batches_dispatched_here_and_by_the_dispatcher_keep_their_order() {
    // Items taken off the channel here are never marked handled.
    let (_dir, hub) = hub(WatchConfig {
        inline_sends: 2,
        watcher_queue: 1_000,
        ..WatchConfig::default()
    });
    let (tx, mut rx) = StreamSender::channel();
    hub.register(&tx, KeyRange::new(b"k", b""), 0, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let batch = |revs: std::ops::RangeInclusive<i64>, key: &str| {
        revs.map(|rev| (rev, vec![put(key, rev)]))
            .collect::<Vec<_>>()
    };
    // Dispatched here (retried while the dispatcher's tick holds the
    // lock): queued for the stream when the call returns.
    let here = |revisions: Vec<RevisionEvents>| {
        let mut revisions = revisions;
        while let Err(declined) = hub.shared.dispatch_here(revisions) {
            assert!(std::time::Instant::now() < deadline, "declined");
            revisions = declined;
        }
    };
    here(batch(2..=3, "k"));
    for want in 2..=3 {
        match rx.try_recv().expect("queued by the caller") {
            StreamItem::Events { revision, .. } => assert_eq!(revision, want),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Declined, changing nothing: too many pairs, a gap, bytes queued.
    assert!(
        hub.shared.dispatch_here(batch(4..=6, "k")).is_err(),
        "3 pairs > 2"
    );
    assert!(
        hub.shared.dispatch_here(batch(5..=5, "k")).is_err(),
        "a gap"
    );
    hub.shared.queued_bytes.fetch_add(1, Ordering::Relaxed);
    assert!(
        hub.shared.dispatch_here(batch(4..=4, "k")).is_err(),
        "queued"
    );
    hub.shared.queued_bytes.fetch_sub(1, Ordering::Relaxed);
    assert_eq!(hub.current(), 3);
    assert!(rx.try_recv().is_err());

    // Interleaved: each round's first batch goes to the dispatcher, the
    // next two here or behind it, whichever the race gives.
    for round in 0..50 {
        let base = 10 * round;
        hub.publish(batch(base + 4..=base + 6, "k"));
        hub.publish(batch(base + 7..=base + 7, "k"));
        hub.publish(batch(base + 8..=base + 8, "k"));
        // Revisions base+9..=base+13 are left out of the stream's key.
        hub.publish(batch(base + 9..=base + 13, "x"));
        for want in base + 4..=base + 8 {
            match next(&mut rx) {
                StreamItem::Events { revision, .. } => assert_eq!(revision, want),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    // The last batch (no event for the stream) may still be queued.
    while hub.current() != 10 * 49 + 13 {
        assert!(
            std::time::Instant::now() < deadline,
            "stuck at {}",
            hub.current()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(rx.try_recv().is_err(), "nothing twice");

    // A watcher asking for prev_kv sends every batch to the dispatcher,
    // which reads it from history; once it is gone, batches go here again.
    let (ptx, _prx) = StreamSender::channel();
    let prev = hub.register(&ptx, KeyRange::new(b"p", b""), 0, true);
    let rev = hub.current() + 1;
    for _ in 0..20 {
        assert!(hub.shared.dispatch_here(batch(rev..=rev, "k")).is_err());
    }
    hub.cancel(&[prev.id]);
    here(batch(rev..=rev, "k"));
    assert!(matches!(rx.try_recv(), Ok(StreamItem::Events { revision, .. }) if revision == rev));
}
