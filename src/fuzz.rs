//! Entry points of the fuzz targets (`fuzz/`, run by `make fuzz`) and of
//! the corpus regression test (`tests/fuzz_corpora.rs`, run by `make
//! test`): each takes bytes as they would arrive from outside and feeds
//! them to the decoder kvd uses on them. None may panic, hang or allocate
//! more than the input justifies, whatever the bytes; each also checks an
//! invariant of what decodes (a request round-trips, a record names a real
//! keyspace). `snapshot_file` covers the bbolt reader behind `kvd backup`;
//! `gateway_json` and `v2_form` the JSON gateway's and the v2 API's
//! request decoders.

use std::path::Path;

use prost::Message as _;

use crate::core::raft::proposal::{decode_entry, EntryData, RaftRequest};
use crate::core::raft::snapshot;
use crate::core::snapshot::{
    import, BoltReader, LeaseRecord, SnapshotError, SnapshotFile, SHA256_BYTES,
};
use crate::core::transport;
use crate::modes::serve::options::ServeOptions;

/// Largest frame the peer-frame target accepts (kept small so that the
/// fuzzer explores the decoder rather than the allocator).
const FUZZ_MAX_FRAME: usize = 1024 * 1024;

/// A Raft entry's data as the Raft task decodes it on apply: a normal
/// entry (a `RaftRequest`), and the same bytes as a conf change with its
/// context. A request that decodes must encode back to something that
/// decodes to the same request (found by this target: a request of only
/// unknown fields encodes back to empty data, so requests are compared,
/// not entries).
///
/// # Panics
/// When the round trip changes the request (a bug in the encoding).
pub fn raft_entry(data: &[u8]) {
    if let EntryData::Request(req) = decode_entry(data) {
        // Compared as requests: one with only default fields (unknown
        // fields dropped) encodes to nothing, which `decode_entry` calls
        // `Empty`; both apply as a no-op.
        let again = RaftRequest::decode(req.encode_to_vec().as_slice());
        assert_eq!(again.ok(), Some(req), "request round trip");
    }
    let mut cc = raft::eraftpb::ConfChange::default();
    if protobuf::Message::merge_from_bytes(&mut cc, data).is_ok() {
        let _ = crate::core::raft::proposal::ConfChangeContext::decode(cc.get_context());
    }
}

/// A peer's Raft stream after its kind byte: frames until the end, the
/// first error, or the limit.
pub fn peer_frames(data: &[u8]) {
    block_on(async {
        let mut input = data;
        while let Ok(Some(_)) = transport::read_frame(&mut input, FUZZ_MAX_FRAME).await {}
    });
}

/// A snapshot stream after its `MsgSnapshot` frame: records until the end
/// marker or the first error.
///
/// # Panics
/// Never for any input; only [`snapshot::read_record`] is exercised.
pub fn snapshot_records(data: &[u8]) {
    block_on(async {
        let mut input = data;
        while let Ok(Some((_kind, _key, _value))) = snapshot::read_record(&mut input).await {}
    });
}

/// A `--config` file as `kvd serve` parses it (YAML into etcd's keys,
/// types checked, unknown keys refused). Validation of the values is left
/// out: it resolves host names, and fuzzed names would wait on DNS.
pub fn config_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = ServeOptions::from_yaml(text, Path::new("fuzz.yaml"));
}

/// A snapshot file as `kvd backup status`/`restore` read it: the checksum
/// and meta pages, every bucket's tree, and the records a restore decodes
/// (revision keys, `mvccpb.KeyValue`, `leasepb.Lease`). The bytes go
/// through a file of this thread's, as the reader reads files.
///
/// # Panics
/// When the file cannot be written (the fuzzer's machine, not kvd).
pub fn snapshot_file(data: &[u8]) {
    thread_local! {
        static PATH: std::path::PathBuf = std::env::temp_dir().join(format!(
            "kvd-fuzz-snapshot-{}-{:?}.db",
            std::process::id(),
            std::thread::current().id()
        ));
    }
    PATH.with(|path| {
        if let Err(e) = std::fs::write(path, data) {
            panic!("cannot write {}: {e}", path.display());
        }
        if let Ok(file) = SnapshotFile::open(path, true) {
            let _ = file.status();
        }
        // The reader itself, whatever the checksum says (most changed
        // bytes fail it, and the reader must hold anyway).
        let len = data.len() as u64;
        let len = if len % 512 == SHA256_BYTES {
            len - SHA256_BYTES
        } else {
            len
        };
        let Ok(reader) = std::fs::File::open(path)
            .map_err(SnapshotError::from)
            .and_then(|f| BoltReader::open(f, len))
        else {
            return;
        };
        let Ok(buckets) = reader.buckets() else {
            return;
        };
        for (name, root) in &buckets {
            let _ = reader.last_key(root);
            let _ = reader.for_each(root, &mut |k, v| {
                match name.as_slice() {
                    b"key" => {
                        import::parse_revision(k)?;
                        let _ = etcd_client::proto::PbKeyValue::decode(v);
                    }
                    b"lease" => {
                        let _ = LeaseRecord::decode(v);
                    }
                    _ => {}
                }
                Ok(())
            });
        }
    });
}

/// Runs a future to completion on a current-thread runtime of this thread.
fn block_on<F: std::future::Future<Output = ()>>(f: F) {
    thread_local! {
        static RUNTIME: Option<tokio::runtime::Runtime> = tokio::runtime::Builder::new_current_thread()
            .build()
            .ok();
    }
    RUNTIME.with(|rt| {
        if let Some(rt) = rt {
            rt.block_on(f);
        }
    });
}

/// A JSON gateway request body: the first byte picks the route (of the
/// gateway's table, in path order), the rest is the body. A body that
/// decodes must give protobuf bytes that decode back as the route's
/// request message.
///
/// # Panics
/// When the gateway's encoding of a decoded body does not decode (a bug).
pub fn gateway_json(data: &[u8]) {
    let Ok(routes) = crate::core::api::gateway::routes::Routes::get() else {
        return;
    };
    let all = routes.all();
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let (_, method) = all[usize::from(pick) % all.len()];
    if let Ok(bytes) = crate::core::api::gateway::encode_json(&method.input, body) {
        assert!(
            prost_reflect::DynamicMessage::decode(method.input.clone(), bytes).is_ok(),
            "the gateway's encoding decodes"
        );
    }
}

/// A v2 keys request: the query string, a NUL, the form body (parsed as
/// the v2 API parses them), and the bytes as a key path, which cleans to
/// a `/`-rooted path that cleans to itself.
///
/// # Panics
/// When cleaning a key is not idempotent (a bug).
pub fn v2_form(data: &[u8]) {
    let (query, form) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let _ = crate::core::api::v2::Params::parse(&String::from_utf8_lossy(query), form);
    let key = crate::core::api::v2::clean_key(&String::from_utf8_lossy(data));
    assert!(key.starts_with('/'), "a clean key is rooted");
    assert_eq!(
        crate::core::api::v2::clean_key(&key),
        key,
        "cleaning is idempotent"
    );
}
