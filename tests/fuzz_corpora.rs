//! The fuzz targets' seed corpora as regression tests: every committed seed
//! (`fuzz/seeds/<target>/`) goes through the same entry point the fuzzer
//! drives (`kvd::fuzz`), so `make test` replays them without cargo-fuzz.
//!
//! The seeds are real encodings of what each decoder meets in production.
//! They are written by this file:
//!
//! ```text
//! KVD_FUZZ_SEEDS=1 cargo test --release --test fuzz_corpora
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::{Path, PathBuf};

use etcd_client::proto::{
    PbCompactionRequest, PbCompare, PbDeleteRequest, PbLeaseGrantRequest, PbLeaseKeepAliveRequest,
    PbLeaseRevokeRequest, PbMember, PbPutRequest, PbRangeRequest, PbTargetUnion, PbTxnOpRequest,
    PbTxnRequest, PbTxnRequestOp,
};
use kvd::core::raft::proposal::{ConfChangeContext, MemberAttributes, Op, RaftRequest};
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, Message, MessageType};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 7] = [
    ("raft_entry", kvd::fuzz::raft_entry),
    ("peer_frames", kvd::fuzz::peer_frames),
    ("snapshot_records", kvd::fuzz::snapshot_records),
    ("config_yaml", kvd::fuzz::config_yaml),
    ("snapshot_file", kvd::fuzz::snapshot_file),
    ("gateway_json", kvd::fuzz::gateway_json),
    ("v2_form", kvd::fuzz::v2_form),
];

fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target)
}

fn put(key: &str, value: &str) -> PbPutRequest {
    PbPutRequest {
        key: key.into(),
        value: value.into(),
        lease: 0,
        prev_kv: true,
        ignore_value: false,
        ignore_lease: false,
    }
}

fn request(op: Op) -> Vec<u8> {
    RaftRequest {
        id: 17,
        origin: 0x8e9e_05c5_2164_694d,
        op: Some(op),
        ..RaftRequest::default()
    }
    .encode_to_vec()
}

fn raft_entry_seeds() -> Vec<(String, Vec<u8>)> {
    let txn = PbTxnRequest {
        compare: vec![PbCompare {
            result: 0,
            target: 3,
            key: b"a".to_vec(),
            range_end: Vec::new(),
            target_union: Some(PbTargetUnion::ModRevision(4)),
        }],
        success: vec![
            PbTxnRequestOp {
                request: Some(PbTxnOpRequest::RequestPut(put("a", "1"))),
            },
            PbTxnRequestOp {
                request: Some(PbTxnOpRequest::RequestTxn(PbTxnRequest {
                    success: vec![PbTxnRequestOp {
                        request: Some(PbTxnOpRequest::RequestRange(PbRangeRequest {
                            key: b"b".to_vec(),
                            range_end: b"c".to_vec(),
                            limit: 10,
                            ..Default::default()
                        })),
                    }],
                    ..Default::default()
                })),
            },
        ],
        failure: vec![PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestDeleteRange(PbDeleteRequest {
                key: b"a".to_vec(),
                range_end: vec![0],
                prev_kv: true,
            })),
        }],
    };
    let mut cc = ConfChange::default();
    cc.set_change_type(ConfChangeType::AddLearnerNode);
    cc.node_id = 42;
    cc.set_context(
        ConfChangeContext {
            id: 3,
            origin: 7,
            member: Some(PbMember {
                id: 42,
                name: "n4".into(),
                peer_ur_ls: vec!["http://127.0.0.1:2380".into()],
                client_ur_ls: vec!["http://127.0.0.1:2379".into()],
                is_learner: true,
            }),
        }
        .encode_to_vec()
        .into(),
    );
    vec![
        ("put".into(), request(Op::Put(put("foo", "bar")))),
        (
            "delete_range".into(),
            request(Op::DeleteRange(PbDeleteRequest {
                key: b"a".to_vec(),
                range_end: b"z".to_vec(),
                prev_kv: false,
            })),
        ),
        ("txn".into(), request(Op::Txn(txn))),
        (
            "compaction".into(),
            request(Op::Compaction(PbCompactionRequest {
                revision: 12,
                physical: true,
            })),
        ),
        (
            "publish".into(),
            request(Op::Publish(MemberAttributes {
                member_id: 9,
                name: "infra1".into(),
                client_urls: vec!["http://127.0.0.1:2379".into()],
                ..MemberAttributes::default()
            })),
        ),
        (
            "lease_grant".into(),
            request(Op::LeaseGrant(PbLeaseGrantRequest { ttl: 60, id: 77 })),
        ),
        (
            "lease_revoke".into(),
            request(Op::LeaseRevoke(PbLeaseRevokeRequest { id: 77 })),
        ),
        (
            "lease_keep_alive".into(),
            request(Op::LeaseKeepAlive(PbLeaseKeepAliveRequest { id: 77 })),
        ),
        (
            "member_update".into(),
            request(Op::MemberUpdate(PbMember {
                id: 9,
                peer_ur_ls: vec!["http://10.0.0.1:2380".into()],
                ..Default::default()
            })),
        ),
        (
            "conf_change".into(),
            cc.write_to_bytes().expect("encode conf change"),
        ),
    ]
}

fn frame(m: &Message) -> Vec<u8> {
    let bytes = m.write_to_bytes().expect("encode message");
    let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
    out.extend(bytes);
    out
}

fn message(kind: MessageType) -> Message {
    let mut m = Message::default();
    m.set_msg_type(kind);
    m.from = 0x8e9e_05c5_2164_694d;
    m.to = 0x91bc_3c39_8fb3_c146;
    m.term = 3;
    m
}

fn peer_frame_seeds() -> Vec<(String, Vec<u8>)> {
    let mut heartbeat = message(MessageType::MsgHeartbeat);
    heartbeat.commit = 12;
    let mut append = message(MessageType::MsgAppend);
    append.index = 11;
    append.log_term = 3;
    append.commit = 11;
    for i in 12..14 {
        append.entries.push(Entry {
            index: i,
            term: 3,
            data: request(Op::Put(put("k", "v"))).into(),
            ..Default::default()
        });
    }
    let mut vote = message(MessageType::MsgRequestPreVote);
    vote.index = 13;
    vote.log_term = 3;
    let mut snapshot = message(MessageType::MsgSnapshot);
    let meta = snapshot.mut_snapshot().mut_metadata();
    meta.index = 10_000;
    meta.term = 3;
    meta.mut_conf_state().voters = vec![1, 2, 3];
    snapshot.mut_snapshot().data = 5u64.to_be_bytes().to_vec().into();
    let mut all = Vec::new();
    for m in [&heartbeat, &append, &vote, &snapshot] {
        all.extend(frame(m));
    }
    vec![
        ("heartbeat".into(), frame(&heartbeat)),
        ("append".into(), frame(&append)),
        ("prevote".into(), frame(&vote)),
        ("snapshot".into(), frame(&snapshot)),
        ("stream".into(), all),
    ]
}

fn record(out: &mut Vec<u8>, keyspace: u8, key: &[u8], value: &[u8]) {
    out.push(keyspace);
    out.extend((key.len() as u32).to_be_bytes());
    out.extend(key);
    out.extend((value.len() as u32).to_be_bytes());
    out.extend(value);
}

fn snapshot_record_seeds() -> Vec<(String, Vec<u8>)> {
    let mut stream = Vec::new();
    record(
        &mut stream,
        0,
        b"foo",
        b"\x0a\x03foo\x10\x02\x18\x02\x20\x01\x2a\x03bar",
    );
    record(
        &mut stream,
        1,
        &[0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0],
        b"\x12\x05\x0a\x03foo",
    );
    record(
        &mut stream,
        2,
        b"foo\x00\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00",
        &[0],
    );
    record(&mut stream, 5, &77i64.to_be_bytes(), &60i64.to_be_bytes());
    record(&mut stream, 6, b"revision", &2i64.to_be_bytes());
    stream.push(0xFF);
    vec![("stream".into(), stream), ("empty".into(), vec![0xFF])]
}

fn config_yaml_seeds() -> Vec<(String, Vec<u8>)> {
    let example = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.yaml"))
        .expect("config/example.yaml");
    let cluster = b"name: infra1\n\
data-dir: /var/lib/kvd\n\
listen-client-urls: http://10.0.0.1:2379,http://127.0.0.1:2379\n\
advertise-client-urls: http://10.0.0.1:2379\n\
listen-peer-urls: http://10.0.0.1:2380\n\
initial-advertise-peer-urls: http://10.0.0.1:2380\n\
initial-cluster: infra1=http://10.0.0.1:2380,infra2=http://10.0.0.2:2380\n\
initial-cluster-state: new\n\
heartbeat-interval: 100\n\
election-timeout: 1000\n\
max-request-bytes: 1572864\n\
auto-promote: true\n"
        .to_vec();
    vec![("example".into(), example), ("cluster".into(), cluster)]
}

/// A bucket of a seed snapshot: name and sorted records.
type SeedBucket = (&'static [u8], Vec<(Vec<u8>, Vec<u8>)>);

fn fill_bucket<S: kvd::core::snapshot::PageSink>(
    bucket: &SeedBucket,
    tree: &mut kvd::core::snapshot::bolt::TreeWriter<'_, S>,
) -> Result<(), kvd::core::snapshot::SnapshotError> {
    for (k, v) in &bucket.1 {
        tree.put(k.clone(), v.clone())?;
    }
    Ok(())
}

/// A small etcd snapshot file as the writer makes it: three revisions
/// (one a deletion), a lease, the meta keys, and the trailing sha256.
fn snapshot_file_seeds() -> Vec<(String, Vec<u8>)> {
    use kvd::core::snapshot::{bolt, compact_rev_bytes, LeaseRecord};
    use sha2::Digest as _;

    let rev = |main: i64, sub: i64, tombstone: bool| {
        let mut k = main.to_be_bytes().to_vec();
        k.push(b'_');
        k.extend_from_slice(&sub.to_be_bytes());
        if tombstone {
            k.push(b't');
        }
        k
    };
    let kv = |key: &str, value: &str, main: i64| {
        etcd_client::proto::PbKeyValue {
            key: key.into(),
            create_revision: 2,
            mod_revision: main,
            version: main - 1,
            value: value.into(),
            lease: 0,
        }
        .encode_to_vec()
    };
    let buckets: Vec<SeedBucket> = vec![
        (
            b"key",
            vec![
                (rev(2, 0, false), kv("a", "1", 2)),
                (rev(3, 0, false), kv("a", "2", 3)),
                (
                    rev(4, 0, true),
                    etcd_client::proto::PbKeyValue {
                        key: "a".into(),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                ),
            ],
        ),
        (
            b"lease",
            vec![(
                7i64.to_be_bytes().to_vec(),
                LeaseRecord {
                    id: 7,
                    ttl: 60,
                    remaining_ttl: 0,
                }
                .encode_to_vec(),
            )],
        ),
        (
            b"meta",
            vec![
                (b"consistent_index".to_vec(), 9u64.to_be_bytes().to_vec()),
                (b"finishedCompactRev".to_vec(), compact_rev_bytes(2)),
            ],
        ),
    ];
    let names: Vec<&[u8]> = buckets.iter().map(|(n, _)| *n).collect();
    let layout = bolt::write_file(&mut bolt::PageCounter::default(), &names, None, |i, t| {
        fill_bucket(&buckets[i], t)
    })
    .expect("plan");
    let mut sink = bolt::WriteSink(Vec::new());
    bolt::write_file(&mut sink, &names, Some(&layout), |i, t| {
        fill_bucket(&buckets[i], t)
    })
    .expect("write");
    let mut file = sink.0;
    let sha = sha2::Sha256::digest(&file);
    file.extend_from_slice(&sha);
    vec![("small".into(), file)]
}

/// Bodies of the curl examples of etcd's gateway guide, each behind the
/// byte that picks its route.
fn gateway_json_seeds() -> Vec<(String, Vec<u8>)> {
    let routes = kvd::core::api::gateway::routes::Routes::get()
        .unwrap()
        .all();
    let pick = |path: &str| routes.iter().position(|(p, _)| *p == path).unwrap() as u8;
    [
        ("put", "kv/put", r#"{"key": "Zm9v", "value": "YmFy"}"#),
        ("range", "kv/range", r#"{"key":"Zm9v","range_end":"Zm9w","sortOrder":"DESCEND","limit":"10"}"#),
        ("txn", "kv/txn", r#"{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"2"}],"success":[{"requestPut":{"key":"Zm9v","value":"YmFy"}}]}"#),
        ("watch", "watch", r#"{"create_request": {"key":"Zm9v","prev_kv":true,"filters":["NOPUT"]}}"#),
        ("grant", "lease/grant", r#"{"TTL":"60","ID":7}"#),
        ("user", "auth/role/grant", r#"{"name":"r","perm":{"permType":"READWRITE","key":"YQ==","range_end":"Yg=="}}"#),
        ("campaign", "election/campaign", r#"{"name":"ZQ==","lease":"7","value":"djE="}"#),
    ]
    .iter()
    .map(|(name, path, body)| {
        let mut bytes = vec![pick(path)];
        bytes.extend_from_slice(body.as_bytes());
        (name.to_string(), bytes)
    })
    .collect()
}

/// Query strings and forms of the seeds' v2 curl examples.
fn v2_form_seeds() -> Vec<(String, Vec<u8>)> {
    [
        ("set", "\0value=Hello%20world&ttl=5"),
        (
            "cas",
            "prevExist=false&prevValue=one&prevIndex=7\0value=two",
        ),
        ("wait", "wait=true&waitIndex=7&recursive=true&stream=false"),
        (
            "dir",
            "dir=true&recursive=true&sorted=true\0ttl=30&refresh=true&prevExist=true",
        ),
        ("path", "/a//b/../c/./d/"),
    ]
    .iter()
    .map(|(name, text)| (name.to_string(), text.as_bytes().to_vec()))
    .collect()
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "snapshot_file" => snapshot_file_seeds(),
        "raft_entry" => raft_entry_seeds(),
        "peer_frames" => peer_frame_seeds(),
        "snapshot_records" => snapshot_record_seeds(),
        "config_yaml" => config_yaml_seeds(),
        "gateway_json" => gateway_json_seeds(),
        "v2_form" => v2_form_seeds(),
        other => panic!("no seeds for {other}"),
    }
}

#[test]
fn seed_corpora_replay_through_every_target() {
    let record = std::env::var_os("KVD_FUZZ_SEEDS").is_some();
    for (target, run) in TARGETS {
        let dir = seeds_dir(target);
        if record {
            std::fs::create_dir_all(&dir).expect("create seeds dir");
            for (name, bytes) in seeds(target) {
                std::fs::write(dir.join(name), bytes).expect("write seed");
            }
        }
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            let bytes = std::fs::read(&path).expect("read seed");
            run(&bytes);
            files += 1;
        }
        assert!(
            files >= seeds(target).len(),
            "{target}: {files} seeds on disk, fewer than the generator makes"
        );
        // The generated seeds decode as what they are meant to be.
        for (name, bytes) in seeds(target) {
            run(&bytes);
            if target == "raft_entry" && name != "conf_change" {
                assert!(
                    matches!(
                        kvd::core::raft::proposal::decode_entry(&bytes),
                        kvd::core::raft::proposal::EntryData::Request(_)
                    ),
                    "{name} decodes as a request"
                );
            }
        }
    }
}

#[test]
fn truncations_of_every_seed_are_refused_cleanly() {
    // Every prefix of every seed: the shapes a cut connection leaves.
    for (target, run) in TARGETS {
        for (_, bytes) in seeds(target) {
            for end in 0..bytes.len() {
                run(&bytes[..end]);
            }
        }
    }
}
